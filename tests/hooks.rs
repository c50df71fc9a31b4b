//! Deploy hooks on the real engine (issue 17): a pre-deploy hook runs once
//! per deploy, in a one-off container of the new image with its variables,
//! before the new color answers; a failing one leaves traffic and
//! containers as they were; two deploys waiting on the lock run their hooks
//! one after the other. The reference app's image has no shell, so each
//! test builds one with busybox and a hook script on top of it.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use support::{TestProject, app_image, assert_code, stderr};

/// What the hooks run: `mark` records its variables (and whether the new
/// color answered) in Redis's `hooks` list; `fail` fails after some
/// output; `slow V` takes two minutes when deploying V; `serial` records
/// its start, waits, and records its end.
const SCRIPT: &str = r#"#!/bin/sh
set -e
push() {
  printf '*3\r\n$5\r\nRPUSH\r\n$5\r\nhooks\r\n$%s\r\n%s\r\n*1\r\n$4\r\nQUIT\r\n' "${#1}" "$1" \
    | nc redis 6379 >/dev/null
}
answers() {
  status=$( (printf 'GET /api/health HTTP/1.0\r\n\r\n'; sleep 1) \
    | nc -w 2 "cryptus-$CRYPTUS_TO_COLOR" 3000 | head -n 1) || true
  echo "the new color: ${status:-no answer}" >&2
  if echo "$status" | grep -q ' 200 '; then
    echo answered
  else
    echo silent
  fi
}
case "$1" in
  mark)
    echo "migrating $CRYPTUS_FROM_VERSION -> $CRYPTUS_TO_VERSION"
    push "$2 $CRYPTUS_OPERATION $CRYPTUS_FROM_COLOR $CRYPTUS_FROM_VERSION $CRYPTUS_TO_COLOR $CRYPTUS_TO_VERSION $(answers)"
    ;;
  fail)
    echo "migration 41 applied"
    echo "migration 42 failed: column exists" >&2
    exit 3
    ;;
  slow)
    echo "checking before $CRYPTUS_TO_VERSION"
    if [ "$CRYPTUS_TO_VERSION" = "$2" ]; then sleep 120; fi
    ;;
  serial)
    push "start $CRYPTUS_TO_VERSION"
    sleep 2
    push "end $CRYPTUS_TO_VERSION"
    ;;
esac
"#;

/// The app image with busybox and the hook script, removed when dropped
/// (declared before the project, so after the project's containers).
struct HookImage(String);

static IMAGES: AtomicU32 = AtomicU32::new(0);

impl HookImage {
    fn build() -> HookImage {
        let name = format!(
            "ct-hooks-app-{}-{}:1",
            std::process::id(),
            IMAGES.fetch_add(1, Ordering::Relaxed)
        );
        let context = tempfile::tempdir().expect("making a build context");
        std::fs::copy("/bin/busybox", context.path().join("busybox"))
            .expect("copying /bin/busybox (Debian's busybox-static)");
        std::fs::write(context.path().join("hooks.sh"), SCRIPT).expect("writing the script");
        let dockerfile = format!(
            "FROM {}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY hooks.sh /hooks.sh\nVOLUME /scratch\n",
            app_image()
        );
        std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("writing Dockerfile");
        let built = Command::new("docker")
            .args(["build", "-q", "-t", &name])
            .arg(context.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("running docker build");
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        HookImage(name)
    }
}

impl Drop for HookImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// A started project whose override file declares `hooks` (YAML lines
/// under `hooks:`).
fn project(hint: &str, hooks: &str) -> TestProject {
    let project = TestProject::new(hint);
    std::fs::write(
        project.path().join("compose/docker-compose.override.yml"),
        format!("x-cryptus:\n  hooks:\n{hooks}"),
    )
    .expect("writing the override file");
    project.ok(&["start"]);
    project
}

/// `deploy --image IMAGE --version VERSION --watch 0s`, then `extra`.
fn deploy_args<'a>(image: &'a HookImage, version: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "deploy",
        "--image",
        &image.0,
        "--version",
        version,
        "--watch",
        "0s",
    ];
    args.extend_from_slice(extra);
    args
}

fn deploy(
    project: &TestProject,
    image: &HookImage,
    version: &str,
    extra: &[&str],
) -> std::process::Output {
    project.run(&deploy_args(image, version, extra))
}

/// A deploy that waits for the lock.
async fn waiting(project: &TestProject, image: &HookImage, version: &str) -> std::process::Output {
    let args = deploy_args(image, version, &["--lock-wait", "300s"]);
    project.run_async(&args).await
}

fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON document")
}

fn recorded(project: &TestProject) -> Vec<String> {
    let list = project.redis_cli(&["LRANGE", "hooks", "0", "-1"]);
    list.lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

fn hook_containers(project: &TestProject) -> Vec<String> {
    let names = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .args(["--filter", "label=cryptus.hook"])
        .arg("--filter")
        .arg(format!("label=com.docker.compose.project={}", project.name))
        .output()
        .expect("running docker ps");
    String::from_utf8_lossy(&names.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn steps(report: &serde_json::Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_pre_deploy_hook_runs_once_per_deploy_before_the_new_color_answers() {
    let image = HookImage::build();
    let project = project(
        "hooks-run",
        "    pre-deploy: [/bin/sh, /hooks.sh, mark, pre]\n    post-deploy: [/bin/sh, /hooks.sh, mark, post]\n    pre-rollback: [/bin/sh, /hooks.sh, mark, pre]\n",
    );
    let (_, first) = project.serving();
    let dangling = support::dangling_volumes();

    // The plan names the hooks; a dry run runs none.
    let output = deploy(&project, &image, "v2", &["--dry-run"]);
    assert_code(&output, 0);
    let plan = support::stdout(&output);
    assert!(
        plan.contains("first, the pre-deploy hook: /bin/sh /hooks.sh mark pre")
            && plan.contains("after the switch, the post-deploy hook: /bin/sh /hooks.sh mark post"),
        "{plan}"
    );
    assert!(recorded(&project).is_empty());

    let output = deploy(&project, &image, "v2", &["--json"]);
    assert_code(&output, 0);
    let report = json(&output);
    let err = stderr(&output);
    assert!(
        err.contains(&format!("[pre-deploy] migrating {first} -> v2")),
        "{err}"
    );
    assert!(err.contains("[post-deploy] migrating"), "{err}");
    let hooks = report["hooks"].as_array().expect("the report's hooks");
    let names: Vec<&str> = hooks.iter().map(|h| h["hook"].as_str().unwrap()).collect();
    assert_eq!(names, ["pre-deploy", "post-deploy"]);
    assert!(
        hooks
            .iter()
            .all(|h| h["ok"] == true && h["exit_code"] == 0 && h["seconds"].is_f64())
    );
    // Before the new color starts; the post hook once it serves.
    let order = steps(&report);
    let at = |name: &str| order.iter().position(|s| s == name).expect(name);
    assert!(
        at("pre-deploy") < at("start") && at("verify") < at("post-deploy"),
        "{order:?}"
    );
    assert_eq!(
        recorded(&project),
        [
            format!("pre deploy blue {first} green v2 silent"),
            format!("post deploy blue {first} green v2 answered"),
        ],
        "{err}"
    );

    // Once per deploy: the next one adds one of each.
    let output = deploy(&project, &image, "v3", &[]);
    assert_code(&output, 0);
    assert_eq!(
        recorded(&project)[2..],
        [
            "pre deploy green v2 blue v3 silent".to_owned(),
            "post deploy green v2 blue v3 answered".to_owned(),
        ]
    );

    // --skip-hooks runs none, and says so.
    let output = deploy(&project, &image, "v4", &["--skip-hooks"]);
    assert_code(&output, 0);
    assert!(
        stderr(&output).contains("skipping the pre-deploy and post-deploy hooks (--skip-hooks)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(recorded(&project).len(), 4);

    // A rollback runs its own hooks (here only pre-rollback), with the
    // release it goes back to.
    project.ok(&["rollback"]);
    assert_eq!(
        recorded(&project)[4..],
        ["pre rollback green v4 blue v3 silent"]
    );

    // The history keeps each hook's outcome.
    let history = project.ok(&["history", "--json"]);
    let history = json(&history);
    let entries = history["entries"].as_array().expect("entries");
    let deploys: Vec<usize> = entries
        .iter()
        .filter(|e| e["operation"] == "deploy")
        .map(|e| e["hooks"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(deploys, [2, 2, 0]);
    let rollback = entries.last().expect("the rollback's entry");
    assert_eq!(rollback["hooks"][0]["hook"], "pre-rollback");

    // No hook container stays, nor its anonymous volume (/scratch).
    assert!(hook_containers(&project).is_empty());
    support::assert_no_dangling_since(&dangling);
}

#[test]
fn a_failing_pre_deploy_hook_leaves_traffic_and_containers_as_they_were() {
    let image = HookImage::build();
    let project = project("hooks-fail", "    pre-deploy: [/bin/sh, /hooks.sh, fail]\n");
    let before = project.containers();
    let serving = project.serving();
    // A hook container a killed run left (created, never started here).
    let left = format!("{}-cryptus-green-post-deploy", project.name);
    let made = Command::new("docker")
        .args([
            "create",
            "--name",
            &left,
            "--label",
            "cryptus.hook=post-deploy",
        ])
        .args(["--label", "com.docker.compose.oneoff=True", "--label"])
        .arg(format!("com.docker.compose.project={}", project.name))
        .arg(&image.0)
        .output()
        .expect("running docker create");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let output = deploy(&project, &image, "v2", &["--json"]);
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains(&format!(
            "removed {left}, a hook container an interrupted run left"
        )),
        "{}",
        stderr(&output)
    );
    let report = json(&output);
    assert_eq!(report["ok"], false);
    assert_eq!(report["outcome"], "failed");
    let hook = &report["hooks"][0];
    assert_eq!(hook["hook"], "pre-deploy");
    assert_eq!(hook["exit_code"], 3);
    assert!(
        hook["last_lines"].as_array().is_some_and(|l| l
            .iter()
            .any(|line| line == "migration 42 failed: column exists")),
        "{hook}"
    );
    let err = stderr(&output);
    assert!(
        err.contains("[pre-deploy] migration 42 failed: column exists"),
        "{err}"
    );
    assert!(
        err.contains("--- last 2 lines of the pre-deploy hook ---"),
        "{err}"
    );
    assert!(
        err.contains("the pre-deploy hook (/bin/sh /hooks.sh fail) exited with code 3"),
        "{err}"
    );
    assert!(!steps(&report).contains(&"start".to_owned()), "{report}");

    // Traffic and containers as they were, and no hook container left.
    assert_eq!(project.serving(), serving);
    assert_eq!(project.containers(), before);
    assert!(hook_containers(&project).is_empty());
    let history = json(&project.ok(&["history", "--json"]));
    let last = &history["entries"][history["kept"].as_u64().unwrap() as usize - 1];
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["hooks"][0]["exit_code"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_deploys_waiting_on_the_lock_run_their_hooks_one_after_the_other() {
    let image = HookImage::build();
    let project = project(
        "hooks-lock",
        "    pre-deploy: [/bin/sh, /hooks.sh, serial]\n",
    );
    let (a, b) = tokio::join!(
        waiting(&project, &image, "a1"),
        waiting(&project, &image, "b1")
    );
    assert_code(&a, 0);
    assert_code(&b, 0);
    let list = recorded(&project);
    assert_eq!(list.len(), 4, "{list:?}");
    // Each hook ends before the other starts.
    let first = list[0].strip_prefix("start ").expect("a start first");
    let second = if first == "a1" { "b1" } else { "a1" };
    assert_eq!(
        list,
        [
            format!("start {first}"),
            format!("end {first}"),
            format!("start {second}"),
            format!("end {second}"),
        ]
    );
}

#[test]
fn a_hook_past_its_deadline_or_interrupted_changes_nothing_and_a_failed_post_hook_is_a_warning() {
    let image = HookImage::build();
    let project = project(
        "hooks-stop",
        "    pre-deploy: [/bin/sh, /hooks.sh, slow, v2]\n    post-deploy: [/bin/sh, /hooks.sh, fail]\n",
    );
    let before = project.containers();
    let serving = project.serving();
    let unchanged = |project: &TestProject| {
        assert_eq!(project.serving(), serving);
        assert_eq!(project.containers(), before);
        assert!(hook_containers(project).is_empty());
    };

    // Past --hook-timeout: stopped, removed, and the deploy failed.
    let began = std::time::Instant::now();
    let output = deploy(&project, &image, "v2", &["--hook-timeout", "1s", "--json"]);
    assert_code(&output, 1);
    assert!(began.elapsed() < std::time::Duration::from_secs(60));
    let report = json(&output);
    assert!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not finish within 1.00s")),
        "{report}"
    );
    assert_eq!(report["hooks"][0]["exit_code"], serde_json::Value::Null);
    unchanged(&project);

    // Ctrl-C while the hook runs: its container goes, the deploy unwinds.
    let mut command = project.command(&deploy_args(&image, "v2", &[]));
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("spawning cryptus");
    support::wait::eventually(
        "the pre-deploy hook's container runs",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(50),
        || {
            let running = hook_containers(&project);
            if running.is_empty() {
                Err("no hook container".to_owned())
            } else {
                Ok(())
            }
        },
    );
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let output = support::wait::output_within(
        "the interrupted deploy ended",
        child,
        std::time::Duration::from_secs(90),
    );
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("interrupted"),
        "{}",
        stderr(&output)
    );
    unchanged(&project);

    // A failed post-deploy hook is reported and recorded; traffic stays.
    let output = deploy(&project, &image, "v3", &["--json"]);
    assert_code(&output, 0);
    let report = json(&output);
    assert_eq!(report["hooks"][1]["hook"], "post-deploy");
    assert_eq!(report["hooks"][1]["ok"], false);
    assert_eq!(report["hooks"][1]["exit_code"], 3);
    assert!(
        report["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w.as_str().is_some_and(|w| w
                .contains("post-deploy hook (/bin/sh /hooks.sh fail) exited with code 3")
                && w.contains("the deploy stands")))),
        "{report}"
    );
    assert_eq!(project.serving(), ("green".to_owned(), "v3".to_owned()));
    let history = json(&project.ok(&["history", "--json"]));
    let entries = history["entries"].as_array().expect("entries");
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "ok"]);
    assert_eq!(entries[2]["hooks"][1]["ok"], false);
    assert!(hook_containers(&project).is_empty());
}
