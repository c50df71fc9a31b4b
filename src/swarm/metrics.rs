//! cryptus's own metrics on a Swarm: the record of the cluster (the
//! active color, each color's release, the kept history) rendered as on
//! one engine ([`crate::metrics::render`]) and written where node-exporter's
//! textfile collector reads them, in its task's container on whichever
//! node runs it (the manager's, as its volume pins it, unless the compose
//! file places it elsewhere).

use std::time::Duration;

use anyhow::{Context, Result};

use crate::engine::Engine;
use crate::metrics::{NODE_EXPORTER, TEXTFILE, TEXTFILE_DIR, render};
use crate::stack::Color;

use super::nodes::NodeEngines;
use super::service_name;
use super::state::ClusterState;

/// The longest writing the metrics may take: it runs at the end of a
/// switch, under the deploy lock.
const DEADLINE: Duration = Duration::from_secs(10);

/// Writes `state` for node-exporter when it runs on the swarm (nothing
/// when it does not), within [`DEADLINE`]. One task gets it, the
/// manager's, else the one on the node of the lowest id, so that the same
/// one gets it every time: each node-exporter that had it would export the
/// same series again (node-exporter's volume pins its one task to the
/// manager's node, unless the compose file places it otherwise).
pub async fn publish(engine: &Engine, project: &str, state: &ClusterState) -> Result<()> {
    tokio::time::timeout(DEADLINE, write(engine, project, state))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {DEADLINE:?}"))
        .and_then(|written| written)
        .context("writing cryptus's metrics for node-exporter")
}

async fn write(engine: &Engine, project: &str, state: &ClusterState) -> Result<()> {
    let name = service_name(project, NODE_EXPORTER);
    let (services, tasks) = tokio::try_join!(engine.services(project), engine.tasks(project))?;
    let Some(service) = services.iter().find(|s| s.name == name) else {
        return Ok(());
    };
    let mut running: Vec<(&str, &str)> = tasks
        .iter()
        .filter(|t| t.service_id == service.id && t.state == "running")
        .filter_map(|t| Some((t.node_id.as_deref()?, t.container_id.as_deref()?)))
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    running.sort_unstable();
    let membership = engine.membership().await?;
    let nodes = NodeEngines::from_env(engine, &membership)?;
    let (node, container) = running
        .iter()
        .find(|(node, _)| nodes.is_manager(node))
        .unwrap_or(&running[0]);
    let reached = nodes
        .task_container(
            node,
            container,
            "cryptus's metrics are written for node-exporter",
        )
        .await?;
    let Some(container) = reached.container else {
        return Ok(());
    };
    let versions: Vec<(Color, String)> = state
        .releases
        .iter()
        .map(|(color, release)| (*color, release.version.clone()))
        .collect();
    let text = render(state.active, &versions, &state.history);
    reached
        .engine
        .put_file(&container.name, TEXTFILE_DIR, TEXTFILE, text.as_bytes())
        .await
        .with_context(|| format!("on {}", reached.node))
}
