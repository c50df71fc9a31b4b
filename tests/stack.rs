//! `start`, `stop`, `restart` and `status` on the real engine, with real
//! nginx and real redis.

mod support;

use support::private_engine::PrivateEngine;
use support::{TestProject, assert_code, get, get_json, stderr, stdout};

#[test]
fn start_serves_blue_through_the_load_balancer_and_status_tells_the_truth() {
    let project = TestProject::new("start");
    let output = project.ok(&["start"]);
    assert!(
        stderr(&output).contains("the stack is up"),
        "{}",
        stderr(&output)
    );

    let health = get_json(&project.url("/api/health"), None);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["instance"], "blue");
    for key in ["timestamp", "uptime", "version", "memory"] {
        assert!(health.get(key).is_some(), "health lacks {key}: {health}");
    }

    let status = project.status();
    assert_eq!(status["active"], "blue");
    assert_eq!(status["nginx"]["served"], "blue", "{status}");
    assert_eq!(status["nginx"]["upstream_file"], "blue");
    assert_eq!(status["colors"]["blue"]["running"], 1);
    assert_eq!(status["colors"]["blue"]["version"], health["version"]);
    assert_eq!(status["colors"]["green"]["containers"], 0);
    let services: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        ["cryptus-blue", "cryptus-green", "nginx", "redis"]
    );
    for service in status["services"].as_array().unwrap() {
        let containers = service["containers"].as_array().unwrap();
        if service["service"] == "cryptus-green" {
            assert!(containers.is_empty());
        } else {
            assert_eq!(containers.len(), 1, "{service}");
            assert_eq!(containers[0]["state"], "running", "{service}");
            assert!(containers[0]["uptime_seconds"].as_i64().unwrap() >= 0);
        }
    }

    // The text form says the same.
    let text = stdout(&project.ok(&["status"]));
    assert!(text.contains("nginx serves blue"), "{text}");
    assert!(
        text.contains(&format!("{}-redis-1", project.name)),
        "{text}"
    );

    // Compose tooling sees what cryptus made.
    let lb = format!("{}-nginx-1", project.name);
    let labels = project.labels(&lb);
    assert_eq!(labels["com.docker.compose.project"], project.name);
    assert_eq!(labels["com.docker.compose.service"], "nginx");
    assert_eq!(labels["com.docker.compose.container-number"], "1");
    assert_eq!(labels["com.docker.compose.oneoff"], "False");
    assert_eq!(labels["com.docker.compose.config-hash"].len(), 64);
    assert!(
        labels["com.docker.compose.project.config_files"]
            .ends_with("compose/docker-compose.zero-downtime.yml")
    );

    // A second start changes nothing: same containers, same ids.
    let before = project.containers();
    let output = project.ok(&["start", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["changed"], false, "{report}");
    assert_eq!(project.containers(), before);
    assert!(stderr(&project.ok(&["start"])).contains("nothing changed"));
}

#[test]
fn stop_keeps_redis_data_so_sessions_survive_stop_and_start() {
    let project = TestProject::new("stopstart");
    project.ok(&["start"]);

    let (code, headers, body) = get(&project.url("/api/session"), None).unwrap();
    assert_eq!(code, 200, "{body}");
    let cookie = headers["set-cookie"].split(';').next().unwrap().to_owned();
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["visits"], 1);
    assert_eq!(first["instance"], "blue");
    let second = get_json(&project.url("/api/session"), Some(&cookie));
    assert_eq!(second["visits"], 2);

    let output = project.ok(&["stop", "--json"]);
    let stopped: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stopped["stopped"].as_array().unwrap().len(), 3, "{stopped}");
    assert!(project.containers().values().all(|(_, running)| !running));
    assert!(
        get(&project.url("/api/health"), None).is_err(),
        "nothing answers after stop"
    );
    let status = project.status();
    assert_eq!(status["nginx"]["served"], serde_json::Value::Null);
    assert_eq!(status["nginx"]["upstream_file"], "blue");

    project.ok(&["start"]);
    let third = get_json(&project.url("/api/session"), Some(&cookie));
    assert_eq!(
        third["visits"], 3,
        "the session counter survived stop + start"
    );

    project.ok(&["restart"]);
    let fourth = get_json(&project.url("/api/session"), Some(&cookie));
    assert_eq!(fourth["visits"], 4, "the session counter survived restart");
}

#[test]
fn a_missing_image_is_named_with_how_to_get_it_and_nothing_is_created() {
    let mut project = TestProject::new("noimage");
    project.set_env("REDIS_IMAGE", "cryptus-test/no-such-redis:1");
    let output = project.run(&["start"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains("cryptus-test/no-such-redis:1 (service redis)"),
        "{text}"
    );
    assert!(
        text.contains("hint:") && text.contains("make-images"),
        "{text}"
    );
    assert!(project.containers().is_empty(), "nothing was created");
}

/// cryptus asks nginx its version (`nginx -v`) rather than trusting
/// NGINX_VERSION, which only the official image sets: an nginx of 1.27.4 or
/// later gets `keepalive_min_timeout` whatever image it comes in, on a first
/// start (nginx not yet running) and on a start that finds it running.
#[test]
fn keepalive_min_timeout_follows_what_nginx_v_says() {
    let project = TestProject::new("nginxv");
    project.ok(&["start"]);
    let answer = project.exec("nginx", &["nginx", "-v"]);
    let version = cryptus::nginx::parse_version(&answer)
        .unwrap_or_else(|| panic!("nginx -v answered {answer:?}"));
    let expected = cryptus::nginx::has_keepalive_min_timeout(&version);
    if support::nginx_image() == "cryptus/nginx:offline" {
        let variable = project.exec("nginx", &["sh", "-c", "echo \"${NGINX_VERSION:-none}\""]);
        assert_eq!(variable, "none", "the offline image sets no NGINX_VERSION");
    }
    let http = || project.exec("nginx", &["cat", "/etc/nginx/cryptus/http.conf"]);
    assert_eq!(
        http().contains("keepalive_min_timeout"),
        expected,
        "nginx {version}:\n{}",
        http()
    );
    // A start that finds nginx running renders the same.
    project.ok(&["start"]);
    assert_eq!(http().contains("keepalive_min_timeout"), expected);
    assert_code(&project.run(&["health"]), 0);
}

/// Issue 16: an engine reached over TLS as the docker CLI reaches it
/// (`DOCKER_HOST=tcp://`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`) answers
/// `status`. A client whose CA did not sign the engine's certificate is
/// refused (exit 2) with a hint naming its CA file; a certificate
/// directory with a malformed key is refused (exit 2) naming the file,
/// before any connection.
#[test]
fn status_reaches_an_engine_over_tls_and_a_wrong_ca_is_refused_with_a_hint() {
    let engine = PrivateEngine::start_tls(&[]);
    let mut project = TestProject::new("tls");
    project.set_env("DOCKER_HOST", &engine.tls_host());
    project.set_env("DOCKER_TLS_VERIFY", "1");
    let certs = |right: bool| engine.client_certs(right).display().to_string();
    project.set_env("DOCKER_CERT_PATH", &certs(true));
    let status = project.status();
    assert_eq!(status["colors"]["blue"]["containers"], 0, "{status}");

    project.set_env("DOCKER_CERT_PATH", &certs(false));
    let refused = project.run(&["status"]);
    assert_code(&refused, 2);
    let err = stderr(&refused);
    assert!(
        err.contains(&format!(
            "cannot reach the Docker engine at {}",
            engine.tls_host()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: ") && err.contains(&format!("{}/ca.pem", certs(false))),
        "{err}"
    );

    let broken = tempfile::tempdir().expect("a temporary directory");
    for file in ["ca.pem", "cert.pem"] {
        std::fs::copy(
            engine.client_certs(true).join(file),
            broken.path().join(file),
        )
        .expect("copying a certificate");
    }
    std::fs::write(broken.path().join("key.pem"), "not a key\n").expect("writing key.pem");
    project.set_env("DOCKER_CERT_PATH", &broken.path().display().to_string());
    let refused = project.run(&["status"]);
    assert_code(&refused, 2);
    let err = stderr(&refused);
    assert!(err.contains("key.pem holds no private key"), "{err}");
    assert!(err.contains("hint: put the engine's CA"), "{err}");
    // The project's containers are looked for on the engine's own socket.
    project.set_env("DOCKER_HOST", &engine.host());
}
