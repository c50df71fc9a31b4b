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
    let current: Vec<(&str, &super::status::TaskView)> = status
        .services
        .iter()
        .flat_map(|view| {
            view.tasks
                .iter()
                .map(move |task| (view.service.as_str(), task))
        })
        .collect();
    // Sampled all at once, as on one engine: a sample takes the engine a
    // moment per container.
    let sampled = futures_util::future::try_join_all(current.iter().map(|(_, task)| async {
        let here = task.node == manager && task.state == "running";
        Ok::<_, anyhow::Error>(match (&task.container_id, here) {
            (Some(id), true) => (Some(engine.stats(id).await?), None),
            (_, false) if task.state == "running" => (None, Some(NOT_REACHABLE.to_owned())),
            _ => (None, Some(format!("not running ({})", task.state))),
        })
    }))
    .await?;
    let tasks = current
        .iter()
        .zip(sampled)
        .map(|((service, task), (usage, note))| TaskRow {
            name: task.name.clone(),
            service: (*service).to_owned(),
            node: task.node.clone(),
            state: task.state.clone(),
            usage,
            note,
        })
        .collect();
    Ok(Report {
        ok: true,
        project: status.project,
        orchestrator: status.orchestrator,
        manager: status.manager,
        tasks,
        nodes: status.nodes,
    })
}
