//! `restart` on a Swarm: a rolling restart that keeps serving, not a stop
//! and a start. Under the cluster's deploy lock, each service of the stack
//! gets new tasks of the same spec, one task at a time (a forced service
//! update), and the run waits until every task it asks for is a new one,
//! running (healthy, with a healthcheck), under `--timeout`:
//!
//! - the services that are no color and no edge (redis, and the
//!   monitoring services) first, as `start` orders them; one that keeps
//!   data in a named volume stops its old task before the new one starts,
//!   the others start the new one first (see [`plan`]);
//! - the colors that run tasks, start-first: a new task enters
//!   `tasks.<service>` once healthy, and an old one leaves the name before
//!   it is stopped, so nginx, which re-resolves the name every second,
//!   always has a task to send a request to;
//! - nginx last, reloaded in place rather than replaced: its port is
//!   published on its node, so a new task could bind it only once the old
//!   one let it go, and connections in between would be refused. A reload
//!   starts new workers on the same files and lets the old ones finish.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use crate::compose::{Compose, MountKind};
use crate::context::Stack;
use crate::engine::{Engine, Service, ServiceSpec, Task, UpdateOrder};
use crate::error::failed_with_hint;

use crate::stack::{Color, LB_SERVICE};
use crate::wait::{self, Limits, Seen};

use super::compose_service;
use super::edge::{Edge, Edges, Follower};
use super::up::{short_of, wanted_running};

/// How often the tasks are looked at while a service restarts.
const POLL: Duration = Duration::from_millis(500);

/// What the restart does to one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// New tasks, one at a time, in this order.
    Replace(UpdateOrder),
    /// nginx: `nginx -t`, then a graceful reload.
    Reload,
}

/// One step of the plan: a stack service (`<project>_<service>`) and how
/// it restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub service: String,
    pub how: How,
}

/// How one service was restarted: the tasks it ran before, and after.
#[derive(Debug, Serialize)]
pub struct Restarted {
    /// The compose service.
    pub service: String,
    pub how: How,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub project: String,
    /// The color served before and after, as the cluster records it.
    pub active: Option<Color>,
    pub version: Option<String>,
    /// In the order they were restarted.
    pub services: Vec<Restarted>,
}

/// The restart's steps, from the services that exist: those running no
/// task are left alone (a color at 0 tasks); the others first, then the
/// colors, then nginx. Pure: the order and how each restarts.
pub fn plan(project: &str, compose: &Compose, services: &[Service]) -> Vec<Step> {
    let rank = |name: &str| match compose_service(project, name) {
        Some(LB_SERVICE) => 2,
        Some(service) if Color::of_service(service).is_some() => 1,
        _ => 0,
    };
    // A hook's job (one a killed run left) is no service to restart: a
    // forced update would run the hook again.
    let mut running: Vec<&Service> = services
        .iter()
        .filter(|s| s.replicas != Some(0) && !s.labels.contains_key(crate::stack::HOOK_LABEL))
        .collect();
    // Stable: within a rank, the order the engine lists them (by name).
    running.sort_by_key(|s| rank(&s.name));
    running
        .into_iter()
        .map(|s| {
            let how = match compose_service(project, &s.name) {
                Some(LB_SERVICE) => How::Reload,
                Some(service) if Color::of_service(service).is_some() => {
                    How::Replace(UpdateOrder::StartFirst)
                }
                // No state of its own (nginx-exporter, redis-exporter):
                // the new task serves before the old one stops.
                Some(service)
                    if compose.service(service).is_some() && !keeps_data(compose, service) =>
                {
                    How::Replace(UpdateOrder::StartFirst)
                }
                // A named volume lives on one node, and the service is
                // pinned there with it (`plan::service_spec`): a new task
                // started first would run beside the old one on that node,
                // on the same files. Two redis would both write the dump;
                // a second Prometheus cannot take its TSDB's lock and
                // fails, which pauses the update; Alertmanager and Grafana
                // would write the same state from two processes. So the
                // old task stops first, as it does for a service the file
                // no longer declares (its volumes unknown).
                _ => How::Replace(UpdateOrder::StopFirst),
            };
            Step {
                service: s.name.clone(),
                how,
            }
        })
        .collect()
}

/// Whether a compose service keeps data of its own: in a named volume, or
/// in a writable bind of a node's path other than those every node has
/// (`/srv/grafana`: two tasks on that node would write the same files).
fn keeps_data(compose: &Compose, service: &str) -> bool {
    compose.service(service).is_some_and(|s| {
        s.mounts.iter().any(|m| match m.kind {
            MountKind::Volume => !m.source.is_empty(),
            MountKind::Bind => {
                !m.read_only && !super::plan::NODE_PATHS.contains(&m.source.as_str())
            }
            MountKind::Tmpfs => false,
        })
    })
}

/// Restarts the stack on the swarm under the cluster's deploy lock.
pub async fn run(stack: &Stack<'_>, timeout: Duration) -> Result<Report> {
    crate::interrupt::catch();
    super::up::under_lock(stack, "restart", timeout, restart_locked(stack, timeout)).await
}

/// [`run`], holding the lock.
async fn restart_locked(stack: &Stack<'_>, timeout: Duration) -> Result<Report> {
    // The time to restart in counts from when the lock is held: a wait
    // for it does not cut a restart short half-way through its services.
    let deadline = Instant::now() + timeout;
    let (engine, project) = (stack.engine, &stack.project.name);
    // The edge is found first: a stack that does not run is refused
    // before any service changes.
    let edges = Edges::find(engine, project).await?;
    let recorded = super::state::read(engine, project).await?;
    let services = engine.services(project).await?;
    let mut report = Report {
        ok: true,
        project: project.clone(),
        active: recorded.active,
        version: recorded
            .active
            .and_then(|color| recorded.releases.get(&color))
            .map(|release| release.version.clone()),
        services: Vec::new(),
    };
    for step in plan(project, stack.compose, &services) {
        crate::interrupt::check()?;
        let shown = compose_service(project, &step.service)
            .unwrap_or(&step.service)
            .to_owned();
        let restarted = match step.how {
            How::Reload => {
                let progress = stack.printer.step(format!("reloading {shown}"));
                reload(&edges).await?;
                progress.done();
                Restarted {
                    service: shown,
                    how: step.how,
                    before: Vec::new(),
                    after: Vec::new(),
                }
            }
            How::Replace(order) => {
                let progress = stack.printer.step(format!(
                    "restarting {shown} ({}, one task at a time)",
                    order_name(order)
                ));
                // An nginx without `resolve` is re-pinned as the active
                // color's tasks are replaced.
                let active = recorded
                    .active
                    .filter(|color| step.service == super::service_name(project, color.service()));
                let follower = match active {
                    Some(color) => Follower::new(&edges, color).await,
                    None => None,
                };
                let replaced = Replace {
                    service: &step.service,
                    change: Change::Restart(order),
                    deadline,
                    timeout,
                    follower: follower.as_ref(),
                };
                let (before, after) = replaced.run(engine, project).await?;
                progress.done_with(format!("{} new task(s)", after.len()));
                Restarted {
                    service: shown,
                    how: step.how,
                    before,
                    after,
                }
            }
        };
        report.services.push(restarted);
    }
    Ok(report)
}

fn order_name(order: UpdateOrder) -> &'static str {
    match order {
        UpdateOrder::StartFirst => "start-first",
        UpdateOrder::StopFirst => "stop-first",
    }
}

/// `nginx -t` in every edge task, then, only once every one passes, a
/// graceful reload of each.
async fn reload(edges: &Edges) -> Result<()> {
    let tested = futures_util::future::join_all(edges.all.iter().map(test)).await;
    for result in tested {
        result?;
    }
    let reloaded = futures_util::future::join_all(edges.all.iter().map(|e| async move {
        e.nginx()
            .reload()
            .await
            .with_context(|| format!("reloading nginx in {} on {}", e.container, e.node))
    }))
    .await;
    reloaded
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(|_| ())
}

/// `nginx -t` in one edge: its configuration must pass before any reload.
async fn test(edge: &Edge) -> Result<()> {
    if let Err(why) = edge.nginx().test().await? {
        return Err(failed_with_hint(
            format!(
                "nginx in {} on {} rejects its configuration, so no edge was reloaded: {why}",
                edge.container, edge.node
            ),
            "`cryptus health` shows it; the files are the swarm's configs and its state volume",
        ));
    }
    Ok(())
}

/// The ids of the tasks of `service` the swarm wants running.
fn current(services: &[Service], tasks: &[Task], service: &str) -> Vec<String> {
    wanted_running(services, tasks, service)
        .into_iter()
        .map(|t| t.id.clone())
        .collect()
}

/// What gives a service its new tasks.
#[derive(Clone, Copy)]
pub(super) enum Change<'r> {
    /// The same spec, in this order (`restart`).
    Restart(UpdateOrder),
    /// This spec, one task at a time, stop-first, with the pin the planner
    /// gave it to the manager's node, if any ([`Engine::replace_service`]).
    Respec(&'r ServiceSpec, Option<&'r str>),
}

/// One service to give new tasks.
pub(super) struct Replace<'r> {
    pub service: &'r str,
    pub change: Change<'r>,
    pub deadline: Instant,
    pub timeout: Duration,
    /// Edges to re-pin as the tasks change, for the active color.
    pub follower: Option<&'r Follower<'r>>,
}

impl Replace<'_> {
    /// Gives `service` new tasks as `change` says and waits until every
    /// task it asks for is a new one, running; a paused or rolled-back
    /// update fails at once with the swarm's message. The tasks before and
    /// after.
    pub async fn run(&self, engine: &Engine, project: &str) -> Result<(Vec<String>, Vec<String>)> {
        let Replace {
            service,
            change,
            deadline,
            timeout,
            follower,
        } = *self;
        let (services, tasks) = tokio::try_join!(engine.services(project), engine.tasks(project))?;
        let before = current(&services, &tasks, service);
        let asked = match change {
            Change::Restart(order) => engine.restart_service(service, order).await?,
            Change::Respec(spec, auto_pin) => engine.replace_service(spec, auto_pin).await?,
        };
        if !asked {
            return Err(failed_with_hint(
                format!("service {service} went away while its tasks were replaced"),
                "another tool changes the stack; `cryptus status` shows it",
            ));
        }
        let old: BTreeSet<&str> = before.iter().map(String::as_str).collect();
        let after = wait::until(
        Limits::until(deadline, POLL),
        || async {
            crate::interrupt::check()?;
            let update = engine.update_state(service).await?;
            if let Some((state, message)) = &update
                && (state == "paused" || state.starts_with("rollback"))
            {
                return Err(failed_with_hint(
                    format!("the swarm stopped replacing the tasks of {service} ({state}): {message}"),
                    format!(
                        "the tasks not yet replaced still run; `docker service ps --no-trunc {service}` on the manager tells why"
                    ),
                ));
            }
            if let Some(follower) = follower {
                follower.look_or_warn().await;
            }
            let (services, tasks) =
                tokio::try_join!(engine.services(project), engine.tasks(project))?;
            // A new spec is watched by the swarm for a while after its last
            // task starts (and put back if one fails then): done once the
            // swarm says so.
            let watched = matches!(change, Change::Respec(..))
                && update.as_ref().is_none_or(|(state, _)| state != "completed");
            Ok(match still_old(&services, &tasks, service, &old) {
                Some(why) => Seen::Not(why),
                None if watched => Seen::Not(format!(
                    "{service}: the swarm still watches its new tasks"
                )),
                None => Seen::Ready(current(&services, &tasks, service)),
            })
        },
        |last| {
            failed_with_hint(
                format!(
                    "{service} did not get its new tasks within {}: {last}",
                    crate::output::uptime(timeout)
                ),
                format!(
                    "the swarm goes on replacing its tasks; `cryptus status` shows each task; `docker service ps --no-trunc {service}` tells more"
                ),
            )
        },
    )
    .await?;
        if let Some(follower) = follower {
            follower.settle(after.len()).await;
        }
        Ok((before, after))
    }
}

/// What `service` lacks to be restarted: `None` once the tasks the swarm
/// wants running are as many as it asks for, all running, none of them
/// one of `old`.
fn still_old(
    services: &[Service],
    tasks: &[Task],
    service: &str,
    old: &BTreeSet<&str>,
) -> Option<String> {
    let wanted_tasks = wanted_running(services, tasks, service);
    let Some(found) = services.iter().find(|s| s.name == service) else {
        return Some(format!("{service} is gone"));
    };
    let wanted = match found.replicas {
        Some(replicas) => usize::try_from(replicas).unwrap_or(usize::MAX),
        // Global: one per node the swarm scheduled.
        None => wanted_tasks.len().max(1),
    };
    let waiting = wanted_tasks
        .iter()
        .filter(|t| old.contains(t.id.as_str()))
        .count();
    if waiting > 0 {
        return Some(format!("{service}: {waiting} old task(s) still to replace"));
    }
    short_of(service, wanted, &wanted_tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, replicas: Option<u64>) -> Service {
        Service {
            id: name.into(),
            name: format!("shop_{name}"),
            labels: Default::default(),
            replicas,
            image: "x:1".into(),
        }
    }

    const START: How = How::Replace(UpdateOrder::StartFirst);
    const STOP: How = How::Replace(UpdateOrder::StopFirst);

    /// The plan's steps, each service with how it restarts.
    fn steps_of(compose: &Compose, services: &[Service]) -> Vec<(String, How)> {
        plan("shop", compose, services)
            .into_iter()
            .map(|s| (s.service, s.how))
            .collect()
    }

    #[test]
    fn the_colors_start_first_a_volume_stops_first_and_nginx_reloads_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        std::fs::write(
            &file,
            "services:\n  redis: {image: redis:7, volumes: [data:/data]}\n  cache: {image: memcached:1}\n\
             \x20 cryptus-blue: {image: app:1}\n  cryptus-green: {image: app:1}\n  nginx: {image: nginx:1}\n\
             volumes:\n  data: {}\n",
        )
        .unwrap();
        let compose = crate::compose::load(&[file], &Default::default()).unwrap();
        let services = [
            service("cache", Some(1)),
            service("cryptus-blue", Some(3)),
            service("cryptus-green", Some(0)),
            service("nginx", None),
            service("old", Some(1)),
            service("redis", Some(1)),
        ];
        let steps = steps_of(&compose, &services);
        let (start, stop) = (START, STOP);
        assert_eq!(
            steps,
            [
                ("shop_cache".to_owned(), start),
                ("shop_old".to_owned(), stop),
                ("shop_redis".to_owned(), stop),
                ("shop_cryptus-blue".to_owned(), start),
                ("shop_nginx".to_owned(), How::Reload),
            ],
            "green at 0 tasks is left alone"
        );
    }

    /// The shipped monitoring services: those that keep data in a volume
    /// (pinned to one node with it) stop first, the exporters start first.
    #[test]
    fn the_monitoring_services_with_a_volume_stop_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("compose")).unwrap();
        let file = dir.path().join("compose/docker-compose.monitoring.yml");
        // The stack's file declares the network the monitoring file joins.
        let text = include_str!("../../compose/docker-compose.monitoring.yml");
        std::fs::write(&file, format!("{text}\nnetworks:\n  cryptus: {{}}\n")).unwrap();
        let compose = crate::compose::load(&[file], &Default::default()).unwrap();
        let names = [
            "alertmanager",
            "cadvisor",
            "grafana",
            "nginx-exporter",
            "node-exporter",
            "prometheus",
            "redis-exporter",
        ];
        let services: Vec<Service> = names.iter().map(|n| service(n, Some(1))).collect();
        let steps = steps_of(&compose, &services);
        let (start, stop) = (START, STOP);
        let expected: Vec<(String, How)> = names
            .iter()
            .zip([stop, start, stop, start, stop, stop, start])
            .map(|(name, how)| (format!("shop_{name}"), how))
            .collect();
        assert_eq!(steps, expected);
    }

    #[test]
    fn a_writable_bind_of_a_nodes_own_data_stops_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        let text = "services:\n  grafana:\n    image: g:1\n    volumes: [/srv/grafana:/var/lib/grafana]\n\
                    \x20 agent:\n    image: a:1\n    volumes: [/var/run/docker.sock:/var/run/docker.sock, /srv/conf:/conf:ro]\n";
        std::fs::write(&file, text).unwrap();
        let compose = crate::compose::load(&[file], &Default::default()).unwrap();
        let services: Vec<Service> = ["agent", "grafana"]
            .iter()
            .map(|n| service(n, Some(1)))
            .collect();
        assert_eq!(
            steps_of(&compose, &services),
            [
                ("shop_agent".to_owned(), START),
                ("shop_grafana".to_owned(), STOP)
            ]
        );
    }

    #[test]
    fn a_service_is_restarted_once_every_task_is_new_and_running() {
        let services = [service("cryptus-blue", Some(2))];
        let task = |id: &str, state: &str, desired: &str| Task {
            id: id.into(),
            service_id: "cryptus-blue".into(),
            slot: Some(1),
            node_id: None,
            state: state.into(),
            desired_state: desired.into(),
            error: None,
            container_id: None,
            exit_code: None,
            image: "x:1".into(),
        };
        let old = BTreeSet::from(["a", "b"]);
        let name = "shop_cryptus-blue";
        let midway = [
            task("a", "shutdown", "shutdown"),
            task("b", "running", "running"),
            task("c", "running", "running"),
        ];
        assert_eq!(
            still_old(&services, &midway, name, &old).as_deref(),
            Some("shop_cryptus-blue: 1 old task(s) still to replace")
        );
        let starting = [
            task("c", "running", "running"),
            task("d", "starting", "running"),
        ];
        assert_eq!(
            still_old(&services, &starting, name, &old).as_deref(),
            Some("shop_cryptus-blue 1/2 running (starting)")
        );
        let done = [
            task("a", "shutdown", "shutdown"),
            task("c", "running", "running"),
            task("d", "running", "running"),
        ];
        assert_eq!(still_old(&services, &done, name, &old), None);
        assert!(still_old(&[], &done, name, &old).is_some_and(|w| w.contains("gone")));
    }
}
