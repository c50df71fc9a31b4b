//! What `cryptus status` reports on a Swarm: the swarm's nodes and, per
//! service of the project's stack, its tasks with the node each runs on.
//! Gathered from the manager; rendered as text.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::Serialize;

use crate::engine::{Engine, Node, Service, Task};
use crate::orchestrator::Orchestrator;
use crate::output;
use crate::stack::{Color, Release};

use super::compose_service;

#[derive(Serialize)]
pub struct SwarmStatus {
    pub ok: bool,
    pub project: String,
    pub orchestrator: Orchestrator,
    /// The hostname of the manager asked.
    pub manager: Option<String>,
    /// The color the cluster records as served; `None` before the first
    /// `start`.
    pub active: Option<Color>,
    /// What each color last ran, as recorded.
    pub releases: BTreeMap<Color, Release>,
    /// A canary the edges hold (the new color and its share), as the
    /// cluster records it: a canary deploy runs, or was killed.
    pub canary: Option<crate::nginx::Canary>,
    pub nodes: Vec<Node>,
    pub services: Vec<ServiceView>,
}

#[derive(Serialize)]
pub struct ServiceView {
    /// The compose service.
    pub service: String,
    /// The swarm service (`<project>_<service>`), when it exists.
    pub name: Option<String>,
    /// Replicas asked for; `None` for a global service or none created.
    pub replicas: Option<u64>,
    pub running: usize,
    pub image: Option<String>,
    pub tasks: Vec<TaskView>,
}

#[derive(Serialize)]
pub struct TaskView {
    /// `<service>.<slot>` (replicated) or `<service>.<node>` (global).
    pub name: String,
    pub id: String,
    /// The hostname of the node it runs on, or `-` before it is placed.
    pub node: String,
    pub state: String,
    pub desired_state: String,
    pub error: Option<String>,
    pub image: String,
    /// The replica's number (replicated services), for the task's name.
    #[serde(skip)]
    pub slot: Option<i64>,
    /// Its container, on the node it runs on.
    #[serde(skip)]
    pub container_id: Option<String>,
}

impl TaskView {
    /// Its state, with the swarm's error when there is one.
    pub fn state_text(&self) -> String {
        match &self.error {
            Some(error) => format!("{} ({error})", self.state),
            None => self.state.clone(),
        }
    }
}

/// Everything status shows on a Swarm. `declared` are the compose file's
/// services: they add the services not created yet.
pub async fn gather(engine: &Engine, project: &str, declared: &[String]) -> Result<SwarmStatus> {
    let (membership, nodes, services, tasks, state) = tokio::try_join!(
        engine.membership(),
        engine.nodes(),
        engine.services(project),
        engine.tasks(project),
        super::state::read(engine, project)
    )?;
    let manager = nodes
        .iter()
        .find(|n| Some(&n.id) == membership.node_id.as_ref())
        .map(|n| n.hostname.clone());
    Ok(SwarmStatus {
        ok: true,
        project: project.to_owned(),
        orchestrator: Orchestrator::Swarm,
        manager,
        active: state.active,
        releases: state.releases,
        canary: state.canary.map(|live| live.canary),
        services: views(project, &services, &tasks, &nodes, declared),
        nodes,
    })
}

/// One view per service, declared or created, by compose service name;
/// each with its current tasks (those the swarm wants running), by slot.
fn views(
    project: &str,
    services: &[Service],
    tasks: &[Task],
    nodes: &[Node],
    declared: &[String],
) -> Vec<ServiceView> {
    let hostnames = hostnames(nodes);
    let mut names: BTreeSet<String> = declared.iter().cloned().collect();
    let created: BTreeMap<&str, &Service> = services
        .iter()
        .filter_map(|s| compose_service(project, &s.name).map(|name| (name, s)))
        .collect();
    names.extend(created.keys().map(|name| (*name).to_owned()));
    names
        .into_iter()
        .map(|name| {
            let Some(service) = created.get(name.as_str()) else {
                return ServiceView {
                    service: name,
                    name: None,
                    replicas: None,
                    running: 0,
                    image: None,
                    tasks: Vec::new(),
                };
            };
            let mut current: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.service_id == service.id && is_current(t))
                .collect();
            current.sort_by_key(|t| (t.slot, t.node_id.clone()));
            let tasks: Vec<TaskView> = current
                .into_iter()
                .map(|t| {
                    let node = t
                        .node_id
                        .as_deref()
                        .map(|id| hostnames.get(id).copied().unwrap_or(id))
                        .unwrap_or("-")
                        .to_owned();
                    TaskView {
                        name: match t.slot {
                            Some(slot) => format!("{name}.{slot}"),
                            None => format!("{name}.{node}"),
                        },
                        id: t.id.clone(),
                        node,
                        state: t.state.clone(),
                        desired_state: t.desired_state.clone(),
                        error: t.error.clone(),
                        image: t.image.clone(),
                        slot: t.slot,
                        container_id: t.container_id.clone(),
                    }
                })
                .collect();
            ServiceView {
                running: tasks.iter().filter(|t| t.state == "running").count(),
                name: Some(service.name.clone()),
                replicas: service.replicas,
                image: Some(service.image.clone()),
                service: name,
                tasks,
            }
        })
        .collect()
}

/// Each node's hostname, by its id.
pub fn hostnames(nodes: &[Node]) -> BTreeMap<&str, &str> {
    nodes
        .iter()
        .map(|n| (n.id.as_str(), n.hostname.as_str()))
        .collect()
}

/// A task the swarm still wants: not one it has shut down or replaced.
fn is_current(task: &Task) -> bool {
    matches!(
        task.desired_state.as_str(),
        "running" | "ready" | "accepted"
    )
}

/// The text of `cryptus status` on a Swarm.
pub fn render(status: &SwarmStatus) -> String {
    let ready = status.nodes.iter().filter(|n| n.state == "ready").count();
    let mut text = format!("project {}: on a Docker Swarm\n", status.project);
    text.push_str(&format!(
        "mode: swarm, manager {} ({ready}/{} nodes ready)\n\n",
        status.manager.as_deref().unwrap_or("?"),
        status.nodes.len()
    ));
    let canary = match status.canary {
        Some(canary) => format!(
            ", and {}% of clients to {} (a canary)",
            canary.percent, canary.color
        ),
        None => String::new(),
    };
    match status.active.map(|c| (c, status.releases.get(&c))) {
        Some((color, Some(release))) => text.push_str(&format!(
            "active: {color} {} ({}){canary}\n\n",
            release.version, release.image
        )),
        Some((color, None)) => text.push_str(&format!("active: {color}{canary}\n\n")),
        None => text.push_str("active: none recorded (the stack was never started)\n\n"),
    }
    let dash = || "-".to_owned();
    let mut rows = Vec::new();
    for service in &status.services {
        if service.name.is_none() {
            rows.push(vec![
                service.service.clone(),
                dash(),
                dash(),
                "not created".into(),
                dash(),
            ]);
        } else if service.tasks.is_empty() {
            rows.push(vec![
                service.service.clone(),
                dash(),
                dash(),
                format!("{} replicas", service.replicas.unwrap_or(0)),
                service.image.clone().unwrap_or_else(dash),
            ]);
        }
        for task in &service.tasks {
            rows.push(vec![
                service.service.clone(),
                task.name.clone(),
                task.node.clone(),
                task.state_text(),
                task.image.clone(),
            ]);
        }
    }
    text.push_str(&output::table(
        &["SERVICE", "TASK", "NODE", "STATE", "IMAGE"],
        &rows,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, hostname: &str, state: &str) -> Node {
        Node {
            id: id.into(),
            hostname: hostname.into(),
            role: "worker".into(),
            state: state.into(),
            availability: "active".into(),
            addr: None,
            leader: false,
            cores: 2.0,
            memory: 1 << 30,
            labels: Default::default(),
        }
    }

    fn task(id: &str, slot: i64, node: Option<&str>, state: &str, desired: &str) -> Task {
        Task {
            id: id.into(),
            service_id: "s1".into(),
            slot: Some(slot),
            node_id: node.map(str::to_owned),
            state: state.into(),
            desired_state: desired.into(),
            error: None,
            container_id: None,
            exit_code: None,
            image: "app:1".into(),
        }
    }

    #[test]
    fn tasks_are_listed_by_slot_with_their_node_and_old_ones_left_out() {
        let nodes = vec![node("a", "n1", "ready"), node("b", "n2", "down")];
        let services = vec![Service {
            id: "s1".into(),
            name: "shop_cryptus-blue".into(),
            labels: BTreeMap::new(),
            replicas: Some(3),
            image: "app:1".into(),
        }];
        let mut waiting = task("t3", 3, None, "pending", "running");
        waiting.error = Some("no suitable node".into());
        let tasks = vec![
            task("t2", 2, Some("b"), "running", "running"),
            task("t1", 1, Some("a"), "running", "running"),
            task("t0", 1, Some("b"), "shutdown", "shutdown"),
            waiting,
        ];
        let declared = vec!["redis".to_owned(), "cryptus-blue".to_owned()];
        let views = views("shop", &services, &tasks, &nodes, &declared);
        assert_eq!(views.len(), 2);
        let blue = &views[0];
        assert_eq!(blue.service, "cryptus-blue");
        assert_eq!(blue.running, 2);
        let shown: Vec<(&str, &str, &str)> = blue
            .tasks
            .iter()
            .map(|t| (t.name.as_str(), t.node.as_str(), t.state.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("cryptus-blue.1", "n1", "running"),
                ("cryptus-blue.2", "n2", "running"),
                ("cryptus-blue.3", "-", "pending"),
            ]
        );
        assert_eq!(views[1].name, None);

        let status = SwarmStatus {
            ok: true,
            project: "shop".into(),
            orchestrator: Orchestrator::Swarm,
            manager: Some("n1".into()),
            active: Some(Color::Green),
            releases: BTreeMap::from([(
                Color::Green,
                Release {
                    image: "app:2".into(),
                    version: "2".into(),
                },
            )]),
            canary: None,
            nodes,
            services: views,
        };
        let text = render(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "project shop: on a Docker Swarm");
        assert_eq!(lines[1], "mode: swarm, manager n1 (1/2 nodes ready)");
        assert_eq!(lines[3], "active: green 2 (app:2)");
        assert!(lines[5].starts_with("SERVICE"), "{text}");
        assert!(lines[6].contains("cryptus-blue.1  n1"), "{text}");
        assert!(lines[8].contains("pending (no suitable node)"), "{text}");
        assert!(lines[9].starts_with("redis") && lines[9].contains("not created"));
        let status = SwarmStatus {
            active: Some(Color::Blue),
            canary: Some(crate::nginx::Canary {
                color: Color::Green,
                percent: 10,
            }),
            ..status
        };
        let text = render(&status);
        assert!(
            text.contains("\nactive: blue, and 10% of clients to green (a canary)\n"),
            "{text}"
        );
    }
}
