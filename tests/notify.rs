//! Deploy notifications on the real engine: `CRYPTUS_NOTIFY_URL` points at
//! a receiver in the stack (the reference app's `/api/notifications`, as a
//! service of the project's own, published on loopback), which keeps what
//! each switch POSTed.

mod support;

use std::time::{Duration, Instant};

use support::{TestProject, assert_code, stderr, stdout};

/// The receiver's service, added to the project's compose file.
const RECEIVER: &str = "receiver";

/// A started project with a receiver, and the receiver's URL. Green's
/// health and crash are switched by GREEN_UNHEALTHY and GREEN_CRASH_AFTER_S.
fn project_with_receiver(hint: &str) -> (TestProject, String) {
    let project = TestProject::new(hint);
    project.set_service_env("green", "APP_UNHEALTHY", "${GREEN_UNHEALTHY:-0}");
    project.set_service_env("green", "APP_CRASH_AFTER_S", "${GREEN_CRASH_AFTER_S:-}");
    project.edit_compose(|text| {
        text.replacen(
            "services:\n",
            &format!(
                "services:\n  {RECEIVER}:\n    image: ${{CRYPTUS_IMAGE}}\n    \
                 environment: {{INSTANCE_COLOR: {RECEIVER}}}\n    \
                 ports: [\"127.0.0.1::3000\"]\n    networks: [cryptus]\n\n"
            ),
            1,
        )
    });
    project.ok(&["start"]);
    let container = format!("{}-{RECEIVER}-1", project.name);
    let ports = project
        .inspect(&container)
        .network_settings
        .and_then(|n| n.ports)
        .expect("the receiver publishes its port");
    let port = ports["3000/tcp"].as_ref().expect("port 3000 is published")[0]
        .host_port
        .clone()
        .expect("a host port");
    let url = format!("http://127.0.0.1:{port}/api/notifications");
    (project, url)
}

/// What the receiver holds, oldest first.
#[track_caller]
fn received(url: &str) -> Vec<serde_json::Value> {
    support::get_json(url, None)["notifications"]
        .as_array()
        .cloned()
        .expect("a list of notifications")
}

/// The newest entry of the history.
#[track_caller]
fn last_entry(project: &TestProject) -> serde_json::Value {
    let output = project.ok(&["history", "--json"]);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    document["entries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone()
}

/// Exactly one notification more than `before`, and every field of it is
/// the switch's, as the history recorded it; its `text` begins with
/// `text` and names who did it.
#[track_caller]
fn one_more(
    project: &TestProject,
    url: &str,
    before: usize,
    (operation, outcome): (&str, &str),
    text: &str,
) -> serde_json::Value {
    let all = received(url);
    assert_eq!(all.len(), before + 1, "one POST per switch: {all:#?}");
    let got = all.last().unwrap().clone();
    let entry = last_entry(project);
    assert_eq!(got["project"], project.name.as_str(), "{got}");
    assert_eq!(got["operation"], operation, "{got}");
    assert_eq!(got["outcome"], outcome, "{got}");
    for field in ["operation", "outcome", "from", "to", "user", "host", "time"] {
        assert_eq!(
            got[field], entry[field],
            "{field}: {got} vs the history's {entry}"
        );
    }
    // The history leaves out a reason when there is none; the payload says null.
    assert_eq!(
        got["reason"],
        entry.get("reason").cloned().unwrap_or_default(),
        "{got}"
    );
    assert_eq!(got["duration"], entry["durations"]["total"], "{got}");
    assert!(got["duration"].as_f64().unwrap() > 0.0, "{got}");
    let who = format!(
        "by {}@{}",
        entry["user"].as_str().unwrap(),
        entry["host"].as_str().unwrap()
    );
    let line = got["text"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("{}: {text}", project.name)),
        "{line:?} begins with {text:?}"
    );
    assert!(line.contains(&who), "{line:?} names {who:?}");
    assert!(!line.contains('\n'), "one line: {line:?}");
    got
}

#[track_caller]
fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not one JSON document ({err}):\n{}", stdout(output)))
}

#[test]
fn deploy_rollback_failures_and_scale_each_notify_once_with_every_field() {
    let (mut project, url) = project_with_receiver("notify");
    project.set_env("CRYPTUS_NOTIFY_URL", &url);
    let (_, v1) = project.serving();
    assert!(received(&url).is_empty());

    let output = project.deploy("2.0.0", &["--json"]);
    assert_code(&output, 0);
    assert_eq!(json(&output)["warnings"], serde_json::json!([]));
    let got = one_more(
        &project,
        &url,
        0,
        ("deploy", "ok"),
        &format!("deployed green 2.0.0 (was blue {v1}) in "),
    );
    assert!(got["reason"].is_null(), "{got}");
    assert_eq!(got["from"]["color"], "blue");
    assert_eq!(got["from"]["version"], v1.as_str());
    assert_eq!(got["to"]["color"], "green");
    assert_eq!(got["to"]["version"], "2.0.0");

    project.ok(&["rollback"]);
    let got = one_more(
        &project,
        &url,
        1,
        ("rollback", "ok"),
        &format!("rolled back to blue {v1} (from green 2.0.0) in "),
    );
    assert_eq!(got["to"]["color"], "blue");
    assert_eq!(got["to"]["version"], v1.as_str());

    // A release that never turns healthy: the deploy fails, traffic stays.
    project.set_env("GREEN_UNHEALTHY", "1");
    let output = project.deploy("3.0.0", &["--timeout", "3s"]);
    assert_code(&output, 1);
    let got = one_more(
        &project,
        &url,
        2,
        ("deploy", "failed"),
        &format!("deploy of green 3.0.0 failed (blue {v1} was serving) by "),
    );
    assert!(
        got["reason"]
            .as_str()
            .unwrap()
            .contains("did not answer healthy"),
        "{got}"
    );
    project.set_env("GREEN_UNHEALTHY", "0");

    // A release that dies in the watch window is rolled back by itself.
    project.set_env("GREEN_CRASH_AFTER_S", "2");
    let image = support::app_image();
    let output = project.run(&[
        "deploy",
        "--image",
        &image,
        "--version",
        "4.0.0",
        "--watch",
        "8s",
    ]);
    assert_code(&output, 1);
    let got = one_more(
        &project,
        &url,
        3,
        ("deploy", "rolled-back"),
        &format!(
            "deploy of green 4.0.0 was rolled back automatically, traffic is back on blue {v1} by "
        ),
    );
    assert!(
        got["reason"].as_str().unwrap().contains("during the watch"),
        "{got}"
    );
    project.set_env("GREEN_CRASH_AFTER_S", "");

    // A scale is recorded, so it is announced too.
    project.ok(&["scale", "cryptus-blue", "2"]);
    let got = one_more(
        &project,
        &url,
        4,
        ("scale", "ok"),
        "scaled cryptus-blue from 1 to 2 replicas in ",
    );
    assert_eq!(got["to"]["replicas"], 2);
    assert_eq!(project.serving().0, "blue");

    // A canary announces each step as nginx serves it, then the deploy.
    let output = project.deploy("5.0.0", &["--canary", "20", "--step", "1s"]);
    assert_code(&output, 0);
    let all = received(&url);
    assert_eq!(all.len(), 7, "a step and the deploy: {all:#?}");
    let step = &all[5];
    assert_eq!(step["operation"], "canary", "{step}");
    assert_eq!(step["percent"], 20, "{step}");
    assert_eq!(step["from"]["color"], "blue", "{step}");
    assert_eq!(step["to"]["version"], "5.0.0", "{step}");
    let line = step["text"].as_str().unwrap();
    assert!(
        line.starts_with(&format!(
            "{}: canary: 20% of clients go to green 5.0.0 (blue {v1} serves the rest) by ",
            project.name
        )),
        "{line}"
    );
    assert_eq!(all[6]["operation"], "deploy");
    assert_eq!(all[6]["outcome"], "ok");
}

#[test]
fn an_unreachable_url_warns_and_the_deploy_goes_on_in_time() {
    let (mut project, url) = project_with_receiver("notifydead");
    // A port nothing listens on, and one that takes connections but never
    // answers: each warns, neither stops the receiver from getting its POST.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // And an https server whose certificate no authority signed: the
    // handshake happens, and verification refuses it.
    let tls = TlsServer::start();
    project.set_env(
        "CRYPTUS_NOTIFY_URL",
        &format!(
            "http://127.0.0.1:{dead}/services/T0/B0/secret-dead, \
             http://127.0.0.1:{silent_port}/services/T0/B0/secret-silent {url} \
             https://127.0.0.1:{}/services/T0/B0/secret-tls",
            tls.port
        ),
    );
    let began = Instant::now();
    let output = project.deploy("2.0.0", &["--json", "--drain", "2s"]);
    let took = began.elapsed();
    assert_code(&output, 0);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    let report = json(&output);
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "notifying http://127.0.0.1:{dead} failed after 2 attempts"
        )),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "notifying http://127.0.0.1:{silent_port} failed after 2 attempts: timed out"
        )),
        "{warnings:?}"
    );
    assert!(
        warnings[2].starts_with(&format!("notifying https://127.0.0.1:{}", tls.port))
            && warnings[2].contains("certificate"),
        "{warnings:?}"
    );
    let text = stderr(&output);
    for warning in &warnings {
        assert!(text.contains(&format!("warning: {warning}")), "{text}");
    }
    for stream in [stdout(&output), text] {
        assert!(
            !stream.contains("secret"),
            "a URL's path is never shown: {stream}"
        );
    }
    assert_eq!(received(&url).len(), 1, "the receiver still got its POST");
    // Two attempts of 5 s and the pause between, beside a 2 s drain: the
    // notification bounds the step it runs in, and the deploy.
    let drain = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "drain")
        .and_then(|s| s["seconds"].as_f64())
        .unwrap();
    assert!(drain < 16.0, "the drain step took {drain}s");
    assert!(
        drain >= 10.0,
        "the silent URL was given its two attempts: {drain}s"
    );
    assert!(took < Duration::from_secs(90), "the deploy took {took:?}");
    drop(silent);
}

#[test]
fn a_bad_url_exits_2_and_changes_nothing() {
    let (mut project, url) = project_with_receiver("notifybad");
    let entries =
        |project: &TestProject| json(&project.ok(&["history", "--json"]))["entries"].clone();
    let history_before = entries(&project);
    let containers_before = project.containers();
    let image = support::app_image();
    for bad in [
        "hooks.example.com/services/T0/B0/secret",
        "ftp://127.0.0.1/secret",
    ] {
        project.set_env("CRYPTUS_NOTIFY_URL", &format!("{url} {bad}"));
        for args in [
            vec!["deploy", "--image", &image, "--version", "2.0.0"],
            vec!["rollback"],
            vec!["scale", "cryptus-blue", "2"],
        ] {
            let output = project.run(&args);
            assert_code(&output, 2);
            let text = stderr(&output);
            assert!(text.contains("URL 2 of 2 in CRYPTUS_NOTIFY_URL"), "{text}");
            assert!(text.contains("hint:"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }
    assert_eq!(project.serving().0, "blue");
    assert_eq!(entries(&project), history_before);
    assert_eq!(project.containers(), containers_before);
    assert!(received(&url).is_empty());
}

#[test]
fn a_bad_url_is_refused_before_the_engine_is_asked() {
    let output = support::cryptus(
        &["--json", "deploy", "--image", "cryptus:latest"],
        &[
            ("CRYPTUS_NOTIFY_URL", "ftp://example.com/services/secret"),
            ("DOCKER_HOST", "unix:///nonexistent"),
        ],
    );
    assert_code(&output, 2);
    let document = json(&output);
    let error = document["error"].as_str().unwrap();
    assert!(
        error.contains("CRYPTUS_NOTIFY_URL is a ftp: URL, not http or https"),
        "{document}"
    );
    assert!(document["hint"].as_str().is_some(), "{document}");
    assert!(!stdout(&output).contains("secret") && !stderr(&output).contains("secret"));
}

/// `openssl s_server` on loopback with a self-signed certificate, stopped
/// when dropped.
struct TlsServer {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        support::self_signed(&key, &cert, "127.0.0.1");
        let port = support::free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting openssl s_server");
        let server = TlsServer {
            port,
            child,
            _dir: dir,
        };
        support::wait::eventually(
            "openssl s_server listens",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .map(drop)
                    .map_err(|err| err.to_string())
            },
        );
        server
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
