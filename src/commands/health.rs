//! `cryptus health`: checks every service of the project, each within a
//! deadline, and exits 1 naming what is unhealthy and why.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::context::Stack;
use crate::engine::{Container, Engine};
use crate::error::{EXIT_FAILED, EXIT_OK};
use crate::health::{self, Expect, Probe};
use crate::nginx::{self, Nginx};
use crate::output::{self, Printer};
use crate::project::Project;
use crate::redis::Redis;
use crate::stack::{Color, LB_SERVICE, VERSION_LABEL};

#[derive(Debug, Serialize)]
struct Check {
    component: String,
    healthy: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    color: Option<Color>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_mb: Option<health::Memory>,
}

impl Check {
    fn new(component: impl Into<String>, healthy: bool, detail: impl Into<String>) -> Check {
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

const HINT: &str = "`cryptus status` and `cryptus logs SERVICE` show more; `cryptus start` repairs a stopped or missing service";

#[derive(Serialize)]
struct Report {
    ok: bool,
    /// When unhealthy: what is, in one line (the contract's failure fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<u8>,
    project: String,
    active: Option<Color>,
    checks: Vec<Check>,
}

pub async fn run(project: &Project, timeout: Duration, printer: &Printer) -> Result<u8> {
    let engine = Engine::connect().await?;
    let containers: Vec<Container> = engine
        .containers(&project.name)
        .await?
        .into_iter()
        .filter(|c| !c.service.is_empty())
        .collect();
    let client = health::client();
    let lb = containers.iter().find(|c| c.service == LB_SERVICE);

    // The active color: what nginx serves, else what its upstream file says.
    let nginx = Nginx {
        engine: &engine,
        container: lb.map(|c| c.name.clone()).unwrap_or_default(),
    };
    let served = match lb.and_then(Stack::status_addr) {
        Some(addr) if lb.is_some_and(|c| c.running) => {
            within(timeout, nginx::served_color(&client, &addr))
                .await
                .ok()
        }
        _ => None,
    };
    let active = match served {
        Some(color) => Some(color),
        None if lb.is_some() => within(timeout, nginx.read(nginx::UPSTREAM_FILE))
            .await
            .ok()
            .flatten()
            .as_deref()
            .and_then(nginx::upstream_color),
        None => None,
    };

    let mut checks = vec![check_nginx(&engine, lb, active, &client, timeout).await];
    for color in Color::ALL {
        checks.extend(check_color(color, active, &containers, &client, timeout).await);
    }
    checks.push(check_redis(&engine, &containers, timeout).await);
    checks.extend(check_monitoring(&containers, &client, timeout).await);

    let ok = checks.iter().all(|c| c.healthy);
    let unhealthy: Vec<String> = checks
        .iter()
        .filter(|c| !c.healthy)
        .map(|c| format!("{} ({})", c.component, c.detail))
        .collect();
    let error = (!ok).then(|| format!("unhealthy: {}", unhealthy.join("; ")));
    let hint = (!ok).then_some(HINT);
    let report = Report {
        ok,
        error: error.clone(),
        hint,
        exit_code: (!ok).then_some(EXIT_FAILED),
        project: project.name.clone(),
        active,
        checks,
    };
    if printer.json() {
        printer.out_json(&report)?;
    } else {
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
        printer.out(&output::table(&["COMPONENT", "STATUS", "DETAIL"], &rows))?;
    }
    match error {
        None => Ok(EXIT_OK),
        Some(error) => {
            printer.error(&error, hint);
            Ok(EXIT_FAILED)
        }
    }
}

async fn within<T>(timeout: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "no answer within {}",
            output::seconds(timeout)
        )),
    }
}

async fn check_nginx(
    engine: &Engine,
    lb: Option<&Container>,
    active: Option<Color>,
    client: &reqwest::Client,
    timeout: Duration,
) -> Check {
    let Some(lb) = lb else {
        return Check::new(
            "nginx",
            false,
            "there is no nginx container (cryptus start)",
        );
    };
    if !lb.running {
        return Check::new("nginx", false, format!("{} is {}", lb.name, lb.state));
    }
    let nginx = Nginx {
        engine,
        container: lb.name.clone(),
    };
    match within(timeout, nginx.test()).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Check::new("nginx", false, format!("nginx -t fails: {reason}")),
        Err(err) => return Check::new("nginx", false, format!("nginx -t: {err:#}")),
    }
    let Some(addr) = lb.published_addr(nginx::HTTP_PORT) else {
        return Check::new("nginx", false, "the load balancer publishes no port");
    };
    let Some(active) = active else {
        return Check::new("nginx", false, "nginx names no active color");
    };
    let expect = Expect {
        color: active,
        version: None,
    };
    let probe = health::probe(client, &addr, timeout).await;
    if probe.satisfies(&expect) {
        Check::new(
            "nginx",
            true,
            format!("config ok; {active} answers through http://{addr}"),
        )
    } else {
        Check::new(
            "nginx",
            false,
            format!("config ok, but the load balancer at {addr} answered: {probe}"),
        )
    }
}

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
    if of_color.is_empty() {
        return if is_active {
            vec![Check::new(
                color.service(),
                false,
                "the active color has no container",
            )]
        } else {
            Vec::new()
        };
    }
    if is_active && !of_color.iter().any(|c| c.running) {
        return vec![Check::new(
            color.service(),
            false,
            format!(
                "the active color has no running container ({} stopped)",
                of_color.len()
            ),
        )];
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
            let role = if is_active { "active" } else { "standby" };
            let mut check = match probe {
                None => Check::new(
                    &container.name,
                    !is_active,
                    format!("{role}, {} (not serving)", container.state),
                ),
                Some(Probe::Answered(report))
                    if report.status == "healthy" && report.instance == color.as_str() =>
                {
                    let mut check = Check::new(
                        &container.name,
                        true,
                        format!(
                            "{role}, {} {} healthy, memory {:.1}/{:.0} MB, up {}",
                            report.instance,
                            report.version,
                            report.memory.used,
                            report.memory.total,
                            output::uptime(
                                Duration::try_from_secs_f64(report.uptime).unwrap_or_default()
                            )
                        ),
                    );
                    check.version = Some(report.version.clone());
                    check.memory_mb = Some(report.memory.clone());
                    check
                }
                Some(probe) => Check::new(
                    &container.name,
                    false,
                    format!("{role}, /api/health answered: {probe}"),
                ),
            };
            check.color = Some(color);
            if check.version.is_none() {
                check.version = container.label(VERSION_LABEL).map(str::to_owned);
            }
            check
        })
        .collect()
}

/// Prometheus ready, Grafana healthy, every scrape target up: for the
/// monitoring services that run.
async fn check_monitoring(
    containers: &[Container],
    client: &reqwest::Client,
    timeout: Duration,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let get = |addr: String, path: &'static str| async move {
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
    };
    let running = |service| crate::metrics::running(containers, service);
    if let Some(prometheus) = running(crate::metrics::PROMETHEUS) {
        let Some(addr) = prometheus.published_addr(9090) else {
            checks.push(Check::new("prometheus", false, "publishes no port 9090"));
            return checks;
        };
        match get(addr.clone(), "/-/ready").await {
            Ok(_) => checks.push(Check::new(
                "prometheus",
                true,
                format!("ready at http://{addr}"),
            )),
            Err(err) => checks.push(Check::new("prometheus", false, err)),
        }
        match get(addr, "/api/v1/targets").await {
            Ok(body) => {
                let targets: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
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
                    checks.push(Check::new(
                        "scrape targets",
                        true,
                        format!("all {} up", active.len()),
                    ));
                } else {
                    checks.push(Check::new(
                        "scrape targets",
                        false,
                        format!("down: {}", down.join("; ")),
                    ));
                }
            }
            Err(err) => checks.push(Check::new("scrape targets", false, err)),
        }
    }
    if let Some(grafana) = running(crate::metrics::GRAFANA) {
        match grafana.published_addr(3000) {
            Some(addr) => match get(addr.clone(), "/api/health").await {
                Ok(_) => checks.push(Check::new(
                    "grafana",
                    true,
                    format!("healthy at http://{addr}"),
                )),
                Err(err) => checks.push(Check::new("grafana", false, err)),
            },
            None => checks.push(Check::new("grafana", false, "publishes no port 3000")),
        }
    }
    if let Some(alertmanager) = running("alertmanager")
        && let Some(addr) = alertmanager.published_addr(9093)
    {
        match get(addr.clone(), "/-/ready").await {
            Ok(_) => checks.push(Check::new(
                "alertmanager",
                true,
                format!("ready at http://{addr}"),
            )),
            Err(err) => checks.push(Check::new("alertmanager", false, err)),
        }
    }
    checks
}

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
    let result = within(timeout, async {
        redis.ping().await?;
        let memory = redis.info("memory").await?;
        let persistence = redis.info("persistence").await?;
        Ok((memory, persistence))
    })
    .await;
    let (memory, persistence) = match result {
        Ok(info) => info,
        Err(err) => return Check::new("redis", false, format!("{err:#}")),
    };
    let get = |map: &std::collections::BTreeMap<String, String>, key: &str| {
        map.get(key).cloned().unwrap_or_else(|| "?".to_owned())
    };
    let rdb = get(&persistence, "rdb_last_bgsave_status");
    let aof = if get(&persistence, "aof_enabled") == "1" {
        format!("aof on ({})", get(&persistence, "aof_last_write_status"))
    } else {
        "aof off".to_owned()
    };
    let healthy = rdb != "err" && !aof.contains("(err)");
    Check::new(
        "redis",
        healthy,
        format!(
            "PONG; memory {}; last snapshot {rdb}; {aof}",
            get(&memory, "used_memory_human")
        ),
    )
}
