//! cryptus and the monitoring services: its own metrics for Prometheus
//! (through node-exporter's textfile collector), deploy marks in Grafana,
//! and the PromQL questions deploy's metric gate asks Prometheus.
//!
//! All of it is best effort when monitoring does not run: a deploy never
//! fails because Grafana is down.

use std::fmt::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::context::Stack;
use crate::engine::{Container, Engine};
use crate::history::{self, Entry};
use crate::stack::{Color, VERSION_LABEL};

/// Where node-exporter's textfile collector reads cryptus's metrics.
pub const TEXTFILE_DIR: &str = "/var/lib/cryptus-metrics";
pub const TEXTFILE: &str = "cryptus.prom";
pub const NODE_EXPORTER: &str = "node-exporter";
pub const PROMETHEUS: &str = "prometheus";
pub const GRAFANA: &str = "grafana";

/// The metric gate's default: the new color answers more than 1% 5xx over
/// the watch window (health checks and scrapes left out). `{color}`,
/// `{version}` and `{window}` are filled in: the version keeps an earlier
/// deploy of the same color out of the window.
pub const DEFAULT_GATE: &str = concat!(
    r#"sum(rate(http_requests_total{color="{color}",version="{version}",status=~"5..",route!~"/api/health|/metrics"}[{window}]))"#,
    r#" / sum(rate(http_requests_total{color="{color}",version="{version}",route!~"/api/health|/metrics"}[{window}])) > 0.01"#
);

/// Whether Prometheus can judge the new version: at least one of the
/// request series the app must export for it, of real requests (cryptus's
/// own health probes and Prometheus's scrapes, which the gate leaves out,
/// are not evidence), holds two samples or more in the window, what
/// `rate()` needs. Until Prometheus has found the new
/// containers (DNS) and scraped them twice, the gate's condition is empty
/// whatever the version does: blindness, not a pass. Filled in as the gate.
pub const GATE_SEES: &str = r#"count(count_over_time(http_requests_total{color="{color}",version="{version}",route!~"/api/health|/metrics"}[{window}]) > 1)"#;

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// cryptus's metrics in Prometheus's text format.
pub fn render(active: Option<Color>, versions: &[(Color, String)], history: &[Entry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cryptus_active_color The color nginx serves: 1 for the active one."
    );
    let _ = writeln!(out, "# TYPE cryptus_active_color gauge");
    for color in Color::ALL {
        let value = u8::from(active == Some(color));
        let _ = writeln!(out, "cryptus_active_color{{color=\"{color}\"}} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP cryptus_color_version_info The version each color's containers run."
    );
    let _ = writeln!(out, "# TYPE cryptus_color_version_info gauge");
    for (color, version) in versions {
        let _ = writeln!(
            out,
            "cryptus_color_version_info{{color=\"{color}\",version=\"{}\"}} 1",
            escape(version)
        );
    }
    let _ = writeln!(
        out,
        "# HELP cryptus_deploys Deploys, rollbacks and scalings in the kept history, by outcome."
    );
    let _ = writeln!(out, "# TYPE cryptus_deploys gauge");
    let mut counts: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    for entry in history {
        *counts
            .entry((entry.operation.clone(), entry.outcome.as_str()))
            .or_default() += 1;
    }
    for ((operation, outcome), count) in &counts {
        let _ = writeln!(
            out,
            "cryptus_deploys{{operation=\"{}\",outcome=\"{outcome}\"}} {count}",
            escape(operation)
        );
    }
    let _ = writeln!(
        out,
        "# HELP cryptus_last_deploy_timestamp_seconds When the last of each operation ended."
    );
    let _ = writeln!(out, "# TYPE cryptus_last_deploy_timestamp_seconds gauge");
    let _ = writeln!(
        out,
        "# HELP cryptus_last_deploy_duration_seconds How long the last of each operation took."
    );
    let _ = writeln!(out, "# TYPE cryptus_last_deploy_duration_seconds gauge");
    let mut last: std::collections::BTreeMap<String, &Entry> = Default::default();
    for entry in history {
        last.insert(entry.operation.clone(), entry);
    }
    for (operation, entry) in &last {
        let labels = format!(
            "operation=\"{}\",outcome=\"{}\"",
            escape(operation),
            entry.outcome.as_str()
        );
        let _ = writeln!(
            out,
            "cryptus_last_deploy_timestamp_seconds{{{labels}}} {}",
            entry.time.timestamp()
        );
        if let Some(total) = entry.durations.get("total") {
            let _ = writeln!(
                out,
                "cryptus_last_deploy_duration_seconds{{{labels}}} {total}"
            );
        }
    }
    out
}

/// The first running container of a service.
pub fn running<'c>(containers: &'c [Container], service: &str) -> Option<&'c Container> {
    containers
        .iter()
        .find(|c| c.service == service && c.running)
}

/// Writes cryptus's metrics where node-exporter reads them, if it runs.
pub async fn publish(
    engine: &Engine,
    containers: &[Container],
    active: Option<Color>,
    history: &[Entry],
) -> Result<()> {
    let Some(exporter) = running(containers, NODE_EXPORTER) else {
        return Ok(());
    };
    let versions: Vec<(Color, String)> = Color::ALL
        .into_iter()
        .filter_map(|color| {
            containers
                .iter()
                .find(|c| c.service == color.service())
                .and_then(|c| c.label(VERSION_LABEL))
                .map(|v| (color, v.to_owned()))
        })
        .collect();
    let text = render(active, &versions, history);
    engine
        .put_file(&exporter.name, TEXTFILE_DIR, TEXTFILE, text.as_bytes())
        .await
        .context("writing cryptus's metrics for node-exporter")
}

impl Stack<'_> {
    /// Writes cryptus's metrics for node-exporter, if it runs, from the
    /// stack's containers and `history` (read from nginx when `None`); a
    /// failure is a warning: the operation it follows is done.
    pub async fn publish_metrics(&self, active: Option<Color>, history: Option<Vec<Entry>>) {
        let containers = self.containers().await.unwrap_or_default();
        let history = match history {
            Some(history) => history,
            None => history::read(&self.nginx()).await.unwrap_or_default(),
        };
        if let Err(err) = publish(self.engine, &containers, active, &history).await {
            self.printer.warn(format!("{err:#}"));
        }
    }
}

/// Marks a deploy in Grafana, if it runs and its admin password is known.
pub async fn annotate(
    containers: &[Container],
    password_file: Option<&std::path::Path>,
    entry: &Entry,
) -> Result<()> {
    let (Some(grafana), Some(password_file)) = (running(containers, GRAFANA), password_file) else {
        return Ok(());
    };
    let Some(addr) = grafana.published_addr(3000) else {
        return Ok(());
    };
    let password = std::fs::read_to_string(password_file).with_context(|| {
        format!(
            "reading Grafana's password from {}",
            password_file.display()
        )
    })?;
    let text = format!(
        "{} {}: {} {} -> {} {}{}",
        entry.operation,
        entry.outcome.as_str(),
        entry.from.color,
        entry.from.version,
        entry.to.color,
        entry.to.version,
        entry
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let body = json!({
        "time": entry.time.timestamp_millis(),
        "tags": ["cryptus", entry.operation, entry.outcome.as_str()],
        "text": text,
    });
    let answer = crate::health::client()
        .post(format!("http://{addr}/api/annotations"))
        .basic_auth("admin", Some(password.trim()))
        .json(&body)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .context("marking the deploy in Grafana")?;
    if !answer.status().is_success() {
        bail!("Grafana answered {} to the deploy mark", answer.status());
    }
    Ok(())
}

/// Where Prometheus answers, if it runs.
pub fn prometheus_addr(containers: &[Container]) -> Option<String> {
    running(containers, PROMETHEUS).and_then(|c| c.published_addr(PROMETHEUS_PORT))
}

/// The port Prometheus listens on in its container.
pub const PROMETHEUS_PORT: u16 = 9090;

/// The gate's PromQL for a color, version and window. The version was
/// checked to hold only letters, digits and `._+-`.
pub fn gate_query(condition: &str, color: Color, version: &str, window: Duration) -> String {
    condition
        .replace("{color}", color.as_str())
        .replace("{version}", version)
        .replace("{window}", &format!("{}s", window.as_secs().max(1)))
}

/// How Prometheus is asked: over HTTP from here, at its published port,
/// or from inside the stack, where it publishes none (a Swarm: an edge
/// nginx task fetches its answer on the overlay, as it probes the app).
#[derive(Clone)]
pub enum Prometheus {
    /// `ip:port` published on this host.
    Published(String),
    /// Fetched by a shell in `container` on `engine` from `host:port`.
    Inside {
        engine: Engine,
        container: String,
        host: String,
        port: u16,
    },
}

/// How long one question to Prometheus may take, either way.
const QUERY_DEADLINE: Duration = Duration::from_secs(5);

impl Prometheus {
    /// Evaluates an instant query; `Some(value)` of the first sample when
    /// the condition holds (a non-empty result), `None` when it does not.
    pub async fn query(&self, client: &reqwest::Client, promql: &str) -> Result<Option<f64>> {
        let mut url = reqwest::Url::parse("http://prometheus/api/v1/query")
            .context("building the query's address")?;
        url.query_pairs_mut().append_pair("query", promql);
        let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        let answer = match self {
            Prometheus::Published(addr) => client
                .get(format!("http://{addr}{path}"))
                .timeout(QUERY_DEADLINE)
                .send()
                .await
                .context("asking Prometheus")?
                .text()
                .await
                .context("reading Prometheus's answer")?,
            Prometheus::Inside {
                engine,
                container,
                host,
                port,
            } => {
                let fetched = crate::inside::fetch(engine, container, host, *port, &path);
                let (code, body) = tokio::time::timeout(QUERY_DEADLINE, fetched)
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {}s", QUERY_DEADLINE.as_secs()))
                    .and_then(|fetched| fetched)
                    .with_context(|| {
                        format!("asking Prometheus ({host}:{port}) from {container}")
                    })?;
                if !(200..500).contains(&code) {
                    bail!(
                        "Prometheus ({host}:{port}) answered {code}: {}",
                        body.trim()
                    );
                }
                body
            }
        };
        first_value(&answer)
    }
}

/// An instant query's answer: the first sample's value, `None` for an
/// empty result; an error when Prometheus refused the query.
fn first_value(answer: &str) -> Result<Option<f64>> {
    let answer: serde_json::Value =
        serde_json::from_str(answer).context("reading Prometheus's answer")?;
    if answer["status"] != "success" {
        bail!(
            "Prometheus refused the query: {}",
            answer["error"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(answer["data"]["result"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, Side};

    fn entry(operation: &str, outcome: Outcome, total: f64) -> Entry {
        let side = |color, version: &str| Side {
            color,
            image: "app".into(),
            version: version.into(),
            image_id: None,
            replicas: 1,
        };
        Entry {
            time: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            operation: operation.into(),
            user: "u".into(),
            host: "h".into(),
            from: side(Color::Blue, "1"),
            to: side(Color::Green, "2"),
            outcome,
            reason: None,
            durations: [("total".to_owned(), total)].into(),
            hooks: Vec::new(),
        }
    }

    #[test]
    fn metrics_name_the_active_color_and_the_history() {
        let history = [
            entry("deploy", Outcome::Ok, 1.5),
            entry("deploy", Outcome::RolledBack, 9.0),
            entry("rollback", Outcome::Ok, 0.5),
        ];
        let text = render(
            Some(Color::Green),
            &[(Color::Green, "2.0".into())],
            &history,
        );
        assert!(text.contains("cryptus_active_color{color=\"green\"} 1"));
        assert!(text.contains("cryptus_active_color{color=\"blue\"} 0"));
        assert!(text.contains("cryptus_color_version_info{color=\"green\",version=\"2.0\"} 1"));
        assert!(text.contains("cryptus_deploys{operation=\"deploy\",outcome=\"ok\"} 1"));
        assert!(text.contains("cryptus_deploys{operation=\"deploy\",outcome=\"rolled-back\"} 1"));
        assert!(text.contains(
            "cryptus_last_deploy_duration_seconds{operation=\"deploy\",outcome=\"rolled-back\"} 9"
        ));
        assert!(text.contains("cryptus_last_deploy_timestamp_seconds{operation=\"rollback\",outcome=\"ok\"} 1800000000"));
    }

    #[test]
    fn the_gate_names_the_color_and_window() {
        let query = gate_query(DEFAULT_GATE, Color::Green, "2.0", Duration::from_secs(20));
        assert!(
            query.contains(r#"color="green",version="2.0""#) && query.contains("[20s]"),
            "{query}"
        );
        assert!(!query.contains('{') || !query.contains("{color}"));
        let sees = gate_query(GATE_SEES, Color::Green, "2.0", Duration::from_secs(20));
        assert_eq!(
            sees,
            r#"count(count_over_time(http_requests_total{color="green",version="2.0",route!~"/api/health|/metrics"}[20s]) > 1)"#
        );
    }
}
