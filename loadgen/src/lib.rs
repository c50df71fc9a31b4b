//! Load through the cryptus load balancer, for the zero-downtime tests and
//! the benchmark: a mix of keep-alive clients, a new connection per request,
//! long requests, session clients and POST clients, every request counted by
//! outcome.
//!
//! An nginx reload closes idle keep-alive connections; a client that sends on
//! one at that moment sees it closed with no response. RFC 9112 §9.3.1 lets a
//! client retry an idempotent request once in exactly that case (browsers,
//! curl and Go do), so the `KeepAlive` clients do, and count those retries
//! apart as "stale keep-alive closes". Many clients never retry: no client may
//! retry a POST, and many tools never retry at all. The `KeepAliveNoRetry` and
//! `Post` clients stand for them: for them that same close is a failure
//! (`closed_unanswered`). Any other error, or a retry that fails, is a failure
//! for every kind.

pub mod wrk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// How many clients of each kind run.
#[derive(Clone, Debug)]
pub struct Mix {
    /// Clients that reuse one connection: `GET /api/health`.
    pub keep_alive: usize,
    /// Clients that open a new connection per request: `GET /api/health`.
    pub new_connection: usize,
    /// Clients that send long requests back to back: `GET /api/sleep?ms=N`.
    pub slow: usize,
    pub slow_ms: u64,
    /// Clients with a session cookie: `GET /api/session`, each answer must
    /// count one visit more than the last.
    pub session: usize,
    /// Clients that reuse one connection and never retry:
    /// `GET /api/health`. A reused connection closed under them is a failure.
    pub keep_alive_no_retry: usize,
    /// Clients that reuse one connection to `POST /api/echo` a small body,
    /// never retried (a POST is not idempotent); each answer must count the
    /// bytes sent. Needs an app with that route.
    pub post: usize,
    /// Pause between a client's requests (none for the slow clients' own wait).
    pub pause: Duration,
    pub timeout: Duration,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            keep_alive: 2,
            new_connection: 1,
            slow: 1,
            slow_ms: 2000,
            session: 1,
            keep_alive_no_retry: 0,
            post: 0,
            pause: Duration::from_millis(5),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Mix {
    /// Every kind of client at once: the zero-downtime benchmark's mix, and
    /// the one its Swarm mode and the Swarm tests run inside the lab.
    pub fn every_kind() -> Mix {
        Mix {
            keep_alive: 3,
            new_connection: 1,
            slow: 2,
            slow_ms: 2000,
            session: 1,
            keep_alive_no_retry: 1,
            post: 2,
            pause: Duration::from_millis(6),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    KeepAlive,
    NewConnection,
    Slow,
    Session,
    KeepAliveNoRetry,
    Post,
}

impl Kind {
    /// The kind's name in reports: `keep_alive`, `post`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::KeepAlive => "keep_alive",
            Kind::NewConnection => "new_connection",
            Kind::Slow => "slow",
            Kind::Session => "session",
            Kind::KeepAliveNoRetry => "keep_alive_no_retry",
            Kind::Post => "post",
        }
    }

    /// Whether the client retries a request once when a reused keep-alive
    /// connection closes under it (RFC 9112 §9.3.1), as browsers do for a GET.
    pub fn retries(self) -> bool {
        matches!(
            self,
            Kind::KeepAlive | Kind::NewConnection | Kind::Slow | Kind::Session
        )
    }

    /// Whether the client keeps its connection between requests.
    fn reuses(self) -> bool {
        matches!(
            self,
            Kind::KeepAlive | Kind::Session | Kind::KeepAliveNoRetry | Kind::Post
        )
    }
}

/// One answered (or failed) request.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub kind: Kind,
    /// Seconds from the start of the run to the request's start.
    pub at: f64,
    /// Seconds the request took, retries included.
    pub latency: f64,
    pub outcome: Outcome,
    /// The color that answered (`x-cryptus-instance`).
    pub color: Option<String>,
    /// Retried once after a reused keep-alive connection closed unanswered.
    pub retried: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Status(u16),
    ConnectError,
    /// The connection broke after the request was sent.
    Reset,
    /// A reused keep-alive connection closed before any byte of the answer,
    /// and this client does not retry.
    ClosedUnanswered,
    Timeout,
    /// A session answer did not count one visit more than the last.
    SessionLost,
    /// A POST answer did not count the bytes sent.
    WrongLength,
}

impl Outcome {
    /// The failure's name in reports (`status_502`, `reset`, ...); `None`
    /// for a success.
    pub fn failure_key(&self) -> Option<String> {
        Some(match self {
            Outcome::Ok => return None,
            Outcome::Status(code) => format!("status_{code}"),
            Outcome::ConnectError => "connect_error".to_owned(),
            Outcome::Reset => "reset".to_owned(),
            Outcome::ClosedUnanswered => "closed_unanswered".to_owned(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::SessionLost => "session_lost".to_owned(),
            Outcome::WrongLength => "wrong_length".to_owned(),
        })
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failures by what went wrong: `status_502`, `connect_error`, `reset`, ...
    pub failures: BTreeMap<String, u64>,
    /// Failures by client kind ([`Kind::name`]): `post`, `keep_alive`, ...
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Retries after a reused keep-alive connection closed with no answer.
    pub stale_keepalive_closes: u64,
    pub by_color: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

impl Report {
    fn add(&mut self, sample: Sample) {
        self.requests += 1;
        *self
            .by_kind
            .entry(format!("{:?}", sample.kind))
            .or_default() += 1;
        if let Some(color) = &sample.color {
            *self.by_color.entry(color.clone()).or_default() += 1;
        }
        match sample.outcome.failure_key() {
            None => self.ok += 1,
            Some(key) => {
                self.failed += 1;
                *self.failures.entry(key).or_default() += 1;
                *self
                    .failed_by_kind
                    .entry(sample.kind.name().to_owned())
                    .or_default() += 1;
            }
        }
        self.samples.push(sample);
    }

    /// The failed samples, for messages.
    pub fn failures_detail(&self) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.outcome != Outcome::Ok)
            .collect()
    }
}

/// A running load; [`Load::stop`] ends it and returns the report.
pub struct Load {
    began: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    report: Arc<Mutex<Report>>,
    stale: Arc<std::sync::atomic::AtomicU64>,
}

impl Load {
    /// Starts the mix against `addr` (the load balancer, on loopback).
    pub fn start(addr: SocketAddr, mix: &Mix) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let stale = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let began = Instant::now();
        let mut tasks = Vec::new();
        let kinds = [
            (Kind::KeepAlive, mix.keep_alive),
            (Kind::NewConnection, mix.new_connection),
            (Kind::Slow, mix.slow),
            (Kind::Session, mix.session),
            (Kind::KeepAliveNoRetry, mix.keep_alive_no_retry),
            (Kind::Post, mix.post),
        ];
        for (kind, count) in kinds {
            for _ in 0..count {
                let client = Client {
                    addr,
                    kind,
                    mix: mix.clone(),
                    began,
                    stop: Arc::clone(&stop),
                    report: Arc::clone(&report),
                    stale: Arc::clone(&stale),
                };
                tasks.push(tokio::spawn(client.run()));
            }
        }
        Load {
            began,
            stop,
            tasks,
            report,
            stale,
        }
    }

    /// When the load began: samples' `at` counts from here.
    pub fn began(&self) -> Instant {
        self.began
    }

    /// Stops the clients (each finishes its request in flight) and reports.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let mut report = std::mem::take(&mut *self.report.lock().await);
        report.stale_keepalive_closes = self.stale.load(Ordering::SeqCst);
        report
    }

    /// Requests answered so far.
    pub async fn requests(&self) -> u64 {
        self.report.lock().await.requests
    }
}

struct Client {
    addr: SocketAddr,
    kind: Kind,
    mix: Mix,
    began: Instant,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    stale: Arc<std::sync::atomic::AtomicU64>,
}

struct Answer {
    code: u16,
    color: Option<String>,
    cookie: Option<String>,
    body: String,
    close: bool,
}

enum Failure {
    Connect,
    /// A connection closed before any byte of the answer.
    Stale,
    /// A reused connection closed before any byte of the answer, for a
    /// client that does not retry.
    Closed,
    Reset,
    Timeout,
}

impl Client {
    async fn run(self) {
        let path = match self.kind {
            Kind::KeepAlive | Kind::NewConnection | Kind::KeepAliveNoRetry => {
                "/api/health".to_owned()
            }
            Kind::Slow => format!("/api/sleep?ms={}", self.mix.slow_ms),
            Kind::Session => "/api/session".to_owned(),
            Kind::Post => "/api/echo".to_owned(),
        };
        let reuse = self.kind.reuses();
        let mut connection: Option<BufReader<TcpStream>> = None;
        let mut cookie: Option<String> = None;
        let mut visits: Option<u64> = None;
        let mut sent: u64 = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let at = started.duration_since(self.began).as_secs_f64();
            let mut retried = false;
            sent += 1;
            let body = (self.kind == Kind::Post)
                .then(|| format!("{{\"seq\":{sent},\"note\":\"cryptus loadgen, never retried\"}}"));
            let result = tokio::time::timeout(
                self.mix.timeout,
                self.exchange(
                    &mut connection,
                    Request {
                        path: &path,
                        cookie: cookie.as_deref(),
                        body: body.as_deref(),
                        reuse,
                    },
                    &mut retried,
                ),
            )
            .await
            .unwrap_or(Err(Failure::Timeout));
            let latency = started.elapsed().as_secs_f64();
            let (outcome, color) = match result {
                Ok(answer) => {
                    if answer.close || !reuse {
                        connection = None;
                    }
                    let mut outcome = if (200..300).contains(&answer.code) {
                        Outcome::Ok
                    } else {
                        Outcome::Status(answer.code)
                    };
                    if self.kind == Kind::Session && outcome == Outcome::Ok {
                        if let Some(set) = answer.cookie {
                            cookie = Some(set);
                        }
                        let now = visits_of(&answer.body);
                        if let (Some(before), Some(now)) = (visits, now)
                            && now != before + 1
                        {
                            outcome = Outcome::SessionLost;
                        }
                        visits = now;
                    }
                    if let Some(body) = &body
                        && outcome == Outcome::Ok
                        && number_of(&answer.body, "length") != Some(body.len() as u64)
                    {
                        outcome = Outcome::WrongLength;
                    }
                    (outcome, answer.color)
                }
                Err(failure) => {
                    connection = None;
                    let outcome = match failure {
                        Failure::Connect => Outcome::ConnectError,
                        Failure::Stale | Failure::Reset => Outcome::Reset,
                        Failure::Closed => Outcome::ClosedUnanswered,
                        Failure::Timeout => Outcome::Timeout,
                    };
                    (outcome, None)
                }
            };
            self.report.lock().await.add(Sample {
                kind: self.kind,
                at,
                latency,
                outcome,
                color,
                retried,
            });
            if self.kind != Kind::Slow && !self.mix.pause.is_zero() {
                tokio::time::sleep(self.mix.pause).await;
            }
        }
    }

    /// One request; a stale reused connection is retried once on a new one
    /// by the kinds that retry, and is a failure for the others.
    async fn exchange(
        &self,
        connection: &mut Option<BufReader<TcpStream>>,
        request: Request<'_>,
        retried: &mut bool,
    ) -> Result<Answer, Failure> {
        let reused = connection.is_some();
        match self.once(connection, &request).await {
            Err(Failure::Stale) if reused && self.kind.retries() => {
                *retried = true;
                self.stale.fetch_add(1, Ordering::SeqCst);
                *connection = None;
                match self.once(connection, &request).await {
                    Err(Failure::Stale) => Err(Failure::Reset),
                    other => other,
                }
            }
            Err(Failure::Stale) if reused => Err(Failure::Closed),
            Err(Failure::Stale) => Err(Failure::Reset),
            other => other,
        }
    }

    async fn once(
        &self,
        connection: &mut Option<BufReader<TcpStream>>,
        request: &Request<'_>,
    ) -> Result<Answer, Failure> {
        if connection.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|_| Failure::Connect)?;
            let _ = stream.set_nodelay(true);
            *connection = Some(BufReader::new(stream));
        }
        let Some(stream) = connection.as_mut() else {
            return Err(Failure::Connect);
        };
        let cookie = request
            .cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        let close = if request.reuse {
            ""
        } else {
            "Connection: close\r\n"
        };
        let (method, body) = match request.body {
            Some(body) => (
                "POST",
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            ),
            None => ("GET", "\r\n".to_owned()),
        };
        let text = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\n{cookie}{close}{body}",
            request.path, self.addr
        );
        if stream.get_mut().write_all(text.as_bytes()).await.is_err() {
            return Err(Failure::Stale);
        }
        read_answer(stream).await
    }
}

/// What one client sends, the same on a retry.
struct Request<'a> {
    path: &'a str,
    cookie: Option<&'a str>,
    /// A POST's body; a GET has none.
    body: Option<&'a str>,
    reuse: bool,
}

async fn read_answer(stream: &mut BufReader<TcpStream>) -> Result<Answer, Failure> {
    let mut line = String::new();
    match stream.read_line(&mut line).await {
        Ok(0) => return Err(Failure::Stale),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
            return Err(Failure::Stale);
        }
        Err(_) => return Err(Failure::Reset),
    }
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(Failure::Reset)?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = line.starts_with("HTTP/1.0");
    let mut color = None;
    let mut cookie = None;
    loop {
        line.clear();
        if stream
            .read_line(&mut line)
            .await
            .map_err(|_| Failure::Reset)?
            == 0
        {
            return Err(Failure::Reset);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "x-cryptus-instance" => color = Some(value.to_owned()),
            "set-cookie" => cookie = value.split(';').next().map(str::to_owned),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            stream
                .read_line(&mut line)
                .await
                .map_err(|_| Failure::Reset)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| Failure::Reset)?;
            let mut chunk = vec![0; size + 2];
            stream
                .read_exact(&mut chunk)
                .await
                .map_err(|_| Failure::Reset)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        stream
            .read_exact(&mut body)
            .await
            .map_err(|_| Failure::Reset)?;
    } else {
        stream
            .read_to_end(&mut body)
            .await
            .map_err(|_| Failure::Reset)?;
        close = true;
    }
    Ok(Answer {
        code,
        color,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
        close,
    })
}

/// `{"visits": N, ...}` → N.
fn visits_of(body: &str) -> Option<u64> {
    number_of(body, "visits")
}

/// `{"<name>": N, ...}` → N, for a flat JSON answer.
fn number_of(body: &str, name: &str) -> Option<u64> {
    let key = format!("\"{name}\":");
    let rest = &body[body.find(&key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The p-th percentile (0..=100) of `values`, which it sorts.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_are_read_from_the_session_answer() {
        assert_eq!(visits_of(r#"{"visits":12,"instance":"blue"}"#), Some(12));
        assert_eq!(visits_of(r#"{"visits": 3}"#), Some(3));
        assert_eq!(visits_of(r#"{"error":"x"}"#), None);
    }

    #[test]
    fn percentiles() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut values, 50.0), 51.0);
        assert_eq!(percentile(&mut values, 99.0), 99.0);
        assert_eq!(percentile(&mut values, 100.0), 100.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }

    #[tokio::test]
    async fn a_closed_keep_alive_connection_is_retried_once_and_counted() {
        // A server that answers one request per connection without saying it
        // will close: the client's second request on the kept connection
        // finds it closed, retries on a new one, and counts a stale close.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    let _ = socket.read(&mut buffer).await;
                    let body = "{\"status\":\"healthy\"}";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nx-cryptus-instance: blue\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        let mix = Mix {
            keep_alive: 1,
            new_connection: 0,
            slow: 0,
            session: 0,
            pause: Duration::from_millis(20),
            ..Mix::default()
        };
        let load = Load::start(addr, &mix);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = load.stop().await;
        assert!(report.requests >= 3, "{report:?}");
        assert_eq!(report.failed, 0, "{:?}", report.failures);
        assert!(report.stale_keepalive_closes >= 2, "{report:?}");
        assert_eq!(report.by_color.get("blue"), Some(&report.requests));
    }

    /// A server on loopback that answers each request with `answer(request)`;
    /// with `one_per_connection` it closes every connection after one answer,
    /// without saying so, as an nginx reload closes idle keep-alive ones.
    /// Returns its address and the count of connections it accepted.
    async fn server(
        one_per_connection: bool,
        answer: fn(&str) -> String,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    // Requests are small and written at once: one read each.
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        let request = String::from_utf8_lossy(&buffer[..n]).into_owned();
                        if socket.write_all(answer(&request).as_bytes()).await.is_err()
                            || one_per_connection
                        {
                            let _ = socket.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// Answers a POST with the length of its body, as the app's /api/echo does.
    fn echo(request: &str) -> String {
        let length = request.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
        let body = format!("{{\"instance\":\"blue\",\"length\":{length}}}");
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nx-cryptus-instance: blue\r\n\r\n{body}",
            body.len()
        )
    }

    fn only(kind: Kind) -> Mix {
        Mix {
            keep_alive: usize::from(kind == Kind::KeepAlive),
            new_connection: 0,
            slow: 0,
            session: 0,
            keep_alive_no_retry: usize::from(kind == Kind::KeepAliveNoRetry),
            post: usize::from(kind == Kind::Post),
            pause: Duration::from_millis(20),
            ..Mix::default()
        }
    }

    #[tokio::test]
    async fn posts_on_a_kept_connection_count_the_bytes_sent() {
        let (addr, accepted) = server(false, echo).await;
        let load = Load::start(addr, &only(Kind::Post));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = load.stop().await;
        assert!(report.requests >= 3, "{report:?}");
        assert_eq!(report.failed, 0, "{:?}", report.failures);
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one kept connection");
        assert_eq!(report.by_color.get("blue"), Some(&report.requests));
    }

    #[tokio::test]
    async fn a_post_answer_that_miscounts_the_body_is_a_failure() {
        let (addr, _) = server(false, |_| {
            let body = "{\"length\":1}";
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .await;
        let load = Load::start(addr, &only(Kind::Post));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = load.stop().await;
        assert!(report.failed > 0);
        assert_eq!(report.failures.get("wrong_length"), Some(&report.failed));
    }

    #[tokio::test]
    async fn a_post_on_a_connection_the_server_closes_fails_and_is_never_retried() {
        // Every connection answers once then closes unannounced: each second
        // POST on it finds it closed. A retrying client would open a second
        // connection for the same POST; this one must not.
        let (addr, accepted) = server(true, echo).await;
        let load = Load::start(addr, &only(Kind::Post));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let report = load.stop().await;
        let closed = report.failures.get("closed_unanswered").copied();
        assert!(closed >= Some(2), "{report:?}");
        assert_eq!(report.failed_by_kind.get("post"), Some(&report.failed));
        assert_eq!(report.stale_keepalive_closes, 0);
        assert!(report.samples.iter().all(|s| !s.retried));
        assert!(report.ok >= 2, "{report:?}");
        // One connection per answered POST (and perhaps one opened as the
        // load stopped): none was opened to send a POST again.
        let accepted = accepted.load(Ordering::SeqCst);
        assert!(
            accepted <= report.ok + 1,
            "{accepted} connections, {report:?}"
        );
    }

    #[tokio::test]
    async fn a_get_that_never_retries_fails_where_the_retrying_one_retries() {
        let (addr, _) = server(true, echo).await;
        let load = Load::start(addr, &only(Kind::KeepAliveNoRetry));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = load.stop().await;
        assert!(
            report.failures.get("closed_unanswered") >= Some(&2),
            "{report:?}"
        );
        assert_eq!(
            report.failed_by_kind.get("keep_alive_no_retry"),
            Some(&report.failed)
        );
        assert_eq!(report.stale_keepalive_closes, 0);

        let load = Load::start(addr, &only(Kind::KeepAlive));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = load.stop().await;
        assert_eq!(report.failed, 0, "{report:?}");
        assert!(report.stale_keepalive_closes >= 2, "{report:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mix = Mix {
            keep_alive: 0,
            new_connection: 1,
            slow: 0,
            session: 0,
            ..Mix::default()
        };
        let load = Load::start(addr, &mix);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = load.stop().await;
        assert!(report.failed > 0);
        assert_eq!(report.ok, 0);
        assert!(
            report.failures.contains_key("connect_error"),
            "{:?}",
            report.failures
        );
    }
}
