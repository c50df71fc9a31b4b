//! The zero-downtime benchmark: cryptus and the seed's script way, side by
//! side, under the same load, in the same run.
//!
//!   cargo bench --bench zero_downtime -- [--cycles 20] [--json] [--strict]
//!
//! It brings up its own stack (its own project, a loopback port, rate limits
//! raised above one client IP's load), runs a mix of keep-alive, new-
//! connection, 2 s, session and POST clients through the load balancer for
//! the whole run, and flips colors: each cycle deploys a new version then
//! rolls back, first with cryptus, then with `benches/baseline.sh`. Every
//! request is counted by outcome. Beside them, during each approach's flips,
//! wrk (a third-party load generator that never retries) sends its own GETs.
//!
//! Only the keep-alive GET clients retry a request once when a reused
//! connection closes under it, as browsers do; the never-retrying GET and
//! POST clients and wrk count that as a failure. It exits 1 if any of our
//! clients' requests failed during cryptus's flips, or wrk's (refused,
//! timed out, answered 400 or above, or sent and never answered): a count,
//! not a timing, so CI can run a short version as a guard. GETs that needed
//! a retry, and wrk's read and write errors (Debian's wrk 4.1.0 counts any
//! close by the server as one, even of an idle connection), are stale
//! keep-alive closes: reported, and failing only with --strict.

mod results;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loadgen::wrk::{StartError, Wrk, WrkReport};
use loadgen::{Kind, Load, Mix, Outcome, Report, Sample, percentile};
use serde::Serialize;
use serde_json::{Value, json};

struct Args {
    cycles: usize,
    json: bool,
    /// Stale keep-alive closes fail the run too.
    strict: bool,
    /// A Markdown file the figures are written to (docs/benchmark-results.md):
    /// the published figures come from this program, never typed by hand.
    results: Option<std::path::PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        cycles: 20,
        json: false,
        strict: false,
        results: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--json" => args.json = true,
            "--strict" => args.strict = true,
            "--results" => {
                args.results = Some(words.next().ok_or("--results takes a file")?.into());
            }
            "--cycles" => {
                args.cycles = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--cycles takes a whole number above 0")?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: zero_downtime [--cycles N] [--json] [--strict] [--results FILE]"
                ));
            }
        }
    }
    Ok(args)
}

/// One flip as an approach did it.
#[derive(Clone, Debug, Serialize)]
struct Flip {
    operation: &'static str,
    /// Whether the color switched to was still running (a warm standby).
    warm: bool,
    seconds: f64,
    readiness: f64,
    drain: f64,
    overhead: f64,
    /// When nginx began to serve the new color, in seconds from the load's start.
    switched: f64,
    /// Seconds from the command's start until nginx served the new color:
    /// for a rollback, how long users waited for the previous version.
    to_switch: f64,
    /// cryptus's own step timings.
    steps: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Serialize)]
struct Approach {
    requests: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    /// Failed requests by client kind: `post`, `keep_alive_no_retry`, ...
    failed_by_kind: BTreeMap<String, u64>,
    /// GETs that needed a retry: a reused keep-alive connection closed
    /// under them (the retrying clients only).
    stale_keepalive_closes: u64,
    /// The clients that never retry: their requests and failures.
    posts: u64,
    failed_posts: u64,
    gets_no_retry: u64,
    failed_gets_no_retry: u64,
    /// wrk, beside our clients during this approach's flips.
    wrk: ThirdParty,
    latency_ms_steady: Percentiles,
    latency_ms_near_switch: Percentiles,
    deploy_seconds: f64,
    readiness_seconds: f64,
    overhead_seconds: f64,
    drain_seconds: f64,
    /// Rollbacks: from the command's start until traffic is back on the
    /// previous version (the drain of the rolled-back color comes after).
    rollback_warm_seconds: Option<f64>,
    rollback_cold_seconds: Option<f64>,
    /// Rollbacks: the whole command, drain included.
    rollback_warm_total_seconds: Option<f64>,
    rollback_cold_total_seconds: Option<f64>,
    /// cryptus's own step timings, median over its flips.
    steps_median: BTreeMap<String, f64>,
    flips: Vec<Flip>,
}

/// A third-party load generator's view of one approach's flips.
#[derive(Debug, Default, Serialize)]
struct ThirdParty {
    /// The tool and how it ran.
    tool: String,
    run: bool,
    /// Why it did not run, or what went wrong with it.
    note: Option<String>,
    /// Its requests that failed: connect errors, timeouts, answers of 400
    /// and above, and requests sent and never answered.
    failed: Option<u64>,
    #[serde(flatten)]
    report: Option<WrkReport>,
}

impl ThirdParty {
    /// Failed requests, counted as failures of the run.
    fn failed(&self) -> u64 {
        self.failed.unwrap_or(0)
    }

    /// Read and write errors: in wrk's eyes, keep-alive connections closed
    /// by the server (idle or not; lost requests are in `failed`).
    fn closes(&self) -> u64 {
        self.report
            .as_ref()
            .map_or(0, |r| r.read_errors + r.write_errors)
    }
}

/// wrk's connections, and their pause between requests (as our clients').
const WRK_CONNECTIONS: u64 = 4;
const WRK_PATH: &str = "/api/health";

fn start_wrk(addr: std::net::SocketAddr, pause: Duration, bound: Duration) -> Result<Wrk, String> {
    match Wrk::start(addr, WRK_PATH, WRK_CONNECTIONS, pause, bound) {
        Ok(wrk) => Ok(wrk),
        Err(StartError::Missing) => {
            eprintln!(
                "warning: wrk is not installed, so the third-party client is not run (hint: apt-get install wrk)"
            );
            Err("not installed (hint: apt-get install wrk)".to_owned())
        }
        Err(err) => {
            eprintln!("warning: wrk did not start: {err}");
            Err(err.to_string())
        }
    }
}

async fn stop_wrk(wrk: Result<Wrk, String>, pause: Duration) -> ThirdParty {
    let tool = format!(
        "wrk -t 1 -c {WRK_CONNECTIONS} GET {WRK_PATH}, {} ms between a connection's requests",
        pause.as_millis()
    );
    let wrk = match wrk {
        Ok(wrk) => wrk,
        Err(note) => {
            return ThirdParty {
                tool,
                note: Some(note),
                ..ThirdParty::default()
            };
        }
    };
    match wrk.stop().await {
        Ok(report) => ThirdParty {
            tool,
            run: true,
            note: report
                .ended_early
                .then(|| "its -d ran out before the phase ended".to_owned()),
            failed: Some(
                report.connect_errors
                    + report.timeouts
                    + report.status_errors
                    + report.unanswered.unwrap_or(0),
            ),
            report: Some(report),
        },
        Err(err) => {
            eprintln!("warning: {err}");
            ThirdParty {
                tool,
                note: Some(err),
                ..ThirdParty::default()
            }
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    percentile(&mut values, 50.0)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn epoch_now() -> f64 {
    epoch(SystemTime::now())
}

fn epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn run_ok(output: Output, what: &str) -> Result<Output, String> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{what} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A cryptus flip: the wall time of the command, and its report.
async fn cryptus_flip(
    project: &support::TestProject,
    args: &[&str],
    operation: &'static str,
    warm: bool,
    load_epoch: f64,
) -> Result<Flip, String> {
    let began = Instant::now();
    let output = run_ok(
        project.run_async(args).await,
        &format!("cryptus {}", args.join(" ")),
    )?;
    let seconds = began.elapsed().as_secs_f64();
    let report: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cryptus --json: {e}"))?;
    let step = |name: &str| {
        report["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["step"] == name))
            .and_then(|s| s["seconds"].as_f64())
            .unwrap_or(0.0)
    };
    let readiness = report["readiness"].as_f64().unwrap_or(0.0);
    let drain = step("drain");
    let switched = report["switched_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros() as f64 / 1e6 - load_epoch)
        .unwrap_or(0.0);
    let steps = report["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| Some((s["step"].as_str()?.to_owned(), s["seconds"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Flip {
        operation,
        warm,
        seconds,
        readiness,
        drain,
        overhead: seconds - readiness - drain,
        switched,
        to_switch: switched - (epoch_now() - load_epoch - seconds),
        steps,
    })
}

/// A baseline flip, from the script's four timestamps.
async fn baseline_flip(
    project: &support::TestProject,
    mode: &'static str,
    to: &str,
    version: &str,
    load_epoch: f64,
) -> Result<Flip, String> {
    let script = std::path::Path::new(support::REPO).join("benches/baseline.sh");
    let began = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .args([
            project.name.as_str(),
            mode,
            to,
            version,
            &support::app_image(),
        ])
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let output = run_ok(output, "the baseline script")?;
    let seconds = began.elapsed().as_secs_f64();
    let times: Vec<f64> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let [start, healthy, uptime, switched, done] = times[..] else {
        return Err(format!(
            "the baseline printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        ));
    };
    // The app's own readiness: when it could first answer, by its uptime.
    let readiness = (healthy - uptime - start).max(0.0);
    let drain = done - switched;
    Ok(Flip {
        operation: if mode == "rollback" {
            "rollback"
        } else {
            "deploy"
        },
        warm: false,
        seconds,
        readiness,
        drain,
        overhead: seconds - readiness - drain,
        switched: switched - load_epoch,
        to_switch: switched - start,
        steps: BTreeMap::new(),
    })
}

fn summarize(samples: &[&Sample], flips: Vec<Flip>) -> Approach {
    let mut report = Report::default();
    let mut steady = Vec::new();
    let mut near = Vec::new();
    let mut stale = 0;
    let mut failed_by_kind = BTreeMap::new();
    let (mut posts, mut failed_posts, mut gets_no_retry, mut failed_gets_no_retry) = (0, 0, 0, 0);
    for sample in samples {
        let failure = sample.outcome.failure_key();
        report.requests += 1;
        let failed = u64::from(failure.is_some());
        if let Some(kind) = failure {
            report.failed += 1;
            *report.failures.entry(kind).or_default() += 1;
            *failed_by_kind
                .entry(sample.kind.name().to_owned())
                .or_default() += 1;
        }
        match sample.kind {
            Kind::Post => {
                posts += 1;
                failed_posts += failed;
            }
            Kind::KeepAliveNoRetry => {
                gets_no_retry += 1;
                failed_gets_no_retry += failed;
            }
            _ => {}
        }
        if sample.retried {
            stale += 1;
        }
        // The 2 s requests measure the drain, not the proxy's latency.
        if sample.kind != Kind::Slow && sample.outcome == Outcome::Ok {
            let middle = sample.at + sample.latency / 2.0;
            let close = flips.iter().any(|f| (middle - f.switched).abs() <= 1.0);
            if close {
                near.push(sample.latency * 1000.0)
            } else {
                steady.push(sample.latency * 1000.0)
            }
        }
    }
    let percentiles = |values: &mut Vec<f64>| Percentiles {
        p50: round3(percentile(values, 50.0)),
        p99: round3(percentile(values, 99.0)),
        max: round3(values.iter().copied().fold(0.0, f64::max)),
    };
    let of = |pick: &dyn Fn(&Flip) -> bool, field: &dyn Fn(&Flip) -> f64| {
        let values: Vec<f64> = flips.iter().filter(|f| pick(f)).map(field).collect();
        (!values.is_empty()).then(|| round3(median(values)))
    };
    let deploys = |f: &Flip| f.operation == "deploy";
    Approach {
        requests: report.requests,
        failed: report.failed,
        failures: report.failures,
        failed_by_kind,
        stale_keepalive_closes: stale,
        posts,
        failed_posts,
        gets_no_retry,
        failed_gets_no_retry,
        wrk: ThirdParty::default(),
        latency_ms_steady: percentiles(&mut steady),
        latency_ms_near_switch: percentiles(&mut near),
        deploy_seconds: of(&deploys, &|f| f.seconds).unwrap_or(0.0),
        readiness_seconds: of(&|_| true, &|f| f.readiness).unwrap_or(0.0),
        overhead_seconds: of(&|_| true, &|f| f.overhead).unwrap_or(0.0),
        drain_seconds: of(&|_| true, &|f| f.drain).unwrap_or(0.0),
        rollback_warm_seconds: of(&|f| f.operation == "rollback" && f.warm, &|f| f.to_switch),
        rollback_cold_seconds: of(&|f| f.operation == "rollback" && !f.warm, &|f| f.to_switch),
        rollback_warm_total_seconds: of(&|f| f.operation == "rollback" && f.warm, &|f| f.seconds),
        rollback_cold_total_seconds: of(&|f| f.operation == "rollback" && !f.warm, &|f| f.seconds),
        steps_median: {
            let mut names: Vec<String> =
                flips.iter().flat_map(|f| f.steps.keys().cloned()).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|name| {
                    let values: Vec<f64> = flips
                        .iter()
                        .filter_map(|f| f.steps.get(&name).copied())
                        .collect();
                    (name, round3(median(values)))
                })
                .collect()
        },
        flips,
    }
}

/// The version nginx itself reports (`nginx -v`), as cryptus asks it: an
/// image need not set NGINX_VERSION.
fn nginx_version(project: &support::TestProject) -> String {
    let container = format!("{}-nginx-1", project.name);
    let answer = support::on_engine(move |docker| async move {
        use futures_util::StreamExt;
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(vec!["nginx".to_owned(), "-v".to_owned()]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let mut text = String::new();
        if let Ok(exec) = docker.create_exec(&container, options).await
            && let Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) =
                docker.start_exec(&exec.id, None).await
        {
            while let Some(Ok(chunk)) = output.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        text
    });
    cryptus::nginx::parse_version(&answer).unwrap_or_else(|| "unknown".to_owned())
}

fn engine_version() -> String {
    support::on_engine(|docker| async move {
        docker
            .version()
            .await
            .map(|v| {
                format!(
                    "{} (API {})",
                    v.version.unwrap_or_default(),
                    v.api_version.unwrap_or_default()
                )
            })
            .unwrap_or_default()
    })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory:.0} GiB")
}

async fn bench(args: &Args) -> Result<(Value, bool), String> {
    let mut project = support::TestProject::new("bench");
    for key in ["CRYPTUS_RATE_SITE", "CRYPTUS_RATE_API"] {
        project.set_env(key, "1000000r/s");
    }
    run_ok(project.run_async(&["start"]).await, "cryptus start")?;
    let mix = Mix {
        keep_alive: 3,
        new_connection: 1,
        slow: 2,
        slow_ms: 2000,
        session: 1,
        keep_alive_no_retry: 1,
        post: 2,
        pause: Duration::from_millis(6),
        timeout: Duration::from_secs(10),
    };
    let load = Load::start(project.lb_addr(), &mix);
    let load_epoch = epoch(SystemTime::now()) - load.began().elapsed().as_secs_f64();
    let since = |at: Instant| at.duration_since(load.began()).as_secs_f64();
    let pause = Duration::from_secs(2);
    let image = support::app_image();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // wrk runs through each approach's flips and the 2 s after, like the
    // window our clients' samples are counted in; -d only bounds it.
    let wrk_bound = Duration::from_secs(60 + 180 * args.cycles as u64);

    // cryptus: deploy a new version, roll back; every other deploy keeps the
    // old color running, so half the rollbacks are warm and half cold.
    let wrk = start_wrk(project.lb_addr(), mix.pause, wrk_bound);
    let cryptus_began = since(Instant::now());
    let mut flips = Vec::new();
    let mut status_ms = Vec::new();
    for cycle in 0..args.cycles {
        let version = format!("1.{cycle}.0");
        let warm = cycle % 2 == 0;
        let mut deploy = vec![
            "deploy",
            "--image",
            &image,
            "--version",
            &version,
            "--watch",
            "0s",
            "--json",
        ];
        if warm {
            deploy.push("--keep-standby");
        }
        flips.push(cryptus_flip(&project, &deploy, "deploy", false, load_epoch).await?);
        tokio::time::sleep(pause).await;
        flips.push(
            cryptus_flip(
                &project,
                &["rollback", "--json"],
                "rollback",
                warm,
                load_epoch,
            )
            .await?,
        );
        tokio::time::sleep(pause).await;
        let began = Instant::now();
        run_ok(
            project.run_async(&["status", "--json"]).await,
            "cryptus status",
        )?;
        status_ms.push(began.elapsed().as_secs_f64() * 1000.0);
        eprintln!("cryptus cycle {}/{} done", cycle + 1, args.cycles);
    }
    let cryptus_ended = since(Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cryptus_wrk = stop_wrk(wrk, mix.pause).await;

    // The seed's way, on the same stack, under the same load.
    let wrk = start_wrk(project.lb_addr(), mix.pause, wrk_bound);
    let baseline_began = since(Instant::now());
    let mut baseline = Vec::new();
    let active = project.status()["active"]
        .as_str()
        .unwrap_or("blue")
        .to_owned();
    let idle = if active == "blue" { "green" } else { "blue" };
    for cycle in 0..args.cycles {
        let version = format!("2.{cycle}.0");
        baseline.push(baseline_flip(&project, "deploy", idle, &version, load_epoch).await?);
        tokio::time::sleep(pause).await;
        baseline.push(baseline_flip(&project, "rollback", &active, &version, load_epoch).await?);
        tokio::time::sleep(pause).await;
        eprintln!("baseline cycle {}/{} done", cycle + 1, args.cycles);
    }
    let baseline_ended = since(Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_wrk = stop_wrk(wrk, mix.pause).await;
    let report = load.stop().await;

    let window = |from: f64, to: f64| -> Vec<&Sample> {
        report
            .samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .collect()
    };
    let mut cryptus = summarize(&window(cryptus_began, cryptus_ended + 2.0), flips);
    cryptus.wrk = cryptus_wrk;
    let mut seed = summarize(&window(baseline_began, baseline_ended + 2.0), baseline);
    seed.wrk = baseline_wrk;
    let ratio = |a: f64, b: f64| if b > 0.0 { round3(a / b) } else { 0.0 };
    let status_p50 = round3(median(status_ms));
    let targets = json!({
        "no_failed_request": cryptus.failed == 0,
        "no_failed_post": cryptus.failed_posts == 0,
        "no_stale_keep_alive_close": cryptus.stale_keepalive_closes == 0,
        // null: wrk did not run.
        "no_failed_wrk_request": cryptus.wrk.run.then(|| cryptus.wrk.failed() == 0),
        "no_wrk_error": cryptus.wrk.run.then(|| cryptus.wrk.report.as_ref().is_some_and(WrkReport::clean)),
        "at_least_20_flips": cryptus.flips.len() >= 20,
        "at_least_50000_requests": cryptus.requests >= 50_000,
        "median_overhead_at_most_300ms": cryptus.overhead_seconds <= 0.3,
        "median_warm_rollback_at_most_1s": cryptus.rollback_warm_seconds.is_some_and(|s| s <= 1.0),
        "overhead_5x_lower_than_baseline": cryptus.overhead_seconds * 5.0 <= seed.overhead_seconds,
    });
    // Failed requests of every kind of client count (failed POSTs among
    // them), and wrk's; stale keep-alive closes only with --strict, until
    // cryptus renders nginx's keepalive_min_timeout (1.27.4+).
    let clean = cryptus.failed == 0
        && cryptus.failed_posts == 0
        && cryptus.wrk.failed() == 0
        && (!args.strict || (cryptus.stale_keepalive_closes == 0 && cryptus.wrk.closes() == 0));
    // cryptus renders keepalive_min_timeout where nginx has it (1.27.4+).
    let nginx = nginx_version(&project);
    let parts: Vec<u32> = nginx.split('.').map_while(|p| p.parse().ok()).collect();
    let keepalive_min_timeout = parts >= vec![1, 27, 4];
    let document = json!({
        "cycles": args.cycles,
        "strict": args.strict,
        "flips_each": cryptus.flips.len(),
        "machine": machine(),
        "engine": engine_version(),
        "nginx": nginx,
        "keepalive_min_timeout": keepalive_min_timeout,
        "cryptus_status_ms_p50": status_p50,
        "cryptus": cryptus,
        "baseline": seed,
        "ratio_cryptus_to_baseline": {
            "deploy": ratio(cryptus.deploy_seconds, seed.deploy_seconds),
            "overhead": ratio(cryptus.overhead_seconds, seed.overhead_seconds),
            "rollback_cold": ratio(cryptus.rollback_cold_seconds.unwrap_or(0.0), seed.rollback_cold_seconds.unwrap_or(0.0)),
        },
        "targets": targets,
    });
    Ok((document, clean))
}

fn table(d: &Value) -> String {
    let c = &d["cryptus"];
    let b = &d["baseline"];
    let seconds = |v: &Value| v.as_f64().map_or("n/a".to_owned(), |s| format!("{s:.3} s"));
    let lat = |v: &Value| format!("{}/{}/{} ms", v["p50"], v["p99"], v["max"]);
    let kinds = |v: &Value| {
        let map = v.as_object().cloned().unwrap_or_default();
        if map.is_empty() {
            "-".to_owned()
        } else {
            map.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let of = |part: &Value, whole: &Value| format!("{part} of {whole}");
    let wrk = |w: &Value, show: &dyn Fn(&Value) -> String| {
        if w["run"] == true {
            show(w)
        } else {
            "not run".to_owned()
        }
    };
    let socket_errors = |w: &Value| {
        format!(
            "{}/{}/{}/{}",
            w["connect_errors"], w["read_errors"], w["write_errors"], w["timeouts"]
        )
    };
    let r = &d["ratio_cryptus_to_baseline"];
    let rows = [
        (
            "requests",
            c["requests"].to_string(),
            b["requests"].to_string(),
            String::new(),
        ),
        (
            "failed requests",
            c["failed"].to_string(),
            b["failed"].to_string(),
            String::new(),
        ),
        (
            "  by kind",
            kinds(&c["failures"]),
            kinds(&b["failures"]),
            String::new(),
        ),
        (
            "  by client kind",
            kinds(&c["failed_by_kind"]),
            kinds(&b["failed_by_kind"]),
            String::new(),
        ),
        (
            "GETs that needed a retry (stale keep-alive)",
            c["stale_keepalive_closes"].to_string(),
            b["stale_keepalive_closes"].to_string(),
            String::new(),
        ),
        (
            "failed GETs, clients that never retry",
            of(&c["failed_gets_no_retry"], &c["gets_no_retry"]),
            of(&b["failed_gets_no_retry"], &b["gets_no_retry"]),
            String::new(),
        ),
        (
            "failed POSTs (never retried)",
            of(&c["failed_posts"], &c["posts"]),
            of(&b["failed_posts"], &b["posts"]),
            String::new(),
        ),
        (
            "wrk (never retries): requests answered",
            wrk(&c["wrk"], &|w| w["requests"].to_string()),
            wrk(&b["wrk"], &|w| w["requests"].to_string()),
            String::new(),
        ),
        (
            "wrk failed requests",
            wrk(&c["wrk"], &|w| w["failed"].to_string()),
            wrk(&b["wrk"], &|w| w["failed"].to_string()),
            String::new(),
        ),
        (
            "  sent, never answered / answers >= 400",
            wrk(&c["wrk"], &|w| {
                format!("{} / {}", w["unanswered"], w["status_errors"])
            }),
            wrk(&b["wrk"], &|w| {
                format!("{} / {}", w["unanswered"], w["status_errors"])
            }),
            String::new(),
        ),
        (
            "wrk socket errors connect/read/write/timeout",
            wrk(&c["wrk"], &socket_errors),
            wrk(&b["wrk"], &socket_errors),
            String::new(),
        ),
        (
            "latency p50/p99/max, steady",
            lat(&c["latency_ms_steady"]),
            lat(&b["latency_ms_steady"]),
            String::new(),
        ),
        (
            "latency p50/p99/max, switch ±1 s",
            lat(&c["latency_ms_near_switch"]),
            lat(&b["latency_ms_near_switch"]),
            String::new(),
        ),
        (
            "deploy time (median)",
            seconds(&c["deploy_seconds"]),
            seconds(&b["deploy_seconds"]),
            r["deploy"].to_string(),
        ),
        (
            "app readiness, start to healthy (median)",
            seconds(&c["readiness_seconds"]),
            seconds(&b["readiness_seconds"]),
            String::new(),
        ),
        (
            "drain, switch to old color stopped (median)",
            seconds(&c["drain_seconds"]),
            seconds(&b["drain_seconds"]),
            String::new(),
        ),
        (
            "overhead = deploy - readiness - drain (median)",
            seconds(&c["overhead_seconds"]),
            seconds(&b["overhead_seconds"]),
            r["overhead"].to_string(),
        ),
        (
            "rollback to traffic back, warm standby (median)",
            seconds(&c["rollback_warm_seconds"]),
            seconds(&b["rollback_warm_seconds"]),
            String::new(),
        ),
        (
            "rollback to traffic back, cold (median)",
            seconds(&c["rollback_cold_seconds"]),
            seconds(&b["rollback_cold_seconds"]),
            r["rollback_cold"].to_string(),
        ),
        (
            "rollback command incl. drain, warm (median)",
            seconds(&c["rollback_warm_total_seconds"]),
            seconds(&b["rollback_warm_total_seconds"]),
            String::new(),
        ),
        (
            "rollback command incl. drain, cold (median)",
            seconds(&c["rollback_cold_total_seconds"]),
            seconds(&b["rollback_cold_total_seconds"]),
            String::new(),
        ),
        (
            "`cryptus status` (median)",
            format!("{} ms", d["cryptus_status_ms_p50"]),
            "-".to_owned(),
            String::new(),
        ),
    ];
    let mut out = format!(
        "zero-downtime benchmark: {} cycles of deploy + rollback ({} flips each way), nginx {}, keepalive_min_timeout {}\nmachine: {}; Docker Engine {}\n\n",
        d["cycles"],
        d["flips_each"],
        d["nginx"].as_str().unwrap_or("?"),
        if d["keepalive_min_timeout"] == true {
            "on"
        } else {
            "not available"
        },
        d["machine"].as_str().unwrap_or("?"),
        d["engine"].as_str().unwrap_or("?"),
    );
    out.push_str(&format!(
        "| {:<47} | {:<24} | {:<24} | {:<16} |\n",
        "", "cryptus", "baseline (seed's way)", "cryptus/baseline"
    ));
    out.push_str(&format!(
        "|{}|{}|{}|{}|\n",
        "-".repeat(49),
        "-".repeat(26),
        "-".repeat(26),
        "-".repeat(18)
    ));
    for (name, cryptus, baseline, ratio) in rows {
        out.push_str(&format!(
            "| {name:<47} | {cryptus:<24} | {baseline:<24} | {ratio:<16} |\n"
        ));
    }
    for (name, w) in [("cryptus", &c["wrk"]), ("baseline", &b["wrk"])] {
        if let Some(note) = w["note"].as_str() {
            out.push_str(&format!("\nwrk during {name}'s flips: {note}"));
        }
    }
    if let Some(tool) = c["wrk"]["tool"].as_str() {
        out.push_str(&format!("\nthird-party client: {tool}\n"));
    }
    if let Some(steps) = c["steps_median"].as_object() {
        let line: Vec<String> = steps.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!(
            "\ncryptus steps, median seconds: {}\n",
            line.join(", ")
        ));
    }
    out.push_str("\ntargets:\n");
    if let Some(targets) = d["targets"].as_object() {
        for (name, met) in targets {
            let verdict = match met.as_bool() {
                Some(true) => "met ",
                Some(false) => "MISS",
                None => "n/a ",
            };
            out.push_str(&format!("  {verdict} {}\n", name.replace('_', " ")));
        }
    }
    out
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(bench(&args)) {
        Ok((document, clean)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&document).unwrap_or_default()
                );
            } else {
                print!("{}", table(&document));
            }
            if let Some(path) = &args.results {
                let command = format!(
                    "cargo bench --locked --bench zero_downtime -- --cycles {}{} --results {}",
                    args.cycles,
                    if args.strict { " --strict" } else { "" },
                    path.display()
                );
                if let Err(err) = results::write(
                    path,
                    "The zero-downtime benchmark",
                    &command,
                    &table(&document),
                ) {
                    eprintln!("error: {err}");
                    return std::process::ExitCode::from(2);
                }
            }
            if clean {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: requests failed during cryptus's flips (our clients' or wrk's{})",
                    if args.strict {
                        ", or a keep-alive connection closed under one (--strict)"
                    } else {
                        ""
                    }
                );
                std::process::ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::from(2)
        }
    }
}
