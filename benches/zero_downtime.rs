//! The zero-downtime benchmark: cryptus and the seed's script way, side by
//! side, under the same load, in the same run.
//!
//!   cargo bench --bench zero_downtime -- [--cycles 20] [--json] [--strict]
//!       [--results FILE] [--scaling 1,4,16|off] [--swarm 3|off] [--svg FILE|off]
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
//!
//! With --results (or --scaling), it then measures deploys at several replica
//! counts on a stack of its own (`zero_downtime/scaling.rs`), and with
//! --results (or --svg) it draws latency and failures over time
//! (`zero_downtime/picture.rs`). With --results (or --swarm), it runs the
//! flips again on a 3-node Docker Swarm lab of its own
//! (`zero_downtime/swarm.rs`), its figures beside one host's.

// Under zero_downtime/ so that cargo does not take them for benches of their own.
#[path = "zero_downtime/floors.rs"]
mod floors;
#[path = "zero_downtime/picture.rs"]
mod picture;
mod results;
#[path = "zero_downtime/scaling.rs"]
mod scaling;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "zero_downtime/swarm.rs"]
mod swarm;

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
    /// Replica counts to measure deploys at (`--scaling 1,4,16`); on by
    /// default with --results, off otherwise (CI's short run).
    scaling: Vec<u32>,
    /// Deploy + rollback cycles on a 3-node Swarm lab (`--swarm N|off`);
    /// 3 by default with --results, off otherwise (CI's short run).
    swarm: u32,
    /// The picture of latency and failures over time (`--svg FILE`); by
    /// default benchmark.svg beside the results file.
    svg: Option<std::path::PathBuf>,
}

/// Deploys at each replica count of the scaling section, and the section's
/// time budget: it stops there and says so.
const SCALING_ROUNDS: usize = 3;
/// At most this many canary cycles (deploy with --canary 10,50, rollback).
const CANARY_CYCLES: usize = 3;
/// The part of a cryptus command that no step times.
const OUTSIDE_STEPS: &str = "outside the steps";
/// The start and health steps less the app's own readiness: what cryptus
/// adds to bringing the new color up.
const BEYOND_READINESS: &str = "start + health beyond the app's readiness";
const SCALING_BUDGET: Duration = Duration::from_secs(900);
/// The Swarm mode's deploy + rollback cycles with --results: 6 flips.
const SWARM_CYCLES: u32 = 3;

const USAGE: &str = "usage: zero_downtime [--cycles N] [--json] [--strict] [--results FILE] [--scaling N,N,...|off] [--swarm N|off] [--svg FILE|off]";

/// `1,4,16`: up to 8 counts, each a replica count `cryptus scale` accepts.
fn replica_counts(list: &str) -> Result<Vec<u32>, String> {
    if list == "off" {
        return Ok(Vec::new());
    }
    let counts: Vec<u32> = list
        .split(',')
        .map(|n| n.trim().parse::<u32>().ok().filter(|n| scaling::REPLICAS.contains(n)))
        .collect::<Option<_>>()
        .filter(|counts: &Vec<u32>| !counts.is_empty() && counts.len() <= 8)
        .ok_or_else(|| {
            format!(
                "--scaling takes up to 8 replica counts from {} to {}, comma-separated (1,4,16), or off",
                scaling::REPLICAS.start(),
                scaling::REPLICAS.end()
            )
        })?;
    Ok(counts)
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        cycles: 20,
        json: false,
        strict: false,
        results: None,
        scaling: Vec::new(),
        swarm: 0,
        svg: None,
    };
    let (mut scaling, mut svg, mut swarm) = (None, None, None);
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
            "--scaling" => {
                scaling = Some(replica_counts(
                    &words
                        .next()
                        .ok_or("--scaling takes replica counts (1,4,16) or off")?,
                )?);
            }
            "--svg" => {
                svg = Some(words.next().ok_or("--svg takes a file, or off")?);
            }
            "--swarm" => {
                let word = words.next().unwrap_or_default();
                swarm = Some(match word.as_str() {
                    "off" => 0,
                    n => n
                        .parse()
                        .ok()
                        .filter(|n| (1..=20).contains(n))
                        .ok_or("--swarm takes a number of cycles (1 to 20), or off")?,
                });
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    args.scaling = match scaling {
        Some(counts) => counts,
        None if args.results.is_some() => vec![1, 4, 16],
        None => Vec::new(),
    };
    args.swarm = swarm.unwrap_or(if args.results.is_some() {
        SWARM_CYCLES
    } else {
        0
    });
    args.svg = match svg.as_deref() {
        Some("off") => None,
        Some(path) => Some(path.into()),
        None => args
            .results
            .as_ref()
            .map(|results| results.with_file_name("benchmark.svg")),
    };
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
    /// The cryptus process's peak resident memory, in kB (its VmHWM); none
    /// for the baseline, a script of many processes.
    peak_rss_kb: Option<u64>,
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
    /// Deploys only: the command less readiness, drain and a canary's holds.
    deploy_overhead_seconds: f64,
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
    /// The overhead's parts, median of each: every step but the drain,
    /// start and health counted beyond the app's own readiness.
    overhead_parts_median: BTreeMap<String, f64>,
    /// The cryptus process's peak resident memory over its deploys, in MiB.
    peak_rss_mib: Option<f64>,
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

/// Runs a command to its end (as `Command::output` does) within `deadline`,
/// killing it past that, and returns its output and its peak resident
/// memory in kB: the kernel's high-water mark of its own memory (VmHWM in
/// /proc/<pid>/status), read every 2 ms until it ends, so only growth in its
/// last 2 ms could be missed. Not wait4's ru_maxrss: on Linux that keeps the
/// high-water mark of the memory the child had before exec, which after
/// posix_spawn (a vfork) is this benchmark's own, far larger.
async fn run_measured(
    mut command: std::process::Command,
    deadline: Duration,
    what: &str,
) -> Result<(Output, u64), String> {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let what = what.to_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("running {what}: {e}"))?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| format!("{what}'s pid: {e}"))?;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    tokio::task::spawn_blocking(move || {
        let status_file = format!("/proc/{pid}/status");
        let began = Instant::now();
        let mut peak_kb = 0;
        let mut killed = false;
        loop {
            // Read before asking whether it ended: until it is reaped (below)
            // the pid is this child's, and its status file too.
            if let Some(kb) = std::fs::read_to_string(&status_file)
                .ok()
                .and_then(|status| vm_hwm_kb(&status))
            {
                peak_kb = peak_kb.max(kb);
            }
            // SAFETY: a zeroed siginfo_t is valid; waitid only writes to it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: asks whether our own child ended, without reaping it.
            let waited = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
                )
            };
            if waited != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("waiting for {what}: {err}"));
            }
            // SAFETY: reading the union member waitid filled for P_PID.
            if unsafe { info.si_pid() } == pid {
                break;
            }
            if !killed && began.elapsed() > deadline {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut status = 0;
        // SAFETY: reaps our own child, which has ended (waitid above).
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped != pid {
            return Err(format!(
                "reaping {what}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // The child is reaped: dropping its handle does not wait again.
        drop(child);
        if killed {
            return Err(format!("{what} still running after {deadline:?}: killed"));
        }
        let output = Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        Ok((output, peak_kb))
    })
    .await
    .map_err(|e| format!("waiting for a cryptus run: {e}"))?
}

/// `VmHWM:   13824 kB` in /proc/<pid>/status: the peak resident memory.
fn vm_hwm_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
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
    let what = format!("cryptus {}", args.join(" "));
    let (output, peak_rss_kb) =
        run_measured(project.command(args), support::RUN_DEADLINE, &what).await?;
    let output = run_ok(output, &what)?;
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
    // A canary's holds are the time asked for, not cryptus's overhead.
    let holds: f64 = report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["step"]
                .as_str()
                .is_some_and(|name| name.starts_with("hold "))
        })
        .filter_map(|s| s["seconds"].as_f64())
        .sum();
    let switched = report["switched_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros() as f64 / 1e6 - load_epoch)
        .unwrap_or(0.0);
    let mut steps: BTreeMap<String, f64> = report["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| Some((s["step"].as_str()?.to_owned(), s["seconds"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    // What no step times: the process's start, reading the compose files,
    // connecting, finding nginx, releasing the lock and the exit. Summed
    // over the report's steps, which run one after the other.
    let timed: f64 = report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["seconds"].as_f64())
        .sum();
    let outside = seconds - timed;
    steps.insert(OUTSIDE_STEPS.to_owned(), round3(outside.max(0.0)));
    Ok(Flip {
        operation,
        warm,
        seconds,
        readiness,
        drain,
        overhead: seconds - readiness - drain - holds,
        switched,
        to_switch: switched - (epoch_now() - load_epoch - seconds),
        steps,
        peak_rss_kb: Some(peak_rss_kb),
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
        peak_rss_kb: None,
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
        deploy_overhead_seconds: of(&deploys, &|f| f.overhead).unwrap_or(0.0),
        drain_seconds: of(&|_| true, &|f| f.drain).unwrap_or(0.0),
        rollback_warm_seconds: of(&|f| f.operation == "rollback" && f.warm, &|f| f.to_switch),
        rollback_cold_seconds: of(&|f| f.operation == "rollback" && !f.warm, &|f| f.to_switch),
        rollback_warm_total_seconds: of(&|f| f.operation == "rollback" && f.warm, &|f| f.seconds),
        rollback_cold_total_seconds: of(&|f| f.operation == "rollback" && !f.warm, &|f| f.seconds),
        steps_median: steps_median(&flips),
        overhead_parts_median: overhead_parts_median(&flips),
        peak_rss_mib: peak_rss_mib(flips.iter().filter(|f| deploys(f))),
        flips,
    }
}

/// The median of each step over the flips.
fn steps_median(flips: &[Flip]) -> BTreeMap<String, f64> {
    let mut names: Vec<String> = flips.iter().flat_map(|f| f.steps.keys().cloned()).collect();
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
}

/// The median of each part of the overhead (deploy - readiness - drain),
/// over the flips that have it: the time of every step but the drain,
/// with the start and health steps less the app's own readiness, and the
/// time outside the steps.
fn overhead_parts_median(flips: &[Flip]) -> BTreeMap<String, f64> {
    let parts: Vec<BTreeMap<String, f64>> = flips
        .iter()
        .filter(|f| !f.steps.is_empty())
        .map(|f| {
            let mut parts: BTreeMap<String, f64> = f
                .steps
                .iter()
                // A canary's holds are the time asked for, not overhead.
                .filter(|(name, _)| {
                    !matches!(name.as_str(), "drain" | "start" | "health")
                        && !name.starts_with("hold ")
                })
                .map(|(name, seconds)| (name.clone(), *seconds))
                .collect();
            let up = f.steps.get("start").copied().unwrap_or(0.0)
                + f.steps.get("health").copied().unwrap_or(0.0);
            parts.insert(BEYOND_READINESS.to_owned(), (up - f.readiness).max(0.0));
            parts
        })
        .collect();
    let mut names: Vec<&String> = parts.iter().flat_map(|p| p.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            // Over the flips that have the part: a rollback gets no image.
            let values: Vec<f64> = parts.iter().filter_map(|p| p.get(name).copied()).collect();
            (name.clone(), round3(median(values)))
        })
        .collect()
}

/// The largest peak resident memory of the cryptus processes, in MiB.
fn peak_rss_mib<'a>(flips: impl Iterator<Item = &'a Flip>) -> Option<f64> {
    flips
        .filter_map(|f| f.peak_rss_kb)
        .max()
        .map(|kb| round3(kb as f64 / 1024.0))
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
    let mix = Mix::every_kind();
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
    let mut health_ms = Vec::new();
    let mut floors = floors::Floors::default();
    for cycle in 0..args.cycles {
        let version = format!("1.{cycle}.0");
        let warm = cycle % 2 == 0;
        let deploy = deploy_args(
            &image,
            &version,
            if warm { &["--keep-standby"] } else { &[] },
        );
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
        let began = Instant::now();
        run_ok(
            project.run_async(&["health", "--json"]).await,
            "cryptus health",
        )?;
        health_ms.push(began.elapsed().as_secs_f64() * 1000.0);
        floors.measure(&project.name).await?;
        eprintln!("cryptus cycle {}/{} done", cycle + 1, args.cycles);
    }
    let cryptus_ended = since(Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cryptus_wrk = stop_wrk(wrk, mix.pause).await;

    // Canary releases, on the same stack under the same load: a 10,50
    // canary held 1 s a step, then a rollback.
    let canary_began = since(Instant::now());
    let mut canary_flips = Vec::new();
    let canary_cycles = args.cycles.min(CANARY_CYCLES);
    for cycle in 0..canary_cycles {
        let version = format!("3.{cycle}.0");
        let deploy = deploy_args(&image, &version, &["--canary", "10,50", "--step", "1s"]);
        canary_flips.push(cryptus_flip(&project, &deploy, "deploy", false, load_epoch).await?);
        tokio::time::sleep(pause).await;
        let rollback = ["rollback", "--json"];
        canary_flips.push(cryptus_flip(&project, &rollback, "rollback", false, load_epoch).await?);
        tokio::time::sleep(pause).await;
        eprintln!("canary cycle {}/{canary_cycles} done", cycle + 1);
    }
    let canary_ended = since(Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;

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
    // The picture: the same windows as the figures, in 100 ms buckets.
    let picture = args.svg.as_ref().map(|path| {
        let panel = |name: &str, from: f64, to: f64, flips: &[Flip]| picture::Panel {
            title: format!(
                "{name}: {} cycles of deploy + rollback under load",
                args.cycles
            ),
            buckets: picture::buckets(&window(from, to), from, to),
            marks: flips
                .iter()
                .map(|f| (f.switched - from, f.operation == "deploy"))
                .collect(),
        };
        let panels = [
            panel("cryptus", cryptus_began, cryptus_ended + 2.0, &flips),
            panel(
                "the seed's way (benches/baseline.sh)",
                baseline_began,
                baseline_ended + 2.0,
                &baseline,
            ),
        ];
        match picture::draw(path, &panels) {
            Ok(()) => {
                eprintln!("wrote {}", path.display());
                json!({ "file": path.display().to_string() })
            }
            Err(err) => {
                eprintln!("error: {err}");
                json!({ "file": path.display().to_string(), "error": err })
            }
        }
    });
    let canary = summarize(&window(canary_began, canary_ended + 2.0), canary_flips);
    let mut cryptus = summarize(&window(cryptus_began, cryptus_ended + 2.0), flips);
    cryptus.wrk = cryptus_wrk;
    let mut seed = summarize(&window(baseline_began, baseline_ended + 2.0), baseline);
    seed.wrk = baseline_wrk;
    let ratio = |a: f64, b: f64| if b > 0.0 { round3(a / b) } else { 0.0 };
    let status_p50 = round3(median(status_ms));
    let health_p50 = round3(median(health_ms));
    let floor = floors.medians();
    let targets = json!({
        "no_failed_request": cryptus.failed == 0,
        "no_failed_post": cryptus.failed_posts == 0,
        "canary_no_failed_request": canary.failed == 0,
        "no_stale_keep_alive_close": cryptus.stale_keepalive_closes == 0,
        // null: wrk did not run.
        "no_failed_wrk_request": cryptus.wrk.run.then(|| cryptus.wrk.failed() == 0),
        "no_wrk_error": cryptus.wrk.run.then(|| cryptus.wrk.report.as_ref().is_some_and(WrkReport::clean)),
        "at_least_20_flips": cryptus.flips.len() >= 20,
        "at_least_50000_requests": cryptus.requests >= 50_000,
        "median_overhead_at_most_300ms": cryptus.overhead_seconds <= 0.3,
        "median_warm_rollback_at_most_1s": cryptus.rollback_warm_seconds.is_some_and(|s| s <= 1.0),
        "overhead_5x_lower_than_baseline": cryptus.overhead_seconds * 5.0 <= seed.overhead_seconds,
        "median_overhead_at_most_100ms": cryptus.overhead_seconds <= 0.1,
        "median_warm_rollback_at_most_100ms": cryptus.rollback_warm_seconds.is_some_and(|s| s <= 0.1),
        "status_at_most_50ms": status_p50 <= 50.0,
        "health_at_most_150ms": health_p50 <= 150.0,
    });
    // Failed requests of every kind of client count (failed POSTs among
    // them), and wrk's; stale keep-alive closes only with --strict, until
    // cryptus renders nginx's keepalive_min_timeout (1.27.4+).
    let clean = cryptus.failed == 0
        && cryptus.failed_posts == 0
        && cryptus.wrk.failed() == 0
        && canary.failed == 0
        && (!args.strict
            || (cryptus.stale_keepalive_closes == 0
                && cryptus.wrk.closes() == 0
                && canary.stale_keepalive_closes == 0));
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
        "cryptus_health_ms_p50": health_p50,
        "engine_floor": floor,
        "cryptus": cryptus,
        "baseline": seed,
        "ratio_cryptus_to_baseline": {
            "deploy": ratio(cryptus.deploy_seconds, seed.deploy_seconds),
            "overhead": ratio(cryptus.overhead_seconds, seed.overhead_seconds),
            "rollback_cold": ratio(cryptus.rollback_cold_seconds.unwrap_or(0.0), seed.rollback_cold_seconds.unwrap_or(0.0)),
        },
        "targets": targets,
        "picture": picture,
        "canary": canary,
        "ratio_canary_to_blue_green_deploy_overhead": ratio(canary.deploy_overhead_seconds, cryptus.deploy_overhead_seconds),
    });
    Ok((document, clean))
}

/// The whole run: the benchmark on its stack, then (that stack removed) the
/// scaling section on a stack of its own.
async fn run(args: &Args) -> Result<(Value, bool), String> {
    let (mut document, clean) = bench(args).await?;
    let mut scaling = None;
    if !args.scaling.is_empty() {
        let section = scaling::measure(&args.scaling, SCALING_ROUNDS, SCALING_BUDGET).await?;
        document["scaling"] = json!(section);
        scaling = Some(section);
    }
    let largest_rss = [document["cryptus"]["peak_rss_mib"].as_f64()]
        .into_iter()
        .chain(
            scaling
                .iter()
                .flat_map(|s| s.rows.iter().map(|r| r.peak_rss_mib)),
        )
        .flatten()
        .fold(None, |most: Option<f64>, mib| {
            Some(most.map_or(mib, |m| m.max(mib)))
        });
    document["peak_rss_mib"] = json!(largest_rss);
    let mut clean = clean;
    if args.swarm > 0 {
        // A failure here keeps the figures measured before it.
        match swarm::measure(args.swarm).await {
            Ok(section) => clean &= swarm_targets(&mut document, section, args.strict),
            Err(err) => {
                eprintln!("error: the Swarm mode: {err}");
                document["swarm"] = json!({"error": err});
                document["targets"]["swarm_no_failed_request"] = json!(false);
                clean = false;
            }
        }
    }
    // Reported, not asserted: timings and memory vary with the machine.
    document["targets"]["deploy_peak_rss_at_most_30mib"] = json!(largest_rss.map(|m| m <= 30.0));
    document["targets"]["overhead_at_most_1_5x_from_smallest_to_largest_replica_count"] =
        json!(scaling.and_then(|s| s.overhead_ratio).map(|r| r <= 1.5));
    Ok((document, clean))
}

/// The Swarm mode's section and targets in `document`; whether none of
/// its requests failed (nor, with `strict`, needed a retry).
fn swarm_targets(document: &mut Value, section: swarm::Section, strict: bool) -> bool {
    let clean = section.failed == 0 && (!strict || section.stale_keepalive_closes == 0);
    let host = document["cryptus"]["overhead_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    document["targets"]["swarm_no_failed_request"] = json!(section.failed == 0);
    document["targets"]["swarm_overhead_at_most_3x_one_host"] =
        json!(host > 0.0 && section.overhead_seconds <= 3.0 * host);
    if let Some(loss) = &section.loss {
        document["targets"]["swarm_lost_worker_no_failed_get"] = json!(loss.failed_gets == 0);
        // The longest legitimate request (2 s) plus 3 s.
        document["targets"]["swarm_lost_worker_no_request_waits_over_5s"] =
            json!(loss.slowest_seconds <= 5.0);
    }
    document["swarm"] = json!(section);
    clean
}

/// A Markdown table of four columns: a row's name, two approaches' values
/// and their ratio, under `header`.
fn columns(header: [&str; 4], rows: &[(&str, String, String, String)]) -> String {
    let [name, first, second, ratio] = header;
    let mut out = format!("| {name:<47} | {first:<24} | {second:<24} | {ratio:<16} |\n");
    out.push_str(&format!(
        "|{}|{}|{}|{}|\n",
        "-".repeat(49),
        "-".repeat(26),
        "-".repeat(26),
        "-".repeat(18)
    ));
    for (name, first, second, ratio) in rows {
        out.push_str(&format!(
            "| {name:<47} | {first:<24} | {second:<24} | {ratio:<16} |\n"
        ));
    }
    out
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
            "cryptus process peak RSS, a deploy (max)",
            c["peak_rss_mib"]
                .as_f64()
                .map_or("n/a".to_owned(), |m| format!("{m:.1} MiB")),
            "-".to_owned(),
            String::new(),
        ),
        (
            "`cryptus status` (median)",
            format!("{} ms", d["cryptus_status_ms_p50"]),
            "-".to_owned(),
            String::new(),
        ),
        (
            "`cryptus health` (median)",
            format!("{} ms", d["cryptus_health_ms_p50"]),
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
    out.push_str(&columns(
        ["", "cryptus", "baseline (seed's way)", "cryptus/baseline"],
        &rows,
    ));
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
    let k = &d["canary"];
    if k.is_object() {
        out.push_str(&format!(
            "\ncanary releases (`--canary 10,50 --step 1s`, then a rollback), {} flips under the same load: \
             {} failed of {} requests ({} of {} POSTs); deploy overhead less the holds (median) {}, \
             {}x blue/green's {}\n",
            k["flips"].as_array().map_or(0, Vec::len),
            k["failed"],
            k["requests"],
            k["failed_posts"],
            k["posts"],
            seconds(&k["deploy_overhead_seconds"]),
            d["ratio_canary_to_blue_green_deploy_overhead"],
            seconds(&c["deploy_overhead_seconds"]),
        ));
        out.push_str(&parts_line(
            "the canary's overhead",
            &k["overhead_parts_median"],
        ));
    }
    out.push_str(&parts_line(
        "cryptus's overhead",
        &c["overhead_parts_median"],
    ));
    let floor = serde_json::from_value::<floors::Medians>(d["engine_floor"].clone()).ok();
    if let Some(floor) = &floor {
        let overhead_ms = c["overhead_seconds"].as_f64().unwrap_or(0.0) * 1000.0;
        out.push_str(&format!(
            "\nthe engine's floor on this machine, median of {} (benches/zero_downtime/floors.rs): \
             deploy lock created {} ms, created and removed {} ms; exec of `true` in nginx {} ms, of `nginx -t` {} ms; \
             lower bounds: no switch's overhead goes below the lock + `nginx -t`'s own work (its exec is started ahead) = {} ms, \
             no warm rollback's traffic back below {} ms, no `health` below one exec of `nginx -t`; \
             cryptus's median overhead is {:.0} ms, {:.2}x the floor\n",
            floor.samples,
            floor.lock_create_ms,
            floor.lock_ms,
            floor.exec_ms,
            floor.nginx_test_ms,
            floor.floor_ms,
            floor.rollback_floor_ms,
            overhead_ms,
            if floor.floor_ms > 0.0 { overhead_ms / floor.floor_ms } else { 0.0 },
        ));
    }
    if let Ok(section) = serde_json::from_value::<scaling::Scaling>(d["scaling"].clone()) {
        out.push('\n');
        out.push_str(&scaling::table(&section));
    }
    if let Some(err) = d["swarm"]["error"].as_str() {
        out.push_str(&format!("\nDocker Swarm: not measured: {err}\n"));
    }
    if let Ok(section) = serde_json::from_value::<swarm::Section>(d["swarm"].clone()) {
        out.push('\n');
        out.push_str(&swarm::table(&section, c));
    }
    if let Some(file) = d["picture"]["file"].as_str() {
        match d["picture"]["error"].as_str() {
            Some(err) => out.push_str(&format!("\npicture: not written: {err}\n")),
            None => out.push_str(&format!(
                "\npicture: {file} (slowest answer and failed requests per 100 ms, every switch marked)\n"
            )),
        }
    }
    out.push_str("\ntargets:\n");
    if let Some(targets) = d["targets"].as_object() {
        for (name, met) in targets {
            let verdict = match met.as_bool() {
                Some(true) => "met ",
                Some(false) => "MISS",
                None => "n/a ",
            };
            let below = floor
                .as_ref()
                .filter(|_| met.as_bool() == Some(false))
                .and_then(|floor| below_floor(name, floor));
            out.push_str(&format!(
                "  {verdict} {}{}\n",
                name.replace('_', " "),
                below.map(|why| format!(" ({why})")).unwrap_or_default()
            ));
        }
    }
    out
}

/// A benchmark deploy of `image` as `version` with no watch, as JSON,
/// with `extra` flags.
fn deploy_args<'a>(image: &'a str, version: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "deploy",
        "--image",
        image,
        "--version",
        version,
        "--watch",
        "0s",
        "--json",
    ];
    args.extend_from_slice(extra);
    args
}

/// Where `what` goes: the median of each of its `parts`, in ms.
fn parts_line(what: &str, parts: &Value) -> String {
    let Some(parts) = parts.as_object() else {
        return String::new();
    };
    let line: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{k} {:.0}", v.as_f64().unwrap_or(0.0) * 1000.0))
        .collect();
    format!(
        "\nwhere {what} goes, median ms of each part (medians need not add up): {}\n",
        line.join(", ")
    )
}

/// Why a missed timing target cannot be met on this engine, when its
/// floor, measured in the same run, is above it.
fn below_floor(target: &str, floor: &floors::Medians) -> Option<String> {
    let (ms, what) = match target {
        "median_overhead_at_most_100ms" => (floor.floor_ms, "the lock + `nginx -t`'s own work"),
        "median_warm_rollback_at_most_100ms" => (
            floor.rollback_floor_ms,
            "the lock's creation + `nginx -t`'s own work",
        ),
        "health_at_most_150ms" => (floor.nginx_test_ms, "one exec of `nginx -t`"),
        _ => return None,
    };
    let limit: f64 = target
        .rsplit('_')
        .next()?
        .strip_suffix("ms")?
        .parse()
        .ok()?;
    Some(if ms >= limit {
        format!("the engine's floor here is {ms:.0} ms: {what}")
    } else {
        format!(
            "the engine's floor here is {ms:.0} ms ({what}), under the target: the rest is cryptus's"
        )
    })
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
    match runtime.block_on(run(&args)) {
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
                // The command as run (cargo adds --bench to every bench binary).
                let words: Vec<String> = std::env::args()
                    .skip(1)
                    .filter(|w| w != "--bench")
                    .collect();
                let command = format!(
                    "cargo bench --locked --bench zero_downtime -- {}",
                    words.join(" ")
                );
                // The picture, linked from the results file beside it.
                let picture = args
                    .svg
                    .as_ref()
                    .filter(|_| document["picture"]["error"].is_null())
                    .map(|svg| {
                        if svg.parent() == path.parent() {
                            svg.file_name().map_or_else(
                                || svg.display().to_string(),
                                |n| n.to_string_lossy().into_owned(),
                            )
                        } else {
                            svg.display().to_string()
                        }
                    });
                if let Err(err) = results::write(
                    path,
                    "The zero-downtime benchmark",
                    &command,
                    &table(&document),
                    picture.as_deref().map(|file| {
                        (
                            "Slowest answer and failed requests per 100 ms over the run, every deploy and rollback marked; cryptus above, the seed's way below",
                            file,
                        )
                    }),
                ) {
                    eprintln!("error: {err}");
                    return std::process::ExitCode::from(2);
                }
            }
            if !document["picture"]["error"].is_null() {
                // Already said on stderr when it failed.
                return std::process::ExitCode::from(2);
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
