//! `cryptus resources`: one sample of every container's CPU, memory, network
//! and disk I/O and processes, and the host's cores, memory and disk.

use anyhow::Result;
use serde::Serialize;

use crate::engine::{Container, Engine, Usage};
use crate::error::EXIT_OK;
use crate::orchestrator::Orchestrator;
use crate::output::{self, Printer};
use crate::project::Project;
use crate::swarm;

#[derive(Serialize)]
struct Row {
    name: String,
    service: String,
    state: String,
    #[serde(flatten)]
    usage: Usage,
}

#[derive(Serialize)]
struct Host {
    cores: i64,
    memory: i64,
    /// Where the engine keeps images, containers and volumes.
    engine_root: Option<String>,
    disk_total: Option<u64>,
    disk_free: Option<u64>,
}

#[derive(Serialize)]
struct Report {
    ok: bool,
    project: String,
    containers: Vec<Row>,
    host: Host,
}

pub async fn run(project: &Project, printer: &Printer) -> Result<u8> {
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    if project.orchestrator == Orchestrator::Swarm {
        return run_on_swarm(&engine, project, printer).await;
    }
    let report = Report {
        ok: true,
        project: project.name.clone(),
        containers: rows(&engine, &project.name).await?,
        host: host(&engine).await?,
    };
    if printer.json() {
        printer.out_json(&report)?;
    } else {
        printer.out(&render(&report))?;
    }
    Ok(EXIT_OK)
}

/// On a Swarm: a sample of each task on the manager's node, the others
/// named with their node, and the nodes' cores and memory.
async fn run_on_swarm(engine: &Engine, project: &Project, printer: &Printer) -> Result<u8> {
    let status = swarm::status::gather(engine, &project.name, &[]).await?;
    let report = swarm::resources::gather(engine, status).await?;
    if printer.json() {
        printer.out_json(&report)?;
    } else {
        printer.out(&render_swarm(&report))?;
    }
    Ok(EXIT_OK)
}

/// One sample of each of the project's containers; a stopped one uses nothing.
async fn rows(engine: &Engine, project: &str) -> Result<Vec<Row>> {
    let containers: Vec<Container> = engine
        .containers(project)
        .await?
        .into_iter()
        .filter(|c| !c.service.is_empty())
        .collect();
    let samples = futures_util::future::join_all(containers.iter().map(|c| async {
        if c.running {
            engine.stats(&c.id).await
        } else {
            Ok(Usage::default())
        }
    }))
    .await;
    containers
        .into_iter()
        .zip(samples)
        .map(|(container, sample)| {
            Ok(Row {
                name: container.name,
                service: container.service,
                state: container.state,
                usage: sample?,
            })
        })
        .collect()
}

/// The engine's host, and its disk when the engine's data is on this machine.
async fn host(engine: &Engine) -> Result<Host> {
    let info = engine.host().await?;
    let (disk_total, disk_free) = info
        .root_dir
        .as_deref()
        .and_then(disk)
        .map_or((None, None), |(total, free)| (Some(total), Some(free)));
    Ok(Host {
        cores: info.cores,
        memory: info.memory,
        engine_root: info.root_dir,
        disk_total,
        disk_free,
    })
}

/// The report as a table of containers and a line about the host.
fn render(report: &Report) -> String {
    let table_rows: Vec<Vec<String>> = report
        .containers
        .iter()
        .map(|r| {
            let mut row = vec![r.name.clone(), r.state.clone()];
            row.extend(usage_cells(&r.usage));
            row
        })
        .collect();
    let mut text = output::table(&headers(&["CONTAINER", "STATE"]), &table_rows);
    text.push_str(&host_line(&report.host));
    text
}

/// The columns [`usage_cells`] fills.
const USAGE_COLUMNS: [&str; 5] = [
    "CPU",
    "MEMORY USED / LIMIT",
    "NET RX / TX",
    "BLOCK READ / WRITE",
    "PIDS",
];

/// A table's headers: what names the row, then the usage columns.
fn headers(leading: &[&'static str]) -> Vec<&'static str> {
    leading.iter().chain(&USAGE_COLUMNS).copied().collect()
}

/// CPU, memory, network, block I/O and processes, as table cells.
fn usage_cells(usage: &Usage) -> Vec<String> {
    vec![
        format!("{:.2}%", usage.cpu_percent),
        format!(
            "{} / {}",
            bytes(usage.memory_used),
            bytes(usage.memory_limit)
        ),
        format!("{} / {}", bytes(usage.net_rx), bytes(usage.net_tx)),
        format!("{} / {}", bytes(usage.block_read), bytes(usage.block_write)),
        usage.pids.to_string(),
    ]
}

/// The Swarm report: a table of tasks (a sample, or why there is none),
/// then one line per node.
fn render_swarm(report: &swarm::resources::Report) -> String {
    let rows: Vec<Vec<String>> = report
        .tasks
        .iter()
        .map(|t| {
            let mut row = vec![t.name.clone(), t.node.clone(), t.state.clone()];
            match (&t.usage, &t.note) {
                (Some(usage), _) => row.extend(usage_cells(usage)),
                (None, note) => {
                    row.push(note.clone().unwrap_or_default());
                    row.extend(std::iter::repeat_n(String::new(), 4));
                }
            }
            row
        })
        .collect();
    let mut text = output::table(&headers(&["TASK", "NODE", "STATE"]), &rows);
    for node in &report.nodes {
        text.push_str(&format!(
            "\nnode {} ({}, {}): {} cores, {} memory",
            node.hostname,
            node.role,
            node.state,
            node.cores,
            bytes(u64::try_from(node.memory).unwrap_or(0))
        ));
    }
    text.push('\n');
    text
}

/// `host: 4 cores, 7.8GiB memory, disk under /var/lib/docker: ...`.
fn host_line(host: &Host) -> String {
    let mut text = format!(
        "\nhost: {} cores, {} memory",
        host.cores,
        bytes(u64::try_from(host.memory).unwrap_or(0))
    );
    match (&host.engine_root, host.disk_total, host.disk_free) {
        (Some(root), Some(total), Some(free)) => {
            text.push_str(&format!(
                ", disk under {root}: {} free of {}\n",
                bytes(free),
                bytes(total)
            ));
        }
        (Some(root), _, _) => {
            text.push_str(&format!(", engine data in {root} (not on this machine)\n"))
        }
        _ => text.push('\n'),
    }
    text
}

/// Total and free bytes of the filesystem holding `path`, when it is local.
fn disk(path: &str) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some((stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize))
}

/// Bytes for people: `512.0MiB`.
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut amount = value as f64;
    let mut unit = 0;
    while amount >= 1024.0 && unit + 1 < UNITS.len() {
        amount /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value}B")
    } else {
        format!("{amount:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_line_says_where_the_engine_keeps_its_data() {
        let mut host = Host {
            cores: 4,
            memory: 8 << 30,
            engine_root: Some("/var/lib/docker".to_owned()),
            disk_total: Some(100 << 30),
            disk_free: Some(40 << 30),
        };
        assert_eq!(
            host_line(&host),
            "\nhost: 4 cores, 8.0GiB memory, disk under /var/lib/docker: 40.0GiB free of 100.0GiB\n"
        );
        (host.disk_total, host.disk_free) = (None, None);
        assert_eq!(
            host_line(&host),
            "\nhost: 4 cores, 8.0GiB memory, engine data in /var/lib/docker (not on this machine)\n"
        );
        host.engine_root = None;
        assert_eq!(host_line(&host), "\nhost: 4 cores, 8.0GiB memory\n");
    }

    #[test]
    fn a_task_on_another_node_says_why_it_has_no_sample() {
        let row = |name: &str, node: &str, usage: Option<Usage>| swarm::resources::TaskRow {
            name: name.to_owned(),
            service: "cryptus-blue".to_owned(),
            node: node.to_owned(),
            state: "running".to_owned(),
            note: usage
                .is_none()
                .then(|| swarm::resources::NOT_REACHABLE.to_owned()),
            usage,
        };
        let report = swarm::resources::Report {
            ok: true,
            project: "shop".to_owned(),
            orchestrator: Orchestrator::Swarm,
            manager: Some("n1".to_owned()),
            tasks: vec![
                row("cryptus-blue.1", "n1", Some(Usage::default())),
                row("cryptus-blue.2", "n2", None),
            ],
            nodes: Vec::new(),
        };
        let text = render_swarm(&report);
        assert!(text.starts_with("TASK"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("0.00%"), "{text}");
        assert!(lines[2].contains("n2") && lines[2].contains(swarm::resources::NOT_REACHABLE));
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(536_870_912), "512.0MiB");
        assert_eq!(bytes(1536), "1.5KiB");
    }

    #[test]
    fn the_disk_of_a_local_path() {
        let (total, free) = disk("/").unwrap();
        assert!(total > 0 && free <= total);
        assert!(disk("/no/such/path").is_none());
    }
}
