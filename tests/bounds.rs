//! Bounded input: every duration and count a user hands in has a range, and
//! anything beyond it is a usage error (exit 2) naming the flag or key, never
//! a panic, an overflow or a hang. Regression tests for issue 12's faults 5,
//! 6 and 9 (durations panicked, nested YAML took minutes, `logs --json`
//! printed no JSON).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::{TestProject, assert_code, cryptus, stderr, stdout};

/// Values no duration or count flag accepts.
const EXTREMES: &[&str] = &[
    "1e30",
    "1e19",
    "-1",
    "-0",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775808",
    "999999999999999999999999999999999999999",
    "99999999999h",
    "2562047788015216h",
    "1e-9",
    "0x10",
    "1.5.5s",
    "10 s",
    "s",
    "",
    " ",
    "24h0m1s",
    "100001",
    "87601h",
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Deadline,
    Wait,
    Poll,
    Verify,
    Keep,
    Tail,
    Since,
}

impl Kind {
    /// Boundary values this kind accepts: they must get past parsing.
    fn valid(self) -> &'static [&'static str] {
        match self {
            Kind::Deadline => &["100ms", "24h", "1h30m"],
            Kind::Wait => &["0", "0s", "24h"],
            Kind::Poll => &["10ms", "1m"],
            Kind::Verify => &["1", "1000"],
            Kind::Keep => &["1", "100000"],
            Kind::Tail => &["0", "1000000"],
            Kind::Since => &["0s", "87600h", "1970-01-01T00:00:00Z"],
        }
    }

    /// Values of [`EXTREMES`] this kind accepts after all.
    fn accepts(self, value: &str) -> bool {
        match self {
            Kind::Since => matches!(value, "24h0m1s" | "100001"),
            Kind::Tail => value == "100001",
            _ => false,
        }
    }

    /// Values just past its range, besides the [`EXTREMES`].
    fn beyond(self) -> &'static [&'static str] {
        match self {
            Kind::Deadline => &["0", "99ms", "24h1ns"],
            Kind::Wait => &["24h1ns", "86401"],
            Kind::Poll => &["0", "9ms", "61s"],
            Kind::Verify => &["0", "1001"],
            Kind::Keep => &["0", "100001"],
            Kind::Tail => &["1000001"],
            Kind::Since => &["2999-01-01T00:00:00Z", "1969-12-31T23:59:59Z"],
        }
    }
}

/// Every duration and count flag of every subcommand: the words before it,
/// the flag, and its kind.
fn flags() -> Vec<(Vec<&'static str>, &'static str, Kind)> {
    let mut flags = vec![
        (vec!["start"], "--timeout", Kind::Deadline),
        (vec!["restart"], "--timeout", Kind::Deadline),
        (vec!["stop"], "--timeout", Kind::Wait),
        (vec!["health"], "--timeout", Kind::Deadline),
        (vec!["deploy"], "--watch", Kind::Wait),
        (vec!["logs"], "--tail", Kind::Tail),
        (vec!["logs"], "--since", Kind::Since),
        (vec!["backup"], "--keep", Kind::Keep),
        (vec!["backup"], "--lock-wait", Kind::Wait),
        (
            vec!["restore", "/nonexistent-backup"],
            "--lock-wait",
            Kind::Wait,
        ),
    ];
    for command in [
        vec!["deploy"],
        vec!["rollback"],
        vec!["scale", "cryptus-blue", "2"],
    ] {
        for (flag, kind) in [
            ("--timeout", Kind::Deadline),
            ("--drain", Kind::Wait),
            ("--poll", Kind::Poll),
            ("--verify", Kind::Verify),
            ("--lock-wait", Kind::Wait),
        ] {
            flags.push((command.clone(), flag, kind));
        }
    }
    flags
}

/// A project directory with the default files, on an engine that is not
/// there: whatever parses stops at the engine, and nothing is touched.
fn offline(dir: &std::path::Path, words: &[&str], flag: &str, value: &str, json: bool) -> Output {
    let project_dir = dir.to_string_lossy().into_owned();
    let assignment = format!("{flag}={value}");
    let mut args = vec![
        "--project-dir",
        project_dir.as_str(),
        "-p",
        "ct-bounds-offline",
    ];
    if json {
        args.push("--json");
    }
    args.extend_from_slice(words);
    args.push(&assignment);
    cryptus(&args, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")])
}

#[track_caller]
fn assert_no_panic(output: &Output, what: &str) {
    let text = stderr(output);
    assert!(!text.contains("internal error"), "{what}: {text}");
    assert!(!text.contains("panicked"), "{what}: {text}");
    assert_ne!(output.status.code(), Some(101), "{what}: {text}");
    assert!(output.status.code().is_some(), "{what}: killed by a signal");
}

#[test]
fn durations_beyond_the_maximum_exit_2_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&cryptus(&["init", &dir.path().to_string_lossy()], &[]), 0);
    let mut checked = 0;
    for (words, flag, kind) in flags() {
        let refused = EXTREMES.iter().filter(|v| !kind.accepts(v));
        for value in refused.chain(kind.beyond()) {
            let what = format!("{} {flag}={value}", words.join(" "));
            let output = offline(dir.path(), &words, flag, value, false);
            assert_no_panic(&output, &what);
            assert_code(&output, 2);
            let text = stderr(&output);
            let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error")).collect();
            assert_eq!(errors.len(), 1, "{what}: one error line:\n{text}");
            assert!(errors[0].contains(flag), "{what}: names the flag:\n{text}");
            assert!(stdout(&output).is_empty(), "{what}: {}", stdout(&output));
            checked += 1;
        }
        for value in kind.valid() {
            let what = format!("{} {flag}={value}", words.join(" "));
            let output = offline(dir.path(), &words, flag, value, false);
            assert_no_panic(&output, &what);
            let text = stderr(&output);
            assert!(
                !text.contains("invalid value") && !text.contains(flag),
                "{what} is in range but was refused:\n{text}"
            );
        }
    }
    assert!(checked > 500, "only {checked} cases ran");
}

#[test]
fn refused_durations_under_json_print_the_failure_document() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&cryptus(&["init", &dir.path().to_string_lossy()], &[]), 0);
    for (words, flag, kind) in flags() {
        for value in ["1e30", "99999999999h", kind.beyond()[0]] {
            let what = format!("{} {flag}={value}", words.join(" "));
            let output = offline(dir.path(), &words, flag, value, true);
            assert_no_panic(&output, &what);
            assert_code(&output, 2);
            let report: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                    panic!("{what}: stdout is not JSON ({e}): {}", stdout(&output))
                });
            assert_eq!(report["ok"], false, "{what}");
            assert_eq!(report["exit_code"], 2, "{what}");
            assert!(
                report["error"].as_str().unwrap().contains(flag),
                "{what}: {report}"
            );
        }
    }
}

#[test]
fn deeply_nested_yaml_is_refused_in_milliseconds() {
    let project = TestProject::new("nested");
    let file = project
        .path()
        .join("compose/docker-compose.zero-downtime.yml");
    let levels = 200_000;
    for text in [
        format!("services: {}{}\n", "[".repeat(levels), "]".repeat(levels)),
        format!(
            "services: {}1{}\n",
            "{a: ".repeat(levels),
            "}".repeat(levels)
        ),
        format!("services:\n{}x\n", "- ".repeat(levels)),
        format!("services:\n  a: {}{}\n", "[".repeat(65), "]".repeat(65)),
    ] {
        std::fs::write(&file, &text).unwrap();
        for command in [
            vec!["start"],
            vec!["deploy"],
            vec!["restart"],
            vec!["--json", "start"],
        ] {
            let started = Instant::now();
            let output = project.run(&command);
            let took = started.elapsed();
            assert_no_panic(&output, &format!("{command:?}"));
            assert_code(&output, 2);
            assert!(took < Duration::from_secs(3), "{command:?} took {took:?}");
            let message = stderr(&output);
            assert!(message.contains("cryptus refuses"), "{message}");
            assert!(
                message.contains("docker-compose.zero-downtime.yml"),
                "{message}"
            );
        }
        let started = Instant::now();
        let output = project.run(&["status"]);
        assert_no_panic(&output, "status");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert!(
        project.containers().is_empty(),
        "a refused file changed nothing"
    );
}

#[test]
fn oversized_compose_and_env_files_are_refused() {
    let project = TestProject::new("oversized");
    let compose = project.path().join("compose");
    let env = compose.join(".env");
    std::fs::write(&env, format!("A={}\n", "x".repeat(2 << 20))).unwrap();
    let output = project.run(&["start"]);
    assert_no_panic(&output, "big .env");
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("larger than"),
        "{}",
        stderr(&output)
    );
    std::fs::remove_file(&env).unwrap();

    let file = compose.join("docker-compose.zero-downtime.yml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("# {}\n", "x".repeat(2 << 20)));
    std::fs::write(&file, text).unwrap();
    let output = project.run(&["deploy"]);
    assert_no_panic(&output, "big compose file");
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("larger than"),
        "{}",
        stderr(&output)
    );
    assert!(project.containers().is_empty());
}

#[test]
fn compose_durations_beyond_the_maximum_exit_2_naming_the_key() {
    let project = TestProject::new("grace");
    let file = project
        .path()
        .join("compose/docker-compose.zero-downtime.yml");
    let good = std::fs::read_to_string(&file).unwrap();
    for (key, from, to) in [
        (
            "stop_grace_period",
            "stop_grace_period: 10s",
            "stop_grace_period: 1e30",
        ),
        (
            "stop_grace_period",
            "stop_grace_period: 10s",
            "stop_grace_period: 99999999999h",
        ),
        (
            "stop_grace_period",
            "stop_grace_period: 10s",
            "stop_grace_period: .nan",
        ),
        (
            "healthcheck.interval",
            "interval: 5s",
            "interval: 18446744073709551616",
        ),
        ("healthcheck.timeout", "timeout: 3s", "timeout: 0s"),
        (
            "healthcheck.start_period",
            "start_period: 2s",
            "start_period: 1e19",
        ),
        ("healthcheck.retries", "retries: 5", "retries: -1"),
    ] {
        assert!(good.contains(from), "{from}");
        let bad = good.replacen(from, to, 1);
        let line = bad.lines().position(|l| l.contains(to)).unwrap() + 1;
        std::fs::write(&file, &bad).unwrap();
        for command in [vec!["start"], vec!["deploy"], vec!["status"]] {
            let output = project.run(&command);
            assert_no_panic(&output, &format!("{to}: {command:?}"));
            let message = stderr(&output);
            assert!(message.contains(key), "{to}: {message}");
            assert!(message.contains(&format!("line {line}")), "{to}: {message}");
            if command != ["status"] {
                assert_code(&output, 2);
            }
        }
    }
    assert!(
        project.containers().is_empty(),
        "a refused file changed nothing"
    );
}

#[test]
fn maximum_durations_run_end_to_end_without_overflow() {
    let project = TestProject::new("maxdur");
    project
        .edit_compose(|text| text.replacen("stop_grace_period: 10s", "stop_grace_period: 24h", 1));
    project.ok(&["start", "--timeout", "24h"]);
    let before = project.containers();
    for replicas in [
        "-1",
        "0",
        "33",
        "1e30",
        "18446744073709551616",
        "NaN",
        "99999999999",
    ] {
        let output = project.run(&["scale", "cryptus-blue", replicas]);
        assert_no_panic(&output, replicas);
        assert_code(&output, 2);
    }
    assert_eq!(
        project.containers(),
        before,
        "refused scales changed nothing"
    );
    project.deploy_ok(
        "2.0.0",
        &[
            "--timeout",
            "24h",
            "--drain",
            "24h",
            "--lock-wait",
            "24h",
            "--poll",
            "1s",
        ],
    );
    project.ok(&["health", "--timeout", "24h"]);
    project.ok(&["logs", "--since", "87600h", "--tail", "1000000"]);
    project.ok(&["status"]);
    project.ok(&["stop", "--timeout", "24h"]);
}

#[test]
fn logs_json_prints_json() {
    let project = TestProject::new("logsjson");
    project.ok(&["start"]);

    let output = project.ok(&["logs", "--json", "--tail", "5"]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("logs --json is one JSON document");
    assert_eq!(report["ok"], true);
    let lines = report["lines"].as_array().expect("lines");
    assert!(!lines.is_empty(), "{report}");
    for line in lines {
        assert_entry(line);
    }
    let services: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["service"].as_str()).collect();
    assert!(
        services.contains("redis") && services.contains("cryptus-blue"),
        "{services:?}"
    );

    // Failures under --json are the failure document.
    let output = project.run(&["logs", "--json", "no-such-service"]);
    assert_code(&output, 2);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["ok"].clone(), report["exit_code"].clone()),
        (false.into(), 2.into())
    );
    assert!(
        report["hint"].as_str().unwrap().contains("nginx"),
        "{report}"
    );
    let output = project.run(&["logs", "--json", "--since", "1e30"]);
    assert_code(&output, 2);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);

    // --follow streams one object per line.
    let mut child = project
        .command(&["logs", "--json", "--follow", "redis"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().take(3) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let first = receiver.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let first = first.expect("a line within 20s").unwrap();
    let entry: serde_json::Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {first}"));
    assert_entry(&entry);
    assert_eq!(entry["service"], "redis");
}

#[track_caller]
fn assert_entry(line: &serde_json::Value) {
    for key in ["service", "container", "stream", "line"] {
        assert!(line[key].is_string(), "{key} in {line}");
    }
    assert!(
        matches!(line["stream"].as_str(), Some("stdout" | "stderr")),
        "{line}"
    );
    assert!(
        line["time"].as_str().is_some_and(|t| t.contains('T')),
        "{line}"
    );
}
