//! What `backup` and `restore` reach on a Swarm: the stack's running
//! tasks, each through the engine of the node it runs on ([`NodeEngines`]):
//! redis wherever it runs, the others where cryptus knows their node's
//! engine (the manager's, or one named in `CRYPTUS_SWARM_NODES`).

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use tokio::time::Instant;

use super::nodes::NodeEngines;
use super::state::ClusterState;
use super::{compose_service, service_name};
use crate::engine::{Container, Engine, Service, Task};
use crate::error::failed;
use crate::stack::REDIS_SERVICE;
use crate::wait::{self, Limits, Seen};

/// The containers of the stack's running tasks, each named by its compose
/// service as one engine's are and carrying its node's engine, a
/// service's tasks on the manager first. Redis is reached wherever it
/// runs: when its node's engine is not known, an error (exit 2) names the
/// setting. Another service's task on such a node is left out.
pub async fn task_containers(engine: &Engine, project: &str) -> Result<Vec<Container>> {
    let (membership, services, tasks) = tokio::try_join!(
        engine.membership(),
        engine.services(project),
        engine.tasks(project)
    )?;
    // Without its node's id, no task could be placed on a node.
    if membership.node_id.is_none() {
        return Err(failed("the manager's engine names no node of the swarm"));
    }
    let nodes = NodeEngines::from_env(engine, &membership)?;
    let found = running_tasks(project, &services, &tasks);
    let reached = try_join_all(found.iter().map(|&(service, node, id)| {
        let nodes = &nodes;
        async move {
            if service != REDIS_SERVICE && !nodes.reaches(node).await {
                return Ok(None);
            }
            let reached = nodes
                .task_container(node, id, "backup and restore copy redis's data")
                .await?;
            // A task ending between the list and the inspect is gone: skipped.
            Ok::<_, anyhow::Error>(reached.container.map(|mut container| {
                container.service = service.to_owned();
                if !reached.on_manager {
                    container.node_engine = Some(reached.engine);
                }
                (!reached.on_manager, container)
            }))
        }
    }))
    .await?;
    let mut containers: Vec<(bool, Container)> = reached.into_iter().flatten().collect();
    containers.sort_by(|(a_away, a), (b_away, b)| (&a.service, a_away).cmp(&(&b.service, b_away)));
    Ok(containers.into_iter().map(|(_, c)| c).collect())
}

/// Of the stack's running tasks, those placed with a container: the
/// compose service each stands for, its node's id and its container's id.
fn running_tasks<'t>(
    project: &str,
    services: &'t [Service],
    tasks: &'t [Task],
) -> Vec<(&'t str, &'t str, &'t str)> {
    tasks
        .iter()
        .filter(|t| t.state == "running")
        .filter_map(|task| {
            let service = services.iter().find(|s| s.id == task.service_id)?;
            Some((
                compose_service(project, &service.name)?,
                task.node_id.as_deref()?,
                task.container_id.as_deref()?,
            ))
        })
        .collect()
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
/// its service (scaled to 0, on the manager `engine`): a task container
/// stopped by hand would be replaced by the swarm, and the new one would
/// open the volume beside the scratch redis. Returns once `redis` (watched
/// through its node's engine) no longer runs.
pub async fn stop_redis(
    engine: &Engine,
    project: &str,
    redis: &Container,
    deadline: Instant,
) -> Result<()> {
    scale_redis(engine, project, 0).await?;
    let (node, container) = (redis.engine(engine), &redis.name);
    wait::until(
        Limits::until(deadline, POLL),
        || async {
            Ok(match node.inspect(container).await? {
                Some(c) if c.running => Seen::Not(format!("{container} is {}", c.state)),
                _ => Seen::Ready(()),
            })
        },
        |last| failed(format!("redis did not stop once scaled to 0: {last}")),
    )
    .await
}

/// Scales redis back to its one task and returns its new container once
/// it runs (its placement keeps it on its volume's node), with that
/// node's engine.
pub async fn start_redis(engine: &Engine, project: &str, deadline: Instant) -> Result<Container> {
    scale_redis(engine, project, 1).await?;
    wait::until(
        Limits::until(deadline, POLL),
        || async {
            let containers = task_containers(engine, project).await?;
            Ok(
                match containers.into_iter().find(|c| c.service == REDIS_SERVICE) {
                    Some(redis) => Seen::Ready(redis),
                    None => Seen::Not("no redis task runs yet".to_owned()),
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
    super::state::write(engine, project, &mut state).await?;
    // The history's counts in cryptus's metrics follow; the restore is
    // done whether they do or not.
    if let Err(err) = super::metrics::publish(engine, project, &state).await {
        tracing::warn!("{err:#}");
    }
    Ok(())
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
    fn running_tasks_are_found_on_every_node() {
        let services = [service("r", "shop_redis"), service("n", "shop_nginx")];
        let tasks = [
            task("1", "r", "w", "running"),
            task("2", "n", "m", "running"),
            task("3", "n", "w", "running"),
            task("4", "r", "m", "shutdown"),
        ];
        assert_eq!(
            running_tasks("shop", &services, &tasks),
            [
                ("redis", "w", "c-1"),
                ("nginx", "m", "c-2"),
                ("nginx", "w", "c-3")
            ]
        );
    }
}
