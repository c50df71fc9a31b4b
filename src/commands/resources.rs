//! `cryptus resources`: one sample of every container's CPU, memory, network
//! and disk I/O and processes, and the host's cores, memory and disk.

use anyhow::Result;
use bollard::models::ContainerStatsResponse;
use serde::Serialize;

use crate::engine::{Container, Engine};
use crate::error::EXIT_OK;
use crate::output::{self, Printer};
use crate::project::Project;

#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    pub cpu_percent: f64,
    pub memory_used: u64,
    pub memory_limit: u64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub block_read: u64,
    pub block_write: u64,
    pub pids: u64,
}

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

/// Turns the engine's sample into figures the way `docker stats` does.
pub fn usage(stats: &ContainerStatsResponse) -> Usage {
    let total = |s: &Option<bollard::models::ContainerCpuStats>| {
        s.as_ref()
            .and_then(|s| s.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let system = |s: &Option<bollard::models::ContainerCpuStats>| {
        s.as_ref().and_then(|s| s.system_cpu_usage).unwrap_or(0)
    };
    let cpu_delta = total(&stats.cpu_stats).saturating_sub(total(&stats.precpu_stats)) as f64;
    let system_delta = system(&stats.cpu_stats).saturating_sub(system(&stats.precpu_stats)) as f64;
    let cpus = stats
        .cpu_stats
        .as_ref()
        .and_then(|s| s.online_cpus)
        .filter(|n| *n > 0)
        .unwrap_or(1) as f64;
    let cpu_percent = if system_delta > 0.0 {
        (cpu_delta / system_delta * cpus * 100.0 * 100.0).round() / 100.0
    } else {
        0.0
    };
    let memory = stats.memory_stats.as_ref();
    // Page cache is not the app's memory: cgroup v1 calls it cache, v2 inactive_file.
    let cache = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("cache")).copied())
        .unwrap_or(0);
    let memory_used = memory
        .and_then(|m| m.usage)
        .unwrap_or(0)
        .saturating_sub(cache);
    let memory_limit = memory.and_then(|m| m.limit).unwrap_or(0);
    let (net_rx, net_tx) = stats
        .networks
        .as_ref()
        .map(|networks| {
            networks.values().fold((0, 0), |(rx, tx), n| {
                (rx + n.rx_bytes.unwrap_or(0), tx + n.tx_bytes.unwrap_or(0))
            })
        })
        .unwrap_or((0, 0));
    let (block_read, block_write) = stats
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .map(|entries| {
            entries.iter().fold((0, 0), |(read, write), e| {
                match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    Some("read") => (read + e.value.unwrap_or(0), write),
                    Some("write") => (read, write + e.value.unwrap_or(0)),
                    _ => (read, write),
                }
            })
        })
        .unwrap_or((0, 0));
    Usage {
        cpu_percent,
        memory_used,
        memory_limit,
        net_rx,
        net_tx,
        block_read,
        block_write,
        pids: stats
            .pids_stats
            .as_ref()
            .and_then(|p| p.current)
            .unwrap_or(0),
    }
}

pub async fn run(project: &Project, printer: &Printer) -> Result<u8> {
    let engine = Engine::connect().await?;
    let containers: Vec<Container> = engine
        .containers(&project.name)
        .await?
        .into_iter()
        .filter(|c| !c.service.is_empty())
        .collect();
    let samples = futures_util::future::join_all(containers.iter().map(|c| async {
        if c.running {
            engine.stats(&c.id).await.map(|s| usage(&s))
        } else {
            Ok(Usage::default())
        }
    }))
    .await;
    let mut rows = Vec::new();
    for (container, sample) in containers.iter().zip(samples) {
        rows.push(Row {
            name: container.name.clone(),
            service: container.service.clone(),
            state: container.state.clone(),
            usage: sample?,
        });
    }
    let info = engine.host().await?;
    let engine_root = info.docker_root_dir.clone();
    let (disk_total, disk_free) = engine_root
        .as_deref()
        .and_then(disk)
        .map_or((None, None), |(total, free)| (Some(total), Some(free)));
    let report = Report {
        ok: true,
        project: project.name.clone(),
        containers: rows,
        host: Host {
            cores: info.ncpu.unwrap_or(0),
            memory: info.mem_total.unwrap_or(0),
            engine_root,
            disk_total,
            disk_free,
        },
    };
    if printer.json() {
        printer.out_json(&report)?;
        return Ok(EXIT_OK);
    }
    let table_rows: Vec<Vec<String>> = report
        .containers
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.clone(),
                format!("{:.2}%", r.usage.cpu_percent),
                format!(
                    "{} / {}",
                    bytes(r.usage.memory_used),
                    bytes(r.usage.memory_limit)
                ),
                format!("{} / {}", bytes(r.usage.net_rx), bytes(r.usage.net_tx)),
                format!(
                    "{} / {}",
                    bytes(r.usage.block_read),
                    bytes(r.usage.block_write)
                ),
                r.usage.pids.to_string(),
            ]
        })
        .collect();
    let mut text = output::table(
        &[
            "CONTAINER",
            "STATE",
            "CPU",
            "MEMORY USED / LIMIT",
            "NET RX / TX",
            "BLOCK READ / WRITE",
            "PIDS",
        ],
        &table_rows,
    );
    let host = &report.host;
    text.push_str(&format!(
        "\nhost: {} cores, {} memory",
        host.cores,
        bytes(u64::try_from(host.memory).unwrap_or(0))
    ));
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
    printer.out(&text)?;
    Ok(EXIT_OK)
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
    fn figures_like_docker_stats() {
        let stats: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000u64}, "system_cpu_usage": 20_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000u64}, "system_cpu_usage": 10_000_000u64},
            "memory_stats": {"usage": 50_000_000u64, "limit": 536_870_912u64, "stats": {"inactive_file": 10_000_000u64}},
            "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 200}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 4096},
                {"major": 8, "minor": 0, "op": "write", "value": 8192}
            ]},
            "pids_stats": {"current": 7}
        }))
        .unwrap();
        let usage = usage(&stats);
        assert_eq!(usage.cpu_percent, 40.0);
        assert_eq!(usage.memory_used, 40_000_000);
        assert_eq!(usage.memory_limit, 536_870_912);
        assert_eq!((usage.net_rx, usage.net_tx), (101, 202));
        assert_eq!((usage.block_read, usage.block_write), (4096, 8192));
        assert_eq!(usage.pids, 7);
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
