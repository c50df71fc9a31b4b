//! From compose services to engine objects: names, labels and container
//! specs ([`ContainerSpec`]). Pure: nothing here talks to the engine.
//!
//! Names follow Compose v2 (`<project>-<service>-<n>` for containers,
//! `<project>_<name>` for networks and volumes) and every object carries
//! Compose's labels, so `docker compose ls/ps` list what cryptus made.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compose::{self, Compose, MountKind, Service};
use crate::engine::{
    CONFIG_FILES_LABEL, CONFIG_HASH_LABEL, ContainerSpec, HealthSpec, HostFile, MountSpec,
    NETWORK_LABEL, NUMBER_LABEL, NetworkSpec, ONEOFF_LABEL, PROJECT_LABEL, PortSpec, RestartSpec,
    SERVICE_LABEL, VOLUME_LABEL, WORKING_DIR_LABEL,
};

mod runtime;

pub use runtime::{CONFIG_MODE, SECRET_MODE, files_dir};

/// The load balancer's service.
pub const LB_SERVICE: &str = "nginx";
/// The session store's service.
pub const REDIS_SERVICE: &str = "redis";
/// More replicas of a color than this on one host is a typo, not a plan.
pub const MAX_REPLICAS: u32 = 32;

/// The app version a container runs, as cryptus deployed it.
pub const VERSION_LABEL: &str = "cryptus.version";
/// The port the app listens on inside its container.
pub const APP_PORT: u16 = 3000;

/// The two colors of the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// The compose service that runs this color.
    pub fn service(self) -> &'static str {
        match self {
            Color::Blue => "cryptus-blue",
            Color::Green => "cryptus-green",
        }
    }

    pub fn parse(text: &str) -> Option<Color> {
        match text.trim() {
            "blue" => Some(Color::Blue),
            "green" => Some(Color::Green),
            _ => None,
        }
    }

    pub fn of_service(service: &str) -> Option<Color> {
        Color::ALL.into_iter().find(|c| c.service() == service)
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Checks a project name: Compose's rule, lowercase letters, digits, `-`, `_`.
pub fn check_project_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if first_ok
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "project name {name:?} is invalid: use lowercase letters, digits, '-' and '_', starting with a letter or digit"
        ))
    }
}

pub fn container_name(project: &str, service: &str, number: u32) -> String {
    format!("{project}-{service}-{number}")
}

pub fn network_name(project: &str, network: &str) -> String {
    format!("{project}_{network}")
}

pub fn volume_name(project: &str, volume: &str) -> String {
    format!("{project}_{volume}")
}

/// The version an image declares: its `org.opencontainers.image.version`
/// label, else its tag, else "unknown".
pub fn image_version(reference: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some(version) = labels
        .get("org.opencontainers.image.version")
        .filter(|v| !v.is_empty())
    {
        return version.clone();
    }
    let name = reference.split('@').next().unwrap_or(reference);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => tag.to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// What a color's containers run: the image and the version it answers as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub image: String,
    pub version: String,
}

/// The labels every object of the project carries.
fn project_labels(project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PROJECT_LABEL.to_owned(), project.to_owned()),
        ("com.docker.compose.version".to_owned(), "2.0.0".to_owned()),
    ])
}

pub fn network_labels(
    project: &str,
    network: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    labels.extend(project_labels(project));
    labels.insert(NETWORK_LABEL.to_owned(), network.to_owned());
    labels
}

pub fn volume_labels(
    project: &str,
    volume: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    labels.extend(project_labels(project));
    labels.insert(VOLUME_LABEL.to_owned(), volume.to_owned());
    labels
}

/// A hash of everything that shapes a service's containers, so `start` can
/// tell when a container no longer matches the file: the service, the
/// release, and the files written for it (a secret's new value recreates
/// the container, since a running one keeps the file it mounted).
pub fn config_hash(service: &Service, release: Option<&Release>, files: &[HostFile]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(service).unwrap_or_default());
    if let Some(release) = release {
        hasher.update(serde_json::to_vec(release).unwrap_or_default());
    }
    for file in files {
        hasher.update(file.path.as_bytes());
        hasher.update(file.content.expose().as_bytes());
        hasher.update(format!("{:o} {:?} {:?}", file.mode, file.uid, file.gid));
    }
    format!("{:x}", hasher.finalize())
}

/// The container for replica `number` of `service`. A color's containers run
/// `release`, and learn their color and version from the environment.
pub fn plan_container(
    project: &str,
    compose: &Compose,
    service: &Service,
    number: u32,
    release: Option<&Release>,
) -> Result<ContainerSpec> {
    let restart = restart(&service.restart)?;
    let networks = networks(project, service)?;
    let (granted, files) = runtime::granted(project, compose, service);
    let config_hash = config_hash(service, release, &files);
    let mut labels = container_labels(project, compose, service, number, config_hash);
    let mut env = service.environment.clone();
    let image = match (release, Color::of_service(&service.name)) {
        (Some(release), Some(color)) => {
            labels.insert(VERSION_LABEL.to_owned(), release.version.clone());
            env.insert("INSTANCE_COLOR".to_owned(), color.as_str().to_owned());
            env.insert("APP_VERSION".to_owned(), release.version.clone());
            release.image.clone()
        }
        // Without an image the service is built, and tagged as Compose does.
        _ => service
            .image
            .clone()
            .unwrap_or_else(|| format!("{project}-{}", service.name)),
    };
    Ok(ContainerSpec {
        name: container_name(project, &service.name, number),
        image,
        command: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        env,
        labels,
        ports: service.ports.iter().map(port).collect(),
        mounts: mounts(project, service)
            .into_iter()
            .chain(granted)
            .collect(),
        tmpfs: tmpfs(service),
        networks,
        healthcheck: service.healthcheck.as_ref().map(healthcheck),
        restart,
        cpus: service.limits.cpus,
        memory: service.limits.memory,
        pids: service.limits.pids,
        stop_signal: service.stop_signal.clone(),
        stop_timeout: service.stop_grace_period,
        user: service.user.clone(),
        read_only: service.read_only,
        cap_drop: service.cap_drop.clone(),
        security_opt: service.security_opt.clone(),
        runtime: runtime::runtime(service),
        files,
    })
}

/// The label that marks a hook's one-off container, naming the hook.
pub const HOOK_LABEL: &str = "cryptus.hook";

/// The one-off container that runs `hook` (`command`, with `env` added) of
/// `release` for `service`, a color: the color's own container (its
/// environment, secrets, mounts, networks and limits) with the hook's
/// command as the whole command line (no entrypoint comes before it), no
/// published port, no alias, no healthcheck and no restart. Labelled
/// one-off, as `docker compose run` labels its containers, and with the
/// hook, so that no replica count includes it and a later run finds it.
pub fn plan_hook(
    project: &str,
    compose: &Compose,
    service: &Service,
    release: &Release,
    (hook, command): (compose::Hook, &[String]),
    env: BTreeMap<String, String>,
) -> Result<ContainerSpec> {
    let mut spec = plan_container(project, compose, service, 1, Some(release))?;
    spec.name = format!("{project}-{}-{hook}", service.name);
    as_hook(&mut spec, (hook, command), env);
    Ok(spec)
}

/// A color's container made into `hook`'s run (one engine's container, or
/// a Swarm job's task): the hook's command with no entrypoint and the
/// hook's variables, no port, no healthcheck, no restart, no network
/// alias (nothing sends it traffic), labelled as a one-off of that hook.
pub fn as_hook(
    spec: &mut ContainerSpec,
    (hook, command): (compose::Hook, &[String]),
    env: BTreeMap<String, String>,
) {
    // The engine's way to say "no entrypoint": one empty string.
    spec.entrypoint = Some(vec![String::new()]);
    spec.command = Some(command.to_vec());
    spec.env.extend(env);
    spec.ports.clear();
    spec.healthcheck = None;
    spec.restart = RestartSpec::No;
    for network in &mut spec.networks {
        network.aliases.clear();
    }
    spec.labels.remove(NUMBER_LABEL);
    spec.labels.extend([
        (ONEOFF_LABEL.to_owned(), "True".to_owned()),
        (HOOK_LABEL.to_owned(), hook.as_str().to_owned()),
    ]);
}

/// Compose's labels for replica `number` of `service`, and the file's own.
fn container_labels(
    project: &str,
    compose: &Compose,
    service: &Service,
    number: u32,
    config_hash: String,
) -> BTreeMap<String, String> {
    let files: Vec<_> = compose.files.iter().map(|f| f.to_string_lossy()).collect();
    let mut labels = service.labels.clone();
    labels.extend(project_labels(project));
    labels.extend([
        (SERVICE_LABEL.to_owned(), service.name.clone()),
        (NUMBER_LABEL.to_owned(), number.to_string()),
        (ONEOFF_LABEL.to_owned(), "False".to_owned()),
        (CONFIG_HASH_LABEL.to_owned(), config_hash),
        (CONFIG_FILES_LABEL.to_owned(), files.join(",")),
        (
            WORKING_DIR_LABEL.to_owned(),
            compose.working_dir.to_string_lossy().into_owned(),
        ),
    ]);
    labels
}

fn port(port: &compose::Port) -> PortSpec {
    PortSpec {
        container_port: port.container_port,
        protocol: port.protocol.clone(),
        host_ip: port.host_ip.clone(),
        host_port: port.host_port,
    }
}

/// Volumes and bind mounts; a named volume is the project's.
fn mounts(project: &str, service: &Service) -> Vec<MountSpec> {
    service
        .mounts
        .iter()
        .filter_map(|mount| match mount.kind {
            MountKind::Tmpfs => None,
            MountKind::Volume => Some(MountSpec::Volume {
                name: (!mount.source.is_empty()).then(|| volume_name(project, &mount.source)),
                target: mount.target.clone(),
                read_only: mount.read_only,
            }),
            MountKind::Bind => Some(MountSpec::Bind {
                source: mount.source.clone(),
                target: mount.target.clone(),
                read_only: mount.read_only,
            }),
        })
        .collect()
}

/// The paths that get a tmpfs: `tmpfs:` and the tmpfs mounts of `volumes:`.
fn tmpfs(service: &Service) -> Vec<String> {
    let mounts = service
        .mounts
        .iter()
        .filter(|mount| mount.kind == MountKind::Tmpfs)
        .map(|mount| mount.target.clone());
    service.tmpfs.iter().cloned().chain(mounts).collect()
}

/// The project's networks the service joins, each with the service's name
/// as an alias; a service must join one.
fn networks(project: &str, service: &Service) -> Result<Vec<NetworkSpec>> {
    if service.networks.is_empty() {
        bail!("service {} joins no network", service.name);
    }
    Ok(service
        .networks
        .iter()
        .map(|network| NetworkSpec {
            name: network_name(project, &network.name),
            aliases: std::iter::once(service.name.clone())
                .chain(network.aliases.iter().cloned())
                .collect(),
        })
        .collect())
}

fn healthcheck(health: &compose::Healthcheck) -> HealthSpec {
    HealthSpec {
        test: health.test.clone(),
        interval: health.interval,
        timeout: health.timeout,
        retries: health.retries,
        start_period: health.start_period,
        start_interval: health.start_interval,
    }
}

fn restart(text: &str) -> Result<RestartSpec> {
    let (policy, retries) = compose::restart_policy(text).map_err(anyhow::Error::msg)?;
    Ok(match policy.as_str() {
        "always" => RestartSpec::Always,
        "unless-stopped" => RestartSpec::UnlessStopped,
        "on-failure" => RestartSpec::OnFailure(retries),
        _ => RestartSpec::No,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::{Vars, parse};

    fn shipped() -> Compose {
        let text = include_str!("../compose/docker-compose.zero-downtime.yml");
        let project = tempfile::tempdir().unwrap();
        let dir = project.path().join("compose");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker-compose.zero-downtime.yml");
        std::fs::write(&path, text).unwrap();
        assert!(parse(text, &Vars::default()).is_ok());
        compose::load(&[path], &Vars::default()).unwrap()
    }

    #[test]
    fn a_hook_runs_as_a_one_off_of_the_color() {
        let compose = shipped();
        let service = &compose.services["cryptus-green"];
        let release = v2();
        let command = ["./bin/migrate".to_owned(), "--up".to_owned()];
        let env = BTreeMap::from([("CRYPTUS_TO_COLOR".to_owned(), "green".to_owned())]);
        let hook = (compose::Hook::PreDeploy, &command[..]);
        let spec = plan_hook("demo", &compose, service, &release, hook, env).unwrap();
        let color = plan_container("demo", &compose, service, 1, Some(&release)).unwrap();
        assert_eq!(spec.name, "demo-cryptus-green-pre-deploy");
        assert_eq!(spec.image, "cryptus-app:v2");
        assert_eq!(spec.command.as_deref(), Some(&command[..]));
        assert_eq!(spec.entrypoint, Some(vec![String::new()]));
        // The color's environment, mounts and networks, and the hook's variables.
        assert_eq!(spec.env["INSTANCE_COLOR"], "green");
        assert_eq!(spec.env["APP_VERSION"], "v2");
        assert_eq!(spec.env["CRYPTUS_TO_COLOR"], "green");
        assert_eq!(spec.mounts, color.mounts);
        assert_eq!(spec.memory, color.memory);
        let networks: Vec<_> = spec.networks.iter().map(|n| &n.name).collect();
        assert_eq!(networks, ["demo_cryptus"]);
        // Nothing that would make it a replica: no port, alias, healthcheck,
        // restart or number; labelled one-off with its hook.
        assert!(spec.networks.iter().all(|n| n.aliases.is_empty()));
        assert!(spec.ports.is_empty() && spec.healthcheck.is_none());
        assert!(matches!(spec.restart, RestartSpec::No));
        assert_eq!(spec.labels[PROJECT_LABEL], "demo");
        assert_eq!(spec.labels[SERVICE_LABEL], "cryptus-green");
        assert_eq!(spec.labels[ONEOFF_LABEL], "True");
        assert_eq!(spec.labels[HOOK_LABEL], "pre-deploy");
        assert!(!spec.labels.contains_key(NUMBER_LABEL));
    }

    fn v2() -> Release {
        Release {
            image: "cryptus-app:v2".to_owned(),
            version: "v2".to_owned(),
        }
    }

    #[test]
    fn names_follow_compose() {
        assert_eq!(
            container_name("demo", "cryptus-blue", 2),
            "demo-cryptus-blue-2"
        );
        assert_eq!(network_name("demo", "cryptus"), "demo_cryptus");
        assert_eq!(volume_name("demo", "redis-data"), "demo_redis-data");
    }

    #[test]
    fn project_names() {
        assert!(check_project_name("cryptus").is_ok());
        assert!(check_project_name("ci-42_a").is_ok());
        for bad in ["", "Cryptus", "-x", "a b", "a/b", &"x".repeat(64)] {
            assert!(check_project_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_versions() {
        let labels = BTreeMap::from([(
            "org.opencontainers.image.version".to_owned(),
            "1.4.0".to_owned(),
        )]);
        assert_eq!(image_version("app:v2", &labels), "1.4.0");
        assert_eq!(image_version("app:v2", &BTreeMap::new()), "v2");
        assert_eq!(
            image_version("localhost:5000/app", &BTreeMap::new()),
            "unknown"
        );
        assert_eq!(image_version("app:latest", &BTreeMap::new()), "unknown");
    }

    #[test]
    fn a_color_container_carries_compose_labels_and_its_release() {
        let compose = shipped();
        let service = &compose.services["cryptus-green"];
        let release = v2();
        let plan = plan_container("demo", &compose, service, 2, Some(&release)).unwrap();
        assert_eq!(plan.name, "demo-cryptus-green-2");
        let labels = &plan.labels;
        assert_eq!(labels[PROJECT_LABEL], "demo");
        assert_eq!(labels[SERVICE_LABEL], "cryptus-green");
        assert_eq!(labels[NUMBER_LABEL], "2");
        assert_eq!(labels[ONEOFF_LABEL], "False");
        assert_eq!(labels[VERSION_LABEL], "v2");
        assert_eq!(
            labels[CONFIG_HASH_LABEL],
            config_hash(service, Some(&release), &[])
        );
        assert!(labels[CONFIG_FILES_LABEL].ends_with("docker-compose.zero-downtime.yml"));
        assert_eq!(plan.image, "cryptus-app:v2");
        assert_eq!(plan.env["INSTANCE_COLOR"], "green");
        assert_eq!(plan.env["APP_VERSION"], "v2");
        assert_eq!(
            plan.ports,
            [PortSpec {
                container_port: APP_PORT,
                protocol: "tcp".to_owned(),
                host_ip: Some("127.0.0.1".to_owned()),
                host_port: None,
            }]
        );
        assert_eq!(plan.memory, Some(512 << 20));
        assert_eq!(plan.cpus, Some(1.0));
        assert_eq!(
            plan.networks,
            [NetworkSpec {
                name: "demo_cryptus".to_owned(),
                aliases: vec!["cryptus-green".to_owned()],
            }]
        );
        let health = plan.healthcheck.as_ref().unwrap();
        assert_eq!(health.interval, Some(std::time::Duration::from_secs(10)));
        assert_eq!(plan.stop_timeout, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn volumes_are_prefixed_and_binds_absolute() {
        let compose = shipped();
        let plan = plan_container("demo", &compose, &compose.services["nginx"], 1, None).unwrap();
        assert!(
            matches!(&plan.mounts[0], MountSpec::Bind { source, .. } if source.ends_with("/nginx")),
            "{:?}",
            plan.mounts
        );
        assert!(
            matches!(&plan.mounts[1], MountSpec::Volume { name: Some(name), .. } if name == "demo_nginx-state"),
            "{:?}",
            plan.mounts
        );
        assert_eq!(plan.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(plan.image, "nginx:1.28-alpine");
    }

    /// Without a release a color runs what the file names, with no version.
    #[test]
    fn without_a_release_a_color_runs_the_files_image() {
        let compose = shipped();
        let service = &compose.services["cryptus-blue"];
        let plan = plan_container("demo", &compose, service, 1, None).unwrap();
        assert_eq!(plan.image, service.image.clone().unwrap());
        assert!(!plan.env.contains_key("APP_VERSION"));
        assert!(!plan.labels.contains_key(VERSION_LABEL));
        assert_eq!(
            plan.label(CONFIG_HASH_LABEL),
            Some(config_hash(service, None, &[]).as_str())
        );
    }

    /// Only a color's service takes a release: redis keeps its own image.
    #[test]
    fn a_release_changes_only_a_colors_image() {
        let compose = shipped();
        let release = Release {
            image: "cryptus-app:v2".to_owned(),
            version: "v2".to_owned(),
        };
        let service = &compose.services["redis"];
        let plan = plan_container("demo", &compose, service, 1, Some(&release)).unwrap();
        assert_eq!(plan.image, service.image.clone().unwrap());
        assert!(!plan.env.contains_key("APP_VERSION"));
    }

    #[test]
    fn the_compose_model_becomes_the_spec() {
        let compose = shipped();
        let mut service = compose.services["redis"].clone();
        service.image = None;
        service.restart = "on-failure:3".to_owned();
        service.tmpfs = vec!["/run".to_owned()];
        service.mounts.push(compose::Mount {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: "/cache".to_owned(),
            read_only: false,
        });
        service.mounts.push(compose::Mount {
            kind: MountKind::Volume,
            source: String::new(),
            target: "/scratch".to_owned(),
            read_only: true,
        });
        service.networks.push(compose::ServiceNetwork {
            name: "backend".to_owned(),
            aliases: vec!["cache".to_owned()],
        });
        let plan = plan_container("demo", &compose, &service, 1, None).unwrap();
        // A service without an image runs the one built for it.
        assert_eq!(plan.image, "demo-redis");
        assert_eq!(plan.restart, RestartSpec::OnFailure(Some(3)));
        assert_eq!(plan.tmpfs, ["/run", "/cache"]);
        // The tmpfs mount is a tmpfs, not a mount.
        assert_eq!(
            plan.mounts.len(),
            compose.services["redis"].mounts.len() + 1
        );
        assert_eq!(
            plan.mounts.last(),
            Some(&MountSpec::Volume {
                name: None,
                target: "/scratch".to_owned(),
                read_only: true,
            })
        );
        assert_eq!(
            plan.networks.last(),
            Some(&NetworkSpec {
                name: "demo_backend".to_owned(),
                aliases: vec!["redis".to_owned(), "cache".to_owned()],
            })
        );
        service.networks.clear();
        let err = plan_container("demo", &compose, &service, 1, None).unwrap_err();
        assert_eq!(err.to_string(), "service redis joins no network");
    }

    #[test]
    fn the_hash_follows_the_configuration() {
        let compose = shipped();
        let mut service = compose.services["redis"].clone();
        let before = config_hash(&service, None, &[]);
        assert_eq!(before, config_hash(&service, None, &[]));
        service.environment.insert("X".to_owned(), "1".to_owned());
        assert_ne!(before, config_hash(&service, None, &[]));
    }
}
