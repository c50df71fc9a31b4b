//! Issue 12 on the real engine: the lock against a cryptus in another PID
//! namespace, failures after the lock is taken (exit 1, recorded, one JSON
//! document), a corrupt history kept, and SIGINT/SIGTERM at each moment of
//! deploy, rollback and scale ending in a consistent state.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::wait::{eventually, exited, poll};
use support::{BIN, TestProject, app_image, assert_code, stderr, stdout};

/// A cryptus running in the background, its stderr collected line by line.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning cryptus");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits up to 60 s for a stderr line containing `text`.
    fn until_line(&mut self, text: &str) {
        eventually(
            &format!("a line with {text:?}"),
            Duration::from_secs(60),
            Duration::from_millis(10),
            || {
                if self.lines.lock().unwrap().iter().any(|l| l.contains(text)) {
                    return Ok(());
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "cryptus ended ({status}) before printing {text:?}: {:?}",
                        self.lines.lock().unwrap()
                    );
                }
                Err(format!("{:?}", self.lines.lock().unwrap()))
            },
        );
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to 90 s for the end; the output with the stderr lines.
    fn finish(mut self) -> Output {
        let ended = poll(Duration::from_secs(90), Duration::from_millis(20), || {
            exited(&mut self.child)
        });
        if ended.is_err() {
            let _ = self.child.kill();
            panic!("cryptus did not end: {:?}", self.lines.lock().unwrap());
        }
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let mut output = self.child.wait_with_output().unwrap();
        output.stderr = self.lines.lock().unwrap().join("\n").into_bytes();
        output
    }
}

fn history(project: &TestProject) -> Vec<serde_json::Value> {
    project.status()["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn no_internal_error(output: &Output) {
    let text = stderr(output);
    assert!(!text.contains("internal error"), "{text}");
}

/// The one JSON document a `--json` run prints on stdout.
fn document(output: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim()).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON document ({err}): {}",
            stdout(output)
        )
    })
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running docker")
}

fn nginx_container(project: &TestProject) -> String {
    format!("{}-nginx-1", project.name)
}

#[test]
fn a_live_lock_in_another_pid_namespace_is_not_broken() {
    assert!(
        Command::new("unshare")
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs unshare (util-linux)"
    );
    let project = TestProject::new("pidns");
    project.set_service_env("green", "APP_STARTUP_DELAY_MS", "6000");
    project.ok(&["start"]);
    let mut first = Running::spawn(project.deploy_command("2.0.0", &[]));
    first.until_line("taking the deploy lock");

    // The same cryptus, same host name, but its own PID namespace: the
    // holder's pid does not exist there.
    let inner = project.deploy_command("3.0.0", &[]);
    let mut second = Command::new("unshare");
    second
        .args(["-pf", "--mount-proc", BIN])
        .args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => second.env(key, value),
            None => second.env_remove(key),
        };
    }
    let output = support::run(second);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(text.contains("deploy lock of project"), "{text}");
    assert!(!text.contains("breaking"), "{text}");

    let output = first.finish();
    assert_code(&output, 0);
    assert_eq!(project.serving(), ("green".into(), "2.0.0".into()));
    assert!(project.status()["lock"].is_null());
}

#[test]
fn nginx_killed_after_the_switch_exits_1_and_is_recorded() {
    let project = TestProject::new("nginxkill");
    project.ok(&["start"]);
    let args = deploy_args("2.0.0", &["--watch", "30s", "--json"]);
    let mut deploy =
        Running::spawn(project.command(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    deploy.until_line("switching nginx to green");
    let killed = docker(&["kill", &nginx_container(&project)]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    let output = deploy.finish();
    assert_code(&output, 1);
    no_internal_error(&output);
    let doc = document(&output);
    assert_eq!(doc["ok"], false, "{doc}");
    assert_eq!(doc["exit_code"], 1, "{doc}");
    assert!(
        doc["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{doc}"
    );
    assert!(doc.get("hint").is_some(), "{doc}");
    assert!(project.status()["lock"].is_null(), "the lock is released");

    // Back up, the history says what happened.
    project.ok(&["start"]);
    let last = history(&project).last().cloned().expect("an entry");
    assert_eq!(last["operation"], "deploy", "{last}");
    assert_ne!(last["outcome"], "ok", "{last}");
    assert!(project.serving().0 == "blue" || project.serving().0 == "green");
}

/// The same class before the switch: the flip cannot reach nginx, its
/// upstream still names blue, so green goes and blue serves once nginx is back.
#[test]
fn nginx_killed_before_the_switch_exits_1_and_traffic_stays() {
    let project = TestProject::new("nginxkill2");
    project.set_service_env("green", "APP_STARTUP_DELAY_MS", "3000");
    project.ok(&["start"]);
    let args = deploy_args("2.0.0", &["--json"]);
    let mut deploy =
        Running::spawn(project.command(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    deploy.until_line("starting green");
    let killed = docker(&["kill", &nginx_container(&project)]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    let output = deploy.finish();
    assert_code(&output, 1);
    no_internal_error(&output);
    let doc = document(&output);
    assert_eq!(
        (doc["ok"].clone(), doc["exit_code"].clone()),
        (false.into(), 1.into()),
        "{doc}"
    );
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("traffic stays on blue")),
        "{doc}"
    );
    assert!(
        !project.has_color("green"),
        "green is removed: {}",
        stderr(&output)
    );
    project.ok(&["start"]);
    assert_eq!(project.serving().0, "blue");
    let last = history(&project).last().cloned().expect("an entry");
    assert_eq!(last["outcome"], "failed", "{last}");
    assert!(project.status()["lock"].is_null());
}

#[test]
fn a_corrupt_history_is_kept_and_warned_about() {
    let project = TestProject::new("corrupt");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    let nginx = nginx_container(&project);
    let broken = docker(&[
        "exec",
        &nginx,
        "sh",
        "-c",
        // Not JSON, and not even UTF-8: the copy must be the very bytes.
        "printf '{broken\\377' > /etc/nginx/cryptus/history.json",
    ]);
    assert!(broken.status.success(), "{}", stderr(&broken));

    let output = project.deploy_ok("3.0.0", &[]);
    let text = stderr(&output);
    assert!(
        text.contains("not valid JSON") && text.contains("history.json.corrupt-"),
        "{text}"
    );
    let listing = docker(&[
        "exec",
        &nginx,
        "sh",
        "-c",
        "cat /etc/nginx/cryptus/history.json.corrupt-*",
    ]);
    assert_eq!(
        listing.stdout, b"{broken\xff",
        "the old file is kept as it was"
    );
    let entries = history(&project);
    assert_eq!(entries.len(), 1, "a new history started: {entries:?}");
    assert_eq!(entries[0]["to"]["version"], "3.0.0");
}

#[test]
fn a_failed_deploy_json_has_error_and_exit_code() {
    let project = TestProject::new("failjson");
    project.ok(&["start"]);
    let output = project.run(&[
        "deploy",
        "--json",
        "--image",
        "cryptus/no-such-image:1",
        "--version",
        "9.9.9",
    ]);
    assert_code(&output, 1);
    no_internal_error(&output);
    let doc = document(&output);
    assert_eq!(doc["ok"], false, "{doc}");
    assert_eq!(doc["exit_code"], 1, "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-such-image")),
        "{doc}"
    );
    assert!(doc["hint"].as_str().is_some(), "{doc}");
    let last = history(&project)
        .last()
        .cloned()
        .expect("the failure is recorded");
    assert_eq!(last["outcome"], "failed", "{last}");
    assert_eq!(project.serving().0, "blue");
}

/// One moment of the matrix: what runs, the line the signal waits for, and
/// what must hold after.
struct Case<'a> {
    what: &'a str,
    args: Vec<String>,
    at: &'a str,
    /// How long after that line the signal comes.
    after: Duration,
    signal: &'a str,
    code: i32,
    serving: &'a str,
    /// The running app containers afterwards, by color and count.
    running: [(&'a str, usize); 2],
    history: (&'a str, &'a str),
}

fn check(project: &TestProject, case: &Case<'_>) {
    let mut running =
        Running::spawn(project.command(&case.args.iter().map(String::as_str).collect::<Vec<_>>()));
    running.until_line(case.at);
    std::thread::sleep(case.after);
    running.signal(case.signal);
    let began = Instant::now();
    let output = running.finish();
    let what = case.what;
    eprintln!("--- {what}\n{}", stderr(&output));
    assert_eq!(
        output.status.code(),
        Some(case.code),
        "{what}: {}",
        stderr(&output)
    );
    no_internal_error(&output);
    if case.code == 1 {
        assert!(
            stderr(&output).contains("interrupted"),
            "{what}: {}",
            stderr(&output)
        );
    }
    assert!(
        began.elapsed() < Duration::from_secs(40),
        "{what}: the signal was answered after {:?}",
        began.elapsed()
    );
    let status = project.status();
    assert!(
        status["lock"].is_null(),
        "{what}: the lock is left: {status}"
    );
    let health = support::get_json(&project.url("/api/health"), None);
    assert_eq!(health["instance"], case.serving, "{what}: {health}");
    assert_eq!(health["status"], "healthy", "{what}: {health}");
    let containers = project.containers();
    for (color, count) in case.running {
        let up = containers
            .iter()
            .filter(|(name, (_, up))| *up && name.contains(&format!("cryptus-{color}-")))
            .count();
        assert_eq!(
            up, count,
            "{what}: running {color} containers: {containers:?}"
        );
    }
    let stray: Vec<&String> = containers
        .keys()
        .filter(|name| name.contains("lock") || name.contains("scratch"))
        .collect();
    assert!(stray.is_empty(), "{what}: stray containers {stray:?}");
    let last = history(project).last().cloned().expect("an entry");
    assert_eq!(
        (last["operation"].as_str(), last["outcome"].as_str()),
        (Some(case.history.0), Some(case.history.1)),
        "{what}: {last}"
    );
}

/// `deploy` of the app image as `version`, `--watch 0s` unless `extra` sets it.
fn deploy_args(version: &str, extra: &[&str]) -> Vec<String> {
    let watch: &[&str] = if extra.contains(&"--watch") {
        &[]
    } else {
        &["--watch", "0s"]
    };
    let mut args = vec![
        "deploy".to_owned(),
        "--image".to_owned(),
        app_image(),
        "--version".to_owned(),
        version.to_owned(),
    ];
    args.extend(watch.iter().chain(extra).map(|s| (*s).to_owned()));
    args
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_signal_at_each_moment_of_deploy_rollback_and_scale_leaves_a_consistent_stack() {
    let mut project = TestProject::new("signals");
    // A long verify (1000 answers in a row) must not meet the rate limit.
    project.set_env("CRYPTUS_RATE_SITE", "100000r/s");
    project.set_env("CRYPTUS_RATE_API", "100000r/s");
    // blue is slow to start for good, so a rollback to it can be caught
    // during its health wait; green is slow when GREEN_DELAY says so.
    project.set_service_env("blue", "APP_STARTUP_DELAY_MS", "3000");
    project.set_service_env("green", "APP_STARTUP_DELAY_MS", "${GREEN_DELAY:-0}");
    project.ok(&["start"]);

    project.set_env("GREEN_DELAY", "5000");
    for (what, at, signal) in [
        ("deploy, at the lock", "taking the deploy lock", "TERM"),
        ("deploy, in the health wait", "starting green", "INT"),
    ] {
        check(
            &project,
            &Case {
                what,
                args: deploy_args("2.0.1", &[]),
                at,
                after: Duration::ZERO,
                signal,
                code: 1,
                serving: "blue",
                running: [("blue", 1), ("green", 0)],
                history: ("deploy", "failed"),
            },
        );
        assert!(
            !project.has_color("green"),
            "{what}: the new container is removed"
        );
    }

    project.set_env("GREEN_DELAY", "0");
    check(
        &project,
        &Case {
            what: "deploy, after the flip",
            args: deploy_args("2.0.2", &["--watch", "20s"]),
            after: Duration::ZERO,
            at: "switching nginx to green",
            signal: "TERM",
            code: 1,
            serving: "blue",
            running: [("blue", 1), ("green", 0)],
            history: ("deploy", "rolled-back"),
        },
    );

    // A long request keeps an old nginx worker busy: the signal lands in
    // the drain, after the switch was proven. The deploy is finished.
    let url = project.url("/api/sleep?ms=6000");
    let slow = std::thread::spawn(move || support::get(&url, None).map(|(code, _, _)| code));
    // Not a poll: nothing outside shows the request has reached nginx; this
    // gives it the time to, before the deploy starts.
    std::thread::sleep(Duration::from_millis(300));
    check(
        &project,
        &Case {
            what: "deploy, in the drain",
            args: deploy_args("2.0.3", &["--drain", "20s"]),
            after: Duration::ZERO,
            at: "verifying",
            signal: "TERM",
            code: 0,
            serving: "green",
            running: [("blue", 0), ("green", 1)],
            history: ("deploy", "ok"),
        },
    );
    assert_eq!(slow.join().unwrap().ok(), Some(200), "the drained request");

    for (what, at, signal, outcome) in [
        (
            "rollback, in the health wait",
            "taking the deploy lock",
            "TERM",
            "failed",
        ),
        (
            "rollback, after the flip",
            "switching nginx to blue",
            "INT",
            "rolled-back",
        ),
    ] {
        check(
            &project,
            &Case {
                what,
                args: args(&["rollback", "--verify", "1000"]),
                at,
                after: Duration::ZERO,
                signal,
                code: 1,
                serving: "green",
                running: [("blue", 0), ("green", 1)],
                history: ("rollback", outcome),
            },
        );
    }

    project.set_env("GREEN_DELAY", "5000");
    for (what, after, signal) in [
        ("scale up, at the lock", Duration::ZERO, "TERM"),
        // The new replicas are made in well under 2 s, then take 5 s to answer.
        (
            "scale up, in the health wait",
            Duration::from_secs(2),
            "INT",
        ),
    ] {
        check(
            &project,
            &Case {
                what,
                args: args(&["scale", "cryptus-green", "3"]),
                after,
                at: "taking the deploy lock",
                signal,
                code: 1,
                serving: "green",
                running: [("blue", 0), ("green", 1)],
                history: ("scale", "failed"),
            },
        );
        assert_eq!(
            project
                .containers()
                .keys()
                .filter(|n| n.contains("cryptus-green"))
                .count(),
            1,
            "{what}: the new replicas are removed"
        );
    }

    project.set_env("GREEN_DELAY", "0");
    project.ok(&["scale", "cryptus-green", "2"]);
    check(
        &project,
        &Case {
            what: "scale down, once nginx no longer names the replica",
            args: args(&["scale", "cryptus-green", "1"]),
            after: Duration::ZERO,
            at: "removing",
            signal: "TERM",
            code: 0,
            serving: "green",
            running: [("blue", 0), ("green", 1)],
            history: ("scale", "ok"),
        },
    );

    // And the stack still works.
    project.deploy_ok("2.0.4", &[]);
    assert_eq!(project.serving(), ("blue".into(), "2.0.4".into()));
}
