//! docs/ci.md's jobs, run as written: each GitHub Actions `run:` and each
//! GitLab CI `script:` line, verbatim and in order, in a shell as the runner
//! starts it, against a test stack on the real engine.
//!
//! The harness plays the CI provider's part and no more: a fresh workspace
//! holding the project's files, the job's variables with the commit's image
//! and version (what `${{ github.sha }}` and `$CI_COMMIT_SHA` give), and the
//! runner's rules for which step runs (`if: failure()`, `if: always()`,
//! `after_script`). What the jobs do is all in the recipes.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use support::{BIN, REPO, TestProject, app_image, copy_dir, stderr, stdout};

/// The YAML block of docs/ci.md whose first line is `# NAME`.
fn recipe(name: &str) -> serde_yaml::Value {
    let doc = std::fs::read_to_string(Path::new(REPO).join("docs/ci.md")).unwrap();
    let marker = format!("```yaml\n# {name}\n");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/ci.md has no block for {name}"))
        + "```yaml\n".len();
    let end = start + doc[start..].find("\n```").unwrap();
    serde_yaml::from_str(&doc[start..end]).unwrap()
}

fn text(value: &serde_yaml::Value) -> String {
    value.as_str().unwrap().to_owned()
}

/// Where a job runs: a fresh checkout of the project's files, with nothing
/// left by an earlier job, and the stack's settings (images, ports) in
/// `compose/.env`, as the host keeps them.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(project: &TestProject) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["compose", "nginx", "monitoring"] {
            copy_dir(&project.path().join(sub), &dir.path().join(sub));
        }
        let settings: String = project
            .env
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect();
        std::fs::write(dir.path().join("compose/.env"), settings).unwrap();
        Workspace { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The job's environment: the recipe's variables, with the values the CI
/// provider fills in (the project, the commit's image and version), and
/// cryptus on the PATH.
fn job_env(
    project: &TestProject,
    declared: &serde_yaml::Value,
    version: &str,
) -> BTreeMap<String, String> {
    let mut names: Vec<String> = declared.as_mapping().unwrap().keys().map(text).collect();
    names.sort();
    // A variable the harness does not fill would be ignored silently.
    assert_eq!(names, ["CRYPTUS_PROJECT", "IMAGE", "VERSION"]);
    let mut env = BTreeMap::new();
    env.insert("CRYPTUS_PROJECT".into(), project.name.clone());
    env.insert("IMAGE".into(), app_image());
    env.insert("VERSION".into(), version.into());
    let bin_dir = Path::new(BIN)
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let path = std::env::var("PATH").unwrap_or_default();
    env.insert("PATH".into(), format!("{bin_dir}:{path}"));
    env
}

/// Runs `script` as the runners do: bash, stopping at the first failing
/// command (`-e`, `-o pipefail`), in the workspace.
fn shell(workspace: &Workspace, env: &BTreeMap<String, String>, script: &str) -> Output {
    let mut bash = Command::new("bash");
    bash.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(workspace.path());
    for name in support::CRYPTUS_VARIABLES {
        bash.env_remove(name);
    }
    bash.envs(env);
    let output = support::run(bash);
    eprintln!(
        "--- $ {script}\n--- exit {:?}\n{}{}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    output
}

/// What a job run left: whether it passed, the steps that ran, and its
/// report (the step summary, or the `after_script`'s output).
struct JobRun {
    passed: bool,
    ran: Vec<String>,
    report: String,
}

/// Runs the GitHub Actions job: each step's `run:` in its own shell, in
/// order; a step without `if:` runs while all before it passed, `if:
/// failure()` once one failed, `if: always()` always. `before` is called
/// with each step's name before it runs.
fn github(project: &TestProject, version: &str, mut before: impl FnMut(&str)) -> JobRun {
    let workflow = recipe(".github/workflows/deploy.yml");
    let job = &workflow["jobs"]["deploy"];
    let mut env = job_env(project, &job["env"], version);
    let workspace = Workspace::new(project);
    let summary = workspace.path().join("summary.md");
    env.insert(
        "GITHUB_STEP_SUMMARY".into(),
        summary.to_string_lossy().into_owned(),
    );
    let mut failed = false;
    let mut ran = Vec::new();
    for step in job["steps"].as_sequence().unwrap() {
        if let Some(action) = step.get("uses") {
            // The workspace is the checkout.
            assert_eq!(text(action), "actions/checkout@v4");
            continue;
        }
        let name = text(&step["name"]);
        let runs = match step.get("if").map(text).as_deref() {
            None | Some("success()") => !failed,
            Some("failure()") => failed,
            Some("always()") => true,
            Some(other) => panic!("the harness does not evaluate if: {other}"),
        };
        if !runs {
            continue;
        }
        before(&name);
        let output = shell(&workspace, &env, &text(&step["run"]));
        failed |= !output.status.success();
        ran.push(name);
    }
    JobRun {
        passed: !failed,
        ran,
        report: std::fs::read_to_string(&summary).unwrap_or_default(),
    }
}

/// Runs the GitLab CI job: the `script:` lines in one shell, in order,
/// stopping at the first that fails; then the `after_script:` lines in
/// another, whatever happened, with CI_JOB_STATUS set. Its output is the
/// report.
fn gitlab(project: &TestProject, version: &str) -> JobRun {
    let pipeline = recipe(".gitlab-ci.yml");
    let job = &pipeline["deploy"];
    let mut env = job_env(project, &job["variables"], version);
    let workspace = Workspace::new(project);
    let lines =
        |key: &str| -> Vec<String> { job[key].as_sequence().unwrap().iter().map(text).collect() };
    let script = shell(&workspace, &env, &lines("script").join("\n"));
    let passed = script.status.success();
    env.insert(
        "CI_JOB_STATUS".into(),
        if passed { "success" } else { "failed" }.into(),
    );
    let after = shell(&workspace, &env, &lines("after_script").join("\n"));
    JobRun {
        passed,
        ran: vec!["script".into(), "after_script".into()],
        report: stdout(&after),
    }
}

fn pair(color: &str, version: &str) -> (String, String) {
    (color.to_owned(), version.to_owned())
}

/// Freezes a color's container: the new version hanging right after its
/// deploy, running but answering nothing.
fn freeze_color(project: &TestProject, color: &str) {
    let name = format!("{}-cryptus-{color}-1", project.name);
    project.on_engine(move |docker| async move {
        docker.pause_container(&name).await.unwrap();
    });
}

#[test]
fn the_github_actions_job_deploys_a_good_version_and_undoes_failing_ones() {
    let project = TestProject::new("cigithub");
    project.ok(&["start"]);

    let run = github(&project, "2.0.0", |_| {});
    assert!(run.passed, "the job failed: {:?}", run.ran);
    assert_eq!(
        run.ran,
        ["Deploy the commit's image", "Gate on health", "Report"]
    );
    assert!(
        run.report.starts_with("deployed 2.0.0 on green in ") && run.report.ends_with("s\n"),
        "{}",
        run.report
    );
    assert_eq!(project.serving(), pair("green", "2.0.0"));

    // A version that deploys, then hangs before the gate: the gate fails
    // and the job rolls back to the version before it.
    let run = github(&project, "3.0.0", |step| {
        if step == "Gate on health" {
            freeze_color(&project, "blue");
        }
    });
    assert!(!run.passed, "a version that died passed the job");
    assert_eq!(
        run.ran,
        [
            "Deploy the commit's image",
            "Gate on health",
            "Report",
            "Roll back a deploy that failed the gate"
        ]
    );
    let lines: Vec<&str> = run.report.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.report);
    assert!(
        lines[0].starts_with("deployed 3.0.0 on blue in "),
        "{}",
        run.report
    );
    assert_eq!(lines[1], "rolled back: the health gate failed");
    assert_eq!(project.serving(), pair("green", "2.0.0"));

    // A version that crashes while it gets ready: the deploy fails and
    // cryptus removes it; the job must not roll back on top, which would
    // bring back the version before the old one.
    project.set_service_env("blue", "APP_STARTUP_DELAY_MS", "5000");
    project.set_service_env("blue", "APP_CRASH_AFTER_S", "1");
    let run = github(&project, "4.0.0", |_| {});
    assert!(!run.passed, "a failing version passed the job");
    assert_eq!(
        run.ran,
        [
            "Deploy the commit's image",
            "Report",
            "Roll back a deploy that failed the gate"
        ]
    );
    assert!(
        run.report.starts_with("deploy failed: ") && run.report.contains("cryptus-blue-1"),
        "{}",
        run.report
    );
    assert_eq!(project.serving(), pair("green", "2.0.0"));
}

#[test]
fn the_gitlab_ci_job_deploys_a_good_version_and_a_failing_one_is_rolled_back() {
    let project = TestProject::new("cigitlab");
    project.ok(&["start"]);

    let run = gitlab(&project, "2.0.0");
    assert!(run.passed, "the job failed");
    assert!(
        run.report.starts_with("deployed 2.0.0 on green in ") && run.report.ends_with("s\n"),
        "{}",
        run.report
    );
    assert_eq!(project.serving(), pair("green", "2.0.0"));

    // A version that fails after the switch, during the watch: cryptus
    // switches back by itself; the job fails and says so.
    project.set_service_env("blue", "APP_CRASH_AFTER_S", "2");
    let run = gitlab(&project, "3.0.0");
    assert!(!run.passed, "a failing version passed the job");
    assert!(
        run.report.starts_with("deploy rolled-back: "),
        "{}",
        run.report
    );
    assert_eq!(project.serving(), pair("green", "2.0.0"));
}
