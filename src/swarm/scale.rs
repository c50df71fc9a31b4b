//! `scale` on a Swarm. The active color's service gets its new replica
//! count through the manager (a service update at the version read), and
//! the run waits until that many tasks run (healthy, with a healthcheck)
//! and exactly that many answer healthy on the overlay from the edge nginx.
//!
//! nginx needs no reload: its upstream names `tasks.<service>` with
//! `resolve` and re-resolves every second. A new task enters the name only
//! once healthy (the swarm binds it to the service then). A task the swarm
//! removes leaves the name first; its node waits 2 s for that to spread
//! before it sends the stop signal, and the app then refuses new
//! connections, which nginx passes on to the next task. So a shrink fails
//! no request as long as nginx re-resolves within those 2 s.
//!
//! For the idle color the count is recorded on the cluster: the next switch
//! into it starts that many tasks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use tokio::time::Instant;

use crate::context::Stack;
use crate::error::failed_with_hint;
use crate::health::{Expect, Probe};
use crate::history::{Entry, Outcome, Side, operation};
use crate::stack::{Color, Release};
use crate::switch::plan::Action;
use crate::switch::scale::{Report, failed_cleanly};
use crate::switch::{Plan, Settings};
use crate::wait::{self, Limits, Seen};

use super::edge::{Edge, Edges, Follower};
use super::service_name;
use super::state::{self, ClusterLock, ClusterState};
use super::switch::gate_verdict;
use super::up::{short_of, wanted_running};

/// The shortest interval between looks: each lists the tasks and runs a
/// probe in the edge nginx's container.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Scales `color` (checked by [`crate::switch::scale`], which hands a
/// Swarm's scale here) under the cluster's deploy lock.
pub async fn run(
    stack: &Stack<'_>,
    color: Color,
    replicas: u32,
    settings: &Settings,
) -> Result<Report> {
    crate::interrupt::catch();
    let (engine, project) = (stack.engine, &stack.project.name);
    let step = stack.printer.step("taking the deploy lock on the swarm");
    let lock = ClusterLock::acquire(
        engine,
        project,
        operation::SCALE,
        &settings.lock,
        stack.printer,
    );
    let lock = step.ended(lock.await)?;
    let result = locked(stack, color, replicas, settings).await;
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
    result.map_err(failed_cleanly)
}

async fn locked(
    stack: &Stack<'_>,
    color: Color,
    replicas: u32,
    settings: &Settings,
) -> Result<Report> {
    let began = Instant::now();
    let found = read(stack, color).await?;
    let planned = plan(&found, color, replicas)?;
    let Read {
        mut state, name, ..
    } = found;
    let mut report = Report {
        ok: true,
        service: color.service().to_owned(),
        color,
        active: color == planned.active,
        from: planned.from_replicas,
        to: replicas,
        pending: planned.action == Action::Record,
        warnings: Vec::new(),
    };
    match planned.action {
        Action::Record => {
            record_pending(stack, &mut state, color, replicas).await?;
            return Ok(report);
        }
        Action::Nothing => {
            stack.printer.info(format!(
                "{} already runs {replicas} replicas",
                color.service()
            ));
            return Ok(report);
        }
        _ => {}
    }
    let release = planned.release;
    let expect = Expect {
        color,
        version: release.as_ref().map(|r| r.version.clone()),
    };
    let change = Change {
        stack,
        name: &name,
        expect: &expect,
        from: planned.from_replicas,
        to: replicas,
    };
    let done = change.apply(settings).await;
    report.warnings = record(stack, &mut state, &change, release, &done, began, settings).await;
    for warning in &report.warnings {
        stack.printer.warn(warning);
    }
    done.map(|()| report)
}

/// What a scale of `color` to `replicas` would do, read without the lock
/// as the run reads it ([`read`], [`plan`]) and changing nothing: not a
/// service, the cluster's state or its lock. The edges that follow the
/// tasks are named when the active color's count changes.
pub async fn dry_run(stack: &Stack<'_>, color: Color, replicas: u32) -> Result<Plan> {
    let found = read(stack, color).await?;
    let mut planned = plan(&found, color, replicas)?;
    if matches!(planned.action, Action::Grow | Action::Shrink) {
        let edges = Edges::find(stack.engine, &stack.project.name).await?;
        planned.edges = edges.all.iter().map(|e| e.node.clone()).collect();
    }
    Ok(planned)
}

/// What a scale reads of the cluster, its run and its dry run alike: the
/// state (whose record names the active color) and the color's service
/// with its count.
struct Read {
    state: ClusterState,
    /// `<project>_cryptus-<color>`.
    name: String,
    /// The service's replicas; `None` when it has no service.
    current: Option<u32>,
}

async fn read(stack: &Stack<'_>, color: Color) -> Result<Read> {
    let (engine, project) = (stack.engine, &stack.project.name);
    let state = state::read(engine, project).await?;
    let name = service_name(project, color.service());
    let services = engine.services(project).await?;
    let current = services
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.replicas)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(Read {
        state,
        name,
        current,
    })
}

/// What a scale of `color` to `replicas` does, from what [`read`] found,
/// as one engine's planner says it: the idle color's count recorded for
/// the next switch into it, nothing, or the active color's service grown
/// or shrunk (the swarm chooses which tasks go). Pure.
fn plan(read: &Read, color: Color, replicas: u32) -> Result<Plan> {
    let active = read.state.active.unwrap_or(Color::Blue);
    let mut plan = Plan::scale(
        Action::Record,
        active,
        color,
        read.state.releases.get(&color).cloned(),
        read.current.unwrap_or(0),
        replicas,
    );
    if color != active {
        return Ok(plan);
    }
    let name = &read.name;
    let from = read.current.filter(|n| *n > 0).ok_or_else(|| {
        failed_with_hint(
            format!("{name}, the active color, runs no task on the swarm"),
            "run `cryptus start` first; `cryptus status` shows each service",
        )
    })?;
    plan.from_replicas = from;
    plan.serve = vec![name.clone()];
    plan.action = match replicas.cmp(&from) {
        std::cmp::Ordering::Equal => Action::Nothing,
        std::cmp::Ordering::Greater => Action::Grow,
        std::cmp::Ordering::Less => Action::Shrink,
    };
    Ok(plan)
}

/// The idle color: the count waits for the next switch into it.
async fn record_pending(
    stack: &Stack<'_>,
    state: &mut ClusterState,
    color: Color,
    replicas: u32,
) -> Result<()> {
    state.pending.insert(color, replicas);
    state::write(stack.engine, &stack.project.name, state).await?;
    stack.printer.info(format!(
        "{} is idle: the next deploy into {color} starts {replicas} replica{}",
        color.service(),
        if replicas == 1 { "" } else { "s" }
    ));
    Ok(())
}

/// One change of the active color's count.
struct Change<'c> {
    stack: &'c Stack<'c>,
    name: &'c str,
    expect: &'c Expect,
    from: u32,
    to: u32,
}

impl Change<'_> {
    /// Sets the count, then waits; a failure or a signal puts the count
    /// back (the swarm then starts or removes tasks as before).
    async fn apply(&self, settings: &Settings) -> Result<()> {
        let (engine, printer) = (self.stack.engine, self.stack.printer);
        let edges = Edges::find(engine, &self.stack.project.name).await?;
        let step = printer.step(format!(
            "scaling {} from {} to {} tasks",
            self.name, self.from, self.to
        ));
        let changed = async {
            crate::interrupt::check()?;
            if !engine.scale_service(self.name, u64::from(self.to)).await? {
                return Err(failed_with_hint(
                    format!("service {} is gone", self.name),
                    "`cryptus status` shows the stack; `cryptus start` makes what is missing",
                ));
            }
            // An nginx without `resolve` follows the tasks as they change.
            let follower = Follower::new(&edges, self.expect.color).await;
            let answering = self
                .wait(edges.first(), follower.as_ref(), settings)
                .await?;
            // An nginx without `resolve` is given the tasks as they are
            // now. The count stands whatever happens here: a failure is
            // said, and such an nginx fails requests over to the tasks it
            // names until the next command gives it the count's.
            if let Err(err) = edges.repin(self.expect.color, &answering).await {
                printer.warn(format!(
                    "giving nginx the tasks of {}: {err:#}; `cryptus scale` again gives it them",
                    self.name
                ));
            }
            Ok(())
        };
        let Err(err) = step.ended(changed.await) else {
            return Ok(());
        };
        // Said as it is: put back only when the swarm took the old count.
        let (name, from) = (self.name, self.from);
        let replicas = if from == 1 { "replica" } else { "replicas" };
        Err(match engine.scale_service(name, u64::from(from)).await {
            Ok(true) => err.context(format!(
                "scaling {name} failed; it was put back to {from} {replicas} (the swarm starts or removes tasks to match)"
            )),
            Ok(false) => err.context(format!("scaling {name} failed, and the service is gone")),
            Err(back) => err.context(format!(
                "scaling {name} failed, and putting it back to {from} {replicas} failed too ({back:#}); \
                 it may run {} tasks: `cryptus status` shows them, `cryptus scale` sets the count",
                self.to
            )),
        })
    }

    /// Until `to` tasks run and exactly `to` addresses of the service's
    /// name answer healthy from the edge, under `--timeout`: those
    /// addresses.
    async fn wait(
        &self,
        edge: &Edge,
        follower: Option<&Follower<'_>>,
        settings: &Settings,
    ) -> Result<Vec<IpAddr>> {
        let (engine, project) = (self.stack.engine, &self.stack.project.name);
        let wanted = usize::try_from(self.to).unwrap_or(usize::MAX);
        let look = || async {
            crate::interrupt::check()?;
            if let Some(follower) = follower {
                follower.look_or_warn().await;
            }
            let (services, tasks) =
                tokio::try_join!(engine.services(project), engine.tasks(project))?;
            let current = wanted_running(&services, &tasks, self.name);
            if let Some(waiting) = short_of(self.name, wanted, &current) {
                return Ok(Seen::Not(waiting));
            }
            let probes = edge.probe_tasks(self.expect.color).await?;
            Ok(scale_verdict(&probes, self.expect, wanted))
        };
        let timeout = settings.timeout;
        let limits = Limits::until(Instant::now() + timeout, settings.poll.max(LOOK_EVERY));
        wait::until(limits, look, |last| {
            failed_with_hint(
                format!(
                    "{} did not run {} healthy tasks within {}: {last}",
                    self.name,
                    self.to,
                    crate::output::uptime(timeout)
                ),
                "`cryptus status` shows each task and its error; `cryptus logs` shows why",
            )
        })
        .await
    }
}

/// The switch's gate, and no more addresses than wanted: while a removed
/// task is still named, nginx may still send to it.
fn scale_verdict(probes: &[(String, Probe)], expect: &Expect, wanted: usize) -> Seen<Vec<IpAddr>> {
    match gate_verdict(probes, expect, wanted) {
        Seen::Not(why) => Seen::Not(why),
        Seen::Ready(_) if probes.len() > wanted => Seen::Not(format!(
            "{} tasks still resolve on the overlay, {wanted} wanted",
            probes.len()
        )),
        ready => ready,
    }
}

/// The scale in the cluster's history (and the count in its state, when
/// it was done), announced; the warnings of what failed.
async fn record(
    stack: &Stack<'_>,
    state: &mut ClusterState,
    change: &Change<'_>,
    release: Option<Release>,
    done: &Result<()>,
    began: Instant,
    settings: &Settings,
) -> Vec<String> {
    let color = change.expect.color;
    let release = release.unwrap_or(Release {
        image: String::new(),
        version: String::new(),
    });
    let side = |replicas| Side {
        color,
        image: release.image.clone(),
        version: release.version.clone(),
        image_id: None,
        replicas,
    };
    if done.is_ok() {
        state.replicas.insert(color, change.to);
    }
    let entry = Entry {
        time: Utc::now(),
        operation: operation::SCALE.to_owned(),
        user: crate::lock::user(),
        host: crate::lock::hostname(),
        from: side(change.from),
        to: side(change.to),
        outcome: if done.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        reason: done.as_ref().err().map(|err| format!("{err:#}")),
        durations: BTreeMap::from([("total".to_owned(), began.elapsed().as_secs_f64())]),
        hooks: Vec::new(),
    };
    let (engine, project) = (stack.engine, &stack.project.name);
    state::record(engine, project, state, entry, &settings.notify).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Memory, Report as Health};

    fn healthy(addr: &str) -> (String, Probe) {
        let report = Health {
            status: "healthy".into(),
            timestamp: "t".into(),
            uptime: 1.0,
            instance: "blue".into(),
            version: "1".into(),
            memory: Memory {
                used: 1.0,
                total: 2.0,
            },
        };
        (addr.to_owned(), Probe::Answered(report))
    }

    /// The run and the dry run plan alike: the idle color's count is
    /// recorded, the active color's service grows, shrinks or is left,
    /// and an active color with no task is refused.
    #[test]
    fn a_scale_is_planned_from_the_record_and_the_service_count() {
        let state = ClusterState {
            active: Some(Color::Green),
            ..Default::default()
        };
        let read = |current| Read {
            state: state.clone(),
            name: "shop_cryptus-green".into(),
            current,
        };
        let planned = |current, color, replicas| {
            plan(&read(current), color, replicas).map(|p| (p.action, p.from_replicas, p.serve))
        };
        let green = vec!["shop_cryptus-green".to_owned()];
        assert_eq!(
            planned(Some(3), Color::Green, 5).unwrap(),
            (Action::Grow, 3, green.clone())
        );
        assert_eq!(
            planned(Some(3), Color::Green, 2).unwrap(),
            (Action::Shrink, 3, green.clone())
        );
        assert_eq!(
            planned(Some(3), Color::Green, 3).unwrap(),
            (Action::Nothing, 3, green)
        );
        assert_eq!(
            planned(None, Color::Blue, 2).unwrap(),
            (Action::Record, 0, Vec::new())
        );
        let refused = planned(Some(0), Color::Green, 2).unwrap_err();
        assert!(refused.to_string().contains("runs no task"), "{refused:#}");
    }

    #[test]
    fn a_scale_is_done_when_exactly_the_wanted_tasks_answer() {
        let expect = Expect {
            color: Color::Blue,
            version: Some("1".into()),
        };
        let three = [
            healthy("10.0.1.1"),
            healthy("10.0.1.2"),
            healthy("10.0.1.3"),
        ];
        assert!(
            matches!(scale_verdict(&three, &expect, 3), Seen::Ready(addrs) if addrs.len() == 3)
        );
        let Seen::Not(why) = scale_verdict(&three, &expect, 2) else {
            panic!("a removed task still named passed")
        };
        assert_eq!(why, "3 tasks still resolve on the overlay, 2 wanted");
        let Seen::Not(why) = scale_verdict(&three, &expect, 5) else {
            panic!("three of five passed")
        };
        assert_eq!(why, "3 of 5 tasks resolve on the overlay");
    }
}
