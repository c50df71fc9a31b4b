//! `cryptus logs` on a Swarm: each task's log, read through the manager
//! (the swarm fetches it from the node the task runs on), shown as on one
//! engine ([`crate::logs`]: prefixes, `--timestamps`, `--json`), a task
//! labelled `<service>.<slot>@<node>`. Without `--follow`, every task the
//! swarm still lists, replaced ones included; with it, the current tasks,
//! and those that start later, until Ctrl-C or SIGTERM.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;

use crate::engine::{Engine, Node, Service, Task};
use crate::logs::{self, Origin, Render};
use crate::output::Printer;

use super::compose_service;

/// How often the tasks are listed while following, for new ones.
const NEW_TASKS_EVERY: Duration = Duration::from_secs(1);

/// What is shown: which services, from when, how.
pub struct Shown<'a> {
    pub project: &'a str,
    pub services: &'a BTreeSet<String>,
    /// Seconds since the epoch; 0 for everything.
    pub since: i64,
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// A task whose log is shown.
struct TaskLog {
    id: String,
    origin: Origin,
    /// The swarm wants it running: its log must be readable.
    current: bool,
}

pub async fn dump(engine: &Engine, shown: &Shown<'_>, printer: &Printer) -> Result<()> {
    let tasks = tasks_shown(engine, shown).await?;
    let origins: Vec<Origin> = tasks.iter().map(|t| t.origin.clone()).collect();
    let render = render(shown, &origins, printer);
    let streams = tasks.iter().map(|t| {
        let stream = engine.task_log_lines(&t.id, false, shown.tail, shown.since);
        (stream, t.current)
    });
    logs::dump_streams(&origins, streams, render, printer).await
}

/// How long one listing of the tasks may take while following.
const LISTING_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn follow(engine: &Engine, shown: &Shown<'_>, printer: &Printer) -> Result<()> {
    let current = |tasks: Vec<TaskLog>| tasks.into_iter().filter(|t| t.current);
    let first: Vec<TaskLog> = current(tasks_shown(engine, shown).await?).collect();
    let origins: Vec<Origin> = first.iter().map(|t| t.origin.clone()).collect();
    let render = render(shown, &origins, printer);
    let (sender, mut receiver) = mpsc::channel::<Result<String>>(1024);
    let mut followed: HashSet<String> = HashSet::new();
    let mut add = |task: TaskLog, since: i64, tail: Option<usize>| {
        if followed.insert(task.id.clone()) {
            let stream = engine.task_log_lines(&task.id, true, tail, since);
            let index = followed.len() - 1;
            logs::spawn_follower(stream, task.origin, index, render, sender.clone());
        }
    };
    for task in first {
        add(task, shown.since, shown.tail);
    }
    let stopped = logs::stop_signal()?;
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(NEW_TASKS_EVERY);
    loop {
        tokio::select! {
            line = receiver.recv() => {
                if let Some(line) = line {
                    printer.out(&line?)?;
                }
            }
            _ = tick.tick() => {
                // A task that starts later is followed from its first line.
                // The listing is bounded (a signal waits at most that long)
                // and one that fails is skipped: the lines keep coming.
                match tokio::time::timeout(LISTING_DEADLINE, tasks_shown(engine, shown)).await {
                    Ok(Ok(tasks)) => {
                        for task in current(tasks) {
                            add(task, shown.since, None);
                        }
                    }
                    Ok(Err(err)) => tracing::warn!("listing the tasks to follow: {err:#}"),
                    Err(_) => tracing::warn!("listing the tasks to follow: no answer in time"),
                }
            }
            _ = &mut stopped => return Ok(()),
        }
    }
}

fn render(shown: &Shown<'_>, origins: &[Origin], printer: &Printer) -> Render {
    let labels: Vec<String> = origins.iter().map(|o| o.label.clone()).collect();
    Render::of(shown.services.len(), &labels, shown.timestamps, printer)
}

/// The tasks of the services shown that ran a container, by service and
/// slot, labelled with their node.
async fn tasks_shown(engine: &Engine, shown: &Shown<'_>) -> Result<Vec<TaskLog>> {
    let (services, tasks, nodes) = tokio::try_join!(
        engine.services(shown.project),
        engine.tasks(shown.project),
        engine.nodes()
    )?;
    Ok(label_tasks(
        shown.project,
        shown.services,
        &services,
        &tasks,
        &nodes,
    ))
}

/// [`tasks_shown`]'s pure part.
fn label_tasks(
    project: &str,
    wanted: &BTreeSet<String>,
    services: &[Service],
    tasks: &[Task],
    nodes: &[Node],
) -> Vec<TaskLog> {
    let hosts = super::status::hostnames(nodes);
    let by_id: BTreeMap<&str, (&str, &str)> = services
        .iter()
        .filter_map(|s| {
            let compose = compose_service(project, &s.name)?;
            wanted
                .contains(compose)
                .then_some((s.id.as_str(), (compose, s.name.as_str())))
        })
        .collect();
    let mut shown: Vec<(&str, Option<i64>, TaskLog)> = tasks
        .iter()
        .filter(|t| t.container_id.is_some())
        .filter_map(|t| {
            let (compose, swarm_name) = by_id.get(t.service_id.as_str())?;
            let node = t.node_id.as_deref().unwrap_or("-");
            let node = hosts.get(node).copied().unwrap_or(node);
            let (label, name) = match t.slot {
                Some(slot) => (
                    format!("{compose}.{slot}@{node}"),
                    format!("{swarm_name}.{slot}.{}", t.id),
                ),
                None => (
                    format!("{compose}@{node}"),
                    format!(
                        "{swarm_name}.{}.{}",
                        t.node_id.as_deref().unwrap_or("-"),
                        t.id
                    ),
                ),
            };
            let origin = Origin {
                service: (*compose).to_owned(),
                name,
                label,
            };
            let current = t.desired_state == "running";
            Some((
                *compose,
                t.slot,
                TaskLog {
                    id: t.id.clone(),
                    origin,
                    current,
                },
            ))
        })
        .collect();
    shown.sort_by(|a, b| (a.0, a.1, !a.2.current).cmp(&(b.0, b.1, !b.2.current)));
    shown.into_iter().map(|(_, _, task)| task).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, service: &str, slot: Option<i64>, node: &str, desired: &str) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            slot,
            node_id: Some(node.into()),
            state: "running".into(),
            desired_state: desired.into(),
            error: None,
            container_id: Some(format!("c-{id}")),
            exit_code: None,
            image: "app:1".into(),
        }
    }

    #[test]
    fn tasks_are_labelled_with_slot_and_node_and_filtered_by_service() {
        let service = |id: &str, name: &str| Service {
            id: id.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            replicas: Some(2),
            image: "app:1".into(),
        };
        let services = [
            service("s1", "shop_cryptus-blue"),
            service("s2", "shop_redis"),
            service("s3", "shop_nginx"),
        ];
        let node = |id: &str, host: &str| Node {
            id: id.into(),
            hostname: host.into(),
            role: "worker".into(),
            state: "ready".into(),
            availability: "active".into(),
            addr: None,
            leader: false,
            cores: 2.0,
            memory: 1 << 30,
            labels: Default::default(),
        };
        let nodes = [node("a", "n1"), node("b", "n2")];
        let mut never_ran = task("t9", "s1", Some(3), "a", "running");
        never_ran.container_id = None;
        let tasks = [
            task("t2", "s1", Some(2), "b", "running"),
            task("t1", "s1", Some(1), "a", "shutdown"),
            task("t3", "s1", Some(1), "b", "running"),
            task("r1", "s2", Some(1), "a", "running"),
            task("x1", "s3", None, "a", "running"),
            never_ran,
        ];
        let wanted: BTreeSet<String> = ["cryptus-blue".to_owned(), "nginx".to_owned()].into();
        let shown = label_tasks("shop", &wanted, &services, &tasks, &nodes);
        let labels: Vec<(&str, bool)> = shown
            .iter()
            .map(|t| (t.origin.label.as_str(), t.current))
            .collect();
        assert_eq!(
            labels,
            [
                ("cryptus-blue.1@n2", true),
                ("cryptus-blue.1@n1", false),
                ("cryptus-blue.2@n2", true),
                ("nginx@n1", true),
            ]
        );
        assert_eq!(shown[0].origin.name, "shop_cryptus-blue.1.t3");
        assert_eq!(shown[3].origin.name, "shop_nginx.a.x1");
        assert_eq!(shown[0].origin.service, "cryptus-blue");
    }
}
