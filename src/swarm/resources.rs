//! `resources` on a Swarm: one sample of each running task, through the
//! engine of the node it runs on ([`NodeEngines`]: the manager's, or one
//! named in `CRYPTUS_SWARM_NODES`); a task on a node whose engine is not
//! known is named with its node, and every node's cores and memory come
//! from the node API.

use anyhow::Result;
use serde::Serialize;

use super::nodes::NodeEngines;
use super::status::SwarmStatus;
use crate::engine::{Engine, Node, Usage};

/// Why a task has no sample: its node's engine is not known.
pub const NOT_REACHABLE: &str = "its node's engine is not known (CRYPTUS_SWARM_NODES)";

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
    let membership = engine.membership().await?;
    let engines = NodeEngines::from_env(engine, &membership)?;
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
    let why = "a task is sampled";
    let sampled = futures_util::future::try_join_all(current.iter().map(|(_, task)| async {
        let reached = match &task.container_id {
            Some(_) if task.state != "running" => None,
            Some(_) if !engines.reaches(&task.node).await => {
                return Ok((None, Some(NOT_REACHABLE.to_owned())));
            }
            Some(id) => Some(engines.task_container(&task.node, id, why).await?),
            None => None,
        };
        Ok::<_, anyhow::Error>(match reached {
            Some(reached) if reached.container.is_some() => {
                let id = task.container_id.as_deref().unwrap_or_default();
                (Some(reached.engine.stats(id).await?), None)
            }
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
