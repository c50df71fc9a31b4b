//! The engine as a Swarm manager: whether it is one, the swarm's nodes, and
//! a project's services and their tasks, read the way `docker node ls` and
//! `docker stack ps` read them.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use bollard::models::{LocalNodeState, Node as NodeModel, Service as ServiceModel, SystemInfo};
use bollard::models::{Task as TaskModel, TaskState};
use bollard::query_parameters::{
    ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
};
use serde::Serialize;

use super::{Engine, describe};

/// The label `docker stack deploy` puts on a stack's services (and their
/// tasks): the stack's name, here the project's.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";
/// The label `docker stack deploy` puts on a service: the image it asked for.
pub const STACK_IMAGE_LABEL: &str = "com.docker.stack.image";

/// What the engine is in a swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// `inactive` (no swarm), `pending`, `active`, `error` or `locked`.
    pub state: String,
    /// Whether it is a manager: it answers the swarm's API.
    pub manager: bool,
    /// Its node's id in the swarm, when it is in one.
    pub node_id: Option<String>,
    /// The address other nodes reach it at.
    pub node_addr: Option<String>,
    /// The swarm's nodes and managers, as a manager counts them.
    pub nodes: Option<i64>,
    pub managers: Option<i64>,
}

impl From<&SystemInfo> for Membership {
    fn from(info: &SystemInfo) -> Membership {
        let swarm = info.swarm.clone().unwrap_or_default();
        let state = match swarm.local_node_state {
            None | Some(LocalNodeState::EMPTY) => "inactive".to_owned(),
            Some(state) => state.to_string(),
        };
        Membership {
            manager: state == "active" && swarm.control_available.unwrap_or(false),
            state,
            node_id: swarm.node_id.filter(|id| !id.is_empty()),
            node_addr: swarm.node_addr.filter(|addr| !addr.is_empty()),
            nodes: swarm.nodes,
            managers: swarm.managers,
        }
    }
}

/// A node of the swarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `ready`, `down`, `disconnected` or `unknown`.
    pub state: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    pub addr: Option<String>,
    pub leader: bool,
}

impl From<NodeModel> for Node {
    fn from(node: NodeModel) -> Node {
        let spec = node.spec.unwrap_or_default();
        let status = node.status.unwrap_or_default();
        let text = |value: Option<String>| value.unwrap_or_else(|| "unknown".to_owned());
        Node {
            id: node.id.unwrap_or_default(),
            hostname: node
                .description
                .and_then(|d| d.hostname)
                .unwrap_or_default(),
            role: text(spec.role.map(|r| r.to_string())),
            state: text(status.state.map(|s| s.to_string())),
            availability: text(spec.availability.map(|a| a.to_string())),
            addr: status.addr,
            leader: node.manager_status.and_then(|m| m.leader).unwrap_or(false),
        }
    }
}

/// A service of a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The replicas asked for; `None` for a global service.
    pub replicas: Option<u64>,
    pub image: String,
}

impl From<ServiceModel> for Service {
    fn from(service: ServiceModel) -> Service {
        let spec = service.spec.unwrap_or_default();
        Service {
            id: service.id.unwrap_or_default(),
            name: spec.name.unwrap_or_default(),
            labels: spec.labels.unwrap_or_default().into_iter().collect(),
            replicas: spec
                .mode
                .and_then(|mode| mode.replicated)
                .map(|replicated| replicated.replicas.unwrap_or(1).max(0) as u64),
            image: spec
                .task_template
                .and_then(|t| t.container_spec)
                .and_then(|c| c.image)
                .unwrap_or_default(),
        }
    }
}

/// A task of a service: one replica's attempt on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub service_id: String,
    /// The replica's number (replicated services).
    pub slot: Option<i64>,
    pub node_id: Option<String>,
    /// `new`, `pending`, ..., `running`, `complete`, `failed`, `shutdown`, ...
    pub state: String,
    /// What the swarm wants of it: `running`, `shutdown`, ...
    pub desired_state: String,
    /// Why it failed or is not running yet, in the swarm's words.
    pub error: Option<String>,
    pub container_id: Option<String>,
    pub image: String,
}

impl From<TaskModel> for Task {
    fn from(task: TaskModel) -> Task {
        let status = task.status.unwrap_or_default();
        let state = |s: Option<TaskState>| s.map(|s| s.to_string()).unwrap_or_default();
        Task {
            id: task.id.unwrap_or_default(),
            service_id: task.service_id.unwrap_or_default(),
            slot: task.slot,
            node_id: task.node_id.filter(|id| !id.is_empty()),
            state: state(status.state),
            desired_state: state(task.desired_state),
            error: status.err.filter(|e| !e.is_empty()),
            container_id: status
                .container_status
                .and_then(|c| c.container_id)
                .filter(|id| !id.is_empty()),
            image: task
                .spec
                .and_then(|s| s.container_spec)
                .and_then(|c| c.image)
                .unwrap_or_default(),
        }
    }
}

impl Engine {
    /// What this engine is in a swarm.
    pub async fn membership(&self) -> Result<Membership> {
        self.docker
            .info()
            .await
            .map(|info| Membership::from(&info))
            .map_err(|err| anyhow!(describe(&err)))
            .map_err(|err| err.context("asking the engine whether it is in a swarm"))
    }

    /// Every node of the swarm (a manager's answer).
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|err| anyhow!(describe(&err)).context("listing the swarm's nodes"))?;
        let mut nodes: Vec<Node> = nodes.into_iter().map(Node::from).collect();
        nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(nodes)
    }

    /// The services of a project's stack, by name.
    pub async fn services(&self, project: &str) -> Result<Vec<Service>> {
        let filter = format!("{STACK_LABEL}={project}");
        let filters = std::collections::HashMap::from([("label", vec![filter.as_str()])]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let services = self
            .docker
            .list_services(Some(options))
            .await
            .map_err(|err| {
                anyhow!(describe(&err)).context(format!("listing the services of stack {project}"))
            })?;
        let mut services: Vec<Service> = services.into_iter().map(Service::from).collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(services)
    }

    /// The tasks of a project's stack, every state.
    pub async fn tasks(&self, project: &str) -> Result<Vec<Task>> {
        let filter = format!("{STACK_LABEL}={project}");
        let filters = std::collections::HashMap::from([("label", vec![filter.as_str()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = self.docker.list_tasks(Some(options)).await.map_err(|err| {
            anyhow!(describe(&err)).context(format!("listing the tasks of stack {project}"))
        })?;
        Ok(tasks.into_iter().map(Task::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::SwarmInfo;

    fn info(state: Option<LocalNodeState>, control: Option<bool>) -> SystemInfo {
        SystemInfo {
            swarm: Some(SwarmInfo {
                local_node_state: state,
                control_available: control,
                node_id: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_an_active_node_with_control_is_a_manager() {
        let none = Membership::from(&SystemInfo::default());
        assert_eq!((none.state.as_str(), none.manager), ("inactive", false));
        assert_eq!(none.node_id, None);
        let empty = Membership::from(&info(Some(LocalNodeState::EMPTY), None));
        assert_eq!(empty.state, "inactive");
        let worker = Membership::from(&info(Some(LocalNodeState::ACTIVE), Some(false)));
        assert_eq!((worker.state.as_str(), worker.manager), ("active", false));
        let manager = Membership::from(&info(Some(LocalNodeState::ACTIVE), Some(true)));
        assert!(manager.manager);
        let locked = Membership::from(&info(Some(LocalNodeState::LOCKED), Some(true)));
        assert_eq!((locked.state.as_str(), locked.manager), ("locked", false));
    }
}
