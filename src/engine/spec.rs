//! What cryptus asks the engine to create, in cryptus's own terms
//! ([`ContainerSpec`]), and its translation into the engine's create request.
//!
//! Planning (`stack`, `lock`, `redis`) fills a spec and never sees the
//! engine's types; only this file knows how the engine spells a port
//! binding, a mount or a restart policy.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

/// A container to create.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's command when set.
    pub command: Option<Vec<String>>,
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    pub mounts: Vec<MountSpec>,
    /// Paths that get an empty tmpfs.
    pub tmpfs: Vec<String>,
    /// The networks it joins, in order; with none it is on no network at all.
    pub networks: Vec<NetworkSpec>,
    pub healthcheck: Option<HealthSpec>,
    pub restart: RestartSpec,
    /// CPUs it may use, as a fraction of cores.
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    pub pids: Option<i64>,
    pub stop_signal: Option<String>,
    /// How long a stop waits before SIGKILL; the engine's default when `None`.
    pub stop_timeout: Option<Duration>,
    pub user: Option<String>,
    pub read_only: bool,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
}

impl ContainerSpec {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A container port published on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host address; `None` binds every interface.
    pub host_ip: Option<String>,
    /// The host port; `None` lets the engine choose a free one.
    pub host_port: Option<u16>,
}

/// A volume or a host directory mounted into the container.
#[derive(Clone, Debug, PartialEq)]
pub enum MountSpec {
    /// A named volume, or an anonymous one when `name` is `None`.
    Volume {
        name: Option<String>,
        target: String,
        read_only: bool,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
}

/// A network the container joins, and the names it answers to there.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSpec {
    pub name: String,
    pub aliases: Vec<String>,
}

/// The container's own healthcheck.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSpec {
    /// The engine's form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

/// When the engine restarts the container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartSpec {
    #[default]
    No,
    Always,
    UnlessStopped,
    /// On a non-zero exit, at most this many times when given.
    OnFailure(Option<i64>),
}

/// The engine's create request for `spec`. Only the first network is given
/// at creation (older engines accept one); the rest are joined afterwards.
pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed: Vec<String> = Vec::new();
    for key in spec.ports.iter().map(port_key) {
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    }
    let first = spec.networks.first();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec
            .stop_timeout
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        user: spec.user.clone(),
        host_config: Some(host_config(spec)),
        networking_config: first.map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.name.clone(),
                endpoint(&network.aliases),
            )])),
        }),
        ..Default::default()
    }
}

/// The endpoint settings that give a container `aliases` on a network.
pub(super) fn endpoint(aliases: &[String]) -> EndpointSettings {
    EndpointSettings {
        aliases: Some(aliases.to_vec()),
        ..Default::default()
    }
}

fn host_config(spec: &ContainerSpec) -> HostConfig {
    let bindings = port_bindings(&spec.ports);
    let mounts: Vec<Mount> = spec.mounts.iter().map(mount).collect();
    let tmpfs: HashMap<String, String> = spec
        .tmpfs
        .iter()
        .map(|path| (path.clone(), String::new()))
        .collect();
    HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        restart_policy: Some(restart_policy(spec.restart)),
        nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
        memory: spec.memory.and_then(|m| i64::try_from(m).ok()),
        pids_limit: spec.pids,
        network_mode: Some(
            spec.networks
                .first()
                .map_or_else(|| "none".to_owned(), |n| n.name.clone()),
        ),
        readonly_rootfs: spec.read_only.then_some(true),
        cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
        security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
        ..Default::default()
    }
}

/// The engine's key for a container port: `3000/tcp`.
fn port_key(port: &PortSpec) -> String {
    format!("{}/{}", port.container_port, port.protocol)
}

fn port_bindings(ports: &[PortSpec]) -> HashMap<String, Option<Vec<PortBinding>>> {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in ports {
        bindings
            .entry(port_key(port))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: port.host_ip.clone(),
                // Empty: the engine picks a free port.
                host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    bindings
}

fn mount(spec: &MountSpec) -> Mount {
    let (typ, source, target, read_only) = match spec {
        MountSpec::Volume {
            name,
            target,
            read_only,
        } => (MountType::VOLUME, name.clone(), target, read_only),
        MountSpec::Bind {
            source,
            target,
            read_only,
        } => (MountType::BIND, Some(source.clone()), target, read_only),
    };
    Mount {
        target: Some(target.clone()),
        source,
        typ: Some(typ),
        read_only: Some(*read_only),
        ..Default::default()
    }
}

fn restart_policy(restart: RestartSpec) -> RestartPolicy {
    let (name, maximum_retry_count) = match restart {
        RestartSpec::No => (RestartPolicyNameEnum::NO, None),
        RestartSpec::Always => (RestartPolicyNameEnum::ALWAYS, None),
        RestartSpec::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        RestartSpec::OnFailure(retries) => (RestartPolicyNameEnum::ON_FAILURE, retries),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    }
}

fn health_config(health: &HealthSpec) -> HealthConfig {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    HealthConfig {
        test: Some(health.test.clone()),
        interval: health.interval.map(nanos),
        timeout: health.timeout.map(nanos),
        retries: health.retries.map(i64::from),
        start_period: health.start_period.map(nanos),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn green() -> ContainerSpec {
        ContainerSpec {
            name: "demo-cryptus-green-2".to_owned(),
            image: "cryptus-app:v2".to_owned(),
            env: BTreeMap::from([("INSTANCE_COLOR".to_owned(), "green".to_owned())]),
            labels: BTreeMap::from([("cryptus.version".to_owned(), "v2".to_owned())]),
            ports: vec![PortSpec {
                container_port: 3000,
                protocol: "tcp".to_owned(),
                host_ip: Some("127.0.0.1".to_owned()),
                host_port: None,
            }],
            networks: vec![
                NetworkSpec {
                    name: "demo_cryptus".to_owned(),
                    aliases: vec!["cryptus-green".to_owned()],
                },
                NetworkSpec {
                    name: "demo_backend".to_owned(),
                    aliases: vec!["cryptus-green".to_owned(), "app".to_owned()],
                },
            ],
            healthcheck: Some(HealthSpec {
                test: vec!["CMD".to_owned(), "true".to_owned()],
                interval: Some(Duration::from_secs(10)),
                timeout: None,
                retries: Some(3),
                start_period: None,
            }),
            restart: RestartSpec::UnlessStopped,
            cpus: Some(1.0),
            memory: Some(512 << 20),
            stop_timeout: Some(Duration::from_millis(30_900)),
            ..Default::default()
        }
    }

    #[test]
    fn a_spec_becomes_the_engines_create_request() {
        let body = create_body(&green());
        assert_eq!(body.image.as_deref(), Some("cryptus-app:v2"));
        assert_eq!(body.env, Some(vec!["INSTANCE_COLOR=green".to_owned()]));
        assert_eq!(body.labels.as_ref().unwrap()["cryptus.version"], "v2");
        assert_eq!(body.exposed_ports, Some(vec!["3000/tcp".to_owned()]));
        let host = body.host_config.as_ref().unwrap();
        let binding = &host.port_bindings.as_ref().unwrap()["3000/tcp"]
            .as_ref()
            .unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        // An empty host port: the engine picks a free one.
        assert_eq!(binding.host_port.as_deref(), Some(""));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(
            host.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let health = body.healthcheck.as_ref().unwrap();
        assert_eq!(health.interval, Some(10_000_000_000));
        assert_eq!(health.retries, Some(3));
        assert_eq!(body.stop_timeout, Some(30));
    }

    /// Only the first network is given at creation; the others are joined
    /// afterwards.
    #[test]
    fn the_first_network_is_joined_at_creation() {
        let body = create_body(&green());
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("demo_cryptus"));
        let endpoints = body
            .networking_config
            .as_ref()
            .unwrap()
            .endpoints_config
            .as_ref()
            .unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints["demo_cryptus"].aliases.as_deref(),
            Some(&["cryptus-green".to_owned()][..])
        );
    }

    #[test]
    fn without_networks_a_container_is_on_none() {
        let spec = ContainerSpec {
            name: "demo-deploy-lock".to_owned(),
            image: "redis:7-alpine".to_owned(),
            command: Some(vec!["cryptus-lock".to_owned()]),
            ..Default::default()
        };
        let body = create_body(&spec);
        assert_eq!(body.cmd, spec.command);
        assert!(body.networking_config.is_none());
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(host.port_bindings.is_none() && host.mounts.is_none() && host.tmpfs.is_none());
        assert!(body.exposed_ports.is_none() && body.healthcheck.is_none());
    }

    #[test]
    fn mounts_and_tmpfs() {
        let spec = ContainerSpec {
            mounts: vec![
                MountSpec::Bind {
                    source: "/srv/demo/nginx".to_owned(),
                    target: "/etc/nginx/conf.d".to_owned(),
                    read_only: true,
                },
                MountSpec::Volume {
                    name: Some("demo_nginx-state".to_owned()),
                    target: "/var/lib/cryptus".to_owned(),
                    read_only: false,
                },
                MountSpec::Volume {
                    name: None,
                    target: "/scratch".to_owned(),
                    read_only: false,
                },
            ],
            tmpfs: vec!["/run".to_owned(), "/run".to_owned()],
            restart: RestartSpec::OnFailure(Some(3)),
            ..Default::default()
        };
        let host = host_config(&spec);
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/demo/nginx"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[1].source.as_deref(), Some("demo_nginx-state"));
        assert_eq!(mounts[2].source, None);
        assert_eq!(
            host.tmpfs,
            Some(HashMap::from([("/run".to_owned(), String::new())]))
        );
        let restart = host.restart_policy.unwrap();
        assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(restart.maximum_retry_count, Some(3));
    }
}
