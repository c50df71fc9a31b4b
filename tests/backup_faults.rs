//! Regression tests for the backup and restore faults of issue 12, on the
//! real engine: signals during backup and restore, the restore allowlist,
//! secret modes, and redis dying during a backup.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use support::wait::{eventually, exited};
use support::{TestProject, assert_code, stderr, stdout};

fn entries(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn one_backup(project: &TestProject, out: &Path) -> PathBuf {
    project.ok(&["backup", "--out", &out.to_string_lossy()]);
    let name = entries(out)
        .into_iter()
        .rfind(|n| !n.starts_with('.'))
        .expect("a backup");
    out.join(name)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sigterm(child: &Child) {
    signal(child, "TERM");
}

/// Sends SIGTERM or SIGINT (what systemd and Ctrl-C send).
fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for a spawned cryptus, at most two minutes.
fn finish(mut child: Child) -> Output {
    eventually(
        "cryptus ended",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || exited(&mut child),
    );
    child.wait_with_output().unwrap()
}

fn spawn(project: &TestProject, args: &[&str]) -> Child {
    project
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The project's containers whose names end with one of `suffixes`.
fn containers_named(project: &TestProject, suffixes: &[&str]) -> Vec<String> {
    project
        .containers()
        .into_keys()
        .filter(|name| suffixes.iter().any(|s| name.ends_with(s)))
        .collect()
}

/// Waits up to 30 s for a container of the project named `*{suffix}`,
/// looking every `every`: a few milliseconds, to catch one that runs only
/// for a moment.
fn until_container(project: &TestProject, what: &str, suffix: &str, every: Duration) {
    eventually(what, Duration::from_secs(30), every, || {
        if containers_named(project, &[suffix]).is_empty() {
            Err(format!("no container named *{suffix}"))
        } else {
            Ok(())
        }
    });
}

/// What must hold after any backup or restore, however it ended: no scratch
/// redis, no lock, no temporary backup, no "internal error", and exactly one
/// running container on redis's volume: the real redis.
#[track_caller]
fn assert_clean(project: &TestProject, out: &Path, output: &Output) {
    assert!(
        !stderr(output).contains("internal error"),
        "{}",
        stderr(output)
    );
    let left = containers_named(project, &["-redis-restore", "-redis-check", "-deploy-lock"]);
    assert!(left.is_empty(), "left behind: {left:?}\n{}", stderr(output));
    let temporary: Vec<String> = entries(out)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(temporary.is_empty(), "left behind: {temporary:?}");
    let on_volume = running_on_redis_volume(project);
    assert_eq!(
        on_volume,
        vec![format!("{}-redis-1", project.name)],
        "{}",
        stderr(output)
    );
}

/// The running containers that mount the project's redis-data volume.
fn running_on_redis_volume(project: &TestProject) -> Vec<String> {
    let volume = project
        .volumes()
        .into_iter()
        .find(|v| v.ends_with("redis-data"))
        .expect("a redis-data volume");
    let mut names = project.on_engine(move |docker| async move {
        let filters = HashMap::from([("volume", vec![volume.as_str()])]);
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.names?.first().cloned())
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect::<Vec<_>>()
    });
    names.sort();
    names
}

/// Runs a command in one of the project's containers and returns stdout.
fn exec_in(project: &TestProject, container: &str, command: &[&str]) -> String {
    let container = container.to_owned();
    let command: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
    project.on_engine(move |docker| async move {
        use futures_util::StreamExt;
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(command),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = docker.create_exec(&container, options).await.unwrap();
        let mut text = String::new();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&exec.id, None).await.unwrap()
        {
            while let Some(Ok(chunk)) = output.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        text
    })
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// A .tar.gz of `files`, each 0644, paths written as given.
fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *content).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A copy of the backup `good` named `name` whose `file` is replaced by
/// `bytes`, with a manifest whose size and checksum match it.
fn crafted(project: &TestProject, good: &Path, name: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let dir = project.path().join("crafted").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(good).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.join(file), bytes).unwrap();
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for entry in manifest["files"].as_array_mut().unwrap() {
        if entry["name"] == file {
            entry["size"] = bytes.len().into();
            entry["sha256"] = sha256(bytes).into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    dir
}

#[test]
fn restore_refuses_state_entries_outside_the_allowlist_and_changes_nothing() {
    let project = TestProject::new("allowlist");
    project.ok(&["start"]);
    project.write_keys();
    let out = project.path().join("backups");
    let good = one_backup(&project, &out);
    project.redis_cli(&["SET", "after-backup", "1"]);
    let redis = format!("{}-redis-1", project.name);
    let lb = format!("{}-nginx-1", project.name);
    let started = project.started_at(&redis);
    let http_before = exec_in(&project, &lb, &["cat", "/etc/nginx/cryptus/http.conf"]);
    let conf_path = project.path().join("nginx/nginx.conf");
    let conf_before = std::fs::read(&conf_path).unwrap();
    let history = br#"[]"#.as_slice();
    let hostile: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "upstream",
            "state.tar.gz",
            archive(&[("upstream.conf", b"upstream app { server 10.0.0.1; }\n")]),
            "upstream.conf",
        ),
        (
            "http",
            "state.tar.gz",
            archive(&[(
                "http.conf",
                b"limit_req_zone $binary_remote_addr zone=api:10m rate=1r/m;\n",
            )]),
            "http.conf",
        ),
        (
            "nested",
            "state.tar.gz",
            archive(&[("history.json", history), ("sub/dir/x", b"x")]),
            "sub/dir/x",
        ),
        (
            "twice",
            "state.tar.gz",
            archive(&[("history.json", history), ("./history.json", b"[1]")]),
            "twice",
        ),
        (
            "history-garbage",
            "state.tar.gz",
            archive(&[("history.json", b"rm -rf /")]),
            "history.json",
        ),
        (
            "compose-nested",
            "compose.tar.gz",
            archive(&[("sub/x.yml", b"x")]),
            "sub/x.yml",
        ),
        (
            "compose-other",
            "compose.tar.gz",
            archive(&[("notes.txt", b"x")]),
            "notes.txt",
        ),
        (
            "redis-extra",
            "redis.tar.gz",
            archive(&[("dump.rdb", b"REDIS0011"), ("appendonly.aof", b"x")]),
            "appendonly.aof",
        ),
        (
            "nginx-extra",
            "nginx.tar.gz",
            archive(&[("nginx.conf", &conf_before), ("app.conf", b"x")]),
            "app.conf",
        ),
    ];
    let untouched = |what: &str| {
        assert_eq!(
            project.started_at(&redis),
            started,
            "{what}: redis restarted"
        );
        assert_eq!(project.redis_cli(&["GET", "after-backup"]), "1", "{what}");
        assert_eq!(
            exec_in(&project, &lb, &["cat", "/etc/nginx/cryptus/http.conf"]),
            http_before,
            "{what}: nginx's http.conf changed"
        );
        assert_eq!(std::fs::read(&conf_path).unwrap(), conf_before, "{what}");
        assert!(containers_named(&project, &["-redis-restore", "-deploy-lock"]).is_empty());
    };
    for (name, file, bytes, named) in &hostile {
        let dir = crafted(&project, &good, name, file, bytes);
        let dir = dir.to_string_lossy();
        let output = project.run(&["restore", &dir, "--yes"]);
        assert_code(&output, 1);
        assert!(
            stderr(&output).contains(named),
            "{name}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("internal error"));
        let verify = project.run(&["backup", "--verify", &dir]);
        assert_code(&verify, 1);
        untouched(name);
    }

    // An nginx.conf nginx refuses is refused before anything changes.
    let broken = archive(&[(
        "nginx.conf",
        b"events {}\nhttp { nonsense_directive on; }\n",
    )]);
    let dir = crafted(&project, &good, "broken-conf", "nginx.tar.gz", &broken);
    let output = project.run(&["restore", &dir.to_string_lossy(), "--yes"]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains("nginx -t"), "{}", stderr(&output));
    untouched("broken nginx.conf");

    // The good backup still restores (its nginx.conf through nginx -t and a
    // reload), and the upstream it holds is not restored: nginx keeps
    // serving.
    std::fs::write(
        &conf_path,
        [conf_before.as_slice(), b"\n# edited\n"].concat(),
    )
    .unwrap();
    let output = project.ok(&["restore", &good.to_string_lossy(), "--yes"]);
    assert!(
        stderr(&output).contains("restored nginx/nginx.conf"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&conf_path).unwrap(), conf_before);
    assert_eq!(project.wrong_keys(), 0);
    assert_eq!(project.redis_cli(&["GET", "after-backup"]), "");
    support::get_json(&project.url("/api/health"), None);
}

#[test]
fn backup_and_restore_keep_secret_modes() {
    let project = TestProject::new("modes");
    let env = project.path().join("compose/.env");
    std::fs::write(&env, "SECRET_TOKEN=one\n").unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    let compose = project
        .path()
        .join("compose/docker-compose.zero-downtime.yml");
    std::fs::set_permissions(&compose, std::fs::Permissions::from_mode(0o640)).unwrap();
    project.ok(&["start"]);
    let out = project.path().join("backups");
    let backup = one_backup(&project, &out);
    assert_eq!(mode(&out), 0o700, "the backups root cryptus made");
    assert_eq!(mode(&backup), 0o700);
    for name in entries(&backup) {
        assert_eq!(mode(&backup.join(&name)), 0o600, "{name}");
    }

    // Changed since: the restore rewrites them and each keeps its mode.
    std::fs::write(&env, "SECRET_TOKEN=two\n").unwrap();
    std::fs::write(&compose, std::fs::read_to_string(&compose).unwrap() + "\n").unwrap();
    project.ok(&["restore", &backup.to_string_lossy(), "--yes"]);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "SECRET_TOKEN=one\n");
    assert_eq!(mode(&env), 0o600, ".env keeps 0600");
    assert_eq!(mode(&compose), 0o640, "the compose file keeps its mode");

    // Gone since: it comes back with the mode it was backed up with.
    std::fs::remove_file(&env).unwrap();
    std::fs::remove_file(&compose).unwrap();
    project.ok(&["restore", &backup.to_string_lossy(), "--yes"]);
    assert_eq!(mode(&env), 0o600);
    assert_eq!(mode(&compose), 0o640);
    let leftovers: Vec<String> = entries(&project.path().join("compose"))
        .into_iter()
        .filter(|n| n.contains("cryptus-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sigterm_during_backup_leaves_nothing_and_the_next_run_sweeps() {
    let project = TestProject::new("termbackup");
    project.ok(&["start"]);
    project.write_keys();
    let out = project.path().join("backups");
    let out_str = out.to_string_lossy().into_owned();

    // SIGTERM at several moments: an interrupted backup (exit 1) leaves
    // nothing; one that finished first (exit 0) is complete.
    let mut interrupted = 0;
    for (delay, name) in [
        (150, "TERM"),
        (400, "INT"),
        (700, "TERM"),
        (1000, "INT"),
        (1500, "TERM"),
    ] {
        let before = entries(&out);
        let child = spawn(&project, &["backup", "--out", &out_str, "-v"]);
        std::thread::sleep(Duration::from_millis(delay));
        signal(&child, name);
        let output = finish(child);
        assert_clean(&project, &out, &output);
        let after = entries(&out);
        match output.status.code() {
            Some(1) => {
                assert!(
                    stderr(&output).contains("interrupted"),
                    "{}",
                    stderr(&output)
                );
                assert_eq!(after, before, "after {delay} ms");
                interrupted += 1;
            }
            Some(0) => {
                let new = after.iter().find(|n| !before.contains(n)).unwrap();
                project.ok(&["backup", "--verify", &out.join(new).to_string_lossy()]);
            }
            code => panic!("after {delay} ms: exit {code:?}\n{}", stderr(&output)),
        }
    }
    assert!(interrupted > 0, "no signal landed during a backup");

    // Keyed on progress: the signal comes once the lock is taken.
    let mut child = spawn(&project, &["backup", "--out", &out_str, "-v"]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("taking the deploy lock") {
            break;
        }
    }
    sigterm(&child);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = finish(child);
    assert_eq!(output.status.code(), Some(1), "{seen}{}", rest.join("\n"));
    assert_clean(&project, &out, &output);

    // SIGKILL while the scratch redis runs leaves what only a later run can
    // clean: the next backup removes it and says so.
    let child = spawn(&project, &["backup", "--out", &out_str]);
    until_container(
        &project,
        "a scratch redis appeared",
        "-redis-check",
        Duration::from_millis(10),
    );
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(entries(&out).iter().any(|n| n.starts_with(".tmp-")));
    assert!(!containers_named(&project, &["-redis-check"]).is_empty());
    let output = project.ok(&["backup", "--out", &out_str, "--keep", "2"]);
    let said = stderr(&output);
    assert!(
        said.contains("warning: removed") && said.contains(".tmp-"),
        "{said}"
    );
    assert!(said.contains("-redis-check"), "{said}");
    assert_clean(&project, &out, &output);
}

#[test]
fn sigterm_during_restore_leaves_redis_running_with_old_or_restored_data() {
    let project = TestProject::new("termrestore");
    project.ok(&["start"]);
    project.write_keys();
    let out = project.path().join("backups");
    let backup = one_backup(&project, &out);
    let backup = backup.to_string_lossy().into_owned();
    let keys: u64 = project.redis_cli(&["DBSIZE"]).parse().unwrap();
    let old = |project: &TestProject| {
        project.redis_cli(&["FLUSHALL"]);
        project.redis_cli(&["SET", "old-marker", "1"]);
    };
    // Which data redis has: true for the restored, false for the old one;
    // anything else fails.
    let restored = |project: &TestProject, output: &Output| -> bool {
        let size: u64 = project.redis_cli(&["DBSIZE"]).parse().unwrap();
        if project.redis_cli(&["GET", "old-marker"]) == "1" {
            assert_eq!(size, 1, "old data, whole\n{}", stderr(output));
            false
        } else {
            assert_eq!(size, keys, "restored data, whole\n{}", stderr(output));
            assert_eq!(project.wrong_keys(), 0);
            true
        }
    };
    let mut outcomes = Vec::new();
    for (delay, name) in [
        (200, "TERM"),
        (600, "TERM"),
        (1200, "INT"),
        (1800, "TERM"),
        (2500, "INT"),
        (3500, "TERM"),
    ] {
        old(&project);
        let child = spawn(&project, &["restore", &backup, "--yes"]);
        std::thread::sleep(Duration::from_millis(delay));
        signal(&child, name);
        // A second signal changes nothing: the cleanup runs to its end.
        std::thread::sleep(Duration::from_millis(50));
        signal(&child, name);
        let output = finish(child);
        assert_clean(&project, &out, &output);
        let was_restored = restored(&project, &output);
        match output.status.code() {
            Some(0) => assert!(was_restored, "exit 0 means restored"),
            Some(1) => {
                assert!(!was_restored, "exit 1 means the old data");
                assert!(
                    stderr(&output).contains("interrupted"),
                    "{}",
                    stderr(&output)
                );
            }
            code => panic!("after {delay} ms: exit {code:?}\n{}", stderr(&output)),
        }
        outcomes.push((delay, output.status.code()));
    }
    eprintln!("restore outcomes (delay ms, exit): {outcomes:?}");
    assert!(
        outcomes.iter().any(|(_, code)| *code == Some(1)),
        "no signal landed during a restore: {outcomes:?}"
    );

    // Keyed on progress: once the lock is taken, redis is next.
    old(&project);
    let mut child = spawn(&project, &["restore", &backup, "--yes"]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("taking the deploy lock") {
            break;
        }
    }
    sigterm(&child);
    let _rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = finish(child);
    assert_clean(&project, &out, &output);
    restored(&project, &output);

    // The old data is really back: it survives a restart of redis.
    old(&project);
    let child = spawn(&project, &["restore", &backup, "--yes"]);
    until_container(
        &project,
        "a scratch redis appeared",
        "-redis-restore",
        Duration::from_millis(10),
    );
    sigterm(&child);
    let output = finish(child);
    assert_code(&output, 1);
    assert_clean(&project, &out, &output);
    assert!(!restored(&project, &output));
    project.ok(&["restart"]);
    assert_eq!(project.redis_cli(&["GET", "old-marker"]), "1");

    // A SIGKILL leaves the scratch on the volume and redis stopped; the
    // next restore removes the scratch before redis starts, says so, and
    // restores.
    let mut child = spawn(&project, &["restore", &backup, "--yes"]);
    until_container(
        &project,
        "a scratch redis appeared",
        "-redis-restore",
        Duration::from_millis(10),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!containers_named(&project, &["-redis-restore"]).is_empty());
    let output = project.run(&["restore", &backup, "--yes"]);
    let said = stderr(&output);
    assert!(said.contains("-redis-restore"), "{said}");
    assert!(!said.contains("internal error"), "{said}");
    assert_code(&output, 1);
    assert!(said.contains("cryptus start"), "{said}");
    project.ok(&["start"]);
    assert_clean(&project, &out, &output);
    restored(&project, &output);
}

#[test]
fn redis_killed_during_backup_exits_1() {
    let project = TestProject::new("killredis");
    project.ok(&["start"]);
    project.write_keys();
    let out = project.path().join("backups");
    let out_str = out.to_string_lossy().into_owned();
    let child = spawn(&project, &["backup", "--out", &out_str, "--json"]);
    until_container(
        &project,
        "the backup took the lock",
        "-deploy-lock",
        Duration::from_millis(5),
    );
    let redis = format!("{}-redis-1", project.name);
    project.on_engine(move |docker| async move {
        docker.kill_container(&redis, None).await.unwrap();
    });
    let output = finish(child);
    assert_code(&output, 1);
    let said = stderr(&output);
    eprintln!("{said}");
    assert!(!said.contains("internal error"), "{said}");
    assert!(said.contains("error:") && said.contains("redis"), "{said}");
    assert!(said.contains("hint:"), "{said}");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("one JSON document: {}", stdout(&output)));
    assert_eq!(document["exit_code"], 1);
    assert_eq!(document["ok"], false);
    assert!(document["hint"].is_string());
    assert!(
        containers_named(&project, &["-redis-check", "-deploy-lock"]).is_empty(),
        "{said}"
    );
    assert!(entries(&out).iter().all(|n| !n.starts_with(".tmp-")));
}

#[test]
fn restore_without_aof_commits_the_dump_and_a_killed_scratch_leaves_the_old_data() {
    let project = TestProject::new("noaof");
    project.edit_compose(|text| text.replace("--appendonly yes", "--appendonly no"));
    project.ok(&["start"]);
    assert_eq!(
        project.redis_cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
    project.write_keys();
    let out = project.path().join("backups");
    let backup = one_backup(&project, &out);
    let backup = backup.to_string_lossy().into_owned();
    let keys: u64 = project.redis_cli(&["DBSIZE"]).parse().unwrap();

    // The scratch redis dies (an engine failure mid-restore): exit 1, a
    // hint, and redis back with its previous data.
    project.redis_cli(&["FLUSHALL"]);
    project.redis_cli(&["SET", "old-marker", "1"]);
    project.redis_cli(&["SAVE"]);
    let child = spawn(&project, &["restore", &backup, "--yes"]);
    let scratch = format!("{}-redis-restore", project.name);
    eventually(
        "a scratch redis ran",
        Duration::from_secs(30),
        Duration::from_millis(5),
        || {
            let scratch: Vec<(String, bool)> = project
                .containers()
                .into_iter()
                .filter(|(name, _)| name.ends_with("-redis-restore"))
                .map(|(name, (_, running))| (name, running))
                .collect();
            if scratch.iter().any(|(_, running)| *running) {
                Ok(())
            } else {
                Err(format!("*-redis-restore (name, running): {scratch:?}"))
            }
        },
    );
    project.on_engine(move |docker| async move {
        let _ = docker.kill_container(&scratch, None).await;
    });
    let output = finish(child);
    let said = stderr(&output);
    eprintln!("{said}");
    assert_clean(&project, &out, &output);
    if output.status.code() == Some(1) {
        assert!(said.contains("hint:"), "{said}");
        assert_eq!(project.redis_cli(&["GET", "old-marker"]), "1", "{said}");
        assert_eq!(project.redis_cli(&["DBSIZE"]), "1");
    } else {
        // The scratch had committed before it was killed.
        assert_code(&output, 0);
        assert_eq!(project.wrong_keys(), 0);
    }

    // Without AOF the restored dump is redis's dump file: it survives a
    // restart.
    let output = project.ok(&["restore", &backup, "--yes"]);
    assert_clean(&project, &out, &output);
    assert_eq!(project.redis_cli(&["DBSIZE"]), keys.to_string());
    project.ok(&["restart"]);
    assert_eq!(project.wrong_keys(), 0);
    assert_eq!(project.redis_cli(&["GET", "old-marker"]), "");
}

/// What a refused restore must leave exactly as it was: redis (not
/// restarted, same keys), every file of compose/ and nginx/ with its mode
/// (and no temporary file), and nginx's state files.
#[derive(Debug, PartialEq)]
struct Live {
    redis_started: String,
    redis_keys: String,
    marker: String,
    files: std::collections::BTreeMap<String, (Vec<u8>, u32)>,
    nginx_state: Option<String>,
}

fn files_under(
    root: &Path,
    dir: &Path,
    found: &mut std::collections::BTreeMap<String, (Vec<u8>, u32)>,
) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.insert(format!("{name}/"), (Vec::new(), mode(&path)));
            files_under(root, &path, found);
        } else {
            found.insert(name, (std::fs::read(&path).unwrap(), mode(&path)));
        }
    }
}

fn live(project: &TestProject, nginx: bool) -> Live {
    let redis = format!("{}-redis-1", project.name);
    let mut files = std::collections::BTreeMap::new();
    for sub in ["compose", "nginx"] {
        files_under(project.path(), &project.path().join(sub), &mut files);
    }
    let nginx_state = nginx.then(|| {
        exec_in(
            project,
            &format!("{}-nginx-1", project.name),
            &[
                "sh",
                "-c",
                "for f in /etc/nginx/cryptus/*; do echo \"== $f\"; cat \"$f\"; done",
            ],
        )
    });
    Live {
        redis_started: project.started_at(&redis),
        redis_keys: project.redis_cli(&["DBSIZE"]),
        marker: project.redis_cli(&["GET", "after-backup"]),
        files,
        nginx_state,
    }
}

/// A started project with keys, one good backup, and a key written after
/// it (which a restore would remove).
fn backed_up(hint: &str) -> (TestProject, PathBuf) {
    let project = TestProject::new(hint);
    project.ok(&["start"]);
    project.write_keys();
    let out = project.path().join("backups");
    let good = one_backup(&project, &out);
    project.redis_cli(&["SET", "after-backup", "1"]);
    (project, good)
}

/// The files of one archive of a backup, as (path, content).
fn archive_files(backup: &Path, name: &str) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let bytes = std::fs::read(backup.join(name)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (path, content)
        })
        .collect()
}

/// Restores `dir` (and verifies it when `verify`), expecting exit 1 and
/// nothing live changed.
#[track_caller]
fn refused_and_unchanged(project: &TestProject, dir: &Path, verify: bool, said: &str) -> Output {
    let before = live(project, true);
    let dir = dir.to_string_lossy();
    if verify {
        let output = project.run(&["backup", "--verify", &dir]);
        assert_code(&output, 1);
        assert!(stderr(&output).contains(said), "{}", stderr(&output));
    }
    let output = project.run(&["restore", &dir, "--yes", "--json"]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains(said), "{}", stderr(&output));
    assert!(stderr(&output).contains("hint:"), "{}", stderr(&output));
    assert!(
        !stderr(&output).contains("internal error"),
        "{}",
        stderr(&output)
    );
    assert_eq!(live(project, true), before, "{}", stderr(&output));
    output
}

#[test]
fn restore_tests_nginx_conf_where_its_relative_includes_resolve_live() {
    let (project, good) = backed_up("relinclude");
    let conf = std::fs::read(project.path().join("nginx/nginx.conf")).unwrap();
    // Under /tmp the glob matches nothing and nginx -t passed; live it
    // includes app.conf at the top level, which nginx refuses.
    let hostile = [b"include app.con*;\n".as_slice(), &conf].concat();
    let dir = crafted(
        &project,
        &good,
        "relinclude",
        "nginx.tar.gz",
        &archive(&[("nginx.conf", &hostile)]),
    );
    // A compose file the restore would also write is staged, then removed.
    let compose = project
        .path()
        .join("compose/docker-compose.zero-downtime.yml");
    std::fs::write(
        &compose,
        std::fs::read_to_string(&compose).unwrap() + "\n# edited\n",
    )
    .unwrap();
    refused_and_unchanged(&project, &dir, false, "nginx -t");
    let scratch = exec_in(
        &project,
        &format!("{}-nginx-1", project.name),
        &["ls", "/tmp"],
    );
    assert!(!scratch.contains("cryptus-restore"), "{scratch}");

    // A relative include that resolves in the live directory passes.
    let text = String::from_utf8(conf.clone()).unwrap();
    assert!(
        text.contains("include /etc/cryptus/nginx/app.conf;"),
        "{text}"
    );
    let relative = text.replace("include /etc/cryptus/nginx/app.conf;", "include app.conf;");
    let dir = crafted(
        &project,
        &good,
        "relative-ok",
        "nginx.tar.gz",
        &archive(&[("nginx.conf", relative.as_bytes())]),
    );
    project.ok(&["restore", &dir.to_string_lossy(), "--yes"]);
    assert_eq!(
        std::fs::read_to_string(project.path().join("nginx/nginx.conf")).unwrap(),
        relative
    );
    assert_eq!(project.wrong_keys(), 0);
    support::get_json(&project.url("/api/health"), None);
}

#[test]
fn restore_refuses_a_compose_target_that_is_a_directory_before_redis_changes() {
    let (project, good) = backed_up("dirtarget");
    let compose = project.path().join("compose");
    std::fs::create_dir(compose.join("extra.yml")).unwrap();
    // Other files the restore would write: they must not be written either.
    let env = compose.join(".env");
    std::fs::write(&env, "CHANGED=1\n").unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut files = archive_files(&good, "compose.tar.gz");
    files.retain(|(name, _)| name != ".env");
    files.push(("extra.yml".to_owned(), b"# extra\n".to_vec()));
    files.push((".env".to_owned(), b"RESTORED=1\n".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let dir = crafted(
        &project,
        &good,
        "dirtarget",
        "compose.tar.gz",
        &archive(&refs),
    );
    refused_and_unchanged(&project, &dir, false, "is a directory");
    let left: Vec<String> = entries(&compose)
        .into_iter()
        .filter(|n| n.contains("cryptus-restore"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn restore_without_the_nginx_container_is_refused_before_anything_changes() {
    let (project, good) = backed_up("nonginx");
    let nginx = format!("{}-nginx-1", project.name);
    let state_before = live(&project, true).nginx_state;
    project.on_engine(move |docker| async move {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        docker
            .remove_container(&nginx, Some(options))
            .await
            .unwrap();
    });
    let before = live(&project, false);
    let output = project.run(&["restore", &good.to_string_lossy(), "--yes", "--json"]);
    assert_code(&output, 1);
    let said = stderr(&output);
    assert!(said.contains("no nginx container"), "{said}");
    assert!(said.contains("cryptus start"), "{said}");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["ok"], false);
    assert!(document["hint"].is_string(), "{document}");
    assert_eq!(live(&project, false), before, "{said}");
    // nginx's state volume kept its files: start brings them back as they were.
    project.ok(&["start"]);
    assert_eq!(live(&project, true).nginx_state, state_before);
    assert_eq!(project.redis_cli(&["GET", "after-backup"]), "1");
}

#[test]
fn verify_and_restore_refuse_an_archive_that_unpacks_past_its_limit() {
    let (project, good) = backed_up("bomb");
    // A header claiming 5 GiB: refused from the header, before reading.
    let mut header = tar::Header::new_gnu();
    header.set_path("dump.rdb").unwrap();
    header.set_size(5 << 30);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(b"REDIS0011");
    tar.extend_from_slice(&[0u8; 1 << 20]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let bomb = gz.finish().unwrap();
    let dir = crafted(&project, &good, "bomb", "redis.tar.gz", &bomb);
    refused_and_unchanged(&project, &dir, true, "limit of 4 GiB");
    // A config archive holding 17 MiB, really there.
    let big = vec![b'#'; 17 << 20];
    let dir = crafted(
        &project,
        &good,
        "big-compose",
        "compose.tar.gz",
        &archive(&[("big.yml", &big)]),
    );
    refused_and_unchanged(&project, &dir, true, "limit of 16 MiB");
}

#[test]
fn verify_and_restore_refuse_directory_entries_extra_gzip_members_and_trailing_garbage() {
    let (project, good) = backed_up("lenient");
    let dump = archive_files(&good, "redis.tar.gz")
        .into_iter()
        .find(|(name, _)| name == "dump.rdb")
        .unwrap()
        .1;
    let with_dir = |file: &str, dir_name: &str| {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Directory);
        builder
            .append_data(&mut header, dir_name, std::io::empty())
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(dump.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, file, dump.as_slice())
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    };
    let dir = crafted(
        &project,
        &good,
        "dump-dir",
        "redis.tar.gz",
        &with_dir("dump.rdb", "dump.rdb/"),
    );
    refused_and_unchanged(&project, &dir, true, "is a directory");
    let mut env_dir = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o700);
    header.set_entry_type(tar::EntryType::Directory);
    env_dir
        .append_data(&mut header, ".env/", std::io::empty())
        .unwrap();
    let env_dir = env_dir.into_inner().unwrap().finish().unwrap();
    let dir = crafted(&project, &good, "env-dir", "compose.tar.gz", &env_dir);
    refused_and_unchanged(&project, &dir, true, "is a directory");

    let redis = std::fs::read(good.join("redis.tar.gz")).unwrap();
    let evil = archive(&[("evil", b"evil")]);
    let dir = crafted(
        &project,
        &good,
        "two-members",
        "redis.tar.gz",
        &[redis.as_slice(), evil.as_slice()].concat(),
    );
    refused_and_unchanged(&project, &dir, true, "after the end of its gzip stream");
    let dir = crafted(
        &project,
        &good,
        "garbage",
        "redis.tar.gz",
        &[redis.as_slice(), b"trailing garbage"].concat(),
    );
    refused_and_unchanged(&project, &dir, true, "after the end of its gzip stream");
}
