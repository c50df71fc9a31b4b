//! `health`, `logs`, `scale` and `resources` on the real engine.

mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use support::load::Mix;
use support::wait::{eventually, exit_within};
use support::{RUN_DEADLINE, TestProject, assert_code, stderr, stdout};

/// The host port a container publishes its app port on.
fn app_port(container: &str) -> u16 {
    let container = container.to_owned();
    support::on_engine(move |docker| async move {
        let inspect = docker.inspect_container(&container, None).await.unwrap();
        let ports = inspect.network_settings.unwrap().ports.unwrap();
        let binding = ports["3000/tcp"].as_ref().unwrap()[0].clone();
        binding.host_port.unwrap().parse().unwrap()
    })
}

/// Requests a replica answered on /api/health, from its own /metrics.
fn health_requests(port: u16) -> u64 {
    let (_, _, body) = support::get(&format!("http://127.0.0.1:{port}/metrics"), None).unwrap();
    body.lines()
        .filter(|l| l.starts_with("http_requests_total") && l.contains("route=\"/api/health\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_one_to_three_to_one_under_load_fails_no_request() {
    let project = TestProject::started("scale");
    let mix = Mix {
        keep_alive: 2,
        new_connection: 2,
        slow: 1,
        slow_ms: 1000,
        session: 1,
        ..Mix::default()
    };
    let load = mix.start(project.lb_addr());
    // Not a poll: load runs a while before the scale.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let output = project.run_async(&["scale", "cryptus-blue", "3"]).await;
    assert_code(&output, 0);
    let status = project.status();
    assert_eq!(status["colors"]["blue"]["running"], 3, "{status}");
    // nginx sends traffic to every replica within 800 ms. The counts only
    // grow, so looking until then fails exactly when one look at 800 ms
    // would.
    let ports: Vec<u16> = (1..=3)
        .map(|number| app_port(&format!("{}-cryptus-blue-{number}", project.name)))
        .collect();
    tokio::task::block_in_place(|| {
        eventually(
            "every replica got a request",
            Duration::from_millis(800),
            Duration::from_millis(100),
            || {
                let counts: Vec<u64> = ports.iter().map(|&port| health_requests(port)).collect();
                if counts.iter().all(|&count| count > 0) {
                    Ok(())
                } else {
                    Err(format!("requests by replica 1..=3: {counts:?}"))
                }
            },
        )
    });

    let output = project.run_async(&["scale", "cryptus-blue", "1"]).await;
    assert_code(&output, 0);
    assert_eq!(project.status()["colors"]["blue"]["running"], 1);
    assert_eq!(
        project.status()["colors"]["blue"]["containers"],
        1,
        "removed replicas are gone"
    );

    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(
        report.cut_short, None,
        "the load ended before the scale did"
    );
    assert_eq!(
        report.failed, 0,
        "{:?} {:?}",
        report.failures, report.first_failures
    );
    assert!(report.requests > 100);

    // Deploy and rollback keep the count.
    project.ok(&["scale", "cryptus-blue", "2"]);
    project.deploy_ok("2.0.0", &[]);
    assert_eq!(project.status()["colors"]["green"]["running"], 2);
    project.ok(&["rollback"]);
    assert_eq!(project.status()["colors"]["blue"]["running"], 2);
}

#[test]
fn scaling_the_idle_color_sets_the_next_deploy_and_bad_counts_are_refused() {
    let project = TestProject::new("scaleidle");
    project.ok(&["start"]);
    let output = project.ok(&["scale", "cryptus-green", "2"]);
    assert!(
        stderr(&output).contains("next deploy into green starts 2 replicas"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        project.status()["colors"]["green"]["containers"],
        0,
        "nothing started yet"
    );
    project.deploy_ok("2.0.0", &[]);
    assert_eq!(project.status()["colors"]["green"]["running"], 2);

    for (args, needle) in [
        (vec!["scale", "nginx", "2"], "nginx cannot be scaled"),
        (vec!["scale", "redis", "2"], "redis cannot be scaled"),
        (
            vec!["scale", "cryptus-green", "0"],
            "would stop all traffic",
        ),
        (vec!["scale", "cryptus-green", "-1"], "not a replica count"),
        (vec!["scale", "cryptus-green", "1000"], "more than 32"),
        (vec!["scale", "web", "2"], "no service \"web\""),
        (vec!["scale", "cryptus-green", "two"], "invalid value"),
    ] {
        let output = project.run(&args);
        assert_code(&output, 2);
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(
        project.status()["colors"]["green"]["running"],
        2,
        "refusals changed nothing"
    );
}

#[test]
fn logs_follow_a_color_across_a_deploy() {
    let project = TestProject::new("logs");
    project.ok(&["start"]);

    // Plain logs, several services multiplexed with a prefix.
    let text = stdout(&project.ok(&["logs", "cryptus-blue", "redis"]));
    assert!(
        text.contains("cryptus-blue-1") && text.contains("| cryptus-app: blue version"),
        "{text}"
    );
    assert!(
        text.contains("redis-1") && text.contains("Ready to accept connections"),
        "{text}"
    );
    // One service alone has no prefix.
    let text = stdout(&project.ok(&["logs", "cryptus-blue", "--tail", "1"]));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.contains(" | "), "{text}");
    // An unknown service lists the services that exist.
    let output = project.run(&["logs", "nosuch"]);
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("cryptus-blue, cryptus-green, nginx, redis"),
        "{}",
        stderr(&output)
    );
    let output = project.run(&["logs", "--since", "last tuesday"]);
    assert_code(&output, 2);

    // Follow green, which has no container yet; the deploy's container joins.
    let mut follower = project
        .command(&["logs", "--follow", "cryptus-green"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(follower.stdout.take().unwrap());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    // Not a poll: the follower prints nothing until green has a container,
    // so there is nothing to look for; this gives it time to start
    // following before the deploy makes one.
    std::thread::sleep(Duration::from_millis(500));
    project.deploy_ok("2.0.0", &[]);
    let mut seen = Vec::new();
    eventually(
        "the new green container in the logs",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            seen.extend(receiver.try_iter());
            if seen
                .iter()
                .any(|l| l.contains("green version 2.0.0 listening"))
            {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    // Ctrl-C ends it cleanly.
    interrupt(follower.id());
    let status = exit_within(
        "logs --follow ended after SIGINT",
        &mut follower,
        RUN_DEADLINE,
    );
    assert!(
        status.success(),
        "logs --follow exits 0 on Ctrl-C: {status:?}"
    );

    // The seed's form: `logs nginx true` follows.
    let mut seed = project
        .command(&["logs", "nginx", "true"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Not a poll: what is checked is that it is still running 1.5 s later.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        seed.try_wait().unwrap().is_none(),
        "`logs nginx true` keeps following"
    );
    interrupt(seed.id());
    assert!(
        exit_within(
            "logs nginx true ended after SIGINT",
            &mut seed,
            RUN_DEADLINE
        )
        .success()
    );
}

/// Sends SIGINT, as Ctrl-C would.
fn interrupt(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn health_exits_1_with_redis_stopped_and_0_after_start() {
    let project = TestProject::new("health");
    project.ok(&["start"]);
    let output = project.ok(&["health", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let components: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert!(
        components.contains(&"nginx") && components.contains(&"redis"),
        "{components:?}"
    );
    let app = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["color"] == "blue")
        .unwrap();
    assert!(app["memory_mb"]["total"].as_f64().unwrap() > 0.0, "{app}");
    assert!(app["version"].is_string());

    let redis = format!("{}-redis-1", project.name);
    support::on_engine(move |docker| async move {
        docker.stop_container(&redis, None).await.unwrap();
    });
    let output = project.run(&["health"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains("unhealthy: redis") && text.contains("exited"),
        "names which and why: {text}"
    );
    assert!(stdout(&output).contains("UNHEALTHY"), "{}", stdout(&output));

    project.ok(&["start"]);
    project.ok(&["health"]);

    // A configuration nginx would refuse at its next reload: health says
    // so, though the running nginx still serves the app.
    project.exec(
        "nginx",
        &["sh", "-c", "cp /etc/nginx/cryptus/http.conf /tmp/http.conf && echo 'not_a_directive on;' >> /etc/nginx/cryptus/http.conf"],
    );
    let output = project.run(&["health", "--json"]);
    assert_code(&output, 1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let nginx = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "nginx")
        .unwrap();
    assert_eq!(nginx["healthy"], false, "{report}");
    assert!(
        nginx["detail"].as_str().unwrap().contains("nginx -t fails")
            && nginx["detail"]
                .as_str()
                .unwrap()
                .contains("not_a_directive"),
        "{nginx}"
    );
    assert_eq!(project.serving().0, "blue");
    project.exec(
        "nginx",
        &["cp", "/tmp/http.conf", "/etc/nginx/cryptus/http.conf"],
    );
    project.ok(&["health"]);
}

#[test]
fn resources_lists_every_container_and_the_host() {
    let project = TestProject::new("resources");
    project.ok(&["start"]);
    let output = project.ok(&["resources", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut names: Vec<String> = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = project.containers().into_keys().collect();
    expected.sort();
    assert_eq!(names, expected);
    for container in report["containers"].as_array().unwrap() {
        assert!(
            container["memory_limit"].as_u64().unwrap() > 0,
            "{container}"
        );
        assert!(
            container["memory_used"].as_u64().unwrap() > 0,
            "{container}"
        );
        assert!(container["pids"].as_u64().unwrap() > 0, "{container}");
    }
    assert!(report["host"]["cores"].as_i64().unwrap() > 0);
    assert!(report["host"]["memory"].as_i64().unwrap() > 0);
    assert!(report["host"]["disk_free"].as_u64().unwrap() > 0);
    let text = stdout(&project.ok(&["resources"]));
    assert!(text.contains("CPU") && text.contains("host:"), "{text}");
}
