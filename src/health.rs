//! The app's `/api/health`: one look at it (directly or through the load
//! balancer), what a healthy answer must say, and where a container answers.
//! Waiting for an answer, under a deadline, is `ready`'s.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::Container;
use crate::stack::{APP_PORT, Color};

pub const HEALTH_PATH: &str = "/api/health";

/// The seed's health document.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Report {
    pub status: String,
    pub timestamp: String,
    pub uptime: f64,
    pub instance: String,
    pub version: String,
    pub memory: Memory,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Memory {
    pub used: f64,
    pub total: f64,
}

/// One look at a health endpoint.
#[derive(Clone, Debug)]
pub enum Probe {
    /// 200 with a health document.
    Answered(Report),
    /// Any other answer.
    Refused { code: u16, body: String },
    /// No answer: refused connection, timeout, reset.
    Unreachable(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Answered(report) => write!(
                f,
                "200 status={} instance={} version={}",
                report.status, report.instance, report.version
            ),
            Probe::Refused { code, body } => {
                let body: String = body.trim().chars().take(200).collect();
                write!(f, "{code} {body}")
            }
            Probe::Unreachable(reason) => write!(f, "no answer ({reason})"),
        }
    }
}

/// What a healthy answer must say.
#[derive(Clone, Debug)]
pub struct Expect {
    pub color: Color,
    /// `None` accepts any version.
    pub version: Option<String>,
}

impl Probe {
    /// Whether the probe shows a healthy app of the expected color and version.
    pub fn satisfies(&self, expect: &Expect) -> bool {
        match self {
            Probe::Answered(report) => {
                report.status == "healthy"
                    && report.instance == expect.color.as_str()
                    && expect.version.as_ref().is_none_or(|v| *v == report.version)
            }
            _ => false,
        }
    }
}

/// The HTTP client for the stack's own endpoints (the apps, nginx's status
/// port, Prometheus, Grafana): no proxy (they are on loopback and the
/// project's networks), short timeouts, no redirects (a probe judges the
/// first answer). They speak plain HTTP, so no TLS roots are loaded:
/// loading the system's takes longer than most probes. One per process,
/// shared (a clone is a handle to it); that is sound across tokio runtimes
/// (the tests run several) only because connections are never pooled
/// (`pool_max_idle_per_host(0)`): a pooled connection's task lives on the
/// runtime that opened it. No reuse also means a dead backend is noticed
/// at once.
pub fn client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .tls_certs_only(std::iter::empty::<reqwest::Certificate>())
                .build()
                .unwrap_or_default()
        })
        .clone()
}

/// A client for https to the world (notification webhooks): the system's
/// TLS roots, read from disk as it is built (so build it off the async
/// threads), and the system's proxy settings (`HTTPS_PROXY`).
pub fn tls_client() -> Result<reqwest::Client, String> {
    builder()
        .build()
        .map_err(|err| format!("making an https client: {err}"))
}

fn builder() -> reqwest::ClientBuilder {
    // https needs a crypto provider installed before any client is built;
    // a second install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
}

pub async fn probe(client: &reqwest::Client, addr: &str, timeout: Duration) -> Probe {
    let url = format!("http://{addr}{HEALTH_PATH}");
    let answer = match client.get(&url).timeout(timeout).send().await {
        Ok(answer) => answer,
        Err(err) => return Probe::Unreachable(reason(&err)),
    };
    let code = answer.status().as_u16();
    let body = match answer.text().await {
        Ok(body) => body,
        Err(err) => return Probe::Unreachable(reason(&err)),
    };
    if code == 200 {
        match serde_json::from_str::<Report>(&body) {
            Ok(report) => Probe::Answered(report),
            Err(err) => Probe::Refused {
                code,
                body: format!("not a health document ({err}): {body}"),
            },
        }
    } else {
        Probe::Refused { code, body }
    }
}

/// Why a request got no answer, in words: the innermost cause.
pub fn reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text
}

/// Where this host reaches an app container's health endpoint: its
/// published port, else its address on its first network.
pub fn app_addr(container: &Container) -> Option<String> {
    container.published_addr(APP_PORT).or_else(|| {
        container
            .addresses
            .values()
            .next()
            .map(|ip| format!("{ip}:{APP_PORT}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: &str, instance: &str, version: &str) -> Probe {
        Probe::Answered(Report {
            status: status.to_owned(),
            timestamp: "2026-01-01T00:00:00.000Z".to_owned(),
            uptime: 1.0,
            instance: instance.to_owned(),
            version: version.to_owned(),
            memory: Memory {
                used: 1.0,
                total: 2.0,
            },
        })
    }

    #[test]
    fn healthy_means_status_color_and_version() {
        let expect = Expect {
            color: Color::Green,
            version: Some("v2".to_owned()),
        };
        assert!(report("healthy", "green", "v2").satisfies(&expect));
        assert!(!report("healthy", "blue", "v2").satisfies(&expect));
        assert!(!report("healthy", "green", "v1").satisfies(&expect));
        assert!(!report("starting", "green", "v2").satisfies(&expect));
        let any = Expect {
            color: Color::Green,
            version: None,
        };
        assert!(report("healthy", "green", "v9").satisfies(&any));
        assert!(!Probe::Unreachable("refused".into()).satisfies(&any));
    }

    #[test]
    fn the_seed_document_parses() {
        let seed = r#"{"status":"healthy","timestamp":"2023-12-01T12:00:00.000Z","uptime":123.45,"instance":"blue","version":"0.1.0","memory":{"used":45.67,"total":128.00}}"#;
        let parsed: Report = serde_json::from_str(seed).unwrap();
        assert_eq!(parsed.instance, "blue");
        assert_eq!(parsed.memory.total, 128.0);
    }
}
