//! wrk, a third-party load generator, run beside this crate's clients: a
//! judge of zero downtime that is not ours, and a client that never retries.
//!
//! wrk counts socket errors (connect, read, write, timeout) and answers of
//! 400 and above (its "Non-2xx or 3xx responses"). Its read errors do not
//! tell a lost request: wrk 4.1.0 (Debian's) counts every close by the
//! server as one, even of an idle keep-alive connection with nothing in
//! flight, and later versions count no close by end of file, even under a
//! request in flight. So a Lua script counts the requests wrk sent and the
//! answers it read; beyond the at most one request per connection in flight
//! when wrk stops, the difference is requests sent and never answered.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Counts requests and answers per thread and prints the totals after wrk's
/// summary; `delay` paces each connection like this crate's clients (`PAUSE`
/// milliseconds), so connections sit idle between requests, as real
/// clients' do.
const SCRIPT: &str = r#"-- cryptus: count what wrk sent and what was answered.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) sent = 0; answered = 0 end
function delay() return PAUSE end
function request() sent = sent + 1; return wrk.request() end
function response(status, headers, body) answered = answered + 1 end
function done(summary, latency, requests)
  local s, a = 0, 0
  for _, t in ipairs(threads) do s = s + t:get("sent"); a = a + t:get("answered") end
  io.write(string.format("cryptus-wrk: sent %d answered %d\n", s, a))
end
"#;

/// What wrk reported, and what the script counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WrkReport {
    /// Answers wrk read, whatever their status.
    pub requests: u64,
    /// How long wrk ran.
    pub seconds: f64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// Answers with a status of 400 or above (wrk's "Non-2xx or 3xx").
    pub status_errors: u64,
    /// Requests sent, counted by the script (`None` if it printed nothing).
    pub sent: Option<u64>,
    /// Requests sent and never answered, beyond one per connection in
    /// flight at the stop: wrk's own figures miss those closed by an end of
    /// file. Those that broke with a read or write error are in both.
    pub unanswered: Option<u64>,
    /// wrk's `-d` ran out before it was stopped: it did not cover the end.
    pub ended_early: bool,
}

impl WrkReport {
    /// wrk's own errors: socket errors and answers of 400 and above.
    pub fn errors(&self) -> u64 {
        self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.timeouts
            + self.status_errors
    }

    /// Whether every request wrk sent was answered below 400, by wrk's
    /// figures and the script's.
    pub fn clean(&self) -> bool {
        self.errors() == 0 && self.unanswered.unwrap_or(0) == 0
    }
}

/// Why wrk did not start.
#[derive(Debug)]
pub enum StartError {
    /// No `wrk` program on PATH.
    Missing,
    Other(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Missing => write!(f, "wrk is not installed (hint: apt-get install wrk)"),
            StartError::Other(why) => write!(f, "{why}"),
        }
    }
}

/// A running wrk; [`Wrk::stop`] ends it and reads its summary.
pub struct Wrk {
    child: Child,
    script: PathBuf,
    connections: u64,
}

static SCRIPTS: AtomicU64 = AtomicU64::new(0);

impl Wrk {
    /// Starts `wrk -t 1 -c <connections>` against `http://<addr><path>` (a
    /// loopback address only), each connection pausing `pause` between
    /// requests, for at most `bound`: wrk stops by itself then if
    /// [`Wrk::stop`] has not stopped it first.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        connections: u64,
        pause: Duration,
        bound: Duration,
    ) -> Result<Wrk, StartError> {
        if !addr.ip().is_loopback() {
            return Err(StartError::Other(format!(
                "wrk runs against loopback only, not {addr}"
            )));
        }
        if connections == 0 {
            return Err(StartError::Other("wrk needs a connection".to_owned()));
        }
        let script = std::env::temp_dir().join(format!(
            "cryptus-wrk-{}-{}.lua",
            std::process::id(),
            SCRIPTS.fetch_add(1, Ordering::Relaxed)
        ));
        let text = SCRIPT.replace("PAUSE", &pause.as_millis().to_string());
        std::fs::write(&script, text)
            .map_err(|e| StartError::Other(format!("writing {}: {e}", script.display())))?;
        let seconds = bound.as_secs().max(1);
        let spawned = Command::new("wrk")
            .args(["-t", "1", "-c", &connections.to_string()])
            .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "-s"])
            .arg(&script)
            .arg(format!("http://{addr}{path}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(child) => Ok(Wrk {
                child,
                script,
                connections,
            }),
            Err(err) => {
                let _ = std::fs::remove_file(&script);
                if err.kind() == std::io::ErrorKind::NotFound {
                    Err(StartError::Missing)
                } else {
                    Err(StartError::Other(format!("starting wrk: {err}")))
                }
            }
        }
    }

    /// Stops wrk (SIGINT, on which it prints its summary) and reads it.
    pub async fn stop(mut self) -> Result<WrkReport, String> {
        let ended_early = matches!(self.child.try_wait(), Ok(Some(_)));
        // A SIGINT that lands on wrk's worker thread stops only the workers
        // while the main thread sleeps out -d, so it is sent again until wrk
        // exits; SIGKILL after the deadline.
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(err) => return Err(format!("waiting for wrk: {err}")),
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill().await;
                return Err("wrk did not stop within 15 s of SIGINT; killed".to_owned());
            }
            if let Some(pid) = self.child.id() {
                // Not yet reaped, so the id is still wrk's.
                let _ = Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout).await;
        }
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        let mut report = parse_summary(&stdout, self.connections).ok_or_else(|| {
            format!("wrk exited {status} and printed no summary: {stdout}{stderr}")
        })?;
        report.ended_early = ended_early;
        Ok(report)
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.script);
    }
}

/// Reads wrk's summary (and the script's line) from its standard output.
pub fn parse_summary(text: &str, connections: u64) -> Option<WrkReport> {
    let mut report = WrkReport::default();
    let mut found = false;
    for line in text.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            report.requests = count.trim().parse().ok()?;
            report.seconds = seconds_of(rest.split(',').next()?.trim())?;
            found = true;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(name), Some(count)) = (words.next(), words.next()) else {
                    continue;
                };
                let count: u64 = count.parse().ok()?;
                match name {
                    "connect" => report.connect_errors = count,
                    "read" => report.read_errors = count,
                    "write" => report.write_errors = count,
                    "timeout" => report.timeouts = count,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.status_errors = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("cryptus-wrk: sent ") {
            let (sent, answered) = rest.split_once(" answered ")?;
            let sent: u64 = sent.trim().parse().ok()?;
            let answered: u64 = answered.trim().parse().ok()?;
            report.sent = Some(sent);
            report.unanswered = Some(sent.saturating_sub(answered).saturating_sub(connections));
        }
    }
    found.then_some(report)
}

/// wrk's durations: `14.77s`, `250.00ms`, `1.50m`, ...
fn seconds_of(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "Running 30s test @ http://127.0.0.1:18999/api/health
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    25.24ms   37.49ms 260.43ms   88.41%
    Req/Sec   325.36    223.49     0.99k    63.57%
  4668 requests in 14.77s, 19.09MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:    316.09
Transfer/sec:      1.29MB
cryptus-wrk: sent 4690 answered 4668
";

    #[test]
    fn reads_the_summary_and_the_script_counts() {
        let report = parse_summary(SUMMARY, 4).unwrap();
        assert_eq!(
            report,
            WrkReport {
                requests: 4668,
                seconds: 14.77,
                connect_errors: 0,
                read_errors: 2,
                write_errors: 1,
                timeouts: 3,
                status_errors: 5,
                sent: Some(4690),
                unanswered: Some(18),
                ended_early: false,
            }
        );
        assert_eq!(report.errors(), 11);
        assert!(!report.clean());
    }

    #[test]
    fn a_clean_run_prints_no_error_lines() {
        let text = "  120 requests in 1.00m, 1.00MB read\ncryptus-wrk: sent 123 answered 120\n";
        let report = parse_summary(text, 4).unwrap();
        assert_eq!(report.seconds, 60.0);
        assert_eq!(report.unanswered, Some(0), "3 in flight of 4 connections");
        assert!(report.clean());
        assert_eq!(parse_summary("unable to connect", 4), None);
        assert_eq!(seconds_of("250.00ms"), Some(0.25));
    }

    #[test]
    fn only_loopback() {
        let addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let started = Wrk::start(addr, "/", 1, Duration::ZERO, Duration::from_secs(1));
        assert!(matches!(started, Err(StartError::Other(_))));
    }

    /// Needs wrk (the CI installs it); says so and passes where it is missing.
    #[tokio::test]
    async fn the_script_counts_requests_a_closing_server_left_unanswered() {
        // A server that answers the first request of each connection, reads
        // the second and closes with no answer: every second request is lost.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    let _ = socket.read(&mut buffer).await;
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    let _ = socket.read(&mut buffer).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        let wrk = match Wrk::start(
            addr,
            "/",
            2,
            Duration::from_millis(5),
            Duration::from_secs(10),
        ) {
            Err(StartError::Missing) => {
                eprintln!("wrk is not installed: not run");
                return;
            }
            other => other.unwrap(),
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let report = wrk.stop().await.unwrap();
        assert!(report.requests > 10, "{report:?}");
        assert!(!report.ended_early);
        assert!(report.seconds < 5.0, "stopped by SIGINT: {report:?}");
        // Each answer cost one lost request (but the last few, in flight).
        let unanswered = report.unanswered.unwrap();
        assert!(unanswered + 4 >= report.requests, "{report:?}");
        assert!(!report.clean());
    }
}
