//! Resource use as cryptus reports it: one sample of a container's CPU,
//! memory, network, disk I/O and processes, and the engine's host, read from
//! the engine's own figures the way `docker stats` and `docker info` do.

use bollard::models::{ContainerCpuStats, ContainerStatsResponse, SystemInfo};
use serde::Serialize;

/// One sample of a container's resource use.
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

/// The engine's host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostInfo {
    pub cores: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Where the engine keeps images, containers and volumes.
    pub root_dir: Option<String>,
}

impl From<SystemInfo> for HostInfo {
    fn from(info: SystemInfo) -> HostInfo {
        HostInfo {
            cores: info.ncpu.unwrap_or(0),
            memory: info.mem_total.unwrap_or(0),
            root_dir: info.docker_root_dir,
        }
    }
}

/// Turns the engine's sample into figures the way `docker stats` does.
pub(super) fn usage(stats: &ContainerStatsResponse) -> Usage {
    let (memory_used, memory_limit) = memory(stats);
    let (net_rx, net_tx) = network(stats);
    let (block_read, block_write) = block_io(stats);
    Usage {
        cpu_percent: cpu_percent(stats),
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

/// CPU use over the engine's two readings, 100% a core, to two decimals.
fn cpu_percent(stats: &ContainerStatsResponse) -> f64 {
    let total = |s: &Option<ContainerCpuStats>| {
        s.as_ref()
            .and_then(|s| s.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let system =
        |s: &Option<ContainerCpuStats>| s.as_ref().and_then(|s| s.system_cpu_usage).unwrap_or(0);
    let cpu_delta = total(&stats.cpu_stats).saturating_sub(total(&stats.precpu_stats)) as f64;
    let system_delta = system(&stats.cpu_stats).saturating_sub(system(&stats.precpu_stats)) as f64;
    let cpus = stats
        .cpu_stats
        .as_ref()
        .and_then(|s| s.online_cpus)
        .filter(|n| *n > 0)
        .unwrap_or(1) as f64;
    if system_delta > 0.0 {
        (cpu_delta / system_delta * cpus * 100.0 * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// Memory used and the limit, in bytes.
fn memory(stats: &ContainerStatsResponse) -> (u64, u64) {
    let memory = stats.memory_stats.as_ref();
    // Page cache is not the app's memory: cgroup v1 calls it cache, v2 inactive_file.
    let cache = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("cache")).copied())
        .unwrap_or(0);
    let used = memory
        .and_then(|m| m.usage)
        .unwrap_or(0)
        .saturating_sub(cache);
    (used, memory.and_then(|m| m.limit).unwrap_or(0))
}

/// Bytes received and sent, over every interface.
fn network(stats: &ContainerStatsResponse) -> (u64, u64) {
    stats
        .networks
        .as_ref()
        .map(|networks| {
            networks.values().fold((0, 0), |(rx, tx), n| {
                (rx + n.rx_bytes.unwrap_or(0), tx + n.tx_bytes.unwrap_or(0))
            })
        })
        .unwrap_or((0, 0))
}

/// Bytes read and written, over every block device.
fn block_io(stats: &ContainerStatsResponse) -> (u64, u64) {
    stats
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
        .unwrap_or((0, 0))
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
    fn an_empty_sample_is_all_zero() {
        let stats = ContainerStatsResponse::default();
        assert_eq!(usage(&stats), Usage::default());
    }
}
