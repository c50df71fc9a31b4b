//! Bringing the stack's services up and down on the engine: networks and
//! volumes, containers in dependency order, readiness waits, and stopping.
//! The steps are methods of the command's [`Stack`] (see `context`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use crate::compose::{Condition, DEFAULT_NETWORK, MountKind, Network, Service};
use crate::context::{Stack, of_service, release_of};
use crate::engine::{CONFIG_HASH_LABEL, Container, Engine};
use crate::error::failed_with_hint;
use crate::health::{self, Expect};
use crate::interrupt;
use crate::lb;
use crate::nginx;
use crate::ready::{self, Probes, WaitFor};
use crate::recorded;
use crate::stack::{
    APP_PORT, Color, LB_SERVICE, Release, container_name, network_labels, network_name,
    plan_container, volume_labels, volume_name,
};
use crate::wait::Limits;

/// How often a dependency's healthcheck is looked at: each look may run the
/// check inside the container.
const HEALTHCHECK_POLL: Duration = Duration::from_millis(200);

/// What happened to one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Unchanged,
    Started,
    Created,
    Recreated,
}

/// What `up` did.
#[derive(Debug, Serialize)]
pub struct UpSummary {
    pub active: Color,
    pub version: String,
    pub changes: BTreeMap<String, Change>,
    pub created_networks: Vec<String>,
    pub created_volumes: Vec<String>,
    /// Where the load balancer answers, from this host.
    pub url: String,
}

impl UpSummary {
    pub fn changed(&self) -> bool {
        !self.created_networks.is_empty()
            || !self.created_volumes.is_empty()
            || self.changes.values().any(|c| *c != Change::Unchanged)
    }
}

impl Stack<'_> {
    /// Fails, naming every image that is missing, before anything is changed.
    pub async fn check_images(&self, images: &[(String, String)]) -> Result<()> {
        let mut missing = Vec::new();
        for (service, image) in images {
            if self.engine.image_labels(image).await?.is_none() {
                missing.push(format!("{image} (service {service})"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(failed_with_hint(
            format!("the engine has no image {}", missing.join(", ")),
            "make the offline images with `scripts/make-images.sh`, or `docker pull` them where a registry is reachable; NGINX_IMAGE, REDIS_IMAGE and CRYPTUS_IMAGE choose them",
        ))
    }

    /// Bind-mounted files must exist, or the engine would make empty
    /// directories in their place.
    pub fn check_bind_sources(&self, service: &Service) -> Result<()> {
        for mount in &service.mounts {
            if mount.kind == MountKind::Bind && !std::path::Path::new(&mount.source).exists() {
                return Err(crate::error::usage(
                    format!(
                        "{} (mounted into {}) does not exist",
                        mount.source, service.name
                    ),
                    "run `cryptus init` to write the default files",
                ));
            }
        }
        Ok(())
    }

    /// Creates the project's networks and volumes that are missing, noting
    /// each in `saga`.
    pub async fn ensure_infrastructure(&self, saga: &mut Saga) -> Result<()> {
        let project = &self.project.name;
        let mut networks: Vec<(String, Network)> = self
            .compose
            .networks
            .iter()
            .map(|(name, network)| (name.clone(), network.clone()))
            .collect();
        if self.compose.uses_default_network()
            && !self.compose.networks.contains_key(DEFAULT_NETWORK)
        {
            let default = Network {
                driver: None,
                internal: false,
                labels: BTreeMap::new(),
                ipam: None,
            };
            networks.push((DEFAULT_NETWORK.to_owned(), default));
        }
        for (name, network) in networks {
            let full = network_name(project, &name);
            let labels = network_labels(project, &name, &network.labels);
            if self.engine.ensure_network(&full, &network, labels).await? {
                saga.networks.push(full);
            }
        }
        for (name, volume) in &self.compose.volumes {
            let full = volume_name(project, name);
            let labels = volume_labels(project, name, &volume.labels);
            if self
                .engine
                .ensure_volume(&full, volume.driver.as_deref(), labels)
                .await?
            {
                saga.volumes.push(full);
            }
        }
        Ok(())
    }

    /// Makes `replicas` containers of `service` exist (and run, but with
    /// [`Ensure::CreateOnly`]). A container whose configuration no longer
    /// matches the file is recreated, but with [`Ensure::Keep`]. What it
    /// creates or starts is noted in `saga` before the next step.
    pub async fn ensure_service(
        &self,
        service: &Service,
        replicas: u32,
        release: Option<&Release>,
        existing: &[Container],
        mode: Ensure,
        saga: &mut Saga,
    ) -> Result<Vec<(String, Change)>> {
        let recreate = mode != Ensure::Keep;
        let start = mode != Ensure::CreateOnly;
        let mut changes = Vec::new();
        for number in 1..=replicas {
            let plan = plan_container(&self.project.name, self.compose, service, number, release)?;
            let current = existing.iter().find(|c| c.name == plan.name);
            let change = match current {
                Some(c)
                    if !recreate
                        || c.label(CONFIG_HASH_LABEL) == Some(plan.config_hash.as_str()) =>
                {
                    if c.running || !start {
                        Change::Unchanged
                    } else {
                        saga.started.push(c.name.clone());
                        self.engine.start(&c.name).await?;
                        Change::Started
                    }
                }
                Some(c) => {
                    self.printer.info(format!(
                        "{}: its configuration changed, recreating it",
                        c.name
                    ));
                    self.engine.remove(&c.id, true).await?;
                    self.engine
                        .create_container(&plan.name, plan.body, &plan.extra_networks)
                        .await?;
                    if start {
                        self.engine.start(&plan.name).await?;
                    }
                    Change::Recreated
                }
                None => {
                    self.engine
                        .create_container(&plan.name, plan.body, &plan.extra_networks)
                        .await?;
                    saga.created.push(plan.name.clone());
                    if start {
                        self.engine.start(&plan.name).await?;
                    }
                    Change::Created
                }
            };
            changes.push((plan.name, change));
        }
        Ok(changes)
    }

    /// Waits until what `service` depends on meets its condition.
    pub async fn wait_dependencies(&self, service: &Service, deadline: Instant) -> Result<()> {
        for dependency in &service.depends_on {
            let Some(target) = self.compose.service(&dependency.service) else {
                continue;
            };
            let names: Vec<String> = (1..=target.replicas)
                .map(|n| container_name(&self.project.name, &target.name, n))
                .collect();
            for name in names {
                let container = name.as_str();
                let (what, interval) = match dependency.condition {
                    Condition::Started => (WaitFor::Running { container }, ready::POLL),
                    Condition::Healthy => {
                        let Some(check) = &target.healthcheck else {
                            bail!(
                                "{} depends on {} being healthy, but {} has no healthcheck",
                                service.name,
                                target.name,
                                target.name
                            );
                        };
                        let test = &check.test;
                        (WaitFor::Healthy { container, test }, HEALTHCHECK_POLL)
                    }
                    Condition::CompletedSuccessfully => {
                        (WaitFor::Completed { container }, ready::POLL)
                    }
                };
                self.wait(&what, Limits::until(deadline, interval)).await?;
            }
        }
        Ok(())
    }

    /// The upstream file for the running containers of `color`.
    pub fn upstream_file(color: Color, containers: &[&Container]) -> Result<String> {
        let servers: Vec<String> = containers
            .iter()
            .filter(|c| c.running)
            .map(|c| format!("{}:{APP_PORT}", c.name))
            .collect();
        nginx::render_upstream(color, &servers)
    }

    /// The services `start` runs, nginx as it runs here: a service with
    /// `deploy.replicas: 0` is left out, as in Compose; both colors are in.
    fn services_to_run(&self) -> Result<Vec<Service>> {
        let lb = lb::service(self.compose, &self.project.dir)?;
        Ok(self
            .compose
            .services
            .values()
            .filter(|s| s.replicas > 0 || Color::of_service(&s.name).is_some())
            .map(|s| {
                if s.name == LB_SERVICE {
                    lb.clone()
                } else {
                    s.clone()
                }
            })
            .collect())
    }

    /// What must hold before anything is created: every image is here, every
    /// host port is free (or this project's running container holds it),
    /// the secrets and bind-mounted files exist.
    pub async fn preflight(&self) -> Result<()> {
        let services = self.services_to_run()?;
        let images: Vec<(String, String)> = services
            .iter()
            .filter(|s| Color::of_service(&s.name).is_none())
            .filter_map(|s| Some((s.name.clone(), s.image.clone()?)))
            .collect();
        self.check_images(&images).await?;
        let existing = self.containers().await?;
        // The colors publish engine-chosen ports, and which one starts is
        // known only once nginx's volume is read.
        let publishing: Vec<&Service> = services
            .iter()
            .filter(|s| Color::of_service(&s.name).is_none())
            .collect();
        self.check_ports(&publishing, &existing).await?;
        // The secrets first: they are bind-mounted files too.
        self.ensure_secrets().await?;
        for service in &services {
            self.check_bind_sources(service)?;
        }
        Ok(())
    }

    /// Fails, naming every host port a service would publish that something
    /// else holds: another container (any project) or, when the engine runs
    /// here, any process.
    async fn check_ports(&self, services: &[&Service], existing: &[Container]) -> Result<()> {
        // This project's own containers (running, or restarting) hold their
        // ports for the stack this start keeps or replaces.
        let ours = |port: u16| {
            existing
                .iter()
                .any(|c| c.published.values().any(|(_, p)| *p == port))
        };
        let mut engine_ports = self.engine.published_host_ports().await?;
        engine_ports.retain(|(_, project, _)| project.as_deref() != Some(&self.project.name));
        let mut taken = Vec::new();
        let mut wanted: BTreeMap<(u16, &str), &str> = BTreeMap::new();
        for service in services {
            for port in &service.ports {
                if let Some(host_port) = port.host_port
                    && let Some(other) =
                        wanted.insert((host_port, port.protocol.as_str()), &service.name)
                {
                    // The configuration contradicts itself: a usage error.
                    return Err(crate::error::usage(
                        format!(
                            "host port {host_port} is published twice ({other} and {}), so nothing was created",
                            service.name
                        ),
                        format!(
                            "give each its own port: {} sets this one",
                            port_variable(&service.name, port.container_port)
                        ),
                    ));
                }
                let Some(host_port) = port.host_port.filter(|p| !ours(*p)) else {
                    continue;
                };
                let holder = engine_ports
                    .iter()
                    .find(|(_, _, p)| *p == host_port)
                    .map(|(name, _, _)| format!("container {name}"))
                    .or_else(|| {
                        (Engine::is_local()
                            && port_in_use(port.host_ip.as_deref(), host_port, &port.protocol))
                        .then(|| "another process".to_owned())
                    });
                if let Some(holder) = holder {
                    taken.push((service.name.clone(), port.container_port, host_port, holder));
                }
            }
        }
        let Some((service, container_port, host_port, _)) = taken.first() else {
            return Ok(());
        };
        let all: Vec<String> = taken
            .iter()
            .map(|(s, _, p, h)| format!("{p} ({s}, held by {h})"))
            .collect();
        Err(failed_with_hint(
            format!(
                "host port {} is taken, so nothing was created",
                all.join(", ")
            ),
            format!(
                "free port {host_port}, or choose another with {}",
                port_variable(service, *container_port)
            ),
        ))
    }

    /// Takes the deploy lock for `operation`, waiting up to `wait` for a
    /// deploy that holds it.
    pub async fn lock(&self, operation: &str, wait: Duration) -> Result<crate::lock::Lock> {
        let image = lb::service(self.compose, &self.project.dir)?
            .image
            .context("the nginx service names no image")?;
        let options = crate::lock::Options {
            wait,
            force_unlock: false,
        };
        // Not wrapped in `or_interrupted`: a signal ends only the wait inside
        // `acquire`, never the request that creates the lock, which would
        // leave a lock with no holder.
        crate::lock::Lock::acquire(
            self.engine,
            &self.project.name,
            operation,
            &image,
            &options,
            self.printer,
        )
        .await
        .map_err(|err| {
            // The lock's own hint names deploy's flags, which start lacks.
            match err.downcast_ref::<crate::error::UserError>() {
                Some(held) if held.message.contains("is held") => failed_with_hint(
                    held.message.clone(),
                    format!(
                        "{operation} waited {}s (its --timeout) for it; run it again once that operation ends. A lock whose holder is gone is broken by the next run",
                        wait.as_secs()
                    ),
                ),
                _ => err,
            }
        })
    }

    /// Brings the stack up: redis, the active color at its recorded release
    /// (blue with the compose image the first time), then nginx, and returns
    /// once the app answers through the load balancer. It takes the deploy
    /// lock; SIGINT and SIGTERM undo what it made.
    pub async fn up(&self, operation: &str, timeout: Duration) -> Result<UpSummary> {
        interrupt::catch();
        let deadline = Instant::now() + timeout;
        self.preflight().await?;
        let lock = self.lock(operation, timeout).await?;
        let result = self.up_locked(deadline).await;
        if let Err(err) = lock.release().await {
            self.printer
                .warn(format!("releasing the deploy lock: {err:#}"));
        }
        result
    }

    /// [`Stack::up`] under a lock the caller holds, after [`Stack::preflight`].
    /// On a failure or a signal, what this run created is removed and what
    /// it started is stopped again.
    pub async fn up_locked(&self, deadline: Instant) -> Result<UpSummary> {
        let began = Instant::now();
        let mut saga = Saga::default();
        interrupt::check()?;
        // A scratch redis a killed restore left on the data volume goes
        // before the real one starts: two servers never write one volume.
        crate::redis::sweep_scratch(self.engine, &self.project.name, self.printer).await?;
        match self.bring_up(deadline, &mut saga, began).await {
            Ok(summary) => Ok(summary),
            Err(err) => {
                self.undo(&saga).await;
                Err(err)
            }
        }
    }

    async fn bring_up(
        &self,
        deadline: Instant,
        saga: &mut Saga,
        began: Instant,
    ) -> Result<UpSummary> {
        let lb_service = lb::service(self.compose, &self.project.dir)?;
        let step = self.printer.step("networks and volumes");
        self.ensure_infrastructure(saga).await?;
        step.done_with(if saga.networks.is_empty() && saga.volumes.is_empty() {
            "present".to_owned()
        } else {
            format!(
                "created {}",
                [saga.networks.clone(), saga.volumes.clone()]
                    .concat()
                    .join(", ")
            )
        });
        let mut changes: BTreeMap<String, Change> = BTreeMap::new();
        // The state lives in nginx's volume: without an nginx container,
        // create one (not started) to read it.
        let existing = self.containers().await?;
        if !existing.iter().any(|c| c.service == LB_SERVICE) {
            let outcome = self
                .ensure_service(&lb_service, 1, None, &existing, Ensure::CreateOnly, saga)
                .await?;
            changes.extend(outcome);
        }
        interrupt::check()?;
        let existing = self.containers().await?;
        let restore = self.restore_plan(&existing).await?;
        let active = restore.plan.color;
        let release = restore.release.clone();
        self.check_release_image(&restore).await?;
        let replicas = restore.plan.replicas.unwrap_or_else(|| {
            self.compose
                .service(active.service())
                .map_or(1, |s| s.replicas.max(1))
        });
        let services = self
            .run_services(active, &release, replicas, &existing, deadline, saga)
            .await?;
        // nginx resolves its upstream's names when it loads them: an app
        // container started anew may have a new address.
        let prefix = format!("{}-{}-", self.project.name, active.service());
        let reload = services
            .iter()
            .any(|(name, change)| name.starts_with(&prefix) && *change != Change::Unchanged);
        changes.extend(services);
        interrupt::check()?;
        // nginx may have been created early, to read its volume.
        let earlier = changes.get(&self.lb_container()).copied();
        let (lb_name, lb_change, started) = self
            .start_nginx(&lb_service, active, reload, earlier, deadline, saga)
            .await?;
        changes.insert(lb_name, lb_change);
        let addr = self.wait_served(active, deadline).await?;
        if started {
            // It got the version-less file: nginx -v is asked once, now.
            self.settle_http_file().await;
        }
        self.record_restore(&restore, &release, &changes, began)
            .await;
        Ok(UpSummary {
            active,
            version: release.version,
            changes,
            created_networks: std::mem::take(&mut saga.networks),
            created_volumes: std::mem::take(&mut saga.volumes),
            url: format!("http://{addr}"),
        })
    }

    /// Refuses, as [`Stack::up`] would, when what serves cannot be known or
    /// its image is gone; reads only, so a restart can refuse before it
    /// stops anything. Without an nginx container there is nothing to read
    /// yet, and nothing serves: `up` reads the volume itself.
    pub async fn check_restorable(&self) -> Result<()> {
        if self.engine.inspect(&self.lb_container()).await?.is_none() {
            return Ok(());
        }
        let existing = self.containers().await?;
        let restore = self.restore_plan(&existing).await?;
        self.check_release_image(&restore).await
    }

    /// The upstream file's color, unless a running nginx serves another:
    /// then the file cannot be trusted to say what serves, and is treated
    /// as unreadable (with a warning naming both).
    async fn upstream_as_served(&self, text: Option<&str>) -> recorded::Upstream {
        let upstream = recorded::Upstream::from_text(text);
        let recorded::Upstream::Active(color) = upstream else {
            return upstream;
        };
        let lb = self
            .engine
            .inspect(&self.lb_container())
            .await
            .ok()
            .flatten();
        let Some(addr) = lb
            .filter(|lb| lb.running)
            .as_ref()
            .and_then(Self::status_addr)
        else {
            return upstream;
        };
        match nginx::served_color(&health::client(), &addr).await {
            Ok(served) if served != color => {
                self.printer.warn(format!(
                    "nginx serves {served}, but its upstream file says {color}"
                ));
                recorded::Upstream::Unreadable
            }
            _ => upstream,
        }
    }

    /// Reads what is recorded and decides what to restore, or refuses.
    async fn restore_plan(&self, existing: &[Container]) -> Result<Restore> {
        let nginx = self.nginx();
        let (upstream, history, started) = tokio::join!(
            nginx.read(nginx::UPSTREAM_FILE),
            nginx.read(crate::history::HISTORY_FILE),
            nginx.read(recorded::STARTED_FILE),
        );
        let (upstream, history, started) = (upstream?, history?, started?);
        let entries = match history.as_deref() {
            Some(text) if !text.trim().is_empty() => {
                crate::history::parse(text).map_err(|err| format!("{err:#}"))
            }
            _ => Ok(Vec::new()),
        };
        let started = recorded::parse_started(started.as_deref());
        let color_state = |color: Color| {
            let containers = of_service(existing, color.service());
            recorded::ColorState {
                release: release_of(&containers),
                replicas: containers.iter().map(|c| c.number).max().unwrap_or(0),
                running: u32::try_from(containers.iter().filter(|c| c.running).count())
                    .unwrap_or(u32::MAX),
            }
        };
        let facts = recorded::Facts {
            upstream: self.upstream_as_served(upstream.as_deref()).await,
            history: entries.as_deref().map_err(Clone::clone),
            started: &started,
            blue: color_state(Color::Blue),
            green: color_state(Color::Green),
        };
        let upstream_missing = facts.upstream == recorded::Upstream::Missing;
        let plan = recorded::decide(&facts).map_err(|refusal| {
            failed_with_hint(
                refusal.message,
                refusal
                    .hint
                    .replace(recorded::RESET_ALL, &self.reset_command(true))
                    .replace(recorded::RESET, &self.reset_command(false)),
            )
        })?;
        let running_before = facts.color(plan.color).running;
        let release = match &plan.release {
            Some(release) => release.clone(),
            None => self.default_release(plan.color).await?,
        };
        Ok(Restore {
            plan,
            release,
            running_before,
            upstream_missing,
            started,
        })
    }

    /// The command that clears nginx's recorded state: the upstream file, or
    /// (`all`) the history and the started releases too.
    fn reset_command(&self, all: bool) -> String {
        let volume = self
            .compose
            .service(LB_SERVICE)
            .and_then(|s| {
                s.mounts
                    .iter()
                    .find(|m| m.kind == MountKind::Volume && m.target == nginx::STATE_DIR)
            })
            .map_or_else(
                || volume_name(&self.project.name, "nginx-state"),
                |m| volume_name(&self.project.name, &m.source),
            );
        let image = self
            .compose
            .service(LB_SERVICE)
            .and_then(|s| s.image.clone())
            .unwrap_or_else(|| "nginx".to_owned());
        let files = if all {
            format!(
                "/state/{} /state/{} /state/{}",
                nginx::UPSTREAM_FILE,
                crate::history::HISTORY_FILE,
                recorded::STARTED_FILE
            )
        } else {
            format!("/state/{}", nginx::UPSTREAM_FILE)
        };
        format!("`docker run --rm -v {volume}:/state {image} rm -f {files}`")
    }

    /// The restored release's image must still be here.
    async fn check_release_image(&self, restore: &Restore) -> Result<()> {
        let color = restore.plan.color;
        let release = &restore.release;
        if restore.plan.source == recorded::Source::Fresh
            || restore.plan.source == recorded::Source::Containers
        {
            return self
                .check_images(&[(color.service().to_owned(), release.image.clone())])
                .await;
        }
        if self.engine.image_labels(&release.image).await?.is_some() {
            return Ok(());
        }
        Err(failed_with_hint(
            format!(
                "{color} served {} from image {}, which the engine no longer has; nothing else would be the deployed release",
                release.version, release.image
            ),
            format!(
                "load or pull {} again, then run `cryptus start`",
                release.image
            ),
        ))
    }

    /// Starts every service but nginx and the idle color, in dependency
    /// order; the active color at `release`, health-gated.
    async fn run_services(
        &self,
        active: Color,
        release: &Release,
        replicas: u32,
        existing: &[Container],
        deadline: Instant,
        saga: &mut Saga,
    ) -> Result<Vec<(String, Change)>> {
        let mut changes = Vec::new();
        for service in self.compose.start_order()? {
            let color = Color::of_service(&service.name);
            if service.name == LB_SERVICE
                || color == Some(active.other())
                || (color.is_none() && service.replicas == 0)
            {
                continue;
            }
            interrupt::or_interrupted(self.wait_dependencies(service, deadline)).await?;
            let step = self.printer.step(service.name.clone());
            let result = match color {
                Some(color) => {
                    self.run_color(service, color, release, replicas, existing, deadline, saga)
                        .await
                }
                None => {
                    self.ensure_service(
                        service,
                        service.replicas,
                        None,
                        existing,
                        Ensure::Recreate,
                        saga,
                    )
                    .await
                }
            };
            match result {
                Ok(outcome) => {
                    step.done_with(describe_changes(&outcome));
                    changes.extend(outcome);
                }
                Err(err) => {
                    step.fail();
                    return Err(err);
                }
            }
            interrupt::check()?;
        }
        Ok(changes)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_color(
        &self,
        service: &Service,
        color: Color,
        release: &Release,
        replicas: u32,
        existing: &[Container],
        deadline: Instant,
        saga: &mut Saga,
    ) -> Result<Vec<(String, Change)>> {
        let outcome = self
            .ensure_service(
                service,
                replicas,
                Some(release),
                existing,
                Ensure::Keep,
                saga,
            )
            .await?;
        let names: Vec<String> = outcome.iter().map(|(n, _)| n.clone()).collect();
        let expect = Expect {
            color,
            version: Some(release.version.clone()),
        };
        interrupt::or_interrupted(self.wait_app_ready(&names, &expect, ready::POLL, deadline))
            .await?;
        Ok(outcome)
    }

    /// nginx last: its upstream names the running containers of the active
    /// color; written before it starts, or applied if it runs and differs
    /// or `reload` says its names may point elsewhere now. The last value
    /// says whether this run started nginx.
    async fn start_nginx(
        &self,
        lb_service: &Service,
        active: Color,
        reload: bool,
        earlier: Option<Change>,
        deadline: Instant,
        saga: &mut Saga,
    ) -> Result<(String, Change, bool)> {
        let step = self.printer.step("nginx");
        interrupt::or_interrupted(self.wait_dependencies(lb_service, deadline)).await?;
        let now = self.containers().await?;
        let upstream = Self::upstream_file(active, &of_service(&now, active.service()))?;
        let outcome = self
            .ensure_service(lb_service, 1, None, &now, Ensure::CreateOnly, saga)
            .await?;
        let lb = self.must_inspect(&self.lb_container()).await?;
        // A running nginx says its version; a stopped one is asked once it
        // serves (see `settle_http_file`).
        let version = if lb.running {
            self.nginx().version().await.ok().flatten()
        } else {
            None
        };
        let limits = lb::http_file(self.compose, &self.project.dir, version.as_deref())?;
        let nginx = self.nginx();
        let files = [
            (nginx::UPSTREAM_FILE, upstream.as_str()),
            (nginx::HTTP_FILE, limits.as_str()),
        ];
        let mut lb_change = outcome.first().map_or(Change::Unchanged, |(_, c)| *c);
        interrupt::check()?;
        if lb.running {
            let mut stale = reload;
            for (name, text) in files {
                stale |= nginx.read(name).await?.as_deref() != Some(text);
            }
            if stale {
                nginx.apply(&files).await?;
                lb_change = Change::Started.max_with(lb_change);
            }
        } else {
            nginx.write(&files, false).await?;
            if !saga.created.contains(&lb.name) {
                saga.started.push(lb.name.clone());
            }
            if let Err(err) = self.engine.start(&lb.name).await {
                step.fail();
                return Err(err);
            }
            lb_change = Change::Started.max_with(lb_change);
        }
        let lb_change = earlier.map_or(lb_change, |c| c.max_with(lb_change));
        step.done_with(format!("{lb_change:?}").to_lowercase());
        Ok((lb.name, lb_change, !lb.running))
    }

    /// Once nginx serves, renders the http-level file with what nginx itself
    /// says its version is (`nginx -v`): an nginx started by this run got
    /// the version-less file, and gains `keepalive_min_timeout` here when it
    /// has it. A failure leaves the working file and is a warning.
    async fn settle_http_file(&self) {
        let nginx = self.nginx();
        let settled = async {
            let version = nginx.version().await?;
            let wanted = lb::http_file(self.compose, &self.project.dir, version.as_deref())?;
            if nginx.read(nginx::HTTP_FILE).await?.as_deref() != Some(wanted.as_str()) {
                nginx.apply(&[(nginx::HTTP_FILE, wanted.as_str())]).await?;
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(err) = settled {
            self.printer
                .warn(format!("nginx keeps its http settings: {err:#}"));
        }
    }

    /// Waits until the load balancer answers healthy as `active`.
    async fn wait_served(&self, active: Color, deadline: Instant) -> Result<String> {
        let step = self.printer.step("the app through the load balancer");
        let addr = self.lb_addr().await?;
        let expect = Expect {
            color: active,
            version: None,
        };
        let client = health::client();
        let probes = Probes {
            engine: self.engine,
            client: &client,
        };
        let balanced = WaitFor::Balanced {
            lb_addr: &addr,
            expect: &expect,
        };
        let limits = Limits::until(deadline, ready::POLL);
        let waited =
            interrupt::or_interrupted(async { Ok(balanced.wait(&probes, limits).await) }).await;
        match waited {
            Ok(Ok(_)) => {
                step.done_with(format!("{active} answers at http://{addr}"));
                Ok(addr)
            }
            Ok(Err(not)) => {
                // Its own log explains a load balancer that answers wrong.
                step.fail();
                self.show_logs(&self.lb_container()).await;
                Err(not.error)
            }
            Err(err) => {
                step.fail();
                Err(err)
            }
        }
    }

    /// Records what a start restored: the release it runs (for a stack
    /// never deployed), and, when it repaired served state, a history entry.
    async fn record_restore(
        &self,
        restore: &Restore,
        release: &Release,
        changes: &BTreeMap<String, Change>,
        began: Instant,
    ) {
        let color = restore.plan.color;
        let prefix = format!("{}-{}-", self.project.name, color.service());
        let ours: Vec<(&String, &Change)> = changes
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .collect();
        let made: Vec<String> = ours
            .iter()
            .filter(|(_, change)| matches!(change, Change::Created | Change::Recreated))
            .map(|(name, _)| (*name).clone())
            .collect();
        self.record_started(restore, release).await;
        let Some(reason) =
            recorded::repair_reason(&restore.plan, release, &made, restore.upstream_missing)
        else {
            self.publish_metrics(Some(color), None).await;
            return;
        };
        self.printer.info(format!("repaired: {reason}"));
        let side = |replicas: u32| crate::history::Side {
            color,
            image: release.image.clone(),
            version: release.version.clone(),
            image_id: None,
            replicas,
        };
        let entry = crate::history::Entry {
            time: chrono::Utc::now(),
            operation: "repair".to_owned(),
            user: crate::lock::user(),
            host: crate::lock::hostname(),
            from: side(restore.running_before),
            to: side(u32::try_from(ours.len()).unwrap_or(u32::MAX)),
            outcome: crate::history::Outcome::Ok,
            reason: Some(reason),
            durations: BTreeMap::from([("total".to_owned(), began.elapsed().as_secs_f64())]),
        };
        let history = match crate::history::record(&self.nginx(), entry, self.printer).await {
            Ok(history) => Some(history),
            Err(err) => {
                self.printer.warn(format!("recording the repair: {err:#}"));
                None
            }
        };
        self.publish_metrics(Some(color), history).await;
    }

    /// Keeps the started releases current, so a stack that is never
    /// deployed (or one an older cryptus started) can be repaired at the
    /// release it runs. A failure is a warning: the stack is up.
    async fn record_started(&self, restore: &Restore, release: &Release) {
        let color = restore.plan.color;
        if restore.started.get(&color) == Some(release) {
            return;
        }
        let mut started = restore.started.clone();
        started.insert(color, release.clone());
        let written = match serde_json::to_string(&started) {
            Ok(text) => {
                self.nginx()
                    .write(&[(recorded::STARTED_FILE, &text)], true)
                    .await
            }
            Err(err) => Err(err.into()),
        };
        if let Err(err) = written {
            self.printer
                .warn(format!("recording the started release: {err:#}"));
        }
    }

    /// Undoes a failed or interrupted run, newest first, under a deadline:
    /// what it created is removed, what it started is stopped.
    async fn undo(&self, saga: &Saga) {
        if saga.is_empty() {
            return;
        }
        let work = async {
            for name in saga.started.iter().rev() {
                if let Err(err) = self.engine.stop(name, None).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
            for name in saga.created.iter().rev() {
                if let Err(err) = self.engine.remove(name, true).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
            for volume in saga.volumes.iter().rev() {
                if let Err(err) = self.engine.remove_volume(volume).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
            for network in saga.networks.iter().rev() {
                if let Err(err) = self.engine.remove_network(network).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
        };
        if tokio::time::timeout(UNDO_DEADLINE, work).await.is_err() {
            self.printer.warn(format!(
                "undoing did not finish within {}s: `cryptus status` shows what is left",
                UNDO_DEADLINE.as_secs()
            ));
            return;
        }
        let undone: Vec<String> = [
            saga.created.clone(),
            saga.volumes.clone(),
            saga.networks.clone(),
        ]
        .concat();
        if !undone.is_empty() {
            self.printer
                .info(format!("undone: removed {}", undone.join(", ")));
        }
        if !saga.started.is_empty() {
            self.printer
                .info(format!("undone: stopped {} again", saga.started.join(", ")));
        }
    }
}

/// Stops every container of a project, the load balancer first so no request
/// reaches a stopping app, then the colors, then the rest. It needs no
/// compose file: the engine's labels say what belongs to the project.
pub async fn stop_project(
    engine: &Engine,
    project: &str,
    timeout: Option<Duration>,
) -> Result<Vec<String>> {
    let containers = engine.containers(project).await?;
    let tiers: [&dyn Fn(&Container) -> bool; 3] = [
        &|c| c.service == LB_SERVICE,
        &|c| Color::of_service(&c.service).is_some(),
        &|c| c.service != LB_SERVICE && Color::of_service(&c.service).is_none(),
    ];
    let mut stopped = Vec::new();
    for tier in tiers {
        let running: Vec<&Container> = containers.iter().filter(|c| c.running && tier(c)).collect();
        let results =
            futures_util::future::join_all(running.iter().map(|c| engine.stop(&c.name, timeout)))
                .await;
        for (container, result) in running.iter().zip(results) {
            result?;
            stopped.push(container.name.clone());
        }
    }
    Ok(stopped)
}

/// How long undoing a failed start may take (stopping an app container
/// waits its stop grace period).
const UNDO_DEADLINE: Duration = Duration::from_secs(90);

/// What a run changed, in order, to undo when it fails or is interrupted.
#[derive(Debug, Default)]
pub struct Saga {
    /// Containers it created where none was.
    pub created: Vec<String>,
    /// Containers that existed stopped and it started.
    pub started: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

impl Saga {
    fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.started.is_empty()
            && self.networks.is_empty()
            && self.volumes.is_empty()
    }
}

/// How [`Stack::ensure_service`] treats a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensure {
    /// Keep a container that exists (a color: it runs its own release);
    /// start it.
    Keep,
    /// Recreate a container whose configuration changed; start it.
    Recreate,
    /// Recreate a changed container, but do not start it (nginx, whose files
    /// are written first).
    CreateOnly,
}

/// What `start` restores, with what it was read from.
struct Restore {
    plan: recorded::Plan,
    release: Release,
    /// The releases former starts recorded.
    started: BTreeMap<Color, Release>,
    /// The active color's running containers before this run.
    running_before: u32,
    upstream_missing: bool,
}

/// Whether something on this host listens on `port` (EADDRINUSE when
/// binding it). Other errors (a privileged port) tell nothing.
fn port_in_use(host_ip: Option<&str>, port: u16, protocol: &str) -> bool {
    let ip: std::net::IpAddr = host_ip
        .filter(|ip| !ip.is_empty())
        .and_then(|ip| ip.trim_matches(['[', ']']).parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = std::net::SocketAddr::new(ip, port);
    let result = if protocol == "udp" {
        std::net::UdpSocket::bind(addr).map(drop)
    } else {
        std::net::TcpListener::bind(addr).map(drop)
    };
    matches!(result, Err(err) if err.kind() == std::io::ErrorKind::AddrInUse)
}

/// The variable that sets a published port, for hints.
fn port_variable(service: &str, container_port: u16) -> String {
    match (service, container_port) {
        (LB_SERVICE, nginx::HTTP_PORT) => "CRYPTUS_HTTP_PORT".to_owned(),
        (LB_SERVICE, lb::HTTPS_PORT) => "CRYPTUS_HTTPS_PORT".to_owned(),
        ("prometheus", 9090) => "PROMETHEUS_PORT".to_owned(),
        ("alertmanager", 9093) => "ALERTMANAGER_PORT".to_owned(),
        ("cadvisor", 8080) => "CADVISOR_PORT".to_owned(),
        ("grafana", 3000) => "GRAFANA_PORT".to_owned(),
        _ => format!("the ports: of service {service} in the compose file"),
    }
}

impl Change {
    /// The more significant of two changes, for one line per service.
    fn max_with(self, other: Change) -> Change {
        let rank = |c: Change| match c {
            Change::Unchanged => 0,
            Change::Started => 1,
            Change::Created => 2,
            Change::Recreated => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

fn describe_changes(outcome: &[(String, Change)]) -> String {
    let change = outcome
        .iter()
        .fold(Change::Unchanged, |acc, (_, c)| acc.max_with(*c));
    let count = outcome.len();
    let what = format!("{change:?}").to_lowercase();
    if count == 1 {
        what
    } else {
        format!("{what} ({count} containers)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_the_variable_that_sets_it() {
        assert_eq!(port_variable("nginx", 80), "CRYPTUS_HTTP_PORT");
        assert_eq!(port_variable("nginx", 443), "CRYPTUS_HTTPS_PORT");
        assert_eq!(port_variable("grafana", 3000), "GRAFANA_PORT");
        assert!(port_variable("web", 8000).contains("service web"));
    }

    #[test]
    fn a_listening_port_is_seen_as_in_use() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_in_use(Some("127.0.0.1"), port, "tcp"));
        assert!(port_in_use(None, port, "tcp"));
        drop(listener);
        assert!(!port_in_use(Some("127.0.0.1"), port, "tcp"));
    }
}
