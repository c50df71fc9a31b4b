//! `deploy` and `rollback` on the real engine, with real nginx and redis,
//! under a client loop through the load balancer.

mod support;

use std::time::{Duration, Instant};

use support::load::Load;
use support::wait::{eventually, exit_within};
use support::{RUN_DEADLINE, TestProject, app_image, assert_code, get, get_json, stderr};

/// Starts load and waits until it flows.
async fn start_load(project: &TestProject) -> Load {
    support::load::start_switch_load(project.lb_addr()).await
}

fn history(project: &TestProject) -> Vec<serde_json::Value> {
    project.status()["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn green_containers(project: &TestProject) -> Vec<String> {
    project
        .containers()
        .into_keys()
        .filter(|name| name.contains("cryptus-green"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_rollback_deploy_under_load_fails_no_request() {
    let project = TestProject::started("flow");
    let (color, v1) = project.serving();
    assert_eq!(color, "blue");

    let (code, headers, _) = get(&project.url("/api/session"), None).unwrap();
    assert_eq!(code, 200);
    let cookie = headers["set-cookie"].split(';').next().unwrap().to_owned();

    let load = start_load(&project).await;

    // A long request in flight across the flip must complete, from blue.
    let slow_url = project.url("/api/sleep?ms=3000");
    let slow = tokio::task::spawn_blocking(move || get(&slow_url, None));
    // Not a poll: nothing outside shows the request has reached blue; this
    // gives it the time to, before the deploy starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let image = app_image();
    let began = Instant::now();
    let output = project
        .run_async(&[
            "deploy",
            "--image",
            &image,
            "--version",
            "2.0.0",
            "--watch",
            "1s",
        ])
        .await;
    assert_code(&output, 0);
    let (code, _, body) = slow.await.unwrap().expect("the slow request completes");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"instance\":\"blue\""), "{body}");
    assert!(
        began.elapsed() > Duration::from_millis(2500),
        "the deploy waited for the slow request to drain"
    );
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    assert_eq!(
        get_json(&project.url("/api/session"), Some(&cookie))["visits"],
        2
    );

    let output = project.run_async(&["rollback"]).await;
    assert_code(&output, 0);
    assert_eq!(project.serving(), ("blue".to_owned(), v1.clone()));
    assert_eq!(
        get_json(&project.url("/api/session"), Some(&cookie))["visits"],
        3
    );

    let output = project
        .run_async(&[
            "deploy",
            "--image",
            &image,
            "--version",
            "3.0.0",
            "--watch",
            "1s",
            "--json",
        ])
        .await;
    assert_code(&output, 0);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("--json is one document");
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["from"]["color"], "blue");
    assert_eq!(report["to"]["color"], "green");
    assert_eq!(report["to"]["version"], "3.0.0");
    assert!(
        report["to"]["image_id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "lock", "active", "image", "start", "health", "switch", "verify", "watch", "drain"
        ]
    );
    assert_eq!(project.serving(), ("green".to_owned(), "3.0.0".to_owned()));
    assert_eq!(
        get_json(&project.url("/api/session"), Some(&cookie))["visits"],
        4
    );

    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(
        report.cut_short, None,
        "the load ended before the switches did"
    );
    assert_eq!(
        report.failed, 0,
        "failed requests during the switches: {:?} {:?}",
        report.failures, report.first_failures
    );
    assert!(
        report.requests > 100,
        "too little load to prove anything: {report:?}"
    );
    assert!(report.by_color.contains_key("blue") && report.by_color.contains_key("green"));

    let history = history(&project);
    let summary: Vec<(String, String, String)> = history
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["to"]["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("deploy".into(), "ok".into(), "2.0.0".into()),
            ("rollback".into(), "ok".into(), v1),
            ("deploy".into(), "ok".into(), "3.0.0".into()),
        ]
    );
    for entry in &history {
        assert!(entry["durations"]["total"].as_f64().unwrap() > 0.0);
        assert!(!entry["user"].as_str().unwrap().is_empty());
        assert!(!entry["host"].as_str().unwrap().is_empty());
    }
    let text = support::stdout(&project.ok(&["status"]));
    assert!(text.contains("last deployments, newest first:"), "{text}");
    assert!(
        text.contains("blue 2.0.0") || text.contains("green 3.0.0"),
        "{text}"
    );
    // The old color is stopped and kept for rollback.
    let containers = project.containers();
    let blue = format!("{}-cryptus-blue-1", project.name);
    assert_eq!(
        containers.get(&blue).map(|c| c.1),
        Some(false),
        "{containers:?}"
    );
}

#[test]
fn rolling_back_twice_returns_and_nothing_to_roll_back_to_is_an_error() {
    let project = TestProject::new("twice");
    project.ok(&["start"]);
    project.fails(&["rollback"], 1, "nothing to roll back to");
    assert_eq!(project.serving().0, "blue");

    project.deploy_ok("2.0.0", &["--keep-standby"]);
    // With --keep-standby blue keeps running: a warm rollback.
    let blue = format!("{}-cryptus-blue-1", project.name);
    assert!(project.containers()[&blue].1, "blue keeps running");
    project.ok(&["rollback"]);
    assert_eq!(project.serving().0, "blue");
    project.ok(&["rollback"]);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));

    // A removed standby is recreated from the recorded image.
    let blue_id = project.containers()[&blue].0.clone();
    support::on_engine(move |docker| async move {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        docker
            .remove_container(&blue_id, Some(options))
            .await
            .unwrap();
    });
    project.ok(&["rollback"]);
    assert_eq!(project.serving().0, "blue");
}

/// The active version's containers are down (it crashed, or they were
/// stopped by hand): traffic through nginx fails, and rollback and deploy,
/// the operator's way out, still switch.
#[test]
fn rollback_and_deploy_switch_away_from_an_active_color_with_nothing_running() {
    let project = TestProject::new("dead");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    let stop = |name: String| {
        support::on_engine(move |docker| async move {
            docker.stop_container(&name, None).await.unwrap();
        })
    };
    stop(format!("{}-cryptus-green-1", project.name));
    let output = project.run(&["rollback"]);
    assert_code(&output, 0);
    assert!(
        stderr(&output).contains("no green container is running"),
        "says why: {}",
        stderr(&output)
    );
    assert_eq!(project.serving(), ("blue".to_owned(), "0.1.0".to_owned()));

    stop(format!("{}-cryptus-blue-1", project.name));
    project.deploy_ok("3.0.0", &[]);
    assert_eq!(project.serving(), ("green".to_owned(), "3.0.0".to_owned()));
    let history = project.run(&["history", "--json"]);
    assert_code(&history, 0);
    let entries: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let last = entries["entries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["from"]["version"], "0.1.0", "{last}");
    assert_eq!(last["outcome"], "ok", "{last}");
}

/// A new container that crashes before it is ready (its restart policy
/// brings it back, over and over) fails the deploy at once, not at the
/// health timeout.
#[test]
fn a_version_that_crashes_while_getting_ready_fails_at_once() {
    let project = TestProject::new("crashready");
    project.set_service_env("green", "APP_STARTUP_DELAY_MS", "5000");
    project.set_service_env("green", "APP_CRASH_AFTER_S", "1");
    project.ok(&["start"]);
    let began = Instant::now();
    let output = project.deploy("2.0.0", &["--timeout", "60s"]);
    let took = began.elapsed();
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        took < Duration::from_secs(15),
        "the crash was seen only after {took:?}: {text}"
    );
    assert!(
        text.contains("restarted while it got ready")
            || text.contains("stopped while it got ready"),
        "{text}"
    );
    assert!(text.contains("traffic stays on blue"), "{text}");
    assert_eq!(project.serving().0, "blue");
    assert!(
        green_containers(&project).is_empty(),
        "the failed container is removed"
    );
}

#[test]
fn a_version_that_never_turns_healthy_fails_in_time_and_traffic_stays() {
    let project = TestProject::new("unhealthy");
    project.set_service_env("green", "APP_UNHEALTHY", "1");
    project.ok(&["start"]);
    let began = Instant::now();
    let output = project.deploy("2.0.0", &["--timeout", "3s"]);
    let took = began.elapsed();
    assert_code(&output, 1);
    assert!(
        took < Duration::from_secs(10),
        "the deadline was not kept: {took:?}"
    );
    let text = stderr(&output);
    assert!(
        text.contains("did not answer healthy as green 2.0.0"),
        "{text}"
    );
    assert!(
        text.contains("503") && text.contains("unhealthy"),
        "the last answer is shown: {text}"
    );
    assert!(
        text.contains("log lines of"),
        "the container's logs are shown: {text}"
    );
    assert!(text.contains("traffic stays on blue"), "{text}");
    assert_eq!(project.serving().0, "blue");
    assert!(
        green_containers(&project).is_empty(),
        "the failed container is removed"
    );
    assert_eq!(history(&project).last().unwrap()["outcome"], "failed");

    // --keep-failed keeps it for inspection.
    let output = project.run(&[
        "deploy",
        "--image",
        &app_image(),
        "--version",
        "2.0.0",
        "--timeout",
        "1s",
        "--keep-failed",
    ]);
    assert_code(&output, 1);
    assert_eq!(green_containers(&project).len(), 1);
    assert_eq!(project.serving().0, "blue");
}

#[test]
fn a_version_failing_in_the_watch_window_is_rolled_back_by_itself() {
    let project = TestProject::new("watch");
    project.set_service_env("green", "APP_CRASH_AFTER_S", "2");
    project.ok(&["start"]);
    let output = project.run(&[
        "deploy",
        "--image",
        &app_image(),
        "--version",
        "2.0.0",
        "--watch",
        "8s",
    ]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(text.contains("error: rolled back:"), "{text}");
    assert!(text.contains("during the watch"), "{text}");
    assert_eq!(project.serving().0, "blue");
    assert_eq!(project.status()["nginx"]["served"], "blue");
    assert!(green_containers(&project).is_empty());
    assert_eq!(history(&project).last().unwrap()["outcome"], "rolled-back");
}

#[test]
fn an_upstream_nginx_rejects_is_not_applied() {
    let project = TestProject::new("reject");
    project.ok(&["start"]);
    // Break nginx's configuration in place (the bind mount follows the inode).
    let conf = project.path().join("nginx/nginx.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{good}\nthis_is_not_a_directive on;\n")).unwrap();

    let output = project.run(&["deploy", "--image", &app_image(), "--version", "2.0.0"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains("nginx rejected the new configuration"),
        "{text}"
    );
    assert!(
        text.contains("this_is_not_a_directive"),
        "nginx's reason is shown: {text}"
    );
    assert_eq!(project.serving().0, "blue");
    let status = project.status();
    assert_eq!(status["nginx"]["served"], "blue");
    assert_eq!(
        status["nginx"]["upstream_file"], "blue",
        "the old upstream file is back"
    );
    assert!(green_containers(&project).is_empty());

    std::fs::write(&conf, good).unwrap();
    project.deploy_ok("2.0.0", &[]);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
}

#[test]
fn two_deploys_at_once_one_is_refused() {
    let project = TestProject::new("lock");
    project.ok(&["start"]);
    let image = app_image();
    let mut first = project
        .command(&[
            "deploy",
            "--image",
            &image,
            "--version",
            "2.0.0",
            "--watch",
            "4s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        "the first deploy holds the lock",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let lock = &project.status()["lock"];
            if lock.is_null() {
                Err(format!("lock {lock}"))
            } else {
                Ok(())
            }
        },
    );
    let holder = project.status()["lock"].clone();
    assert_eq!(holder["operation"], "deploy");
    assert_eq!(holder["pid"], first.id());

    let second = project.run(&["deploy", "--image", &image, "--version", "3.0.0"]);
    assert_code(&second, 1);
    let text = stderr(&second);
    assert!(
        text.contains("deploy lock of project") && text.contains("is held"),
        "{text}"
    );
    assert!(
        text.contains(&format!("(pid {})", first.id())),
        "names the holder: {text}"
    );
    assert!(text.contains("--lock-wait"), "{text}");

    // A third waits for the lock and then deploys.
    let third = project.run(&["rollback", "--lock-wait", "60s"]);
    assert_code(&third, 0);
    assert!(exit_within("the first deploy ended", &mut first, RUN_DEADLINE).success());
    assert_eq!(
        project.serving().0,
        "blue",
        "the rollback ran after the first deploy"
    );
    assert!(project.status()["lock"].is_null(), "the lock is released");
}

/// Creates the project's lock container by hand, as a holder with `pid` in
/// this process space (host, boot, PID namespace) would have.
fn plant_lock(project: &TestProject, pid: u32) {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned();
    let pid_namespace = std::fs::read_link("/proc/self/ns/pid")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name = format!("{}-deploy-lock", project.name);
    let project_name = project.name.clone();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let image = support::nginx_image();
    support::on_engine(move |docker| async move {
        let labels = std::collections::HashMap::from([
            ("com.docker.compose.project".to_owned(), project_name),
            ("cryptus.lock".to_owned(), "deploy".to_owned()),
            ("cryptus.lock.operation".to_owned(), "deploy".to_owned()),
            ("cryptus.lock.user".to_owned(), "ci".to_owned()),
            ("cryptus.lock.host".to_owned(), host),
            ("cryptus.lock.pid".to_owned(), pid.to_string()),
            ("cryptus.lock.boot-id".to_owned(), boot_id),
            ("cryptus.lock.pid-namespace".to_owned(), pid_namespace),
            (
                "cryptus.lock.since".to_owned(),
                chrono::Utc::now().to_rfc3339(),
            ),
        ]);
        let body = bollard::models::ContainerCreateBody {
            image: Some(image),
            labels: Some(labels),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
            .name(&name)
            .build();
        docker.create_container(Some(options), body).await.unwrap();
    });
}

#[test]
fn a_lock_whose_holder_is_gone_is_broken() {
    let project = TestProject::new("stale");
    project.ok(&["start"]);
    // A lock left by a process of this host that no longer exists.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    plant_lock(&project, dead_pid);
    let output = project.deploy("2.0.0", &[]);
    assert_code(&output, 0);
    assert!(
        stderr(&output).contains("breaking a stale lock"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("is gone"), "{}", stderr(&output));
    assert_eq!(project.serving().0, "green");
}

#[test]
fn a_live_lock_holds_until_force_unlock_breaks_it() {
    let project = TestProject::new("force");
    project.ok(&["start"]);
    // This test process is alive: its lock is not stale.
    plant_lock(&project, std::process::id());
    let output = project.deploy("2.0.0", &[]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains("is held"), "{}", stderr(&output));
    assert_eq!(project.serving().0, "blue");
    let output = project.deploy("2.0.0", &["--force-unlock"]);
    assert_code(&output, 0);
    assert!(
        stderr(&output).contains("(--force-unlock)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(project.serving().0, "green");
}

/// Removes a test's images when it ends, pass or fail.
struct ImageGuard(Vec<String>);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let images = std::mem::take(&mut self.0);
        support::on_engine(move |docker| async move {
            for image in images {
                let _ = docker
                    .remove_image(
                        &image,
                        None::<bollard::query_parameters::RemoveImageOptions>,
                        None,
                    )
                    .await;
            }
        });
    }
}

#[test]
fn deploy_build_builds_the_context_through_the_engine_and_tags_the_version() {
    let context = std::path::Path::new(support::REPO).join("app");
    assert!(
        context.join("dist/cryptus-app").exists(),
        "app/dist/cryptus-app is missing: run scripts/make-images.sh"
    );
    let version = format!("5.0.{}", std::process::id());
    let tag = format!("cryptus:{version}");
    // Declared before the project, so it drops after the project's containers.
    let later: Vec<String> = (1..=2).map(|n| format!("{version}.{n}")).collect();
    let _images = ImageGuard(
        std::iter::once(tag.clone())
            .chain(later.iter().map(|v| format!("cryptus:{v}")))
            .collect(),
    );
    let project = TestProject::new("build");
    project.ok(&["start"]);
    let output = project.run(&[
        "deploy",
        "--build",
        &context.to_string_lossy(),
        "--version",
        &version,
        "--watch",
        "0s",
        "--json",
    ]);
    assert_code(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["to"]["image"], tag.as_str());
    assert_eq!(project.serving(), ("green".to_owned(), version.clone()));
    let label = support::on_engine({
        let tag = tag.clone();
        move |docker| async move {
            docker
                .inspect_image(&tag)
                .await
                .unwrap()
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get("org.opencontainers.image.version").cloned())
        }
    });
    assert_eq!(label.as_deref(), Some(version.as_str()));

    // Two more builds: the first built image then runs nowhere and is
    // pruned; the two colors' images stay for rollback.
    for version in &later {
        project.ok(&[
            "deploy",
            "--build",
            &context.to_string_lossy(),
            "--version",
            version,
            "--watch",
            "0s",
        ]);
    }
    let exists = |tag: String| {
        support::on_engine(move |docker| async move { docker.inspect_image(&tag).await.is_ok() })
    };
    assert!(!exists(tag.clone()), "{tag} runs nowhere and is pruned");
    assert!(exists(format!("cryptus:{}", later[0])) && exists(format!("cryptus:{}", later[1])));
    project.ok(&["rollback"]);
    assert_eq!(
        project.serving().1,
        later[0],
        "rollback still has its image"
    );

    let output = project.run(&["deploy", "--build", "/nonexistent/context"]);
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("is not a directory"),
        "{}",
        stderr(&output)
    );
}
