//! The app's HTTP routes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, COOKIE, HeaderValue, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::watch;

use crate::config::Config;
use crate::live::{self, Events};
use crate::metrics::Metrics;
use crate::redis::{Client, Reply};

const SESSION_COOKIE: &str = "cryptus_sid";
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The largest body `POST /api/echo` reads.
const MAX_ECHO: usize = 64 * 1024;

pub struct App {
    config: Config,
    redis: Option<Client>,
    started: Instant,
    draining: AtomicBool,
    /// Requests that may be failed on purpose, for `APP_ERROR_RATIO`.
    counted: AtomicU64,
    metrics: Metrics,
    /// Notifications received on /api/alerts.
    alerts: std::sync::Mutex<Vec<serde_json::Value>>,
    /// Marks received on /api/annotations.
    annotations: std::sync::Mutex<Vec<serde_json::Value>>,
    /// Deploy notifications received on /api/notifications.
    notifications: std::sync::Mutex<Vec<serde_json::Value>>,
    /// Turns true on shutdown: event streams and WebSockets end, and each
    /// connection finishes its request and closes. Each holds a receiver,
    /// so the sender sees when the last one is gone.
    closing: watch::Sender<bool>,
}

type Answer = Response<Full<Bytes>>;
/// An answer of any route: whole, or a stream of events.
pub type Body = Either<Full<Bytes>, Events>;

/// The seed's health document, field for field and in its order.
#[derive(serde::Serialize)]
struct Health<'a> {
    status: &'a str,
    timestamp: String,
    uptime: f64,
    instance: &'a str,
    version: &'a str,
    memory: Memory,
}

#[derive(serde::Serialize)]
struct Visits<'a> {
    visits: i64,
    instance: &'a str,
}

#[derive(serde::Serialize)]
struct Memory {
    used: f64,
    total: f64,
}

impl App {
    pub fn new(config: Config) -> App {
        let redis = config.redis.clone().map(Client::new);
        App {
            config,
            redis,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            counted: AtomicU64::new(0),
            metrics: Metrics::default(),
            alerts: std::sync::Mutex::new(Vec::new()),
            annotations: std::sync::Mutex::new(Vec::new()),
            notifications: std::sync::Mutex::new(Vec::new()),
            closing: watch::Sender::new(false),
        }
    }

    /// A handle that sees the shutdown begin; the app's shutdown waits
    /// until every handle is dropped.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Begins the shutdown, then waits (up to `limit`) until every
    /// connection, event stream and WebSocket has ended. Returns whether
    /// they all did.
    pub async fn close(&self, limit: Duration) -> bool {
        self.set_draining();
        self.closing.send_replace(true);
        tokio::time::timeout(limit, self.closing.closed())
            .await
            .is_ok()
    }

    /// Every route: the long-lived ones (an event stream, a WebSocket)
    /// here, the rest through [`App::handle`].
    pub async fn serve(&self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let begun = Instant::now();
        let route = route_of(request.uri().path());
        let serving = live::Serving {
            color: self.config.color.clone(),
            version: self.config.version.clone(),
        };
        let answer = match route {
            _ if request.method() != Method::GET && live::is_live(route) => Err(json_answer(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            )),
            "/api/events" => match live::every(request.uri().query()) {
                Ok(every) => Ok(live::events(serving, every, self.closing())),
                Err(why) => Err(json_answer(StatusCode::BAD_REQUEST, json!({"error": why}))),
            },
            "/api/ws" => live::websocket(request, serving, self.closing())
                .map_err(|(code, why)| json_answer(code, json!({"error": why}))),
            _ => return Ok(self.handle(request).await?.map(Either::Left)),
        };
        let mut answer = match answer {
            Ok(answer) => answer.map(Either::Right),
            Err(refused) => refused.map(Either::Left),
        };
        if let Ok(color) = HeaderValue::from_str(&self.config.color) {
            answer.headers_mut().insert("x-cryptus-instance", color);
        }
        self.metrics
            .observe(route, answer.status().as_u16(), begun.elapsed());
        Ok(answer)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Result<Answer, Infallible> {
        let begun = Instant::now();
        let route = route_of(request.uri().path());
        let mut answer = if route == "/api/alerts" {
            receive(request, &self.alerts, "alerts").await
        } else if route == "/api/notifications" {
            receive(request, &self.notifications, "notifications").await
        } else if route == "/api/annotations" {
            match self.grafana_denial(&request) {
                None => receive(request, &self.annotations, "annotations").await,
                Some(denied) => denied,
            }
        } else if route == "/api/echo" {
            if request.method() != Method::POST {
                json_answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"error": "method not allowed"}),
                )
            } else if self.fail_on_purpose() {
                self.failed_on_purpose()
            } else {
                self.echo(request.into_body()).await
            }
        } else if request.method() != Method::GET && request.method() != Method::HEAD {
            json_answer(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            )
        } else if route != "/api/health" && route != "/metrics" && self.fail_on_purpose() {
            self.failed_on_purpose()
        } else {
            match route {
                "/api/health" => self.health(),
                "/api/session" => self.session(&request).await,
                "/api/sleep" => self.sleep(request.uri().query()).await,
                "/metrics" => self.metrics(),
                "/" => self.index(),
                _ => json_answer(StatusCode::NOT_FOUND, json!({"error": "not found"})),
            }
        };
        if let Ok(color) = HeaderValue::from_str(&self.config.color) {
            answer.headers_mut().insert("x-cryptus-instance", color);
        }
        self.metrics
            .observe(route, answer.status().as_u16(), begun.elapsed());
        Ok(answer)
    }

    fn fail_on_purpose(&self) -> bool {
        let ratio = self.config.error_ratio;
        if ratio <= 0.0 {
            return false;
        }
        fails_on_purpose(self.counted.fetch_add(1, Ordering::Relaxed) + 1, ratio)
    }

    fn failed_on_purpose(&self) -> Answer {
        json_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "failed on purpose (APP_ERROR_RATIO)", "instance": self.config.color}),
        )
    }

    /// `POST /api/echo`: the cheapest request with a body, for clients that
    /// must never be retried (the benchmark's POST clients). It reads the
    /// whole body, so a body cut off by a switch shows as a wrong length.
    async fn echo(&self, body: Incoming) -> Answer {
        use http_body_util::BodyExt;
        match http_body_util::Limited::new(body, MAX_ECHO).collect().await {
            Ok(body) => json_answer(
                StatusCode::OK,
                json!({"length": body.to_bytes().len(), "instance": self.config.color}),
            ),
            Err(_) => json_answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("body above {MAX_ECHO} bytes or cut off")}),
            ),
        }
    }

    fn health(&self) -> Answer {
        let status = if self.config.never_healthy {
            "unhealthy"
        } else if self.draining.load(Ordering::SeqCst) {
            "draining"
        } else {
            "healthy"
        };
        let (used, total) = memory_mb();
        let body = Health {
            status,
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            uptime: round2(self.started.elapsed().as_secs_f64()),
            instance: &self.config.color,
            version: &self.config.version,
            memory: Memory {
                used: round2(used),
                total: round2(total),
            },
        };
        let code = if status == "healthy" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_answer(code, body)
    }

    async fn session(&self, request: &Request<Incoming>) -> Answer {
        let Some(redis) = &self.redis else {
            return json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "sessions need REDIS_URL", "instance": self.config.color}),
            );
        };
        let existing = session_id(request);
        let id = existing.clone().unwrap_or_else(new_session_id);
        let key = format!("cryptus:session:{id}:visits");
        match redis.command(&[b"INCR", key.as_bytes()]).await {
            Ok(Reply::Integer(visits)) => {
                let mut answer = json_answer(
                    StatusCode::OK,
                    Visits {
                        visits,
                        instance: &self.config.color,
                    },
                );
                if existing.is_none() {
                    let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax");
                    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                        answer.headers_mut().insert(SET_COOKIE, cookie);
                    }
                }
                answer
            }
            Ok(other) => json_answer(
                StatusCode::BAD_GATEWAY,
                json!({"error": format!("unexpected redis reply {other:?}"), "instance": self.config.color}),
            ),
            Err(err) => json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("sessions unavailable: {err}"), "instance": self.config.color}),
            ),
        }
    }

    async fn sleep(&self, query: Option<&str>) -> Answer {
        let ms = query
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("ms="))
            .map(str::parse::<u64>);
        let ms = match ms {
            Some(Ok(ms)) => ms,
            None => 0,
            Some(Err(_)) => {
                return json_answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "ms must be a whole number of milliseconds"}),
                );
            }
        };
        let wanted = Duration::from_millis(ms).min(MAX_SLEEP);
        tokio::time::sleep(wanted).await;
        json_answer(
            StatusCode::OK,
            json!({"slept_ms": wanted.as_millis() as u64, "instance": self.config.color}),
        )
    }

    /// Grafana's basic auth, as a stand-in for Grafana's annotations API:
    /// with `GF_SECURITY_ADMIN_PASSWORD__FILE` set (as the compose file sets
    /// it for Grafana), only `admin` with that file's password gets in.
    /// Returns the 401 for anyone else.
    fn grafana_denial(&self, request: &Request<Incoming>) -> Option<Answer> {
        use base64::Engine;
        let file = self.config.grafana_password_file.as_ref()?;
        let denied = |why: &str| json_answer(StatusCode::UNAUTHORIZED, json!({"message": why}));
        let password = match std::fs::read_to_string(file) {
            Ok(password) => password,
            Err(err) => return Some(denied(&format!("cannot read {}: {err}", file.display()))),
        };
        let expected =
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", password.trim()));
        let given = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "));
        (given != Some(expected.as_str())).then(|| denied("invalid username or password"))
    }

    fn metrics(&self) -> Answer {
        let text = self.metrics.render(
            &self.config.color,
            &self.config.version,
            self.started.elapsed().as_secs_f64(),
        );
        let mut answer = Response::new(Full::new(Bytes::from(text)));
        answer.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        answer
    }

    fn index(&self) -> Answer {
        let color = html_escape(&self.config.color);
        let version = html_escape(&self.config.version);
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Cryptus</title></head>\n\
             <body><h1>Cryptus</h1><p>Served by the <b>{color}</b> instance, version {version}.</p>\n\
             <p>{filler}</p></body></html>\n",
            // Enough text for gzip to be worth it, so the proxy's compression is testable.
            filler = "Zero-downtime blue/green deployments. ".repeat(40),
        );
        let mut answer = Response::new(Full::new(Bytes::from(page)));
        answer.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        answer
    }
}

/// Whether the n-th counted request (from 1) fails: deterministic, so with a
/// ratio of 0.2 exactly every fifth request fails.
fn fails_on_purpose(n: u64, ratio: f64) -> bool {
    (n as f64 * ratio).floor() > ((n - 1) as f64 * ratio).floor()
}

/// A receiver for tests and demos: POST stores a JSON body (the newest 100
/// are kept), GET lists them under `key`. /api/alerts takes Alertmanager's
/// notifications; /api/annotations takes Grafana annotations;
/// /api/notifications takes cryptus's deploy notifications.
async fn receive(
    request: Request<Incoming>,
    store: &std::sync::Mutex<Vec<serde_json::Value>>,
    key: &str,
) -> Answer {
    use http_body_util::BodyExt;
    match *request.method() {
        Method::POST => {
            let body = match http_body_util::Limited::new(request.into_body(), 1 << 20)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return json_answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json!({"error": "body too large"}),
                    );
                }
            };
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return json_answer(StatusCode::BAD_REQUEST, json!({"error": "not JSON"}));
            };
            if let Ok(mut stored) = store.lock() {
                stored.push(value);
                let excess = stored.len().saturating_sub(100);
                stored.drain(..excess);
            }
            json_answer(StatusCode::OK, json!({"stored": true}))
        }
        Method::GET => {
            let stored = store.lock().map(|a| a.clone()).unwrap_or_default();
            json_answer(StatusCode::OK, json!({ key: stored }))
        }
        _ => json_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed"}),
        ),
    }
}

fn route_of(path: &str) -> &'static str {
    match path {
        "/api/health" => "/api/health",
        "/api/session" => "/api/session",
        "/api/sleep" => "/api/sleep",
        "/api/echo" => "/api/echo",
        "/metrics" => "/metrics",
        "/api/alerts" => "/api/alerts",
        "/api/annotations" => "/api/annotations",
        "/api/notifications" => "/api/notifications",
        "/api/events" => "/api/events",
        "/api/ws" => "/api/ws",
        "/" | "/index.html" => "/",
        _ => "other",
    }
}

fn json_answer(code: StatusCode, body: impl serde::Serialize) -> Answer {
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = code;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

fn session_id(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, id)| id.to_owned())
        .filter(|id| (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_session_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: fall back to the clock and a counter, still unique.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..].copy_from_slice(&(count ^ u64::from(std::process::id())).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Resident memory of this process and the memory it may use, in MB.
fn memory_mb() -> (f64, f64) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let kb_field = |text: &str, field: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
    };
    let used = kb_field(&read("/proc/self/status"), "VmRSS:").unwrap_or(0.0) / 1024.0;
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| read(path).trim().parse::<f64>().ok())
    .filter(|bytes| *bytes < 1e15)
    .map(|bytes| bytes / 1024.0 / 1024.0);
    let total = limit
        .or_else(|| kb_field(&read("/proc/meminfo"), "MemTotal:").map(|kb| kb / 1024.0))
        .unwrap_or(0.0);
    (used, total)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_closed_set() {
        assert_eq!(route_of("/api/health"), "/api/health");
        assert_eq!(route_of("/api/health/x"), "other");
        assert_eq!(route_of("/api/notifications"), "/api/notifications");
        assert_eq!(route_of("/"), "/");
    }

    #[test]
    fn error_ratio_fails_that_share_of_requests() {
        let failed = |ratio| (1..=1000).filter(|n| fails_on_purpose(*n, ratio)).count();
        assert_eq!(failed(0.2), 200);
        assert_eq!(failed(0.0), 0);
        assert_eq!(failed(1.0), 1000);
        assert!(!fails_on_purpose(4, 0.2) && fails_on_purpose(5, 0.2));
    }

    fn config(color: &str) -> Config {
        Config {
            port: 0,
            color: color.to_owned(),
            version: "1.0.0".to_owned(),
            redis: None,
            startup_delay: Duration::ZERO,
            never_healthy: false,
            crash_after: None,
            error_ratio: 0.0,
            grafana_password_file: None,
        }
    }

    /// Sends `request` to the app served on a loopback port, as nginx would,
    /// and returns the raw answer (the app closes after it: `Connection: close`).
    async fn ask(app: App, request: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = std::sync::Arc::new(app);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |request| {
                let app = std::sync::Arc::clone(&app);
                async move { app.handle(request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        answer
    }

    #[tokio::test]
    async fn echo_answers_the_body_length_with_the_instance_header() {
        let body = r#"{"n":1,"pad":"xxxxxxxx"}"#;
        let answer = ask(
            App::new(config("green")),
            format!(
                "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("x-cryptus-instance: green"),
            "{answer}"
        );
        assert!(
            answer.ends_with(&format!(
                r#"{{"instance":"green","length":{}}}"#,
                body.len()
            )),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn echo_takes_only_post() {
        let answer = ask(
            App::new(config("blue")),
            "GET /api/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_owned(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }

    /// An event stream served as main serves it: events name the color;
    /// closing the app ends the stream with `bye`, and the close sees the
    /// last connection go.
    #[tokio::test]
    async fn closing_ends_an_event_stream_with_bye() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = std::sync::Arc::new(App::new(config("green")));
        let served = std::sync::Arc::clone(&app);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            crate::connection(served, stream).await;
        });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = "GET /api/events?every_ms=10 HTTP/1.1\r\nHost: t\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("\"seq\":2") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buffer[..n]);
        }
        let (closed, rest) = tokio::join!(app.close(Duration::from_secs(5)), async {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
                .await
                .unwrap()
                .unwrap();
            rest
        });
        seen.extend_from_slice(&rest);
        let text = String::from_utf8_lossy(&seen);
        assert!(closed, "a connection was still open: {text}");
        assert!(text.contains("text/event-stream"), "{text}");
        assert!(text.contains("x-accel-buffering: no"), "{text}");
        assert!(
            text.contains("event: tick\ndata: {\"instance\":\"green\""),
            "{text}"
        );
        assert!(text.contains("event: bye\n"), "{text}");
        // The chunked body ended whole.
        assert!(text.ends_with("0\r\n\r\n"), "{text}");
    }

    #[test]
    fn session_ids_are_hex() {
        let id = new_session_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_session_id());
    }
}
