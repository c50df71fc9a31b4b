//! Load through a project's load balancer, for the tests that must lose no
//! request while cryptus deploys, scales, rolls back or is killed: loadgen's
//! clients (the benchmark's), every request counted by outcome, and bounded:
//! the load ends when the test stops it, after `max_requests` answers or
//! after `max_time`, whichever comes first. A load that a bound ended early
//! says so in its report ([`Report::cut_short`]), since its counts then
//! cover less than the test meant them to.
//!
//! What the clients send and how a failure is counted (a keep-alive GET is
//! retried once after a stale close, a POST never is) is loadgen's; see
//! `loadgen/src/lib.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, oneshot};

use super::wait::eventually_async;

/// How many clients of each kind run, and the bounds of the load.
#[derive(Clone, Debug)]
pub struct Mix {
    /// `GET /api/health` on one kept connection, retried once after a
    /// stale keep-alive close, as browsers do.
    pub keep_alive: usize,
    /// `GET /api/health` on a new connection each time.
    pub new_connection: usize,
    /// `GET /api/sleep?ms={slow_ms}` back to back: requests in flight
    /// across a switch.
    pub slow: usize,
    pub slow_ms: u64,
    /// `GET /api/session` with a cookie: each answer must count one visit
    /// more than the last.
    pub session: usize,
    /// `GET /api/health` on one kept connection, never retried.
    pub keep_alive_no_retry: usize,
    /// `POST /api/echo` on one kept connection, never retried; each answer
    /// must count the bytes sent.
    pub post: usize,
    /// Pause between a client's requests.
    pub pause: Duration,
    /// How long one request may take.
    pub timeout: Duration,
    /// The load ends once this many requests were answered (give or take
    /// what the clients have in flight and answer within 20 ms).
    pub max_requests: u64,
    /// The load ends after this long (then its requests in flight end
    /// within `timeout`).
    pub max_time: Duration,
}

impl Default for Mix {
    /// loadgen's default mix, bounded well above what a test needs: ten
    /// minutes, half a million requests.
    fn default() -> Mix {
        let clients = loadgen::Mix::default();
        Mix {
            keep_alive: clients.keep_alive,
            new_connection: clients.new_connection,
            slow: clients.slow,
            slow_ms: clients.slow_ms,
            session: clients.session,
            keep_alive_no_retry: clients.keep_alive_no_retry,
            post: clients.post,
            pause: clients.pause,
            timeout: clients.timeout,
            max_requests: 500_000,
            max_time: Duration::from_secs(600),
        }
    }
}

/// Starts the load the switch tests run against `lb` (health on kept and on
/// new connections, a slow request always in flight, a session), and waits
/// until it flows.
pub async fn start_switch_load(lb: SocketAddr) -> Load {
    let mix = Mix {
        keep_alive: 2,
        new_connection: 1,
        slow: 1,
        slow_ms: 1500,
        session: 1,
        pause: Duration::from_millis(5),
        timeout: Duration::from_secs(10),
        ..Mix::default()
    };
    let load = mix.start(lb);
    load.flowing(20, Duration::from_secs(10)).await;
    load
}

/// How often the bounds are checked.
const CHECK: Duration = Duration::from_millis(20);

/// How many failures a report describes one by one.
const DESCRIBED: usize = 10;

impl Mix {
    /// Starts the clients against `lb` (the load balancer, on loopback).
    /// Needs a tokio runtime.
    pub fn start(&self, lb: SocketAddr) -> Load {
        assert!(lb.ip().is_loopback(), "load goes to loopback only: {lb}");
        let clients = loadgen::Mix {
            keep_alive: self.keep_alive,
            new_connection: self.new_connection,
            slow: self.slow,
            slow_ms: self.slow_ms,
            session: self.session,
            keep_alive_no_retry: self.keep_alive_no_retry,
            post: self.post,
            pause: self.pause,
            timeout: self.timeout,
        };
        let began = Instant::now();
        let running = Arc::new(Mutex::new(Some(loadgen::Load::start(lb, &clients))));
        let (stop, stopped) = oneshot::channel();
        let watcher = tokio::spawn(watch(
            Arc::clone(&running),
            stopped,
            began,
            self.max_requests,
            self.max_time,
        ));
        Load {
            began,
            running,
            stop,
            watcher,
        }
    }
}

/// Ends the load at its first bound, and returns its report and which
/// bound; returns nothing once the test stops it (or drops it: a failed
/// test's load ends with it).
async fn watch(
    running: Arc<Mutex<Option<loadgen::Load>>>,
    mut stopped: oneshot::Receiver<()>,
    began: Instant,
    max_requests: u64,
    max_time: Duration,
) -> Option<(loadgen::Report, String)> {
    loop {
        tokio::select! {
            _ = &mut stopped => return None,
            _ = tokio::time::sleep(CHECK) => {}
        }
        let mut guard = running.lock().await;
        let requests = guard.as_ref()?.requests().await;
        let bound = if requests >= max_requests {
            format!("after {requests} requests (max_requests {max_requests})")
        } else if began.elapsed() >= max_time {
            format!("after {:?} (max_time {max_time:?})", began.elapsed())
        } else {
            continue;
        };
        let load = guard.take()?;
        drop(guard);
        return Some((load.stop().await, bound));
    }
}

/// A running load; [`Load::stop`] ends it and returns the report.
pub struct Load {
    began: Instant,
    running: Arc<Mutex<Option<loadgen::Load>>>,
    stop: oneshot::Sender<()>,
    watcher: tokio::task::JoinHandle<Option<(loadgen::Report, String)>>,
}

impl Load {
    /// Requests answered so far.
    pub async fn requests(&self) -> u64 {
        match self.running.lock().await.as_ref() {
            Some(load) => load.requests().await,
            None => 0,
        }
    }

    /// Whether the clients still run (no bound has ended them).
    pub async fn running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// Waits until at least `requests` were answered, for at most `within`.
    pub async fn flowing(&self, requests: u64, within: Duration) {
        let load = self;
        eventually_async(
            &format!("{requests} requests through the load balancer"),
            within,
            Duration::from_millis(50),
            move || async move {
                let answered = load.requests().await;
                if answered >= requests {
                    Ok(())
                } else if !load.running().await {
                    Err("the load ended at its bound".to_owned())
                } else {
                    Err(format!("{answered} answered"))
                }
            },
        )
        .await;
    }

    /// Stops the clients (each finishes its request in flight) and reports.
    pub async fn stop(self) -> Report {
        let _ = self.stop.send(());
        let ended = self.watcher.await.expect("the load's watcher panicked");
        let (report, cut_short) = match ended {
            Some((report, bound)) => (report, Some(bound)),
            None => {
                let load = self.running.lock().await.take();
                let load = load.expect("a load not ended by a bound is running");
                (load.stop().await, None)
            }
        };
        Report::new(report, cut_short, self.began.elapsed())
    }
}

/// What a load saw.
#[derive(Debug)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failures by what went wrong: `status_502`, `connect_error`, `reset`,
    /// `closed_unanswered`, `timeout`, `session_lost`, `wrong_length`.
    pub failures: BTreeMap<String, u64>,
    /// Requests by client kind: `keep_alive`, `new_connection`, `slow`,
    /// `session`, `keep_alive_no_retry`, `post`.
    pub by_kind: BTreeMap<String, u64>,
    /// Failures by client kind.
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Answers by the color that gave them.
    pub by_color: BTreeMap<String, u64>,
    /// GETs retried once after a kept connection closed unanswered.
    pub stale_keepalive_closes: u64,
    /// The first failures, in order, one line each: when, which client,
    /// what went wrong.
    pub first_failures: Vec<String>,
    /// Set when a bound ended the load before the test stopped it: which.
    pub cut_short: Option<String>,
    /// How long the load ran, until the test stopped it.
    pub ran: Duration,
}

impl Report {
    fn new(report: loadgen::Report, cut_short: Option<String>, ran: Duration) -> Report {
        let mut by_kind = BTreeMap::new();
        for sample in &report.samples {
            *by_kind.entry(sample.kind.name().to_owned()).or_default() += 1;
        }
        let mut failed: Vec<&loadgen::Sample> = report.failures_detail();
        failed.sort_by(|a, b| a.at.total_cmp(&b.at));
        let first_failures = failed
            .into_iter()
            .take(DESCRIBED)
            .map(|sample| {
                format!(
                    "at {:.3}s {} {} after {:.3}s{}",
                    sample.at,
                    sample.kind.name(),
                    sample.outcome.failure_key().unwrap_or_default(),
                    sample.latency,
                    sample
                        .color
                        .as_deref()
                        .map(|color| format!(" from {color}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        Report {
            requests: report.requests,
            ok: report.ok,
            failed: report.failed,
            failures: report.failures,
            by_kind,
            failed_by_kind: report.failed_by_kind,
            by_color: report.by_color,
            stale_keepalive_closes: report.stale_keepalive_closes,
            first_failures,
            cut_short,
            ran,
        }
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "load: {} requests in {:.1?}, {} failed {:?}, {} stale keep-alive closes retried, by kind {:?}, by color {:?}{}",
            self.requests,
            self.ran,
            self.failed,
            self.failures,
            self.stale_keepalive_closes,
            self.by_kind,
            self.by_color,
            self.cut_short
                .as_deref()
                .map(|bound| format!(", cut short {bound}"))
                .unwrap_or_default()
        )
    }
}
