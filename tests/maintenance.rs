//! `maintenance on|off|status` on the real engine, with real nginx: what
//! clients get, who still reaches the app, and that the mode survives
//! deploys, rollbacks and restarts and drops nothing when it switches.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{TestProject, assert_code, get_with_headers, stderr, stdout};

/// `maintenance status --json`'s state.
#[track_caller]
fn state(project: &TestProject) -> serde_json::Value {
    let output = project.ok(&["maintenance", "status", "--json"]);
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("maintenance status --json is JSON");
    assert_eq!(document["ok"], true, "{document}");
    document["maintenance"].clone()
}

/// GET `path` through the load balancer: (status, headers, body).
#[track_caller]
fn fetch(
    project: &TestProject,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>, String) {
    let url = project.url(path);
    get_with_headers(&url, headers).unwrap_or_else(|err| panic!("GET {url}: {err}"))
}

/// The addresses requests from this host arrive from at nginx: the
/// gateways of its container's networks (the published port goes through
/// the network's bridge).
fn gateways(project: &TestProject) -> Vec<String> {
    let nginx = format!("{}-nginx-1", project.name);
    let inspect = project.inspect(&nginx);
    let networks = inspect
        .network_settings
        .and_then(|s| s.networks)
        .expect("nginx is on a network");
    let gateways: Vec<String> = networks
        .values()
        .filter_map(|n| n.gateway.clone())
        .filter(|g| !g.is_empty())
        .collect();
    assert!(!gateways.is_empty(), "nginx's networks name no gateway");
    gateways
}

/// GET `path` asking for `accept`, which must answer maintenance's 503
/// with `retry_after` and a body of `content_type`: its body.
#[track_caller]
fn maintenance_answer(
    project: &TestProject,
    path: &str,
    accept: &str,
    retry_after: &str,
    content_type: &str,
) -> String {
    let (code, headers, body) = fetch(project, path, &[("Accept", accept)]);
    assert_eq!(code, 503, "{path}: {headers:?} {body}");
    assert_eq!(
        headers.get("retry-after").map(String::as_str),
        Some(retry_after),
        "{headers:?}"
    );
    assert!(
        headers["content-type"].starts_with(content_type),
        "{headers:?}"
    );
    body
}

/// The page and the JSON a client out of the allowed addresses gets.
#[track_caller]
fn assert_maintenance_page(project: &TestProject, retry_after: &str, escaped: &str, raw: &str) {
    let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
    let page = maintenance_answer(project, "/", browser, retry_after, "text/html");
    assert!(page.contains(escaped), "{page}");
    assert!(!page.contains(raw), "the message is not escaped: {page}");

    let body = maintenance_answer(
        project,
        "/api/session",
        "application/json",
        retry_after,
        "application/json",
    );
    let json: serde_json::Value = serde_json::from_str(&body).expect("the answer is JSON");
    assert_eq!(json["status"], "maintenance", "{json}");
    assert_eq!(json["message"], raw, "{json}");

    // Health stays open, for monitors and cryptus's own checks.
    let (code, _, body) = fetch(project, "/api/health", &[]);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn maintenance_answers_503_but_health_and_allowed_addresses_and_survives_deploy_rollback_restart() {
    let project = TestProject::started("maint");
    assert_eq!(state(&project)["on"], false);
    assert_eq!(fetch(&project, "/api/session", &[]).0, 200);

    let raw = "Back at <b>5</b> & \"soon\": costs $0";
    let escaped = "Back at &lt;b&gt;5&lt;/b&gt; &amp; &quot;soon&quot;: costs &#36;0";
    let output = project.ok(&[
        "maintenance",
        "on",
        "--message",
        raw,
        "--retry-after",
        "120",
    ]);
    assert!(
        stdout(&output).starts_with("maintenance: ON"),
        "{}",
        stdout(&output)
    );
    assert_maintenance_page(&project, "120", escaped, raw);

    let on = state(&project);
    assert_eq!(on["on"], true, "{on}");
    assert_eq!(on["message"], raw, "{on}");
    assert_eq!(on["retry_after"], 120, "{on}");
    let status = project.status();
    assert_eq!(status["maintenance"]["on"], true, "{status}");
    let text = stdout(&project.ok(&["status"]));
    assert!(text.contains("\nmaintenance: ON since "), "{text}");

    // Bad input exits 2 with a hint and changes nothing.
    for bad in [
        vec!["maintenance", "on", "--allow", "10.0.0.1/8"],
        vec!["maintenance", "on", "--allow", "example.com"],
        vec!["maintenance", "on", "--retry-after", "86401"],
        vec!["maintenance", "on", "--message", ""],
    ] {
        let output = project.run(&bad);
        assert_code(&output, 2);
        assert!(
            stderr(&output).contains("hint:") || stderr(&output).contains("86400"),
            "{bad:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(state(&project), on);

    // A deploy and a rollback work through maintenance and keep it on.
    project.deploy_ok("2.0.0", &[]);
    assert_eq!(project.serving().1, "2.0.0");
    assert_maintenance_page(&project, "120", escaped, raw);
    project.ok(&["rollback"]);
    assert_maintenance_page(&project, "120", escaped, raw);

    // So does a restart: the state lives in nginx's state volume.
    project.ok(&["restart"]);
    assert_maintenance_page(&project, "120", escaped, raw);
    assert_eq!(state(&project), on);

    // The host's requests arrive from the bridge's gateway: they got the
    // page above, with no address allowed; allowed, they reach the app.
    let gateways = gateways(&project);
    let mut args = vec!["maintenance", "on", "--retry-after", "30"];
    for gateway in &gateways {
        args.extend(["--allow", gateway.as_str()]);
    }
    project.ok(&args);
    let (code, headers, body) = fetch(&project, "/api/session", &[]);
    assert_eq!(code, 200, "allowed {gateways:?}: {headers:?} {body}");
    assert!(headers.contains_key("x-cryptus-instance"), "{headers:?}");
    let allowed = state(&project);
    let expected: Vec<String> = gateways.iter().map(|g| format!("{g}/32")).collect();
    assert_eq!(allowed["allow"], serde_json::json!(expected), "{allowed}");

    let history = project.ok(&["history", "--operation", "maintenance", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    assert!(
        entries[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("on: Back at"),
        "{history}"
    );

    let output = project.ok(&["maintenance", "off"]);
    assert!(
        stdout(&output).starts_with("maintenance: off since "),
        "{}",
        stdout(&output)
    );
    assert_eq!(state(&project)["on"], false);
    for path in ["/", "/api/session"] {
        let (code, headers, body) = fetch(&project, path, &[]);
        assert_eq!(code, 200, "{path}: {headers:?} {body}");
        assert!(!headers.contains_key("retry-after"), "{headers:?}");
    }
    assert_eq!(project.status()["maintenance"]["on"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_maintenance_on_and_off_under_load_drops_nothing() {
    let project = TestProject::started("maintload");
    let load = support::load::start_switch_load(project.lb_addr()).await;

    for _ in 0..2 {
        // Not a poll: slow requests are in flight across each switch.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let on = project
            .run_async(&["maintenance", "on", "--lock-wait", "30s"])
            .await;
        assert_code(&on, 0);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let off = project
            .run_async(&["maintenance", "off", "--lock-wait", "30s"])
            .await;
        assert_code(&off, 0);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(
        report.cut_short, None,
        "the load ended before the switches did"
    );
    // Every request was answered: 200, or maintenance's 503.
    let unanswered: Vec<(&String, &u64)> = report
        .failures
        .iter()
        .filter(|(key, _)| key.as_str() != "status_503")
        .collect();
    assert!(
        unanswered.is_empty(),
        "requests not answered 200 or 503: {unanswered:?} {:?}",
        report.first_failures
    );
    assert!(
        report.failures.get("status_503").copied().unwrap_or(0) > 0,
        "maintenance never answered: {}",
        report.summary()
    );
    // Health is never in maintenance.
    for kind in ["keep_alive", "new_connection"] {
        assert!(
            !report.failed_by_kind.contains_key(kind),
            "{kind} got 503: {}",
            report.summary()
        );
    }
    assert!(report.ok > 100, "too little load: {}", report.summary());
    assert_eq!(fetch(&project, "/api/session", &[]).0, 200);
}

#[test]
fn bad_input_exits_2_with_a_hint_before_the_engine_is_touched() {
    // Never started: a run that went past its checks would say so.
    let project = TestProject::new("maintbad");
    for (args, says) in [
        (
            vec!["maintenance", "on", "--allow", "10.0.0.1/8"],
            "the network is 10.0.0.0/8",
        ),
        (
            vec!["maintenance", "on", "--allow", "10.0.0.0/8,nope"],
            "nope",
        ),
        (
            vec!["maintenance", "on", "--retry-after=-1"],
            "--retry-after",
        ),
        (vec!["maintenance", "on", "--retry-after", "86401"], "86400"),
        (
            vec!["maintenance", "on", "--message", " "],
            "message is empty",
        ),
    ] {
        let output = project.run(&args);
        assert_code(&output, 2);
        let err = stderr(&output);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(stdout(&output).is_empty(), "{args:?}: {}", stdout(&output));
    }
    assert!(
        project.containers().is_empty(),
        "{:?}",
        project.containers()
    );
}

/// Starts a project whose app.conf lost `line`, runs `maintenance on`, and
/// checks that it is refused (exit 2, stderr saying `says`) with nothing
/// changed.
fn refused_with_app_conf_without(hint: &str, line: &str, says: &[&str]) {
    let mut project = TestProject::new(hint);
    project.set_env("CRYPTUS_RATE_SITE", "100000r/s");
    let app_conf = project.path().join("nginx/app.conf");
    let text = std::fs::read_to_string(&app_conf).unwrap();
    let older = text.replace(line, "");
    assert_ne!(older, text, "app.conf has {line:?}");
    std::fs::write(&app_conf, older).unwrap();
    project.ok(&["start"]);

    let output = project.run(&["maintenance", "on"]);
    assert_code(&output, 2);
    let err = stderr(&output);
    for said in says.iter().chain(&["hint:"]) {
        assert!(err.contains(said), "{said:?} in {err}");
    }
    assert_eq!(state(&project)["on"], false);
    assert_eq!(fetch(&project, "/api/session", &[]).0, 200);
    assert_eq!(fetch(&project, "/api/health", &[]).0, 200);
    // Nothing is locked either.
    assert!(project.status()["lock"].is_null());
}

#[test]
fn an_app_conf_without_the_include_is_refused_and_changes_nothing() {
    refused_with_app_conf_without(
        "maintold",
        "include /etc/nginx/cryptus/maintenance[.]conf;\n",
        &["does not include", "maintenance[.]conf"],
    );
}

#[test]
fn an_app_conf_that_closes_health_too_is_switched_back() {
    refused_with_app_conf_without(
        "maintnohealth",
        "    allow all;\n",
        &["/api/health answered 503", "allow all;"],
    );
}
