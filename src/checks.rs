//! What `cryptus health` checks: every component of a project (nginx and
//! the color it serves, each app container, Redis, the monitoring services
//! that run), each within a deadline, into one [`Report`] that names what is
//! unhealthy and why.
//!
//! The engine and the network are asked at the edges; what an answer means
//! (an app's health document, Redis's INFO, Prometheus's targets) is judged
//! by plain functions.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use futures_util::future::join_all;
use serde::Serialize;

use crate::context::Stack;
use crate::engine::{Container, Engine};
use crate::error::EXIT_FAILED;
use crate::health::{self, Expect, Probe};
use crate::metrics;
use crate::nginx::{self, Nginx};
use crate::output;
use crate::redis::Redis;
use crate::stack::{Color, LB_SERVICE, VERSION_LABEL};

/// One component's verdict.
#[derive(Debug, Serialize)]
pub struct Check {
    pub component: String,
    pub healthy: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<health::Memory>,
}

impl Check {
    pub fn new(component: impl Into<String>, healthy: bool, detail: impl Into<String>) -> Check {
        Check {
            component: component.into(),
            healthy,
            detail: detail.into(),
            color: None,
            version: None,
            memory_mb: None,
        }
    }
}

pub const HINT: &str = "`cryptus status` and `cryptus logs SERVICE` show more; `cryptus start` repairs a stopped or missing service";

/// Every check of a project, and when any fails, the one-line failure.
#[derive(Serialize)]
pub struct Report {
    pub ok: bool,
    /// When unhealthy: what is, in one line (the contract's failure fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    pub project: String,
    pub active: Option<Color>,
    pub checks: Vec<Check>,
}

impl Report {
    /// The report of `checks`: healthy when every one is.
    pub fn new(project: String, active: Option<Color>, checks: Vec<Check>) -> Report {
        let ok = checks.iter().all(|c| c.healthy);
        let unhealthy: Vec<String> = checks
            .iter()
            .filter(|c| !c.healthy)
            .map(|c| format!("{} ({})", c.component, c.detail))
            .collect();
        Report {
            ok,
            error: (!ok).then(|| format!("unhealthy: {}", unhealthy.join("; "))),
            hint: (!ok).then_some(HINT),
            exit_code: (!ok).then_some(EXIT_FAILED),
            project,
            active,
            checks,
        }
    }
}

/// The report as a table, one row per check.
pub fn render(report: &Report) -> String {
    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .map(|c| {
            vec![
                c.component.clone(),
                if c.healthy { "ok" } else { "UNHEALTHY" }.to_owned(),
                c.detail.clone(),
            ]
        })
        .collect();
    output::table(&["COMPONENT", "STATUS", "DETAIL"], &rows)
}

/// Checks every component of `containers` (the project's service
/// containers); each question waits at most `timeout`.
pub async fn check(
    engine: &Engine,
    project: &str,
    containers: &[Container],
    timeout: Duration,
) -> Report {
    let client = health::client();
    let lb = containers.iter().find(|c| c.service == LB_SERVICE);
    // Ask at once what does not depend on the active color: nginx's
    // `nginx -t` (an exec, the slowest question) and the probe through it,
    // redis and monitoring. Only the colors' checks wait for it (one
    // question to nginx's status port), and judging nginx's answers.
    let served = async {
        let colors = async {
            let active = active_color(engine, lb, &client, timeout).await;
            let checks = join_all(
                Color::ALL.map(|color| check_color(color, active, containers, &client, timeout)),
            )
            .await;
            (active, checks)
        };
        let (answers, (active, colors)) =
            tokio::join!(ask_nginx(engine, lb, &client, timeout), colors);
        (active, judge_nginx(answers, active), colors)
    };
    let ((active, nginx, colors), redis, monitoring) = tokio::join!(
        served,
        check_redis(engine, containers, timeout),
        check_monitoring(containers, &client, timeout)
    );
    let mut checks = vec![nginx];
    checks.extend(colors.into_iter().flatten());
    checks.push(redis);
    checks.extend(monitoring);
    Report::new(project.to_owned(), active, checks)
}

/// The active color: what nginx serves, else what its upstream file says.
async fn active_color(
    engine: &Engine,
    lb: Option<&Container>,
    client: &reqwest::Client,
    timeout: Duration,
) -> Option<Color> {
    let lb = lb?;
    if lb.running
        && let Some(addr) = Stack::status_addr(lb)
        && let Ok(color) = within(timeout, nginx::served_color(client, &addr)).await
    {
        return Some(color);
    }
    let nginx = Nginx::named(engine, lb.name.clone());
    within(timeout, nginx.read(nginx::UPSTREAM_FILE))
        .await
        .ok()
        .flatten()
        .as_deref()
        .and_then(nginx::upstream_color)
}

/// `work`, or an error naming the deadline it missed.
pub async fn within<T>(timeout: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "no answer within {}",
            output::seconds(timeout)
        )),
    }
}

/// What nginx answered: its `nginx -t`, and the app's answer through the
/// load balancer; or why it could not be asked.
type NginxAnswers = Result<(String, Probe), String>;

/// Asks nginx's two questions at once: both are independent of the active
/// color, which only judging them needs.
async fn ask_nginx(
    engine: &Engine,
    lb: Option<&Container>,
    client: &reqwest::Client,
    timeout: Duration,
) -> NginxAnswers {
    let Some(lb) = lb else {
        return Err("there is no nginx container (cryptus start)".into());
    };
    if !lb.running {
        return Err(format!("{} is {}", lb.name, lb.state));
    }
    let Some(addr) = lb.published_addr(nginx::HTTP_PORT) else {
        return Err("the load balancer publishes no port".into());
    };
    let nginx = Nginx::named(engine, lb.name.clone());
    let (tested, probe) = tokio::join!(
        within(timeout, nginx.test()),
        health::probe(client, &addr, timeout)
    );
    match tested {
        Ok(Ok(())) => Ok((addr, probe)),
        Ok(Err(reason)) => Err(format!("nginx -t fails: {reason}")),
        Err(err) => Err(format!("nginx -t: {err:#}")),
    }
}

/// nginx runs, its configuration passes `nginx -t`, and the active color
/// answers healthy through the load balancer.
fn judge_nginx(answers: NginxAnswers, active: Option<Color>) -> Check {
    let unhealthy = |detail: String| Check::new("nginx", false, detail);
    let (addr, probe) = match answers {
        Ok(answers) => answers,
        Err(detail) => return unhealthy(detail),
    };
    let Some(active) = active else {
        return unhealthy("nginx names no active color".into());
    };
    let expect = Expect {
        color: active,
        version: None,
    };
    if probe.satisfies(&expect) {
        Check::new(
            "nginx",
            true,
            format!("config ok; {active} answers through http://{addr}"),
        )
    } else {
        unhealthy(format!(
            "config ok, but the load balancer at {addr} answered: {probe}"
        ))
    }
}

/// Each container of a color, asked directly: the active color's must be
/// healthy; a standby's may be stopped.
async fn check_color(
    color: Color,
    active: Option<Color>,
    containers: &[Container],
    client: &reqwest::Client,
    timeout: Duration,
) -> Vec<Check> {
    let of_color: Vec<&Container> = containers
        .iter()
        .filter(|c| c.service == color.service())
        .collect();
    let is_active = active == Some(color);
    let running = of_color.iter().filter(|c| c.running).count();
    if let Some(checks) = nothing_to_probe(color, is_active, ("container", of_color.len()), running)
    {
        return checks;
    }
    let probes = futures_util::future::join_all(of_color.iter().map(|container| async move {
        let probe = match Stack::app_addr(container).filter(|_| container.running) {
            Some(addr) => Some(health::probe(client, &addr, timeout).await),
            None => None,
        };
        (*container, probe)
    }))
    .await;
    probes
        .into_iter()
        .map(|(container, probe)| {
            let mut check = judge_app(color, is_active, &container.name, &container.state, probe);
            if check.version.is_none() {
                check.version = container.label(VERSION_LABEL).map(str::to_owned);
            }
            check
        })
        .collect()
}

/// The checks of a color with no container (on a Swarm, `unit` is
/// `task`) to ask (`None`: ask them). The active color without a running
/// one is unhealthy; a standby with none is not checked at all.
pub fn nothing_to_probe(
    color: Color,
    is_active: bool,
    (unit, units): (&str, usize),
    running: usize,
) -> Option<Vec<Check>> {
    let unhealthy = |detail: String| vec![Check::new(color.service(), false, detail)];
    if units == 0 {
        return Some(if is_active {
            unhealthy(format!("the active color has no {unit}"))
        } else {
            Vec::new()
        });
    }
    if is_active && running == 0 {
        return Some(unhealthy(format!(
            "the active color has no running {unit} ({units} not running)"
        )));
    }
    None
}

/// What an app container's (or task's) answer (`None`: it was not asked,
/// as it does not run) says about it.
pub fn judge_app(
    color: Color,
    is_active: bool,
    name: &str,
    state: &str,
    probe: Option<Probe>,
) -> Check {
    let role = if is_active { "active" } else { "standby" };
    let mut check = match probe {
        None => Check::new(name, !is_active, format!("{role}, {state} (not serving)")),
        Some(Probe::Answered(report))
            if report.status == "healthy" && report.instance == color.as_str() =>
        {
            let uptime = Duration::try_from_secs_f64(report.uptime).unwrap_or_default();
            let mut check = Check::new(
                name,
                true,
                format!(
                    "{role}, {} {} healthy, memory {:.1}/{:.0} MB, up {}",
                    report.instance,
                    report.version,
                    report.memory.used,
                    report.memory.total,
                    output::uptime(uptime)
                ),
            );
            check.version = Some(report.version);
            check.memory_mb = Some(report.memory);
            check
        }
        Some(probe) => Check::new(
            name,
            false,
            format!("{role}, /api/health answered: {probe}"),
        ),
    };
    check.color = Some(color);
    check
}

/// Redis answers PING and its last snapshot and AOF write succeeded.
async fn check_redis(engine: &Engine, containers: &[Container], timeout: Duration) -> Check {
    let Some(container) = containers.iter().find(|c| c.service == "redis") else {
        return Check::new(
            "redis",
            false,
            "there is no redis container (cryptus start)",
        );
    };
    if !container.running {
        return Check::new(
            "redis",
            false,
            format!("{} is {}", container.name, container.state),
        );
    }
    let redis = Redis {
        engine,
        container: container.name.clone(),
    };
    // One question (INFO's default sections hold memory and persistence):
    // an answer is as good as a PONG, and each exec costs a process.
    match within(timeout, redis.info("default")).await {
        Ok(info) => judge_redis(&info),
        Err(err) => Check::new("redis", false, format!("{err:#}")),
    }
}

/// What Redis's INFO (memory and persistence) says about it, once it
/// answered.
pub fn judge_redis(info: &BTreeMap<String, String>) -> Check {
    let get = |key: &str| info.get(key).cloned().unwrap_or_else(|| "?".to_owned());
    let rdb = get("rdb_last_bgsave_status");
    let aof = if get("aof_enabled") == "1" {
        format!("aof on ({})", get("aof_last_write_status"))
    } else {
        "aof off".to_owned()
    };
    let healthy = rdb != "err" && !aof.contains("(err)");
    Check::new(
        "redis",
        healthy,
        format!(
            "answers; memory {}; last snapshot {rdb}; {aof}",
            get("used_memory_human")
        ),
    )
}

/// Prometheus ready, Grafana healthy, every scrape target up: for the
/// monitoring services that run.
async fn check_monitoring(
    containers: &[Container],
    client: &reqwest::Client,
    timeout: Duration,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let running = |service| metrics::running(containers, service);
    if let Some(prometheus) = running(metrics::PROMETHEUS) {
        let Some(addr) = prometheus.published_addr(9090) else {
            // A Prometheus that publishes no port ends the monitoring checks:
            // Grafana and Alertmanager are not looked at.
            checks.push(Check::new("prometheus", false, "publishes no port 9090"));
            return checks;
        };
        checks.push(answers("prometheus", client, &addr, "/-/ready", "ready", timeout).await);
        checks.push(match get(client, &addr, "/api/v1/targets", timeout).await {
            Ok(body) => judge_targets(&body),
            Err(err) => Check::new("scrape targets", false, err),
        });
    }
    if let Some(grafana) = running(metrics::GRAFANA) {
        checks.push(match grafana.published_addr(3000) {
            Some(addr) => {
                answers("grafana", client, &addr, "/api/health", "healthy", timeout).await
            }
            None => Check::new("grafana", false, "publishes no port 3000"),
        });
    }
    if let Some(alertmanager) = running("alertmanager")
        && let Some(addr) = alertmanager.published_addr(9093)
    {
        checks.push(answers("alertmanager", client, &addr, "/-/ready", "ready", timeout).await);
    }
    checks
}

/// Healthy when `path` answers with success: `{word} at http://{addr}`.
async fn answers(
    component: &str,
    client: &reqwest::Client,
    addr: &str,
    path: &'static str,
    word: &str,
    timeout: Duration,
) -> Check {
    match get(client, addr, path, timeout).await {
        Ok(_) => Check::new(component, true, format!("{word} at http://{addr}")),
        Err(err) => Check::new(component, false, err),
    }
}

/// The body of a successful answer, or what went wrong, in words.
async fn get(
    client: &reqwest::Client,
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let answer = client
        .get(format!("http://{addr}{path}"))
        .timeout(timeout)
        .send()
        .await
        .map_err(|err| format!("no answer at {path}: {err}"))?;
    let code = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if code.is_success() {
        Ok(body)
    } else {
        Err(format!("{path} answered {code}"))
    }
}

/// What Prometheus's `/api/v1/targets` says: healthy when every active
/// target is up; otherwise each one down, with its last error.
fn judge_targets(body: &str) -> Check {
    let targets: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let active = targets["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let down: Vec<String> = active
        .iter()
        .filter(|t| t["health"] != "up")
        .map(|t| {
            format!(
                "{} {} ({})",
                t["labels"]["job"].as_str().unwrap_or("?"),
                t["labels"]["instance"].as_str().unwrap_or("?"),
                t["lastError"]
                    .as_str()
                    .unwrap_or(t["health"].as_str().unwrap_or("?"))
            )
        })
        .collect();
    if down.is_empty() {
        Check::new("scrape targets", true, format!("all {} up", active.len()))
    } else {
        Check::new(
            "scrape targets",
            false,
            format!("down: {}", down.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: &str, instance: &str) -> Probe {
        Probe::Answered(health::Report {
            status: status.into(),
            timestamp: "2026-01-02T15:04:05Z".into(),
            uptime: 312.0,
            instance: instance.into(),
            version: "1.2.0".into(),
            memory: health::Memory {
                used: 41.25,
                total: 512.0,
            },
        })
    }

    #[test]
    fn a_report_is_healthy_only_when_every_check_is() {
        let report = Report::new(
            "shop".into(),
            Some(Color::Blue),
            vec![Check::new("nginx", true, "config ok")],
        );
        assert!(report.ok);
        assert_eq!(
            (report.error, report.hint, report.exit_code),
            (None, None, None)
        );
        let report = Report::new(
            "shop".into(),
            None,
            vec![
                Check::new("nginx", false, "nginx names no active color"),
                Check::new("redis", true, "PONG"),
                Check::new("grafana", false, "publishes no port 3000"),
            ],
        );
        assert!(!report.ok);
        assert_eq!(
            report.error.as_deref(),
            Some(
                "unhealthy: nginx (nginx names no active color); grafana (publishes no port 3000)"
            )
        );
        assert_eq!(report.hint, Some(HINT));
        assert_eq!(report.exit_code, Some(EXIT_FAILED));
        let text = render(&report);
        assert_eq!(text.lines().next(), Some("COMPONENT  STATUS     DETAIL"));
        assert!(text.contains("\nredis      ok         PONG\n"), "{text}");
    }

    #[test]
    fn a_color_without_containers_to_ask() {
        assert!(
            nothing_to_probe(Color::Green, false, ("container", 0), 0)
                .unwrap()
                .is_empty()
        );
        let checks = nothing_to_probe(Color::Blue, true, ("container", 0), 0).unwrap();
        assert_eq!(checks[0].detail, "the active color has no container");
        assert!(!checks[0].healthy);
        let checks = nothing_to_probe(Color::Blue, true, ("container", 2), 0).unwrap();
        assert_eq!(
            checks[0].detail,
            "the active color has no running container (2 not running)"
        );
        assert!(nothing_to_probe(Color::Blue, true, ("container", 2), 1).is_none());
        // A stopped standby is still listed, one check per container (or
        // task).
        assert!(nothing_to_probe(Color::Green, false, ("container", 2), 0).is_none());
        assert!(nothing_to_probe(Color::Green, false, ("task", 2), 0).is_none());
    }

    #[test]
    fn an_app_is_healthy_when_it_says_so_as_its_own_color() {
        let check = judge_app(
            Color::Blue,
            true,
            "shop-cryptus-blue-1",
            "running",
            Some(answered("healthy", "blue")),
        );
        assert!(check.healthy);
        assert_eq!(
            check.detail,
            "active, blue 1.2.0 healthy, memory 41.2/512 MB, up 5m12s"
        );
        assert_eq!(check.version.as_deref(), Some("1.2.0"));
        assert_eq!(check.color, Some(Color::Blue));

        let wrong = judge_app(
            Color::Blue,
            true,
            "b",
            "running",
            Some(answered("healthy", "green")),
        );
        assert!(!wrong.healthy);
        assert!(
            wrong
                .detail
                .starts_with("active, /api/health answered: 200"),
            "{}",
            wrong.detail
        );
        let refused = Probe::Refused {
            code: 503,
            body: "starting".into(),
        };
        let check = judge_app(Color::Green, false, "g", "running", Some(refused));
        assert_eq!(check.detail, "standby, /api/health answered: 503 starting");
        assert!(!check.healthy);
    }

    #[test]
    fn only_the_active_color_must_run() {
        let standby = judge_app(Color::Green, false, "g", "exited", None);
        assert!(standby.healthy);
        assert_eq!(standby.detail, "standby, exited (not serving)");
        let active = judge_app(Color::Blue, true, "b", "exited", None);
        assert!(!active.healthy);
        assert_eq!(active.detail, "active, exited (not serving)");
    }

    #[test]
    fn redis_is_unhealthy_when_a_write_failed() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let check = judge_redis(&map(&[
            ("used_memory_human", "1.2M"),
            ("rdb_last_bgsave_status", "ok"),
        ]));
        assert!(check.healthy);
        assert_eq!(
            check.detail,
            "answers; memory 1.2M; last snapshot ok; aof off"
        );
        let check = judge_redis(&map(&[
            ("used_memory_human", "1.2M"),
            ("rdb_last_bgsave_status", "ok"),
            ("aof_enabled", "1"),
            ("aof_last_write_status", "err"),
        ]));
        assert!(!check.healthy);
        assert!(check.detail.ends_with("aof on (err)"), "{}", check.detail);
        let check = judge_redis(&map(&[("rdb_last_bgsave_status", "err")]));
        assert!(!check.healthy);
        assert_eq!(
            check.detail,
            "answers; memory ?; last snapshot err; aof off"
        );
    }

    #[test]
    fn scrape_targets_name_each_one_down() {
        let up = r#"{"data":{"activeTargets":[{"health":"up"},{"health":"up"}]}}"#;
        let check = judge_targets(up);
        assert!(check.healthy);
        assert_eq!(check.detail, "all 2 up");
        let down = r#"{"data":{"activeTargets":[
            {"health":"up"},
            {"health":"down","labels":{"job":"app","instance":"blue:3000"},"lastError":"refused"},
            {"health":"unknown","labels":{"job":"node"}}
        ]}}"#;
        let check = judge_targets(down);
        assert!(!check.healthy);
        assert_eq!(
            check.detail,
            "down: app blue:3000 (refused); node ? (unknown)"
        );
        assert_eq!(judge_targets("not json").detail, "all 0 up");
    }
}
