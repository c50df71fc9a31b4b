//! `resources` on a Swarm: one sample of each task whose container is on
//! the manager's engine (the only one cryptus reaches), the others named
//! with their node, and every node's cores and memory from the node API.

use anyhow::Result;
use serde::Serialize;

use super::status::SwarmStatus;
use crate::engine::{Engine, Node, Usage};

/// Why a task has no sample.
pub const NOT_REACHABLE: &str = "not reachable from the manager";

#[derive(Serialize)]
pub struct Report {
    pub ok: bool,
    pub project: String,
    pub orchestrator: crate::orchestrator::Orchestrator,
    pub manager: Option<String>,
    pub tasks: Vec<TaskRow>,
    pub nodes: Vec<Node>,
}

#[derive(Serialize)]
pub struct TaskRow {
    /// `<service>.<slot>` or `<service>.<node>`, as `status` names it.
    pub name: String,
    pub service: String,
    pub node: String,
    pub state: String,
    /// `None` when the task is on another node, or does not run.
    pub usage: Option<Usage>,
    /// Why there is no sample, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One look at every current task of the stack, sampled where reachable.
pub async fn gather(engine: &Engine, status: SwarmStatus) -> Result<Report> {
    let manager = status.manager.clone().unwrap_or_default();
    let mut tasks = Vec::new();
    for view in &status.services {
        for task in &view.tasks {
            let here = task.node == manager && task.state == "running";
            let (usage, note) = match (&task.container_id, here) {
                (Some(id), true) => (Some(engine.stats(id).await?), None),
                (_, false) if task.state == "running" => (None, Some(NOT_REACHABLE.to_owned())),
                _ => (None, Some(format!("not running ({})", task.state))),
            };
            tasks.push(TaskRow {
                name: task.name.clone(),
                service: view.service.clone(),
                node: task.node.clone(),
                state: task.state.clone(),
                usage,
                note,
            });
        }
    }
    Ok(Report {
        ok: true,
        project: status.project,
        orchestrator: status.orchestrator,
        manager: status.manager,
        tasks,
        nodes: status.nodes,
    })
}
