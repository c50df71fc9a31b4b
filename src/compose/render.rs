//! The resolved model written back as a Compose document, for `cryptus
//! config`: what the model holds (files merged, variables interpolated,
//! anchors, includes and extends resolved, profiles applied), in the long
//! forms, so that cryptus reads it back to the same model. A field added to
//! [`Service`] is added here too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Compose, Limits, MountKind, Service};

#[derive(Debug, Serialize)]
pub struct Document<'a> {
    pub name: &'a str,
    pub services: BTreeMap<&'a str, ServiceDoc<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<&'a str, NetworkDoc<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<&'a str, VolumeDoc<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ServiceDoc<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    profiles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    build: Option<BuildDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    environment: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortDoc<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<MountDoc<'a>>,
    networks: BTreeMap<&'a str, Option<AliasesDoc<'a>>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    depends_on: BTreeMap<&'a str, DependsDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthDoc<'a>>,
    restart: &'a str,
    deploy: DeployDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_grace_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    read_only: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tmpfs: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cap_drop: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    security_opt: &'a [String],
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

#[derive(Debug, Serialize)]
struct BuildDoc<'a> {
    context: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dockerfile: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    args: &'a BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct PortDoc<'a> {
    target: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_ip: Option<&'a str>,
    protocol: &'a str,
}

#[derive(Debug, Serialize)]
struct MountDoc<'a> {
    #[serde(rename = "type")]
    kind: MountKind,
    #[serde(skip_serializing_if = "str::is_empty")]
    source: &'a str,
    target: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    read_only: bool,
}

#[derive(Debug, Serialize)]
struct AliasesDoc<'a> {
    aliases: &'a [String],
}

#[derive(Debug, Serialize)]
struct DependsDoc {
    condition: super::Condition,
    required: bool,
}

#[derive(Debug, Serialize)]
struct HealthDoc<'a> {
    test: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_period: Option<String>,
}

#[derive(Debug, Serialize)]
struct DeployDoc {
    replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<ResourcesDoc>,
}

#[derive(Debug, Serialize)]
struct ResourcesDoc {
    limits: LimitsDoc,
}

#[derive(Debug, Serialize)]
struct LimitsDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct NetworkDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    internal: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<&'a super::Ipam>,
}

#[derive(Debug, Serialize)]
pub struct VolumeDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

/// The document for project `name`.
pub fn document<'a>(name: &'a str, compose: &'a Compose) -> Document<'a> {
    Document {
        name,
        services: compose
            .services
            .iter()
            .map(|(name, service)| (name.as_str(), service_doc(service)))
            .collect(),
        networks: compose
            .networks
            .iter()
            .map(|(name, network)| {
                let doc = NetworkDoc {
                    driver: network.driver.as_deref(),
                    internal: network.internal,
                    labels: &network.labels,
                    ipam: network.ipam.as_ref(),
                };
                (name.as_str(), doc)
            })
            .collect(),
        volumes: compose
            .volumes
            .iter()
            .map(|(name, volume)| {
                let doc = VolumeDoc {
                    driver: volume.driver.as_deref(),
                    labels: &volume.labels,
                };
                (name.as_str(), doc)
            })
            .collect(),
    }
}

fn service_doc(service: &Service) -> ServiceDoc<'_> {
    ServiceDoc {
        profiles: &service.profiles,
        image: service.image.as_deref(),
        build: service.build.as_ref().map(|build| BuildDoc {
            context: &build.context,
            dockerfile: build.dockerfile.as_deref(),
            args: &build.args,
        }),
        command: service.command.as_deref(),
        entrypoint: service.entrypoint.as_deref(),
        environment: &service.environment,
        labels: &service.labels,
        ports: service.ports.iter().map(port_doc).collect(),
        volumes: service.mounts.iter().map(mount_doc).collect(),
        networks: service
            .networks
            .iter()
            .map(|n| {
                let aliases = (!n.aliases.is_empty()).then_some(AliasesDoc {
                    aliases: &n.aliases,
                });
                (n.name.as_str(), aliases)
            })
            .collect(),
        depends_on: service
            .depends_on
            .iter()
            .map(|d| {
                let doc = DependsDoc {
                    condition: d.condition,
                    required: d.required,
                };
                (d.service.as_str(), doc)
            })
            .collect(),
        healthcheck: service.healthcheck.as_ref().map(|h| HealthDoc {
            test: &h.test,
            interval: h.interval.map(duration),
            timeout: h.timeout.map(duration),
            retries: h.retries,
            start_period: h.start_period.map(duration),
        }),
        restart: &service.restart,
        deploy: deploy_doc(service.replicas, &service.limits),
        stop_grace_period: service.stop_grace_period.map(duration),
        stop_signal: service.stop_signal.as_deref(),
        user: service.user.as_deref(),
        read_only: service.read_only,
        tmpfs: &service.tmpfs,
        cap_drop: &service.cap_drop,
        security_opt: &service.security_opt,
    }
}

fn port_doc(port: &super::Port) -> PortDoc<'_> {
    PortDoc {
        target: port.container_port,
        published: port.host_port.map(|p| p.to_string()),
        host_ip: port.host_ip.as_deref(),
        protocol: &port.protocol,
    }
}

fn mount_doc(mount: &super::Mount) -> MountDoc<'_> {
    MountDoc {
        kind: mount.kind,
        source: &mount.source,
        target: &mount.target,
        read_only: mount.read_only,
    }
}

fn deploy_doc(replicas: u32, limits: &Limits) -> DeployDoc {
    let set = limits.cpus.is_some() || limits.memory.is_some() || limits.pids.is_some();
    DeployDoc {
        replicas,
        resources: set.then(|| ResourcesDoc {
            limits: LimitsDoc {
                cpus: limits.cpus.map(|c| c.to_string()),
                memory: limits.memory.map(|m| m.to_string()),
                pids: limits.pids,
            },
        }),
    }
}

/// A duration as Compose writes one; below a millisecond, in nanoseconds.
fn duration(value: Duration) -> String {
    if value.subsec_nanos() % 1_000_000 == 0 {
        super::duration::format(value)
    } else {
        format!("{}ns", value.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Profiles, Vars, load_texts};
    use super::*;

    #[test]
    fn the_document_reads_back_to_the_same_model() {
        let stack = include_str!("../../compose/docker-compose.zero-downtime.yml");
        let monitoring = include_str!("../../compose/docker-compose.monitoring.yml");
        let extra = "services:\n  tool:\n    image: busybox\n    profiles: [debug]\n    read_only: true\n    tmpfs: [/tmp]\n    volumes: [{type: tmpfs, target: /run}, /anonymous]\n    networks: {cryptus: {aliases: [t]}}\n    healthcheck: {disable: true}\n    user: '1000'\n    stop_grace_period: 1m30s\n    deploy: {resources: {limits: {pids: 100, cpus: '0.5'}}}\n    labels: {a: b}\n    cap_drop: [ALL]\n    security_opt: [no-new-privileges:true]\n    entrypoint: [sh, -c]\n    build: {context: ., dockerfile: Other, args: {V: '1'}}\nnetworks:\n  cryptus:\n    ipam:\n      config: [{subnet: 10.9.0.0/24}]\n";
        let files = [
            ("/p/compose/a.yml", stack),
            ("/p/compose/b.yml", monitoring),
            ("/p/compose/c.yml", extra),
        ];
        let all = Profiles::new(&["debug".to_owned()]).unwrap();
        let vars = Vars::default();
        let listed = ["/p/compose/a.yml", "/p/compose/b.yml", "/p/compose/c.yml"];
        let compose = load_texts(&listed, &files, &vars, &all).unwrap();
        let text = serde_yaml::to_string(&document("demo", &compose)).unwrap();
        let again = load_texts(
            &["/p/compose/r.yml"],
            &[("/p/compose/r.yml", &text)],
            &vars,
            &all,
        )
        .unwrap_or_else(|err| panic!("{err:#}\n{text}"));
        assert_eq!(again.name.as_deref(), Some("demo"));
        let model = |c: &Compose| serde_json::json!({"services": c.services, "networks": c.networks, "volumes": c.volumes});
        assert_eq!(model(&again), model(&compose), "{text}");
    }

    #[test]
    fn durations_are_written_as_compose_writes_them() {
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_micros(7)), "7000ns");
    }
}
