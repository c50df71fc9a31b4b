//! `--dry-run` on deploy, rollback and scale: the planner's decisions,
//! printed, with the engine's objects and nginx's state the same before
//! and after.

mod support;

use std::collections::BTreeMap;

use support::{TestProject, app_image, assert_code, stdout};

/// What a dry run must not change: every container (id, running, when it
/// started), network and volume of the project, and nginx's state files
/// (upstream, history, recorded replica counts).
#[derive(Debug, PartialEq)]
struct World {
    containers: BTreeMap<String, (String, bool, String)>,
    networks: Vec<String>,
    volumes: Vec<String>,
    state: String,
}

fn world(project: &TestProject) -> World {
    let containers = project
        .containers()
        .into_iter()
        .map(|(name, (id, running))| {
            let started = project.started_at(&name);
            (name, (id, running, started))
        })
        .collect();
    let (mut networks, mut volumes) = (project.networks(), project.volumes());
    networks.sort();
    volumes.sort();
    let state = project.exec(
        "nginx",
        &[
            "sh",
            "-c",
            "cd /state && for f in upstream.conf history.json replicas.json; do echo \"== $f\"; cat $f 2>/dev/null; done; ls -la /state",
        ],
    );
    World {
        containers,
        networks,
        volumes,
        state,
    }
}

#[track_caller]
fn plan(project: &TestProject, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    all.push("--dry-run");
    let output = project.run(&all);
    assert_code(&output, 0);
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a dry run prints one JSON document");
    assert_eq!(document["ok"], true, "{document}");
    assert_eq!(document["dry_run"], true, "{document}");
    document["plan"].clone()
}

fn names(project: &TestProject, service: &str, numbers: &[u32]) -> serde_json::Value {
    numbers
        .iter()
        .map(|n| format!("{}-{service}-{n}", project.name))
        .collect()
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let project = TestProject::new("dryrun");
    project.ok(&["start"]);
    let before = world(&project);
    let image = app_image();

    let deploy = plan(
        &project,
        &["deploy", "--image", &image, "--version", "2.0.0"],
    );
    assert_eq!(deploy["action"], "switch", "{deploy}");
    assert_eq!(
        (deploy["active"].as_str(), deploy["target"].as_str()),
        (Some("blue"), Some("green"))
    );
    assert_eq!(deploy["release"]["version"], "2.0.0");
    assert_eq!(deploy["replicas"], 1);
    assert_eq!(deploy["start"], names(&project, "cryptus-green", &[1]));
    assert_eq!(deploy["serve"], deploy["start"]);
    assert_eq!(deploy["drain"], names(&project, "cryptus-blue", &[1]));

    let grow = plan(&project, &["scale", "cryptus-blue", "3"]);
    assert_eq!(grow["action"], "grow", "{grow}");
    assert_eq!(grow["start"], names(&project, "cryptus-blue", &[2, 3]));
    let idle = plan(&project, &["scale", "cryptus-green", "2"]);
    assert_eq!(idle["action"], "record", "{idle}");

    // The terminal form says what it would do, and that it did nothing.
    let output = project.run(&["rollback", "--dry-run"]);
    assert_code(&output, 1);
    let output = project.run(&["deploy", "--image", &image, "--dry-run"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("traffic moves from blue to green"), "{text}");
    assert!(text.contains("dry run: nothing was changed"), "{text}");
    built_nothing(&project);
    assert_eq!(world(&project), before, "a dry run changed the stack");

    // With a warm standby, a rollback starts nothing new.
    project.deploy_ok("2.0.0", &["--keep-standby"]);
    let before = world(&project);
    let rollback = plan(&project, &["rollback"]);
    assert_eq!(rollback["reuse"], true, "{rollback}");
    assert_eq!(rollback["target"], "blue");
    assert_eq!(rollback["start"], serde_json::json!([]));
    assert_eq!(rollback["serve"], names(&project, "cryptus-blue", &[1]));
    assert_eq!(rollback["drain"], names(&project, "cryptus-green", &[1]));
    let shrink = plan(&project, &["scale", "cryptus-green", "1"]);
    assert_eq!(shrink["action"], "nothing", "{shrink}");
    assert_eq!(world(&project), before, "a dry run changed the stack");
}

/// `deploy --dry-run --build`: the release is made during the run, the
/// image is named as the build would tag it, and nothing is built.
fn built_nothing(project: &TestProject) {
    let context = std::path::Path::new(support::REPO).join("app");
    let context = context.to_string_lossy().into_owned();
    let args = ["deploy", "--build", &context, "--version", "7.1.3"];
    let build = plan(project, &args);
    assert!(build["release"].is_null(), "{build}");
    assert_eq!(build["build"]["copy_to"], serde_json::json!([]), "{build}");
    let image = build["build"]["image"].as_str().unwrap_or_default();
    assert!(image.ends_with(":7.1.3"), "{build}");
    let text = stdout(&project.run(&[&args[..], &["--dry-run"]].concat()));
    assert!(text.contains("a build made during the run"), "{text}");
    assert!(text.contains(&format!("build: {image}\n")), "{text}");
    let tag = image.to_owned();
    let built =
        project.on_engine(move |docker| async move { docker.inspect_image(&tag).await.is_ok() });
    assert!(!built, "{image} was built by a dry run");
}
