//! Canary releases on the real engine, with real nginx and redis: each
//! step's share of clients, each client keeping its color, a failing
//! canary rolled back at its first step, and a canary whose deploy was
//! SIGKILLed, told truthfully, refused by deploy and scale, and ended by
//! the next rollback.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::wait::{eventually, output_within};
use support::{RUN_DEADLINE, TestProject, assert_code, get, stderr};

/// Requests each share is measured over, each from a client of its own.
const CLIENTS: usize = 1000;

/// `deploy --canary STEPS --step HOLD` of the app image as `version`,
/// with `extra`, started and left running.
fn spawn_canary(
    project: &TestProject,
    version: &str,
    (steps, hold): (&str, &str),
    extra: &[&str],
    output: fn() -> Stdio,
) -> std::process::Child {
    let mut args = vec!["--canary", steps, "--step", hold];
    args.extend_from_slice(extra);
    project
        .deploy_command(version, &args)
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap()
}

/// The canary status shows: (color, percent).
fn canary(project: &TestProject) -> Option<(String, u64)> {
    let status = project.status();
    let canary = &status["nginx"]["canary"];
    Some((
        canary["color"].as_str()?.to_owned(),
        canary["percent"].as_u64()?,
    ))
}

/// A canary deploy of 2.0.0 at `percent`, SIGKILLed once nginx serves it.
fn canary_killed_at(project: &TestProject, percent: u64) {
    let steps = percent.to_string();
    let mut deploy = spawn_canary(project, "2.0.0", (&steps, "10m"), &[], Stdio::null);
    until_canary(project, percent);
    deploy.kill().unwrap();
    deploy.wait().unwrap();
}

fn until_canary(project: &TestProject, percent: u64) {
    eventually(
        &format!("a canary at {percent}%"),
        Duration::from_secs(60),
        Duration::from_millis(50),
        || match canary(project) {
            Some((color, at)) if at == percent => Ok(color),
            other => Err(format!("{other:?}")),
        },
    );
}

/// The answer to `url` for a client with `cookie`: (code, color).
fn answer(url: &str, cookie: &str) -> (u16, String) {
    let (code, _, body) = get(url, Some(&format!("cryptus_sid={cookie}")))
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let color = ["blue", "green"]
        .into_iter()
        .find(|color| body.contains(&format!("\"instance\":\"{color}\"")))
        .unwrap_or("?");
    (code, color.to_owned())
}

/// The color that answers `path` for a client with `cookie`.
fn color_for(project: &TestProject, path: &str, cookie: &str) -> String {
    answer(&project.url(path), cookie).1
}

/// Asks `path` once for each of `clients` cookies, four at a time: for each
/// cookie, its answer's (code, color).
async fn ask_each(project: &TestProject, path: &str, clients: &[String]) -> Vec<(u16, String)> {
    let url = project.url(path);
    let tasks: Vec<_> = clients
        .chunks(clients.len().div_ceil(4))
        .map(|chunk| {
            let (url, chunk) = (url.clone(), chunk.to_vec());
            tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .map(|cookie| answer(&url, cookie))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    answers
}

fn share_of_green(answers: &[(u16, String)]) -> f64 {
    let green = answers.iter().filter(|(_, color)| color == "green").count();
    100.0 * green as f64 / answers.len() as f64
}

fn clients(tag: &str) -> Vec<String> {
    (0..CLIENTS).map(|n| format!("{tag}-{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_10_50_canary_gives_each_step_its_share_and_clients_keep_their_color() {
    let project = TestProject::started("canary");
    let load = support::load::start_switch_load(project.lb_addr()).await;

    let deploy = spawn_canary(
        &project,
        "2.0.0",
        ("10,50", "12s"),
        &["--json"],
        Stdio::piped,
    );

    until_canary(&project, 10);
    let first = ask_each(&project, "/api/health", &clients("a")).await;
    assert_eq!(
        canary(&project),
        Some(("green".to_owned(), 10)),
        "still at 10% after measuring"
    );
    assert!(
        first.iter().all(|(code, _)| *code == 200),
        "every answer is 200"
    );
    let share = share_of_green(&first);
    assert!(
        (5.0..=15.0).contains(&share),
        "10% step: {share}% of clients on green"
    );
    // A client sent to the canary keeps it.
    let sticky = clients("a")
        .into_iter()
        .zip(&first)
        .find(|(_, (_, color))| color == "green")
        .map(|(cookie, _)| cookie)
        .unwrap();
    for _ in 0..20 {
        assert_eq!(color_for(&project, "/api/health", &sticky), "green");
    }

    until_canary(&project, 50);
    let second = ask_each(&project, "/api/health", &clients("b")).await;
    assert_eq!(
        canary(&project),
        Some(("green".to_owned(), 50)),
        "still at 50% after measuring"
    );
    let share = share_of_green(&second);
    assert!(
        (45.0..=55.0).contains(&share),
        "50% step: {share}% of clients on green"
    );
    // The first step's canary clients are still on it.
    let again = ask_each(&project, "/api/health", &clients("a")).await;
    for ((cookie, (_, before)), (_, now)) in clients("a").iter().zip(&first).zip(&again) {
        if before == "green" {
            assert_eq!(now, "green", "{cookie} went back to blue at 50%");
        }
    }

    let output = output_within("the canary deploy ended", deploy, RUN_DEADLINE);
    assert_code(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["canary"]["steps"], serde_json::json!([10, 50]));
    assert_eq!(report["canary"]["reached"], 50);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for step in [
        "canary 10%",
        "hold 10%",
        "canary 50%",
        "hold 50%",
        "switch",
        "drain",
    ] {
        assert!(steps.contains(&step), "{steps:?}");
    }
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    assert_eq!(canary(&project), None, "no canary once at 100%");
    let history = project.status()["history"].as_array().unwrap().clone();
    let last = history.last().unwrap();
    assert_eq!(last["outcome"], "ok");
    assert!(
        last["durations"]["hold 10%"].as_f64().unwrap() >= 12.0,
        "{last}"
    );

    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(
        report.cut_short, None,
        "the load ended before the canary did"
    );
    assert_eq!(
        report.failed, 0,
        "failed requests during the canary: {:?} {:?}",
        report.failures, report.first_failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_answering_5xx_is_rolled_back_at_its_first_step_by_nginxs_log() {
    let mut project = TestProject::new("canary-bad");
    project.set_env("CRYPTUS_RATE_SITE", "100000r/s");
    project.set_env("CRYPTUS_RATE_API", "100000r/s");
    project.set_service_env("green", "APP_ERROR_RATIO", "${ERROR_RATIO:-0}");
    project.ok(&["start"]);
    project.set_env("ERROR_RATIO", "0.2");
    let deploy = spawn_canary(
        &project,
        "2.0.0",
        ("10,50", "30s"),
        &["--json"],
        Stdio::piped,
    );

    until_canary(&project, 10);
    // Real requests (health is never failed on purpose), each client its own.
    let answers = ask_each(&project, "/api/session", &clients("c")).await;
    let failed = answers.iter().filter(|(code, _)| *code >= 500).count();
    assert!(failed > 0, "the canary failed some requests");

    let output = output_within("the failing canary ended", deploy, RUN_DEADLINE);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(text.contains("rolled back at 10%: "), "{text}");
    assert!(text.contains("5xx in nginx's log"), "{text}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["outcome"], "rolled-back");
    assert_eq!(report["failed_at"], 10);
    // Without Prometheus, nginx's log judged, and its counts are kept.
    let step = &report["canary"]["answers"][0];
    assert_eq!(step["judge"], "nginx-log", "{report}");
    assert!(step["errors"].as_u64().unwrap() >= 3, "{step}");
    assert!(
        report["total"].as_f64().unwrap() < 30.0,
        "the step failed before its hold ended: {report}"
    );
    assert_eq!(project.serving().0, "blue");
    assert_eq!(canary(&project), None);
    assert!(
        !project.has_color("green"),
        "the canary's containers are removed"
    );
    let history = project.status()["history"].as_array().unwrap().clone();
    let last = history.last().unwrap();
    assert_eq!(last["outcome"], "rolled-back");
    assert!(
        last["reason"].as_str().unwrap().starts_with("at 10%: "),
        "{last}"
    );
    // Every client is back on blue.
    let after = ask_each(&project, "/api/health", &clients("c")[..100]).await;
    assert!(
        after
            .iter()
            .all(|(code, color)| *code == 200 && color == "blue")
    );
}

#[test]
fn a_canary_left_by_a_killed_deploy_is_told_truthfully_and_ended_by_rollback() {
    let project = TestProject::started("canary-kill");
    canary_killed_at(&project, 30);

    // status tells the truth: blue serves, green has 30% of clients.
    let status = project.status();
    assert_eq!(status["active"], "blue", "{status}");
    assert_eq!(status["nginx"]["served"], "blue", "{status}");
    assert_eq!(canary(&project), Some(("green".to_owned(), 30)));
    let text = support::stdout(&project.ok(&["status"]));
    assert!(
        text.contains("nginx serves blue, and 30% of clients to green (a canary)"),
        "{text}"
    );
    let answers: Vec<String> = (0..200)
        .map(|n| color_for(&project, "/api/health", &format!("k-{n}")))
        .collect();
    assert!(answers.iter().any(|c| c == "green") && answers.iter().any(|c| c == "blue"));

    // scale waits until the canary is ended, and says how.
    let output = project.run(&["scale", "cryptus-blue", "2"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(text.contains("a canary of green is live at 30%"), "{text}");
    assert!(text.contains("cryptus rollback"), "{text}");

    // So does a deploy: it could not replace the canary's containers
    // while nginx sends them clients.
    let output = project.deploy("2.1.0", &[]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(text.contains("a canary of green is live at 30%"), "{text}");
    assert_eq!(
        canary(&project),
        Some(("green".to_owned(), 30)),
        "the deploy changed nothing"
    );

    // rollback ends it: every client on blue, green's containers gone.
    let output = project.run(&["rollback"]);
    assert_code(&output, 0);
    let text = stderr(&output);
    assert!(text.contains("putting every client back on blue"), "{text}");
    every_client_on_blue(&project, "k");
    let history = project.status()["history"].as_array().unwrap().clone();
    let last = history.last().unwrap();
    assert_eq!(last["operation"], "rollback");
    assert_eq!(last["outcome"], "ok");
    assert_eq!(last["from"]["color"], "green");
    assert_eq!(last["to"]["color"], "blue");

    // And the next deploy works.
    project.deploy_ok("3.0.0", &[]);
    assert_eq!(project.serving(), ("green".to_owned(), "3.0.0".to_owned()));
}

#[test]
fn start_ends_a_canary_left_by_a_killed_deploy() {
    let project = TestProject::started("canary-start");
    canary_killed_at(&project, 40);

    // A repair (or a reboot's start) names the active color alone, and the
    // canary's containers go: no later rollback takes them for a release.
    let output = project.ok(&["start"]);
    let text = stderr(&output);
    assert!(text.contains("a canary of green at 40% was live"), "{text}");
    every_client_on_blue(&project, "s");
    project.fails(&["rollback"], 1, "nothing to roll back to");
}

/// No canary is live, green has no container, and 100 clients (cookies
/// `<tag>-<n>`) all reach blue.
#[track_caller]
fn every_client_on_blue(project: &TestProject, tag: &str) {
    assert_eq!(canary(project), None);
    assert!(!project.has_color("green"));
    for n in 0..100 {
        assert_eq!(
            color_for(project, "/api/health", &format!("{tag}-{n}")),
            "blue"
        );
    }
}
