//! The monitoring stack on the real engine: real Prometheus, Alertmanager,
//! node-exporter, nginx-exporter and redis-exporter (from Debian's packages,
//! imported by scripts/make-images.sh --monitoring). Grafana and cAdvisor are
//! not in Debian: their provisioning is checked as files, and the reference
//! app stands in for Grafana's annotations API.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use base64::Engine;
use std::time::Duration;

use support::load::Mix;
use support::wait::eventually;
use support::{TestProject, app_image, assert_code, stderr};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(support::REPO).join(path)
}

/// Runs a host tool from Debian's prometheus packages.
fn tool(name: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{name} is missing ({e}); install Debian's prometheus and prometheus-alertmanager"
            )
        })
}

#[test]
fn the_shipped_configuration_passes_promtool_and_amtool() {
    let config = repo("monitoring/prometheus.yml");
    let output = tool("promtool", &["check", "config", &config.to_string_lossy()]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let rules = repo("monitoring/alerts.yml");
    let output = tool("promtool", &["check", "rules", &rules.to_string_lossy()]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && text.contains("SUCCESS: 6 rules"),
        "{text}"
    );
    let alertmanager = repo("monitoring/alertmanager.yml");
    let output = tool("amtool", &["check-config", &alertmanager.to_string_lossy()]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && text.contains("2 receivers"),
        "{text}"
    );
    assert!(
        text.contains("webhook")
            || std::fs::read_to_string(&alertmanager)
                .unwrap()
                .contains("webhook_configs")
    );
    assert!(
        std::fs::read_to_string(&alertmanager)
            .unwrap()
            .contains("email_configs")
    );
}

/// cAdvisor's metrics the dashboard uses, as cAdvisor documents them
/// (docs/storage/prometheus.md); cAdvisor cannot run here.
const CADVISOR_METRICS: [&str; 2] = [
    "container_cpu_usage_seconds_total",
    "container_memory_usage_bytes",
];

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    const WORDS: [&str; 16] = [
        "sum",
        "by",
        "rate",
        "max",
        "avg",
        "histogram_quantile",
        "changes",
        "without",
        "on",
        "unless",
        "and",
        "or",
        "label_replace",
        "absent",
        "le",
        "color",
    ];
    let mut names = Vec::new();
    let mut rest = expr;
    // Drop label matchers and strings first: only names outside them count.
    let mut cleaned = String::new();
    let mut depth = 0;
    let mut in_string = false;
    for c in rest.chars() {
        match c {
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => depth -= 1,
            _ if in_string || depth > 0 => {}
            _ => cleaned.push(c),
        }
    }
    rest = &cleaned;
    for word in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.contains('_')
            && !WORDS.contains(&word)
            && !word.chars().next().is_some_and(|c| c.is_ascii_digit())
        {
            names.push(word.to_owned());
        }
    }
    names
}

#[test]
fn grafana_is_provisioned_from_files_that_fit_together() {
    let datasource: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo(
            "monitoring/grafana/provisioning/datasources/prometheus.yml",
        ))
        .unwrap(),
    )
    .unwrap();
    let source = &datasource["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert_eq!(
        source["url"], "http://prometheus:9090",
        "the compose service prometheus on its port"
    );
    let uid = source["uid"].as_str().unwrap().to_owned();

    let compose = std::fs::read_to_string(repo("compose/docker-compose.monitoring.yml")).unwrap();
    assert!(
        compose.contains("GF_PATHS_PROVISIONING: /etc/cryptus/monitoring/grafana/provisioning")
    );
    assert!(compose.contains("../monitoring:/etc/cryptus/monitoring:ro"));
    let provider: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo(
            "monitoring/grafana/provisioning/dashboards/cryptus.yml",
        ))
        .unwrap(),
    )
    .unwrap();
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let local = path.replace(
        "/etc/cryptus/monitoring",
        &repo("monitoring").to_string_lossy(),
    );
    let dashboards: Vec<_> = std::fs::read_dir(&local).unwrap().collect();
    assert!(
        !dashboards.is_empty(),
        "the provider's path {path} holds the dashboards"
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("monitoring/grafana/dashboards/cryptus.json")).unwrap(),
    )
    .unwrap();
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Requests by color",
        "5xx by color",
        "Latency p99 by color",
        "Active color",
        "Container CPU",
        "Container memory",
        "Redis",
        "Host",
    ] {
        assert!(
            titles.contains(&wanted),
            "the dashboard lacks {wanted}: {titles:?}"
        );
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"],
            uid.as_str(),
            "{}",
            panel["title"]
        );
    }
    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    assert!(
        annotations
            .iter()
            .any(|a| a["target"]["tags"][0] == "cryptus"),
        "deploy marks are shown"
    );
}

fn prometheus(project: &TestProject, port: u16, query: &str) -> serde_json::Value {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        query
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    let (code, _, body) = support::get(&url, None).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(code, 200, "{body}");
    let _ = project;
    serde_json::from_str(&body).unwrap()
}

/// How often the waits here look: Prometheus scrapes and evaluates every
/// second or so in these tests (see `monitored`).
const EVERY: Duration = Duration::from_millis(500);

/// Whether a Prometheus query answers at least one series; what it answered.
fn has_series(answer: &serde_json::Value) -> Result<(), String> {
    if answer["data"]["result"].as_array().unwrap().is_empty() {
        Err(format!("no series: {answer}"))
    } else {
        Ok(())
    }
}

/// Sets up a project with monitoring: offline images, fast intervals, and a
/// webhook receiver (the reference app) for Alertmanager.
fn monitored() -> (TestProject, u16) {
    let mut project = TestProject::new("monitor");
    let prometheus_port = support::free_port();
    for (key, value) in [
        ("CRYPTUS_MONITORING", "1".to_owned()),
        ("PROMETHEUS_IMAGE", "cryptus/prometheus:offline".to_owned()),
        (
            "ALERTMANAGER_IMAGE",
            "cryptus/alertmanager:offline".to_owned(),
        ),
        (
            "NODE_EXPORTER_IMAGE",
            "cryptus/node-exporter:offline".to_owned(),
        ),
        (
            "NGINX_EXPORTER_IMAGE",
            "cryptus/nginx-exporter:offline".to_owned(),
        ),
        (
            "REDIS_EXPORTER_IMAGE",
            "cryptus/redis-exporter:offline".to_owned(),
        ),
        // The reference app stands in for Grafana's annotations API (no
        // Grafana package exists to make an offline image from).
        ("GRAFANA_IMAGE", app_image()),
        ("GRAFANA_PORT", support::free_port().to_string()),
        ("CADVISOR_REPLICAS", "0".to_owned()),
        ("PROMETHEUS_PORT", prometheus_port.to_string()),
        ("ALERTMANAGER_PORT", support::free_port().to_string()),
        ("CRYPTUS_RATE_SITE", "100000r/s".to_owned()),
        ("CRYPTUS_RATE_API", "100000r/s".to_owned()),
    ] {
        project.set_env(key, &value);
    }
    let edit = |file: &str, pairs: &[(&str, &str)]| {
        let path = project.path().join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in pairs {
            assert!(text.contains(from), "{file} has no {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).unwrap();
    };
    edit(
        "monitoring/prometheus.yml",
        &[
            ("scrape_interval: 15s", "scrape_interval: 1s"),
            ("evaluation_interval: 15s", "evaluation_interval: 1s"),
            ("scrape_interval: 5s", "scrape_interval: 1s"),
            ("refresh_interval: 5s", "refresh_interval: 1s"),
        ],
    );
    edit(
        "monitoring/alerts.yml",
        &[("for: 30s", "for: 2s"), ("for: 1m", "for: 2s")],
    );
    edit(
        "monitoring/alertmanager.yml",
        &[
            ("group_wait: 10s", "group_wait: 1s"),
            (
                "http://alert-webhook:5001/alerts",
                "http://webhook:3000/api/alerts",
            ),
        ],
    );
    edit(
        "compose/docker-compose.monitoring.yml",
        &[(
            "services:\n",
            "services:\n  webhook:\n    image: ${CRYPTUS_IMAGE}\n    environment: {INSTANCE_COLOR: webhook}\n    ports: [\"127.0.0.1::3000\"]\n    networks: [cryptus]\n\n",
        )],
    );
    // As Grafana's image does, the stand-in runs as uid 472.
    edit(
        "compose/docker-compose.monitoring.yml",
        &[("  grafana:\n", "  grafana:\n    user: \"472\"\n")],
    );
    edit(
        "compose/docker-compose.zero-downtime.yml",
        &[(
            "      INSTANCE_COLOR: green\n",
            "      INSTANCE_COLOR: green\n      APP_ERROR_RATIO: ${GREEN_ERROR_RATIO:-0}\n",
        )],
    );
    (project, prometheus_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monitoring_scrapes_everything_alerts_and_gates_deploys() {
    let (mut project, port) = monitored();
    assert!(project.containers().is_empty());
    let output = project.run_async(&["start"]).await;
    assert_code(&output, 0);

    // Every target is up.
    let targets_url = format!("http://127.0.0.1:{port}/api/v1/targets");
    eventually(
        "every scrape target up",
        Duration::from_secs(60),
        EVERY,
        || {
            let body = match support::get(&targets_url, None) {
                Ok((200, _, body)) => body,
                Ok((code, _, body)) => return Err(format!("{code} {body}")),
                Err(err) => return Err(err),
            };
            let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
            let active = targets["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let jobs: Vec<&str> = active
                .iter()
                .filter_map(|t| t["labels"]["job"].as_str())
                .collect();
            let all_up = [
                "prometheus",
                "alertmanager",
                "node",
                "nginx",
                "redis",
                "cryptus-blue",
            ]
            .iter()
            .all(|j| jobs.contains(j))
                && active.iter().all(|t| t["health"] == "up");
            if all_up {
                Ok(())
            } else {
                let health: Vec<String> = active
                    .iter()
                    .map(|t| format!("{} {}", t["labels"]["job"], t["health"]))
                    .collect();
                Err(format!("targets: {health:?}"))
            }
        },
    );
    let output = project.run_async(&["health", "--json"]).await;
    assert_code(&output, 0);
    let health: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let components: Vec<&str> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert!(
        components.contains(&"prometheus")
            && components.contains(&"scrape targets")
            && components.contains(&"alertmanager")
            && components.contains(&"grafana"),
        "{components:?}"
    );

    // cryptus's own metrics reach Prometheus.
    eventually(
        "cryptus_active_color in Prometheus",
        Duration::from_secs(20),
        EVERY,
        || {
            has_series(&prometheus(
                &project,
                port,
                "cryptus_active_color{color=\"blue\"} == 1",
            ))
        },
    );

    // A version answering 20% 5xx is rolled back by the metric gate: the
    // sessions are the real requests it fails.
    let load = gate_load(0, 3).start(project.lb_addr());
    project.set_env("GREEN_ERROR_RATIO", "0.2");
    let output = project
        .run_async(&[
            "deploy",
            "--image",
            &app_image(),
            "--version",
            "2.0.0",
            "--watch",
            "12s",
        ])
        .await;
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains("rolled back:") && text.contains("metric gate"),
        "{text}"
    );
    assert_eq!(project.serving().0, "blue");

    // So is a canary of it, at its first step, by the gate.
    canary_rolled_back_by_the_gate(&project).await;

    // One with 0% is kept.
    project.set_env("GREEN_ERROR_RATIO", "0");
    let output = project
        .run_async(&[
            "deploy",
            "--image",
            &app_image(),
            "--version",
            "3.0.0",
            "--watch",
            "12s",
        ])
        .await;
    assert_code(&output, 0);
    assert_eq!(project.serving(), ("green".to_owned(), "3.0.0".to_owned()));
    let _ = load.stop().await;

    // The deploy marks: the active color and the history, in Prometheus.
    eventually(
        "the deploy marks in Prometheus",
        Duration::from_secs(20),
        EVERY,
        || {
            let active = prometheus(&project, port, "cryptus_active_color{color=\"green\"} == 1");
            // The plain deploy and the canary.
            let rolled = prometheus(
                &project,
                port,
                "cryptus_deploys{operation=\"deploy\",outcome=\"rolled-back\"} == 2",
            );
            has_series(&active).and(has_series(&rolled))
        },
    );

    // ... and in Grafana, which runs as uid 472 and reads the 0600 password
    // file cryptus generated and handed to that uid.
    let password_file = project.path().join("monitoring/grafana/admin-password");
    let meta = std::fs::metadata(&password_file).unwrap();
    assert_eq!(
        meta.uid(),
        472,
        "the password file belongs to Grafana's uid"
    );
    assert_eq!(meta.mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&password_file).unwrap();
    let grafana_port = project.env_value("GRAFANA_PORT").unwrap().to_owned();
    let annotations_url = format!("http://127.0.0.1:{grafana_port}/api/annotations");
    let (code, _, _) = support::get(&annotations_url, None).unwrap();
    assert_eq!(code, 401, "Grafana's API asks for the password");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", password.trim()))
    );
    let (code, _, body) =
        support::get_with_headers(&annotations_url, &[("Authorization", &auth)]).unwrap();
    assert_eq!(code, 200, "{body}");
    let marks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let texts: Vec<&str> = marks["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["tags"][0] == "cryptus" && m["time"].as_i64().unwrap_or(0) > 0)
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("deploy rolled-back:") && t.contains("green 2.0.0")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("deploy ok:") && t.contains("-> green 3.0.0")),
        "{texts:?}"
    );

    // The dashboard's queries name metrics the exporters really export.
    let names_url = format!("http://127.0.0.1:{port}/api/v1/label/__name__/values");
    let (_, _, body) = support::get(&names_url, None).unwrap();
    let known: serde_json::Value = serde_json::from_str(&body).unwrap();
    let known: Vec<&str> = known["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("monitoring/grafana/dashboards/cryptus.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    exprs.extend(
        dashboard["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["expr"].as_str().map(str::to_owned)),
    );
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                known.contains(&name.as_str()) || CADVISOR_METRICS.contains(&name.as_str()),
                "the dashboard reads {name}, which no exporter exports ({expr})"
            );
        }
    }

    // An alert fires and reaches the webhook when the active color dies.
    let green = format!("{}-cryptus-green-1", project.name);
    support::on_engine(move |docker| async move {
        // Stopped, not killed: its restart policy would bring a killed one back.
        docker.stop_container(&green, None).await.unwrap();
    });
    let webhook = format!("{}-webhook-1", project.name);
    let webhook_port = {
        let name = webhook.clone();
        support::on_engine(move |docker| async move {
            let inspect = docker.inspect_container(&name, None).await.unwrap();
            let ports = inspect.network_settings.unwrap().ports.unwrap();
            ports["3000/tcp"].as_ref().unwrap()[0]
                .host_port
                .clone()
                .unwrap()
                .parse::<u16>()
                .unwrap()
        })
    };
    let alerts_url = format!("http://127.0.0.1:{webhook_port}/api/alerts");
    eventually(
        "the ActiveColorUnhealthy alert at the webhook",
        Duration::from_secs(90),
        EVERY,
        || match support::get(&alerts_url, None) {
            Ok((200, _, body))
                if body.contains("ActiveColorUnhealthy")
                    && body.contains("\"status\":\"firing\"") =>
            {
                Ok(())
            }
            Ok((code, _, body)) => Err(format!("{code} {body}")),
            Err(err) => Err(err),
        },
    );

    // Backups hold a snapshot of Prometheus's data, and restore it.
    let out = project.path().join("backups");
    let output = project
        .run_async(&["backup", "--out", &out.to_string_lossy(), "--json"])
        .await;
    assert_code(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let files = report["manifest"]["files"].as_array().unwrap();
    let prometheus_file = files
        .iter()
        .find(|f| f["name"] == "prometheus.tar.gz")
        .expect("Prometheus's data is backed up");
    assert!(
        prometheus_file["size"].as_u64().unwrap() > 1000,
        "{prometheus_file}"
    );
    let dir = report["dir"].as_str().unwrap().to_owned();
    let output = project.run_async(&["restore", &dir, "--yes"]).await;
    assert_code(&output, 0);
    assert!(
        stderr(&output).contains("restored prometheus data into the engine"),
        "{}",
        stderr(&output)
    );
    eventually(
        "Prometheus back with the restored data",
        Duration::from_secs(30),
        EVERY,
        || match support::get(&format!("http://127.0.0.1:{port}/-/ready"), None) {
            Ok((200, _, _)) => has_series(&prometheus(&project, port, "cryptus_deploys")),
            Ok((code, _, body)) => Err(format!("/-/ready: {code} {body}")),
            Err(err) => Err(format!("/-/ready: {err}")),
        },
    );

    // What was restored belongs to the user Prometheus runs as (nobody, as
    // in the official image), so it can write and compact it.
    let container = format!("{}-prometheus-1", project.name);
    let owners = support::on_engine(move |docker| async move {
        use futures_util::TryStreamExt;
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path("/prometheus")
            .build();
        let bytes: Vec<u8> = docker
            .download_from_container(&container, Some(options))
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let path = entry.path().unwrap().display().to_string();
                (path, entry.header().uid().unwrap())
            })
            .collect::<Vec<_>>()
    });
    assert!(owners.len() > 3, "{owners:?}");
    let foreign: Vec<_> = owners.iter().filter(|(_, uid)| *uid != 65534).collect();
    assert!(foreign.is_empty(), "not Prometheus's: {foreign:?}");

    // stop stops the monitoring services too.
    let output = project.run_async(&["stop"]).await;
    assert_code(&output, 0);
    assert!(project.containers().values().all(|(_, running)| !running));
}

/// The load during the gate's deploys: a health client on a new
/// connection each time, `keep_alive` on kept ones, and `session` clients.
fn gate_load(keep_alive: usize, session: usize) -> Mix {
    Mix {
        keep_alive,
        new_connection: 1,
        slow: 0,
        session,
        pause: Duration::from_millis(10),
        ..Mix::default()
    }
}

/// Requests to `/api/session` through `lb`, each with a session cookie of
/// its own (so about a canary's share of them reach it), until `stop`:
/// (answers, 5xx, 5xx from green).
fn clients_until(
    lb: std::net::SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering;
    let url = format!("http://{lb}/api/session");
    let (mut answers, mut failed, mut green) = (0, 0, 0);
    let mut client = 0u64;
    while !stop.load(Ordering::Relaxed) {
        client += 1;
        let cookie = format!("cryptus_sid={:016x}", 0x6a7e_0000_0000 + client);
        let Ok((code, _, body)) = support::get(&url, Some(&cookie)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        answers += 1;
        if code >= 500 {
            failed += 1;
            green += u64::from(body.contains("\"instance\":\"green\""));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (answers, failed, green)
}

/// With Prometheus running, a canary of a version answering 20% 5xx is
/// rolled back at its first step (10%) by the metric gate, which sees the
/// new version's share of real requests, and not by nginx's log, which
/// counts them too; the load loses nothing.
async fn canary_rolled_back_by_the_gate(project: &TestProject) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Health only: the app never fails it on purpose, so any failure is
    // the canary's reloads' or rollback's.
    let load = gate_load(2, 0).start(project.lb_addr());
    load.flowing(20, Duration::from_secs(10)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (lb, stop) = (project.lb_addr(), Arc::clone(&stop));
        tokio::task::spawn_blocking(move || clients_until(lb, &stop))
    };
    let mut deploy =
        project.deploy_command("2.1.0", &["--canary", "10", "--step", "60s", "--json"]);
    deploy.env("GREEN_ERROR_RATIO", "0.2");
    let output = support::run_async(deploy).await;
    stop.store(true, Ordering::Relaxed);
    let (answers, failed, from_green) = clients.await.unwrap();
    eprintln!("clients: {answers} answers, {failed} 5xx, {from_green} of them from green");
    let report = load.stop().await;
    eprintln!("{}", report.summary());

    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains("rolled back at 10%: the metric gate's condition is true"),
        "{text}"
    );
    assert!(from_green > 0, "the canary's clients met its 5xx");
    // The gate saw the canary's 20% among its share of the requests.
    let value: f64 = text
        .split("(value ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no value in {text}"));
    assert!((0.05..=0.5).contains(&value), "the gate's ratio: {value}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["failed_at"], 10, "{json}");
    let step = &json["canary"]["answers"][0];
    eprintln!("{}: {step}", json["reason"]);
    assert_eq!(step["judge"], "metric-gate", "{json}");
    // nginx's log kept counting beside it.
    assert!(
        step["requests"].as_u64().unwrap() > 0 && step["errors"].as_u64().unwrap() > 0,
        "{step}"
    );
    assert_eq!(project.serving().0, "blue");
    assert!(
        !project.has_color("green"),
        "the canary's containers are removed"
    );

    let history = project.run_async(&["history", "--json"]).await;
    assert_code(&history, 0);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let last = history["entries"].as_array().unwrap().last().unwrap();
    assert_eq!(last["outcome"], "rolled-back", "{last}");
    assert_eq!(last["to"]["version"], "2.1.0", "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("at 10%: the metric gate's condition is true"),
        "{last}"
    );
    assert!(
        // Prometheus sees new containers within about 15 s (DNS and two
        // scrapes, 5 s apart); the gate then fails the step.
        last["durations"]["hold 10%"].as_f64().unwrap() < 45.0,
        "caught during the step, not at its end: {last}"
    );

    assert_eq!(report.cut_short, None, "{}", report.summary());
    assert_eq!(
        report.failed, 0,
        "failed requests during the canary: {:?} {:?}",
        report.failures, report.first_failures
    );
}

#[test]
fn metric_names_are_read_from_queries() {
    assert_eq!(
        metric_names(r#"sum by (color) (rate(http_requests_total{status=~"5.."}[1m]))"#),
        ["http_requests_total"]
    );
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le, color) (rate(http_request_duration_seconds_bucket[5m])))"
        ),
        ["http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes"),
        [
            "node_memory_MemAvailable_bytes",
            "node_memory_MemTotal_bytes"
        ]
    );
}
