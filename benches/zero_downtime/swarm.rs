//! The Swarm mode: the same flips on a 3-node Docker Swarm of the run's own
//! (`tests/support/swarm_lab.rs`: private dockerds in network namespaces),
//! under the same kinds of clients, beside the one-host figures.
//!
//! The lab's nodes are reachable only from inside the lab, so the clients
//! run there (`tests/support/lab_load.rs`: a thread in node 1's network
//! namespace), against nginx's host-mode port on the manager.

use std::time::{Duration, SystemTime};

use loadgen::{Kind, Report};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::support::lab_load::LabLoad;
use crate::support::swarm_lab::SwarmLab;
use crate::{Flip, cryptus_flip, deploy_args, epoch, median, round3, run_ok, support};

/// The replicas of each color on the lab: one task per node.
const REPLICAS: u32 = 3;

/// The longest a Swarm command may take here (a task's start on a busy
/// 2-core machine included).
const SWARM_TIMEOUT: &str = "240s";

/// What the Swarm mode measured.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Section {
    pub nodes: usize,
    pub replicas: u32,
    pub flips: usize,
    pub requests: u64,
    pub failed: u64,
    pub failures: std::collections::BTreeMap<String, u64>,
    pub failed_by_kind: std::collections::BTreeMap<String, u64>,
    pub stale_keepalive_closes: u64,
    pub session_requests: u64,
    /// Medians over the flips, in seconds.
    pub deploy_seconds: f64,
    pub overhead_seconds: f64,
    pub rollback_to_switch_seconds: f64,
    pub steps_median: std::collections::BTreeMap<String, f64>,
    /// A worker lost under load, after the flips.
    pub loss: Option<Loss>,
}

/// `cycles` deploys and rollbacks on a 3-node lab under the in-lab mix.
pub async fn measure(cycles: u32) -> Result<Section, String> {
    let lab = tokio::task::spawn_blocking(|| SwarmLab::up(3))
        .await
        .map_err(|e| format!("starting the 3-node lab: {e}"))?;
    let result = on_lab(&lab, cycles).await;
    tokio::task::spawn_blocking(move || drop(lab))
        .await
        .map_err(|e| format!("removing the lab: {e}"))?;
    result
}

async fn on_lab(lab: &SwarmLab, cycles: u32) -> Result<Section, String> {
    let mut project = support::TestProject::new("bench-swarm");
    project.set_env("DOCKER_HOST", &lab.manager());
    project.set_env("CRYPTUS_ORCHESTRATOR", "swarm");
    // Every worker's engine: a deploy asks each node for the image.
    project.set_env("CRYPTUS_SWARM_NODES", &lab.nodes_setting(&[2, 3]));
    for key in ["CRYPTUS_RATE_SITE", "CRYPTUS_RATE_API"] {
        project.set_env(key, "1000000r/s");
    }
    std::fs::write(
        project.path().join("compose/docker-compose.override.yml"),
        format!("services:\n  cryptus-blue:\n    deploy:\n      replicas: {REPLICAS}\n"),
    )
    .map_err(|e| format!("writing the override file: {e}"))?;
    run_ok(
        project
            .run_async(&["start", "--timeout", SWARM_TIMEOUT])
            .await,
        "cryptus start (swarm)",
    )?;
    let addr = format!("{}:{}", SwarmLab::address(1), project.port)
        .parse()
        .map_err(|e| format!("nginx's address in the lab: {e}"))?;
    let clients = LabLoad::start(lab, 1, addr);
    let load_epoch = epoch(SystemTime::now());
    let flips = flips(&project, cycles, load_epoch).await;
    // Requests after the last flip are counted too, as on one host.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = finish(clients).await?;
    let mut section = section(&report, &flips?);
    section.loss = Some(lose_a_worker(lab, &project, addr).await?);
    Ok(section)
}

async fn finish(clients: LabLoad) -> Result<Report, String> {
    tokio::task::spawn_blocking(move || clients.finish())
        .await
        .map_err(|e| format!("waiting for the lab's clients: {e}"))?
}

/// The node whose loss the Swarm mode measures: a worker.
const LOST_NODE: usize = 3;

/// How long the clients run after the loss.
const AFTER_LOSS: Duration = Duration::from_secs(40);

/// A worker lost under load, with cryptus not running.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Loss {
    pub node: String,
    /// The active color's tasks that ran on the lost node.
    pub active_tasks_lost: usize,
    pub requests: u64,
    pub failed: u64,
    /// Failed GETs (any client kind but the POSTs): nginx passes an
    /// idempotent request to another task, so each one is a fault.
    pub failed_gets: u64,
    /// POSTs that failed: one already sent to the lost node cannot be
    /// resent by any proxy (it may have run there).
    pub failed_posts: u64,
    /// Every failed request: its client kind, outcome, and when and after
    /// how long, from the loss.
    pub failures: Vec<String>,
    /// The slowest answer after the loss, and the slowest but the 2 s
    /// requests', in seconds.
    pub slowest_seconds: f64,
    pub slowest_fast_seconds: f64,
    /// Seconds from the loss until the active color again runs all its
    /// tasks, none on the lost node (`status`, asked every second).
    pub full_capacity_seconds: Option<f64>,
}

/// Every kind of client runs; node [`LOST_NODE`]'s link is cut and its
/// dockerd killed (its containers keep running, unreachable), as a machine
/// whose network and then power went; the clients run on for
/// [`AFTER_LOSS`] while `status` says when the swarm has replaced the lost
/// task.
async fn lose_a_worker(
    lab: &SwarmLab,
    project: &support::TestProject,
    addr: std::net::SocketAddr,
) -> Result<Loss, String> {
    let lost = lab.node_name(LOST_NODE);
    let on_lost = active_tasks(project)
        .await
        .map_or(0, |(_, nodes)| nodes.iter().filter(|n| **n == lost).count());
    let clients = LabLoad::start(lab, 1, addr);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Samples count from when the clients began, in their thread.
    let began = clients.began().ok_or("the lab's clients did not start")?;
    let cut = std::time::Instant::now();
    tokio::task::block_in_place(|| {
        lab.cut(LOST_NODE);
        lab.kill_engine(LOST_NODE);
    });
    let mut full_capacity = None;
    while cut.elapsed() < AFTER_LOSS {
        if full_capacity.is_none() && replaced(project, &lost).await {
            full_capacity = Some(round3(cut.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let report = finish(clients).await?;
    while full_capacity.is_none() && cut.elapsed() < Duration::from_secs(240) {
        if replaced(project, &lost).await {
            full_capacity = Some(round3(cut.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let at_cut = cut.duration_since(began).as_secs_f64();
    let mut loss = loss(&report, lost, at_cut, full_capacity);
    loss.active_tasks_lost = on_lost;
    Ok(loss)
}

/// The loss's figures from the clients' report; `at_cut` is when the link
/// was cut, in seconds from the clients' start (as their samples' `at`).
fn loss(report: &Report, node: String, at_cut: f64, full: Option<f64>) -> Loss {
    let after: Vec<&loadgen::Sample> = report
        .samples
        .iter()
        .filter(|s| s.at + s.latency >= at_cut)
        .collect();
    let slowest = |pick: &dyn Fn(&loadgen::Sample) -> bool| {
        round3(
            after
                .iter()
                .filter(|s| pick(s))
                .map(|s| s.latency)
                .fold(0.0, f64::max),
        )
    };
    let failed: Vec<&&loadgen::Sample> = after
        .iter()
        .filter(|s| s.outcome != loadgen::Outcome::Ok)
        .collect();
    Loss {
        node,
        active_tasks_lost: 0,
        requests: after.len() as u64,
        failed: failed.len() as u64,
        failed_gets: failed.iter().filter(|s| s.kind != Kind::Post).count() as u64,
        failed_posts: failed.iter().filter(|s| s.kind == Kind::Post).count() as u64,
        failures: failed
            .iter()
            .map(|s| {
                format!(
                    "{} {} sent {:.3} s after the cut, ended after {:.3} s",
                    s.kind.name(),
                    s.outcome.failure_key().unwrap_or_default(),
                    s.at - at_cut,
                    s.latency
                )
            })
            .collect(),
        slowest_seconds: slowest(&|_| true),
        slowest_fast_seconds: slowest(&|s| s.kind != Kind::Slow),
        full_capacity_seconds: full,
    }
}

/// Whether `status` shows the active color at all its tasks, running, none
/// on the node `lost`.
async fn replaced(project: &support::TestProject, lost: &str) -> bool {
    match active_tasks(project).await {
        Some((replicas, running)) => {
            running.len() as u64 == replicas && running.iter().all(|node| node != lost)
        }
        None => false,
    }
}

/// The active color's replicas and the nodes of its running tasks, as
/// `status` shows them.
async fn active_tasks(project: &support::TestProject) -> Option<(u64, Vec<String>)> {
    let output = project.run_async(&["status", "--json"]).await;
    let status: Value = serde_json::from_slice(&output.stdout).ok()?;
    let active = format!("cryptus-{}", status["active"].as_str()?);
    let service = status["services"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == active.as_str())?;
    let running = service["tasks"]
        .as_array()?
        .iter()
        .filter(|t| t["state"] == "running")
        .filter_map(|t| t["node"].as_str().map(str::to_owned))
        .collect();
    Some((service["replicas"].as_u64()?, running))
}

/// Deploy, pause, rollback, pause, `cycles` times, as on one host.
async fn flips(
    project: &support::TestProject,
    cycles: u32,
    load_epoch: f64,
) -> Result<Vec<Flip>, String> {
    let image = support::app_image();
    let pause = Duration::from_secs(2);
    tokio::time::sleep(pause).await;
    let mut flips = Vec::new();
    for cycle in 0..cycles {
        let version = format!("2.0.{cycle}");
        let extra = ["--timeout", SWARM_TIMEOUT, "--skip-hooks"];
        let args = deploy_args(&image, &version, &extra);
        flips.push(cryptus_flip(project, &args, "deploy", false, load_epoch).await?);
        tokio::time::sleep(pause).await;
        let args = [
            "rollback",
            "--json",
            "--timeout",
            SWARM_TIMEOUT,
            "--skip-hooks",
        ];
        flips.push(cryptus_flip(project, &args, "rollback", false, load_epoch).await?);
        tokio::time::sleep(pause).await;
    }
    Ok(flips)
}

fn section(report: &Report, flips: &[Flip]) -> Section {
    let of = |pick: &dyn Fn(&Flip) -> bool, field: &dyn Fn(&Flip) -> f64| {
        let values: Vec<f64> = flips.iter().filter(|f| pick(f)).map(field).collect();
        if values.is_empty() {
            0.0
        } else {
            round3(median(values))
        }
    };
    Section {
        nodes: 3,
        replicas: REPLICAS,
        flips: flips.len(),
        requests: report.requests,
        failed: report.failed,
        failures: report.failures.clone(),
        failed_by_kind: report.failed_by_kind.clone(),
        stale_keepalive_closes: report.stale_keepalive_closes,
        session_requests: report.by_kind.get("Session").copied().unwrap_or(0),
        deploy_seconds: of(&|f| f.operation == "deploy", &|f| f.seconds),
        overhead_seconds: of(&|_| true, &|f| f.overhead),
        rollback_to_switch_seconds: of(&|f| f.operation == "rollback", &|f| f.to_switch),
        steps_median: crate::steps_median(flips),
        loss: None,
    }
}

/// The Swarm's figures beside one host's, in the benchmark's table format.
pub fn table(swarm: &Section, one_host: &Value) -> String {
    let host = |key: &str| one_host[key].as_f64().unwrap_or(0.0);
    let ratio = |s: f64, h: f64| {
        if h > 0.0 {
            format!("{:.2}", s / h)
        } else {
            String::new()
        }
    };
    let failures = if swarm.failures.is_empty() {
        "-".to_owned()
    } else {
        let parts: Vec<String> = swarm
            .failures
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        parts.join(", ")
    };
    let seconds = |s: f64| format!("{s:.3} s");
    let rows = [
        (
            "flips",
            swarm.flips.to_string(),
            String::new(),
            String::new(),
        ),
        (
            "requests",
            swarm.requests.to_string(),
            one_host["requests"].to_string(),
            String::new(),
        ),
        (
            "failed requests",
            swarm.failed.to_string(),
            one_host["failed"].to_string(),
            String::new(),
        ),
        ("  by kind", failures, String::new(), String::new()),
        (
            "GETs that needed a retry (stale keep-alive)",
            swarm.stale_keepalive_closes.to_string(),
            one_host["stale_keepalive_closes"].to_string(),
            String::new(),
        ),
        (
            "session requests (a lost session fails one)",
            swarm.session_requests.to_string(),
            String::new(),
            String::new(),
        ),
        (
            "deploy time (median)",
            seconds(swarm.deploy_seconds),
            seconds(host("deploy_seconds")),
            ratio(swarm.deploy_seconds, host("deploy_seconds")),
        ),
        (
            "overhead = deploy - readiness - drain (median)",
            seconds(swarm.overhead_seconds),
            seconds(host("overhead_seconds")),
            ratio(swarm.overhead_seconds, host("overhead_seconds")),
        ),
        (
            "rollback to traffic back (median)",
            seconds(swarm.rollback_to_switch_seconds),
            seconds(host("rollback_cold_seconds")),
            ratio(
                swarm.rollback_to_switch_seconds,
                host("rollback_cold_seconds"),
            ),
        ),
    ];
    let mut out = format!(
        "Docker Swarm: {} nodes in network namespaces on this machine, {} tasks a color, \
         the same clients but wrk run inside the lab against nginx's host-mode port on the manager; \
         one host: the cryptus column above (its rollback is the cold one: a Swarm's old color is scaled to 0)\n\n",
        swarm.nodes, swarm.replicas
    );
    out.push_str(&crate::columns(
        ["", "swarm", "one host", "swarm/one host"],
        &rows,
    ));
    let steps: Vec<String> = swarm
        .steps_median
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out.push_str(&format!(
        "\ncryptus steps on the Swarm, median seconds: {}\n",
        steps.join(", ")
    ));
    if let Some(loss) = &swarm.loss {
        out.push_str(&loss_lines(loss));
    }
    out
}

fn loss_lines(loss: &Loss) -> String {
    let capacity = loss.full_capacity_seconds.map_or_else(
        || "not within 240 s".to_owned(),
        |s| format!("{s:.0} s after the loss"),
    );
    let mut out = format!(
        "\nlosing a worker ({}, with {} of the active color's tasks: its link cut, then its dockerd killed) \
         under the same clients, cryptus not running: {} requests from the loss on, {} failed ({} GETs, {} POSTs); \
         slowest answer {:.3} s ({:.3} s but the 2 s requests); full capacity (the active color's \
         tasks all running, none on the lost node) {capacity}\n",
        loss.node,
        loss.active_tasks_lost,
        loss.requests,
        loss.failed,
        loss.failed_gets,
        loss.failed_posts,
        loss.slowest_seconds,
        loss.slowest_fast_seconds,
    );
    for failure in &loss.failures {
        out.push_str(&format!("  failed: {failure}\n"));
    }
    out
}
