//! A container as cryptus sees it ([`Container`]), read from the engine's
//! inspect: its state, health, labels, published ports, addresses and volumes.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerSummary, EndpointSettings, HealthStatusEnum,
    MountPoint, PortBinding,
};
use chrono::{DateTime, Utc};

use super::{NUMBER_LABEL, ONEOFF_LABEL, SERVICE_LABEL};

/// A container as cryptus sees it, read from the engine's inspect.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub service: String,
    pub number: u32,
    /// The engine's state: created, running, restarting, exited, ...
    pub state: String,
    pub running: bool,
    /// none, starting, healthy or unhealthy; `None` without a healthcheck.
    pub health: Option<String>,
    /// The last healthcheck output, for messages.
    pub health_log: Option<String>,
    pub image: String,
    /// The id of the image the container runs.
    pub image_id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub labels: BTreeMap<String, String>,
    /// Container port ("3000/tcp") to the host address and port it is published on.
    pub published: BTreeMap<String, (String, u16)>,
    /// Network name to the container's address on it.
    pub addresses: BTreeMap<String, String>,
    /// Named volumes: volume name to where it is mounted.
    pub volumes: Vec<(String, String)>,
    /// The environment, `KEY=value`; private, as it may hold secrets.
    env: Vec<String>,
    /// The engine it is on, when not the one it was asked of: a Swarm
    /// task on another node, reached through that node's engine.
    pub node_engine: Option<super::Engine>,
}

impl Container {
    /// The engine to reach it through: its node's, else `asked` (the one
    /// it was found on).
    pub fn engine<'e>(&'e self, asked: &'e super::Engine) -> &'e super::Engine {
        self.node_engine.as_ref().unwrap_or(asked)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// One variable of the container's environment.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
    }

    /// Where the host reaches a container port: the published address, with
    /// "every interface" read as loopback.
    pub fn published_addr(&self, port: u16) -> Option<String> {
        let (ip, host_port) = self.published.get(&format!("{port}/tcp"))?;
        let ip = match ip.as_str() {
            "" | "0.0.0.0" => "127.0.0.1",
            "::" => "::1",
            other => other,
        };
        Some(if ip.contains(':') {
            format!("[{ip}]:{host_port}")
        } else {
            format!("{ip}:{host_port}")
        })
    }
}

/// The engine's inspect of a container as a [`Container`].
pub(super) fn from_inspect(response: ContainerInspectResponse) -> Container {
    let config = response.config.unwrap_or_default();
    let labels: BTreeMap<String, String> = config.labels.unwrap_or_default().into_iter().collect();
    let state = response.state.unwrap_or_default();
    let (health, health_log) = health(&state);
    let network_settings = response.network_settings.unwrap_or_default();
    Container {
        node_engine: None,
        env: config.env.unwrap_or_default(),
        volumes: named_volumes(response.mounts.unwrap_or_default()),
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        // A one-off container (a hook, `docker compose run`) runs for its
        // service but is none of its replicas: it counts as no service's.
        service: match labels.get(ONEOFF_LABEL).map(String::as_str) {
            Some("True") => String::new(),
            _ => labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
        },
        number: labels
            .get(NUMBER_LABEL)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        state: state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".to_owned()),
        running: state.running.unwrap_or(false),
        health,
        health_log,
        image: config.image.unwrap_or_default(),
        image_id: response.image.unwrap_or_default(),
        started_at: started_at(&state),
        exit_code: state.exit_code,
        labels,
        published: published(network_settings.ports.unwrap_or_default()),
        addresses: addresses(network_settings.networks.unwrap_or_default()),
    }
}

/// The health status, and the output of the last check, trimmed.
fn health(state: &ContainerState) -> (Option<String>, Option<String>) {
    let health = state.health.as_ref();
    let status = health.and_then(|h| h.status).map(|status| {
        match status {
            HealthStatusEnum::STARTING => "starting",
            HealthStatusEnum::HEALTHY => "healthy",
            HealthStatusEnum::UNHEALTHY => "unhealthy",
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => "none",
        }
        .to_owned()
    });
    let log = health
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .and_then(|last| last.output.as_deref())
        .map(|output| output.trim().to_owned());
    (status, log)
}

/// When it last started; the engine's zero time means never.
fn started_at(state: &ContainerState) -> Option<DateTime<Utc>> {
    state
        .started_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0)
}

/// Container port to the first host address and port it is published on.
fn published(ports: HashMap<String, Option<Vec<PortBinding>>>) -> BTreeMap<String, (String, u16)> {
    let mut published = BTreeMap::new();
    for (port, bindings) in ports {
        if let Some(binding) = bindings.unwrap_or_default().into_iter().next() {
            let host_port = binding.host_port.as_deref().and_then(|p| p.parse().ok());
            if let Some(host_port) = host_port {
                published.insert(port, (binding.host_ip.unwrap_or_default(), host_port));
            }
        }
    }
    published
}

/// Network name to the container's address there, where it has one.
fn addresses(networks: HashMap<String, EndpointSettings>) -> BTreeMap<String, String> {
    networks
        .into_iter()
        .filter_map(|(name, endpoint)| {
            endpoint
                .ip_address
                .filter(|ip| !ip.is_empty())
                .map(|ip| (name, ip))
        })
        .collect()
}

/// Named volumes: volume name to where it is mounted.
fn named_volumes(mounts: Vec<MountPoint>) -> Vec<(String, String)> {
    mounts
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter_map(|m| Some((m.name?, m.destination?)))
        .collect()
}

/// One container as a list call shows it: its id, name, state, health,
/// addresses and published ports. Two equal listings of a project say that
/// no container was created, removed, started, stopped, changed health or
/// moved to another address between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub state: String,
    /// healthy, unhealthy or starting, from the list's status text; empty
    /// without a healthcheck.
    pub health: &'static str,
    /// `network=address` on each network, sorted.
    pub addresses: Vec<String>,
    /// `port->host:port` for each published port, sorted.
    pub ports: Vec<String>,
}

impl Listed {
    pub fn of(summary: &ContainerSummary) -> Listed {
        let name = summary
            .names
            .as_ref()
            .and_then(|names| names.first())
            .map(|name| name.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        Listed {
            id: summary.id.clone().unwrap_or_default(),
            name,
            state: summary
                .state
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            health: health_in_status(summary.status.as_deref().unwrap_or_default()),
            addresses: summary_addresses(summary),
            ports: summary_ports(summary),
        }
    }
}

fn summary_addresses(summary: &ContainerSummary) -> Vec<String> {
    let mut addresses: Vec<String> = summary
        .network_settings
        .as_ref()
        .and_then(|settings| settings.networks.as_ref())
        .into_iter()
        .flatten()
        .map(|(network, endpoint)| {
            format!(
                "{network}={}",
                endpoint.ip_address.as_deref().unwrap_or_default()
            )
        })
        .collect();
    addresses.sort();
    addresses
}

fn summary_ports(summary: &ContainerSummary) -> Vec<String> {
    let mut ports: Vec<String> = summary
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some(format!(
                "{}->{}:{}",
                port.private_port,
                port.ip.as_deref().unwrap_or_default(),
                port.public_port?
            ))
        })
        .collect();
    ports.sort();
    ports
}

/// The health the engine writes into a listed container's status text
/// (`Up 3 minutes (healthy)`, `Up 2 seconds (health: starting)`).
fn health_in_status(status: &str) -> &'static str {
    if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("(unhealthy)") {
        "unhealthy"
    } else if status.contains("(health: starting)") {
        "starting"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listed_containers_health_is_read_from_its_status_text() {
        use super::health_in_status;
        assert_eq!(health_in_status("Up 3 minutes (healthy)"), "healthy");
        assert_eq!(health_in_status("Up 1 second (unhealthy)"), "unhealthy");
        assert_eq!(
            health_in_status("Up 2 seconds (health: starting)"),
            "starting"
        );
        assert_eq!(health_in_status("Up 5 hours"), "");
        assert_eq!(health_in_status("Exited (0) 3 minutes ago"), "");
    }

    use super::*;

    #[test]
    fn an_inspect_becomes_a_container() {
        let response: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc123",
            "Name": "/demo-cryptus-green-2",
            "Image": "sha256:feed",
            "Config": {
                "Image": "cryptus-app:v2",
                "Env": ["APP_VERSION=v2", "SECRET=x=y"],
                "Labels": {SERVICE_LABEL: "cryptus-green", NUMBER_LABEL: "2"}
            },
            "State": {
                "Status": "running",
                "Running": true,
                "ExitCode": 0,
                "StartedAt": "2026-01-02T03:04:05.123Z",
                "Health": {"Status": "unhealthy", "Log": [
                    {"ExitCode": 1, "Output": "first"},
                    {"ExitCode": 1, "Output": " 503 starting\n"}
                ]}
            },
            "NetworkSettings": {
                "Ports": {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}], "9000/tcp": null},
                "Networks": {"demo_cryptus": {"IPAddress": "172.18.0.3"}, "demo_idle": {"IPAddress": ""}}
            },
            "Mounts": [
                {"Type": "volume", "Name": "demo_redis-data", "Destination": "/data"},
                {"Type": "bind", "Source": "/srv/nginx", "Destination": "/etc/nginx"}
            ]
        }))
        .unwrap();
        let container = from_inspect(response);
        assert_eq!(container.id, "abc123");
        assert_eq!(container.name, "demo-cryptus-green-2");
        assert_eq!(
            (container.service.as_str(), container.number),
            ("cryptus-green", 2)
        );
        assert_eq!(
            (container.state.as_str(), container.running),
            ("running", true)
        );
        assert_eq!(container.health.as_deref(), Some("unhealthy"));
        assert_eq!(container.health_log.as_deref(), Some("503 starting"));
        assert_eq!(container.image, "cryptus-app:v2");
        assert_eq!(container.image_id, "sha256:feed");
        assert_eq!(
            container.started_at.map(|t| t.timestamp()),
            Some(1_767_323_045)
        );
        assert_eq!(container.env_var("SECRET"), Some("x=y"));
        assert_eq!(
            container.published_addr(3000).as_deref(),
            Some("127.0.0.1:49153")
        );
        assert_eq!(container.published_addr(9000), None);
        assert_eq!(
            container.addresses,
            BTreeMap::from([("demo_cryptus".to_owned(), "172.18.0.3".to_owned())])
        );
        assert_eq!(
            container.volumes,
            [("demo_redis-data".to_owned(), "/data".to_owned())]
        );
    }

    #[test]
    fn a_container_that_never_started_has_no_start_time() {
        let response: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Name": "/demo-redis-1",
            "State": {"Status": "created", "StartedAt": "0001-01-01T00:00:00Z"}
        }))
        .unwrap();
        let container = from_inspect(response);
        assert_eq!(container.state, "created");
        assert!(!container.running);
        assert_eq!(container.started_at, None);
        assert_eq!(container.health, None);
        assert!(container.published.is_empty() && container.volumes.is_empty());
    }
}
