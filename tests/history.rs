//! `cryptus history` on the real engine: the entries the switch records,
//! read back through the project's nginx container and filtered.

mod support;

use support::{TestProject, assert_code, stderr, stdout};

/// `history --json ARGS`, parsed: the entries that match.
#[track_caller]
fn entries(project: &TestProject, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["history", "--json"];
    full.extend_from_slice(args);
    let output = project.ok(&full);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not one JSON document ({err}):\n{}", stdout(&output)));
    assert_eq!(document["ok"], true, "{document}");
    assert_eq!(document["project"], project.name.as_str(), "{document}");
    document["entries"].as_array().cloned().unwrap()
}

#[track_caller]
fn side(entry: &serde_json::Value, side: &str) -> (String, String) {
    (
        entry[side]["color"].as_str().unwrap().to_owned(),
        entry[side]["version"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn history_lists_deploys_and_rollbacks_in_order_and_filters_them() {
    let project = TestProject::new("history");
    project.ok(&["start"]);
    let (color, v1) = project.serving();
    assert_eq!(color, "blue");

    // Nothing recorded yet: said so, exit 0; as JSON, no entry.
    let output = project.ok(&["history"]);
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("no deployment recorded"),
        "{}",
        stderr(&output)
    );
    assert!(entries(&project, &[]).is_empty());

    project.deploy_ok("2.0.0", &[]);
    project.ok(&["rollback"]);
    assert_eq!(project.serving(), ("blue".to_owned(), v1.clone()));

    let all = entries(&project, &[]);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0]["operation"], "deploy");
    assert_eq!(all[0]["outcome"], "ok");
    assert_eq!(side(&all[0], "from"), ("blue".to_owned(), v1.clone()));
    assert_eq!(
        side(&all[0], "to"),
        ("green".to_owned(), "2.0.0".to_owned())
    );
    assert_eq!(all[1]["operation"], "rollback");
    assert_eq!(all[1]["outcome"], "ok");
    assert_eq!(
        side(&all[1], "from"),
        ("green".to_owned(), "2.0.0".to_owned())
    );
    assert_eq!(side(&all[1], "to"), ("blue".to_owned(), v1.clone()));
    assert!(all[0]["time"].as_str() <= all[1]["time"].as_str());
    assert!(all[1]["durations"]["total"].as_f64().unwrap() > 0.0);

    let rollbacks = entries(&project, &["--operation", "rollback"]);
    assert_eq!(rollbacks.len(), 1, "{rollbacks:#?}");
    assert_eq!(rollbacks[0], all[1]);
    assert_eq!(entries(&project, &["--limit", "1"]), [all[1].clone()]);
    assert_eq!(entries(&project, &["--since", "1h"]), all);
    // A version that never turns healthy: a failed deploy, with its reason.
    project.set_service_env("green", "APP_UNHEALTHY", "1");
    let output = project.deploy("3.0.0", &["--timeout", "3s"]);
    assert_code(&output, 1);
    let failed = entries(&project, &["--outcome", "failed,rolled-back"]);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["operation"], "deploy");
    assert_eq!(
        side(&failed[0], "to"),
        ("green".to_owned(), "3.0.0".to_owned())
    );
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("did not answer healthy"), "{reason}");
    // A time just after the rollback: only what came after it (the failed
    // deploy waited 3s for health).
    let after = chrono::DateTime::parse_from_rfc3339(all[1]["time"].as_str().unwrap()).unwrap()
        + chrono::Duration::seconds(1);
    assert_eq!(entries(&project, &["--since", &after.to_rfc3339()]), failed);

    // The table: one line per entry, oldest first, both sides and the reason.
    let output = project.ok(&["history"]);
    let table = stdout(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("TIME (UTC)"), "{table}");
    assert!(
        lines[1].contains(&format!("blue {v1} -> green 2.0.0")),
        "{table}"
    );
    assert!(lines[2].contains("rollback"), "{table}");
    assert!(
        lines[2].contains(&format!("green 2.0.0 -> blue {v1}")),
        "{table}"
    );
    assert!(lines[3].contains("failed"), "{table}");
    assert!(lines[3].contains("did not answer healthy"), "{table}");

    // A filter that matches nothing says so and exits 0.
    let output = project.ok(&["history", "--operation", "scale"]);
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("none of the 3 recorded entries matches"),
        "{}",
        stderr(&output)
    );

    // A stopped stack still has its history: read through the engine.
    project.ok(&["stop"]);
    assert_eq!(entries(&project, &[]).len(), 3);
}

#[test]
fn bad_filters_exit_2_and_change_nothing() {
    let project = TestProject::new("historybad");
    for (args, says) in [
        (vec!["history", "--since", "yesterday"], "--since"),
        (vec!["history", "--since", "2999-01-01T00:00:00Z"], "future"),
        (
            vec!["history", "--outcome", "success"],
            "ok, failed, rolled-back",
        ),
        (
            vec!["history", "--operation", "deploys"],
            "deploy, rollback, scale, repair",
        ),
        (vec!["history", "--limit", "0"], "--limit"),
    ] {
        let output = project.run(&args);
        assert_code(&output, 2);
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}: {}", stdout(&output));
    }
    // Under --json, the failure is one document.
    let output = project.run(&["history", "--json", "--since", "soon"]);
    assert_code(&output, 2);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["ok"], false);
    assert_eq!(document["exit_code"], 2);
    assert!(
        project.containers().is_empty(),
        "a bad filter created something"
    );
}

#[test]
fn the_history_of_a_project_never_started_exits_1_with_a_hint() {
    let project = TestProject::new("historynone");
    let output = project.run(&["history"]);
    assert_code(&output, 1);
    let text = stderr(&output);
    assert!(text.contains("has no nginx container"), "{text}");
    assert!(text.contains("hint: run `cryptus start`"), "{text}");
}
