//! The project's stack as Swarm services, planned from the compose file:
//! plain values, no engine. Each compose service's container
//! ([`crate::stack::plan_container`], as on one engine) becomes a service
//! of the stack:
//!
//! - the active color: replicated (`deploy.replicas`), `endpoint_mode:
//!   dnsrr`, spread over nodes (`node.id`); the idle color is not created;
//! - nginx: one task on every manager node (the edge), its HTTP(S) ports
//!   published in host mode, its files given as configs of the swarm, its
//!   upstream naming the active color's `tasks.<service>`;
//! - every other service (redis): replicated as the file says (1 by
//!   default), `dnsrr`.
//!
//! A service's secrets and configs become secrets and configs of the swarm
//! named by their content (`<project>_<name>-<hash>`), given to its tasks
//! at the compose file's targets ([`grants`]).
//!
//! The compose file's `deploy.mode`, `endpoint_mode`, `labels` and
//! `placement` (constraints, spread preferences, `max_replicas_per_node`)
//! come before these defaults. The default endpoint is `dnsrr`: a swarm's
//! virtual IPs need IPVS, which not every kernel has, and `tasks.<service>`
//! names are what nginx follows.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::compose::{Compose, Kind, Service, Source};
use crate::engine::{MountSpec, STACK_IMAGE_LABEL, STACK_LABEL, ServiceMode, ServiceSpec};
use crate::error::usage;
use crate::nginx;
use crate::stack::{APP_PORT, Color, LB_SERVICE, Release, plan_container};

use super::service_name;

/// Where nginx's files go in its task: the project's `nginx/` files where
/// the compose file mounts them, the rendered ones in nginx's state dir.
pub const NGINX_CONF_DIR: &str = "/etc/cryptus/nginx";

/// Where nginx's task finds the files cryptus renders (configs of the
/// swarm, read-only); its entrypoint copies them into its state volume
/// ([`nginx::STATE_DIR`]), where the switch rewrites the upstream.
pub const SEED_DIR: &str = "/etc/cryptus/swarm";

/// nginx's entrypoint on a Swarm: `http.conf` from its config every time;
/// `upstream.conf` only into a state volume that has none, so a restarted
/// task keeps the color the last switch gave it; then nginx's command.
///
/// The configs are rendered before any nginx task runs to be asked, for
/// the newest nginx: here nginx itself is asked (`nginx -v`), on its node,
/// at every start, and takes out what it lacks. Older than 1.27.4 (or
/// naming no version), `http.conf` loses `keepalive_min_timeout` (without
/// it a reload closes idle keep-alive connections under clients about to
/// reuse them); older than 1.27.3, the upstream loses `resolve` and its
/// `resolver`: nginx then resolves `tasks.<service>` once, as it loads,
/// and cryptus gives it the tasks' addresses at each switch.
pub const SEED_SCRIPT: &str = r#"s=/etc/cryptus/swarm; d=/etc/nginx/cryptus
at_least() {
  set -- $(nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9]*\)\.\([0-9]*\)\.\([0-9]*\).*|\1 \2 \3|p') "$@"
  [ $# = 6 ] || return 1
  [ "$1" -gt "$4" ] || { [ "$1" = "$4" ] && { [ "$2" -gt "$5" ] || { [ "$2" = "$5" ] && [ "$3" -ge "$6" ]; }; }; }
}
mkdir -p "$d" && cp "$s/http.conf" "$d/http.conf" || exit 1
at_least 1 27 4 || sed -i '/^keepalive_min_timeout /d' "$d/http.conf" || exit 1
[ -s "$d/upstream.conf" ] || cp "$s/upstream.conf" "$d/upstream.conf" || exit 1
at_least 1 27 3 || sed -i -e '/^ *resolver /d' -e 's/ resolve / /' "$d/upstream.conf" || exit 1
exec "$@""#;

/// Spread a color's tasks over the nodes.
pub const SPREAD_NODES: &str = "node.id";
/// nginx runs on the managers, the edge of the swarm.
pub const EDGE_CONSTRAINT: &str = "node.role==manager";

/// A config of the swarm to make: a file nginx reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPlan {
    /// `<project>_nginx-<file>-<hash>`: a config never changes, so a new
    /// content gets a new name.
    pub name: String,
    /// Where nginx's task sees it.
    pub target: String,
    pub data: String,
}

/// The most a secret or config of the swarm may hold (the swarm's limit).
pub const MAX_GRANT_BYTES: u64 = 500 * 1024;

/// The longest name the swarm gives a secret or config.
const MAX_OBJECT_NAME: usize = 64;

/// A secret or config of the swarm to make, and where a service's tasks
/// see it. Its data shows in no `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantPlan {
    pub kind: Kind,
    /// `<project>_<name>-<hash>`: an object never changes, so a new
    /// content gets a new name.
    pub name: String,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for GrantPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantPlan")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("target", &self.target)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

/// The first 12 hex digits of the SHA-256 of `data`: what names an object
/// by its content. For a secret this is no more than anyone who can list
/// the swarm's secrets can learn anyway: a manager's API lets them run a
/// task that reads it.
fn content_hash(data: &[u8]) -> String {
    let hash = format!("{:x}", Sha256::digest(data));
    hash[..12].to_owned()
}

/// The secrets and configs `service` is granted, as objects of the swarm:
/// a file's content (read now: a missing, unreadable or too large file is
/// a usage error naming it, before anything changes), a variable's value,
/// or a config's inline content. Owned by root and readable by everyone
/// (0444) unless the grant says otherwise, as `docker stack deploy` gives
/// them.
pub fn grants(project: &str, compose: &Compose, service: &Service) -> Result<Vec<GrantPlan>> {
    let mut planned = Vec::new();
    for (kind, grants, declared) in [
        (Kind::Secret, &service.secrets, &compose.secrets),
        (Kind::Config, &service.configs, &compose.configs),
    ] {
        for grant in grants {
            let at = format!("services.{}.{}: {}", service.name, kind.key(), grant.name);
            // `compose::load` checked that every grant names a declared one.
            let Some(source) = declared.get(&grant.name) else {
                return Err(usage(
                    format!("{at} is not declared under the top-level {}", kind.key()),
                    "declare it, with file: or environment:",
                ));
            };
            let data = match (source, source.value()) {
                (Source::File(path), _) => read_granted(&at, path)?,
                (_, Some(value)) => value.expose().as_bytes().to_vec(),
                (_, None) => Vec::new(),
            };
            if data.len() as u64 > MAX_GRANT_BYTES {
                return Err(usage(
                    format!(
                        "{at} holds {} bytes; the swarm keeps at most {MAX_GRANT_BYTES}",
                        data.len()
                    ),
                    "give the service a volume for larger files",
                ));
            }
            let name = format!("{project}_{}-{}", grant.name, content_hash(&data));
            if name.len() > MAX_OBJECT_NAME {
                return Err(usage(
                    format!(
                        "{at}: the swarm's name for it, {name}, is longer than {MAX_OBJECT_NAME} characters"
                    ),
                    "give it a shorter name under the top-level key, or the project a shorter name (-p)",
                ));
            }
            planned.push(GrantPlan {
                kind,
                name,
                target: grant.target.clone(),
                uid: grant.uid.unwrap_or(0),
                gid: grant.gid.unwrap_or(0),
                mode: grant.mode.unwrap_or(0o444),
                data,
            });
        }
    }
    Ok(planned)
}

/// A granted file's content, at most [`MAX_GRANT_BYTES`] and one more
/// (so a larger file is told apart without reading it whole).
fn read_granted(at: &str, path: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let refused = |err: std::io::Error| {
        usage(
            format!("{at}: its file {path} cannot be read: {err}"),
            "create the file, or fix the path under the top-level key (relative to the compose file)",
        )
    };
    let file = std::fs::File::open(path).map_err(refused)?;
    let mut data = Vec::new();
    file.take(MAX_GRANT_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(refused)?;
    Ok(data)
}

/// The labels every object of the stack carries, as `docker stack` sets.
pub fn stack_labels(project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(STACK_LABEL.to_owned(), project.to_owned())])
}

/// nginx's files on a Swarm: the project's `nginx.conf` and `app.conf`
/// (its proxying bounded for a lost node: [`nginx::swarm_app_conf`]),
/// the http-level file and an upstream that follows the active color's
/// tasks through the swarm's DNS.
pub fn nginx_configs(
    project: &str,
    color: Color,
    project_files: &[(&str, String)],
    http_file: String,
) -> Result<Vec<ConfigPlan>> {
    let upstream = nginx::render_resolved_upstream(
        color,
        &service_name(project, color.service()),
        APP_PORT,
        &[],
    )?;
    let mut files: Vec<(String, String)> = project_files
        .iter()
        .map(|(name, text)| {
            let text = if *name == "app.conf" {
                nginx::swarm_app_conf(text)
            } else {
                text.clone()
            };
            (format!("{NGINX_CONF_DIR}/{name}"), text)
        })
        .collect();
    files.push((format!("{SEED_DIR}/{}", nginx::HTTP_FILE), http_file));
    files.push((format!("{SEED_DIR}/{}", nginx::UPSTREAM_FILE), upstream));
    Ok(files
        .into_iter()
        .map(|(target, data)| {
            let file = target
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .replace('.', "-");
            let hash = format!("{:x}", Sha256::digest(data.as_bytes()));
            ConfigPlan {
                name: format!("{project}_nginx-{file}-{}", &hash[..12]),
                target,
                data,
            }
        })
        .collect())
}

/// The services `start` creates, in dependency order: every enabled
/// service with replicas, of the colors only `active`.
pub fn services(compose: &Compose, active: Color) -> Result<Vec<&Service>> {
    Ok(compose
        .start_order()?
        .into_iter()
        .filter(|s| match Color::of_service(&s.name) {
            Some(color) => color == active,
            None => s.replicas > 0,
        })
        .collect())
}

/// A service as the swarm will run it, and what of the compose file it
/// leaves out.
#[derive(Debug)]
pub struct Planned {
    pub spec: ServiceSpec,
    /// One line per thing left out (a bind mount: a path on whichever node
    /// runs the task).
    pub warnings: Vec<String>,
    /// The secrets and configs to make and give its tasks
    /// ([`ServiceSpec::secrets`], [`ServiceSpec::configs`]).
    pub grants: Vec<GrantPlan>,
}

/// The Swarm service for a compose service. `release` is the active
/// color's. nginx's configs, and the service's secrets and configs
/// ([`Planned::grants`]), are given once they are made.
///
/// A service that keeps data in a named volume (redis), neither a color
/// nor the edge, with no placement of its own, is pinned to the node `home`
/// (a volume lives on one node: rescheduled elsewhere, the service would
/// start on an empty one). `root` is the project's directory on this
/// machine (its files: `monitoring/`, and binds of it left out).
pub fn service_spec(
    project: &str,
    root: &Path,
    compose: &Compose,
    service: &Service,
    release: &Release,
    home: Option<&str>,
) -> Result<Planned> {
    let color = Color::of_service(&service.name);
    let mut container = plan_container(
        project,
        compose,
        service,
        1,
        color.is_some().then_some(release),
    )
    .with_context(|| format!("planning service {}", service.name))?;
    let grants = grants(project, compose, service)?;
    // On one engine they are bind mounts of files on this host; on a
    // swarm, objects of the swarm given to each task.
    let targets: Vec<&str> = grants.iter().map(|g| g.target.as_str()).collect();
    container.mounts.retain(
        |m| !matches!(m, MountSpec::Bind { target, .. } if targets.contains(&target.as_str())),
    );
    container.files.clear();
    // The stack's label instead of Compose's: a task's container is the
    // swarm's, not one a one-engine cryptus may stop or replace.
    container
        .labels
        .retain(|key, _| !key.starts_with("com.docker.compose."));
    container.labels.extend(stack_labels(project));
    let edge = service.name == LB_SERVICE;
    // The compose file's Swarm keys first; cryptus's topology where it
    // says nothing.
    let swarm = &service.swarm;
    let placement = swarm.placement.clone().unwrap_or_default();
    let mode = mode_of(service, edge)?;
    let or_default = |given: Vec<String>, default: Option<&str>| {
        if given.is_empty() {
            default.map(str::to_owned).into_iter().collect()
        } else {
            given
        }
    };
    let mut labels = swarm.labels.clone();
    labels.extend(stack_labels(project));
    labels.insert(STACK_IMAGE_LABEL.to_owned(), container.image.clone());
    let mut spec = ServiceSpec {
        name: service_name(project, &service.name),
        labels,
        mode,
        // Not `vip` unless asked: a virtual IP needs IPVS in the kernel.
        dnsrr: swarm.endpoint_mode.as_deref() != Some("vip"),
        constraints: or_default(placement.constraints, edge.then_some(EDGE_CONSTRAINT)),
        spread: or_default(
            placement.preferences,
            color.is_some().then_some(SPREAD_NODES),
        ),
        max_per_node: placement.max_replicas_per_node,
        host_ports: Vec::new(),
        configs: Vec::new(),
        secrets: Vec::new(),
        container,
    };
    let keeps_data = spec
        .container
        .mounts
        .iter()
        .any(|m| matches!(m, MountSpec::Volume { name: Some(_), .. }));
    if let Some(node) = home
        && keeps_data
        && color.is_none()
        && !edge
        && spec.constraints.is_empty()
    {
        spec.constraints.push(format!("node.id=={node}"));
    }
    if edge {
        as_edge(&mut spec);
    }
    spec.container.ports.clear();
    let mut grants = grants;
    if !edge {
        grants.extend(monitoring_grants(
            project,
            root,
            compose,
            &mut spec.container.mounts,
        )?);
    }
    let warnings = leave_out_binds(&mut spec.container.mounts, &service.name, root, compose);
    Ok(Planned {
        spec,
        warnings,
        grants,
    })
}

/// The project's directory of monitoring files, beside `compose/`.
pub const MONITORING_DIR: &str = "monitoring";

/// The file under [`MONITORING_DIR`] that holds a password: a secret of
/// the swarm, never a config.
const PASSWORD_FILE: &str = "admin-password";

/// The most files one bind mount of the monitoring directory becomes.
const MAX_MONITORING_FILES: usize = 64;

/// The monitoring services' read-only bind mounts of the project's
/// [`MONITORING_DIR`] (a directory: each file in it, at the same path
/// under the mount's target) as configs of the swarm named by their
/// content, and its password file as a secret; those mounts are taken
/// out of `mounts`. Prometheus's configuration is rendered for the swarm
/// on the way ([`swarm_prometheus`]).
fn monitoring_grants(
    project: &str,
    root: &Path,
    compose: &Compose,
    mounts: &mut Vec<MountSpec>,
) -> Result<Vec<GrantPlan>> {
    let root = root.join(MONITORING_DIR);
    let mut planned = Vec::new();
    let mut taken = Vec::new();
    for (n, mount) in mounts.iter().enumerate() {
        let MountSpec::Bind {
            source,
            target,
            read_only: true,
        } = mount
        else {
            continue;
        };
        let source = std::path::Path::new(source);
        if !source.starts_with(&root) {
            continue;
        }
        for (path, at) in files_under(source, target)? {
            let at_bind = format!("the bind mount of {}", path.display());
            let mut data = read_granted(&at_bind, &path.to_string_lossy())?;
            let kind = if path.file_name().is_some_and(|n| n == PASSWORD_FILE) {
                Kind::Secret
            } else {
                Kind::Config
            };
            if path.file_name().is_some_and(|n| n == "prometheus.yml") {
                let text = String::from_utf8_lossy(&data);
                data = swarm_prometheus(&text, project, compose).into_bytes();
            }
            let mut hashed = at.as_bytes().to_vec();
            hashed.extend_from_slice(&data);
            planned.push(GrantPlan {
                kind,
                name: format!("{project}_monitoring-{}", content_hash(&hashed)),
                target: at,
                uid: 0,
                gid: 0,
                mode: 0o444,
                data,
            });
        }
        taken.push(n);
    }
    for n in taken.into_iter().rev() {
        mounts.remove(n);
    }
    Ok(planned)
}

/// The files of a bind mount's `source` (itself, when a file; else every
/// file under it but the password file, which is mounted on its own) and
/// where each shows under `target`; at most [`MAX_MONITORING_FILES`].
fn files_under(
    source: &std::path::Path,
    target: &str,
) -> Result<Vec<(std::path::PathBuf, String)>> {
    if !source.is_dir() {
        return Ok(vec![(source.to_owned(), target.to_owned())]);
    }
    let mut found = Vec::new();
    let mut dirs = vec![source.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n != PASSWORD_FILE) {
                let relative = path.strip_prefix(source).unwrap_or(&path);
                found.push((path.clone(), format!("{target}/{}", relative.display())));
            }
        }
        if found.len() > MAX_MONITORING_FILES {
            return Err(usage(
                format!(
                    "{} holds more than {MAX_MONITORING_FILES} files to give the monitoring services",
                    source.display()
                ),
                "keep only Prometheus's, Alertmanager's and Grafana's files there",
            ));
        }
    }
    found.sort();
    Ok(found)
}

/// Prometheus's configuration on a swarm: a `dns_sd_configs` name that is
/// a service of the stack becomes `tasks.<project>_<service>`, every task
/// of it on the overlay, followed as tasks move (one engine's names are
/// the compose services'); the rest stays as written, so one file serves
/// both.
pub fn swarm_prometheus(text: &str, project: &str, compose: &Compose) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let Some((head, names)) = line.split_once("names:") else {
            out.push_str(line);
            continue;
        };
        let mut rendered = names.to_owned();
        for name in compose.services.keys() {
            let quoted = format!("\"{name}\"");
            let tasks = format!("\"tasks.{}\"", service_name(project, name));
            rendered = rendered.replace(&quoted, &tasks);
        }
        out.push_str(head);
        out.push_str("names:");
        out.push_str(&rendered);
    }
    out
}

/// nginx at the edge: its ports with a fixed host port published on the
/// node running it, its files from configs (seeded by [`SEED_SCRIPT`] into
/// its state volume, the only mount it keeps).
fn as_edge(spec: &mut ServiceSpec) {
    // Only the ports with a fixed host port: the others (the status
    // port on loopback) are for one engine's cryptus.
    spec.host_ports = spec
        .container
        .ports
        .iter()
        .filter(|p| p.host_port.is_some())
        .cloned()
        .collect();
    // Its files come from configs, not from this host's directories;
    // its state volume stays (on each edge node), seeded from them.
    let (ep, cmd) = (&mut spec.container.entrypoint, &mut spec.container.command);
    let mut args = ep.take().unwrap_or_default();
    args.extend(cmd.take().unwrap_or_default());
    *ep = Some(vec![
        "sh".into(),
        "-c".into(),
        SEED_SCRIPT.into(),
        "sh".into(),
    ]);
    // No command: nginx's own (an entrypoint set here drops the image's
    // command, and the script would exec nothing).
    if args.is_empty() {
        args = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
    }
    *cmd = Some(args);
    spec.container
        .mounts
        .retain(|m| matches!(m, MountSpec::Volume { target, .. } if target == nginx::STATE_DIR));
}

/// The compose file's `deploy.mode`, else global for the edge and
/// replicated for the rest.
fn mode_of(service: &Service, edge: bool) -> Result<ServiceMode> {
    let replicated = ServiceMode::Replicated(u64::from(service.replicas.max(1)));
    match service.swarm.mode.as_deref() {
        None if edge => Ok(ServiceMode::Global),
        None | Some("replicated") => Ok(replicated),
        Some("global") => Ok(ServiceMode::Global),
        Some(other) => Err(usage(
            format!(
                "services.{}: deploy.mode {other} does not run a long-lived service",
                service.name
            ),
            "use deploy.mode replicated or global",
        )),
    }
}

/// Paths every node has of its own, which the exporters and agents that
/// read their node bind: kept on a Swarm with no warning.
pub(super) const NODE_PATHS: [&str; 10] = [
    "/",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/run/docker.sock",
    "/etc/localtime",
    "/etc/timezone",
];

/// Leaves out, with a warning for each, the bind mounts of the project's
/// own files (below `root`, the project's directory, or the compose
/// files' directory): they are on this machine, and a task may run on any
/// node. A bind of any other path is kept, as `docker stack deploy` keeps
/// it: a path of whichever node runs the task. One of the [`NODE_PATHS`]
/// every node has (`/`, `/sys`, the engine's socket, for the exporters
/// that read their node) is kept quietly; another is kept with a warning
/// that each node that may run the task must have it.
fn leave_out_binds(
    mounts: &mut Vec<MountSpec>,
    service: &str,
    root: &Path,
    compose: &Compose,
) -> Vec<String> {
    let mut warnings = Vec::new();
    mounts.retain(|mount| {
        let MountSpec::Bind { source, target, .. } = mount else {
            return true;
        };
        let path = Path::new(source);
        if path.starts_with(root) || path.starts_with(&compose.working_dir) {
            warnings.push(format!(
                "services.{service}: the bind mount {source}:{target} is left out on a Docker Swarm \
                 (a file of the project on this machine, not on the nodes: a config or secret \
                 of the compose file gives a file to every task)"
            ));
            return false;
        }
        if !NODE_PATHS.iter().any(|node| path == Path::new(node)) {
            warnings.push(format!(
                "services.{service}: the bind mount {source}:{target} names a path on whichever \
                 node runs the task: every node its placement allows must have it"
            ));
        }
        true
    });
    warnings
}

#[cfg(test)]
mod tests {
    /// Runs [`SEED_SCRIPT`] with an `nginx` that says `says` to `-v`, in
    /// a directory of its own: whether the seeded http.conf kept
    /// `keepalive_min_timeout`.
    fn seeded_keeps_min_timeout(says: &str) -> bool {
        seeded(says).0
    }

    /// The seed script run as nginx's entrypoint with a stub `nginx -v`:
    /// whether http.conf kept `keepalive_min_timeout`, and whether the
    /// upstream kept `resolve`.
    fn seeded(says: &str) -> (bool, bool) {
        let dir = tempfile::tempdir().expect("a directory");
        let root = dir.path();
        let (seed, state, bin) = (root.join("seed"), root.join("state"), root.join("bin"));
        for d in [&seed, &bin] {
            std::fs::create_dir_all(d).expect("a directory");
        }
        std::fs::write(
            seed.join("http.conf"),
            "limit_req_zone x;\nkeepalive_min_timeout 1s;\nmap $host $y { default 0; }\n",
        )
        .expect("http.conf");
        std::fs::write(
            seed.join("upstream.conf"),
            "upstream u {\n    zone u 64k;\n    resolver 127.0.0.11 valid=1s ipv6=off;\n    server tasks.a:3000 resolve max_fails=1;\n}\n",
        )
        .expect("upstream.conf");
        let nginx = bin.join("nginx");
        std::fs::write(&nginx, format!("#!/bin/sh\necho '{says}' >&2\n")).expect("nginx");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&nginx, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let script = SEED_SCRIPT
            .replace("/etc/cryptus/swarm", &seed.to_string_lossy())
            .replace("/etc/nginx/cryptus", &state.to_string_lossy());
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = std::process::Command::new("sh")
            .args(["-c", &script, "sh", "true"])
            .env("PATH", path)
            .output()
            .expect("sh");
        assert!(
            output.status.success(),
            "the seed script failed for {says:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let http = std::fs::read_to_string(state.join("http.conf")).expect("seeded http.conf");
        assert!(
            http.contains("limit_req_zone x;") && http.contains("map $host"),
            "{http}"
        );
        let upstream =
            std::fs::read_to_string(state.join("upstream.conf")).expect("seeded upstream.conf");
        assert!(
            upstream.contains("server tasks.a:3000 ") && upstream.contains("max_fails=1;"),
            "{upstream}"
        );
        let resolves = upstream.contains(" resolve ") && upstream.contains("resolver ");
        assert!(
            resolves || !(upstream.contains("resolve") || upstream.contains("resolver")),
            "{upstream}"
        );
        (http.contains("keepalive_min_timeout 1s;"), resolves)
    }

    #[test]
    fn the_seed_script_keeps_upstream_resolve_only_for_an_nginx_that_has_it() {
        assert!(seeded("nginx version: nginx/1.30.6").1);
        assert!(seeded("nginx version: nginx/1.27.3").1);
        assert!(!seeded("nginx version: nginx/1.27.2").1);
        assert!(!seeded("nginx version: nginx/1.22.1 (Debian)").1);
        assert!(!seeded("sh: nginx: not found").1);
    }

    #[test]
    fn the_seed_script_keeps_keepalive_min_timeout_only_for_an_nginx_that_has_it() {
        assert!(seeded_keeps_min_timeout("nginx version: nginx/1.30.6"));
        assert!(seeded_keeps_min_timeout("nginx version: nginx/1.27.4"));
        assert!(seeded_keeps_min_timeout("nginx version: nginx/2.0.0"));
        assert!(!seeded_keeps_min_timeout("nginx version: nginx/1.27.3"));
        assert!(!seeded_keeps_min_timeout(
            "nginx version: nginx/1.22.1 (Debian)"
        ));
        assert!(!seeded_keeps_min_timeout("nginx version: openresty/1.27.4"));
        assert!(!seeded_keeps_min_timeout("sh: nginx: not found"));
    }

    use super::*;

    /// [`service_spec`] for project `shop` in the compose file's own
    /// directory, with [`release`].
    fn spec_for(compose: &Compose, service: &Service, home: Option<&str>) -> Result<Planned> {
        service_spec(
            "shop",
            &compose.working_dir,
            compose,
            service,
            &release(),
            home,
        )
    }

    /// The compose file `text`, with `beside` files next to it.
    fn load(text: &str, beside: &[(&str, &str)]) -> Compose {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in beside {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let file = dir.path().join("compose.yml");
        std::fs::write(&file, text).unwrap();
        crate::compose::load(&[file], &crate::compose::Vars::default()).unwrap()
    }

    fn compose() -> Compose {
        load(
            r#"
services:
  redis:
    image: redis:7
    volumes: [data:/data, /srv/conf:/conf, ./conf:/conf2]
    networks: [cryptus]
  cryptus-blue:
    image: app:1
    ports: ["127.0.0.1::3000"]
    networks: [cryptus]
    depends_on: [redis]
    deploy: { replicas: 3 }
  cryptus-green:
    image: app:1
    networks: [cryptus]
  nginx:
    image: nginx:1.30
    ports: ["0.0.0.0:8080:80", "127.0.0.1::8081"]
    volumes: ["./nginx:/etc/cryptus/nginx:ro", "state:/etc/nginx/cryptus"]
    networks: [cryptus]
    depends_on: [cryptus-blue]
  extra:
    image: x:1
    networks: [cryptus]
    deploy: { replicas: 0 }
networks:
  cryptus: {}
volumes:
  data: {}
  state: {}
"#,
            &[],
        )
    }

    fn release() -> Release {
        Release {
            image: "app:2".into(),
            version: "2.0".into(),
        }
    }

    #[test]
    fn the_active_color_spreads_over_nodes_with_dnsrr_and_no_ports() {
        let compose = compose();
        let names: Vec<&str> = services(&compose, Color::Blue)
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["redis", "cryptus-blue", "nginx"]);
        let blue = compose.service("cryptus-blue").unwrap();
        let spec = spec_for(&compose, blue, Some("n1")).unwrap().spec;
        assert_eq!(spec.name, "shop_cryptus-blue");
        assert_eq!(spec.mode, ServiceMode::Replicated(3));
        assert!(spec.dnsrr);
        assert_eq!(spec.spread, ["node.id"]);
        assert!(spec.constraints.is_empty() && spec.host_ports.is_empty());
        assert!(spec.container.ports.is_empty());
        assert_eq!(spec.container.image, "app:2");
        assert_eq!(spec.container.env["INSTANCE_COLOR"], "blue");
        assert_eq!(spec.labels[STACK_LABEL], "shop");
        assert_eq!(spec.labels[STACK_IMAGE_LABEL], "app:2");
        assert_eq!(spec.container.labels[STACK_LABEL], "shop");
        assert!(
            !spec
                .container
                .labels
                .keys()
                .any(|k| k.starts_with("com.docker.compose.")),
            "{:?}",
            spec.container.labels
        );
        assert_eq!(spec.container.networks[0].name, "shop_cryptus");
    }

    #[test]
    fn nginx_runs_on_every_manager_with_host_ports_and_configs() {
        let compose = compose();
        let nginx = compose.service("nginx").unwrap();
        let planned = spec_for(&compose, nginx, Some("n1")).unwrap();
        assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);
        let spec = planned.spec;
        assert_eq!(spec.mode, ServiceMode::Global);
        assert_eq!(spec.constraints, ["node.role==manager"]);
        let ports: Vec<(u16, Option<u16>)> = spec
            .host_ports
            .iter()
            .map(|p| (p.container_port, p.host_port))
            .collect();
        assert_eq!(ports, [(80, Some(8080))]);
        let targets: Vec<&str> = spec
            .container
            .mounts
            .iter()
            .map(|m| match m {
                MountSpec::Volume { target, .. } | MountSpec::Bind { target, .. } => {
                    target.as_str()
                }
            })
            .collect();
        assert_eq!(targets, ["/etc/nginx/cryptus"], "its state volume only");
        assert_eq!(spec.container.image, "nginx:1.30", "nginx keeps its image");
        let entry = spec.container.entrypoint.as_deref().unwrap();
        assert_eq!(entry[..2], ["sh", "-c"]);
        assert!(entry[2].contains("exec \"$@\""));
        // The compose file gives nginx no command: nginx's own is what the
        // script execs (the entrypoint set here drops the image's).
        assert!(nginx.command.is_none());
        assert_eq!(
            spec.container.command.as_deref().unwrap(),
            ["nginx", "-g", "daemon off;"]
        );

        let redis = compose.service("redis").unwrap();
        let planned = spec_for(&compose, redis, Some("n1")).unwrap();
        let spec = planned.spec;
        assert_eq!(spec.mode, ServiceMode::Replicated(1));
        assert!(spec.spread.is_empty() && spec.dnsrr);
        let sources: Vec<Option<&str>> = spec
            .container
            .mounts
            .iter()
            .map(|m| match m {
                MountSpec::Volume { name, .. } => name.as_deref(),
                MountSpec::Bind { source, .. } => Some(source.as_str()),
            })
            .collect();
        assert_eq!(
            sources,
            [Some("shop_data"), Some("/srv/conf")],
            "its volume and the node's path stay"
        );
        assert_eq!(spec.constraints, ["node.id==n1"], "pinned with its volume");
        let conf = compose.working_dir.join("conf");
        assert_eq!(
            planned.warnings,
            [
                "services.redis: the bind mount /srv/conf:/conf names a path on whichever node runs the task: every node its placement allows must have it".to_owned(),
                format!(
                    "services.redis: the bind mount {}:/conf2 is left out on a Docker Swarm (a file of the project on this machine, not on the nodes: a config or secret of the compose file gives a file to every task)",
                    conf.display()
                )
            ]
        );
    }

    /// The compose file `text` in `dir`, with `DB_PASSWORD` set.
    fn load_in(dir: &std::path::Path, text: &str) -> Compose {
        let file = dir.join("compose.yml");
        std::fs::write(&file, text).unwrap();
        let vars = crate::compose::Vars::new(BTreeMap::from([(
            "DB_PASSWORD".to_owned(),
            "pw-from-env".to_owned(),
        )]));
        crate::compose::load(&[file], &vars).unwrap()
    }

    const GRANTED: &str = "services:\n  cryptus-blue:\n    image: app:1\n    networks: [cryptus]\n\
         \x20   secrets: [token, db, {source: token, target: /etc/token, uid: \"1000\", gid: 1001, mode: \"0400\"}]\n\
         \x20   configs: [{source: app, target: /etc/app.ini}, motd]\n\
         networks:\n  cryptus: {}\n\
         secrets:\n  token:\n    file: ./token.txt\n  db:\n    environment: DB_PASSWORD\n\
         configs:\n  app:\n    file: ./app.ini\n  motd:\n    content: hello\n";

    #[test]
    fn secrets_and_configs_become_swarm_objects_named_by_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "s3cret").unwrap();
        std::fs::write(dir.path().join("app.ini"), "[app]\n").unwrap();
        let compose = load_in(dir.path(), GRANTED);
        let blue = compose.service("cryptus-blue").unwrap();
        let planned = spec_for(&compose, blue, None).unwrap();
        assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);
        assert!(
            planned.spec.container.mounts.is_empty() && planned.spec.container.files.is_empty(),
            "no bind mount or file of this host: {:?}",
            planned.spec.container.mounts
        );
        let hash = |data: &str| content_hash(data.as_bytes());
        let seen: Vec<(Kind, String, &str, u32, u32, u32)> = planned
            .grants
            .iter()
            .map(|g| {
                (
                    g.kind,
                    g.name.clone(),
                    g.target.as_str(),
                    g.uid,
                    g.gid,
                    g.mode,
                )
            })
            .collect();
        let token = format!("shop_token-{}", hash("s3cret"));
        assert_eq!(
            seen,
            [
                (
                    Kind::Secret,
                    token.clone(),
                    "/run/secrets/token",
                    0,
                    0,
                    0o444
                ),
                (
                    Kind::Secret,
                    format!("shop_db-{}", hash("pw-from-env")),
                    "/run/secrets/db",
                    0,
                    0,
                    0o444
                ),
                (Kind::Secret, token, "/etc/token", 1000, 1001, 0o400),
                (
                    Kind::Config,
                    format!("shop_app-{}", hash("[app]\n")),
                    "/etc/app.ini",
                    0,
                    0,
                    0o444
                ),
                (
                    Kind::Config,
                    format!("shop_motd-{}", hash("hello")),
                    "/motd",
                    0,
                    0,
                    0o444
                ),
            ]
        );
        assert_eq!(planned.grants[0].data, b"s3cret");
        let shown = format!("{:?}", planned.grants);
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw-from-env"),
            "{shown}"
        );

        // A new content is a new object; the old one stays for the tasks
        // that use it.
        std::fs::write(dir.path().join("token.txt"), "rotated").unwrap();
        let again = grants("shop", &compose, blue).unwrap();
        assert_eq!(again[0].name, format!("shop_token-{}", hash("rotated")));
    }

    #[test]
    fn a_granted_file_gone_or_too_large_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "s3cret").unwrap();
        std::fs::write(dir.path().join("app.ini"), "[app]\n").unwrap();
        let compose = load_in(dir.path(), GRANTED);
        let blue = compose.service("cryptus-blue").unwrap();
        let path = dir.path().join("token.txt");
        std::fs::remove_file(&path).unwrap();
        let err = spec_for(&compose, blue, None).unwrap_err();
        assert_eq!(crate::error::classify(&err).0, crate::error::EXIT_USAGE);
        let text = err.to_string();
        assert!(
            text.contains("services.cryptus-blue.secrets: token")
                && text.contains(&*path.to_string_lossy()),
            "{text}"
        );
        let huge = vec![b'x'; usize::try_from(MAX_GRANT_BYTES).unwrap() + 1];
        std::fs::write(&path, huge).unwrap();
        let err = grants("shop", &compose, blue).unwrap_err();
        assert_eq!(crate::error::classify(&err).0, crate::error::EXIT_USAGE);
        assert!(err.to_string().contains("at most 512000"), "{err}");
        std::fs::write(&path, "s3cret").unwrap();
        let long = "p".repeat(60);
        let err = grants(&long, &compose, blue).unwrap_err();
        assert!(err.to_string().contains("longer than 64"), "{err}");
    }

    #[test]
    fn the_compose_files_swarm_keys_come_before_the_defaults() {
        let compose = load(
            r#"
services:
  cryptus-blue:
    image: app:1
    networks: [cryptus]
    deploy:
      replicas: 4
      endpoint_mode: vip
      labels: {team: web}
      placement:
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
  nginx:
    image: nginx:1.30
    networks: [cryptus]
    deploy:
      mode: replicated
      replicas: 2
      placement: {constraints: [node.labels.edge==true]}
  redis:
    image: redis:7
    networks: [cryptus]
    deploy: {mode: replicated-job}
networks:
  cryptus: {}
"#,
            &[],
        );
        let spec = |name: &str| spec_for(&compose, compose.service(name).unwrap(), None);
        let blue = spec("cryptus-blue").unwrap().spec;
        assert_eq!(blue.mode, ServiceMode::Replicated(4));
        assert!(!blue.dnsrr, "vip as asked");
        assert_eq!(blue.spread, ["node.labels.zone"]);
        assert_eq!(blue.max_per_node, Some(2));
        assert_eq!(blue.labels["team"], "web");
        assert_eq!(blue.labels[STACK_LABEL], "shop");
        let nginx = spec("nginx").unwrap().spec;
        assert_eq!(nginx.mode, ServiceMode::Replicated(2));
        assert_eq!(nginx.constraints, ["node.labels.edge==true"]);
        let err = spec("redis").unwrap_err();
        assert!(
            err.to_string().contains("deploy.mode replicated-job"),
            "{err}"
        );
    }

    #[test]
    fn nginx_configs_are_named_by_content() {
        let files = [("nginx.conf", "events {}".to_owned())];
        let one = nginx_configs("shop", Color::Blue, &files, "# http".into()).unwrap();
        let targets: Vec<&str> = one.iter().map(|c| c.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/etc/cryptus/nginx/nginx.conf",
                "/etc/cryptus/swarm/http.conf",
                "/etc/cryptus/swarm/upstream.conf"
            ]
        );
        assert!(
            one[0].name.starts_with("shop_nginx-nginx-conf-"),
            "{}",
            one[0].name
        );
        assert!(one[2].data.contains("tasks.shop_cryptus-blue:3000 resolve"));
        let green = nginx_configs("shop", Color::Green, &files, "# http".into()).unwrap();
        assert_eq!(one[0].name, green[0].name, "same file, same config");
        assert_ne!(
            one[2].name, green[2].name,
            "another upstream, another config"
        );
    }

    /// The project's shipped monitoring files, rendered for a swarm: the
    /// app's colors are found as `tasks.<project>_<color>`, the rest of
    /// Prometheus's file is as written.
    #[test]
    fn prometheus_finds_the_stacks_tasks_on_a_swarm() {
        let compose = compose();
        let shipped = include_str!("../../monitoring/prometheus.yml");
        let text = swarm_prometheus(shipped, "shop", &compose);
        for color in ["cryptus-blue", "cryptus-green"] {
            assert!(
                text.contains(&format!("- names: [\"tasks.shop_{color}\"]")),
                "{text}"
            );
        }
        assert!(
            text.contains("- names: [\"cadvisor\"]"),
            "not a service here"
        );
        let lines = |t: &str| {
            t.lines()
                .filter(|l| !l.contains("names:"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&text), lines(shipped), "only the names change");
    }

    /// A monitoring service's read-only bind mounts of the project's
    /// monitoring directory become configs (and its password file a
    /// secret) at the same paths; a bind of a node's path stays.
    #[test]
    fn monitoring_mounts_become_configs_and_the_password_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["compose", "monitoring/grafana/dashboards"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let write = |path: &str, text: &str| std::fs::write(root.join(path), text).unwrap();
        write(
            "monitoring/prometheus.yml",
            "scrape_configs:\n  - dns_sd_configs:\n      - names: [\"cryptus-blue\"]\n",
        );
        write("monitoring/grafana/dashboards/d.json", "{}");
        write("monitoring/grafana/admin-password", "pw");
        write(
            "compose/c.yml",
            r#"
services:
  cryptus-blue:
    image: app:1
  grafana:
    image: g:1
    volumes:
      - ../monitoring:/etc/m:ro
      - ../monitoring/grafana/admin-password:/etc/pw:ro
      - /srv:/srv:ro
      - /sys:/host/sys:ro
"#,
        );
        let file = root.join("compose/c.yml");
        let compose = crate::compose::load(&[file], &crate::compose::Vars::default()).unwrap();
        let grafana = compose.service("grafana").unwrap();
        let planned = service_spec("shop", root, &compose, grafana, &release(), None).unwrap();
        let grants: Vec<(Kind, &str)> = planned
            .grants
            .iter()
            .map(|g| (g.kind, g.target.as_str()))
            .collect();
        assert_eq!(
            grants,
            [
                (Kind::Config, "/etc/m/grafana/dashboards/d.json"),
                (Kind::Config, "/etc/m/prometheus.yml"),
                (Kind::Secret, "/etc/pw"),
            ]
        );
        let prometheus = String::from_utf8(planned.grants[1].data.clone()).unwrap();
        assert!(
            prometheus.contains("tasks.shop_cryptus-blue"),
            "{prometheus}"
        );
        assert!(
            planned
                .grants
                .iter()
                .all(|g| g.name.starts_with("shop_monitoring-"))
        );
        let bind = |source: &str, target: &str| MountSpec::Bind {
            source: source.into(),
            target: target.into(),
            read_only: true,
        };
        assert_eq!(
            planned.spec.container.mounts,
            [bind("/srv", "/srv"), bind("/sys", "/host/sys")],
            "the node's paths stay"
        );
        // /sys is every node's; /srv must be there on each.
        assert_eq!(planned.warnings.len(), 1, "{:?}", planned.warnings);
        assert!(planned.warnings[0].contains("/srv:/srv names a path on whichever node"));
    }
}
