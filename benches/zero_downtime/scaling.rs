//! Cost as work grows: cryptus deploys of a color at 1, 4, 16, ... replicas,
//! on a stack of its own under a light load: total time, readiness, drain,
//! overhead, each step, and the peak memory of the cryptus process.
//!
//! `cryptus scale cryptus-<idle> N` records N for the idle color, so the next
//! deploy starts N replicas; each deploy is preceded by one, as the colors
//! alternate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use loadgen::{Load, Mix, Sample};
use serde::{Deserialize, Serialize};

use crate::{
    Flip, cryptus_flip, epoch, median, peak_rss_mib, round3, run_ok, steps_median, support,
};

/// The replica counts `cryptus scale` accepts.
pub const REPLICAS: std::ops::RangeInclusive<u32> = 1..=32;

/// Deploys at one replica count.
#[derive(Debug, Deserialize, Serialize)]
pub struct Row {
    pub replicas: u32,
    pub deploys: usize,
    /// Medians over the deploys, in seconds.
    pub deploy_seconds: f64,
    pub readiness_seconds: f64,
    pub drain_seconds: f64,
    pub overhead_seconds: f64,
    pub steps_median: BTreeMap<String, f64>,
    /// The largest peak resident memory of the deploys' cryptus process.
    pub peak_rss_mib: Option<f64>,
    /// The light load's requests while these deploys ran, and its failures.
    pub requests: u64,
    pub failed: u64,
    #[serde(skip, default)]
    window: (f64, f64),
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Scaling {
    pub rows: Vec<Row>,
    /// The overhead at the largest count over the one at the smallest.
    pub overhead_ratio: Option<f64>,
    pub largest: u32,
    pub smallest: u32,
    /// Why the section stopped before its end (its time budget ran out).
    pub cut_short: Option<String>,
    pub load: String,
}

/// Deploys `rounds` times at each count, in order, within `budget`.
pub async fn measure(counts: &[u32], rounds: usize, budget: Duration) -> Result<Scaling, String> {
    let began = Instant::now();
    let mut project = support::TestProject::new("bench-scale");
    for key in ["CRYPTUS_RATE_SITE", "CRYPTUS_RATE_API"] {
        project.set_env(key, "1000000r/s");
    }
    run_ok(
        project.run_async(&["start"]).await,
        "cryptus start (scaling)",
    )?;
    let mix = Mix {
        keep_alive: 1,
        new_connection: 0,
        slow: 0,
        slow_ms: 0,
        session: 0,
        keep_alive_no_retry: 1,
        post: 1,
        pause: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
    };
    let load = Load::start(project.lb_addr(), &mix);
    let load_epoch = epoch(SystemTime::now()) - load.began().elapsed().as_secs_f64();
    let since = |at: Instant| at.duration_since(load.began()).as_secs_f64();
    let image = support::app_image();
    let mut rows = Vec::new();
    let mut cut_short = None;
    let measured = async {
        'counts: for &replicas in counts {
            let from = since(Instant::now());
            let mut flips = Vec::new();
            for round in 0..rounds {
                if began.elapsed() > budget {
                    cut_short = Some(format!(
                        "the section's budget of {budget:?} ran out before {replicas} replicas, deploy {}",
                        round + 1
                    ));
                    break 'counts;
                }
                let idle = idle_color(&project).await?;
                let count = replicas.to_string();
                let service = format!("cryptus-{idle}");
                run_ok(
                    project.run_async(&["scale", &service, &count]).await,
                    &format!("cryptus scale {service} {count}"),
                )?;
                let version = format!("3.{replicas}.{round}");
                let deploy = [
                    "deploy", "--image", &image, "--version", &version, "--watch", "0s",
                    "--json",
                ];
                flips.push(cryptus_flip(&project, &deploy, "deploy", false, load_epoch).await?);
                eprintln!(
                    "scaling: deploy {}/{rounds} at {replicas} replicas done",
                    round + 1
                );
            }
            rows.push(row(replicas, flips, (from, since(Instant::now()))));
        }
        Ok::<(), String>(())
    }
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    measured?;
    for row in &mut rows {
        let (from, to) = row.window;
        let window: Vec<&Sample> = report
            .samples
            .iter()
            .filter(|s| s.at >= from && s.at < to + 1.0)
            .collect();
        row.requests = window.len() as u64;
        row.failed = window
            .iter()
            .filter(|s| s.outcome.failure_key().is_some())
            .count() as u64;
    }
    let (smallest, largest) = (
        rows.first().map_or(0, |r| r.replicas),
        rows.last().map_or(0, |r| r.replicas),
    );
    let overhead_ratio = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) if rows.len() > 1 && first.overhead_seconds > 0.0 => {
            Some(round3(last.overhead_seconds / first.overhead_seconds))
        }
        _ => None,
    };
    Ok(Scaling {
        rows,
        overhead_ratio,
        largest,
        smallest,
        cut_short,
        load: "1 keep-alive GET client, 1 never-retrying GET client, 1 POST client, 10 ms apart"
            .to_owned(),
    })
}

fn row(replicas: u32, flips: Vec<Flip>, window: (f64, f64)) -> Row {
    let of = |field: &dyn Fn(&Flip) -> f64| round3(median(flips.iter().map(field).collect()));
    Row {
        replicas,
        deploys: flips.len(),
        deploy_seconds: of(&|f| f.seconds),
        readiness_seconds: of(&|f| f.readiness),
        drain_seconds: of(&|f| f.drain),
        overhead_seconds: of(&|f| f.overhead),
        steps_median: steps_median(&flips),
        peak_rss_mib: peak_rss_mib(flips.iter()),
        requests: 0,
        failed: 0,
        window,
    }
}

/// The color not serving traffic: the one the next deploy starts.
async fn idle_color(project: &support::TestProject) -> Result<&'static str, String> {
    let output = run_ok(
        project.run_async(&["status", "--json"]).await,
        "cryptus status",
    )?;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cryptus status --json: {e}"))?;
    Ok(match status["active"].as_str() {
        Some("green") => "blue",
        _ => "green",
    })
}

/// The section as a table: a row per replica count, then the steps.
pub fn table(scaling: &Scaling) -> String {
    let mut out = format!(
        "cost as work grows: cryptus deploys at {} replicas, {} load\n\n",
        scaling
            .rows
            .iter()
            .map(|r| r.replicas.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        scaling.load
    );
    let first_overhead = scaling.rows.first().map_or(0.0, |r| r.overhead_seconds);
    out.push_str(
        "| replicas | deploys | deploy (median) | readiness | drain   | overhead | overhead / smallest | peak RSS   | failed requests |\n\
         |----------|---------|-----------------|-----------|---------|----------|---------------------|------------|-----------------|\n",
    );
    for r in &scaling.rows {
        let ratio = if first_overhead > 0.0 {
            format!("{:.2}x", r.overhead_seconds / first_overhead)
        } else {
            "n/a".to_owned()
        };
        let rss = r
            .peak_rss_mib
            .map_or("n/a".to_owned(), |m| format!("{m:.1} MiB"));
        out.push_str(&format!(
            "| {:<8} | {:<7} | {:<15} | {:<9} | {:<7} | {:<8} | {:<19} | {:<10} | {:<15} |\n",
            r.replicas,
            r.deploys,
            format!("{:.3} s", r.deploy_seconds),
            format!("{:.3} s", r.readiness_seconds),
            format!("{:.3} s", r.drain_seconds),
            format!("{:.3} s", r.overhead_seconds),
            ratio,
            rss,
            format!("{} of {}", r.failed, r.requests),
        ));
    }
    let mut names: Vec<&String> = scaling
        .rows
        .iter()
        .flat_map(|r| r.steps_median.keys())
        .collect();
    names.sort();
    names.dedup();
    out.push_str("\ncryptus steps at each replica count, median seconds:\n\n| step     |");
    for r in &scaling.rows {
        out.push_str(&format!(" {:<8} |", r.replicas));
    }
    out.push_str("\n|----------|");
    for _ in &scaling.rows {
        out.push_str("----------|");
    }
    out.push('\n');
    for name in names {
        out.push_str(&format!("| {name:<8} |"));
        for r in &scaling.rows {
            let value = r
                .steps_median
                .get(name)
                .map_or("-".to_owned(), |s| format!("{s:.3}"));
            out.push_str(&format!(" {value:<8} |"));
        }
        out.push('\n');
    }
    if let Some(ratio) = scaling.overhead_ratio {
        out.push_str(&format!(
            "\noverhead at {} replicas / at {}: {ratio:.2}x (target at most 1.5x)\n",
            scaling.largest, scaling.smallest
        ));
    }
    if let Some(why) = &scaling.cut_short {
        out.push_str(&format!("\ncut short: {why}\n"));
    }
    out
}
