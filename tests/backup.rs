//! `backup` and `restore` on the real engine with real redis.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::wait::{eventually, exit_within, poll};
use support::{
    RUN_DEADLINE, TestProject, app_image, assert_code, assert_nowhere_in, get, get_json, stderr,
    stdout,
};

fn backups(out: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn one_backup(project: &TestProject, out: &Path) -> PathBuf {
    project.ok(&["backup", "--out", &out.to_string_lossy()]);
    backups(out).pop().expect("a backup")
}

#[test]
fn backup_flushall_restore_brings_every_key_and_session_back() {
    let dangling = support::dangling_volumes();
    let project = TestProject::new("restore");
    project.ok(&["start"]);
    project.write_keys();
    let (_, headers, _) = get(&project.url("/api/session"), None).unwrap();
    let cookie = headers["set-cookie"].split(';').next().unwrap().to_owned();
    get_json(&project.url("/api/session"), Some(&cookie));
    assert_eq!(
        get_json(&project.url("/api/session"), Some(&cookie))["visits"],
        3
    );
    let keys: u64 = project.redis_cli(&["DBSIZE"]).parse().unwrap();
    assert!(keys > 10_000);

    let out = project.path().join("backups");
    let output = project.ok(&["backup", "--out", &out.to_string_lossy(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["manifest"]["redis_keys"], keys);
    assert_eq!(report["manifest"]["project"], project.name.as_str());
    let dir = PathBuf::from(report["dir"].as_str().unwrap());
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        chrono::NaiveDateTime::parse_from_str(&name, "%Y%m%d_%H%M%S").is_ok(),
        "the seed's layout: {name}"
    );
    for file in [
        "manifest.json",
        "redis.tar.gz",
        "nginx.tar.gz",
        "compose.tar.gz",
        "state.tar.gz",
    ] {
        assert!(dir.join(file).is_file(), "{file} is missing");
    }
    let verified = project.ok(&["backup", "--verify", &dir.to_string_lossy()]);
    assert!(stdout(&verified).contains(": ok"), "{}", stdout(&verified));

    project.redis_cli(&["FLUSHALL"]);
    assert_eq!(project.redis_cli(&["DBSIZE"]), "0");
    let output = project.ok(&["restore", &dir.to_string_lossy(), "--yes"]);
    assert!(
        stderr(&output).contains(&format!("restored {keys} redis keys")),
        "{}",
        stderr(&output)
    );
    assert_eq!(project.wrong_keys(), 0, "every key and value is back");
    assert_eq!(project.redis_cli(&["DBSIZE"]), keys.to_string());
    assert_eq!(
        get_json(&project.url("/api/session"), Some(&cookie))["visits"],
        4,
        "the session is back"
    );
    // AOF is on again, and the restored data survives a restart of redis.
    assert_eq!(
        project.redis_cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nyes"
    );
    project.ok(&["restart"]);
    assert_eq!(project.wrong_keys(), 0, "the restored data is in the AOF");
    assert!(
        project
            .containers()
            .keys()
            .all(|n| !n.contains("-redis-restore") && !n.contains("-redis-check"))
    );
    // The scratch containers went with their anonymous volumes (the redis
    // image declares VOLUME /data).
    support::assert_no_dangling_since(&dangling);
}

#[test]
fn a_damaged_backup_is_refused_and_the_stack_is_untouched() {
    let project = TestProject::new("damaged");
    project.ok(&["start"]);
    project.write_keys();
    let out = project.path().join("backups");
    let good = one_backup(&project, &out);
    project.redis_cli(&["SET", "after-backup", "1"]);
    let redis = format!("{}-redis-1", project.name);
    let started = project.started_at(&redis);
    let untouched = |project: &TestProject| {
        assert_eq!(
            project.started_at(&redis),
            started,
            "redis was not restarted"
        );
        assert_eq!(
            project.redis_cli(&["GET", "after-backup"]),
            "1",
            "redis data is unchanged"
        );
    };

    let copy = |name: &str| {
        let dir = project.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&good).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    };

    // A corrupted file.
    let corrupted = copy("corrupted");
    let mut bytes = std::fs::read(corrupted.join("redis.tar.gz")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(corrupted.join("redis.tar.gz"), bytes).unwrap();
    let output = project.run(&["restore", &corrupted.to_string_lossy(), "--yes"]);
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("redis.tar.gz does not match its sha256"),
        "{}",
        stderr(&output)
    );
    assert_code(
        &project.run(&["backup", "--verify", &corrupted.to_string_lossy()]),
        1,
    );
    untouched(&project);

    // A truncated backup directory.
    let truncated = copy("truncated");
    std::fs::remove_file(truncated.join("nginx.tar.gz")).unwrap();
    let output = project.run(&["restore", &truncated.to_string_lossy(), "--yes"]);
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("nginx.tar.gz is missing"),
        "{}",
        stderr(&output)
    );
    untouched(&project);

    // An archive entry that climbs out, with a manifest that matches it.
    let traversal = copy("traversal");
    let evil = traversal_archive();
    std::fs::write(traversal.join("nginx.tar.gz"), &evil).unwrap();
    let manifest_path = traversal.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for file in manifest["files"].as_array_mut().unwrap() {
        if file["name"] == "nginx.tar.gz" {
            file["size"] = evil.len().into();
            file["sha256"] = sha256(&evil).into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let output = project.run(&["restore", &traversal.to_string_lossy(), "--yes"]);
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("climbs out with '..'"),
        "{}",
        stderr(&output)
    );
    untouched(&project);

    // Not a backup at all: a file, an empty directory.
    let file = project.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let output = project.run(&["restore", &file.to_string_lossy(), "--yes"]);
    assert_code(&output, 2);
    assert!(stderr(&output).contains("is a file"), "{}", stderr(&output));
    let empty = project.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let output = project.run(&["restore", &empty.to_string_lossy(), "--yes"]);
    assert_code(&output, 2);
    assert!(stderr(&output).contains("is empty"), "{}", stderr(&output));

    // Not on a terminal, a restore needs --yes.
    let output = project.run(&["restore", &good.to_string_lossy()]);
    assert_code(&output, 2);
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
    untouched(&project);
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// A .tar.gz whose one entry is `../../evil`, written by hand because the
/// tar crate refuses to make one.
fn traversal_archive() -> Vec<u8> {
    let mut header = tar::Header::new_old();
    let path = b"../../evil";
    header.as_old_mut().name[..path.len()].copy_from_slice(path);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    builder.append(&header, &b"evil"[..]).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn keep_3_keeps_exactly_3_and_cron_runs_are_quiet() {
    let project = TestProject::new("keep");
    project.ok(&["start"]);
    let out = project.path().join("backups");
    let out_str = out.to_string_lossy().into_owned();
    let mut made = Vec::new();
    for _ in 0..5 {
        let output = project.ok(&["backup", "--out", &out_str, "--keep", "3"]);
        assert!(
            output.stdout.is_empty() && output.stderr.is_empty(),
            "a successful backup is quiet: {output:?}"
        );
        made.push(backups(&out).pop().unwrap());
    }
    let left = backups(&out);
    assert_eq!(left, made[2..].to_vec(), "the newest 3 are kept");
    // The README's cron line, as cron would run it.
    let line = format!(
        "cd {} && {} -p {} -q backup --keep 3",
        project.path().display(),
        support::BIN,
        project.name
    );
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &line]);
    for (key, value) in &project.env {
        command.env(key, value);
    }
    let output = support::run(command);
    assert_code(&output, 0);
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
    assert_eq!(backups(&out).len(), 3);

    // The systemd unit's command, as systemd would run it: in its working
    // directory, with its arguments (our binary and project standing in).
    let unit = std::fs::read_to_string(
        Path::new(support::REPO).join("contrib/systemd/cryptus-backup.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/cryptus"));
    let mut args = vec!["-p", project.name.as_str()];
    args.extend(words);
    let mut command = support::command(&args, &[]);
    command.current_dir(project.path());
    for (key, value) in &project.env {
        command.env(key, value);
    }
    let output = support::run(command);
    assert_code(&output, 0);
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
    assert_eq!(backups(&out).len(), 4, "--keep 14 keeps the 3 and adds one");

    // The units as systemd reads them: `systemd-analyze verify` loads the
    // service and the timer (with our binary and project dir in place of
    // the installed ones) and finds nothing wrong; the timer's calendar
    // has a next elapse.
    let units = project.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let service = unit
        .replace("/usr/local/bin/cryptus", support::BIN)
        .replace(
            "WorkingDirectory=/srv/cryptus",
            &format!("WorkingDirectory={}", project.path().display()),
        );
    std::fs::write(units.join("cryptus-backup.service"), service).unwrap();
    let timer = std::fs::read_to_string(
        Path::new(support::REPO).join("contrib/systemd/cryptus-backup.timer"),
    )
    .unwrap();
    std::fs::write(units.join("cryptus-backup.timer"), &timer).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "cryptus-backup.service", "cryptus-backup.timer"])
        .current_dir(&units)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed");
    assert_code(&verify, 0);
    assert!(
        verify.stdout.is_empty() && verify.stderr.is_empty(),
        "{}",
        stderr(&verify)
    );
    let calendar = timer
        .lines()
        .find_map(|l| l.strip_prefix("OnCalendar="))
        .unwrap();
    let next = std::process::Command::new("systemd-analyze")
        .args(["calendar", calendar])
        .output()
        .unwrap();
    assert_code(&next, 0);
    assert!(stdout(&next).contains("03:00:00"), "{}", stdout(&next));
}

#[test]
fn a_failing_backup_says_why_in_one_line_and_leaves_nothing() {
    let project = TestProject::new("backupfail");
    project.ok(&["start"]);
    // Not a directory: the write fails.
    let output = project.run(&["backup", "--out", "/etc/hostname/backups"]);
    assert_code(&output, 1);
    assert_eq!(
        stderr(&output)
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{}",
        stderr(&output)
    );

    let redis = format!("{}-redis-1", project.name);
    support::on_engine(move |docker| async move {
        docker.stop_container(&redis, None).await.unwrap();
    });
    let out = project.path().join("backups");
    let output = project.run(&["backup", "--out", &out.to_string_lossy()]);
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("redis is not running"),
        "{}",
        stderr(&output)
    );
    assert!(backups(&out).is_empty(), "a failed backup leaves nothing");
}

#[test]
fn a_backup_started_during_a_deploy_waits_for_the_lock() {
    let project = TestProject::new("backuplock");
    project.ok(&["start"]);
    let mut deploy = project.spawn(&[
        "deploy",
        "--image",
        &app_image(),
        "--version",
        "2.0.0",
        "--watch",
        "3s",
    ]);
    eventually(
        "the deploy holds the lock",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let lock = &project.status()["lock"];
            if lock.is_null() {
                Err(format!("lock {lock}"))
            } else {
                Ok(())
            }
        },
    );
    let out = project.path().join("backups");
    let output = project.ok(&["backup", "--out", &out.to_string_lossy(), "-v"]);
    assert!(
        stderr(&output).contains("waiting for the deploy lock"),
        "{}",
        stderr(&output)
    );
    assert!(
        deploy.try_wait().unwrap().is_some(),
        "the backup ran after the deploy finished"
    );
    assert!(exit_within("the deploy ended", &mut deploy, RUN_DEADLINE).success());
    let dir = backups(&out).pop().unwrap();
    project.ok(&["backup", "--verify", &dir.to_string_lossy()]);
}

/// A cron daemon (busybox's crond, in the foreground) killed when dropped.
struct Crond(std::process::Child);

impl Drop for Crond {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_cron_line_runs_under_a_real_cron_daemon() {
    let project = TestProject::new("cron");
    project.ok(&["start"]);
    // README's line, every minute instead of 03:00, with this project's
    // directory, binary and settings in place of the installed ones.
    let readme = std::fs::read_to_string(Path::new(support::REPO).join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("0 3 * * * "))
        .expect("README gives a cron line");
    let settings: String = project
        .env
        .iter()
        .map(|(key, value)| format!("{key}='{value}' "))
        .collect();
    let dir = project.path().display().to_string();
    let line = line
        .replacen("0 3 * * * ", "* * * * * ", 1)
        .replace("/srv/cryptus", &dir)
        .replace(
            "/usr/local/bin/cryptus",
            &format!("{settings}{} -p {}", support::BIN, project.name),
        );
    let crontabs = project.path().join("crontabs");
    std::fs::create_dir_all(&crontabs).unwrap();
    // What cron would mail: a quiet backup leaves this empty.
    let mail = project.path().join("cron-output");
    std::fs::write(
        crontabs.join("root"),
        format!("{line} >{} 2>&1\n", mail.display()),
    )
    .unwrap();
    let _crond = Crond(
        std::process::Command::new("busybox")
            .args(["crond", "-f", "-l", "0", "-c"])
            .arg(&crontabs)
            .arg("-L")
            .arg(project.path().join("crond.log"))
            .spawn()
            .expect("busybox crond (Debian's busybox-static)"),
    );
    let out = project.path().join("backups");
    let complete = |out: &Path| -> Vec<PathBuf> {
        backups(out)
            .into_iter()
            .filter(|dir| dir.join("manifest.json").is_file())
            .collect()
    };
    let ran = poll(Duration::from_secs(100), Duration::from_millis(200), || {
        let made = complete(&out).len();
        if made == 0 || !mail.exists() {
            Err(format!(
                "{made} complete backups, cron's output file {}",
                if mail.exists() { "written" } else { "absent" }
            ))
        } else {
            Ok(())
        }
    });
    if let Err(timed_out) = ran {
        panic!(
            "cron ran no backup in 100 s (last seen: {}); crond's log: {}",
            timed_out.last,
            std::fs::read_to_string(project.path().join("crond.log")).unwrap_or_default()
        );
    }
    // A backup appears whole, by rename; give the run a moment to end. Not a
    // poll: cron started the run, so there is no process to wait for, and
    // what is checked next (nothing half-made left) must hold once it ends.
    std::thread::sleep(Duration::from_millis(1000));
    let made = backups(&out);
    assert_eq!(made, complete(&out), "only complete backups are left");
    assert_eq!(made.len(), 1, "{made:?}");
    let verified = project.ok(&["backup", "--verify", &made[0].to_string_lossy()]);
    assert!(stdout(&verified).contains(": ok"), "{}", stdout(&verified));
    assert_eq!(
        std::fs::read_to_string(&mail).unwrap(),
        "",
        "a successful cron run says nothing"
    );
}

/// README's systemd units, verbatim, under a real systemd (PID 1 of a
/// container made from this host's systemd by make-images.sh --systemd):
/// drop-ins only make the timer fire every 5 s and name the project, and the
/// service's backup lands in the project directory mounted at the unit's
/// WorkingDirectory.
#[test]
fn the_systemd_timer_fires_the_backup_under_real_systemd() {
    let project = TestProject::new("systemd");
    project.ok(&["start"]);
    let dropins = project.path().join("dropins");
    let service_d = dropins.join("cryptus-backup.service.d");
    let timer_d = dropins.join("cryptus-backup.timer.d");
    std::fs::create_dir_all(&service_d).unwrap();
    std::fs::create_dir_all(&timer_d).unwrap();
    let mut environment = format!(
        "[Service]\nEnvironment=\"CRYPTUS_PROJECT={}\"\n",
        project.name
    );
    for (key, value) in &project.env {
        environment.push_str(&format!("Environment=\"{key}={value}\"\n"));
    }
    std::fs::write(service_d.join("test.conf"), environment).unwrap();
    std::fs::write(
        timer_d.join("test.conf"),
        "[Timer]\nOnCalendar=\nOnCalendar=*:*:0/5\nRandomizedDelaySec=0\nAccuracySec=1s\n",
    )
    .unwrap();
    let units = Path::new(support::REPO).join("contrib/systemd");
    let mut binds = vec![
        "/sys/fs/cgroup:/sys/fs/cgroup:ro".to_owned(),
        "/var/run/docker.sock:/var/run/docker.sock".to_owned(),
        format!("{}:/usr/local/bin/cryptus:ro", support::BIN),
        format!("{}:/srv/cryptus", project.path().display()),
    ];
    for unit in ["cryptus-backup.service", "cryptus-backup.timer"] {
        binds.push(format!(
            "{}:/etc/systemd/system/{unit}:ro",
            units.join(unit).display()
        ));
        binds.push(format!(
            "{}:/etc/systemd/system/{unit}.d:ro",
            dropins.join(format!("{unit}.d")).display()
        ));
    }
    let name = format!("{}-systemd-1", project.name);
    let labels = std::collections::HashMap::from([(
        "com.docker.compose.project".to_owned(),
        project.name.clone(),
    )]);
    let container = name.clone();
    support::on_engine(move |docker| async move {
        let tmpfs = ["/run", "/run/lock", "/tmp"]
            .into_iter()
            .map(|path| (path.to_owned(), String::new()))
            .collect();
        let body = bollard::models::ContainerCreateBody {
            image: Some("cryptus/systemd:offline".to_owned()),
            cmd: Some(vec![
                "/lib/systemd/systemd".to_owned(),
                "--log-target=console".to_owned(),
                "--unit=cryptus-backup.timer".to_owned(),
            ]),
            tty: Some(true),
            labels: Some(labels),
            host_config: Some(bollard::models::HostConfig {
                binds: Some(binds),
                tmpfs: Some(tmpfs),
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
            .name(&container)
            .build();
        docker
            .create_container(Some(options), body)
            .await
            .expect("creating the systemd container (scripts/make-images.sh --systemd)");
        docker
            .start_container(
                &container,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .expect("starting systemd");
    });
    let out = project.path().join("backups");
    let made = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        backups(&out)
            .into_iter()
            .find(|dir| dir.join("manifest.json").is_file())
            .ok_or_else(|| format!("no complete backup in {}", out.display()))
    });
    let made = made.unwrap_or_else(|timed_out| {
        let name = name.clone();
        let log = support::on_engine(move |docker| async move {
            use futures_util::StreamExt;
            let options = bollard::query_parameters::LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build();
            let mut text = String::new();
            let mut logs = docker.logs(&name, Some(options));
            while let Some(Ok(chunk)) = logs.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
            text
        });
        panic!(
            "systemd's timer ran no backup in 60 s ({}); its console:\n{log}",
            timed_out.last
        );
    });
    let verified = project.ok(&["backup", "--verify", &made.to_string_lossy()]);
    assert!(stdout(&verified).contains(": ok"), "{}", stdout(&verified));
}

const WITHHELD_SECRET: &str = "sv-5e1b7c0d-not-in-any-backup";

/// Regression: `backup` copied compose/.env as it was, so a secret whose
/// variable is set there was in the backup in clear text.
#[test]
fn a_secret_set_in_env_is_in_no_backup_and_restore_keeps_it() {
    let project = TestProject::new("withheld");
    let env_path = project.path().join("compose/.env");
    let env =
        format!("# the stack's variables\nPLAIN=kept\nexport BACKUP_TOKEN=\"{WITHHELD_SECRET}\"\n");
    std::fs::write(&env_path, &env).unwrap();
    project.edit_compose(|text| {
        let text = text.replace(
            "    image: ${NGINX_IMAGE:-nginx:1.28-alpine}\n",
            "    image: ${NGINX_IMAGE:-nginx:1.28-alpine}\n    secrets: [backup_token]\n",
        );
        format!("{text}secrets:\n  backup_token: {{environment: BACKUP_TOKEN}}\n")
    });
    project.ok(&["start"]);
    assert_eq!(
        project.exec("nginx", &["cat", "/run/secrets/backup_token"]),
        WITHHELD_SECRET
    );

    let out = project.path().join("backups");
    let dir = one_backup(&project, &out);
    assert_nowhere_in(&dir, WITHHELD_SECRET);
    let verified = project.ok(&["backup", "--verify", &dir.to_string_lossy()]);
    assert!(stdout(&verified).contains(": ok"), "{}", stdout(&verified));

    let output = project.ok(&["restore", &dir.to_string_lossy(), "--yes"]);
    assert!(!stderr(&output).contains("withheld"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), env);
    project.ok(&["stop"]);
    project.ok(&["start"]);
    assert_eq!(
        project.exec("nginx", &["cat", "/run/secrets/backup_token"]),
        WITHHELD_SECRET
    );

    // Without the variable in the current .env, the restore completes,
    // names it (never its value) and leaves it unset.
    std::fs::write(&env_path, "PLAIN=kept\n").unwrap();
    let output = project.ok(&["restore", &dir.to_string_lossy(), "--yes"]);
    let said = stderr(&output);
    assert!(
        said.contains("BACKUP_TOKEN") && said.contains("before `cryptus start`"),
        "{said}"
    );
    assert!(!said.contains(WITHHELD_SECRET), "{said}");
    let restored = std::fs::read_to_string(&env_path).unwrap();
    assert!(!restored.contains("\nBACKUP_TOKEN="), "{restored}");
    assert!(restored.contains("PLAIN=kept\n"), "{restored}");
}
