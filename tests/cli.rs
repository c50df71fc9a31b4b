//! The command line without a running stack: help, bad arguments, init, and
//! errors that must be caught before anything is changed.

mod support;

use support::{assert_code, cryptus, stderr, stdout};

#[test]
fn help_lists_the_commands_and_the_exit_codes() {
    let output = cryptus(&["--help"], &[]);
    assert_code(&output, 0);
    let text = stdout(&output);
    for command in ["init", "start", "stop", "restart", "status"] {
        assert!(text.contains(command), "--help lacks {command}:\n{text}");
    }
    assert!(text.contains("Exit codes"), "{text}");
    assert!(text.contains("2  usage, configuration"), "{text}");
    for option in [
        "--project-dir",
        "--project",
        "--json",
        "--verbose",
        "--quiet",
    ] {
        assert!(text.contains(option), "--help lacks {option}:\n{text}");
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        vec!["no-such-command"],
        vec!["start", "--timeout", "soon"],
        vec!["start", "--timeout", "-5s"],
        vec!["stop", "--bogus"],
        vec!["--verbose", "--quiet", "status"],
    ] {
        let output = cryptus(&args, &[]);
        assert_code(&output, 2);
        assert!(!stderr(&output).is_empty(), "{args:?} printed no error");
    }
}

#[test]
fn a_bad_project_name_exits_2_with_a_hint() {
    let output = cryptus(&["-p", "Bad Name", "status"], &[]);
    assert_code(&output, 2);
    let text = stderr(&output);
    assert!(
        text.contains("project name \"Bad Name\" is invalid"),
        "{text}"
    );
    assert!(text.contains("hint:"), "{text}");
}

#[test]
fn init_writes_the_defaults_and_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("proj");
    let target_str = target.to_string_lossy().into_owned();
    let output = cryptus(&["init", &target_str], &[]);
    assert_code(&output, 0);
    for file in [
        "compose/docker-compose.zero-downtime.yml",
        "nginx/nginx.conf",
        "monitoring/prometheus.yml",
    ] {
        let path = target.join(file);
        let shipped =
            std::fs::read_to_string(std::path::Path::new(support::REPO).join(file)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), shipped, "{file}");
    }

    let nginx = target.join("nginx/nginx.conf");
    std::fs::write(&nginx, "# mine\n").unwrap();
    let output = cryptus(&["init", &target_str, "--json"], &[]);
    assert_code(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        report["kept"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "nginx/nginx.conf")
    );
    assert_eq!(std::fs::read_to_string(&nginx).unwrap(), "# mine\n");

    let output = cryptus(&["init", &target_str, "--force"], &[]);
    assert_code(&output, 0);
    assert_ne!(std::fs::read_to_string(&nginx).unwrap(), "# mine\n");
}

#[test]
fn start_without_files_says_to_run_init() {
    let dir = tempfile::tempdir().unwrap();
    let output = cryptus(
        &["--project-dir", &dir.path().to_string_lossy(), "start"],
        &[],
    );
    assert_code(&output, 2);
    let text = stderr(&output);
    assert!(text.contains("does not exist"), "{text}");
    assert!(text.contains("cryptus init"), "{text}");
}

#[test]
fn a_broken_compose_file_exits_2_naming_the_key_and_line() {
    let project = support::TestProject::new("broken");
    let file = project
        .path()
        .join("compose/docker-compose.zero-downtime.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    let broken = text.replacen(
        "    restart: unless-stopped\n",
        "    restart: unless-stopped\n    privileged_mode: true\n",
        1,
    );
    std::fs::write(&file, &broken).unwrap();
    let line = broken
        .lines()
        .position(|l| l.contains("privileged_mode"))
        .unwrap()
        + 1;
    let output = project.run(&["start"]);
    assert_code(&output, 2);
    let message = stderr(&output);
    assert!(message.contains("privileged_mode"), "{message}");
    assert!(message.contains(&format!("line {line}")), "{message}");
    assert!(
        message.contains("docker-compose.zero-downtime.yml"),
        "{message}"
    );
    assert!(
        project.containers().is_empty(),
        "a broken file must change nothing"
    );

    std::fs::write(&file, "services:\n  nginx: [unclosed\n").unwrap();
    let output = project.run(&["start"]);
    assert_code(&output, 2);
    assert!(stderr(&output).contains("line"), "{}", stderr(&output));
}

#[test]
fn an_unreachable_engine_exits_2_with_a_hint() {
    for command in ["status", "stop"] {
        let output = cryptus(&[command], &[("DOCKER_HOST", "unix:///nonexistent")]);
        assert_code(&output, 2);
        let text = stderr(&output);
        assert!(
            text.contains("cannot reach the Docker engine at unix:///nonexistent"),
            "{text}"
        );
        assert!(text.contains("hint: is dockerd running?"), "{text}");
        assert_eq!(
            text.lines().count(),
            2,
            "one error line and one hint:\n{text}"
        );
    }
    let output = cryptus(
        &["status", "--json"],
        &[("DOCKER_HOST", "unix:///nonexistent")],
    );
    assert_code(&output, 2);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("--json errors are JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["exit_code"], 2);
}

#[test]
fn clap_errors_under_json_print_the_failure_document() {
    for args in [
        vec!["--json", "no-such-command"],
        vec!["--json", "start", "--bogus"],
        vec!["start", "--json", "--timeout", "soon"],
        vec!["logs", "--tail", "x", "--json"],
        vec!["--json", "scale"],
        vec!["--json", "deploy", "--drain", "1e30"],
        vec!["--json", "--verbose", "--quiet", "status"],
    ] {
        let output = cryptus(&args, &[]);
        assert_code(&output, 2);
        let text = stderr(&output);
        assert!(!text.contains("internal error"), "{args:?}: {text}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&output)));
        assert_eq!(report["ok"], false, "{args:?}");
        assert_eq!(report["exit_code"], 2, "{args:?}");
        assert!(
            report["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{args:?}: {report}"
        );
        assert!(report["hint"].is_string(), "{args:?}: {report}");
    }
    // Without --json, and with --json only after `--`, nothing on stdout.
    let output = cryptus(&["start", "--timeout", "soon"], &[]);
    assert_code(&output, 2);
    assert!(output.stdout.is_empty(), "{}", stdout(&output));
    let output = cryptus(&["logs", "--tail", "x", "--", "--json"], &[]);
    assert_code(&output, 2);
    assert!(output.stdout.is_empty(), "{}", stdout(&output));
}

#[test]
fn hook_flags_are_bounded_and_bad_hooks_exit_2_with_their_line() {
    for command in ["deploy", "rollback"] {
        let help = stdout(&cryptus(&[command, "--help"], &[]));
        assert!(
            help.contains("--hook-timeout") && help.contains("--skip-hooks"),
            "{help}"
        );
        for bad in ["0s", "25h", "soon"] {
            let output = cryptus(&[command, "--hook-timeout", bad], &[]);
            assert_code(&output, 2);
            assert!(stderr(&output).contains("--hook-timeout"), "{bad}");
        }
    }
    let scale = stdout(&cryptus(&["scale", "--help"], &[]));
    assert!(!scale.contains("--skip-hooks"), "{scale}");

    let project = support::TestProject::new("bad-hooks");
    let file = project.path().join("compose/docker-compose.override.yml");
    for (text, says) in [
        (
            "x-cryptus:\n  hooks:\n    pre-migrate: [./bin/migrate]\n",
            "\"pre-migrate\" is not a hook",
        ),
        (
            "x-cryptus:\n  hooks:\n    pre-deploy: ./bin/migrate\n",
            "a hook's command is a list of words",
        ),
        ("x-cryptus:\n  hooks:\n    pre-deploy: []\n", "is empty"),
    ] {
        std::fs::write(&file, text).unwrap();
        let output = project.run(&["deploy"]);
        assert_code(&output, 2);
        let message = stderr(&output);
        assert!(
            message.contains(says)
                && message.contains("line 3")
                && message.contains("docker-compose.override.yml"),
            "{message}"
        );
        assert!(
            project.containers().is_empty(),
            "a bad hook changes nothing"
        );
    }
}
