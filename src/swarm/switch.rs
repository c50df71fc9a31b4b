//! Deploy and rollback on a Swarm: traffic moves to the idle color's
//! service. Under the cluster's deploy lock the switch reads the state the
//! cluster holds, creates the idle color's service (or updates it to the
//! release and scales it up from 0), gates on every new task answering
//! `/api/health` as that color and version on the overlay (probed from the
//! edge nginx), switches the edge nginx (render, `nginx -t`, reload, wait
//! until served), watches, records the state, drains nginx's old workers
//! and scales the old color to 0 (or keeps it with `--keep-standby`).
//! Before the flip a failure takes back what the run made; after it, the
//! edge is put back on the old color. The project's hooks run as on one
//! engine (`switch::hooks`), each as a job of the swarm: the pre- hook
//! before the new color starts (a failure changes nothing), the post- hook
//! once the switch is proven (a failure is a warning).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use tokio::time::Instant;

use crate::compose::Hook;
use crate::context::Stack;
use crate::engine::{ServiceMode, ServiceSpec};
use crate::error::{failed_with_hint, usage};
use crate::health::{Expect, Probe};
use crate::history::{Entry, HookRun, Outcome, Side, operation};
use crate::stack::{Color, Release};
use crate::switch::hooks::{self, Between};
use crate::switch::plan::{Action, PlannedBuild};
use crate::switch::report::{Report, Steps, round};
use crate::switch::watch;
use crate::switch::{Ask, Plan, Settings, Source};
use crate::wait::{self, Limits, Seen};

mod canary;

pub use canary::end_left;

use super::edge::Edges;
use super::plan::service_spec;
use super::registry::{self, Registry};
use super::service_name;
use super::state::{self, ClusterLock, ClusterState};

/// Failed probes in a row, while watching, that put traffic back.
const WATCH_FAILURES: u32 = 3;

fn operation_of(ask: &Ask) -> &'static str {
    match ask {
        Ask::Deploy { .. } => operation::DEPLOY,
        Ask::Rollback => operation::ROLLBACK,
    }
}

pub async fn run(stack: &Stack<'_>, ask: Ask, settings: &Settings) -> Result<Report> {
    let began = Instant::now();
    crate::interrupt::catch();
    ask.check()?;
    let (engine, project) = (stack.engine, &stack.project.name);
    let edge = Edges::find(engine, project).await?;
    let mut steps = Steps::new(stack.printer);
    let operation = operation_of(&ask);
    let lock = ClusterLock::acquire(engine, project, operation, &settings.lock, stack.printer);
    let lock = steps
        .run("lock", "taking the deploy lock on the swarm", lock)
        .await?;
    let result = locked(stack, ask, settings, edge, &mut steps, began).await;
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
    result
}

/// The release `color` runs by the record, else by the compose file.
async fn recorded_release(
    stack: &Stack<'_>,
    state: &ClusterState,
    color: Color,
) -> Result<Release> {
    match state.releases.get(&color) {
        Some(release) => Ok(release.clone()),
        None => stack.default_release(color).await,
    }
}

/// The release a deploy asks for, when it names one. An image of a
/// registry is asked of the registry by every node that may run `target`,
/// pinned to its digest and pulled on the manager by it (a dry run pulls
/// nothing: [`registry::release`]). With a registry named
/// (`CRYPTUS_SWARM_REGISTRY`), an image it gives or builds named with no
/// registry host is pushed there for the nodes to pull; without one, an
/// image it gives is on every node that may run `target`, and one it
/// builds is built on the manager and loaded on the other nodes that may
/// run `target` and lack it, through their engines.
async fn deploy_release(
    stack: &Stack<'_>,
    target: Color,
    source: Source,
    version: Option<String>,
    run: Run,
) -> Result<Option<Release>> {
    let registry = Registry::from_env()?;
    let source = match source.for_color(stack, target) {
        // A dry run's build is planned by [`dry_run`]: its release is
        // known only once built.
        Source::Build(_) if run == Run::Dry => return Ok(None),
        Source::Build(context) => {
            let built = crate::switch::deploy::build_release(stack, target, context, version);
            let release = built.await?;
            if let Some(registry) = &registry {
                return registry::push(stack, target, registry, &release)
                    .await
                    .map(Some);
            }
            super::nodes::load_on_nodes(stack, target, &release).await?;
            super::nodes::image_on_nodes(stack, target, &release).await?;
            return Ok(Some(release));
        }
        other => other,
    };
    let given = matches!(source, Source::Image(_));
    let reference = match &source {
        Source::Image(reference) => reference.clone(),
        _ => stack.default_release(target).await?.image,
    };
    if registry::names_registry(&reference) {
        let release = registry::release(stack, target, &reference, version, run == Run::Real);
        return release.await.map(Some);
    }
    let known = crate::switch::deploy::known_release(stack, target, source, version);
    let release = match known.await? {
        Some(release) if given => release,
        other => return Ok(other),
    };
    match &registry {
        Some(registry) if run == Run::Real => registry::push(stack, target, registry, &release)
            .await
            .map(Some),
        // A dry run's plan names where the image would be pushed.
        Some(_) => Ok(Some(release)),
        None => {
            super::nodes::image_on_nodes(stack, target, &release).await?;
            Ok(Some(release))
        }
    }
}

async fn locked(
    stack: &Stack<'_>,
    ask: Ask,
    settings: &Settings,
    edge: Edges,
    steps: &mut Steps<'_>,
    began: Instant,
) -> Result<Report> {
    let operation = operation_of(&ask);
    let (state, active) = read_active(stack, &edge, true).await?;
    let decided = decide(stack, ask, &state, active, steps, Run::Real).await?;
    let release = decided
        .release
        .ok_or_else(|| anyhow::anyhow!("the release to deploy is not known"))?;
    let switch = Switch {
        stack,
        settings,
        edge,
        operation,
        to: decided.to,
        from: decided.from,
        release,
        replicas: decided.replicas,
        made: Made::Nothing,
        old_workers: Vec::new(),
        to_addrs: Vec::new(),
        from_addrs: Vec::new(),
        state,
        readiness: None,
        switched_at: None,
        monitored: decided.monitored,
        hooks: Vec::new(),
        warnings: Vec::new(),
        canary: None,
        failed_at: None,
    };
    // A rollback ends a canary a killed deploy left (a deploy was refused).
    if switch.state.canary.is_some() {
        return switch.abandon_canary(steps, began).await;
    }
    switch.execute(steps, began).await
}

/// The cluster's state and the active color: the edges' served color
/// where they say one (warning when the record disagrees), else the
/// record's. With `correct` (under the lock), a record that disagrees, or
/// that names a canary already over, is written corrected at once, before
/// anything can end the run early (an unknown image, nothing to roll back
/// to); a dry run corrects only what it read.
async fn read_active(
    stack: &Stack<'_>,
    edge: &Edges,
    correct: bool,
) -> Result<(ClusterState, Color)> {
    let (engine, project) = (stack.engine, &stack.project.name);
    let mut state = state::read(engine, project).await?;
    let served = edge.served().await;
    let (active, disagree) = believe(state.active, served.as_ref().ok().copied());
    let mut changed = false;
    match (&served, disagree) {
        (Err(err), _) => stack
            .printer
            .warn(format!("{err:#}; going by the cluster's record ({active})")),
        (Ok(_), Some(warning)) => {
            stack.printer.warn(warning);
            state.active = Some(active);
            changed = true;
        }
        (Ok(_), None) => {}
    }
    changed |= forget_finished_canary(&mut state, active);
    if correct && changed {
        if let Err(err) = state::write(engine, project, &mut state).await {
            stack
                .printer
                .warn(format!("correcting the cluster's record: {err:#}"));
        }
    }
    Ok((state, active))
}

/// Forgets a recorded canary whose color already serves every client
/// (its deploy was cut short after the flip to 100%): it is over, and a
/// rollback is then an ordinary one. Whether it did.
fn forget_finished_canary(state: &mut ClusterState, active: Color) -> bool {
    let over = state
        .canary
        .as_ref()
        .is_some_and(|live| live.canary.color != active.other());
    if over {
        state.canary = None;
    }
    over
}

/// Whether a switch runs, or is a dry run that builds nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    Real,
    Dry,
}

/// What a switch decides from what runs and what was asked, before it
/// changes anything.
struct Decided {
    from: Side,
    to: Side,
    /// `None` only in a dry run of `deploy --build`.
    release: Option<Release>,
    /// The target's tasks once it serves.
    replicas: u64,
    /// The target's tasks now (0: at 0, or no service yet).
    standing: u64,
    /// Whether Prometheus runs in the stack: the watch asks the metric gate.
    monitored: bool,
}

/// Both sides of a switch from `active`: the release (the image checked
/// on every node that may run the target), and the target's task count.
async fn decide(
    stack: &Stack<'_>,
    ask: Ask,
    state: &ClusterState,
    active: Color,
    steps: &mut Steps<'_>,
    run: Run,
) -> Result<Decided> {
    let (engine, project) = (stack.engine, &stack.project.name);
    let target = active.other();
    let services = engine.services(project).await?;
    let replicas_of = |color: Color| {
        services
            .iter()
            .find(|s| s.name == service_name(project, color.service()))
            .and_then(|s| s.replicas)
            .filter(|n| *n > 0)
    };
    let active_replicas = replicas_of(active).unwrap_or_else(|| {
        let declared = stack.compose.service(active.service()).map(|s| s.replicas);
        u64::from(declared.unwrap_or(1).max(1))
    });
    // A count `scale` recorded for the idle color is what a switch into
    // it starts; else as many tasks as the active color runs.
    let replicas = state
        .pending
        .get(&target)
        .map_or(active_replicas, |n| u64::from(*n));
    let prometheus = service_name(project, crate::metrics::PROMETHEUS);
    let monitored = services
        .iter()
        .any(|s| s.name == prometheus && s.replicas != Some(0));
    let from_release = recorded_release(stack, state, active).await?;
    let side = |color, release: &Release, replicas: u64| Side {
        color,
        image: release.image.clone(),
        version: release.version.clone(),
        image_id: None,
        replicas: u32::try_from(replicas).unwrap_or(u32::MAX),
    };
    let from = side(active, &from_release, active_replicas);
    // A canary a killed deploy left is ended by a rollback, and a deploy
    // waits for it: it would replace the tasks the edges send clients to.
    let live = state.canary.clone();
    if let (Some(live), Ask::Deploy { .. }) = (&live, &ask) {
        return Err(canary::live(live, active));
    }
    let rollback_to = match &live {
        Some(live) => Some(&live.release),
        None => state.releases.get(&target),
    };
    let release = match ask {
        Ask::Deploy { source, version } => {
            let known = deploy_release(stack, target, source, version, run);
            steps.wait("image", "getting the image", known).await?
        }
        Ask::Rollback => Some(rollback_to.cloned().ok_or_else(|| {
            failed_with_hint(
                format!("nothing to roll back to: {target} has run nothing on this swarm"),
                "`cryptus status` shows the recorded releases; deploy one with `cryptus deploy --image ...`",
            )
        })?),
    };
    let to_build = Release {
        image: String::new(),
        version: String::new(),
    };
    Ok(Decided {
        from,
        to: side(target, release.as_ref().unwrap_or(&to_build), replicas),
        release,
        replicas,
        standing: replicas_of(target).unwrap_or(0),
        monitored,
    })
}

/// What a deploy or rollback would do on the swarm, read without the lock
/// and changing nothing: not a service, a config, the cluster's state.
pub async fn dry_run(stack: &Stack<'_>, ask: Ask, settings: &Settings) -> Result<Plan> {
    ask.check()?;
    let (engine, project) = (stack.engine, &stack.project.name);
    let edge = Edges::find(engine, project).await?;
    let (state, active) = read_active(stack, &edge, false).await?;
    let ends_canary = state.canary.is_some();
    let operation = operation_of(&ask);
    let registry = Registry::from_env()?;
    let given = matches!(
        &ask,
        Ask::Deploy {
            source: Source::Image(_),
            ..
        }
    );
    let build = match &ask {
        Ask::Deploy { source, version } => {
            let version = version.as_deref();
            planned_build(stack, active.other(), source, version, registry.is_some()).await?
        }
        Ask::Rollback => None,
    };
    let mut steps = Steps::new(stack.printer);
    let decided = decide(stack, ask, &state, active, &mut steps, Run::Dry).await?;
    let edges = edge.all.iter().map(|e| e.node.clone()).collect();
    let mut plan = plan_of(
        project,
        operation,
        &decided,
        &state,
        settings.keep_standby,
        edges,
    );
    if ends_canary {
        // A rollback ends a live canary: every client back on the active
        // color, the canary's service to 0, no hooks (as the run does).
        let canary = service_name(project, plan.target.service());
        plan.action = Action::Abandon;
        plan.replicas = 0;
        plan.start = Vec::new();
        plan.serve = vec![service_name(project, plan.active.service())];
        plan.drain = vec![canary];
        plan.clears_pending = false;
    } else {
        plan.hooks = hooks::planned(stack, operation, settings.hooks);
    }
    // What the run pushes: an image it builds or is given, when only the
    // manager has it.
    if let Some(registry) = &registry {
        let image = match (&build, &plan.release) {
            (Some(build), _) => Some(&build.image),
            (None, release) => release.as_ref().filter(|_| given).map(|r| &r.image),
        };
        if let Some(image) = image.filter(|image| !registry::names_registry(image)) {
            let push = registry.reference(image);
            plan.push = Some(push.map_err(|why| failed_with_hint(why, "deploy a tagged image"))?);
        }
    }
    plan.build = build;
    Ok(plan)
}

/// What a dry run's `deploy --build` into `target` builds, named and
/// checked as one engine's dry run does, and the nodes the image would be
/// copied to from the manager ([`super::nodes::load_targets`], which the
/// run loads it on by), none when it is `pushed` to a registry; `None`
/// when it builds nothing.
async fn planned_build(
    stack: &Stack<'_>,
    target: Color,
    source: &Source,
    version: Option<&str>,
    pushed: bool,
) -> Result<Option<PlannedBuild>> {
    let Some(image) = crate::switch::deploy::planned_build(stack, target, source, version)? else {
        return Ok(None);
    };
    let release = Release {
        image,
        version: version.unwrap_or_default().to_owned(),
    };
    // With a registry the image is pushed there rather than copied.
    let copy_to = if pushed {
        Vec::new()
    } else {
        super::nodes::load_targets(stack, target, &release)
            .await?
            .map(|(_, nodes)| nodes.into_iter().map(|n| n.hostname).collect())
            .unwrap_or_default()
    };
    Ok(Some(PlannedBuild {
        image: release.image,
        copy_to,
    }))
}

/// [`dry_run`]'s plan, as one engine's planner shows one: the target's
/// service starts (or scales up), the edges switch to it, the active
/// color's service drains and goes to 0 tasks (or stays, a standby).
fn plan_of(
    project: &str,
    operation: &str,
    decided: &Decided,
    state: &ClusterState,
    keep_standby: bool,
    edges: Vec<String>,
) -> Plan {
    let (active, target) = (decided.from.color, decided.to.color);
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let target_service = service_name(project, target.service());
    Plan {
        operation: operation.to_owned(),
        action: Action::Switch,
        active,
        target,
        release: decided.release.clone(),
        from_replicas: count(decided.standing),
        replicas: count(decided.replicas),
        reuse: false,
        replace: Vec::new(),
        start: vec![target_service.clone()],
        serve: vec![target_service],
        drain: vec![service_name(project, active.service())],
        remove: Vec::new(),
        keep_standby,
        clears_pending: state.pending.contains_key(&target),
        hooks: Vec::new(),
        edges,
        build: None,
        push: None,
    }
}

/// What a run did to the target's service, for its undo.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Made {
    Nothing,
    /// Created it: removed on undo.
    Created,
    /// Updated the one that was there: scaled back to 0 on undo.
    Updated,
}

/// The new color's tasks a look probes.
#[derive(Clone, Copy)]
enum Tasks<'a> {
    /// Every address of its `tasks.<service>`, as many as it runs.
    Named,
    /// These addresses: those a canary's upstream names.
    At(&'a [IpAddr]),
}

/// What [`Switch::probe`] looks at, and how its failure reads.
struct Looks<'a> {
    tasks: Tasks<'a>,
    /// What each edge may answer as (through nginx, one of them).
    edges: &'a [Expect],
    /// When the looks failed: `while watched`.
    during: &'a str,
}

struct Switch<'s> {
    stack: &'s Stack<'s>,
    settings: &'s Settings,
    edge: Edges,
    operation: &'static str,
    from: Side,
    to: Side,
    release: Release,
    replicas: u64,
    made: Made,
    /// Each edge's nginx workers from before the last reload.
    old_workers: Vec<Vec<String>>,
    /// The addresses of the new color's tasks that passed the gate, and
    /// of the old color's before the flip: backup servers while nginx's
    /// new workers resolve the color's name.
    to_addrs: Vec<IpAddr>,
    from_addrs: Vec<IpAddr>,
    state: ClusterState,
    readiness: Option<f64>,
    switched_at: Option<chrono::DateTime<Utc>>,
    /// Whether Prometheus runs in the stack: the watch asks the metric gate.
    monitored: bool,
    /// The deploy hooks that ran.
    hooks: Vec<HookRun>,
    /// A canary's steps and how far it came.
    canary: Option<crate::switch::canary::Progress>,
    /// The canary's share when a step failed.
    failed_at: Option<u8>,
    /// What went wrong without undoing the switch (a post- hook, a
    /// canary step's notification): in every report.
    warnings: Vec<String>,
}

impl Switch<'_> {
    fn expect(&self) -> Expect {
        Expect {
            color: self.to.color,
            version: Some(self.release.version.clone()),
        }
    }

    fn target_name(&self) -> String {
        service_name(&self.stack.project.name, self.to.color.service())
    }

    async fn execute(mut self, steps: &mut Steps<'_>, began: Instant) -> Result<Report> {
        let hooks = Hook::of(self.operation);
        hooks::say_skipped(self.stack, self.operation, self.settings.hooks);
        super::hooks::sweep(self.stack).await;
        let ready = async {
            if let Some((before, _)) = hooks {
                self.hook(steps, before).await?;
            }
            let spec = self.bring_up(steps).await?;
            self.gate(steps, &spec).await
        };
        if let Err(err) = ready.await {
            return Ok(self.fail(steps, began, Outcome::Failed, err).await);
        }
        // The versions tell how each edge is pointed at the tasks.
        let (workers, old, ()) = tokio::join!(
            self.edge.workers(),
            self.edge.first().probe_tasks(self.from.color),
            self.edge.learn_versions()
        );
        self.old_workers = workers;
        self.from_addrs = old.map(|probes| answering(&probes)).unwrap_or_default();
        if let Err(err) = self.canary_steps(steps).await {
            return self.flip_back(steps, began, Outcome::RolledBack, err).await;
        }
        let flipped = async {
            let message = format!("switching nginx to {}", self.to.color);
            let apply = self.edge.apply(self.to.color, &self.to_addrs);
            steps.run("switch", message, apply).await?;
            self.switched_at = Some(Utc::now());
            self.served(steps).await
        };
        if let Err(err) = flipped.await {
            return self.flip_back(steps, began, Outcome::Failed, err).await;
        }
        if let Err(err) = self.watch(steps).await {
            return self.flip_back(steps, began, Outcome::RolledBack, err).await;
        }
        if let Some((_, after)) = hooks
            && let Err(err) = self.hook(steps, after).await
        {
            // The switch is proven: a failed post- hook is reported and
            // recorded, and traffic stays.
            let operation = self.operation;
            self.warnings
                .push(format!("{err:#}; the {operation} stands"));
        }
        self.finish(steps, began).await
    }

    /// Runs `hook` of the operation as a job of the release.
    async fn hook(&mut self, steps: &mut Steps<'_>, hook: Hook) -> Result<()> {
        let between = Between {
            operation: self.operation,
            from: &self.from,
            to: self.to.color,
            release: &self.release,
        };
        let ran = &mut self.hooks;
        hooks::step(
            self.stack,
            steps,
            (hook, &between),
            (self.settings.hooks, &super::hooks::Jobs),
            ran,
        )
        .await
    }

    /// Creates the target's service, or updates it to the release and its
    /// replicas (from 0, or from a standby).
    async fn bring_up(&mut self, steps: &mut Steps<'_>) -> Result<ServiceSpec> {
        let stack = self.stack;
        let color = self.to.color;
        let service = stack.compose.service(color.service()).ok_or_else(|| {
            usage(
                format!("the compose file has no service {}", color.service()),
                "declare both colors, as `cryptus init` writes them",
            )
        })?;
        let project = &stack.project.name;
        let planned = service_spec(
            project,
            &stack.project.dir,
            stack.compose,
            service,
            &self.release,
            None,
        )?;
        let mut spec = planned.spec;
        super::up::give_grants(stack.engine, project, &mut spec, &planned.grants).await?;
        spec.mode = ServiceMode::Replicated(self.replicas);
        let message = format!(
            "starting {color} {} ({} tasks)",
            self.release.version, self.replicas
        );
        let engine = stack.engine;
        let made = async {
            if engine.update_service(&spec).await? {
                Ok(Made::Updated)
            } else if engine.create_service(&spec).await? {
                Ok(Made::Created)
            } else {
                Err(failed_with_hint(
                    format!("service {} appeared while it was made", spec.name),
                    "another tool changes the stack; `cryptus status` shows it",
                ))
            }
        };
        self.made = steps.run("start", message, made).await?;
        Ok(spec)
    }

    /// Every task of the target runs, and every address of its
    /// `tasks.<service>` answers healthy as the color and release, from
    /// the edge nginx.
    async fn gate(&mut self, steps: &mut Steps<'_>, spec: &ServiceSpec) -> Result<()> {
        let started = Instant::now();
        let (engine, project) = (self.stack.engine, &self.stack.project.name);
        let expect = self.expect();
        let (edge, timeout) = (self.edge.first(), self.settings.timeout);
        let wanted = usize::try_from(self.replicas).unwrap_or(usize::MAX);
        let look = || async {
            crate::interrupt::check()?;
            let (services, tasks) =
                tokio::try_join!(engine.services(project), engine.tasks(project))?;
            let current = super::up::wanted_running(&services, &tasks, &spec.name);
            if let Some(waiting) = super::up::not_running(spec, &current) {
                return Ok(Seen::Not(waiting));
            }
            let probes = edge.probe_tasks(expect.color).await?;
            Ok(gate_verdict(&probes, &expect, wanted))
        };
        let message = format!(
            "waiting for {} to answer healthy as {} {}",
            spec.name, expect.color, self.release.version
        );
        let gated = wait::until(
            Limits::until(started + timeout, self.settings.poll),
            look,
            |last| {
                failed_with_hint(
                    format!(
                        "{} did not answer healthy as {} {} within {}: {last}",
                        spec.name,
                        expect.color,
                        self.release.version,
                        crate::output::uptime(timeout)
                    ),
                    "`cryptus status` shows each task; `docker service logs` on the manager shows why",
                )
            },
        );
        self.to_addrs = steps.wait("health", message, gated).await?;
        self.readiness = Some(round(started.elapsed()));
        Ok(())
    }

    /// Every edge's nginx answers as the new color `--verify` times in a
    /// row.
    async fn served(&self, steps: &mut Steps<'_>) -> Result<()> {
        let expect = self.expect();
        let needed = self.settings.verify.max(1);
        // Each look asks every edge for all the answers at once, one exec
        // each: the answers in a row are one look's.
        let look = || async {
            let looks = self.edge.probe_lbs_times(needed).await;
            let mut probes = Vec::new();
            for (node, answers) in looks {
                probes.push((node, Ok(in_a_row(answers?, needed as usize, &expect))));
            }
            Ok(match not_serving(probes, std::slice::from_ref(&expect))? {
                None => Seen::Ready(()),
                Some(why) => Seen::Not(why),
            })
        };
        let limits = Limits::until(Instant::now() + self.settings.timeout, VERIFY_EVERY);
        let waiting = wait::until(limits, look, |last| {
            failed_with_hint(
                format!(
                    "nginx did not serve {} {} {needed} times in a row: {last}",
                    expect.color, self.release.version
                ),
                "`cryptus status` shows the tasks; nginx's log is `docker service logs` of its service",
            )
        });
        let message = format!("waiting until nginx serves {}", expect.color);
        steps.wait("verify", message, waiting).await
    }

    /// The metric gate over `window` for the new version, where the stack
    /// runs Prometheus, asked from inside the edge.
    fn metric_gate(&self, window: std::time::Duration) -> Option<watch::Gate> {
        self.monitored.then(|| {
            let prometheus = self.edge.first().prometheus();
            let (color, version) = (self.to.color, &self.release.version);
            watch::Gate::new(prometheus, &self.settings.gate, color, version, window)
        })
    }

    /// For `--watch`: the new color through nginx, and each of its tasks;
    /// [`WATCH_FAILURES`] failed looks in a row end it. Where Prometheus
    /// runs, the metric gate's condition holding ends it too, asked as on
    /// one engine ([`watch::ask_gate`]) from inside the edge nginx.
    async fn watch(&self, steps: &mut Steps<'_>) -> Result<()> {
        let watch = self.settings.watch;
        if watch.is_zero() {
            return Ok(());
        }
        let expect = self.expect();
        let gate = self.metric_gate(watch);
        let looks = Looks {
            tasks: Tasks::Named,
            edges: std::slice::from_ref(&expect),
            during: "while watched",
        };
        let watching = self.probe(looks, watch, gate.as_ref());
        let message = format!(
            "watching {} for {}{}",
            expect.color,
            crate::output::uptime(watch),
            if gate.is_some() {
                ", with the metric gate"
            } else {
                ""
            }
        );
        steps.wait("watch", message, watching).await
    }

    /// Probes the new color's tasks and every edge every `--poll` for
    /// `length`: each task must answer healthy as the new color and
    /// release, each edge as one of `looks.edges`; [`WATCH_FAILURES`]
    /// failed looks in a row fail it, naming what the last one saw. With
    /// `gate`, its condition holding fails it too ([`watch::ask_gate`]).
    /// The watch after the flip and a canary's hold both look so.
    async fn probe(
        &self,
        looks: Looks<'_>,
        length: Duration,
        gate: Option<&watch::Gate>,
    ) -> Result<()> {
        let expect = self.expect();
        let (client, printer) = (crate::health::client(), self.stack.printer);
        let end = Instant::now() + length;
        let mut next_gate = Instant::now() + watch::GATE_EVERY;
        let (mut failures, mut gate_said) = (0, false);
        while Instant::now() < end {
            crate::interrupt::check()?;
            match self.look(&looks, &expect).await? {
                Some(why) => {
                    failures += 1;
                    if failures >= WATCH_FAILURES {
                        return Err(failed_with_hint(
                            format!(
                                "{} failed {failures} looks in a row {}: {why}",
                                expect.color, looks.during
                            ),
                            "traffic is back on the old color; `cryptus status` shows the tasks",
                        ));
                    }
                }
                None => failures = 0,
            }
            if let Some(gate) = gate
                && Instant::now() >= next_gate
            {
                next_gate = Instant::now() + watch::GATE_EVERY;
                watch::ask_gate(printer, &client, gate, &mut gate_said).await?;
            }
            tokio::time::sleep(self.settings.poll).await;
        }
        // Once more at the end, over the whole window.
        if let Some(gate) = gate {
            watch::ask_gate(printer, &client, gate, &mut gate_said).await?;
        }
        Ok(())
    }

    /// One look of [`Switch::probe`]: what failed, if anything did.
    async fn look(&self, looks: &Looks<'_>, expect: &Expect) -> Result<Option<String>> {
        let edge = self.edge.first();
        let (lbs, tasks) = tokio::join!(self.edge.probe_lbs(), async {
            match looks.tasks {
                Tasks::Named => edge.probe_tasks(expect.color).await,
                Tasks::At(addrs) => edge.probe_addrs(addrs).await,
            }
        });
        let wanted = match looks.tasks {
            Tasks::Named => usize::try_from(self.replicas).unwrap_or(usize::MAX),
            Tasks::At(addrs) => addrs.len(),
        };
        // An exec that failed (an edge's engine that did not answer once)
        // is a failed look, counted as the others are: not the end of
        // the watch.
        let lb = not_serving(lbs, looks.edges).unwrap_or_else(|err| Some(format!("{err:#}")));
        let tasks = match tasks {
            Ok(tasks) => tasks,
            Err(err) => return Ok(Some(format!("probing the tasks: {err:#}"))),
        };
        Ok(match gate_verdict(&tasks, expect, wanted) {
            Seen::Not(why) => Some(why),
            Seen::Ready(_) => lb,
        })
    }

    /// Records the switch, drains nginx's old workers, and scales the old
    /// color to 0 unless it stays as a standby.
    async fn finish(mut self, steps: &mut Steps<'_>, began: Instant) -> Result<Report> {
        self.state.active = Some(self.to.color);
        self.state
            .releases
            .insert(self.to.color, self.release.clone());
        self.state.replicas.insert(self.to.color, self.to.replicas);
        self.state.pending.remove(&self.to.color);
        self.state.canary = None;
        let mut report = self.report(steps, began, Outcome::Ok, None);
        let warnings = self.record(&report).await;
        report.warnings.extend(warnings);
        report.warnings.extend(self.edge.pinned_warnings().await);
        let (stack, settings) = (self.stack, self.settings);
        let old = service_name(&stack.project.name, self.from.color.service());
        let keep = settings.keep_standby;
        let retire = async {
            if let Err(err) = self
                .edge
                .drain(stack.printer, &self.old_workers, settings.drain)
                .await
            {
                stack
                    .printer
                    .warn(format!("waiting for nginx's old workers: {err:#}"));
            }
            if !keep {
                stack.engine.scale_service(&old, 0).await?;
            }
            Ok(())
        };
        let message = if keep {
            format!("draining; {old} stays up as a standby")
        } else {
            format!("draining, then scaling {old} to 0")
        };
        if let Err(err) = steps.run("drain", message, retire).await {
            report.warnings.push(format!("{err:#}"));
        }
        report.steps = steps.done.clone();
        report.total = round(began.elapsed());
        for warning in &report.warnings {
            stack.printer.warn(warning);
        }
        Ok(report)
    }

    /// Puts the edge back on the old color after a failed flip or watch,
    /// then ends as [`Switch::fail`] does.
    async fn flip_back(
        mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        outcome: Outcome,
        err: anyhow::Error,
    ) -> Result<Report> {
        let from = self.from.color;
        // The workers to drain after putting nginx back are those serving
        // the new color now, not the ones from before the flip.
        self.old_workers = self.edge.workers().await;
        let back = steps
            .run(
                "rollback",
                format!("putting nginx back on {from}"),
                self.edge.apply(from, &self.from_addrs),
            )
            .await;
        self.switched_at = None;
        if let Err(back_err) = back {
            let err = failed_with_hint(
                format!(
                    "switching to {}: {err:#}; putting nginx back on {from} failed too ({back_err:#}); both colors are left running",
                    self.to.color
                ),
                "`cryptus status` shows the tasks; `cryptus rollback` once nginx answers",
            );
            let mut report = self.report(steps, began, Outcome::Failed, Some(&err));
            report.traffic_unsettled = true;
            let warnings = self.record(&report).await;
            report.warnings.extend(warnings);
            for warning in &report.warnings {
                self.stack.printer.warn(warning);
            }
            return Ok(report);
        }
        let drained = self
            .edge
            .drain(self.stack.printer, &self.old_workers, self.settings.drain)
            .await;
        if let Err(drain_err) = drained {
            self.stack.printer.warn(format!("{drain_err:#}"));
        }
        Ok(self.fail(steps, began, outcome, err).await)
    }

    /// Ends a switch whose traffic is on the old color: what it made goes
    /// (unless `--keep-failed`), and the failure is recorded.
    async fn fail(
        &mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        outcome: Outcome,
        err: anyhow::Error,
    ) -> Report {
        // Every edge is back on the old color.
        self.state.canary = None;
        if !self.settings.keep_failed {
            let (engine, name) = (self.stack.engine, self.target_name());
            let undone = match self.made {
                Made::Nothing => Ok(()),
                Made::Created => engine.remove_service(&name).await,
                Made::Updated => engine.scale_service(&name, 0).await.map(|_| ()),
            };
            if let Err(undo) = undone {
                self.stack.printer.warn(format!("{undo:#}"));
            }
        }
        let mut report = self.report(steps, began, outcome, Some(&err));
        let warnings = self.record(&report).await;
        report.warnings.extend(warnings);
        for warning in &report.warnings {
            self.stack.printer.warn(warning);
        }
        report
    }

    fn report(
        &self,
        steps: &Steps<'_>,
        began: Instant,
        outcome: Outcome,
        err: Option<&anyhow::Error>,
    ) -> Report {
        let sides = (self.from.clone(), self.to.clone());
        Report {
            reason: err.map(|err| format!("{err:#}")),
            hint: err.and_then(|err| crate::error::classify(err).1.map(str::to_owned)),
            readiness: self.readiness,
            switched_at: self.switched_at,
            hooks: self.hooks.clone(),
            warnings: self.warnings.clone(),
            canary: self.canary.clone(),
            failed_at: self.failed_at,
            ..Report::new(self.operation, outcome, sides, steps, began)
        }
    }

    /// Appends the report to the cluster's state and announces it; the
    /// warnings of what failed (the switch itself is done).
    async fn record(&mut self, report: &Report) -> Vec<String> {
        let entry = Entry {
            time: Utc::now(),
            operation: report.operation.clone(),
            user: crate::lock::user(),
            host: crate::lock::hostname(),
            from: report.from.clone(),
            to: report.to.clone(),
            outcome: report.outcome,
            reason: report.recorded_reason(),
            durations: report.durations(),
            hooks: report.hooks.clone(),
        };
        let (engine, project) = (self.stack.engine, &self.stack.project.name);
        let notify = &self.settings.notify;
        state::record(engine, project, &mut self.state, entry, notify).await
    }
}

/// The active color a switch starts from: the one the edge nginx serves,
/// when it could be read, since that is where traffic is; else the
/// cluster's record (blue before the first). When the two disagree, what
/// to warn: the record is wrong, as after a switch whose record could not
/// be written.
pub fn believe(recorded: Option<Color>, served: Option<Color>) -> (Color, Option<String>) {
    let record = recorded.unwrap_or(Color::Blue);
    match served {
        Some(served) if served != record => (
            served,
            Some(format!(
                "the swarm records {record} as active but the edge nginx serves {served}: going by nginx, and correcting the record"
            )),
        ),
        Some(served) => (served, None),
        None => (record, None),
    }
}

/// Of each edge's answer through nginx, those that are not as one of
/// `expect`, as one line naming each edge's node; `None` when every edge
/// serves one. An edge that could not be asked ends the look.
fn not_serving(probes: Vec<(&str, Result<Probe>)>, expect: &[Expect]) -> Result<Option<String>> {
    let several = probes.len() > 1;
    let mut wrong = Vec::new();
    for (node, probe) in probes {
        let probe = probe?;
        if !expect.iter().any(|expect| probe.satisfies(expect)) {
            wrong.push(if several {
                format!("nginx on {node}: {probe}")
            } else {
                format!("last answer {probe}")
            });
        }
    }
    Ok((!wrong.is_empty()).then(|| wrong.join("; ")))
}

/// The answer that tells whether `answers` are `needed` in a row as
/// `expect` says: the first that is not (the one that broke the row), else
/// the last; fewer than `needed` answers is a probe that failed.
fn in_a_row(answers: Vec<Probe>, needed: usize, expect: &Expect) -> Probe {
    let got = answers.len();
    let mut last = None;
    for answer in answers {
        if !answer.satisfies(expect) {
            return answer;
        }
        last = Some(answer);
    }
    match last {
        Some(answer) if got >= needed => answer,
        _ => Probe::Unreachable(format!("{got} answers of the {needed} asked in a row")),
    }
}

/// How often nginx is asked while counting answers in a row.
const VERIFY_EVERY: Duration = Duration::from_millis(100);

/// Whether the probes of a color's tasks pass the gate: at least `wanted`
/// addresses, each healthy as expected (then the addresses); else what was
/// seen.
pub fn gate_verdict(
    probes: &[(String, Probe)],
    expect: &Expect,
    wanted: usize,
) -> Seen<Vec<IpAddr>> {
    let bad: Vec<String> = probes
        .iter()
        .filter(|(_, probe)| !probe.satisfies(expect))
        .map(|(addr, probe)| format!("{addr}: {probe}"))
        .collect();
    if !bad.is_empty() {
        return Seen::Not(bad.join("; "));
    }
    if probes.len() < wanted {
        return Seen::Not(format!(
            "{} of {wanted} tasks resolve on the overlay",
            probes.len()
        ));
    }
    Seen::Ready(answering(probes))
}

/// The addresses of the probes that answered, whatever they said.
fn answering(probes: &[(String, Probe)]) -> Vec<IpAddr> {
    probes
        .iter()
        .filter(|(_, probe)| matches!(probe, Probe::Answered(_)))
        .filter_map(|(addr, _)| addr.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers_in_a_row_are_judged_by_the_first_that_breaks_the_row() {
        use crate::health::{Expect, Memory, Probe, Report};
        let expect = Expect {
            color: Color::Green,
            version: Some("2.0.0".to_owned()),
        };
        let answer = |color: &str| {
            Probe::Answered(Report {
                status: "healthy".to_owned(),
                instance: color.to_owned(),
                version: "2.0.0".to_owned(),
                timestamp: String::new(),
                uptime: 1.0,
                memory: Memory {
                    used: 1.0,
                    total: 2.0,
                },
            })
        };
        let five = |colors: [&str; 5]| colors.map(answer).to_vec();
        let judged = in_a_row(five(["green"; 5]), 5, &expect);
        assert!(judged.satisfies(&expect));
        let judged = in_a_row(
            five(["green", "green", "blue", "green", "green"]),
            5,
            &expect,
        );
        assert!(!judged.satisfies(&expect), "{judged}");
        assert!(judged.to_string().contains("blue"), "{judged}");
        let judged = in_a_row(vec![answer("green"); 3], 5, &expect);
        assert!(!judged.satisfies(&expect));
        assert!(
            judged.to_string().contains("3 answers of the 5"),
            "{judged}"
        );
        assert!(!in_a_row(Vec::new(), 1, &expect).satisfies(&expect));
    }

    use super::*;
    use crate::health::{Memory, Report as Health};

    fn answered(color: &str, version: &str) -> Probe {
        Probe::Answered(Health {
            status: "healthy".into(),
            timestamp: "t".into(),
            uptime: 1.0,
            instance: color.into(),
            version: version.into(),
            memory: Memory {
                used: 1.0,
                total: 2.0,
            },
        })
    }

    #[test]
    fn a_dry_run_plans_the_target_service_the_edges_and_what_goes_to_0() {
        let side = |color, version: &str, replicas| Side {
            color,
            image: format!("app:{version}"),
            version: version.to_owned(),
            image_id: None,
            replicas,
        };
        let release = Release {
            image: "app:2".into(),
            version: "2".into(),
        };
        let decided = Decided {
            from: side(Color::Blue, "1", 3),
            to: side(Color::Green, "2", 4),
            release: Some(release.clone()),
            replicas: 4,
            standing: 0,
            monitored: false,
        };
        let mut state = ClusterState::default();
        state.pending.insert(Color::Green, 4);
        let edges = vec!["n1".to_owned(), "n2".to_owned()];
        let plan = plan_of("shop", "deploy", &decided, &state, false, edges);
        assert_eq!((plan.active, plan.target), (Color::Blue, Color::Green));
        assert_eq!((plan.from_replicas, plan.replicas), (0, 4));
        assert_eq!(plan.release, Some(release));
        assert_eq!(plan.start, ["shop_cryptus-green"]);
        assert_eq!(plan.drain, ["shop_cryptus-blue"]);
        assert!(plan.clears_pending);
        let lines = plan.describe();
        assert_eq!(
            lines[0],
            "deploy: traffic moves from blue to green 2 (app:2), 4 replicas"
        );
        assert!(
            lines.contains(&"  edge nginx switched on: n1, n2".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"  drain, then scale to 0 tasks: shop_cryptus-blue".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn the_switch_goes_by_what_the_edge_serves_over_the_record() {
        use Color::{Blue, Green};
        assert_eq!(believe(Some(Green), Some(Green)), (Green, None));
        assert_eq!(believe(None, Some(Blue)), (Blue, None));
        assert_eq!(believe(Some(Green), None), (Green, None));
        assert_eq!(believe(None, None), (Blue, None));
        let (color, warning) = believe(Some(Green), Some(Blue));
        assert_eq!(color, Blue);
        let warning = warning.unwrap_or_default();
        assert!(
            warning.contains("records green") && warning.contains("serves blue"),
            "{warning}"
        );
        let (color, warning) = believe(None, Some(Green));
        assert_eq!((color, warning.is_some()), (Green, true));
    }

    #[test]
    fn the_gate_wants_every_task_healthy_as_the_release() {
        let expect = Expect {
            color: Color::Green,
            version: Some("2".into()),
        };
        let ok = |addr: &str| (addr.to_owned(), answered("green", "2"));
        let Seen::Ready(addrs) =
            gate_verdict(&[ok("10.0.1.5"), ok("10.0.1.6"), ok("c")], &expect, 3)
        else {
            panic!("three healthy tasks did not pass")
        };
        assert_eq!(
            addrs,
            [
                "10.0.1.5".parse::<IpAddr>().unwrap(),
                "10.0.1.6".parse().unwrap()
            ]
        );
        let Seen::Not(few) = gate_verdict(&[ok("a")], &expect, 3) else {
            panic!("one of three passed")
        };
        assert_eq!(few, "1 of 3 tasks resolve on the overlay");
        let old = ("b".to_owned(), answered("green", "1"));
        let down = ("c".to_owned(), Probe::Unreachable("no connection".into()));
        let Seen::Not(why) = gate_verdict(&[ok("a"), old, down], &expect, 3) else {
            panic!("a wrong version passed")
        };
        assert!(
            why.starts_with("b: 200 status=healthy instance=green version=1"),
            "{why}"
        );
        assert!(why.ends_with("c: no answer (no connection)"), "{why}");
    }
}
