//! Crash safety on the real engine: cryptus killed at each step of a deploy
//! loses no request, `status` tells the truth afterwards, and the next deploy
//! and rollback work; Ctrl-C undoes a deploy in progress.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::load::Mix;
use support::private_engine::PrivateEngine;
use support::wait::{eventually, output_within};
use support::{
    RUN_DEADLINE, TestProject, app_image, assert_code, nginx_image, redis_image, stderr,
};

fn spawn_deploy(project: &TestProject, version: &str) -> Child {
    project
        .deploy_command(version, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a moment of a deploy in progress: up to 20 s, looking every
/// 10 ms, since some moments last little longer than that.
#[track_caller]
fn until_moment<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    eventually(
        what,
        Duration::from_secs(20),
        Duration::from_millis(10),
        probe,
    )
}

/// A probe: `color` runs `version`.
fn runs(project: &TestProject, color: &str, version: &str) -> Result<(), String> {
    match running_version(project, color) {
        Some(running) if running == version => Ok(()),
        other => Err(format!("{color} runs {other:?}")),
    }
}

fn running_version(project: &TestProject, color: &str) -> Option<String> {
    let name = format!("{}-cryptus-{color}-1", project.name);
    let (_, running) = project.containers().get(&name).cloned()?;
    running
        .then(|| project.labels(&name).get("cryptus.version").cloned())
        .flatten()
}

fn lb_answer(project: &TestProject) -> Option<(String, String)> {
    let (code, _, body) = support::get(&project.url("/api/health"), None).ok()?;
    let health: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    Some((
        health["instance"].as_str()?.to_owned(),
        health["version"].as_str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_each_step_loses_no_request_and_the_next_deploy_works() {
    let mut project = TestProject::new("sigkill");
    project.set_env("CRYPTUS_RATE_SITE", "100000r/s");
    project.set_env("CRYPTUS_RATE_API", "100000r/s");
    // A start-up delay when asked, so a kill can land between start and switch.
    for color in ["blue", "green"] {
        project.set_service_env(color, "APP_STARTUP_DELAY_MS", "${STARTUP_DELAY:-0}");
    }
    project.ok(&["start"]);
    let mix = Mix {
        keep_alive: 2,
        new_connection: 1,
        slow: 2,
        slow_ms: 1500,
        session: 1,
        ..Mix::default()
    };
    let load = mix.start(project.lb_addr());
    // Not a poll: load runs a while before the first kill.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (point, version) in [
        ("the new container started", "2.1.0"),
        ("the reload", "2.2.0"),
        ("the drain", "2.3.0"),
    ] {
        let (active, _) = lb_answer(&project).expect("the stack serves");
        let target = if active == "blue" { "green" } else { "blue" };
        let delay = if point == "the new container started" {
            "3000"
        } else {
            "0"
        };
        project.set_env("STARTUP_DELAY", delay);
        let project_ref = &project;
        let mut child = spawn_deploy(project_ref, version);
        tokio::task::block_in_place(|| match point {
            "the new container started" => {
                until_moment(point, || runs(project_ref, target, version));
            }
            "the reload" => until_moment(point, || match lb_answer(project_ref) {
                Some((color, answered)) if color == target && answered == version => Ok(()),
                other => Err(format!("the load balancer answers {other:?}")),
            }),
            _ => until_moment(point, || match lb_answer(project_ref) {
                Some((color, _)) if color == target => {
                    match running_version(project_ref, &active) {
                        Some(_) => Ok(()),
                        None => Err(format!("{target} answers, {active} no longer runs")),
                    }
                }
                other => Err(format!("the load balancer answers {other:?}")),
            }),
        });
        child.kill().unwrap();
        child.wait().unwrap();
        // An exec cryptus had started in nginx's container still finishes
        // there (write, check, reload: one script); let it.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // status tells the truth: what nginx serves is what answers.
        let status = project.status();
        let (serving, _) = lb_answer(&project).expect("the stack still serves");
        assert_eq!(
            status["nginx"]["served"],
            serving.as_str(),
            "after a kill at {point}: {status}"
        );
        assert!(
            !status["lock"].is_null(),
            "the killed deploy's lock is left behind"
        );

        // The next deploy breaks the stale lock and works; so does a rollback.
        project.set_env("STARTUP_DELAY", "0");
        let next = format!("{version}-next");
        let output = project
            .run_async(&[
                "deploy",
                "--image",
                &app_image(),
                "--version",
                &next,
                "--watch",
                "0s",
            ])
            .await;
        assert_code(&output, 0);
        assert!(
            stderr(&output).contains("breaking a stale lock"),
            "{}",
            stderr(&output)
        );
        assert_eq!(lb_answer(&project).unwrap().1, next);
        let output = project.run_async(&["rollback"]).await;
        assert_code(&output, 0);
    }

    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(
        report.cut_short, None,
        "the load ended before the kills did"
    );
    assert_eq!(
        report.failed, 0,
        "{:?} {:?}",
        report.failures, report.first_failures
    );
}

#[test]
fn ctrl_c_during_a_deploy_undoes_it() {
    let project = TestProject::new("sigint");
    project.set_service_env("green", "APP_STARTUP_DELAY_MS", "5000");
    project.ok(&["start"]);
    let child = spawn_deploy(&project, "2.0.0");
    until_moment("the green container runs", || {
        running_version(&project, "green").ok_or_else(|| "green runs nothing".to_owned())
    });
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let began = Instant::now();
    let output = output_within("the deploy ended after SIGINT", child, RUN_DEADLINE);
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "Ctrl-C is answered at once"
    );
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("interrupted"),
        "{}",
        stderr(&output)
    );
    assert!(!project.has_color("green"), "the new container is removed");
    assert_eq!(project.serving().0, "blue");
    let status = project.status();
    assert!(status["lock"].is_null(), "the lock is released");
    assert_eq!(
        status["history"].as_array().unwrap().last().unwrap()["outcome"],
        "failed"
    );
}

/// `systemctl restart docker` in the middle of a deploy, on an engine of the
/// test's own: cryptus fails clearly, the stack comes back serving by its
/// restart policies, `status` tells the truth, and a re-run finishes.
#[test]
fn dockerd_restarting_mid_deploy_fails_clearly_and_a_rerun_finishes() {
    let mut engine = PrivateEngine::start(&[nginx_image(), redis_image(), app_image()]);
    let mut project = TestProject::new("dockerd");
    project.set_env("DOCKER_HOST", &engine.host());
    project.edit_compose(|text| {
        text.replace(
            "  cryptus:\n    driver: bridge\n",
            &format!(
                "  cryptus:\n    driver: bridge\n    ipam:\n      config:\n        - subnet: {}\n",
                PrivateEngine::SUBNET
            ),
        )
    });
    project.set_service_env("green", "APP_STARTUP_DELAY_MS", "${STARTUP_DELAY:-0}");
    project.ok(&["start"]);
    let (before, _) = lb_answer(&project).expect("the stack serves");
    assert_eq!(before, "blue");

    project.set_env("STARTUP_DELAY", "4000");
    let child = spawn_deploy(&project, "2.0.0");
    until_moment("the green container runs", || {
        running_version(&project, "green").ok_or_else(|| "green runs nothing".to_owned())
    });
    engine.restart();
    let began = Instant::now();
    let output = output_within(
        "the deploy ended after dockerd restarted",
        child,
        RUN_DEADLINE,
    );
    let text = stderr(&output);
    assert_code(&output, 1);
    assert!(
        text.contains("the Docker engine stopped answering") || text.contains("restarted while"),
        "{text}"
    );
    assert!(text.contains("hint:"), "{text}");
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "the deploy failed only after {:?}, not when the engine went: {text}",
        began.elapsed()
    );

    // The stack comes back by itself, serving what nginx was told to serve.
    let serving = eventually(
        "the stack serves again",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            lb_answer(&project).ok_or_else(|| {
                let url = project.url("/api/health");
                match support::get(&url, None) {
                    Ok((code, _, body)) => format!("GET {url}: {code} {body}"),
                    Err(err) => format!("GET {url}: {err}"),
                }
            })
        },
    );
    let status = project.status();
    assert_eq!(status["nginx"]["served"], serving.0.as_str(), "{status}");

    project.set_env("STARTUP_DELAY", "0");
    let output = project.deploy("2.0.1", &[]);
    assert_code(&output, 0);
    let (color, version) = lb_answer(&project).expect("the stack serves");
    assert_eq!(version, "2.0.1");
    assert_ne!(color, serving.0, "the re-run flipped to the other color");
    assert!(project.status()["lock"].is_null(), "the lock is released");
}
