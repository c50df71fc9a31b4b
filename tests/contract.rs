//! README's exit-code contract, command by command: every failure exits 1 or
//! 2 as the table says and, under `--json`, prints one document with `ok`,
//! `error`, `hint` and `exit_code` on stdout, and nothing ever panics.

mod support;

use std::process::Output;

use support::{TestProject, assert_code, cryptus, stderr, stdout};

/// Asserts the failure document: exactly one JSON value on stdout, with the
/// contract's four fields, and the same exit code as the process.
#[track_caller]
fn assert_failure_document(output: &Output, code: i32) -> serde_json::Value {
    assert_code(output, code);
    let text = stdout(output);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON document ({err}):\n{text}\n--- stderr\n{}",
            stderr(output)
        )
    });
    assert_eq!(document["ok"], false, "{document}");
    assert!(
        document["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no error: {document}"
    );
    let fields = document.as_object().expect("an object");
    assert!(fields.contains_key("hint"), "no hint field: {document}");
    assert_eq!(document["exit_code"], code, "{document}");
    assert_no_panic(output);
    document
}

#[track_caller]
fn assert_no_panic(output: &Output) {
    let text = stderr(output);
    assert!(
        !text.contains("internal error") && !text.contains("panicked"),
        "cryptus panicked:\n{text}"
    );
    assert_ne!(output.status.code(), Some(101), "{text}");
}

#[test]
fn every_command_reports_an_unreachable_engine_as_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("no-such-backup");
    let backup = backup.to_string_lossy();
    let commands: Vec<Vec<&str>> = vec![
        vec!["start"],
        vec!["stop"],
        vec!["restart"],
        vec!["status"],
        vec!["health"],
        vec!["deploy", "--image", "cryptus:latest"],
        vec!["rollback"],
        vec!["scale", "cryptus-blue", "2"],
        vec!["logs"],
        vec!["resources"],
        vec!["backup", "--out", "/tmp/ct-contract-never"],
    ];
    for args in commands {
        let mut full = vec!["--json"];
        full.extend(&args);
        let output = cryptus(&full, &[("DOCKER_HOST", "unix:///nonexistent")]);
        let document = assert_failure_document(&output, 2);
        assert!(
            document["hint"].as_str().is_some(),
            "{args:?}: an unreachable engine comes with a hint: {document}"
        );
    }
    // A restore of a backup that is not there is refused before the engine.
    let output = cryptus(
        &["--json", "restore", &backup, "--yes"],
        &[("DOCKER_HOST", "unix:///nonexistent")],
    );
    assert_failure_document(&output, 2);
    assert!(!std::path::Path::new("/tmp/ct-contract-never").exists());
}

#[test]
fn bad_arguments_under_json_print_the_failure_document() {
    for args in [
        vec!["--json", "no-such-command"],
        vec!["--json", "deploy", "--bogus"],
        vec!["deploy", "--json", "--timeout", "soon"],
        vec!["status", "--json", "extra"],
        vec!["--json", "scale", "cryptus-blue"],
    ] {
        let output = cryptus(&args, &[]);
        let document = assert_failure_document(&output, 2);
        assert!(
            !stderr(&output).is_empty(),
            "{args:?}: the error is on stderr too"
        );
        assert!(
            !document["error"].as_str().unwrap_or("").contains('\n'),
            "one line: {document}"
        );
    }
    // Without --json, stdout stays empty.
    let output = cryptus(&["deploy", "--bogus"], &[]);
    assert_code(&output, 2);
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
}

/// An empty DOCKER_HOST means the local socket, as for the docker CLI; it
/// once failed with "URI scheme is not supported".
#[test]
fn an_empty_docker_host_means_the_local_engine() {
    let output = cryptus(
        &["--json", "status", "-p", "ct-contract-none"],
        &[("DOCKER_HOST", "")],
    );
    assert_code(&output, 0);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["ok"], true, "{status}");
}

#[test]
fn help_and_version_exit_0_even_with_json() {
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["deploy", "--help"],
        vec!["--json", "--help"],
    ] {
        let output = cryptus(&args, &[]);
        assert_code(&output, 0);
        assert!(!stdout(&output).is_empty(), "{args:?} printed nothing");
    }
}

/// Failures of a running stack: the lock held (1), nothing to roll back to
/// (1), a deploy whose new color never answers healthy (1), an unknown
/// service (2), each one document under --json.
#[test]
fn failures_on_a_running_stack_follow_the_table() {
    let project = TestProject::new("contract");
    project.ok(&["start"]);
    let before = project.serving();

    let output = project.run(&["--json", "rollback"]);
    assert_failure_document(&output, 1);

    let output = project.run(&["--json", "logs", "no-such-service"]);
    assert_failure_document(&output, 2);

    let output = project.run(&["--json", "scale", "nginx", "2"]);
    assert_failure_document(&output, 2);

    // A version that never answers healthy: rolled back before the switch.
    project.set_service_env("green", "APP_UNHEALTHY", "1");
    let output = project.deploy("9.9.9", &["--json", "--timeout", "3s"]);
    let document = assert_failure_document(&output, 1);
    assert_eq!(document["outcome"], "failed", "{document}");
    assert!(document["steps"].is_array(), "the report keeps its steps");
    assert_eq!(project.serving(), before, "traffic stays");

    let output = project.run(&["--json", "health"]);
    assert_code(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report.get("exit_code").is_none(), "{report}");

    // Unhealthy: the health report carries the failure fields.
    project.ok(&["stop"]);
    let output = project.run(&["--json", "health", "--timeout", "2s"]);
    let document = assert_failure_document(&output, 1);
    assert!(document["checks"].is_array(), "{document}");
}
