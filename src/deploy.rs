//! The zero-downtime switch: deploy and rollback.
//!
//! Both take the deploy lock, find the active color from nginx, bring the
//! other color up with a release, gate on its `/api/health`, flip nginx's
//! upstream (write, `nginx -t`, reload), prove through the load balancer that
//! the new color serves, watch it, drain nginx's old workers and stop the old
//! color, then record the outcome. Before the flip any failure leaves traffic
//! untouched; after it, a failure flips back by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;

use crate::context::{Stack, of_service, release_of};
use crate::engine::Container;
use crate::error::{failed, failed_with_hint, usage};
use crate::health::{self, Expect, Probe};
use crate::history::{self, Entry, Outcome, Side};
use crate::lock::{self, Lock};
use crate::metrics;
use crate::nginx;
use crate::stack::{Color, Release, container_name, image_version, plan_container};

pub struct Settings {
    /// The health gate's deadline, from the moment the new containers start.
    pub timeout: Duration,
    /// How long nginx's old workers may take to finish in-flight requests.
    pub drain: Duration,
    /// How long the new color is watched after the flip.
    pub watch: Duration,
    /// How often health is polled.
    pub poll: Duration,
    /// Answers in a row from the new color, through the load balancer.
    pub verify: u32,
    pub keep_standby: bool,
    pub keep_failed: bool,
    pub lock: lock::Options,
    /// The metric gate's PromQL condition, with `{color}` and `{window}`.
    pub gate: String,
}

pub enum Source {
    /// The image the compose file names for the color.
    Compose,
    Image(String),
    /// Build this context (the compose `build:` of the color when `None`).
    Build(Option<PathBuf>),
}

/// What a deploy or rollback did, for the terminal and for `--json`. A
/// failure after the lock was taken is a report too, with `ok: false`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub operation: String,
    pub outcome: Outcome,
    pub from: Side,
    pub to: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the operator can do about the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Each step and its seconds, in order.
    pub steps: Vec<StepTime>,
    pub total: f64,
    /// Seconds from the first new container's start call until the last new
    /// container could answer healthy, by the app's own uptime: the app's
    /// readiness, without the polling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<f64>,
    /// When nginx began to serve the new color.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<chrono::DateTime<Utc>>,
    /// Notes an operator should see, e.g. sessions degraded.
    pub warnings: Vec<String>,
    /// The reason itself says where traffic is: putting it back failed.
    #[serde(skip)]
    pub traffic_unsettled: bool,
}

impl Report {
    /// The one-line error of a failed report.
    pub fn error(&self) -> Option<String> {
        let reason = self.reason.as_deref().unwrap_or("unknown");
        match self.outcome {
            Outcome::Ok => None,
            Outcome::RolledBack => Some(format!("rolled back: {reason}")),
            Outcome::Failed if self.traffic_unsettled => {
                Some(format!("{} failed: {reason}", self.operation))
            }
            Outcome::Failed => Some(format!(
                "{} failed; traffic stays on {} {}: {reason}",
                self.operation, self.from.color, self.from.version
            )),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StepTime {
    pub step: String,
    pub seconds: f64,
}

/// Step timings, printed as they finish.
struct Steps<'p> {
    printer: &'p crate::output::Printer,
    done: Vec<StepTime>,
}

impl Steps<'_> {
    /// Runs a step that only waits: Ctrl-C (or SIGTERM) ends it as a
    /// failure, so the caller undoes what came before.
    async fn wait<T>(
        &mut self,
        name: &str,
        message: impl Into<String>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.run(name, message, crate::interrupt::or_interrupted(work))
            .await
    }

    async fn run<T>(
        &mut self,
        name: &str,
        message: impl Into<String>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let step = self.printer.step(message);
        match work.await {
            Ok(value) => {
                let took = step.done();
                self.done.push(StepTime {
                    step: name.to_owned(),
                    seconds: round(took),
                });
                Ok(value)
            }
            Err(err) => {
                let took = step.fail();
                self.done.push(StepTime {
                    step: name.to_owned(),
                    seconds: round(took),
                });
                Err(err)
            }
        }
    }
}

fn round(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The state of the switch, so a failure knows what to undo.
struct Switch<'s> {
    stack: &'s Stack<'s>,
    operation: &'static str,
    from: Side,
    from_containers: Vec<String>,
    to: Side,
    /// New containers this run created (removed on failure).
    created: Vec<String>,
    /// Containers of the new color that were stopped and that this run started.
    started: Vec<String>,
    /// nginx workers from before the last reload, still to drain.
    old_workers: Vec<String>,
    /// When the first new container was asked to start.
    start_called: Option<Instant>,
    /// Seconds from then until every new container answered healthy.
    readiness: Option<f64>,
    /// When nginx began to serve the new color.
    switched_at: Option<chrono::DateTime<Utc>>,
    /// Whether nginx's upstream file may have been rewritten.
    upstream_touched: bool,
    /// Traffic could not be put back: the failure says where it is.
    traffic_unsettled: bool,
    warnings: Vec<String>,
}

pub async fn deploy(
    stack: &Stack<'_>,
    source: Source,
    version: Option<String>,
    settings: &Settings,
) -> Result<Report> {
    run(stack, Operation::Deploy { source, version }, settings).await
}

pub async fn rollback(stack: &Stack<'_>, settings: &Settings) -> Result<Report> {
    run(stack, Operation::Rollback, settings).await
}

enum Operation {
    Deploy {
        source: Source,
        version: Option<String>,
    },
    Rollback,
}

async fn run(stack: &Stack<'_>, operation: Operation, settings: &Settings) -> Result<Report> {
    let began = Instant::now();
    crate::interrupt::catch();
    let name = match operation {
        Operation::Deploy { .. } => "deploy",
        Operation::Rollback => "rollback",
    };
    // Bad input is refused before anything is touched.
    if let Operation::Deploy { version, source } = &operation {
        if let Some(version) = version {
            check_version(version)?;
        }
        if let Source::Image(reference) = source {
            check_image(reference)?;
        }
    }
    let lb = stack
        .engine
        .inspect(&stack.lb_container())
        .await?
        .filter(|c| c.running)
        .ok_or_else(|| {
            failed_with_hint(
                format!("the stack of project {} is not running", stack.project.name),
                "run `cryptus start` first",
            )
        })?;
    let mut steps = Steps {
        printer: stack.printer,
        done: Vec::new(),
    };
    let lock = steps
        .run(
            "lock",
            "taking the deploy lock",
            Lock::acquire(
                stack.engine,
                &stack.project.name,
                name,
                &lb.image,
                &settings.lock,
                stack.printer,
            ),
        )
        .await?;
    // The lock is held until the old color has stopped: a rollback that
    // started meanwhile would start that color while this one stops it.
    let result = locked(stack, operation, settings, &lb, &mut steps, began).await;
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
    result
}

async fn locked(
    stack: &Stack<'_>,
    operation: Operation,
    settings: &Settings,
    lb: &Container,
    steps: &mut Steps<'_>,
    began: Instant,
) -> Result<Report> {
    let client = health::client();
    let status_addr = Stack::status_addr(lb).context("nginx publishes no status port")?;
    // What the switch needs to know, read at once.
    let nginx_state = stack.nginx();
    let (active, containers, pending) = tokio::join!(
        steps.run("active", "finding the active color", async {
            nginx::served_color(&client, &status_addr).await
        }),
        stack.containers(),
        crate::replicas::read_pending(&nginx_state),
    );
    let unchanged = |err: anyhow::Error| nothing_changed(err, operation_name(&operation));
    let (active, containers, mut pending) = (
        active.map_err(unchanged)?,
        containers.map_err(unchanged)?,
        pending,
    );
    let target = active.other();
    let active_containers: Vec<&Container> = of_service(&containers, active.service())
        .into_iter()
        .filter(|c| c.running)
        .collect();
    let active_release = release_of(&active_containers).ok_or_else(|| {
        failed_with_hint(
            format!("nginx serves {active}, but no {active} container is running"),
            "run `cryptus start` to repair the stack",
        )
    })?;
    let active_replicas = u32::try_from(active_containers.len()).unwrap_or(1).max(1);
    // A deploy starts as many replicas as the active color runs, unless
    // `scale` set a count for the idle color; a rollback keeps the count.
    let replicas = match operation {
        Operation::Deploy { .. } => pending.get(&target).copied().unwrap_or(active_replicas),
        Operation::Rollback => active_replicas,
    };
    let from = Side {
        color: active,
        image: active_release.image.clone(),
        version: active_release.version.clone(),
        image_id: None,
        replicas: active_replicas,
    };
    let target_containers = of_service(&containers, target.service());
    let lb_addr = lb
        .published_addr(nginx::HTTP_PORT)
        .with_context(|| format!("{} publishes no port {}", lb.name, nginx::HTTP_PORT))
        .map_err(unchanged)?;

    let operation_name = operation_name(&operation);
    // From here on every failure is a report, recorded in the history.
    let mut switch = Switch {
        stack,
        operation: operation_name,
        from_containers: active_containers.iter().map(|c| c.name.clone()).collect(),
        from,
        to: Side {
            color: target,
            image: String::new(),
            version: String::new(),
            image_id: None,
            replicas,
        },
        created: Vec::new(),
        started: Vec::new(),
        old_workers: Vec::new(),
        start_called: None,
        readiness: None,
        switched_at: None,
        upstream_touched: false,
        traffic_unsettled: false,
        warnings: Vec::new(),
    };
    let chosen = match operation {
        Operation::Deploy { source, version } => {
            if let (Source::Image(image), Some(version)) = (&source, &version) {
                // Known before the engine is asked: a failure records them.
                (switch.to.image, switch.to.version) = (image.clone(), version.clone());
            }
            steps
                .wait(
                    "image",
                    "getting the image",
                    resolve_image(stack, target, source, version),
                )
                .await
                .map(|release| (release, false))
        }
        Operation::Rollback => rollback_release(stack, target, &target_containers, replicas).await,
    };
    let (release, reuse) = match chosen {
        Ok(chosen) => chosen,
        Err(err) => return switch.fail_before_flip(steps, began, err, settings).await,
    };
    (switch.to.image, switch.to.version) = (release.image.clone(), release.version.clone());

    // Bring the new color up.
    let outcome = steps
        .run(
            "start",
            format!(
                "starting {target} {} ({replicas} replica{})",
                release.version,
                if replicas == 1 { "" } else { "s" }
            ),
            switch.bring_up(&release, replicas, reuse, &target_containers),
        )
        .await;
    if let Err(err) = outcome {
        return switch.fail_before_flip(steps, began, err, settings).await;
    }
    let names = switch.target_names();
    let expect = Expect {
        color: target,
        version: Some(release.version.clone()),
    };
    // nginx's current workers are read while the new color gets ready:
    // they are the ones that drain after the reload.
    let nginx_now = stack.nginx();
    let (gate, workers) = tokio::join!(
        steps.wait(
            "health",
            format!(
                "waiting for {target} to answer healthy as {}",
                release.version
            ),
            stack.wait_app_ready(
                &names,
                &expect,
                settings.poll,
                Instant::now() + settings.timeout,
            ),
        ),
        nginx_now.workers()
    );
    switch.old_workers = workers.unwrap_or_default();
    let gate = gate.map(|ready| {
        // The app's own readiness: from the start call until it could first
        // answer healthy, by its own uptime; not when the poll noticed.
        switch.readiness = switch
            .start_called
            .map(|started| round(ready.saturating_duration_since(started)));
    });
    if let Err(err) = gate {
        return switch.fail_before_flip(steps, began, err, settings).await;
    }
    if let Err(err) = Switch::check_sessions(&containers) {
        switch.warnings.push(err);
    }

    // Flip.
    let flipped = steps
        .run(
            "switch",
            format!("switching nginx to {target}"),
            switch.flip(target, &names, &status_addr, &client),
        )
        .await;
    if let Err(err) = flipped {
        return switch
            .fail_in_flip(steps, began, &status_addr, &client, err, settings)
            .await;
    }

    // Prove it, then watch it.
    let (verified, image_id) = tokio::join!(
        steps.wait(
            "verify",
            format!(
                "verifying {} answers in a row from {target} through the load balancer",
                settings.verify
            ),
            verify(&client, &lb_addr, &expect, settings.verify, settings.poll),
        ),
        image_id(stack, &names)
    );
    // With Prometheus running, the watch also asks it the gate's question.
    let gate = metrics::prometheus_addr(&containers).map(|addr| Gate {
        addr,
        query: metrics::gate_query(&settings.gate, target, &release.version, settings.watch),
    });
    let watched = match verified {
        Ok(()) if !settings.watch.is_zero() => {
            steps
                .wait(
                    "watch",
                    format!(
                        "watching {target} for {}{}",
                        crate::output::seconds(settings.watch),
                        if gate.is_some() {
                            ", with the metric gate"
                        } else {
                            ""
                        }
                    ),
                    watch(
                        stack,
                        &client,
                        &lb_addr,
                        &names,
                        &expect,
                        settings,
                        gate.as_ref(),
                    ),
                )
                .await
        }
        other => other,
    };
    if let Err(err) = watched {
        return switch
            .flip_back(steps, began, &status_addr, &client, err, settings)
            .await;
    }

    // Drain the old color, then stop it (or keep it warm).
    // The switch is proven: it is recorded while the old color drains and
    // stops, so the operator does not wait for the write.
    switch.to.image_id = image_id;
    let proven = switch.report(steps, began, Outcome::Ok, None);
    let bookkeeping = async {
        if operation_name == "deploy" && pending.remove(&target).is_some() {
            if let Err(err) = crate::replicas::write_pending(&stack.nginx(), &pending).await {
                stack
                    .printer
                    .warn(format!("clearing the replica count of {target}: {err:#}"));
            }
        }
        record(stack, &proven).await;
        // Images cryptus built that no container uses any more go; both
        // colors' containers exist here, so what rollback needs stays.
        match crate::build::prune(stack).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::debug!("pruned {} unused images", removed.len());
            }
            Ok(_) => {}
            Err(err) => stack.printer.warn(format!("pruning old images: {err:#}")),
        }
    };
    let old = switch.from_containers.clone();
    let old_workers = switch.old_workers.clone();
    let keep = settings.keep_standby;
    steps
        .run(
            "drain",
            if keep {
                format!("draining nginx's old workers; {active} stays up as a warm standby")
            } else {
                format!("draining nginx's old workers, then stopping {active}")
            },
            async {
                let (drained, ()) =
                    tokio::join!(drain(stack, &old_workers, settings.drain), bookkeeping);
                if let Err(err) = drained {
                    // The switch is proven and recorded: waiting for the old
                    // workers is a courtesy to their requests, not the deploy.
                    stack
                        .printer
                        .warn(format!("waiting for nginx's old workers: {err:#}"));
                }
                if !keep {
                    stop_all(stack, &old).await;
                }
                Ok::<(), anyhow::Error>(())
            },
        )
        .await?;
    if crate::interrupt::seen() {
        stack.printer.warn(format!(
            "interrupted after the switch was proven: the {operation_name} was finished, not undone"
        ));
    }
    let report = switch.report(steps, began, Outcome::Ok, None);
    for warning in &report.warnings {
        stack.printer.warn(warning);
    }
    Ok(report)
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Deploy { .. } => "deploy",
        Operation::Rollback => "rollback",
    }
}

/// An error after the lock was taken but before anything changed: a clean
/// failure (exit 1) that says so, whatever the engine's error was.
fn nothing_changed(err: anyhow::Error, operation: &str) -> anyhow::Error {
    if err
        .chain()
        .any(|cause| cause.downcast_ref::<crate::error::UserError>().is_some())
    {
        return err;
    }
    // A new error, not a context: `classify` finds a UserError among the
    // causes, and a context's type is not one of them.
    failed_with_hint(
        format!("{operation} failed before changing anything: {err:#}"),
        "traffic is unchanged; `cryptus status` shows the stack",
    )
}

/// What a rollback brings back: the idle color's own release, else the one
/// the history last recorded for it; and whether its containers can be
/// started as they are.
async fn rollback_release(
    stack: &Stack<'_>,
    target: Color,
    target_containers: &[&Container],
    replicas: u32,
) -> Result<(Release, bool)> {
    let release = match release_of(target_containers) {
        Some(release) => release,
        None => {
            let entries = history::read(&stack.nginx()).await.map_err(|err| {
                failed_with_hint(
                    format!("nothing to roll back to: {target} has no containers, and {err:#}"),
                    "deploy the version you want with `cryptus deploy --image ...`",
                )
            })?;
            history::last_release(&entries, target).ok_or_else(|| {
                failed(format!(
                    "nothing to roll back to: {target} has no containers and no recorded deployment"
                ))
            })?
        }
    };
    if stack.engine.image_labels(&release.image).await?.is_none() {
        return Err(failed_with_hint(
            format!(
                "cannot roll back to {target} {}: the engine no longer has image {}",
                release.version, release.image
            ),
            "deploy that version again with `cryptus deploy --image ...`",
        ));
    }
    let reuse = !target_containers.is_empty()
        && release_of(target_containers).as_ref() == Some(&release)
        && target_containers.len() == replicas as usize;
    Ok((release, reuse))
}

fn check_image(reference: &str) -> Result<()> {
    crate::compose::check_image_reference(reference).map_err(|err| {
        usage(
            err,
            "name an image such as myapp:1.2.3 or registry.example.com/team/app:v2",
        )
    })
}

/// Checks a version string before it goes anywhere near a config file or a
/// label: letters, digits and `._+-`, at most 64 characters.
pub fn check_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(usage(
            format!("version {version:?} is invalid"),
            "use at most 64 letters, digits and . _ + -",
        ))
    }
}

async fn resolve_image(
    stack: &Stack<'_>,
    target: Color,
    source: Source,
    version: Option<String>,
) -> Result<Release> {
    let reference = match source {
        Source::Compose => stack.default_release(target).await?.image,
        // Checked in `run`, before anything was touched.
        Source::Image(reference) => reference,
        Source::Build(context) => {
            let version = version
                .clone()
                .unwrap_or_else(|| Utc::now().format("%Y%m%d-%H%M%S").to_string());
            check_version(&version)?;
            return crate::build::build_color(stack, target, context, &version).await;
        }
    };
    let Some(labels) = stack.engine.image_labels(&reference).await? else {
        return Err(failed_with_hint(
            format!("the engine has no image {reference}"),
            "build it (cryptus deploy --build, scripts/make-images.sh) or docker pull it",
        ));
    };
    let version = match version {
        Some(version) => version,
        None => image_version(&reference, &labels),
    };
    check_version(&version)?;
    Ok(Release {
        image: reference,
        version,
    })
}

impl Switch<'_> {
    fn report(
        &self,
        steps: &Steps<'_>,
        began: Instant,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Report {
        Report {
            ok: outcome == Outcome::Ok,
            operation: self.operation.to_owned(),
            outcome,
            from: self.from.clone(),
            to: self.to.clone(),
            reason,
            hint: None,
            steps: steps.done.clone(),
            total: round(began.elapsed()),
            readiness: self.readiness,
            switched_at: self.switched_at,
            warnings: self.warnings.clone(),
            traffic_unsettled: self.traffic_unsettled,
        }
    }

    /// Ends a switch that did not deploy: report, record, warn.
    async fn conclude(
        &self,
        steps: &Steps<'_>,
        began: Instant,
        outcome: Outcome,
        err: &anyhow::Error,
    ) -> Report {
        let mut report = self.report(steps, began, outcome, Some(format!("{err:#}")));
        report.hint = crate::error::classify(err).1.map(str::to_owned);
        record(self.stack, &report).await;
        for warning in &report.warnings {
            self.stack.printer.warn(warning);
        }
        report
    }

    fn target_names(&self) -> Vec<String> {
        (1..=self.to.replicas)
            .map(|n| container_name(&self.stack.project.name, self.to.color.service(), n))
            .collect()
    }

    /// Starts the new color: fresh containers for a deploy; for a rollback the
    /// standby's own containers when they still run the release.
    async fn bring_up(
        &mut self,
        release: &Release,
        replicas: u32,
        reuse: bool,
        existing: &[&Container],
    ) -> Result<()> {
        let service = self
            .stack
            .compose
            .service(self.to.color.service())
            .with_context(|| {
                format!(
                    "the compose file has no service {}",
                    self.to.color.service()
                )
            })?;
        if reuse {
            for container in existing {
                if !container.running {
                    self.start_called.get_or_insert_with(Instant::now);
                    self.stack.engine.start(&container.name).await?;
                    self.started.push(container.name.clone());
                }
            }
            return Ok(());
        }
        // A still-running idle color may have requests in flight from
        // nginx's old workers (an earlier run was killed before its drain):
        // let those finish, stop it gracefully, then replace it.
        if existing.iter().any(|c| c.running) {
            let busy = crate::interrupt::or_interrupted(
                self.stack
                    .nginx()
                    .drain_shutting_down(Duration::from_secs(30)),
            )
            .await?;
            if busy > 0 {
                self.stack.printer.warn(format!(
                    "{busy} old nginx workers are still busy; replacing {} anyway",
                    self.to.color
                ));
            }
            stop_all(
                self.stack,
                &existing.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            )
            .await;
        }
        for container in existing {
            self.stack.engine.remove(&container.id, true).await?;
        }
        for number in 1..=replicas {
            let plan = plan_container(
                &self.stack.project.name,
                self.stack.compose,
                service,
                number,
                Some(release),
            )?;
            self.stack
                .engine
                .create_container(&plan.name, plan.body, &plan.extra_networks)
                .await?;
            self.created.push(plan.name.clone());
            self.start_called.get_or_insert_with(Instant::now);
            self.stack.engine.start(&plan.name).await?;
        }
        Ok(())
    }

    /// Undoes `bring_up`: removes what it created, stops what it started.
    async fn undo_start(&mut self) {
        for name in self.created.drain(..) {
            if let Err(err) = self.stack.engine.remove(&name, true).await {
                self.stack.printer.warn(format!("removing {name}: {err:#}"));
            }
        }
        let started: Vec<String> = self.started.drain(..).collect();
        stop_all(self.stack, &started).await;
    }

    /// Redis down does not stop a deploy, but sessions are degraded.
    fn check_sessions(containers: &[Container]) -> Result<(), String> {
        let redis: Vec<&Container> = of_service(containers, "redis");
        if redis.is_empty() || redis.iter().all(|c| c.running) {
            return Ok(());
        }
        Err(
            "redis is not running: sessions are degraded until it is back (cryptus start)"
                .to_owned(),
        )
    }

    async fn flip(
        &mut self,
        target: Color,
        names: &[String],
        status_addr: &str,
        client: &reqwest::Client,
    ) -> Result<()> {
        let servers: Vec<String> = names
            .iter()
            .map(|n| format!("{n}:{}", crate::stack::APP_PORT))
            .collect();
        let upstream = nginx::render_upstream(target, &servers)?;
        let nginx = self.stack.nginx();
        // The workers that serve now are the ones to drain after the reload.
        if self.old_workers.is_empty() {
            self.old_workers = nginx.workers().await?;
        }
        self.upstream_touched = true;
        nginx.apply(&[(nginx::UPSTREAM_FILE, &upstream)]).await?;
        let began = Instant::now();
        wait_served(client, status_addr, target).await?;
        tracing::debug!("nginx served {target} after {:?}", began.elapsed());
        self.switched_at = Some(Utc::now());
        Ok(())
    }

    /// Ends a switch whose traffic never moved: what it started goes
    /// (unless --keep-failed), and the failure is recorded.
    async fn fail_before_flip(
        &mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        err: anyhow::Error,
        settings: &Settings,
    ) -> Result<Report> {
        // Bad input found before anything was made (a build context that is
        // no directory, a version nginx could not carry) changes nothing, not
        // even the history, and keeps its exit 2.
        let bad_input = crate::error::classify(&err).0 == crate::error::EXIT_USAGE
            && err
                .chain()
                .any(|cause| cause.downcast_ref::<crate::error::UserError>().is_some());
        if bad_input && self.created.is_empty() && self.started.is_empty() {
            return Err(err);
        }
        if !settings.keep_failed {
            self.undo_start().await;
        }
        Ok(self.conclude(steps, began, Outcome::Failed, &err).await)
    }

    /// Ends a switch whose flip itself failed. Once nginx's upstream may
    /// have been rewritten (a reload that failed, nginx too slow to pick it
    /// up), it is put back on the old color before the new one goes; if that
    /// fails too, both colors stay up and the failure says so.
    async fn fail_in_flip(
        &mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        status_addr: &str,
        client: &reqwest::Client,
        err: anyhow::Error,
        settings: &Settings,
    ) -> Result<Report> {
        if !self.upstream_touched {
            return self.fail_before_flip(steps, began, err, settings).await;
        }
        let back = self
            .put_back(steps, "putting nginx back on", status_addr, client)
            .await;
        self.switched_at = None;
        match back {
            Ok(()) => self.fail_before_flip(steps, began, err, settings).await,
            // nginx is down, but its upstream file still names the old
            // color: that is what it serves when it is back.
            Err(_) if self.upstream_names_from().await => {
                self.fail_before_flip(steps, began, err, settings).await
            }
            Err(back_err) => {
                let err = self.unsettled("switching to", &err, &back_err);
                Ok(self.conclude(steps, began, Outcome::Failed, &err).await)
            }
        }
    }

    /// Flips nginx back to the old color's containers, as the step
    /// "rollback" (`what` begins its message).
    async fn put_back(
        &mut self,
        steps: &mut Steps<'_>,
        what: &str,
        status_addr: &str,
        client: &reqwest::Client,
    ) -> Result<()> {
        let from = self.from.color;
        let names = self.from_containers.clone();
        steps
            .run(
                "rollback",
                format!("{what} {from}"),
                self.flip(from, &names, status_addr, client),
            )
            .await
    }

    /// Whether nginx's upstream file (read through the engine, nginx running
    /// or not) names the old color's containers and none of the new one's.
    async fn upstream_names_from(&self) -> bool {
        match self.stack.nginx().read(nginx::UPSTREAM_FILE).await {
            Ok(Some(text)) => {
                self.from_containers
                    .iter()
                    .all(|n| text.contains(n.as_str()))
                    && !self
                        .target_names()
                        .iter()
                        .any(|n| text.contains(n.as_str()))
            }
            _ => false,
        }
    }

    /// The failure when traffic could not be put back on the old color:
    /// both colors stay up, so whichever nginx serves when it is back can
    /// answer.
    fn unsettled(
        &mut self,
        when: &str,
        err: &anyhow::Error,
        back_err: &anyhow::Error,
    ) -> anyhow::Error {
        self.traffic_unsettled = true;
        let (from, to) = (self.from.color, &self.to);
        failed_with_hint(
            format!(
                "{when} {} {}: {err:#}; flipping back to {from} failed too ({back_err:#}); \
                 nginx's upstream may name {} {}, and both colors are left running",
                to.color, to.version, to.color, to.version
            ),
            "bring nginx back with `cryptus start`, then `cryptus status` shows what it serves; \
             `cryptus rollback` if the new color is bad",
        )
    }

    async fn flip_back(
        &mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        status_addr: &str,
        client: &reqwest::Client,
        err: anyhow::Error,
        settings: &Settings,
    ) -> Result<Report> {
        // The workers to drain now are those serving the failed color.
        self.old_workers.clear();
        let back = self
            .put_back(steps, "flipping back to", status_addr, client)
            .await;
        if let Err(back_err) = back {
            let err = self.unsettled("after the switch to", &err, &back_err);
            return Ok(self.conclude(steps, began, Outcome::Failed, &err).await);
        }
        if !settings.keep_failed {
            // Give nginx's old workers their in-flight requests before the
            // failed color goes away.
            let old_workers = self.old_workers.clone();
            let _ = drain(self.stack, &old_workers, settings.drain).await;
            self.undo_start().await;
        }
        Ok(self.conclude(steps, began, Outcome::RolledBack, &err).await)
    }
}

/// Waits until nginx's loaded configuration names `color`.
async fn wait_served(client: &reqwest::Client, status_addr: &str, color: Color) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = nginx::served_color(client, status_addr).await;
        match served {
            Ok(served) if served == color => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(failed(format!(
                    "nginx did not pick up the new upstream in time (it serves {})",
                    served
                        .map(|c| c.to_string())
                        .unwrap_or_else(|e| format!("? ({e:#})"))
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// `count` answers in a row from the expected color through the load balancer.
async fn verify(
    client: &reqwest::Client,
    lb_addr: &str,
    expect: &Expect,
    count: u32,
    poll: Duration,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < count {
        let probe = health::probe(client, lb_addr, Duration::from_secs(2)).await;
        if probe.satisfies(expect) {
            in_a_row += 1;
            continue;
        }
        in_a_row = 0;
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "the load balancer did not answer {count} times in a row from {}; last answer: {probe}",
                expect.color,
            )));
        }
        tokio::time::sleep(poll.min(Duration::from_millis(50))).await;
    }
    Ok(())
}

/// Failures in a row that end the watch.
const WATCH_FAILURES: u32 = 3;

/// The metric gate: a PromQL condition that, when true, rolls back.
struct Gate {
    addr: String,
    query: String,
}

/// How often the gate asks Prometheus during the watch.
const GATE_EVERY: Duration = Duration::from_secs(2);

/// Probes each new container directly and the load balancer until the watch
/// window has passed; three failures in a row of any of them fail the watch,
/// and so does the gate's condition holding.
async fn watch(
    stack: &Stack<'_>,
    client: &reqwest::Client,
    lb_addr: &str,
    names: &[String],
    expect: &Expect,
    settings: &Settings,
    gate: Option<&Gate>,
) -> Result<()> {
    let (length, poll) = (settings.watch, settings.poll);
    let end = Instant::now() + length;
    let mut next_gate = Instant::now() + GATE_EVERY;
    let mut gate_said = false;
    let mut targets = vec![(format!("the load balancer ({lb_addr})"), lb_addr.to_owned())];
    for name in names {
        if let Some(container) = stack.engine.inspect(name).await?
            && let Some(addr) = Stack::app_addr(&container)
        {
            targets.push((name.clone(), addr));
        }
    }
    let mut failures: BTreeMap<String, (u32, Probe)> = BTreeMap::new();
    let interval = poll.max(Duration::from_millis(100));
    while Instant::now() < end {
        for (label, addr) in &targets {
            let probe = health::probe(client, addr, Duration::from_secs(2)).await;
            if probe.satisfies(expect) {
                failures.remove(label);
                continue;
            }
            let entry = failures.entry(label.clone()).or_insert((0, probe.clone()));
            entry.0 += 1;
            entry.1 = probe;
            if entry.0 >= WATCH_FAILURES {
                return Err(anyhow!(
                    "{label} failed {WATCH_FAILURES} health checks in a row during the watch; last answer: {}",
                    entry.1
                ));
            }
        }
        if let Some(gate) = gate
            && Instant::now() >= next_gate
        {
            next_gate = Instant::now() + GATE_EVERY;
            ask_gate(stack, client, gate, &mut gate_said).await?;
        }
        tokio::time::sleep(interval).await;
    }
    // Once more at the end, over the whole window.
    if let Some(gate) = gate {
        ask_gate(stack, client, gate, &mut gate_said).await?;
    }
    Ok(())
}

/// Fails when the gate's condition holds. Prometheus not answering is a
/// warning (said once), not a reason to roll back.
async fn ask_gate(
    stack: &Stack<'_>,
    client: &reqwest::Client,
    gate: &Gate,
    said: &mut bool,
) -> Result<()> {
    match metrics::query(client, &gate.addr, &gate.query).await {
        Ok(Some(value)) => Err(anyhow!(
            "the metric gate's condition is true (value {value}): {}",
            gate.query
        )),
        Ok(None) => Ok(()),
        Err(err) => {
            if !*said {
                stack
                    .printer
                    .warn(format!("the metric gate could not ask Prometheus: {err:#}"));
                *said = true;
            }
            Ok(())
        }
    }
}

/// Waits until the nginx workers that ran before a reload have finished
/// their in-flight requests, up to `limit`; past it, warns and goes on.
pub async fn drain(stack: &Stack<'_>, old_workers: &[String], limit: Duration) -> Result<()> {
    let busy = stack.nginx().drain(old_workers, limit).await?;
    if busy > 0 {
        stack.printer.warn(format!(
            "{busy} old nginx worker{} still busy after {}; going on anyway",
            if busy == 1 { " is" } else { "s are" },
            crate::output::seconds(limit)
        ));
    }
    Ok(())
}

/// Stops containers gracefully (their stop signal, then their stop timeout),
/// all at once; a failure is a warning, the switch is already done.
async fn stop_all(stack: &Stack<'_>, names: &[String]) {
    let results =
        futures_util::future::join_all(names.iter().map(|n| stack.engine.stop(n, None))).await;
    for (name, result) in names.iter().zip(results) {
        if let Err(err) = result {
            stack.printer.warn(format!("stopping {name}: {err:#}"));
        }
    }
}

async fn image_id(stack: &Stack<'_>, names: &[String]) -> Option<String> {
    let first = names.first()?;
    stack
        .engine
        .inspect(first)
        .await
        .ok()
        .flatten()
        .map(|c| c.image_id)
}

/// Records a report in the history. A failure to record is a warning: the
/// switch itself is done.
async fn record(stack: &Stack<'_>, report: &Report) {
    let mut durations: BTreeMap<String, f64> = report
        .steps
        .iter()
        .map(|s| (s.step.clone(), s.seconds))
        .collect();
    durations.insert("total".to_owned(), report.total);
    let entry = Entry {
        time: Utc::now(),
        operation: report.operation.clone(),
        user: lock::user(),
        host: lock::hostname(),
        from: report.from.clone(),
        to: report.to.clone(),
        outcome: report.outcome,
        reason: report.reason.clone(),
        durations,
    };
    let nginx = stack.nginx();
    let history = match history::record(&nginx, entry.clone(), stack.printer).await {
        Ok(history) => history,
        Err(err) => {
            stack
                .printer
                .warn(format!("recording the deployment: {err:#}"));
            history::read(&nginx).await.unwrap_or_default()
        }
    };
    // The deploy marks, where monitoring runs.
    let active = if report.outcome == Outcome::Ok {
        report.to.color
    } else {
        report.from.color
    };
    let containers = stack.containers().await.unwrap_or_default();
    let (published, annotated) = tokio::join!(
        metrics::publish(stack.engine, &containers, Some(active), &history),
        metrics::annotate(
            &containers,
            stack.grafana_password_file().map(|(_, path)| path),
            &entry
        )
    );
    for err in [published.err(), annotated.err()].into_iter().flatten() {
        stack.printer.warn(format!("{err:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome, unsettled: bool) -> Report {
        let side = |color, version: &str| Side {
            color,
            image: format!("app:{version}"),
            version: version.into(),
            image_id: None,
            replicas: 1,
        };
        Report {
            ok: outcome == Outcome::Ok,
            operation: "deploy".into(),
            outcome,
            from: side(Color::Blue, "1"),
            to: side(Color::Green, "2"),
            reason: Some("boom".into()),
            hint: None,
            steps: Vec::new(),
            total: 1.0,
            readiness: None,
            switched_at: None,
            warnings: Vec::new(),
            traffic_unsettled: unsettled,
        }
    }

    #[test]
    fn a_failure_says_where_traffic_is() {
        assert_eq!(report(Outcome::Ok, false).error(), None);
        let stays = report(Outcome::Failed, false).error().unwrap();
        assert!(stays.contains("traffic stays on blue 1"), "{stays}");
        // When putting traffic back failed, the reason says where it is:
        // the line must not claim it stayed.
        let unsettled = report(Outcome::Failed, true).error().unwrap();
        assert!(!unsettled.contains("stays"), "{unsettled}");
        assert!(
            report(Outcome::RolledBack, false)
                .error()
                .unwrap()
                .starts_with("rolled back")
        );
    }

    #[test]
    fn an_unexpected_error_after_the_lock_is_a_clean_failure() {
        let err = nothing_changed(anyhow!("engine hiccup"), "deploy");
        assert_eq!(crate::error::classify(&err).0, crate::error::EXIT_FAILED);
        assert!(
            format!("{err:#}").contains("deploy failed before changing anything: engine hiccup")
        );
        // A failure that already chose its code keeps it.
        let usage = nothing_changed(usage("bad", "fix it"), "deploy");
        assert_eq!(crate::error::classify(&usage).0, crate::error::EXIT_USAGE);
    }

    #[test]
    fn versions_cannot_inject() {
        assert!(check_version("v1.2.3+build-7").is_ok());
        for bad in [
            "",
            "v1; }",
            "a b",
            "x\"y",
            "v1\nserver evil:80;",
            &"9".repeat(65),
        ] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }
}
