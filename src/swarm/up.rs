//! `start` and `stop` on a Swarm. `start` makes the stack's overlay
//! network, nginx's configs, the services' secrets and configs and the
//! services, through the manager, then
//! waits until every service runs the tasks it asks for; a failure or a
//! deadline removes the services this run created. With monitoring, its
//! services are the stack's too, their `monitoring/` files configs of the
//! swarm ([`plan::service_spec`]). `stop` removes the
//! stack's services, then its network, configs and secrets; volumes stay
//! on their nodes, as on one engine.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use crate::compose::Kind;
use crate::context::Stack;
use crate::engine::{
    Engine, SPEC_DIGEST_LABEL, Service, ServiceMode, ServiceSpec, SwarmFile, Task, spec_digest,
};
use crate::error::{failed_with_hint, usage};
use crate::lb;
use crate::output::Printer;
use crate::stack::{Color, LB_SERVICE, REDIS_SERVICE, network_name};
use crate::wait::{self, Limits, Seen};

use super::nodes::NodeEngines;
use super::plan::{self, GrantPlan, nginx_configs, service_spec, stack_labels};
use super::service_name;

/// How often the tasks are looked at while waiting.
const POLL: Duration = Duration::from_millis(500);

/// How long `stop` waits, by default, for the tasks to go before it
/// removes the network they use.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// How long nginx's old workers may finish their requests when `start`
/// ends a canary a killed deploy left: `deploy`'s `--drain` default.
const CANARY_DRAIN: Duration = Duration::from_secs(30);

/// The project's files nginx reads, given to it as configs.
const NGINX_FILES: [&str; 2] = ["nginx.conf", "app.conf"];

#[derive(Debug, Serialize)]
pub struct Started {
    pub active: Color,
    pub version: String,
    /// The services this run created; the others existed already.
    pub created: Vec<String>,
    /// The services that existed and were given the spec the compose file
    /// now plans (their tasks replaced one at a time).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<Replaced>,
    pub services: Vec<String>,
    /// A canary a killed deploy left, which this run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_canary: Option<crate::nginx::Canary>,
}

/// A service `start` gave a new spec, and why.
#[derive(Debug, Serialize)]
pub struct Replaced {
    pub service: String,
    pub why: String,
}

impl Started {
    pub fn changed(&self) -> bool {
        !self.created.is_empty() || !self.replaced.is_empty() || self.ended_canary.is_some()
    }
}

/// Brings the stack up on the swarm, or leaves what runs as it is.
pub async fn start(stack: &Stack<'_>, timeout: Duration) -> Result<Started> {
    // Ctrl-C and SIGTERM end the run through its undo, not midway.
    crate::interrupt::catch();
    let deadline = Instant::now() + timeout;
    if lb::tls(&stack.project.dir) {
        return Err(usage(
            "HTTPS on a Docker Swarm is not done yet, and nginx/ssl/ holds a certificate",
            "move nginx/ssl/cert.pem and key.pem away, or use --orchestrator engine",
        ));
    }
    // Under the cluster's lock, as on one engine: a backup or a restore
    // holding it keeps its scratch redis, and its stopped redis, from this
    // start's repair.
    under_lock(
        stack,
        "start",
        timeout,
        start_locked(stack, timeout, deadline),
    )
    .await
}

/// Runs `work` holding the cluster's deploy lock for `operation` (waiting
/// up to `wait` for it), then releases it; a failed release is a warning.
pub(super) async fn under_lock<T>(
    stack: &Stack<'_>,
    operation: &str,
    wait: Duration,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let options = crate::lock::Options {
        wait,
        force_unlock: false,
    };
    let project = &stack.project.name;
    let lock = super::state::ClusterLock::acquire(
        stack.engine,
        project,
        operation,
        &options,
        stack.printer,
    )
    .await?;
    let result = work.await;
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
    result
}

/// [`start`], holding the lock.
async fn start_locked(stack: &Stack<'_>, timeout: Duration, deadline: Instant) -> Result<Started> {
    let project = &stack.project.name;
    // The color and release the cluster records, else blue from the
    // compose file: a restarted stack serves what it served.
    let mut recorded = super::state::read(stack.engine, project).await?;
    let active = recorded.active.unwrap_or(Color::Blue);
    let release = match recorded.releases.get(&active) {
        Some(release) => release.clone(),
        None => stack.default_release(active).await?,
    };
    let services = plan::services(stack.compose, active)?;
    // Grafana's password is made before its file becomes a secret.
    stack.ensure_secrets().await?;
    let (mut specs, grants, home) = plan_all(stack, &services, &recorded, active, &release).await?;

    for service in &services {
        for network in &service.networks {
            let name = network_name(project, &network.name);
            let mut overlay = stack
                .compose
                .networks
                .get(&network.name)
                .cloned()
                .unwrap_or(crate::compose::Network {
                    driver: None,
                    internal: false,
                    labels: Default::default(),
                    ipam: None,
                });
            overlay.driver = Some("overlay".to_owned());
            stack
                .engine
                .ensure_network(&name, &overlay, stack_labels(project))
                .await?;
        }
    }
    let configs = make_nginx_configs(stack, active).await?;
    let lb = service_name(project, LB_SERVICE);
    for spec in specs.iter_mut().filter(|spec| spec.name == lb) {
        spec.configs.extend(configs.iter().cloned());
    }
    for (spec, grants) in specs.iter_mut().zip(&grants) {
        give_grants(stack.engine, project, spec, grants).await?;
    }
    label_digests(&mut specs, home.as_deref());
    // A restore killed after it scaled redis to 0 leaves it there, perhaps
    // with its scratch redis on the volume: the scratch goes first, then
    // redis gets its count back.
    sweep_scratches(stack, project).await?;
    restore_scaled_down(stack, &specs).await?;
    let mut created = Vec::new();
    let result = create_and_wait(stack, &specs, &mut created, deadline, timeout).await;
    let replaced = match result {
        Ok(()) => {
            let home = home.as_deref();
            replace_changed(stack, &specs, &created, home, deadline, timeout).await
        }
        Err(err) => Err(err),
    };
    let replaced = match replaced {
        Ok(replaced) => replaced,
        Err(err) => {
            for name in created.iter().rev() {
                if let Err(undo) = stack.engine.remove_service(name).await {
                    stack.printer.warn(format!("{undo:#}"));
                }
            }
            return Err(err);
        }
    };
    // Every edge serves the recorded color alone, as on one engine.
    let (active, ended) =
        super::switch::end_left(stack, &mut recorded, active, CANARY_DRAIN).await?;
    // The edges may serve another color than the record said (a canary
    // deploy cut short after its flip): its release is the one to tell.
    let version = recorded
        .releases
        .get(&active)
        .map_or(release.version.clone(), |r| r.version.clone());
    if recorded.active.is_none() {
        record_first(stack, recorded, active, &release).await;
    }
    Ok(Started {
        active,
        version,
        created,
        replaced,
        services: specs.into_iter().map(|s| s.name).collect(),
        ended_canary: ended.map(|live| live.canary),
    })
}

/// Every service's spec and the grants it needs, planned before anything
/// is made: what the swarm cannot run is refused while nothing has
/// changed. A service with a volume is pinned to the manager's node (its
/// data lives there); the active color runs as many tasks as the last
/// switch gave it.
async fn plan_all(
    stack: &Stack<'_>,
    services: &[&crate::compose::Service],
    recorded: &super::state::ClusterState,
    active: Color,
    release: &crate::stack::Release,
) -> Result<(Vec<ServiceSpec>, Vec<Vec<GrantPlan>>, Option<String>)> {
    let home = stack.engine.membership().await?.node_id;
    let mut specs = Vec::new();
    let mut grants = Vec::new();
    for service in services {
        let planned = service_spec(
            &stack.project.name,
            &stack.project.dir,
            stack.compose,
            service,
            release,
            home.as_deref(),
        )?;
        for warning in planned.warnings {
            stack.printer.warn_once(warning);
        }
        let mut spec = planned.spec;
        if let Some(&replicas) = recorded.replicas.get(&active)
            && Color::of_service(&service.name) == Some(active)
        {
            spec.mode = ServiceMode::Replicated(u64::from(replicas));
        }
        specs.push(spec);
        grants.push(planned.grants);
    }
    Ok((specs, grants, home))
}

/// Labels each spec with its digest ([`SPEC_DIGEST_LABEL`]), leaving out
/// what two plans of one unchanged compose file may differ in: nginx's
/// seed upstream (it names the color served) and the pin to the node of
/// `home`, the manager this `start` talks to (another manager's `start`
/// must not move redis off its volume).
fn label_digests(specs: &mut [ServiceSpec], home: Option<&str>) {
    let seed = format!("{}/{}", plan::SEED_DIR, crate::nginx::UPSTREAM_FILE);
    let pin = home.map(|node| format!("node.id=={node}"));
    let volatile: Vec<&str> = [Some(seed.as_str()), pin.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    for spec in specs {
        let digest = spec_digest(spec, &volatile);
        spec.labels.insert(SPEC_DIGEST_LABEL.to_owned(), digest);
    }
}

/// Why service `spec` that exists must be given `spec`: its digest label
/// differs (the compose file, nginx's files, a secret or a config
/// changed) or it has none (made by a cryptus before the label). `None`
/// for the colors, which run the release a switch gave them, as on one
/// engine, and for a service that matches.
fn stale(spec: &ServiceSpec, existing: &[Service]) -> Option<String> {
    if Color::of_service(spec.name.rsplit('_').next().unwrap_or_default()).is_some() {
        return None;
    }
    let service = existing.iter().find(|s| s.name == spec.name)?;
    match service.labels.get(SPEC_DIGEST_LABEL) {
        Some(digest) if Some(digest) == spec.labels.get(SPEC_DIGEST_LABEL) => None,
        Some(_) => Some("its compose file, nginx's files, a secret or a config changed".to_owned()),
        None => Some("made by a cryptus that did not record its spec".to_owned()),
    }
}

/// Gives every service that existed before this run ([`stale`]) the spec
/// planned now, one service after the other, each one task at a time
/// (stop-first: a volume or a host port is not shared), waiting until its
/// tasks are new ones, running; a new task that fails makes the swarm put
/// the service back, and the run fails.
async fn replace_changed(
    stack: &Stack<'_>,
    specs: &[ServiceSpec],
    created: &[String],
    home: Option<&str>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<Replaced>> {
    let project = &stack.project.name;
    let existing = stack.engine.services(project).await?;
    let auto_pin = home.map(|node| format!("node.id=={node}"));
    let mut replaced = Vec::new();
    for spec in specs.iter().filter(|s| !created.contains(&s.name)) {
        let Some(why) = stale(spec, &existing) else {
            continue;
        };
        crate::interrupt::check()?;
        let step = stack
            .printer
            .step(format!("replacing the tasks of {} ({why})", spec.name));
        let replace = super::restart::Replace {
            service: &spec.name,
            change: super::restart::Change::Respec(spec, auto_pin.as_deref()),
            deadline,
            timeout,
            follower: None,
        };
        let (_, after) = replace.run(stack.engine, project).await?;
        step.done_with(format!("{} new task(s)", after.len()));
        replaced.push(Replaced {
            service: spec.name.clone(),
            why,
        });
    }
    Ok(replaced)
}

/// The first start on a swarm records what it serves, for `status`, the
/// next `start` and the switch; a failure is a warning (the stack runs).
async fn record_first(
    stack: &Stack<'_>,
    mut state: super::state::ClusterState,
    active: Color,
    release: &crate::stack::Release,
) {
    state.active = Some(active);
    state.releases.insert(active, release.clone());
    let project = &stack.project.name;
    if let Err(err) = super::state::write(stack.engine, project, &mut state).await {
        stack
            .printer
            .warn(format!("recording the active color on the swarm: {err:#}"));
    }
}

/// Removes a scratch redis a killed backup or restore left on any node
/// whose engine cryptus knows: it runs beside redis, on redis's node.
async fn sweep_scratches(stack: &Stack<'_>, project: &str) -> Result<()> {
    let membership = stack.engine.membership().await?;
    let (engines, missed) = NodeEngines::from_env(stack.engine, &membership)?
        .known()
        .await?;
    for why in missed {
        stack
            .printer
            .warn(format!("a scratch redis there is not looked for: {why}"));
    }
    for engine in &engines {
        crate::redis::sweep_scratch(engine, project, stack.printer).await?;
    }
    Ok(())
}

/// Gives redis's service its planned count again where it runs none (a
/// restore stopped it and did not end), once nothing runs on its volume.
async fn restore_scaled_down(stack: &Stack<'_>, specs: &[ServiceSpec]) -> Result<()> {
    let project = &stack.project.name;
    let redis = service_name(project, REDIS_SERVICE);
    let Some(ServiceMode::Replicated(wanted)) = specs
        .iter()
        .find(|spec| spec.name == redis)
        .map(|spec| spec.mode)
    else {
        return Ok(());
    };
    let services = stack.engine.services(project).await?;
    let stopped = services
        .iter()
        .any(|s| s.name == redis && s.replicas == Some(0));
    if !stopped || wanted == 0 {
        return Ok(());
    }
    stack.printer.warn(format!(
        "{redis} ran no task (an interrupted restore stops it): giving it {wanted} again"
    ));
    stack.engine.scale_service(&redis, wanted).await?;
    Ok(())
}

async fn create_and_wait(
    stack: &Stack<'_>,
    specs: &[ServiceSpec],
    created: &mut Vec<String>,
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    for spec in specs {
        crate::interrupt::check()?;
        if stack.engine.create_service(spec).await? {
            stack.printer.info(format!("created service {}", spec.name));
            created.push(spec.name.clone());
        }
    }
    let step = stack.printer.step("waiting for every task to run");
    let project = stack.project.name.clone();
    wait::until(
        Limits::until(deadline, POLL),
        || async {
            crate::interrupt::check()?;
            let tasks = stack.engine.tasks(&project).await?;
            let services = stack.engine.services(&project).await?;
            let waiting: Vec<String> = specs
                .iter()
                .filter_map(|spec| {
                    not_running(spec, &wanted_running(&services, &tasks, &spec.name))
                })
                .collect();
            Ok(if waiting.is_empty() {
                Seen::Ready(())
            } else {
                Seen::Not(waiting.join("; "))
            })
        },
        |last| {
            failed_with_hint(
                format!(
                    "the stack did not come up within {}: {last}",
                    crate::output::uptime(timeout)
                ),
                "`cryptus status` shows each task, its node and its error; \
                 `docker service ps --no-trunc SERVICE` on the manager tells more",
            )
        },
    )
    .await?;
    step.done();
    Ok(())
}

/// The tasks of service `name` the swarm wants running (not those it
/// shut down or replaced).
pub(super) fn wanted_running<'t>(
    services: &[Service],
    tasks: &'t [Task],
    name: &str,
) -> Vec<&'t Task> {
    let id = services.iter().find(|s| s.name == name).map(|s| &s.id);
    tasks
        .iter()
        .filter(|t| Some(&t.service_id) == id && t.desired_state == "running")
        .collect()
}

/// What a service still lacks: `None` once every task it asks for runs.
pub(super) fn not_running(spec: &ServiceSpec, tasks: &[&Task]) -> Option<String> {
    let wanted = match spec.mode {
        ServiceMode::Replicated(replicas) => usize::try_from(replicas).unwrap_or(usize::MAX),
        // One per eligible node: as many as the swarm scheduled, at least one.
        ServiceMode::Global => tasks.len().max(1),
        // Not started as a service that keeps running.
        ServiceMode::Job => 1,
    };
    short_of(&spec.name, wanted, tasks)
}

/// What service `name` lacks to run `wanted` of `tasks` (those the swarm
/// wants running): `None` once they run, else the count and the first
/// waiting task's state and error. A task with a healthcheck runs once
/// healthy: the swarm starts it as `starting` until then.
pub(super) fn short_of(name: &str, wanted: usize, tasks: &[&Task]) -> Option<String> {
    let running = tasks.iter().filter(|t| t.state == "running").count();
    if running >= wanted {
        return None;
    }
    let mut text = format!("{name} {running}/{wanted} running");
    if let Some(task) = tasks.iter().find(|t| t.state != "running") {
        text.push_str(&format!(" ({}", task.state));
        if let Some(error) = &task.error {
            text.push_str(&format!(": {error}"));
        }
        text.push(')');
    }
    Some(text)
}

/// Makes the secrets and configs `grants` plans (unless they exist: their
/// names say what they hold) and gives them to `spec`'s tasks.
pub async fn give_grants(
    engine: &Engine,
    project: &str,
    spec: &mut ServiceSpec,
    grants: &[GrantPlan],
) -> Result<()> {
    for grant in grants {
        let labels = stack_labels(project);
        let id = match grant.kind {
            Kind::Secret => {
                engine
                    .ensure_secret(&grant.name, &grant.data, labels)
                    .await?
            }
            Kind::Config => {
                engine
                    .ensure_config(&grant.name, &grant.data, labels)
                    .await?
            }
        };
        let file = SwarmFile {
            uid: grant.uid,
            gid: grant.gid,
            mode: grant.mode,
            ..SwarmFile::new(grant.name.clone(), id, grant.target.clone())
        };
        match grant.kind {
            Kind::Secret => spec.secrets.push(file),
            Kind::Config => spec.configs.push(file),
        }
    }
    Ok(())
}

/// nginx's configs, made unless they exist (their names say what they hold).
async fn make_nginx_configs(stack: &Stack<'_>, active: Color) -> Result<Vec<SwarmFile>> {
    let project = &stack.project.name;
    let dir = stack.project.dir.join("nginx");
    let mut files = Vec::new();
    for name in NGINX_FILES {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.push((name, text));
    }
    // Rendered for an nginx that has every directive cryptus uses; the
    // task's entrypoint takes out what its own nginx lacks (SEED_SCRIPT).
    let http = lb::http_file(stack.compose, &stack.project.dir, true)?;
    let mut made = Vec::new();
    for config in nginx_configs(project, active, &files, http)? {
        let id = stack
            .engine
            .ensure_config(&config.name, config.data.as_bytes(), stack_labels(project))
            .await?;
        made.push(SwarmFile::new(config.name, id, config.target));
    }
    Ok(made)
}

/// Removes the stack's services (nginx first, so no request reaches an app
/// that is going), then, once their tasks are gone, its networks, configs
/// and secrets, which no service uses any more. Needs no compose file: the
/// stack's labels name everything.
pub async fn stop(
    engine: &Engine,
    project: &str,
    timeout: Option<Duration>,
    printer: &Printer,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout.unwrap_or(STOP_DEADLINE);
    let mut services = engine.services(project).await?;
    services.sort_by_key(|s| !s.name.ends_with(&format!("_{}", crate::stack::LB_SERVICE)));
    let step = printer.step(format!("removing the services of stack {project}"));
    let mut removed = Vec::new();
    for service in &services {
        engine.remove_service(&service.name).await?;
        removed.push(service.name.clone());
    }
    if removed.is_empty() {
        step.done_with("nothing was running");
    } else {
        step.done_with(format!("removed {}", removed.join(", ")));
    }
    // A network is in use until every task's container on every node is
    // gone; the manager refuses to remove it until then.
    for network in engine.stack_networks(project).await? {
        let name = network.clone();
        wait::until(
            Limits::until(deadline, POLL),
            || async {
                if let Err(err) = engine.remove_network(&name).await {
                    return Ok(Seen::Not(format!("{err:#}")));
                }
                // The manager lists a removed overlay until its own copy is
                // gone; a `start` meanwhile would take it for one that exists.
                let listed = engine.stack_networks(project).await?;
                Ok(if listed.contains(&name) {
                    Seen::Not("removed, but the manager still lists it".to_owned())
                } else {
                    Seen::Ready(())
                })
            },
            |last| {
                failed_with_hint(
                    format!("network {network} is still in use: {last}"),
                    "the stack's tasks are still stopping; run `cryptus stop` again",
                )
            },
        )
        .await?;
    }
    for config in engine.configs(project).await? {
        engine.remove_config(&config).await?;
    }
    for secret in engine.secrets(project).await? {
        engine.remove_secret(&secret).await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: ServiceMode) -> ServiceSpec {
        ServiceSpec::plain("shop_cryptus-blue", mode)
    }

    #[test]
    fn start_replaces_a_service_whose_spec_digest_changed_but_never_a_color() {
        let labelled = |name: &str, digest: Option<&str>| {
            let mut spec = ServiceSpec::plain(name, ServiceMode::Replicated(1));
            if let Some(digest) = digest {
                spec.labels.insert(SPEC_DIGEST_LABEL.into(), digest.into());
            }
            spec
        };
        let running = |spec: &ServiceSpec| Service {
            id: "id".into(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            replicas: Some(1),
            image: "x:1".into(),
        };
        let existing = [
            running(&labelled("shop_redis", Some("d1"))),
            running(&labelled("shop_nginx", None)),
            running(&labelled("shop_cryptus-blue", Some("d1"))),
        ];
        assert_eq!(stale(&labelled("shop_redis", Some("d1")), &existing), None);
        let changed = stale(&labelled("shop_redis", Some("d2")), &existing);
        assert!(changed.is_some_and(|why| why.contains("changed")));
        let unlabelled = stale(&labelled("shop_nginx", Some("d1")), &existing);
        assert!(unlabelled.is_some_and(|why| why.contains("did not record")));
        assert_eq!(
            stale(&labelled("shop_cryptus-blue", Some("d2")), &existing),
            None
        );
        assert_eq!(stale(&labelled("shop_other", Some("d2")), &existing), None);
    }

    fn task(state: &str, error: Option<&str>) -> Task {
        Task {
            id: "t".into(),
            service_id: "s".into(),
            slot: Some(1),
            node_id: None,
            state: state.into(),
            desired_state: "running".into(),
            error: error.map(str::to_owned),
            container_id: None,
            exit_code: None,
            image: "app:1".into(),
        }
    }

    #[test]
    fn a_service_waits_until_all_its_tasks_run_and_says_why_not() {
        let running = task("running", None);
        let pending = task("pending", Some("no suitable node"));
        let three = spec(ServiceMode::Replicated(3));
        assert_eq!(
            not_running(&three, &[&running, &pending]).as_deref(),
            Some("shop_cryptus-blue 1/3 running (pending: no suitable node)")
        );
        assert_eq!(not_running(&three, &[&running, &running, &running]), None);
        let global = spec(ServiceMode::Global);
        assert_eq!(
            not_running(&global, &[]).as_deref(),
            Some("shop_cryptus-blue 0/1 running")
        );
        assert_eq!(not_running(&global, &[&running, &running]), None);
        assert!(not_running(&global, &[&running, &pending]).is_some());
    }
}
