//! The switch's decisions, as a value: from what runs and what was asked,
//! which color gets traffic, with how many replicas of which release, which
//! containers start, which are replaced, which nginx names afterwards, and
//! which drain and stop. Pure: no engine, unit-tested case by case, printed
//! by `--dry-run`, carried out by `switch::deploy` and `switch::scale`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::error::{failed, failed_with_hint, usage};
use crate::history::operation;
use crate::nginx::Canary;
use crate::stack::{Color, Release, container_name};

pub use crate::stack::MAX_REPLICAS;

/// One app container, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Replica {
    pub name: String,
    pub number: u32,
    pub running: bool,
    pub release: Release,
}

/// What was recorded about the idle color, for a rollback when it has no
/// containers left.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Recorded {
    /// Not read: the idle color has containers, or nothing needs it.
    #[default]
    Unread,
    Release(Release),
    Nothing,
    /// The history could not be read: why.
    Unreadable(String),
}

/// What runs, read before the switch decides.
#[derive(Clone, Debug)]
pub struct Observed {
    pub project: String,
    /// The color nginx serves.
    pub active: Color,
    /// Each color's app containers, running or not.
    pub colors: BTreeMap<Color, Vec<Replica>>,
    /// Counts `scale` recorded for the next deploy into an idle color.
    pub pending: BTreeMap<Color, u32>,
    /// The last release the history records for the idle color.
    pub recorded: Recorded,
    /// A canary nginx serves: a deploy that was killed during its steps.
    pub canary: Option<Canary>,
}

impl Observed {
    pub fn replicas(&self, color: Color) -> &[Replica] {
        self.colors.get(&color).map_or(&[], Vec::as_slice)
    }

    pub fn running(&self, color: Color) -> Vec<&Replica> {
        self.replicas(color).iter().filter(|r| r.running).collect()
    }

    /// The release a color's containers run.
    pub fn release(&self, color: Color) -> Option<Release> {
        let replicas = self.replicas(color);
        let running = self.running(color);
        running
            .first()
            .copied()
            .or(replicas.first())
            .map(|r| r.release.clone())
    }
}

/// What was asked.
#[derive(Clone, Debug)]
pub enum Request {
    /// The idle color gets `release` (`None`: built during the run).
    Deploy {
        release: Option<Release>,
        keep_standby: bool,
    },
    /// The idle color gets back what it ran.
    Rollback {
        keep_standby: bool,
    },
    Scale {
        color: Color,
        replicas: u32,
    },
}

/// What a switch does, in the order it does it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Traffic moves from `active` to `target`.
    Switch,
    /// The active color gains replicas, health-gated before nginx names them.
    Grow,
    /// The active color loses replicas: nginx stops naming them, then they
    /// drain and go.
    Shrink,
    /// The idle color's count is recorded for the next deploy into it.
    Record,
    /// Nothing to do.
    Nothing,
    /// A canary left by a killed deploy ends: every client goes back to
    /// the active color, and the canary's containers go.
    Abandon,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub operation: String,
    pub action: Action,
    /// The color nginx serves now.
    pub active: Color,
    /// The color that is deployed into or scaled.
    pub target: Color,
    /// What the target runs afterwards; `None` when it is built during the run.
    pub release: Option<Release>,
    /// The target's replicas before and after.
    pub from_replicas: u32,
    pub replicas: u32,
    /// The target's stopped containers start as they are (a warm rollback).
    pub reuse: bool,
    /// The target's containers removed before new ones start (running ones
    /// are stopped gracefully first).
    pub replace: Vec<String>,
    /// Containers created and started (or, reused, started).
    pub start: Vec<String>,
    /// What nginx's upstream names afterwards.
    pub serve: Vec<String>,
    /// Containers nginx stops naming; they drain, then stop.
    pub drain: Vec<String>,
    /// Of those, the ones removed after their drain (a shrink).
    pub remove: Vec<String>,
    /// The active color stays up as a warm standby.
    pub keep_standby: bool,
    /// A count `scale` recorded for the target, used up by this deploy.
    pub clears_pending: bool,
    /// The deploy hooks that run, in order (filled in from the compose
    /// file: the planner itself reads no file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<PlannedHook>,
    /// On a Swarm: the nodes whose edge nginx switches (the old color's
    /// service then goes to 0 tasks rather than its containers stopping).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<String>,
    /// `deploy --build`: what it builds (`release` is then unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<PlannedBuild>,
    /// On a Swarm with a registry named: the reference the image, one only
    /// the manager has, is pushed as, for the nodes to pull.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<String>,
}

/// The image `deploy --build` builds, as a dry run tells it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedBuild {
    /// The tag the build gives it.
    pub image: String,
    /// On a Swarm: the nodes it is then copied to from the manager, where
    /// it is built.
    pub copy_to: Vec<String>,
}

/// A deploy hook a switch runs: before the new color starts, or after the
/// switch (`post`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedHook {
    pub hook: String,
    pub post: bool,
    pub command: Vec<String>,
}

impl Plan {
    /// A scale of `target` from `from_replicas` to `replicas` as `action`
    /// says, naming no container, task or edge yet.
    pub fn scale(
        action: Action,
        active: Color,
        target: Color,
        release: Option<Release>,
        from_replicas: u32,
        replicas: u32,
    ) -> Plan {
        Plan {
            operation: operation::SCALE.to_owned(),
            action,
            active,
            target,
            release,
            from_replicas,
            replicas,
            reuse: false,
            replace: Vec::new(),
            start: Vec::new(),
            serve: Vec::new(),
            drain: Vec::new(),
            remove: Vec::new(),
            keep_standby: false,
            clears_pending: false,
            hooks: Vec::new(),
            edges: Vec::new(),
            build: None,
            push: None,
        }
    }

    /// The plan's first line: what happens, to which color and release.
    fn headline(&self, release: &str) -> String {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        let (target, replicas) = (self.target, self.replicas);
        match self.action {
            Action::Switch => format!(
                "{}: traffic moves from {} to {target} {release}, {replicas} replica{}{}",
                self.operation,
                self.active,
                plural(replicas),
                if self.reuse {
                    ", its stopped containers started as they are"
                } else {
                    ""
                }
            ),
            Action::Grow | Action::Shrink => format!(
                "scale: {target} goes from {} to {replicas} replica{} of {release}",
                self.from_replicas,
                plural(replicas)
            ),
            Action::Record => format!(
                "scale: {target} is idle; the next deploy into it starts {replicas} replica{} (now {})",
                plural(replicas),
                self.from_replicas
            ),
            Action::Abandon => format!(
                "{}: the canary of {target} {release} ends; every client goes back to {}",
                self.operation, self.active
            ),
            Action::Nothing => {
                format!(
                    "scale: {target} already runs {replicas} replica{}; nothing changes",
                    plural(replicas)
                )
            }
        }
    }

    /// What a `--build` builds and where a registry push sends it.
    fn image_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(build) = &self.build {
            lines.push(match build.copy_to.as_slice() {
                [] => format!("  build: {}", build.image),
                nodes => format!(
                    "  build: {} on the manager, then copied to {}",
                    build.image,
                    nodes.join(", ")
                ),
            });
        }
        if let Some(push) = &self.push {
            let image = match (&self.build, &self.release) {
                (Some(build), _) => build.image.as_str(),
                (None, Some(release)) => release.image.as_str(),
                (None, None) => "the image",
            };
            lines.push(format!("  push: {image} as {push}, for the nodes to pull"));
        }
        lines
    }

    /// The plan in lines, for the terminal.
    pub fn describe(&self) -> Vec<String> {
        let release = match &self.release {
            Some(release) => format!("{} ({})", release.version, release.image),
            None => "a build made during the run".to_owned(),
        };
        let target = self.target;
        let mut lines = vec![self.headline(&release)];
        let hooks = |post: bool| {
            self.hooks
                .iter()
                .filter(move |h| h.post == post)
                .map(move |h| {
                    let when = if post { "after the switch" } else { "first" };
                    format!("  {when}, the {} hook: {}", h.hook, h.command.join(" "))
                })
        };
        lines.extend(self.image_lines());
        lines.extend(hooks(false));
        let stop = if self.keep_standby {
            "drain, then stay up as a warm standby"
        } else if !self.edges.is_empty() {
            "drain, then scale to 0 tasks"
        } else if self.remove.is_empty() {
            "drain, then stop"
        } else {
            "drain, then stop and go"
        };
        // A scale's edges follow the service's tasks; a switch's flip.
        let edges = match self.action {
            Action::Grow | Action::Shrink => "edge nginx follows the tasks on",
            _ => "edge nginx switched on",
        };
        for (what, names) in [
            ("removed first", &self.replace),
            ("start", &self.start),
            ("nginx names", &self.serve),
            (edges, &self.edges),
            (stop, &self.drain),
        ] {
            if !names.is_empty() {
                lines.push(format!("  {what}: {}", names.join(", ")));
            }
        }
        lines.extend(hooks(true));
        if self.clears_pending {
            lines.push(format!(
                "  the replica count recorded for {target} is used up"
            ));
        }
        lines
    }
}

/// Decides what a request does to what runs.
pub fn plan(observed: &Observed, request: &Request) -> Result<Plan> {
    if let Some(canary) = observed.canary {
        return after_canary(observed, request, canary);
    }
    match request {
        Request::Deploy {
            release,
            keep_standby,
        } => deploy(observed, release.clone(), *keep_standby),
        Request::Rollback { keep_standby } => rollback(observed, *keep_standby),
        Request::Scale { color, replicas } if *color == observed.active => {
            scale_active(observed, *replicas)
        }
        Request::Scale { color, replicas } => scale_idle(observed, *color, *replicas),
    }
}

/// While a canary is live (its deploy was killed): a rollback ends it, and
/// a deploy or a scale waits until one has. A deploy cannot replace the
/// canary's containers while nginx still sends them their share; and a
/// deploy that failed then would leave nginx naming containers it removed.
fn after_canary(observed: &Observed, request: &Request, canary: Canary) -> Result<Plan> {
    let live = format!(
        "a canary of {} is live at {}% (its deploy did not finish)",
        canary.color, canary.percent
    );
    let hint =
        "end it with `cryptus rollback` (every client back on the active color), then deploy again";
    match request {
        Request::Rollback { keep_standby } if canary.color == observed.active.other() => {
            let active = observed.active;
            let names = name_all(&observed.replicas(canary.color).iter().collect::<Vec<_>>());
            Ok(Plan {
                operation: "rollback".to_owned(),
                action: Action::Abandon,
                active,
                target: canary.color,
                release: observed.release(canary.color),
                from_replicas: count(&observed.running(canary.color)),
                replicas: 0,
                reuse: false,
                replace: Vec::new(),
                start: Vec::new(),
                serve: name_all(&observed.running(active)),
                drain: names.clone(),
                remove: names,
                keep_standby: *keep_standby,
                clears_pending: false,
                hooks: Vec::new(),
                edges: Vec::new(),
                build: None,
                push: None,
            })
        }
        _ => Err(failed_with_hint(live, hint)),
    }
}

/// The names of a color's first `count` replicas.
fn names(observed: &Observed, color: Color, count: u32) -> Vec<String> {
    (1..=count)
        .map(|n| container_name(&observed.project, color.service(), n))
        .collect()
}

fn name_all(replicas: &[&Replica]) -> Vec<String> {
    replicas.iter().map(|r| r.name.clone()).collect()
}

/// How many replicas a switch away from the active color starts: as many
/// as it runs; when none runs (its version crashed, or was stopped by
/// hand), as many containers as it has, at least one. Traffic is failing
/// then, and a switch is what can end that.
fn active_count(observed: &Observed) -> u32 {
    let running = count(&observed.running(observed.active));
    if running > 0 {
        return running;
    }
    u32::try_from(observed.replicas(observed.active).len())
        .unwrap_or(MAX_REPLICAS)
        .clamp(1, MAX_REPLICAS)
}

fn count(replicas: &[&Replica]) -> u32 {
    u32::try_from(replicas.len()).unwrap_or(u32::MAX)
}

/// A switch to the idle color with fresh containers.
fn fresh_switch(
    observed: &Observed,
    operation: &str,
    release: Option<Release>,
    replicas: u32,
    keep_standby: bool,
) -> Result<Plan> {
    let active = observed.active;
    let target = active.other();
    let from = observed.running(active);
    let start = names(observed, target, replicas);
    Ok(Plan {
        operation: operation.to_owned(),
        action: Action::Switch,
        active,
        target,
        release,
        from_replicas: count(&observed.running(target)),
        replicas,
        reuse: false,
        replace: observed
            .replicas(target)
            .iter()
            .map(|r| r.name.clone())
            .collect(),
        serve: start.clone(),
        start,
        drain: name_all(&from),
        remove: Vec::new(),
        keep_standby,
        clears_pending: false,
        hooks: Vec::new(),
        edges: Vec::new(),
        build: None,
        push: None,
    })
}

fn deploy(observed: &Observed, release: Option<Release>, keep_standby: bool) -> Result<Plan> {
    let target = observed.active.other();
    // As many replicas as the active color runs, unless `scale` set a
    // count for the idle color.
    let pending = observed.pending.get(&target).copied();
    let replicas = match pending {
        Some(count) => count,
        None => active_count(observed),
    };
    let mut plan = fresh_switch(observed, "deploy", release, replicas, keep_standby)?;
    plan.clears_pending = pending.is_some();
    Ok(plan)
}

fn rollback(observed: &Observed, keep_standby: bool) -> Result<Plan> {
    let target = observed.active.other();
    let replicas = active_count(observed);
    let release = match (observed.release(target), &observed.recorded) {
        (Some(release), _) => release,
        (None, Recorded::Release(release)) => release.clone(),
        (None, Recorded::Unreadable(why)) => {
            return Err(failed_with_hint(
                format!("nothing to roll back to: {target} has no containers, and {why}"),
                "deploy the version you want with `cryptus deploy --image ...`",
            ));
        }
        (None, Recorded::Nothing | Recorded::Unread) => {
            return Err(failed(format!(
                "nothing to roll back to: {target} has no containers and no recorded deployment"
            )));
        }
    };
    let existing = observed.replicas(target);
    // The standby's own containers start as they are when they still hold
    // the release, as many as the active color runs.
    let reuse = !existing.is_empty()
        && existing.iter().all(|r| r.release == release)
        && existing.len() == replicas as usize;
    let mut plan = fresh_switch(observed, "rollback", Some(release), replicas, keep_standby)?;
    if reuse {
        plan.reuse = true;
        plan.replace.clear();
        plan.start = existing
            .iter()
            .filter(|r| !r.running)
            .map(|r| r.name.clone())
            .collect();
        plan.serve = existing.iter().map(|r| r.name.clone()).collect();
    }
    Ok(plan)
}

/// More than the most one host runs is a usage error.
pub fn check_count(replicas: u32) -> Result<()> {
    if replicas > MAX_REPLICAS {
        return Err(usage(
            format!(
                "{replicas} replicas is more than {MAX_REPLICAS}, the most cryptus runs on one host"
            ),
            format!("choose 1 to {MAX_REPLICAS}"),
        ));
    }
    Ok(())
}

fn scale_active(observed: &Observed, replicas: u32) -> Result<Plan> {
    let color = observed.active;
    check_count(replicas)?;
    if replicas == 0 {
        return Err(usage(
            format!(
                "scaling {} to 0 would stop all traffic: it is the active color",
                color.service()
            ),
            "choose 1 or more replicas; `cryptus stop` stops the whole stack",
        ));
    }
    let mut running = observed.running(color);
    running.sort_by_key(|r| r.number);
    let release = observed
        .release(color)
        .filter(|_| !running.is_empty())
        .ok_or_else(|| failed(format!("no {color} container is running")))?;
    let from = count(&running);
    let mut plan = Plan::scale(Action::Nothing, color, color, Some(release), from, replicas);
    plan.serve = name_all(&running);
    if replicas > from {
        grow(observed, &running, &mut plan);
    } else if replicas < from {
        // The highest numbers go first.
        let (keep, leave) = running.split_at(replicas as usize);
        plan.action = Action::Shrink;
        plan.serve = name_all(keep);
        plan.drain = name_all(leave);
        plan.remove = plan.drain.clone();
    }
    Ok(plan)
}

/// New replicas take the lowest numbers no running replica uses; a stopped
/// container with such a name is replaced.
fn grow(observed: &Observed, running: &[&Replica], plan: &mut Plan) {
    let color = plan.target;
    let used: Vec<u32> = running.iter().map(|r| r.number).collect();
    let wanted = (plan.replicas - plan.from_replicas) as usize;
    let numbers: Vec<u32> = (1..).filter(|n| !used.contains(n)).take(wanted).collect();
    plan.action = Action::Grow;
    plan.start = numbers
        .iter()
        .map(|n| container_name(&observed.project, color.service(), *n))
        .collect();
    plan.replace = observed
        .replicas(color)
        .iter()
        .filter(|r| plan.start.contains(&r.name))
        .map(|r| r.name.clone())
        .collect();
    plan.serve.extend(plan.start.iter().cloned());
    plan.serve.sort();
}

fn scale_idle(observed: &Observed, color: Color, replicas: u32) -> Result<Plan> {
    check_count(replicas)?;
    if replicas == 0 {
        return Err(usage(
            format!(
                "{} is idle: 0 replicas would leave the next deploy nothing to start",
                color.service()
            ),
            "choose 1 or more replicas; `cryptus stop` stops the whole stack",
        ));
    }
    let from = observed
        .pending
        .get(&color)
        .copied()
        .unwrap_or_else(|| count(&observed.replicas(color).iter().collect::<Vec<_>>()));
    Ok(Plan::scale(
        Action::Record,
        observed.active,
        color,
        observed.release(color),
        from,
        replicas,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: &str) -> Release {
        Release {
            image: format!("app:{version}"),
            version: version.to_owned(),
        }
    }

    fn replica(color: Color, number: u32, running: bool, version: &str) -> Replica {
        Replica {
            name: container_name("p", color.service(), number),
            number,
            running,
            release: release(version),
        }
    }

    /// Blue serves `blue` (numbers, all running, v1); green holds `green`.
    fn observed(blue: &[u32], green: Vec<Replica>) -> Observed {
        Observed {
            project: "p".to_owned(),
            active: Color::Blue,
            colors: BTreeMap::from([
                (
                    Color::Blue,
                    blue.iter()
                        .map(|n| replica(Color::Blue, *n, true, "1"))
                        .collect(),
                ),
                (Color::Green, green),
            ]),
            pending: BTreeMap::new(),
            recorded: Recorded::Unread,
            canary: None,
        }
    }

    fn deploy_of(version: &str) -> Request {
        Request::Deploy {
            release: Some(release(version)),
            keep_standby: false,
        }
    }

    const ROLLBACK: Request = Request::Rollback {
        keep_standby: false,
    };

    #[test]
    fn a_deploy_starts_the_idle_color_with_as_many_replicas_as_serve() {
        let plan = plan(&observed(&[1, 2], Vec::new()), &deploy_of("2")).unwrap();
        assert_eq!(plan.action, Action::Switch);
        assert_eq!((plan.active, plan.target), (Color::Blue, Color::Green));
        assert_eq!(plan.replicas, 2);
        assert_eq!(plan.start, ["p-cryptus-green-1", "p-cryptus-green-2"]);
        assert_eq!(plan.serve, plan.start);
        assert_eq!(plan.drain, ["p-cryptus-blue-1", "p-cryptus-blue-2"]);
        assert!(plan.replace.is_empty() && plan.remove.is_empty() && !plan.reuse);
        assert_eq!(plan.release, Some(release("2")));
    }

    #[test]
    fn a_deploy_replaces_whatever_the_idle_color_holds() {
        let green = vec![
            replica(Color::Green, 1, false, "0"),
            replica(Color::Green, 3, true, "0"),
        ];
        let plan = plan(&observed(&[1], green), &deploy_of("2")).unwrap();
        assert_eq!(plan.replace, ["p-cryptus-green-1", "p-cryptus-green-3"]);
        assert_eq!(plan.start, ["p-cryptus-green-1"]);
        assert!(!plan.reuse);
    }

    #[test]
    fn a_deploy_uses_up_the_count_scale_recorded() {
        let mut observed = observed(&[1], Vec::new());
        observed.pending.insert(Color::Green, 3);
        let plan = plan(&observed, &deploy_of("2")).unwrap();
        assert_eq!(plan.replicas, 3);
        assert!(plan.clears_pending);
        // A count recorded for the active color is not this deploy's.
        observed.pending = BTreeMap::from([(Color::Blue, 4)]);
        let plan = super::plan(&observed, &deploy_of("2")).unwrap();
        assert_eq!((plan.replicas, plan.clears_pending), (1, false));
    }

    #[test]
    fn a_deploy_built_during_the_run_has_no_release_yet() {
        let request = Request::Deploy {
            release: None,
            keep_standby: true,
        };
        let plan = plan(&observed(&[1], Vec::new()), &request).unwrap();
        assert_eq!(plan.release, None);
        assert!(plan.keep_standby);
    }

    /// The active color's version crashed, or was stopped by hand: traffic
    /// fails, and deploy and rollback are how an operator ends that.
    #[test]
    fn a_switch_away_from_an_active_color_with_nothing_running_proceeds() {
        let mut observed = observed(&[], vec![replica(Color::Green, 1, false, "0")]);
        observed.colors.insert(
            Color::Blue,
            vec![
                replica(Color::Blue, 1, false, "1"),
                replica(Color::Blue, 2, false, "1"),
            ],
        );
        let deployed = plan(&observed, &deploy_of("2")).unwrap();
        assert_eq!((deployed.target, deployed.replicas), (Color::Green, 2));
        assert!(
            deployed.drain.is_empty(),
            "nothing runs to drain: {deployed:?}"
        );
        let rolled = plan(&observed, &ROLLBACK).unwrap();
        assert_eq!((rolled.target, rolled.replicas), (Color::Green, 2));
        assert_eq!(rolled.release, Some(release("0")));
        assert!(rolled.drain.is_empty(), "{rolled:?}");
        // No container of the active color at all: one replica.
        observed.colors.insert(Color::Blue, Vec::new());
        assert_eq!(plan(&observed, &deploy_of("2")).unwrap().replicas, 1);
    }

    #[test]
    fn a_warm_rollback_starts_the_standby_as_it_is() {
        let green = vec![
            replica(Color::Green, 1, false, "0"),
            replica(Color::Green, 2, true, "0"),
        ];
        let plan = plan(&observed(&[1, 2], green), &ROLLBACK).unwrap();
        assert!(plan.reuse);
        assert_eq!(plan.release, Some(release("0")));
        assert!(plan.replace.is_empty());
        assert_eq!(plan.start, ["p-cryptus-green-1"]);
        assert_eq!(plan.serve, ["p-cryptus-green-1", "p-cryptus-green-2"]);
        assert_eq!(plan.drain, ["p-cryptus-blue-1", "p-cryptus-blue-2"]);
    }

    #[test]
    fn a_rollback_recreates_a_standby_of_another_size() {
        let green = vec![replica(Color::Green, 1, false, "0")];
        let plan = plan(&observed(&[1, 2], green), &ROLLBACK).unwrap();
        assert!(!plan.reuse);
        assert_eq!(plan.replace, ["p-cryptus-green-1"]);
        assert_eq!(plan.start, ["p-cryptus-green-1", "p-cryptus-green-2"]);
    }

    #[test]
    fn a_cold_rollback_brings_back_what_the_history_recorded() {
        let mut observed = observed(&[1], Vec::new());
        observed.recorded = Recorded::Release(release("0"));
        let plan = plan(&observed, &ROLLBACK).unwrap();
        assert_eq!(plan.release, Some(release("0")));
        assert!(!plan.reuse);
        assert_eq!(plan.start, ["p-cryptus-green-1"]);

        observed.recorded = Recorded::Nothing;
        let err = super::plan(&observed, &ROLLBACK).unwrap_err();
        assert!(err.to_string().contains("no recorded deployment"), "{err}");
        observed.recorded = Recorded::Unreadable("history.json is corrupt".into());
        let err = super::plan(&observed, &ROLLBACK).unwrap_err();
        assert!(err.to_string().contains("history.json is corrupt"), "{err}");
    }

    fn scale(color: Color, replicas: u32) -> Request {
        Request::Scale { color, replicas }
    }

    #[test]
    fn scaling_up_fills_the_lowest_free_numbers_and_replaces_stale_ones() {
        let mut observed = observed(&[1, 3], Vec::new());
        observed
            .colors
            .entry(Color::Blue)
            .or_default()
            .push(replica(Color::Blue, 2, false, "1"));
        let plan = plan(&observed, &scale(Color::Blue, 4)).unwrap();
        assert_eq!(plan.action, Action::Grow);
        assert_eq!((plan.from_replicas, plan.replicas), (2, 4));
        assert_eq!(plan.start, ["p-cryptus-blue-2", "p-cryptus-blue-4"]);
        assert_eq!(plan.replace, ["p-cryptus-blue-2"]);
        assert_eq!(
            plan.serve,
            [
                "p-cryptus-blue-1",
                "p-cryptus-blue-2",
                "p-cryptus-blue-3",
                "p-cryptus-blue-4"
            ]
        );
        assert!(plan.drain.is_empty());
    }

    #[test]
    fn scaling_down_drops_the_highest_numbers() {
        let plan = plan(&observed(&[3, 1, 2], Vec::new()), &scale(Color::Blue, 1)).unwrap();
        assert_eq!(plan.action, Action::Shrink);
        assert_eq!(plan.serve, ["p-cryptus-blue-1"]);
        assert_eq!(plan.drain, ["p-cryptus-blue-2", "p-cryptus-blue-3"]);
        assert_eq!(plan.remove, plan.drain);
        assert!(plan.start.is_empty());
    }

    #[test]
    fn scaling_to_the_same_count_does_nothing() {
        let plan = plan(&observed(&[1, 2], Vec::new()), &scale(Color::Blue, 2)).unwrap();
        assert_eq!(plan.action, Action::Nothing);
        assert!(plan.start.is_empty() && plan.drain.is_empty());
    }

    #[test]
    fn scaling_the_idle_color_records_the_count() {
        let green = vec![replica(Color::Green, 1, false, "0")];
        let mut observed = observed(&[1], green);
        let plan = plan(&observed, &scale(Color::Green, 3)).unwrap();
        assert_eq!(plan.action, Action::Record);
        assert_eq!((plan.from_replicas, plan.replicas), (1, 3));
        assert!(plan.start.is_empty() && plan.serve.is_empty());
        observed.pending.insert(Color::Green, 5);
        let plan = super::plan(&observed, &scale(Color::Green, 2)).unwrap();
        assert_eq!(plan.from_replicas, 5);
    }

    #[test]
    fn a_plan_reads_as_what_it_does() {
        let plan = plan(&observed(&[1], Vec::new()), &deploy_of("2")).unwrap();
        assert_eq!(
            plan.describe(),
            [
                "deploy: traffic moves from blue to green 2 (app:2), 1 replica",
                "  start: p-cryptus-green-1",
                "  nginx names: p-cryptus-green-1",
                "  drain, then stop: p-cryptus-blue-1",
            ]
        );
        let mut with_hooks = plan.clone();
        with_hooks.hooks = ["pre-deploy", "post-deploy"]
            .map(|hook| PlannedHook {
                hook: hook.to_owned(),
                post: hook.starts_with("post"),
                command: vec![format!("/bin/{hook}"), "--now".to_owned()],
            })
            .into();
        let lines = with_hooks.describe();
        assert_eq!(
            lines[1],
            "  first, the pre-deploy hook: /bin/pre-deploy --now"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("  after the switch, the post-deploy hook: /bin/post-deploy --now")
        );
        let plan = super::plan(&observed(&[1, 2], Vec::new()), &scale(Color::Blue, 1)).unwrap();
        assert_eq!(
            plan.describe(),
            [
                "scale: blue goes from 2 to 1 replica of 1 (app:1)",
                "  nginx names: p-cryptus-blue-1",
                "  drain, then stop and go: p-cryptus-blue-2",
            ]
        );
    }

    #[test]
    fn scaling_to_zero_or_past_the_limit_is_refused() {
        let observed = observed(&[1], Vec::new());
        for request in [
            scale(Color::Blue, 0),
            scale(Color::Green, 0),
            scale(Color::Blue, MAX_REPLICAS + 1),
            scale(Color::Green, MAX_REPLICAS + 1),
        ] {
            let err = plan(&observed, &request).unwrap_err();
            assert_eq!(
                crate::error::classify(&err).0,
                crate::error::EXIT_USAGE,
                "{err}"
            );
        }
        let err = plan(&observed, &scale(Color::Blue, 0)).unwrap_err();
        assert!(err.to_string().contains("would stop all traffic"), "{err}");
    }

    #[test]
    fn a_live_canary_is_ended_by_rollback_and_stops_deploy_and_scale() {
        let mut live = observed(&[1], vec![replica(Color::Green, 1, true, "2")]);
        live.canary = Some(Canary {
            color: Color::Green,
            percent: 10,
        });
        let plan = plan(
            &live,
            &Request::Rollback {
                keep_standby: false,
            },
        )
        .unwrap();
        assert_eq!(plan.action, Action::Abandon);
        assert_eq!((plan.active, plan.target), (Color::Blue, Color::Green));
        assert_eq!(plan.serve, ["p-cryptus-blue-1"]);
        assert_eq!(plan.remove, ["p-cryptus-green-1"]);
        assert!(plan.start.is_empty());
        assert!(plan.describe()[0].contains("every client goes back to blue"));

        let err = super::plan(
            &live,
            &Request::Deploy {
                release: None,
                keep_standby: false,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("a canary of green is live at 10%"),
            "{err}"
        );

        let err = super::plan(
            &live,
            &Request::Scale {
                color: Color::Blue,
                replicas: 2,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("a canary of green is live at 10%"),
            "{err}"
        );
    }
}
