//! From compose services to engine objects: names, labels and container
//! configurations. Pure: nothing here talks to the engine.
//!
//! Names follow Compose v2 (`<project>-<service>-<n>` for containers,
//! `<project>_<name>` for networks and volumes) and every object carries
//! Compose's labels, so `docker compose ls/ps` list what cryptus made.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use anyhow::{Result, bail};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount as EngineMount,
    MountType, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compose::{self, Compose, MountKind, Service};
use crate::engine::{
    CONFIG_FILES_LABEL, CONFIG_HASH_LABEL, NETWORK_LABEL, NUMBER_LABEL, ONEOFF_LABEL,
    PROJECT_LABEL, SERVICE_LABEL, VOLUME_LABEL, WORKING_DIR_LABEL,
};

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

/// A container to create: its name, its configuration, and the networks it
/// joins after creation.
pub struct ContainerPlan {
    pub name: String,
    pub body: ContainerCreateBody,
    pub extra_networks: Vec<(String, Vec<String>)>,
    pub config_hash: String,
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
/// tell when a container no longer matches the file.
pub fn config_hash(service: &Service, release: Option<&Release>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(service).unwrap_or_default());
    if let Some(release) = release {
        hasher.update(serde_json::to_vec(release).unwrap_or_default());
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
) -> Result<ContainerPlan> {
    let name = container_name(project, &service.name, number);
    let config_hash = config_hash(service, release);

    let mut labels = service.labels.clone();
    labels.extend(project_labels(project));
    labels.insert(SERVICE_LABEL.to_owned(), service.name.clone());
    labels.insert(NUMBER_LABEL.to_owned(), number.to_string());
    labels.insert(ONEOFF_LABEL.to_owned(), "False".to_owned());
    labels.insert(CONFIG_HASH_LABEL.to_owned(), config_hash.clone());
    labels.insert(
        CONFIG_FILES_LABEL.to_owned(),
        compose
            .files
            .iter()
            .map(|f| f.to_string_lossy())
            .collect::<Vec<_>>()
            .join(","),
    );
    labels.insert(
        WORKING_DIR_LABEL.to_owned(),
        compose.working_dir.to_string_lossy().into_owned(),
    );

    let mut environment = service.environment.clone();
    let image = match (release, Color::of_service(&service.name)) {
        (Some(release), Some(color)) => {
            labels.insert(VERSION_LABEL.to_owned(), release.version.clone());
            environment.insert("INSTANCE_COLOR".to_owned(), color.as_str().to_owned());
            environment.insert("APP_VERSION".to_owned(), release.version.clone());
            release.image.clone()
        }
        _ => match &service.image {
            Some(image) => image.clone(),
            None => format!("{project}-{}", service.name),
        },
    };

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &service.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: port.host_ip.clone(),
                host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }

    let mut mounts = Vec::new();
    let mut tmpfs: HashMap<String, String> = service
        .tmpfs
        .iter()
        .map(|path| (path.clone(), String::new()))
        .collect();
    for mount in &service.mounts {
        match mount.kind {
            MountKind::Tmpfs => {
                tmpfs.insert(mount.target.clone(), String::new());
            }
            MountKind::Volume => mounts.push(EngineMount {
                target: Some(mount.target.clone()),
                source: (!mount.source.is_empty()).then(|| volume_name(project, &mount.source)),
                typ: Some(MountType::VOLUME),
                read_only: Some(mount.read_only),
                ..Default::default()
            }),
            MountKind::Bind => mounts.push(EngineMount {
                target: Some(mount.target.clone()),
                source: Some(mount.source.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(mount.read_only),
                ..Default::default()
            }),
        }
    }

    let (policy, retries) =
        compose::restart_policy(&service.restart).map_err(anyhow::Error::msg)?;
    let policy = match policy.as_str() {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::NO,
    };

    let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let healthcheck = service.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: h.interval.map(nanos),
        timeout: h.timeout.map(nanos),
        retries: h.retries.map(i64::from),
        start_period: h.start_period.map(nanos),
        ..Default::default()
    });

    let mut networks = service.networks.iter().map(|n| {
        let mut aliases = vec![service.name.clone()];
        aliases.extend(n.aliases.iter().cloned());
        (network_name(project, &n.name), aliases)
    });
    let Some((first_network, first_aliases)) = networks.next() else {
        bail!("service {} joins no network", service.name);
    };
    let extra_networks: Vec<(String, Vec<String>)> = networks.collect();

    let host_config = HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        restart_policy: Some(RestartPolicy {
            name: Some(policy),
            maximum_retry_count: retries,
        }),
        nano_cpus: service.limits.cpus.map(|c| (c * 1e9) as i64),
        memory: service.limits.memory.and_then(|m| i64::try_from(m).ok()),
        pids_limit: service.limits.pids,
        network_mode: Some(first_network.clone()),
        readonly_rootfs: service.read_only.then_some(true),
        cap_drop: (!service.cap_drop.is_empty()).then(|| service.cap_drop.clone()),
        security_opt: (!service.security_opt.is_empty()).then(|| service.security_opt.clone()),
        ..Default::default()
    };

    let body = ContainerCreateBody {
        image: Some(image),
        cmd: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        env: Some(
            environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(labels.into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        stop_signal: service.stop_signal.clone(),
        stop_timeout: service
            .stop_grace_period
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        user: service.user.clone(),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                first_network,
                EndpointSettings {
                    aliases: Some(first_aliases),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    Ok(ContainerPlan {
        name,
        body,
        extra_networks,
        config_hash,
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
        let release = Release {
            image: "cryptus-app:v2".to_owned(),
            version: "v2".to_owned(),
        };
        let plan = plan_container("demo", &compose, service, 2, Some(&release)).unwrap();
        assert_eq!(plan.name, "demo-cryptus-green-2");
        let labels = plan.body.labels.as_ref().unwrap();
        assert_eq!(labels[PROJECT_LABEL], "demo");
        assert_eq!(labels[SERVICE_LABEL], "cryptus-green");
        assert_eq!(labels[NUMBER_LABEL], "2");
        assert_eq!(labels[ONEOFF_LABEL], "False");
        assert_eq!(labels[VERSION_LABEL], "v2");
        assert_eq!(labels[CONFIG_HASH_LABEL], plan.config_hash);
        assert!(labels[CONFIG_FILES_LABEL].ends_with("docker-compose.zero-downtime.yml"));
        assert_eq!(plan.body.image.as_deref(), Some("cryptus-app:v2"));
        let env = plan.body.env.as_ref().unwrap();
        assert!(env.contains(&"INSTANCE_COLOR=green".to_owned()));
        assert!(env.contains(&"APP_VERSION=v2".to_owned()));
        let host = plan.body.host_config.as_ref().unwrap();
        let binding = &host.port_bindings.as_ref().unwrap()["3000/tcp"]
            .as_ref()
            .unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some(""));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("demo_cryptus"));
        let endpoints = plan
            .body
            .networking_config
            .as_ref()
            .unwrap()
            .endpoints_config
            .as_ref()
            .unwrap();
        assert_eq!(
            endpoints["demo_cryptus"].aliases.as_deref(),
            Some(&["cryptus-green".to_owned()][..])
        );
        let health = plan.body.healthcheck.as_ref().unwrap();
        assert_eq!(health.interval, Some(10_000_000_000));
        assert_eq!(plan.body.stop_timeout, Some(30));
    }

    #[test]
    fn volumes_are_prefixed_and_binds_absolute() {
        let compose = shipped();
        let plan = plan_container("demo", &compose, &compose.services["nginx"], 1, None).unwrap();
        let mounts = plan
            .body
            .host_config
            .as_ref()
            .unwrap()
            .mounts
            .clone()
            .unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert!(mounts[0].source.as_ref().unwrap().ends_with("/nginx"));
        assert_eq!(mounts[1].source.as_deref(), Some("demo_nginx-state"));
        assert_eq!(plan.body.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(plan.body.image.as_deref(), Some("nginx:1.28-alpine"));
    }

    #[test]
    fn the_hash_follows_the_configuration() {
        let compose = shipped();
        let mut service = compose.services["redis"].clone();
        let before = config_hash(&service, None);
        assert_eq!(before, config_hash(&service, None));
        service.environment.insert("X".to_owned(), "1".to_owned());
        assert_ne!(before, config_hash(&service, None));
    }
}
