//! The load balancer as this project runs it: the nginx service (its HTTPS
//! port published only with a certificate), the http-level file cryptus
//! renders for it from the compose file's labels, and whether TLS is on.
//! The upstream file is not here: it follows the switch, not the project.

use std::path::Path;

use anyhow::{Context, Result};

use crate::compose::{Compose, Service};
use crate::nginx;
use crate::stack::LB_SERVICE;

/// nginx's HTTPS port inside its container.
pub const HTTPS_PORT: u16 = 443;

/// The http-level settings cryptus renders: the rate limits the compose
/// file asks for, `keepalive_min_timeout` when `keepalive_min_timeout`
/// (nginx has it: [`nginx::has_keepalive_min_timeout`]), and HTTPS when
/// nginx/ssl/ holds cert.pem and key.pem.
pub fn http_file(
    compose: &Compose,
    project_dir: &Path,
    keepalive_min_timeout: bool,
) -> Result<String> {
    let labels = compose
        .service(LB_SERVICE)
        .map(|s| s.labels.clone())
        .unwrap_or_default();
    let site = labels
        .get("cryptus.rate.site")
        .map_or("30r/s", String::as_str);
    let api = labels
        .get("cryptus.rate.api")
        .map_or("10r/s", String::as_str);
    let settings = nginx::HttpSettings {
        site_rate: site,
        api_rate: api,
        keepalive_min_timeout,
        tls: tls(project_dir),
    };
    nginx::render_http(&settings).map_err(|err| {
        crate::error::usage(
            format!("{err:#}"),
            "set CRYPTUS_RATE_SITE and CRYPTUS_RATE_API to rates such as 30r/s",
        )
    })
}

/// The nginx service as it runs here: the HTTPS port is published only
/// when nginx/ssl/ holds a certificate and key, so a stack without them
/// neither takes nor needs port 443.
pub fn service(compose: &Compose, project_dir: &Path) -> Result<Service> {
    let mut service = compose
        .service(LB_SERVICE)
        .context("the compose file has no nginx service")?
        .clone();
    if !tls(project_dir) {
        service.ports.retain(|p| p.container_port != HTTPS_PORT);
    }
    Ok(service)
}

/// Whether nginx/ssl/ holds cert.pem and key.pem.
pub fn tls(project_dir: &Path) -> bool {
    let ssl = project_dir.join("nginx/ssl");
    ssl.join("cert.pem").is_file() && ssl.join("key.pem").is_file()
}
