//! `start` and `restart` repair a stack without changing what it serves:
//! they restore the recorded release or refuse, take the deploy lock, record
//! what they repaired, check their ports before creating anything, and undo
//! what they made when they fail or are interrupted. Regression tests for
//! issue 12 (faults 1 and 9), on the real engine.

mod support;

use std::io::BufRead;
use std::time::Duration;

use support::wait::{eventually, exited, output_within, poll};
use support::{RUN_DEADLINE, TestProject, app_image, assert_code, get, stderr};

/// Removes a container, running or not, as `docker rm -f` does.
fn remove_container(name: &str) {
    let name = name.to_owned();
    support::on_engine(move |docker| async move {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        docker
            .remove_container(&name, Some(options))
            .await
            .expect("removing a container");
    });
}

/// Runs a shell command in a container and returns its exit code.
fn exec(container: &str, script: &str) -> i64 {
    let container = container.to_owned();
    let script = script.to_owned();
    support::on_engine(move |docker| async move {
        use futures_util::StreamExt;
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), script]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = docker
            .create_exec(&container, options)
            .await
            .expect("creating an exec");
        if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&exec.id, None)
            .await
            .expect("starting an exec")
        {
            while output.next().await.is_some() {}
        }
        docker
            .inspect_exec(&exec.id)
            .await
            .expect("inspecting an exec")
            .exit_code
            .unwrap_or(-1)
    })
}

/// The container ports a container's configuration publishes on the host.
fn port_bindings(container: &str) -> Vec<String> {
    let container = container.to_owned();
    let mut ports: Vec<String> = support::on_engine(move |docker| async move {
        docker
            .inspect_container(&container, None)
            .await
            .expect("inspecting a container")
            .host_config
            .and_then(|h| h.port_bindings)
            .unwrap_or_default()
            .into_keys()
            .collect()
    });
    ports.sort();
    ports
}

/// The image a container was created from, as its configuration names it.
fn image_of(container: &str) -> String {
    let container = container.to_owned();
    support::on_engine(move |docker| async move {
        docker
            .inspect_container(&container, None)
            .await
            .expect("inspecting a container")
            .config
            .and_then(|c| c.image)
            .unwrap_or_default()
    })
}

fn history(project: &TestProject) -> Vec<serde_json::Value> {
    project.status()["history"]
        .as_array()
        .expect("status has a history")
        .clone()
}

/// What must hold after any cryptus run: no panic, no lock left behind.
#[track_caller]
fn assert_clean_exit(project: &TestProject, output_stderr: &str) {
    assert!(!output_stderr.contains("internal error"), "{output_stderr}");
    let lock = format!("{}-deploy-lock", project.name);
    assert!(
        !project.containers().contains_key(&lock),
        "the deploy lock is released: {:?}",
        project.containers()
    );
}

#[test]
fn start_after_the_active_container_is_removed_restores_the_deployed_release() {
    let project = TestProject::new("restore");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    let green = format!("{}-cryptus-green-1", project.name);
    remove_container(&green);

    let output = project.ok(&["start"]);
    let text = stderr(&output);
    assert_clean_exit(&project, &text);
    assert!(text.contains("repaired"), "{text}");
    assert_eq!(
        project.serving(),
        ("green".to_owned(), "2.0.0".to_owned()),
        "start restored the deployed release, not the compose default"
    );
    let entries = history(&project);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let repair = &entries[1];
    assert_eq!(repair["operation"], "repair", "{repair}");
    assert_eq!(repair["outcome"], "ok");
    assert_eq!(repair["to"]["color"], "green");
    assert_eq!(repair["to"]["version"], "2.0.0");
    assert!(
        repair["reason"].as_str().unwrap().contains(&green),
        "{repair}"
    );

    // `restart` is held to the same: the release survives it too.
    remove_container(&green);
    let output = project.ok(&["restart"]);
    assert_clean_exit(&project, &stderr(&output));
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    assert_eq!(history(&project).len(), 3);

    // A start that only starts what is there repairs nothing, records nothing.
    project.ok(&["stop"]);
    project.ok(&["start"]);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    assert_eq!(history(&project).len(), 3);
}

#[test]
fn start_of_a_never_deployed_stack_restores_what_the_first_start_ran() {
    let mut project = TestProject::new("restore-start");
    project.ok(&["start"]);
    let blue = format!("{}-cryptus-blue-1", project.name);
    let first = image_of(&blue);
    assert_eq!(first, app_image());
    remove_container(&blue);
    // The compose default changes meanwhile: the repair must not follow it.
    project.set_env("CRYPTUS_IMAGE", "cryptus-app:0.1.0");
    let output = project.ok(&["start"]);
    assert_clean_exit(&project, &stderr(&output));
    assert_eq!(image_of(&blue), first);
    assert_eq!(project.serving().0, "blue");
    let entries = history(&project);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["operation"], "repair");
}

#[test]
fn start_with_an_unreadable_upstream_refuses_and_changes_nothing() {
    let project = TestProject::new("garbled");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    let nginx = format!("{}-nginx-1", project.name);
    assert_eq!(
        exec(
            &nginx,
            "printf 'upstream cryptus_app {\\n  server x:1;\\n' > /etc/nginx/cryptus/upstream.conf"
        ),
        0
    );
    let before = project.containers();
    let entries_before = history(&project);

    for args in [vec!["start"], vec!["restart"], vec!["start", "--json"]] {
        let output = project.run(&args);
        assert_code(&output, 1);
        let text = stderr(&output);
        assert_clean_exit(&project, &text);
        if args.contains(&"--json") {
            let failure: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(failure["ok"], false);
            assert_eq!(failure["exit_code"], 1);
            assert!(failure["hint"].as_str().unwrap().contains("upstream.conf"));
        } else {
            assert!(text.contains("names no active color"), "{text}");
            assert!(text.contains("green served last"), "{text}");
            assert!(text.contains("hint:") && text.contains("rm -f"), "{text}");
        }
        assert_eq!(project.containers(), before, "{args:?} changed nothing");
        assert_eq!(
            project.serving(),
            ("green".to_owned(), "2.0.0".to_owned()),
            "traffic did not move"
        );
    }

    // With the serving color gone, it still never guesses a color.
    let green = format!("{}-cryptus-green-1", project.name);
    remove_container(&green);
    let before = project.containers();
    let output = project.run(&["start"]);
    assert_code(&output, 1);
    assert_clean_exit(&project, &stderr(&output));
    assert_eq!(project.containers(), before);
    assert_eq!(history(&project), entries_before, "nothing was recorded");

    // Nor with nginx gone: the nginx it made to read its volume goes again.
    remove_container(&nginx);
    let before = project.containers();
    let output = project.run(&["start"]);
    assert_code(&output, 1);
    assert_clean_exit(&project, &stderr(&output));
    assert_eq!(project.containers(), before);
    assert!(!project.containers().contains_key(&nginx));
}

#[test]
fn start_with_a_corrupt_history_and_the_serving_color_gone_refuses() {
    let project = TestProject::new("corrupt-history");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    let nginx = format!("{}-nginx-1", project.name);
    assert_eq!(
        exec(
            &nginx,
            "printf '[{\"broken' > /etc/nginx/cryptus/history.json"
        ),
        0
    );
    remove_container(&format!("{}-cryptus-green-1", project.name));
    let before = project.containers();
    let output = project.run(&["start"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert_clean_exit(&project, &text);
    assert!(
        text.contains("history cannot be read") && text.contains("hint:"),
        "{text}"
    );
    assert_eq!(project.containers(), before, "no color was guessed");
}

#[test]
fn https_port_is_published_only_with_certificates() {
    let mut project = TestProject::new("https-port");
    // The HTTPS port is taken by something else: without certificates, no
    // matter.
    let https_port: u16 = project
        .env_value("CRYPTUS_HTTPS_PORT")
        .unwrap()
        .parse()
        .unwrap();
    let holder = std::net::TcpListener::bind(("127.0.0.1", https_port)).unwrap();
    project.ok(&["start"]);
    let nginx = format!("{}-nginx-1", project.name);
    assert_eq!(port_bindings(&nginx), ["80/tcp", "8081/tcp"]);
    assert_eq!(project.serving().0, "blue");

    // With certificates, 443 is needed: a taken port is refused before
    // anything changes.
    project.make_certificate();
    let before = project.containers();
    let output = project.run(&["start"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains(&https_port.to_string()) && text.contains("CRYPTUS_HTTPS_PORT"),
        "{text}"
    );
    assert_clean_exit(&project, &text);
    assert_eq!(project.containers(), before);
    assert_eq!(project.serving().0, "blue");

    // One host port for both is a configuration error (exit 2), refused
    // before anything changes.
    project.set_env("CRYPTUS_HTTPS_PORT", &project.port.to_string());
    let output = project.run(&["start"]);
    assert_code(&output, 2);
    let text = stderr(&output);
    assert!(text.contains("published twice"), "{text}");
    assert_eq!(project.containers(), before);
    project.set_env("CRYPTUS_HTTPS_PORT", &https_port.to_string());

    // Freed, it is published and serves HTTPS.
    drop(holder);
    project.ok(&["start"]);
    assert_eq!(port_bindings(&nginx), ["443/tcp", "80/tcp", "8081/tcp"]);
    let output = std::process::Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{https_port}/api/health")])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(body.contains("\"instance\":\"blue\""), "{body}");
}

#[test]
fn a_second_stack_on_a_taken_port_fails_before_creating_anything() {
    let first = TestProject::new("port-a");
    first.ok(&["start"]);

    // Taken by another project's container.
    let mut second = TestProject::new("port-b");
    second.set_env("CRYPTUS_HTTP_PORT", &first.port.to_string());
    let output = second.run(&["start"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains(&first.port.to_string())
            && text.contains(&format!("{}-nginx-1", first.name))
            && text.contains("CRYPTUS_HTTP_PORT"),
        "{text}"
    );
    assert!(!text.contains("internal error"), "{text}");
    assert!(second.containers().is_empty(), "{:?}", second.containers());
    assert!(second.networks().is_empty(), "{:?}", second.networks());
    assert!(second.volumes().is_empty(), "{:?}", second.volumes());
    assert_eq!(first.serving().0, "blue", "the first stack is untouched");

    // Taken by a process that is no container.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut third = TestProject::new("port-c");
    third.set_env("CRYPTUS_HTTP_PORT", &port.to_string());
    let output = third.run(&["start", "--json"]);
    assert_code(&output, 1);
    let failure: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains(&port.to_string()),
        "{failure}"
    );
    assert!(
        failure["hint"]
            .as_str()
            .unwrap()
            .contains("CRYPTUS_HTTP_PORT")
    );
    assert!(third.containers().is_empty());
    assert!(third.networks().is_empty());
    assert!(third.volumes().is_empty());
}

/// A cryptus run in the background, its stderr read line by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(project: &TestProject, args: &[&str]) -> Running {
        let mut child = project
            .command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning cryptus");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 90 s) for a stderr line that contains `marker`; the
    /// lines after it stay unread.
    fn wait_for(&mut self, marker: &str) {
        let (lines, seen) = (&self.lines, &mut self.seen);
        eventually(
            &format!("a line with {marker:?}"),
            Duration::from_secs(90),
            Duration::from_millis(100),
            || loop {
                match lines.try_recv() {
                    Ok(line) => {
                        let found = line.contains(marker);
                        seen.push(line);
                        if found {
                            return Ok(());
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        return Err(format!("{seen:#?}"));
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        panic!("no line with {marker:?}, and stderr closed: {seen:#?}")
                    }
                }
            },
        );
    }

    /// SIGTERM, then the exit code and all of stderr (at most 150 s).
    fn terminate(self) -> (Option<i32>, String) {
        self.signal("-TERM")
    }

    /// `kill SIGNAL`, then the exit code and all of stderr (at most 150 s).
    fn signal(mut self, signal: &str) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let ended = poll(Duration::from_secs(150), Duration::from_millis(100), || {
            exited(&mut self.child)
        });
        let Ok(status) = ended else {
            let _ = self.child.kill();
            panic!("cryptus did not end after kill {signal}: {:#?}", self.seen);
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

#[test]
fn sigterm_during_a_first_start_leaves_nothing_half_made() {
    // Moments: after the networks and volumes, while redis gets healthy;
    // after redis, while blue gets ready; after nginx, while the load
    // balancer is checked (that one may finish first).
    // SIGINT (Ctrl-C) is handled as SIGTERM is.
    for (marker, signal, must_interrupt) in [
        ("✓ networks and volumes", "-TERM", true),
        ("✓ redis:", "-INT", true),
        ("✓ nginx:", "-TERM", false),
    ] {
        let project = TestProject::new("sigterm-first");
        let mut run = Running::spawn(&project, &["start"]);
        run.wait_for(marker);
        let (code, text) = run.signal(signal);
        assert_clean_exit(&project, &text);
        match code {
            Some(1) => {
                assert!(text.contains("interrupted"), "{text}");
                assert!(
                    project.containers().is_empty(),
                    "after {marker}: {:?}\n{text}",
                    project.containers()
                );
                assert!(project.networks().is_empty(), "{:?}", project.networks());
                assert!(project.volumes().is_empty(), "{:?}", project.volumes());
            }
            Some(0) if !must_interrupt => assert_eq!(project.serving().0, "blue"),
            other => panic!("after {marker}: exit {other:?}\n{text}"),
        }
        // Whatever the moment, the next start works.
        project.ok(&["start"]);
        assert_eq!(project.serving().0, "blue");
    }
}

#[test]
fn sigterm_during_a_repair_leaves_the_stack_as_it_was() {
    let project = TestProject::new("sigterm-repair");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    let green = format!("{}-cryptus-green-1", project.name);
    remove_container(&green);
    let before = project.containers();
    let entries = history(&project);

    let mut run = Running::spawn(&project, &["start"]);
    run.wait_for("✓ redis:");
    let (code, text) = run.terminate();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert_clean_exit(&project, &text);
    assert_eq!(project.containers(), before, "{text}");
    assert_eq!(history(&project), entries);

    project.ok(&["start"]);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
}

#[test]
fn sigterm_during_restart_leaves_the_stack_stopped_and_unlocked() {
    let project = TestProject::new("sigterm-restart");
    project.ok(&["start"]);
    let ids: Vec<String> = project
        .containers()
        .values()
        .map(|(id, _)| id.clone())
        .collect();

    let mut run = Running::spawn(&project, &["restart"]);
    run.wait_for("✓ redis:");
    let (code, text) = run.terminate();
    assert_eq!(code, Some(1), "{text}");
    assert_clean_exit(&project, &text);
    let after = project.containers();
    assert!(
        after.values().all(|(_, running)| !running),
        "nothing half-started: {after:?}\n{text}"
    );
    let mut left: Vec<String> = after.values().map(|(id, _)| id.clone()).collect();
    let mut ids = ids;
    left.sort();
    ids.sort();
    assert_eq!(left, ids, "the same containers, none made or lost");
    assert!(get(&project.url("/api/health"), None).is_err());

    project.ok(&["start"]);
    assert_eq!(project.serving().0, "blue");
}

/// Hostile run: one edited comment line (`# active: green` made `blue`) used
/// to move traffic back to blue's old release on `start`, unrecorded. The
/// file's own server lines, nginx's reported color and what nginx serves
/// must all agree before the file is believed.
#[test]
fn start_never_moves_traffic_on_an_edited_upstream_comment() {
    let project = TestProject::new("upcomment");
    project.ok(&["start"]);
    project.deploy_ok("2.0.0", &[]);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
    let nginx = format!("{}-nginx-1", project.name);
    let file = "/etc/nginx/cryptus/upstream.conf";
    let entries = history(&project).len();
    for edit in [
        // The comment alone.
        format!("sed -i 's/^# active: green/# active: blue/' {file}"),
        // The comment and the reported color, not the servers.
        format!(
            "sed -i -e 's/^# active: green/# active: blue/' -e 's/default \"green\"/default \"blue\"/' {file}"
        ),
        // A whole consistent file for blue, which nginx does not serve.
        format!("sed -i -e 's/green/blue/g' {file}"),
    ] {
        assert_eq!(
            exec(&nginx, &format!("cp {file} /tmp/upstream.keep && {edit}")),
            0
        );
        let output = project.run(&["start"]);
        assert_code(&output, 1);
        assert_clean_exit(&project, &stderr(&output));
        assert_eq!(
            project.serving(),
            ("green".to_owned(), "2.0.0".to_owned()),
            "{edit}: traffic stays\n{}",
            stderr(&output)
        );
        assert_eq!(history(&project).len(), entries, "nothing recorded");
        assert_eq!(exec(&nginx, &format!("cp /tmp/upstream.keep {file}")), 0);
    }
    // With the file whole again, start changes nothing and succeeds.
    project.ok(&["start"]);
    assert_eq!(project.serving(), ("green".to_owned(), "2.0.0".to_owned()));
}

/// Hostile run: SIGTERM while `start` took the lock dropped the request
/// that creates it, and the engine finished creating a lock with no holder.
/// Whatever the moment, no lock is left.
#[test]
fn a_signal_while_start_takes_the_lock_leaves_no_lock() {
    let project = TestProject::new("locksig");
    project.ok(&["start"]);
    for delay_ms in [40, 70, 100, 130, 160, 200] {
        let child = project
            .command(&["start"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning cryptus");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let output = output_within("start ended after SIGTERM", child, RUN_DEADLINE);
        let text = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            matches!(output.status.code(), Some(0) | Some(1) | None),
            "{delay_ms} ms: {:?}\n{text}",
            output.status
        );
        // The engine may still be answering a create the run began: give it
        // the time a lock request takes, then look.
        std::thread::sleep(Duration::from_millis(500));
        assert_clean_exit(&project, &text);
    }
    project.ok(&["start"]);
}
