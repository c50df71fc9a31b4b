//! Hardening on the real engine: bad input changes nothing, secrets stay out
//! of every output, nginx enforces its limits and headers, and a stack that
//! lost a piece is repaired.

mod support;

use std::collections::HashMap;

use support::{TestProject, app_image, assert_code, get, stderr, stdout};

/// What must not change when input is refused: the containers and who serves.
fn snapshot(project: &TestProject) -> (HashMap<String, (String, bool)>, (String, String)) {
    (project.containers(), project.serving())
}

#[test]
fn bad_input_is_refused_in_one_line_and_changes_nothing() {
    let project = TestProject::new("badinput");
    project.ok(&["start"]);
    let before = snapshot(&project);
    let image = app_image();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["logs", "no-such-service"], "there is no service"),
        (vec!["scale", "no-such-service", "2"], "no service"),
        (vec!["scale", "cryptus-blue", "-3"], "not a replica count"),
        (vec!["scale", "cryptus-blue", "100000"], "more than 32"),
        (vec!["deploy", "--image", "my app:latest"], "is invalid"),
        (vec!["deploy", "--image", "app;rm -rf /"], "is invalid"),
        (vec!["deploy", "--image", "$(reboot)"], "is invalid"),
        (
            vec![
                "deploy",
                "--image",
                &image,
                "--version",
                "1.0; } server evil:80;",
            ],
            "is invalid",
        ),
        (
            vec![
                "deploy",
                "--image",
                &image,
                "--version",
                "1.0\nserver evil:80;",
            ],
            "is invalid",
        ),
        (vec!["deploy", "--timeout", "soon"], "not a duration"),
        (vec!["deploy", "--drain=-1s"], "not a duration"),
        (vec!["start", "--timeout", "10 parsecs"], "not a duration"),
        (vec!["restore", "/etc/hostname", "--yes"], "is a file"),
    ];
    for (args, needle) in cases {
        let output = project.run(&args);
        assert_code(&output, 2);
        let text = stderr(&output);
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    }
    let empty = project.path().join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    assert_code(
        &project.run(&["restore", &empty.to_string_lossy(), "--yes"]),
        2,
    );

    // A broken compose file, with the stack up: refused, nothing touched.
    let file = project
        .path()
        .join("compose/docker-compose.zero-downtime.yml");
    let good = std::fs::read_to_string(&file).unwrap();
    for broken in [
        good.replacen("services:", "services: [", 1),
        good.replacen(
            "    restart: unless-stopped\n",
            "    restart: unless-stopped\n    privileged: true\n",
            1,
        ),
        good.replacen(
            "${CRYPTUS_IMAGE:-cryptus:latest}",
            "${CRYPTUS_NOT_SET:?set it}",
            1,
        ),
    ] {
        std::fs::write(&file, &broken).unwrap();
        for command in [
            vec!["start"],
            vec!["deploy", "--image", &image],
            vec!["restart"],
        ] {
            let output = project.run(&command);
            assert_code(&output, 2);
            assert!(
                stderr(&output).contains("docker-compose.zero-downtime.yml"),
                "{}",
                stderr(&output)
            );
        }
    }
    std::fs::write(&file, good).unwrap();
    assert_eq!(
        snapshot(&project),
        before,
        "refused input changed the stack"
    );
}

#[test]
fn secrets_never_appear_in_output() {
    let mut project = TestProject::new("secrets");
    let secret = "s3cr3t-token-7f1e2d";
    project.set_env("API_SECRET", secret);
    project.edit_compose(|text| {
        text.replace(
            "      INSTANCE_COLOR: blue\n",
            "      INSTANCE_COLOR: blue\n      API_SECRET: ${API_SECRET}\n",
        )
        .replace(
            "      INSTANCE_COLOR: green\n",
            "      INSTANCE_COLOR: green\n      API_SECRET: ${API_SECRET}\n",
        )
    });
    let mut outputs = vec![project.ok(&["start", "--json"])];
    outputs.push(project.deploy_ok("2.0.0", &["--json"]));
    for args in [
        vec!["status", "--json"],
        vec!["status"],
        vec!["health", "--json"],
        vec!["resources", "--json"],
        vec!["logs"],
        vec!["-v", "status"],
    ] {
        outputs.push(project.ok(&args));
    }
    for output in &outputs {
        let all = format!("{}{}", stdout(output), stderr(output));
        assert!(!all.contains(secret), "a secret leaked:\n{all}");
    }
    // The secret did reach the app.
    let container = format!("{}-cryptus-green-1", project.name);
    let env = support::on_engine(move |docker| async move {
        docker
            .inspect_container(&container, None)
            .await
            .unwrap()
            .config
            .unwrap()
            .env
            .unwrap()
    });
    assert!(env.contains(&format!("API_SECRET={secret}")));
}

#[test]
fn nginx_limits_requests_and_sends_security_headers() {
    let mut project = TestProject::new("nginxlimits");
    project.set_env("CRYPTUS_RATE_API", "2r/s");
    project.ok(&["start"]);
    let (code, headers, _) = get(&project.url("/"), None).unwrap();
    assert_eq!(code, 200);
    for header in [
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
        "permissions-policy",
    ] {
        assert!(
            headers.contains_key(header),
            "{header} is missing: {headers:?}"
        );
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        !headers.get("server").is_some_and(|s| s.contains('/')),
        "nginx hides its version"
    );
    // Beyond the burst of 20 at 2 r/s, /api/ answers 429, with the headers too.
    // One request after another, not a support::load mix: the limit counts
    // requests one by one, and every 429 is checked for its headers.
    let mut limited = 0;
    for _ in 0..60 {
        let (code, headers, _) = get(&project.url("/api/session"), None).unwrap();
        if code == 429 {
            limited += 1;
            assert!(headers.contains_key("x-frame-options"));
        }
    }
    assert!(limited >= 30, "only {limited} of 60 requests were limited");
    // Health is not limited: monitors and cryptus rely on it.
    for _ in 0..40 {
        assert_eq!(get(&project.url("/api/health"), None).unwrap().0, 200);
    }
}

#[test]
fn start_repairs_a_stack_whose_nginx_is_gone() {
    let project = TestProject::new("repair");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    let nginx = format!("{}-nginx-1", project.name);
    support::on_engine(move |docker| async move {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        docker
            .remove_container(&nginx, Some(options))
            .await
            .unwrap();
    });
    assert!(get(&project.url("/api/health"), None).is_err());
    let output = project.ok(&["start"]);
    assert!(
        stderr(&output).contains("nginx: created"),
        "{}",
        stderr(&output)
    );
    // The volume kept the upstream: green still serves, and history is intact.
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    assert_eq!(project.status()["history"].as_array().unwrap().len(), 1);
}

#[test]
fn a_deploy_with_redis_down_still_flips_and_says_sessions_are_degraded() {
    let project = TestProject::new("redisdown");
    project.ok(&["start"]);
    let redis = format!("{}-redis-1", project.name);
    support::on_engine(move |docker| async move {
        docker.stop_container(&redis, None).await.unwrap();
    });
    let output = project.deploy("2.0.0", &["--json"]);
    assert_code(&output, 0);
    assert!(
        stderr(&output).contains("sessions are degraded"),
        "{}",
        stderr(&output)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("sessions are degraded")
    );
    assert_eq!(project.serving().0, "green");
    project.ok(&["start"]);
    assert_eq!(get(&project.url("/api/session"), None).unwrap().0, 200);
}

#[test]
fn with_certificates_nginx_serves_https_and_redirects_http() {
    let project = TestProject::new("tls");
    project.make_certificate();
    project.ok(&["start"]);
    let https_port = project.env_value("CRYPTUS_HTTPS_PORT").unwrap().to_owned();
    let curl = |args: &[&str]| {
        let output = std::process::Command::new("curl")
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let https = format!("https://127.0.0.1:{https_port}");
    let body = curl(&["-sk", &format!("{https}/api/health")]);
    assert!(
        body.contains("\"instance\":\"blue\""),
        "HTTPS serves the app: {body}"
    );
    let headers = curl(&["-sk", "-D", "-", "-o", "/dev/null", &format!("{https}/")]);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{headers}"
    );
    // Plain HTTP redirects to HTTPS, but for /api/health.
    let (code, headers, _) = get(&project.url("/some/page?x=1"), None).unwrap();
    assert_eq!(code, 301);
    assert!(
        headers["location"].starts_with("https://")
            && headers["location"].ends_with("/some/page?x=1"),
        "{headers:?}"
    );
    assert_eq!(get(&project.url("/api/health"), None).unwrap().0, 200);
    // Deploys keep working behind it.
    project.deploy_ok("2.0.0", &[]);
    let body = curl(&["-sk", &format!("{https}/api/health")]);
    assert!(body.contains("\"instance\":\"green\""), "{body}");
}
