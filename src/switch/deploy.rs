//! Deploy and rollback: traffic moves to the idle color. Under the deploy
//! lock the switch reads what runs, plans, gets the release, brings the
//! idle color up, gates on its `/api/health`, flips nginx's upstream,
//! proves through the load balancer that the new color serves, watches it,
//! drains nginx's old workers and stops the old color, then records the
//! outcome. Before the flip any failure leaves traffic untouched; after it,
//! a failure flips back by itself.

use std::path::PathBuf;

use anyhow::Result;
use chrono::Utc;
use tokio::time::Instant;

use crate::compose::Hook;
use crate::context::Stack;
use crate::engine::Container;
use crate::error::{failed_with_hint, usage};
use crate::health::{self, Expect};
use crate::history::{HookRun, Outcome, Side, operation};
use crate::stack::{APP_PORT, Color, Release, image_version};

use super::plan::{self, Observed, Plan, Request};
use super::report::{Report, Steps, round};
use super::runner::Runner;
use super::state::{self, Lb};
use super::upstream::{self, Upstream};
use super::{Settings, canary, hooks, watch};
use crate::nginx::{Canary, Served};
use crate::ready::WaitFor;
use crate::wait::Limits;

#[derive(Clone, Debug)]
pub enum Source {
    /// The image the compose file names for the color.
    Compose,
    Image(String),
    /// Build this context (the compose `build:` of the color when `None`).
    Build(Option<PathBuf>),
}

impl Source {
    /// What `Compose` means for `target`: its image, or a build of its
    /// `build:` when the service says `pull_policy: build`.
    pub fn for_color(self, stack: &Stack<'_>, target: Color) -> Source {
        let builds = stack
            .compose
            .service(target.service())
            .is_some_and(|s| s.builds() && s.build.is_some());
        match self {
            Source::Compose if builds => Source::Build(None),
            other => other,
        }
    }
}

/// What was asked of the switch.
pub enum Ask {
    Deploy {
        source: Source,
        version: Option<String>,
    },
    Rollback,
}

impl Ask {
    fn name(&self) -> &'static str {
        match self {
            Ask::Deploy { .. } => operation::DEPLOY,
            Ask::Rollback => operation::ROLLBACK,
        }
    }

    /// The planner's request; a deploy's release is known only once the
    /// image is resolved (or built), after the plan.
    fn request(&self, keep_standby: bool) -> Request {
        match self {
            Ask::Deploy { source, version } => Request::Deploy {
                release: match (source, version) {
                    (Source::Image(image), Some(version)) => Some(Release {
                        image: image.clone(),
                        version: version.clone(),
                    }),
                    _ => None,
                },
                keep_standby,
            },
            Ask::Rollback => Request::Rollback { keep_standby },
        }
    }

    /// Bad input is refused before anything is touched.
    pub fn check(&self) -> Result<()> {
        if let Ask::Deploy { version, source } = self {
            if let Some(version) = version {
                check_version(version)?;
            }
            if let Source::Image(reference) = source {
                check_image(reference)?;
            }
        }
        Ok(())
    }
}

pub async fn run(stack: &Stack<'_>, ask: Ask, settings: &Settings) -> Result<Report> {
    let began = Instant::now();
    crate::interrupt::catch();
    ask.check()?;
    let lb = state::lb(stack).await?;
    let pending = upstream::Pending::start(stack.engine, lb.container.name.clone());
    let mut steps = Steps::new(stack.printer);
    // What runs is read while the lock is taken, and confirmed once held.
    let client = health::client();
    let (lock, ahead) = steps
        .run("lock", "taking the deploy lock", async {
            let (lock, ahead) = tokio::join!(
                super::lock(stack, ask.name(), &lb, settings),
                state::read_ahead(stack, &lb, &client)
            );
            Ok((lock?, ahead))
        })
        .await?;
    // The lock is held until the old color has stopped: a rollback that
    // started meanwhile would start that color while this one stops it.
    let result = locked(
        stack,
        ask,
        settings,
        (lb, pending, ahead),
        &mut steps,
        began,
    )
    .await;
    super::unlock(stack, lock).await;
    result
}

async fn locked(
    stack: &Stack<'_>,
    ask: Ask,
    settings: &Settings,
    (lb, pending, ahead): (Lb, upstream::Pending, Result<state::Ahead>),
    steps: &mut Steps<'_>,
    began: Instant,
) -> Result<Report> {
    let client = health::client();
    let operation = ask.name();
    let unchanged = |err: anyhow::Error| nothing_changed(err, operation);
    let reading = state::confirm(stack, &lb, &client, ahead, matches!(ask, Ask::Rollback));
    let (observed, containers) = steps
        .run("active", "finding the active color", reading)
        .await
        .map_err(unchanged)?;
    let planned = plan::plan(&observed, &ask.request(settings.keep_standby));
    let from = side(&observed, observed.active);
    if observed.running(observed.active).is_empty() {
        stack.printer.warn(format!(
            "nginx serves {}, but no {} container is running: traffic to it fails; switching away",
            observed.active, observed.active
        ));
    }
    let mut switch = Switch::new(stack, settings, lb, client, operation, from, &observed);
    switch.containers = containers;
    switch.prepared = Some(pending);
    let plan = match planned {
        Ok(plan) => plan,
        Err(err) => return switch.fail_before_flip(steps, began, err).await,
    };
    if plan.action == plan::Action::Abandon {
        super::hooks::sweep(stack, &switch.containers).await;
        switch.to = side(&observed, plan.target);
        return switch.abandon_canary(steps, began, &plan).await;
    }
    switch.to.replicas = plan.replicas;
    let release = match ask {
        Ask::Deploy { source, version } => {
            if let Some(release) = &plan.release {
                // Known before the engine is asked: a failure records it.
                (switch.to.image, switch.to.version) =
                    (release.image.clone(), release.version.clone());
            }
            let resolving = resolve_image(stack, plan.target, source, version);
            steps.wait("image", "getting the image", resolving).await
        }
        Ask::Rollback => rollback_image(stack, &plan).await,
    };
    match release {
        Ok(release) => switch.execute(steps, began, plan, release).await,
        Err(err) => switch.fail_before_flip(steps, began, err).await,
    }
}

/// A color's side of the switch, from its running containers; when none
/// runs (traffic to it is failing), from the ones it has, if any.
fn side(observed: &Observed, color: Color) -> Side {
    let running = observed.running(color);
    let release = observed.release(color);
    let replicas = if running.is_empty() {
        observed.replicas(color).len()
    } else {
        running.len()
    };
    Side {
        color,
        image: release
            .as_ref()
            .map(|r| r.image.clone())
            .unwrap_or_default(),
        version: release.map_or_else(|| "none".to_owned(), |r| r.version),
        image_id: None,
        replicas: u32::try_from(replicas).unwrap_or(1).max(1),
    }
}

/// An error after the lock was taken but before anything changed: a clean
/// failure (exit 1) that says so, whatever the engine's error was.
fn nothing_changed(err: anyhow::Error, operation: &str) -> anyhow::Error {
    if crate::error::is_user_error(&err) {
        return err;
    }
    // A new error, not a context: `classify` finds a UserError among the
    // causes, and a context's type is not one of them.
    failed_with_hint(
        format!("{operation} failed before changing anything: {err:#}"),
        "traffic is unchanged; `cryptus status` shows the stack",
    )
}

/// A rollback's release must still be on the engine.
async fn rollback_image(stack: &Stack<'_>, plan: &Plan) -> Result<Release> {
    let release = plan
        .release
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a rollback always plans its release"))?;
    if stack.engine.image_labels(&release.image).await?.is_none() {
        return Err(failed_with_hint(
            format!(
                "cannot roll back to {} {}: the engine no longer has image {}",
                plan.target, release.version, release.image
            ),
            "deploy that version again with `cryptus deploy --image ...`",
        ));
    }
    Ok(release)
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
    let source = match source.for_color(stack, target) {
        Source::Build(context) => return build_release(stack, target, context, version).await,
        other => other,
    };
    // Not a build: the engine's image names the release.
    known_release(stack, target, source, version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no image to deploy into {target}"))
}

/// Builds `target`'s image from `context` (the compose file's when none)
/// through the engine, as `version` (a timestamp when none is given).
pub async fn build_release(
    stack: &Stack<'_>,
    target: Color,
    context: Option<std::path::PathBuf>,
    version: Option<String>,
) -> Result<Release> {
    let version = version.unwrap_or_else(|| Utc::now().format("%Y%m%d-%H%M%S").to_string());
    check_version(&version)?;
    crate::build::build_color(stack, target, context, &version).await
}

/// What a dry run says a deploy of `source` into `target` builds: the
/// image named as the build tags it (the version given, else the time of
/// the build), its input checked as the build checks it; `None` when it
/// builds nothing.
pub fn planned_build(
    stack: &Stack<'_>,
    target: Color,
    source: &Source,
    version: Option<&str>,
) -> Result<Option<String>> {
    let Source::Build(context) = source.clone().for_color(stack, target) else {
        return Ok(None);
    };
    if let Some(version) = version {
        check_version(version)?;
    }
    let input = crate::build::input(stack, target, context)?;
    Ok(Some(input.tag(version.unwrap_or(BUILD_TIME))))
}

/// The tag's version a build without `--version` gets: its time.
const BUILD_TIME: &str = "<YYYYmmdd-HHMMSS of the build>";

/// The release a source names, read from the engine without pulling or
/// building (what a deploy starts, and what `--dry-run` shows); `None`
/// when it is built during the run.
pub async fn known_release(
    stack: &Stack<'_>,
    target: Color,
    source: Source,
    version: Option<String>,
) -> Result<Option<Release>> {
    let reference = match source.for_color(stack, target) {
        Source::Compose => stack.default_release(target).await?.image,
        // Checked in `run`, before anything was touched.
        Source::Image(reference) => reference,
        Source::Build(_) => return Ok(None),
    };
    let Some(labels) = stack.engine.image_labels(&reference).await? else {
        return Err(failed_with_hint(
            format!("the engine has no image {reference}"),
            "build it (cryptus deploy --build, scripts/make-images.sh) or docker pull it",
        ));
    };
    let version = version.unwrap_or_else(|| image_version(&reference, &labels));
    check_version(&version)?;
    Ok(Some(Release {
        image: reference,
        version,
    }))
}

/// How often the load balancer is asked while counting answers in a row.
const VERIFY_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The state of a switch under way, so a failure knows what to undo.
struct Switch<'s> {
    stack: &'s Stack<'s>,
    settings: &'s Settings,
    lb: Lb,
    client: reqwest::Client,
    operation: &'static str,
    from: Side,
    from_containers: Vec<String>,
    to: Side,
    /// The containers nginx names once the new color serves.
    serve: Vec<String>,
    /// The project's containers as the switch first read them.
    containers: Vec<Container>,
    runner: Runner<'s>,
    /// nginx workers from before the last reload, still to drain.
    old_workers: Vec<String>,
    /// The exec that applies the flip's upstream, started ahead.
    prepared: Option<upstream::Pending>,
    /// Seconds from the first start call until every new container answered healthy.
    readiness: Option<f64>,
    /// When nginx began to serve the new color.
    switched_at: Option<chrono::DateTime<Utc>>,
    /// Whether nginx's upstream file may have been rewritten.
    upstream_touched: bool,
    /// Traffic could not be put back: the failure says where it is.
    traffic_unsettled: bool,
    /// A canary's steps and how far it came.
    canary: Option<canary::Progress>,
    /// The canary's share when a step failed.
    failed_at: Option<u8>,
    warnings: Vec<String>,
    /// The deploy hooks that ran.
    hooks: Vec<HookRun>,
}

impl<'s> Switch<'s> {
    fn new(
        stack: &'s Stack<'s>,
        settings: &'s Settings,
        lb: Lb,
        client: reqwest::Client,
        operation: &'static str,
        from: Side,
        observed: &Observed,
    ) -> Switch<'s> {
        let to = Side {
            color: from.color.other(),
            image: String::new(),
            version: String::new(),
            image_id: None,
            replicas: from.replicas,
        };
        Switch {
            stack,
            settings,
            lb,
            client,
            operation,
            from_containers: observed
                .running(from.color)
                .iter()
                .map(|r| r.name.clone())
                .collect(),
            from,
            to,
            serve: Vec::new(),
            containers: Vec::new(),
            runner: Runner::new(stack, settings.drain),
            old_workers: Vec::new(),
            prepared: None,
            readiness: None,
            switched_at: None,
            upstream_touched: false,
            traffic_unsettled: false,
            canary: None,
            failed_at: None,
            warnings: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// From a release in hand to a proven, recorded switch, or to a failure
    /// that undid what it could.
    async fn execute(
        mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        plan: Plan,
        release: Release,
    ) -> Result<Report> {
        (self.to.image, self.to.version) = (release.image.clone(), release.version.clone());
        self.serve = plan.serve.clone();
        let expect = Expect {
            color: plan.target,
            version: Some(release.version.clone()),
        };
        let hooks = Hook::of(self.operation);
        hooks::say_skipped(self.stack, self.operation, self.settings.hooks);
        hooks::sweep(self.stack, &self.containers).await;
        let ready = async {
            if let Some((before, _)) = hooks {
                self.hook(steps, before, &release).await?;
            }
            self.bring_up(steps, &plan, &release).await?;
            self.gate(steps, &expect).await
        };
        if let Err(err) = ready.await {
            return self.fail_before_flip(steps, began, err).await;
        }
        if let Some(options) = &self.settings.canary
            && let Err(err) = self.canary_steps(steps, &expect, options).await
        {
            return self.fail_in_canary(steps, began, err).await;
        }
        if let Err(err) = self.flip_step(steps).await {
            return self.fail_in_flip(steps, began, err).await;
        }
        if let Err(err) = self.prove(steps, &expect).await {
            return self.flip_back(steps, began, err).await;
        }
        if let Some((_, after)) = hooks
            && let Err(err) = self.hook(steps, after, &release).await
        {
            // The switch is proven: a failed post hook is reported and
            // recorded, and traffic stays.
            let operation = self.operation;
            self.warnings
                .push(format!("{err:#}; the {operation} stands"));
        }
        self.finish(steps, began, &plan).await
    }

    /// Runs `hook` of the operation in a one-off container of `release`.
    async fn hook(&mut self, steps: &mut Steps<'_>, hook: Hook, release: &Release) -> Result<()> {
        let between = hooks::Between {
            operation: self.operation,
            from: &self.from,
            to: self.to.color,
            release,
        };
        let options = self.settings.hooks;
        hooks::step(
            self.stack,
            steps,
            (hook, &between),
            (options, &hooks::Containers),
            &mut self.hooks,
        )
        .await
    }

    async fn bring_up(
        &mut self,
        steps: &mut Steps<'_>,
        plan: &Plan,
        release: &Release,
    ) -> Result<()> {
        let replicas = plan.replicas;
        let message = format!(
            "starting {} {} ({replicas} replica{})",
            plan.target,
            release.version,
            if replicas == 1 { "" } else { "s" }
        );
        steps
            .run("start", message, self.runner.bring_up(plan, release))
            .await
    }

    /// Waits until every new container answers healthy as the release,
    /// reading meanwhile the nginx workers that will drain after the flip.
    async fn gate(&mut self, steps: &mut Steps<'_>, expect: &Expect) -> Result<()> {
        let nginx = self.stack.nginx();
        let message = format!(
            "waiting for {} to answer healthy as {}",
            expect.color,
            expect.version.as_deref().unwrap_or_default()
        );
        let (gate, workers) = tokio::join!(
            steps.wait(
                "health",
                message,
                self.stack.wait_app_ready(
                    &self.serve,
                    expect,
                    self.settings.poll,
                    Instant::now() + self.settings.timeout,
                ),
            ),
            nginx.workers()
        );
        self.old_workers = workers.unwrap_or_default();
        let ready = gate?;
        // The app's own readiness: from the start call until it could first
        // answer healthy, by its own uptime; not when the poll noticed.
        self.readiness = self
            .runner
            .start_called()
            .map(|started| round(ready.saturating_duration_since(started)));
        if let Err(warning) = self.check_sessions() {
            self.warnings.push(warning);
        }
        Ok(())
    }

    /// Redis down does not stop a deploy, but sessions are degraded.
    fn check_sessions(&self) -> Result<(), String> {
        let redis: Vec<_> = self
            .containers
            .iter()
            .filter(|c| c.service == "redis")
            .collect();
        if redis.is_empty() || redis.iter().all(|c| c.running) {
            return Ok(());
        }
        Err(
            "redis is not running: sessions are degraded until it is back (cryptus start)"
                .to_owned(),
        )
    }

    async fn flip_step(&mut self, steps: &mut Steps<'_>) -> Result<()> {
        let (target, serve) = (self.to.color, self.serve.clone());
        steps
            .run(
                "switch",
                format!("switching nginx to {target}"),
                self.flip(target, &serve),
            )
            .await
    }

    /// Points nginx's upstream at `names` of `color` and waits until nginx
    /// serves it.
    async fn flip(&mut self, color: Color, names: &[String]) -> Result<()> {
        let upstream = Upstream::of(color, names)?;
        self.apply(&upstream, Served::color(color)).await?;
        self.switched_at = Some(Utc::now());
        Ok(())
    }

    /// Applies `upstream` and waits until nginx serves it (`served`).
    async fn apply(&mut self, upstream: &Upstream, served: Served) -> Result<()> {
        let nginx = self.stack.nginx();
        // The workers that serve now are the ones to drain after the
        // reload, with those of any reload this switch made before.
        if self.old_workers.is_empty() || self.upstream_touched {
            for worker in nginx.workers().await? {
                if !self.old_workers.contains(&worker) {
                    self.old_workers.push(worker);
                }
            }
        }
        self.upstream_touched = true;
        let prepared = match self.prepared.take() {
            Some(pending) => pending.take().await,
            None => None,
        };
        upstream.apply_prepared(&nginx, prepared).await?;
        let served = WaitFor::Served {
            status_addr: &self.lb.status_addr,
            served,
        };
        let limits = Limits::within(self.settings.timeout, upstream::SERVED_EVERY);
        self.stack.wait(&served, limits).await?;
        Ok(())
    }

    /// A canary's steps, before the flip to 100%: nginx sends each step's
    /// share of clients to the new color, which is then held and watched
    /// (its containers probed, its 5xx counted in nginx's log, and judged
    /// by the metric gate where Prometheus sees it, by the log otherwise).
    async fn canary_steps(
        &mut self,
        steps: &mut Steps<'_>,
        expect: &Expect,
        options: &canary::Options,
    ) -> Result<()> {
        self.canary = Some(canary::Progress::new(self.to.color, &options.steps));
        for &percent in &options.steps {
            self.failed_at = Some(percent);
            let canary = Canary {
                color: self.to.color,
                percent,
            };
            let served = Served {
                color: self.from.color,
                canary: Some(canary),
            };
            let upstream =
                Upstream::canary(served, &self.from_containers, &self.serve, &options.cookie)?;
            let message = format!(
                "sending {percent}% of clients to {} {}",
                self.to.color, self.to.version
            );
            steps
                .run(
                    &format!("canary {percent}%"),
                    message,
                    self.apply(&upstream, served),
                )
                .await?;
            if let Some(progress) = &mut self.canary {
                progress.reached = Some(percent);
            }
            let message = format!(
                "holding {percent}% for {}{}",
                crate::output::seconds(options.hold),
                if crate::metrics::prometheus_addr(&self.containers).is_some() {
                    ", with the metric gate"
                } else {
                    ""
                }
            );
            let payload = crate::notify::Payload::canary_step(
                &self.stack.project.name,
                &self.from,
                &self.to,
                percent,
            );
            let (held, answers, warnings) = canary::hold_step(
                steps,
                (percent, message),
                (&self.settings.notify, &payload),
                async |answers: &mut canary::StepAnswers| {
                    self.hold(expect, answers, options.hold).await
                },
            )
            .await;
            self.warnings.extend(warnings);
            if let Some(progress) = &mut self.canary {
                progress.answers.push(answers);
            }
            held?;
        }
        self.failed_at = None;
        Ok(())
    }

    /// One canary step's hold: the new containers probed, and the step's
    /// judge (the metric gate where Prometheus sees the new version,
    /// nginx's log otherwise) counting into `answers`.
    async fn hold(
        &self,
        expect: &Expect,
        answers: &mut canary::StepAnswers,
        length: std::time::Duration,
    ) -> Result<()> {
        let inspected = self.runner.inspect(&self.serve).await?;
        let targets = inspected
            .iter()
            .filter_map(|c| Some((c.name.clone(), Stack::app_addr(c)?)))
            .collect();
        let addresses: Vec<String> = inspected
            .iter()
            .flat_map(|c| c.addresses.values())
            .map(|ip| format!("{ip}:{}", crate::stack::APP_PORT))
            .collect();
        let probes = watch::Watch {
            client: &self.client,
            printer: self.stack.printer,
            targets,
            expect,
            length,
            poll: self.settings.poll,
            // The step's judge asks the gate: it weighs its answers
            // against nginx's log.
            gate: None,
        };
        let gate = self.metric_gate(length);
        let log = [(self.stack.engine, self.lb.container.name.as_str())];
        let judged = canary::judge_step(
            &log,
            &addresses,
            gate.as_ref().map(|gate| (&self.client, gate)),
            Instant::now() + length,
            answers,
        );
        tokio::try_join!(watch::watch(probes), judged)?;
        Ok(())
    }

    /// The metric gate over `window` for the new version, where Prometheus runs.
    fn metric_gate(&self, window: std::time::Duration) -> Option<watch::Gate> {
        crate::metrics::prometheus_addr(&self.containers).map(|addr| {
            let prometheus = crate::metrics::Prometheus::Published(addr);
            let (color, version) = (self.to.color, &self.to.version);
            watch::Gate::new(prometheus, &self.settings.gate, color, version, window)
        })
    }

    /// Answers in a row through the load balancer, then the watch.
    async fn prove(&mut self, steps: &mut Steps<'_>, expect: &Expect) -> Result<()> {
        let settings = self.settings;
        let (target, lb_addr) = (self.to.color, self.lb.addr.clone());
        let deadline = Instant::now() + settings.timeout;
        let in_a_row = WaitFor::InARow {
            lb_addr: &lb_addr,
            expect,
            count: settings.verify,
        };
        let (verified, image_id) = tokio::join!(
            steps.wait(
                "verify",
                format!(
                    "verifying {} answers in a row from {target} through the load balancer",
                    settings.verify
                ),
                self.stack.wait(
                    &in_a_row,
                    Limits::until(deadline, settings.poll.min(VERIFY_EVERY))
                ),
            ),
            self.runner.image_id(&self.serve)
        );
        self.to.image_id = image_id;
        verified?;
        if settings.watch.is_zero() {
            return Ok(());
        }
        self.watch(steps, expect, lb_addr).await
    }

    /// Probes the new containers and the load balancer for the watch
    /// window; with Prometheus running, it also asks the gate's question.
    async fn watch(&self, steps: &mut Steps<'_>, expect: &Expect, lb_addr: String) -> Result<()> {
        let (settings, target) = (self.settings, self.to.color);
        let gate = self.metric_gate(settings.watch);
        let mut targets = vec![(format!("the load balancer ({lb_addr})"), lb_addr)];
        targets.extend(self.runner.addresses(&self.serve).await?);
        let message = format!(
            "watching {target} for {}{}",
            crate::output::seconds(settings.watch),
            if gate.is_some() {
                ", with the metric gate"
            } else {
                ""
            }
        );
        let watch = watch::Watch {
            client: &self.client,
            printer: self.stack.printer,
            targets,
            expect,
            length: settings.watch,
            poll: settings.poll,
            gate,
        };
        steps.wait("watch", message, watch::watch(watch)).await
    }

    /// The switch is proven: it is recorded while the old color drains and
    /// stops (or stays warm), so the operator does not wait for the write.
    async fn finish(self, steps: &mut Steps<'_>, began: Instant, plan: &Plan) -> Result<Report> {
        let (stack, settings) = (self.stack, self.settings);
        let proven = self.report(steps, began, Outcome::Ok, None);
        let bookkeeping = async {
            if plan.clears_pending {
                super::clear_pending(stack, plan.target).await;
            }
            let notified = super::record(stack, &proven, settings).await;
            // Images cryptus built that no container uses any more go; both
            // colors' containers exist here, so what rollback needs stays.
            match crate::build::prune(stack).await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::debug!("pruned {} unused images", removed.len());
                }
                Ok(_) => {}
                Err(err) => stack.printer.warn(format!("pruning old images: {err:#}")),
            }
            notified
        };
        let (active, keep) = (self.from.color, plan.keep_standby);
        let message = if keep {
            format!("draining nginx's old workers; {active} stays up as a warm standby")
        } else {
            format!("draining nginx's old workers, then stopping {active}")
        };
        let retire = async {
            let nginx = stack.nginx();
            let drain = upstream::drain(
                &nginx,
                stack.printer,
                &self.old_workers,
                self.settings.drain,
            );
            let (drained, notified) = tokio::join!(drain, bookkeeping);
            let busy = drained.unwrap_or_else(|err| {
                // The switch is proven and recorded: waiting for the old
                // workers is a courtesy to their requests, not the deploy.
                stack
                    .printer
                    .warn(format!("waiting for nginx's old workers: {err:#}"));
                // Not known to be idle: count what is still open.
                usize::MAX
            });
            let mut closed = None;
            if !keep {
                closed = self.still_open(&nginx, busy).await;
                self.runner.stop(&self.from_containers).await;
            }
            Ok::<_, anyhow::Error>((notified, closed))
        };
        let (notified, closed) = steps.run("drain", message, retire).await?;
        if let Some(open) = closed.filter(|open| *open > 0) {
            stack.printer.info(format!(
                "closed {open} long-lived connection{} still open to {active} when it stopped \
                 (WebSocket, event stream or slow request): their clients reconnect to {}",
                if open == 1 { "" } else { "s" },
                self.to.color
            ));
        }
        if crate::interrupt::seen() {
            stack.printer.warn(format!(
                "interrupted after the switch was proven: the {} was finished, not undone",
                self.operation
            ));
        }
        let mut report = self.report(steps, began, Outcome::Ok, None);
        report.long_lived_closed = closed;
        report.warnings.extend(notified);
        for warning in &report.warnings {
            stack.printer.warn(warning);
        }
        Ok(report)
    }

    /// How many connections through nginx are still open to the old
    /// color's containers, just before they stop (and so are closed):
    /// WebSockets, event streams, requests slower than `--drain`. Only the
    /// old workers (`busy` of them still running) can hold any: the
    /// reloaded ones send nothing to the old color, and an exiting worker
    /// closes its idle keep-alive connections to the app at once, so those
    /// are not counted. `None` when it could not be read.
    async fn still_open(&self, nginx: &crate::nginx::Nginx<'_>, busy: usize) -> Option<usize> {
        if busy == 0 {
            return Some(0);
        }
        let peers: Vec<std::net::IpAddr> = self
            .containers
            .iter()
            .filter(|c| self.from_containers.contains(&c.name))
            .flat_map(|c| c.addresses.values())
            .filter_map(|address| address.parse().ok())
            .collect();
        match nginx.connections_to(&peers, APP_PORT).await {
            Ok(open) => Some(open),
            Err(err) => {
                self.stack.printer.warn(format!(
                    "counting the connections still open to {}: {err:#}",
                    self.from.color
                ));
                None
            }
        }
    }

    fn report(
        &self,
        steps: &Steps<'_>,
        began: Instant,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Report {
        let sides = (self.from.clone(), self.to.clone());
        Report {
            reason,
            readiness: self.readiness,
            switched_at: self.switched_at,
            warnings: self.warnings.clone(),
            long_lived_closed: None,
            hooks: self.hooks.clone(),
            traffic_unsettled: self.traffic_unsettled,
            canary: self.canary.clone(),
            failed_at: self.failed_at,
            ..Report::new(self.operation, outcome, sides, steps, began)
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
        self.announce(report).await
    }

    /// Records a finished report (history, notifications) and prints its
    /// warnings, the notifications' among them.
    async fn announce(&self, mut report: Report) -> Report {
        let notified = super::record(self.stack, &report, self.settings).await;
        report.warnings.extend(notified);
        for warning in &report.warnings {
            self.stack.printer.warn(warning);
        }
        report
    }

    /// Ends a switch whose traffic never moved: what it started goes
    /// (unless --keep-failed), and the failure is recorded.
    async fn fail_before_flip(
        &mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        err: anyhow::Error,
    ) -> Result<Report> {
        // Bad input found before anything was made (a build context that is
        // no directory, a version nginx could not carry) changes nothing, not
        // even the history, and keeps its exit 2.
        let bad_input = crate::error::classify(&err).0 == crate::error::EXIT_USAGE
            && crate::error::is_user_error(&err);
        // A hook that ran (a migration, say) changed something.
        if bad_input && !self.runner.changed_anything() && self.hooks.is_empty() {
            return Err(err);
        }
        if !self.settings.keep_failed {
            self.runner.undo().await;
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
        err: anyhow::Error,
    ) -> Result<Report> {
        if !self.upstream_touched {
            return self.fail_before_flip(steps, began, err).await;
        }
        let back = self.put_back(steps, "putting nginx back on").await;
        self.switched_at = None;
        let nginx = self.stack.nginx();
        match back {
            Ok(()) => self.fail_before_flip(steps, began, err).await,
            // nginx is down, but its upstream file still names the old
            // color: that is what it serves when it is back.
            Err(_) if upstream::names_only(&nginx, &self.from_containers, &self.serve).await => {
                self.fail_before_flip(steps, began, err).await
            }
            Err(back_err) => {
                let err = self.unsettled("switching to", &err, &back_err);
                Ok(self.conclude(steps, began, Outcome::Failed, &err).await)
            }
        }
    }

    /// Flips nginx back to the old color's containers, as the step
    /// "rollback" (`what` begins its message).
    async fn put_back(&mut self, steps: &mut Steps<'_>, what: &str) -> Result<()> {
        let from = self.from.color;
        let names = self.from_containers.clone();
        steps
            .run(
                "rollback",
                format!("{what} {from}"),
                self.flip(from, &names),
            )
            .await
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

    /// A rollback while a canary is live (its deploy was killed): every
    /// client goes back to the served color, then the canary's containers
    /// go. Recorded as a rollback from the canary's release.
    async fn abandon_canary(
        mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        plan: &Plan,
    ) -> Result<Report> {
        let (active, serve) = (plan.active, plan.serve.clone());
        let flipped = steps
            .run(
                "switch",
                format!("putting every client back on {active}"),
                self.flip(active, &serve),
            )
            .await;
        if let Err(err) = flipped {
            return Ok(self.conclude(steps, began, Outcome::Failed, &err).await);
        }
        let (stack, canary) = (self.stack, plan.target);
        let retire = async {
            let nginx = stack.nginx();
            let _ = upstream::drain(
                &nginx,
                stack.printer,
                &self.old_workers,
                self.settings.drain,
            )
            .await;
            self.runner.retire(&plan.remove).await;
            Ok(())
        };
        let message = format!("draining nginx's old workers, then removing {canary}");
        steps.run("drain", message, retire).await?;
        // What moved: from the canary's release back to the served color's.
        std::mem::swap(&mut self.from, &mut self.to);
        let report = self.report(steps, began, Outcome::Ok, None);
        Ok(self.announce(report).await)
    }

    /// Ends a canary whose step failed (or was interrupted): every client
    /// goes back to the old color, then as after a failed watch.
    async fn fail_in_canary(
        &mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        err: anyhow::Error,
    ) -> Result<Report> {
        if !self.upstream_touched {
            return self.fail_before_flip(steps, began, err).await;
        }
        self.flip_back(steps, began, err).await
    }

    async fn flip_back(
        &mut self,
        steps: &mut Steps<'_>,
        began: Instant,
        err: anyhow::Error,
    ) -> Result<Report> {
        // The workers to drain now are those serving the failed color.
        self.old_workers.clear();
        let back = self.put_back(steps, "flipping back to").await;
        if let Err(back_err) = back {
            let err = self.unsettled("after the switch to", &err, &back_err);
            return Ok(self.conclude(steps, began, Outcome::Failed, &err).await);
        }
        if !self.settings.keep_failed {
            // Give nginx's old workers their in-flight requests before the
            // failed color goes away.
            let nginx = self.stack.nginx();
            let _ = upstream::drain(
                &nginx,
                self.stack.printer,
                &self.old_workers,
                self.settings.drain,
            )
            .await;
            self.runner.undo().await;
        }
        Ok(self.conclude(steps, began, Outcome::RolledBack, &err).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

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
