//! A real user's compose file: the Compose Specification's own examples
//! loaded or refused by name, `cryptus config` and the files and profiles
//! it resolves, and, on the real engine, an override file and a profile
//! that change what `start` and `deploy` run.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cryptus::compose::{Compose, Profiles, Vars, load_with};
use support::{TestProject, assert_code, command, run, stderr, stdout};

fn fixture(path: &str) -> PathBuf {
    Path::new(support::REPO)
        .join("tests/fixtures/compose-spec")
        .join(path)
}

fn load(files: &[&str], profiles: &[&str]) -> anyhow::Result<Compose> {
    let files: Vec<PathBuf> = files.iter().map(|f| fixture(f)).collect();
    let names: Vec<String> = profiles.iter().map(|p| p.to_string()).collect();
    let profiles = Profiles::new(&names).expect("valid profiles");
    load_with(&files, &Vars::default(), &profiles)
}

#[track_caller]
fn loads(files: &[&str], profiles: &[&str]) -> Compose {
    load(files, profiles).unwrap_or_else(|err| panic!("{files:?}: {err:#}"))
}

#[track_caller]
fn refused(files: &[&str], profiles: &[&str], names: &[&str]) {
    let err = match load(files, profiles) {
        Ok(_) => panic!("{files:?} loaded"),
        Err(err) => format!("{err:#}"),
    };
    for name in names {
        assert!(err.contains(name), "{files:?}: {name:?} not in: {err}");
    }
}

fn env(compose: &Compose, service: &str) -> BTreeMap<String, String> {
    compose.services[service].environment.clone()
}

#[test]
fn the_specifications_fragments_and_extensions() {
    let volumes = loads(&["spec/fragments-1.yml"], &[]).volumes;
    assert_eq!(volumes["metrics"].driver.as_deref(), Some("default"));
    let compose = loads(&["spec/fragments-2.yml"], &[]);
    assert_eq!(env(&compose, "first"), env(&compose, "second"));
    // Its service mounts a volume without a target, which no engine runs.
    refused(
        &["spec/fragments-3.yml"],
        &[],
        &["services.backend.volumes[0]", "\"db-data\"", "line 6"],
    );
    let compose = loads(&["spec/fragments-4.yml"], &[]);
    let second = env(&compose, "second");
    assert_eq!(
        (second["FOO"].as_str(), second["ZOT"].as_str()),
        ("BAR", "QUIX")
    );
    assert_eq!(second["YET_ANOTHER"], "VARIABLE");

    assert!(
        loads(&["spec/extension-1.yml"], &[])
            .services
            .contains_key("webapp")
    );
    let compose = loads(&["spec/extension-2.yml"], &[]);
    assert_eq!(
        compose.services["second"].image.as_deref(),
        Some("another-image:latest")
    );
    // Its services join a network it does not declare, which Compose
    // refuses too (its Swarm `placement` is kept, not applied).
    refused(
        &["spec/extension-3.yml"],
        &[],
        &["services.", "networks: \"functions\" is not declared"],
    );
    let frontend = env(&loads(&["spec/extension-4.yml"], &[]), "frontend");
    let keys: Vec<&str> = frontend.keys().map(String::as_str).collect();
    assert_eq!(keys, ["FOO", "KEY", "YET_ANOTHER", "ZOT"]);
}

#[test]
fn the_specifications_extends_examples() {
    let cli = env(&loads(&["spec/extends-environment.yml"], &[]), "cli");
    assert_eq!((cli["PORT"].as_str(), cli["TZ"].as_str()), ("8080", "utc"));
    // Its volumes are not declared at the top level, which Compose requires too.
    refused(
        &["spec/extends-volumes.yml"],
        &[],
        &["services.cli", "\"cli-volume\" is not declared"],
    );
    let compose = loads(&["spec/extends-chain.yml"], &[]);
    assert_eq!(compose.services["cli"].user.as_deref(), Some("root"));
    let compose = loads(&["spec/extends-sequences.yml"], &[]);
    assert_eq!(
        compose.services["cli"].security_opt,
        ["label:role:ROLE", "label:user:USER"]
    );

    let compose = loads(&["compose-go/extends/reset.yaml"], &[]);
    assert_eq!(
        compose.services["base"].image.as_deref(),
        Some("alpine:latest")
    );
    assert_eq!(compose.services["base"].command, None, "!reset cleared it");
    let compose = loads(&["compose-go/extends/nested.yaml"], &[]);
    let build = compose.services["with-build"].build.as_ref().unwrap();
    assert_eq!(Path::new(&build.context), fixture("compose-go/extends"));
}

#[test]
fn the_specifications_merge_examples() {
    let files = [
        "spec/merge-command/compose.yml",
        "spec/merge-command/override.yml",
    ];
    let compose = loads(&files, &[]);
    assert_eq!(
        compose.services["foo"].command.as_deref().unwrap(),
        ["echo", "bar"]
    );
    let files = [
        "spec/merge-volumes/compose.yml",
        "spec/merge-volumes/override.yml",
    ];
    let mounts = &loads(&files, &[]).services["foo"].mounts;
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].source.as_str(), mounts[0].target.as_str()),
        ("bar", "/work")
    );
    let files = [
        "spec/merge-override/compose.yml",
        "spec/merge-override/override.yml",
    ];
    let app = loads(&files, &[]).services["app"].clone();
    let ports: Vec<u16> = app.ports.iter().map(|p| p.container_port).collect();
    assert_eq!(ports, [443], "!override replaced the list");
    assert!(app.environment.is_empty(), "!reset removed FOO");
}

#[test]
fn the_specifications_profiles_example() {
    let names = |compose: Compose| compose.services.into_keys().collect::<Vec<_>>();
    assert_eq!(names(loads(&["spec/profiles.yml"], &[])), ["foo"]);
    assert_eq!(
        names(loads(&["spec/profiles.yml"], &["test"])),
        ["bar", "baz", "foo"]
    );
    refused(
        &["spec/profiles.yml"],
        &["debug"],
        &["services.zot.depends_on", "\"bar\""],
    );
    assert_eq!(
        names(loads(&["spec/profiles.yml"], &["debug", "test"])).len(),
        4
    );
}

#[test]
fn the_reference_loaders_include_examples() {
    let compose = loads(&["compose-go/include/compose.yaml"], &[]);
    let included = &compose.services["included"];
    let dir = fixture("compose-go/include");
    assert_eq!(Path::new(&included.build.as_ref().unwrap().context), dir);
    assert_eq!(Path::new(&included.mounts[0].source), dir);
    let compose = loads(&["compose-go/combined/compose.yaml"], &[]);
    let build = compose.services["service"].build.as_ref().unwrap();
    assert_eq!(
        Path::new(&build.context),
        fixture("compose-go/combined/dir")
    );
    refused(
        &["compose-go/compose-include-cycle.yaml"],
        &[],
        &["include cycle", "compose-include-cycle.yaml includes"],
    );
}

/// `config`'s document for `compose`, read back from a file, is the same
/// model.
#[track_caller]
fn reads_back(compose: &Compose, profiles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let text = serde_yaml::to_string(&cryptus::compose::render::document("spec", compose)).unwrap();
    let path = dir.path().join("resolved.yml");
    std::fs::write(&path, &text).unwrap();
    let names: Vec<String> = profiles.iter().map(|p| p.to_string()).collect();
    let again = load_with(&[path], &Vars::default(), &Profiles::new(&names).unwrap())
        .unwrap_or_else(|err| panic!("{err:#}\n{text}"));
    let model =
        |c: &Compose| serde_json::json!([c.services, c.networks, c.volumes, c.secrets, c.configs]);
    assert_eq!(model(&again), model(compose), "{text}");
}

#[test]
fn what_config_prints_of_each_example_reads_back_to_the_same_model() {
    let examples: [(&[&str], &[&str]); 17] = [
        (&["spec/fragments-1.yml"], &[]),
        (&["spec/fragments-2.yml"], &[]),
        (&["spec/fragments-4.yml"], &[]),
        (&["spec/extension-1.yml"], &[]),
        (&["spec/extension-2.yml"], &[]),
        (&["spec/extension-4.yml"], &[]),
        (&["spec/extends-environment.yml"], &[]),
        (&["spec/extends-chain.yml"], &[]),
        (&["spec/extends-sequences.yml"], &[]),
        (&["spec/profiles.yml"], &["debug", "test"]),
        (
            &[
                "spec/merge-command/compose.yml",
                "spec/merge-command/override.yml",
            ],
            &[],
        ),
        (
            &[
                "spec/merge-volumes/compose.yml",
                "spec/merge-volumes/override.yml",
            ],
            &[],
        ),
        (
            &[
                "spec/merge-override/compose.yml",
                "spec/merge-override/override.yml",
            ],
            &[],
        ),
        (&["compose-go/extends/reset.yaml"], &[]),
        (&["compose-go/extends/nested.yaml"], &[]),
        (&["compose-go/include/compose.yaml"], &[]),
        (&["compose-go/combined/compose.yaml"], &[]),
    ];
    for (files, profiles) in examples {
        reads_back(&loads(files, profiles), profiles);
    }
}

// ---------------------------------------------------------------------------
// `cryptus config`, without an engine.

/// A project directory with the repository's files, and cryptus run in it.
struct Offline {
    dir: tempfile::TempDir,
}

impl Offline {
    fn new() -> Offline {
        let dir = tempfile::tempdir().expect("making a project directory");
        std::fs::create_dir(dir.path().join("compose")).unwrap();
        for file in [
            "docker-compose.zero-downtime.yml",
            "docker-compose.monitoring.yml",
        ] {
            let shipped = Path::new(support::REPO).join("compose").join(file);
            std::fs::copy(shipped, dir.path().join("compose").join(file)).unwrap();
        }
        Offline { dir }
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mut full = vec!["--project-dir", dir.as_str()];
        full.extend_from_slice(args);
        let mut command = command(&full, env);
        for name in [
            "COMPOSE_FILE",
            "COMPOSE_PATH_SEPARATOR",
            "COMPOSE_PROFILES",
            "CRYPTUS_MONITORING",
        ] {
            if !env.iter().any(|(k, _)| *k == name) {
                command.env_remove(name);
            }
        }
        command.current_dir(self.dir.path());
        run(command)
    }

    #[track_caller]
    fn config(&self, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend(["--json", "config"]);
        let output = self.run(&full, env);
        assert_code(&output, 0);
        serde_json::from_slice(&output.stdout).expect("config --json prints JSON")
    }
}

#[test]
fn config_prints_the_model_as_yaml_or_json() {
    let project = Offline::new();
    let output = project.run(&["config"], &[("CRYPTUS_HTTP_PORT", "8123")]);
    assert_code(&output, 0);
    let yaml: serde_yaml::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(yaml["name"], "cryptus");
    assert_eq!(yaml["services"]["nginx"]["ports"][0]["published"], "8123");
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));

    let json = project.config(&[], &[]);
    let services: Vec<&String> = json["services"].as_object().unwrap().keys().collect();
    assert_eq!(
        services,
        ["cryptus-blue", "cryptus-green", "nginx", "redis"]
    );
    assert_eq!(json["services"]["redis"]["healthcheck"]["interval"], "5s");
    let monitoring = project.config(&[], &[("CRYPTUS_MONITORING", "1")]);
    assert!(monitoring["services"]["prometheus"].is_object());

    // What config prints reads back to the same model.
    let resolved = project.write("resolved.yml", &stdout(&output));
    let again = project.config(&["-f", resolved.to_str().unwrap()], &[]);
    let first = project.config(&[], &[("CRYPTUS_HTTP_PORT", "8123")]);
    assert_eq!(again, first);
}

/// The value of the variable a secret comes from, in no output of config.
const SECRET_VALUE: &str = "pw-0b7d2c41-never-shown";

#[test]
fn config_shows_where_a_secret_comes_from_never_its_value() {
    let project = Offline::new();
    project.write(
        "compose/docker-compose.override.yml",
        "services:\n  redis:\n    secrets: [db]\nsecrets:\n  db: {environment: CRYPTUS_DB_PASSWORD}\n",
    );
    let env = [("CRYPTUS_DB_PASSWORD", SECRET_VALUE)];
    for args in [&["config"][..], &["--json", "config"]] {
        let output = project.run(args, &env);
        assert_code(&output, 0);
        let shown = stdout(&output) + &stderr(&output);
        assert!(!shown.contains(SECRET_VALUE), "{shown}");
        assert!(shown.contains("CRYPTUS_DB_PASSWORD"), "{shown}");
    }
    let json = project.config(&[], &env);
    assert_eq!(json["secrets"]["db"]["environment"], "CRYPTUS_DB_PASSWORD");
    assert_eq!(
        json["services"]["redis"]["secrets"][0]["target"],
        "/run/secrets/db"
    );
    let output = project.run(&["config"], &env);
    let resolved = project.write("resolved.yml", &stdout(&output));
    let again = project.config(&["-f", resolved.to_str().unwrap()], &env);
    assert_eq!(again, json);
}

#[test]
fn the_override_file_merges_and_its_errors_name_file_key_and_line() {
    let project = Offline::new();
    project.write(
        "compose/docker-compose.override.yml",
        "x-extra: &extra\n  FEATURE: 'on'\nservices:\n  cryptus-green:\n    environment:\n      <<: *extra\n  nginx:\n    ports: ['127.0.0.1:9999:9999']\n",
    );
    let json = project.config(&[], &[]);
    let green = &json["services"]["cryptus-green"];
    assert_eq!(green["environment"]["FEATURE"], "on");
    assert_eq!(green["environment"]["INSTANCE_COLOR"], "green");
    assert!(
        json["services"]["cryptus-blue"]["environment"]
            .get("FEATURE")
            .is_none()
    );
    assert_eq!(
        json["services"]["nginx"]["ports"].as_array().unwrap().len(),
        4
    );

    project.write(
        "compose/docker-compose.override.yml",
        "services:\n  cryptus-green:\n    environment:\n      A: '1'\n    healthcheck:\n      intervall: 5s\n",
    );
    for json in [false, true] {
        let args: &[&str] = if json {
            &["--json", "config"]
        } else {
            &["config"]
        };
        let output = project.run(args, &[]);
        assert_code(&output, 2);
        let text = stderr(&output);
        assert!(
            text.contains("docker-compose.override.yml")
                && text.contains("services.cryptus-green.healthcheck")
                && text.contains("`intervall`")
                && text.contains("line 6"),
            "{text}"
        );
        assert!(text.contains("hint:"), "{text}");
        if json {
            let failure: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(failure["exit_code"], 2);
        } else {
            assert!(output.stdout.is_empty());
        }
    }
}

#[test]
fn named_files_merge_in_order_from_the_flag_or_compose_file() {
    let project = Offline::new();
    let base = project
        .dir
        .path()
        .join("compose/docker-compose.zero-downtime.yml");
    let a = project.write("a.yml", "services:\n  redis:\n    image: redis:a\n");
    let b = project.write("b.yml", "services:\n  redis:\n    image: redis:b\n");
    let (base, a, b) = (
        base.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    );
    let image = |json: serde_json::Value| json["services"]["redis"]["image"].clone();
    assert_eq!(
        image(project.config(&["-f", base, "-f", a, "-f", b], &[])),
        "redis:b"
    );
    assert_eq!(
        image(project.config(&["-f", base, "-f", b, "-f", a], &[])),
        "redis:a"
    );
    let list = format!("{base}:{b}:{a}");
    assert_eq!(
        image(project.config(&[], &[("COMPOSE_FILE", &list)])),
        "redis:a"
    );
    let list = format!("{base};{a};{b}");
    let env = [
        ("COMPOSE_FILE", list.as_str()),
        ("COMPOSE_PATH_SEPARATOR", ";"),
    ];
    assert_eq!(image(project.config(&[], &env)), "redis:b");
    // Relative names start at the current directory, as with docker compose.
    assert_eq!(
        image(project.config(&["-f", base, "-f", "a.yml"], &[])),
        "redis:a"
    );
    // The flag wins over the variable.
    let list = format!("{base}:{a}");
    assert_eq!(
        image(project.config(&["-f", base, "-f", b], &[("COMPOSE_FILE", &list)])),
        "redis:b"
    );
    let output = project.run(&["-f", "missing.yml", "config"], &[]);
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("missing.yml does not exist"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn profiles_come_from_the_flag_or_compose_profiles() {
    let project = Offline::new();
    project.write(
        "compose/docker-compose.override.yml",
        "services:\n  debug-shell:\n    image: busybox\n    profiles: [debug]\n  metrics-agent:\n    image: agent\n    profiles: [ops]\n",
    );
    let names = |json: serde_json::Value| -> Vec<String> {
        json["services"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let plain = names(project.config(&[], &[]));
    assert!(
        !plain
            .iter()
            .any(|s| s == "debug-shell" || s == "metrics-agent")
    );
    let debug = names(project.config(&["--profile", "debug"], &[]));
    assert!(
        debug.contains(&"debug-shell".to_owned()) && !debug.contains(&"metrics-agent".to_owned())
    );
    let both = names(project.config(&[], &[("COMPOSE_PROFILES", "debug,ops")]));
    assert!(both.contains(&"debug-shell".to_owned()) && both.contains(&"metrics-agent".to_owned()));
    let output = project.run(&["--profile", "no good", "config"], &[]);
    assert_code(&output, 2);
    assert!(
        stderr(&output).contains("\"no good\""),
        "{}",
        stderr(&output)
    );
}

// ---------------------------------------------------------------------------
// On the real engine.

/// A second tag of the app image, made for one test and removed with it.
struct Tag(String);

impl Tag {
    fn new(project: &TestProject) -> Tag {
        let (repo, tag) = (format!("{}-app", project.name), "override".to_owned());
        let name = format!("{repo}:{tag}");
        project.on_engine(move |docker| async move {
            let options = bollard::query_parameters::TagImageOptionsBuilder::default()
                .repo(&repo)
                .tag(&tag)
                .build();
            docker
                .tag_image(&support::app_image(), Some(options))
                .await
                .expect("tagging the app image");
        });
        Tag(name)
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let name = self.0.clone();
        support::on_engine(move |docker| async move {
            let _ = docker
                .remove_image(
                    &name,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        });
    }
}

/// The image a container was created from, from the engine.
fn container_image(project: &TestProject, container: &str) -> String {
    let config = project.inspect(container).config;
    config.and_then(|c| c.image).unwrap_or_default()
}

#[test]
fn an_override_file_changes_a_color_and_the_deploy_runs_it() {
    let project = TestProject::new("override");
    let tag = Tag::new(&project);
    std::fs::write(
        project.path().join("compose/docker-compose.override.yml"),
        format!(
            "services:\n  cryptus-green:\n    image: {}\n    environment:\n      CRYPTUS_EXTRA: from-override\n",
            tag.0
        ),
    )
    .unwrap();
    let output = project.ok(&["--json", "config"]);
    let model: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let green = &model["services"]["cryptus-green"]["environment"];
    assert_eq!(green["CRYPTUS_EXTRA"], "from-override", "{model}");
    assert_eq!(model["services"]["cryptus-green"]["image"], tag.0.as_str());
    assert_eq!(green["INSTANCE_COLOR"], "green");
    assert!(
        model["services"]["cryptus-blue"]["environment"]
            .get("CRYPTUS_EXTRA")
            .is_none()
    );

    project.ok(&["start"]);
    assert_eq!(project.serving().0, "blue");
    // No --image: the deploy runs the image the override file names.
    project.ok(&["deploy", "--version", "0.2.0", "--watch", "0s"]);
    assert_eq!(project.serving(), ("green".to_owned(), "0.2.0".to_owned()));
    let name = format!("{}-cryptus-green-1", project.name);
    assert_eq!(container_image(&project, &name), tag.0);
    let green = project.container_env(&name);
    assert!(
        green.contains(&"CRYPTUS_EXTRA=from-override".to_owned()),
        "{green:?}"
    );
    assert!(
        green.contains(&"INSTANCE_COLOR=green".to_owned()),
        "{green:?}"
    );
}

#[test]
fn a_profile_gated_service_starts_only_with_its_profile() {
    let project = TestProject::new("profile");
    let image = project.env_value("REDIS_IMAGE").unwrap().to_owned();
    std::fs::write(
        project.path().join("compose/docker-compose.override.yml"),
        format!("services:\n  sidecar:\n    image: {image}\n    profiles: [extras]\n    networks: [cryptus]\n    restart: unless-stopped\n"),
    )
    .unwrap();
    let sidecar = format!("{}-sidecar-1", project.name);
    let listed = |status: &serde_json::Value| {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == "sidecar")
    };

    project.ok(&["start"]);
    assert!(
        !project.containers().contains_key(&sidecar),
        "started without its profile"
    );
    assert!(!listed(&project.status()));

    project.ok(&["--profile", "extras", "start"]);
    let containers = project.containers();
    assert!(
        containers
            .get(&sidecar)
            .is_some_and(|(_, running)| *running),
        "{containers:?}"
    );
    let output = project.ok(&["--profile", "extras", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(listed(&status), "{status}");
    assert_eq!(project.serving().0, "blue", "the stack still serves");
}
