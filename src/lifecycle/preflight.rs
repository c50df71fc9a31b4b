//! What must hold before a start creates anything: every image is here,
//! every host port is free, the secrets and bind-mounted files exist. A
//! refusal here leaves the stack as it was.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::compose::{MountKind, Port, Service};
use crate::context::Stack;
use crate::engine::{Container, Engine};
use crate::error::failed_with_hint;
use crate::lb::{self, HTTPS_PORT};
use crate::nginx;
use crate::stack::{Color, LB_SERVICE};

impl Stack<'_> {
    /// What must hold before anything is created: every image is here, every
    /// host port is free (or this project's running container holds it),
    /// the secrets and bind-mounted files exist.
    pub async fn preflight(&self) -> Result<()> {
        let services = self.services_to_run()?;
        let images: Vec<(String, String)> = services
            .iter()
            .filter(|s| Color::of_service(&s.name).is_none())
            .filter_map(|s| Some((s.name.clone(), s.image.clone()?)))
            .collect();
        self.check_images(&images).await?;
        let existing = self.containers().await?;
        // The colors publish engine-chosen ports, and which one starts is
        // known only once nginx's volume is read.
        let publishing: Vec<&Service> = services
            .iter()
            .filter(|s| Color::of_service(&s.name).is_none())
            .collect();
        self.check_ports(&publishing, &existing).await?;
        // The secrets first: they are bind-mounted files too.
        self.ensure_secrets().await?;
        for service in &services {
            self.check_bind_sources(service)?;
        }
        Ok(())
    }

    /// The services `start` runs, nginx as it runs here: a service with
    /// `deploy.replicas: 0` is left out, as in Compose; both colors are in.
    fn services_to_run(&self) -> Result<Vec<Service>> {
        let lb = lb::service(self.compose, &self.project.dir)?;
        Ok(self
            .compose
            .services
            .values()
            .filter(|s| s.replicas > 0 || Color::of_service(&s.name).is_some())
            .map(|s| {
                if s.name == LB_SERVICE {
                    lb.clone()
                } else {
                    s.clone()
                }
            })
            .collect())
    }

    /// Fails, naming every image that is missing, before anything is changed.
    pub(super) async fn check_images(&self, images: &[(String, String)]) -> Result<()> {
        let mut missing = Vec::new();
        for (service, image) in images {
            if self.engine.image_labels(image).await?.is_none() {
                missing.push(format!("{image} (service {service})"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(failed_with_hint(
            format!("the engine has no image {}", missing.join(", ")),
            "make the offline images with `scripts/make-images.sh`, or `docker pull` them where a registry is reachable; NGINX_IMAGE, REDIS_IMAGE and CRYPTUS_IMAGE choose them",
        ))
    }

    /// Bind-mounted files must exist, or the engine would make empty
    /// directories in their place.
    fn check_bind_sources(&self, service: &Service) -> Result<()> {
        for mount in &service.mounts {
            if mount.kind == MountKind::Bind && !std::path::Path::new(&mount.source).exists() {
                return Err(crate::error::usage(
                    format!(
                        "{} (mounted into {}) does not exist",
                        mount.source, service.name
                    ),
                    "run `cryptus init` to write the default files",
                ));
            }
        }
        Ok(())
    }

    /// Fails, naming every host port a service would publish that something
    /// else holds: another container (any project) or, when the engine runs
    /// here, any process.
    async fn check_ports(&self, services: &[&Service], existing: &[Container]) -> Result<()> {
        check_published_once(services)?;
        // This project's own containers (running, or restarting) hold their
        // ports for the stack this start keeps or replaces.
        let ours = |port: u16| {
            existing
                .iter()
                .any(|c| c.published.values().any(|(_, p)| *p == port))
        };
        let mut engine_ports = self.engine.published_host_ports().await?;
        engine_ports.retain(|(_, project, _)| project.as_deref() != Some(&self.project.name));
        let mut taken = Vec::new();
        for service in services {
            for port in &service.ports {
                let Some(host_port) = port.host_port.filter(|p| !ours(*p)) else {
                    continue;
                };
                if let Some(holder) = holder(&engine_ports, port, host_port) {
                    taken.push((service.name.clone(), port.container_port, host_port, holder));
                }
            }
        }
        let Some((service, container_port, host_port, _)) = taken.first() else {
            return Ok(());
        };
        let all: Vec<String> = taken
            .iter()
            .map(|(s, _, p, h)| format!("{p} ({s}, held by {h})"))
            .collect();
        Err(failed_with_hint(
            format!(
                "host port {} is taken, so nothing was created",
                all.join(", ")
            ),
            format!(
                "free port {host_port}, or choose another with {}",
                port_variable(service, *container_port)
            ),
        ))
    }
}

/// Whether something on this host listens on `port` (EADDRINUSE when
/// binding it). Other errors (a privileged port) tell nothing.
fn port_in_use(host_ip: Option<&str>, port: u16, protocol: &str) -> bool {
    let ip: std::net::IpAddr = host_ip
        .filter(|ip| !ip.is_empty())
        .and_then(|ip| ip.trim_matches(['[', ']']).parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = std::net::SocketAddr::new(ip, port);
    let result = if protocol == "udp" {
        std::net::UdpSocket::bind(addr).map(drop)
    } else {
        std::net::TcpListener::bind(addr).map(drop)
    };
    matches!(result, Err(err) if err.kind() == std::io::ErrorKind::AddrInUse)
}

/// The variable that sets a published port, for hints.
fn port_variable(service: &str, container_port: u16) -> String {
    match (service, container_port) {
        (LB_SERVICE, nginx::HTTP_PORT) => "CRYPTUS_HTTP_PORT".to_owned(),
        (LB_SERVICE, HTTPS_PORT) => "CRYPTUS_HTTPS_PORT".to_owned(),
        ("prometheus", 9090) => "PROMETHEUS_PORT".to_owned(),
        ("alertmanager", 9093) => "ALERTMANAGER_PORT".to_owned(),
        ("cadvisor", 8080) => "CADVISOR_PORT".to_owned(),
        ("grafana", 3000) => "GRAFANA_PORT".to_owned(),
        _ => format!("the ports: of service {service} in the compose file"),
    }
}

/// A host port published twice is the configuration contradicting itself:
/// a usage error.
fn check_published_once(services: &[&Service]) -> Result<()> {
    let mut wanted: BTreeMap<(u16, &str), &str> = BTreeMap::new();
    for service in services {
        for port in &service.ports {
            if let Some(host_port) = port.host_port
                && let Some(other) =
                    wanted.insert((host_port, port.protocol.as_str()), &service.name)
            {
                return Err(crate::error::usage(
                    format!(
                        "host port {host_port} is published twice ({other} and {}), so nothing was created",
                        service.name
                    ),
                    format!(
                        "give each its own port: {} sets this one",
                        port_variable(&service.name, port.container_port)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Who holds `host_port`: a container of another project, or, when the
/// engine runs here, another process.
fn holder(
    engine_ports: &[(String, Option<String>, u16)],
    port: &Port,
    host_port: u16,
) -> Option<String> {
    engine_ports
        .iter()
        .find(|(_, _, p)| *p == host_port)
        .map(|(name, _, _)| format!("container {name}"))
        .or_else(|| {
            (Engine::is_local() && port_in_use(port.host_ip.as_deref(), host_port, &port.protocol))
                .then(|| "another process".to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_the_variable_that_sets_it() {
        assert_eq!(port_variable("nginx", 80), "CRYPTUS_HTTP_PORT");
        assert_eq!(port_variable("nginx", 443), "CRYPTUS_HTTPS_PORT");
        assert_eq!(port_variable("grafana", 3000), "GRAFANA_PORT");
        assert!(port_variable("web", 8000).contains("service web"));
    }

    #[test]
    fn a_listening_port_is_seen_as_in_use() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_in_use(Some("127.0.0.1"), port, "tcp"));
        assert!(port_in_use(None, port, "tcp"));
        drop(listener);
        assert!(!port_in_use(Some("127.0.0.1"), port, "tcp"));
    }
}
