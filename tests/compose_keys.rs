//! A real user's compose file: env_file, secrets and configs, logging and
//! the runtime keys reach the containers on the real engine as Compose
//! applies them, a secret's value shows nowhere, and a color using them
//! deploys under load with no failed request.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use support::load::Mix;
use support::{TestProject, assert_code, assert_nowhere_in, stderr, stdout};

const PASSWORD: &str = "pw-7f3a9c2e-never-shown";
const TOKEN: &str = "tok-41d8e0b6-never-shown";

/// A service using nearly every key, beside the stack.
const PROBE: &str = r#"
  probe:
    image: ${NGINX_IMAGE:-nginx:1.28-alpine}
    command: ["sleep", "infinity"]
    user: "33:33"
    networks: [cryptus]
    env_file:
      - probe.env
      - {path: absent.env, required: false}
    environment:
      OVERRIDDEN: by-environment
    secrets:
      - db_password
      - {source: tls_key, target: tls.key}
    configs:
      - {source: app_config, target: /etc/app.conf}
    logging: {driver: json-file, options: {max-size: 1m, max-file: "2"}}
    init: true
    extra_hosts: ["db.internal=10.9.8.7", "v6.internal=[::1]"]
    cap_add: [NET_ADMIN]
    working_dir: /tmp
    hostname: probe
    domainname: example.internal
    dns: [10.9.8.1]
    dns_search: example.internal
    expose: ["7000-7001/udp"]
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}
    sysctls: {net.core.somaxconn: 1024}
    shm_size: 32m
    group_add: [audio]
    tty: true
    stdin_open: true
    devices: ["/dev/null:/dev/nothing:r"]
    mem_limit: 64m
    memswap_limit: 128m
    mem_reservation: 32m
    cpu_shares: 256
    pids_limit: 100
    pull_policy: never
    healthcheck: {test: [CMD, "true"], interval: 1s, start_interval: 1s}
    deploy:
      placement: {constraints: [node.role==manager]}
"#;

const PROBE_OBJECTS: &str = r#"
secrets:
  db_password: {environment: PROBE_PASSWORD}
  tls_key: {file: ./tls.key}
configs:
  app_config: {content: "greeting=hello"}
"#;

/// Adds `services` before the top-level networks and `objects` at the end.
fn add_to_compose(project: &TestProject, services: &str, objects: &str) {
    project.edit_compose(|text| {
        let text = text.replacen("\nnetworks:\n", &format!("{services}\nnetworks:\n"), 1);
        format!("{text}{objects}")
    });
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn every_key_reaches_the_container_as_compose_applies_it() {
    let mut project = TestProject::new("keys");
    project.set_env("PROBE_PASSWORD", PASSWORD);
    let compose_dir = project.path().join("compose");
    std::fs::write(
        compose_dir.join("probe.env"),
        "FROM_ENV_FILE=yes\nOVERRIDDEN=by-env-file\nQUOTED=\"a b\"\n",
    )
    .unwrap();
    std::fs::write(compose_dir.join("tls.key"), "key-material").unwrap();
    add_to_compose(&project, PROBE, PROBE_OBJECTS);

    let output = project.ok(&["start"]);
    let said = stderr(&output);
    // What does not apply on one engine is said, once.
    assert_eq!(
        said.matches("start_interval does not apply").count(),
        1,
        "{said}"
    );
    assert_eq!(said.matches("belong to Swarm").count(), 1, "{said}");

    let probe = format!("{}-probe-1", project.name);
    let container = project.inspect(&probe);
    let config = container.config.unwrap();
    let env = config.env.unwrap();
    for wanted in [
        "FROM_ENV_FILE=yes",
        "OVERRIDDEN=by-environment",
        "QUOTED=a b",
    ] {
        assert!(env.contains(&wanted.to_owned()), "{wanted}: {env:?}");
    }
    assert_eq!(config.hostname.as_deref(), Some("probe"));
    assert_eq!(config.domainname.as_deref(), Some("example.internal"));
    assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!((config.tty, config.open_stdin), (Some(true), Some(true)));
    let exposed = config.exposed_ports.unwrap();
    assert!(exposed.contains(&"7000/udp".to_owned()) && exposed.contains(&"7001/udp".to_owned()));
    let host = container.host_config.unwrap();
    let log = host.log_config.unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let log_options = log.config.unwrap();
    assert_eq!(
        (
            log_options["max-size"].as_str(),
            log_options["max-file"].as_str()
        ),
        ("1m", "2")
    );
    assert_eq!(host.init, Some(true));
    let hosts = host.extra_hosts.unwrap();
    assert!(
        hosts.contains(&"db.internal:10.9.8.7".to_owned()),
        "{hosts:?}"
    );
    assert!(hosts.contains(&"v6.internal:::1".to_owned()), "{hosts:?}");
    assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
    assert_eq!(host.dns, Some(vec!["10.9.8.1".to_owned()]));
    assert_eq!(host.dns_search, Some(vec!["example.internal".to_owned()]));
    let mut ulimits: Vec<(String, i64, i64)> = host
        .ulimits
        .unwrap()
        .into_iter()
        .map(|u| (u.name.unwrap(), u.soft.unwrap(), u.hard.unwrap()))
        .collect();
    ulimits.sort();
    assert_eq!(
        ulimits,
        [("nofile".into(), 1024, 2048), ("nproc".into(), 512, 512)]
    );
    assert_eq!(host.sysctls.unwrap()["net.core.somaxconn"], "1024");
    assert_eq!(host.shm_size, Some(32 << 20));
    assert_eq!(host.group_add, Some(vec!["audio".to_owned()]));
    let device = &host.devices.unwrap()[0];
    assert_eq!(device.path_in_container.as_deref(), Some("/dev/nothing"));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.memory_swap, Some(128 << 20));
    assert_eq!(host.memory_reservation, Some(32 << 20));
    assert_eq!(host.cpu_shares, Some(256));
    assert_eq!(host.pids_limit, Some(100));

    // Inside, as the service's user (www-data, 33).
    assert_eq!(project.exec("probe", &["id", "-u"]), "33");
    assert!(
        project
            .exec("probe", &["cat", "/etc/hosts"])
            .contains("db.internal")
    );
    assert_eq!(
        project.exec("probe", &["cat", "/run/secrets/db_password"]),
        PASSWORD
    );
    assert_eq!(
        project.exec("probe", &["cat", "/run/secrets/tls.key"]),
        "key-material"
    );
    assert_eq!(
        project.exec("probe", &["cat", "/etc/app.conf"]),
        "greeting=hello"
    );
    assert_eq!(
        project.exec(
            "probe",
            &["stat", "-c", "%a %u", "/run/secrets/db_password"]
        ),
        "600 33"
    );
    let write = project.exec(
        "probe",
        &[
            "sh",
            "-c",
            "echo x > /run/secrets/db_password 2>&1; echo rc=$?",
        ],
    );
    assert!(
        write.contains("Read-only file system") && !write.contains("rc=0"),
        "{write}"
    );

    // On the host: a private directory, the file given to the user.
    let dir = compose_dir.join(".cryptus").join(&project.name);
    let secret = dir.join("probe/secrets/db_password");
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(std::fs::metadata(&secret).unwrap().uid(), 33);
    assert_eq!(mode(&compose_dir.join(".cryptus")), 0o700);
    assert_eq!(mode(&dir.join("probe/secrets")), 0o700);

    // A second start changes nothing and says so.
    let again = project.ok(&["start", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["changed"], false, "{report}");

    // The value shows in no output, no log and no backup.
    let backups = project.path().join("backups");
    let backup = project.run(&["backup", "--out", &backups.to_string_lossy(), "--json"]);
    assert_code(&backup, 0);
    let mut shown = vec![said, stdout(&again), stderr(&again)];
    shown.push(stdout(&backup) + &stderr(&backup));
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["logs", "--json"],
        &["health", "--json"],
        &["config"],
        &["config", "--json"],
    ] {
        let output = project.run(args);
        shown.push(stdout(&output) + &stderr(&output));
    }
    for text in shown {
        assert!(!text.contains(PASSWORD), "{text}");
    }
    assert_nowhere_in(&backups, PASSWORD);
}

#[test]
fn bad_keys_are_refused_naming_the_file_and_line_and_change_nothing() {
    let project = TestProject::new("keys-bad");
    add_to_compose(
        &project,
        "\n  probe:\n    image: x\n    networks: [cryptus]\n    env_file: [gone.env]\n",
        "",
    );
    let output = project.run(&["start"]);
    assert_code(&output, 2);
    let said = stderr(&output);
    assert!(
        said.contains("gone.env") && said.contains("services.probe.env_file"),
        "{said}"
    );
    assert!(
        said.contains("line ") && said.contains("required: false"),
        "{said}"
    );
    assert!(project.containers().is_empty());

    let project = TestProject::new("keys-unset");
    add_to_compose(
        &project,
        "\n  probe:\n    image: x\n    networks: [cryptus]\n    secrets: [db]\n",
        "secrets:\n  db: {environment: PROBE_UNSET_PASSWORD}\n",
    );
    let output = project.run(&["start"]);
    assert_code(&output, 2);
    let said = stderr(&output);
    assert!(
        said.contains("PROBE_UNSET_PASSWORD is not set") && said.contains("line "),
        "{said}"
    );
    assert!(project.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_color_with_a_secret_and_an_env_file_deploys_under_load_with_no_failed_request() {
    let mut project = TestProject::new("keys-load");
    project.set_env("CRYPTUS_RATE_SITE", "100000r/s");
    project.set_env("CRYPTUS_RATE_API", "100000r/s");
    project.set_env("APP_TOKEN", TOKEN);
    std::fs::write(
        project.path().join("compose/app.env"),
        "APP_GREETING=hello\n",
    )
    .unwrap();
    let dependency = "    depends_on:\n      redis:\n        condition: service_healthy\n";
    project.edit_compose(|text| {
        let text = text.replace(
            dependency,
            &format!("{dependency}    env_file: app.env\n    secrets: [app_token]\n"),
        );
        format!("{text}secrets:\n  app_token: {{environment: APP_TOKEN}}\n")
    });
    project.ok(&["start"]);
    let mix = Mix {
        keep_alive: 2,
        new_connection: 1,
        slow: 1,
        slow_ms: 1000,
        session: 1,
        pause: Duration::from_millis(5),
        timeout: Duration::from_secs(10),
        ..Mix::default()
    };
    let load = mix.start(project.lb_addr());
    load.flowing(20, Duration::from_secs(10)).await;
    let output = project
        .run_async(&[
            "deploy",
            "--image",
            &support::app_image(),
            "--version",
            "2.0.0",
            "--watch",
            "1s",
        ])
        .await;
    assert_code(&output, 0);
    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(report.cut_short, None);
    assert_eq!(
        report.failed, 0,
        "failed requests: {:?} {:?}",
        report.failures, report.first_failures
    );
    assert!(report.requests > 100, "too little load: {report:?}");
    assert!(report.by_color.contains_key("green"), "{report:?}");
    assert!(!(stdout(&output) + &stderr(&output)).contains(TOKEN));

    let green = project.inspect(&format!("{}-cryptus-green-1", project.name));
    let env = green.config.unwrap().env.unwrap();
    assert!(env.contains(&"APP_GREETING=hello".to_owned()), "{env:?}");
    let mount = green
        .mounts
        .unwrap()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some("/run/secrets/app_token"))
        .expect("the secret is mounted");
    assert_eq!(mount.rw, Some(false));
    let source = mount.source.unwrap();
    assert!(source.contains("/.cryptus/"), "{source}");
    assert_eq!(std::fs::read_to_string(&source).unwrap(), TOKEN);
    // The app's image runs as root: the secret is root's, mode 0600.
    assert_eq!(mode(Path::new(&source)), 0o600);
}

#[test]
fn a_recreated_dependency_restarts_what_asks_for_it_but_no_serving_color() {
    let project = TestProject::new("keys-restart");
    let dependency = "      redis:\n        condition: service_healthy\n";
    add_to_compose(
        &project,
        concat!(
            "\n  follower:\n    image: ${NGINX_IMAGE:-nginx:1.28-alpine}\n",
            "    command: [\"sleep\", \"infinity\"]\n    networks: [cryptus]\n",
            "    depends_on:\n      redis: {condition: service_healthy, restart: true}\n",
        ),
        "",
    );
    project.edit_compose(|text| {
        text.replace(dependency, &format!("{dependency}        restart: true\n"))
    });
    project.ok(&["start"]);
    let follower = format!("{}-follower-1", project.name);
    let blue = format!("{}-cryptus-blue-1", project.name);
    let (follower_started, blue_started) =
        (project.started_at(&follower), project.started_at(&blue));

    // A change to redis recreates it at the next start.
    project
        .edit_compose(|text| text.replacen("stop_grace_period: 10s", "stop_grace_period: 11s", 1));
    let output = project.ok(&["start"]);
    let said = stderr(&output);
    assert!(
        said.contains("restarting, as redis was recreated"),
        "{said}"
    );
    assert_eq!(
        said.matches("does not restart a serving color").count(),
        1,
        "{said}"
    );
    assert_ne!(project.started_at(&follower), follower_started);
    assert_eq!(project.started_at(&blue), blue_started);
}

/// Removes images when the test ends, pass or fail.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let tag = self.0.clone();
        support::on_engine(move |docker| async move {
            let options = None::<bollard::query_parameters::RemoveImageOptions>;
            let _ = docker.remove_image(&tag, options, None).await;
        });
    }
}

#[test]
fn a_color_with_pull_policy_build_is_built_by_a_deploy_that_names_no_image() {
    let context = Path::new(support::REPO).join("app");
    assert!(
        context.join("dist/cryptus-app").exists(),
        "app/dist/cryptus-app is missing: run scripts/make-images.sh"
    );
    let version = format!("6.0.{}", std::process::id());
    // Declared before the project, so it drops after the project's containers.
    let _image = ImageGuard(format!("cryptus:{version}"));
    let mut project = TestProject::new("keys-build");
    project.set_env("CRYPTUS_BUILD_CONTEXT", &context.to_string_lossy());
    project.edit_compose(|text| {
        let green = "INSTANCE_COLOR: green\n      REDIS_URL: ${REDIS_URL:-redis://redis:6379}\n";
        text.replacen(green, &format!("{green}    pull_policy: build\n"), 1)
    });
    project.ok(&["start"]);
    let output = project.run(&["deploy", "--version", &version, "--watch", "0s", "--json"]);
    assert_code(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["to"]["image"], format!("cryptus:{version}").as_str());
    assert_eq!(project.serving(), ("green".to_owned(), version));
}
