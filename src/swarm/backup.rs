//! What `backup` and `restore` reach on a Swarm: the stack's running tasks
//! whose containers are on the manager's engine (redis, pinned to that
//! node with its volume, and the edge nginx). A task on another node is
//! out of reach: exec and copies go through the manager's engine only.

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use tokio::time::Instant;

use super::state::ClusterState;
use super::{compose_service, service_name};
use crate::engine::{Container, Engine, Service, Task};
use crate::error::{failed, failed_with_hint};
use crate::stack::REDIS_SERVICE;
use crate::wait::{self, Limits, Seen};

/// The containers of the stack's running tasks on the manager's node, each
/// named by its compose service as one engine's are. Fails (exit 1) when
/// redis runs, but on a node the manager's engine is not.
pub async fn task_containers(engine: &Engine, project: &str) -> Result<Vec<Container>> {
    let (membership, services, tasks) = tokio::try_join!(
        engine.membership(),
        engine.services(project),
        engine.tasks(project)
    )?;
    // Without its node's id, every task would look out of reach.
    let manager = membership
        .node_id
        .ok_or_else(|| failed("the manager's engine names no node of the swarm"))?;
    check_redis_here(project, &services, &tasks, &manager)?;
    let found = reachable(project, &services, &tasks, &manager);
    let inspected = try_join_all(found.iter().map(|(_, id)| engine.inspect(id))).await?;
    let mut containers: Vec<Container> = found
        .iter()
        .zip(inspected)
        // A task ending between the list and the inspect is gone: skipped.
        .filter_map(|((service, _), container)| {
            container.map(|mut c| {
                c.service = (*service).to_owned();
                c
            })
        })
        .collect();
    containers.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(containers)
}

/// Of the stack's running tasks, those on `manager` with a container: the
/// compose service each stands for and its container's id.
fn reachable<'t>(
    project: &str,
    services: &'t [Service],
    tasks: &'t [Task],
    manager: &str,
) -> Vec<(&'t str, &'t str)> {
    tasks
        .iter()
        .filter(|t| t.state == "running" && t.node_id.as_deref() == Some(manager))
        .filter_map(|task| {
            let service = services.iter().find(|s| s.id == task.service_id)?;
            Some((
                compose_service(project, &service.name)?,
                task.container_id.as_deref()?,
            ))
        })
        .collect()
}

/// Redis's data is copied through the engine running its task: a redis
/// running elsewhere (its service edited by hand, or the manager changed)
/// cannot be backed up or restored from here.
fn check_redis_here(
    project: &str,
    services: &[Service],
    tasks: &[Task],
    manager: &str,
) -> Result<()> {
    let name = service_name(project, REDIS_SERVICE);
    let Some(service) = services.iter().find(|s| s.name == name) else {
        return Ok(());
    };
    let elsewhere = tasks.iter().any(|t| {
        t.service_id == service.id
            && t.state == "running"
            && t.node_id.as_deref().is_some_and(|node| node != manager)
    });
    if elsewhere {
        return Err(failed_with_hint(
            format!("{name} runs on a node other than this manager's, which cryptus cannot reach"),
            "point DOCKER_HOST at the manager on redis's node (`cryptus status` names it); redis is pinned there by `cryptus start`",
        ));
    }
    Ok(())
}

/// The cluster's state record (active color, releases, history) as a file
/// of the backup's state archive.
pub async fn state_file(engine: &Engine, project: &str) -> Result<(String, Vec<u8>)> {
    let state = super::state::read(engine, project).await?;
    let bytes = serde_json::to_vec_pretty(&state).context("encoding the cluster state")?;
    Ok((super::state::BACKUP_FILE.to_owned(), bytes))
}

/// How often redis's task is looked at while it stops or starts.
const POLL: Duration = Duration::from_millis(250);

/// Stops redis as the one-engine restore stops its container, but through
/// its service (scaled to 0): a task container stopped by hand would be
/// replaced by the swarm, and the new one would open the volume beside
/// the scratch redis. Returns once `container` no longer runs.
pub async fn stop_redis(
    engine: &Engine,
    project: &str,
    container: &str,
    deadline: Instant,
) -> Result<()> {
    scale_redis(engine, project, 0).await?;
    wait::until(
        Limits::until(deadline, POLL),
        || async {
            Ok(match engine.inspect(container).await? {
                Some(c) if c.running => Seen::Not(format!("{container} is {}", c.state)),
                _ => Seen::Ready(()),
            })
        },
        |last| failed(format!("redis did not stop once scaled to 0: {last}")),
    )
    .await
}

/// Scales redis back to its one task and returns its new container's name
/// once it runs on this node (its placement pins it here, to its volume).
pub async fn start_redis(engine: &Engine, project: &str, deadline: Instant) -> Result<String> {
    scale_redis(engine, project, 1).await?;
    wait::until(
        Limits::until(deadline, POLL),
        || async {
            let containers = task_containers(engine, project).await?;
            Ok(
                match containers.into_iter().find(|c| c.service == REDIS_SERVICE) {
                    Some(redis) => Seen::Ready(redis.name),
                    None => Seen::Not("no redis task runs on this node yet".to_owned()),
                },
            )
        },
        |last| failed(format!("redis did not start again: {last}")),
    )
    .await
}

async fn scale_redis(engine: &Engine, project: &str, replicas: u64) -> Result<()> {
    let name = service_name(project, REDIS_SERVICE);
    if engine.scale_service(&name, replicas).await? {
        Ok(())
    } else {
        Err(failed(format!("the swarm has no service {name}")))
    }
}

/// Puts the backup's switch history back into the cluster's state, as one
/// engine puts its history back into nginx's state. The active color,
/// releases and task counts stay as recorded now: they describe the
/// services that run, which a restore does not change.
pub async fn restore_history(engine: &Engine, project: &str, backed_up: &[u8]) -> Result<()> {
    let backed_up: ClusterState =
        serde_json::from_slice(backed_up).context("reading the backup's cluster state")?;
    let mut state = super::state::read(engine, project).await?;
    state.history = backed_up.history;
    super::state::write(engine, project, &mut state).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, service: &str, node: &str, state: &str) -> Task {
        Task {
            id: id.to_owned(),
            service_id: service.to_owned(),
            slot: Some(1),
            node_id: Some(node.to_owned()),
            state: state.to_owned(),
            desired_state: "running".to_owned(),
            error: None,
            container_id: Some(format!("c-{id}")),
            exit_code: None,
            image: "redis".to_owned(),
        }
    }

    fn service(id: &str, name: &str) -> Service {
        Service {
            id: id.to_owned(),
            name: name.to_owned(),
            labels: Default::default(),
            replicas: Some(1),
            image: "redis".to_owned(),
        }
    }

    #[test]
    fn only_running_tasks_on_the_manager_are_reached() {
        let services = [service("r", "shop_redis"), service("n", "shop_nginx")];
        let tasks = [
            task("1", "r", "m", "running"),
            task("2", "n", "m", "running"),
            task("3", "n", "w", "running"),
            task("4", "r", "m", "shutdown"),
        ];
        assert_eq!(
            reachable("shop", &services, &tasks, "m"),
            [("redis", "c-1"), ("nginx", "c-2")]
        );
        assert!(check_redis_here("shop", &services, &tasks, "m").is_ok());
    }

    #[test]
    fn redis_on_another_node_is_refused() {
        let services = [service("r", "shop_redis")];
        let tasks = [task("1", "r", "w", "running")];
        let err = check_redis_here("shop", &services, &tasks, "m").unwrap_err();
        assert!(format!("{err:#}").contains("shop_redis runs on a node other"));
    }
}
