//! What cryptus asks the engine to create, in cryptus's own terms
//! ([`ContainerSpec`]), and its translation into the engine's create request.
//!
//! Planning (`stack`, `lock`, `redis`) fills a spec and never sees the
//! engine's types; only this file knows how the engine spells a port
//! binding, a mount or a restart policy.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointSettings, HealthConfig, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkingConfig, PortBinding, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};

use crate::compose::Sensitive;

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
    /// The runtime options Compose's keys of the same names set.
    pub runtime: RuntimeSpec,
    /// Files cryptus writes on this host before the container is created,
    /// each bind-mounted read-only (see `mounts`): the secrets and configs
    /// whose value the compose file holds.
    pub files: Vec<HostFile>,
}

/// How the container runs, beyond its command, mounts and limits above.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeSpec {
    /// The log driver and its options; the engine's default when `None`.
    pub log: Option<LogSpec>,
    pub init: Option<bool>,
    /// `host:ip`.
    pub extra_hosts: Vec<String>,
    pub cap_add: Vec<String>,
    pub privileged: bool,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// Exposed without being published: `3000/tcp`.
    pub expose: Vec<String>,
    pub ulimits: Vec<UlimitSpec>,
    pub sysctls: BTreeMap<String, String>,
    pub shm_size: Option<u64>,
    pub group_add: Vec<String>,
    pub tty: bool,
    pub stdin_open: bool,
    pub devices: Vec<DeviceSpec>,
    /// Memory and swap together; -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<u64>,
    pub cpu_shares: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogSpec {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UlimitSpec {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    pub host: String,
    pub container: String,
    /// Some of `rwm`.
    pub permissions: String,
}

/// A file written on this host for a container: its value, mode and owner.
#[derive(Clone, Debug, PartialEq)]
pub struct HostFile {
    pub path: String,
    pub content: Sensitive,
    pub mode: u32,
    /// The owner; the container's user when `None`.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The mode is the private default: where the container's user cannot
    /// be told (a user name, not a uid), the file is made readable by every
    /// user of the container instead, as Compose's default mode is.
    pub default_mode: bool,
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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthSpec {
    /// The engine's form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
    /// Sent only to an engine that knows it (API 1.44 and newer).
    pub start_interval: Option<Duration>,
}

/// The engine's API version, which decides what a request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub usize, pub usize);

/// The first API version whose healthcheck has `StartInterval`.
pub const START_INTERVAL_API: ApiVersion = ApiVersion(1, 44);

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

/// The engine's create request for `spec`, for an engine speaking `api`.
/// Only the first network is given at creation (older engines accept one);
/// the rest are joined afterwards.
pub(super) fn create_body(spec: &ContainerSpec, api: ApiVersion) -> ContainerCreateBody {
    let mut seen = std::collections::HashSet::new();
    let exposed: Vec<String> = spec
        .ports
        .iter()
        .map(port_key)
        .chain(spec.runtime.expose.iter().cloned())
        .filter(|key| seen.insert(key.clone()))
        .collect();
    let first = spec.networks.first();
    let runtime = &spec.runtime;
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: spec.healthcheck.as_ref().map(|h| health_config(h, api)),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec
            .stop_timeout
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        user: spec.user.clone(),
        hostname: runtime.hostname.clone(),
        domainname: runtime.domainname.clone(),
        working_dir: runtime.working_dir.clone(),
        tty: runtime.tty.then_some(true),
        open_stdin: runtime.stdin_open.then_some(true),
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
        ..runtime_host_config(&spec.runtime)
    }
}

/// A list the engine takes as absent when it is empty.
fn listed<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// The host config's part that the runtime options set.
fn runtime_host_config(runtime: &RuntimeSpec) -> HostConfig {
    let ulimits: Vec<ResourcesUlimits> = runtime
        .ulimits
        .iter()
        .map(|u| ResourcesUlimits {
            name: Some(u.name.clone()),
            soft: Some(u.soft),
            hard: Some(u.hard),
        })
        .collect();
    let devices: Vec<DeviceMapping> = runtime
        .devices
        .iter()
        .map(|d| DeviceMapping {
            path_on_host: Some(d.host.clone()),
            path_in_container: Some(d.container.clone()),
            cgroup_permissions: Some(d.permissions.clone()),
        })
        .collect();
    let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    HostConfig {
        log_config: runtime.log.as_ref().map(|log| HostConfigLogConfig {
            typ: log.driver.clone(),
            config: Some(log.options.clone().into_iter().collect()),
        }),
        init: runtime.init,
        extra_hosts: listed(&runtime.extra_hosts),
        cap_add: listed(&runtime.cap_add),
        privileged: runtime.privileged.then_some(true),
        dns: listed(&runtime.dns),
        dns_search: listed(&runtime.dns_search),
        ulimits: listed(&ulimits),
        sysctls: (!runtime.sysctls.is_empty())
            .then(|| runtime.sysctls.clone().into_iter().collect()),
        shm_size: runtime.shm_size.map(bytes),
        group_add: listed(&runtime.group_add),
        devices: listed(&devices),
        memory_swap: runtime.memory_swap,
        memory_reservation: runtime.memory_reservation.map(bytes),
        cpu_shares: runtime.cpu_shares,
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

pub(super) fn mount(spec: &MountSpec) -> Mount {
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

pub(super) fn health_config(health: &HealthSpec, api: ApiVersion) -> HealthConfig {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    HealthConfig {
        test: Some(health.test.clone()),
        interval: health.interval.map(nanos),
        timeout: health.timeout.map(nanos),
        retries: health.retries.map(i64::from),
        start_period: health.start_period.map(nanos),
        // An older engine would refuse the field, or ignore it silently.
        start_interval: health
            .start_interval
            .filter(|_| api >= START_INTERVAL_API)
            .map(nanos),
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
                start_interval: Some(Duration::from_secs(1)),
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
        let body = create_body(&green(), ApiVersion(1, 41));
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
        let body = create_body(&green(), ApiVersion(1, 41));
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
        let body = create_body(&spec, ApiVersion(1, 41));
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

    /// StartInterval goes only to an engine whose API has it (1.44).
    #[test]
    fn start_interval_only_where_the_api_has_it() {
        let old = create_body(&green(), ApiVersion(1, 41));
        assert_eq!(old.healthcheck.unwrap().start_interval, None);
        let new = create_body(&green(), START_INTERVAL_API);
        assert_eq!(new.healthcheck.unwrap().start_interval, Some(1_000_000_000));
    }

    #[test]
    fn runtime_options_become_the_engines_fields() {
        let spec = ContainerSpec {
            ports: green().ports,
            runtime: RuntimeSpec {
                log: Some(LogSpec {
                    driver: Some("json-file".to_owned()),
                    options: BTreeMap::from([("max-size".to_owned(), "10m".to_owned())]),
                }),
                init: Some(true),
                extra_hosts: vec!["db:10.0.0.5".to_owned()],
                cap_add: vec!["NET_ADMIN".to_owned()],
                privileged: true,
                working_dir: Some("/srv".to_owned()),
                hostname: Some("web".to_owned()),
                domainname: Some("example.org".to_owned()),
                dns: vec!["1.1.1.1".to_owned()],
                dns_search: vec!["example.org".to_owned()],
                expose: vec!["3000/tcp".to_owned(), "9000/udp".to_owned()],
                ulimits: vec![UlimitSpec {
                    name: "nofile".to_owned(),
                    soft: 1024,
                    hard: 2048,
                }],
                sysctls: BTreeMap::from([("net.core.somaxconn".to_owned(), "1024".to_owned())]),
                shm_size: Some(64 << 20),
                group_add: vec!["audio".to_owned()],
                tty: true,
                stdin_open: true,
                devices: vec![DeviceSpec {
                    host: "/dev/null".to_owned(),
                    container: "/dev/nothing".to_owned(),
                    permissions: "r".to_owned(),
                }],
                memory_swap: Some(-1),
                memory_reservation: Some(32 << 20),
                cpu_shares: Some(512),
            },
            ..Default::default()
        };
        let body = create_body(&spec, ApiVersion(1, 41));
        assert_eq!(body.hostname.as_deref(), Some("web"));
        assert_eq!(body.domainname.as_deref(), Some("example.org"));
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!((body.tty, body.open_stdin), (Some(true), Some(true)));
        // A published port is exposed once, beside the exposed-only ones.
        assert_eq!(
            body.exposed_ports,
            Some(vec!["3000/tcp".to_owned(), "9000/udp".to_owned()])
        );
        let host = body.host_config.unwrap();
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-size"], "10m");
        assert_eq!(host.init, Some(true));
        assert_eq!(host.extra_hosts, Some(vec!["db:10.0.0.5".to_owned()]));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.dns, Some(vec!["1.1.1.1".to_owned()]));
        assert_eq!(host.dns_search, Some(vec!["example.org".to_owned()]));
        let ulimit = &host.ulimits.unwrap()[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(1024), Some(2048))
        );
        assert_eq!(host.sysctls.unwrap()["net.core.somaxconn"], "1024");
        assert_eq!(host.shm_size, Some(64 << 20));
        assert_eq!(host.group_add, Some(vec!["audio".to_owned()]));
        let device = &host.devices.unwrap()[0];
        assert_eq!(device.path_in_container.as_deref(), Some("/dev/nothing"));
        assert_eq!(device.cgroup_permissions.as_deref(), Some("r"));
        assert_eq!(host.memory_swap, Some(-1));
        assert_eq!(host.memory_reservation, Some(32 << 20));
        assert_eq!(host.cpu_shares, Some(512));
    }

    /// Options left unset stay absent, so the engine's defaults apply.
    #[test]
    fn unset_options_are_left_to_the_engine() {
        let body = create_body(&ContainerSpec::default(), ApiVersion(1, 41));
        assert!(body.hostname.is_none() && body.working_dir.is_none() && body.tty.is_none());
        let host = body.host_config.unwrap();
        assert!(host.log_config.is_none() && host.init.is_none() && host.privileged.is_none());
        assert!(host.extra_hosts.is_none() && host.ulimits.is_none() && host.devices.is_none());
        assert!(host.memory_swap.is_none() && host.shm_size.is_none());
    }
}
