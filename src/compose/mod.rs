//! The compose model: cryptus reads the stack's Compose files itself.
//!
//! [`load`] checks each file's text with serde_yaml, interpolating `${VAR}`
//! from the process environment over the `.env` beside the file, and rejects
//! any key it does not support (naming the key, the file and the line). The
//! files then merge as value trees under the Compose Specification's rules
//! ([`sources`], [`merge`]); the merged tree is read into plain [`Service`]s
//! that the engine layer turns into containers, those the active
//! [`profiles`] leave out set aside.

pub mod duration;
mod env_file;
pub mod hooks;
pub mod interpolate;
mod lenient;
mod limits;
mod merge;
mod model;
mod options;
mod paths;
pub mod profiles;
pub mod render;
mod secrets;
mod sources;
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

pub use hooks::{Hook, Hooks};
pub use interpolate::Vars;
pub use limits::{MAX_ENV_FILE_BYTES, MAX_FILE_BYTES, MAX_NESTING};
use model::{Either, ShortOrLong, Text};
pub use options::{ContainerOptions, Device, Logging, Swarm, Ulimit};
pub use profiles::Profiles;
pub use secrets::{Grant, Kind, SECRETS_DIR, Sensitive, Source};
pub use sources::{MAX_DEPTH, MAX_FILES};

/// The network a service joins when it names none, as in Compose.
pub const DEFAULT_NETWORK: &str = "default";

#[derive(Clone, Debug, Serialize)]
pub struct Compose {
    /// The project name the files give (`name:`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    /// The services no active profile enables, with their profiles.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub disabled: BTreeMap<String, Vec<String>>,
    /// The files, absolute, in the order given.
    pub files: Vec<PathBuf>,
    /// Compose's project directory: the first file's directory. Relative bind
    /// mounts and build contexts are resolved against it.
    pub working_dir: PathBuf,
    /// The top-level `secrets` and `configs`: where each value comes from.
    pub secrets: BTreeMap<String, Source>,
    pub configs: BTreeMap<String, Source>,
    /// `x-cryptus: hooks:`, the commands a deploy or rollback runs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: Hooks,
}

#[derive(Clone, Debug, Serialize)]
pub struct Service {
    pub name: String,
    /// The profiles that enable the service; none: it always runs. Left out
    /// of the configuration hash when empty, as before profiles existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Every file that defines the service (a base, its overrides), for
    /// messages; `file` is the first.
    #[serde(skip)]
    pub defined_in: Vec<PathBuf>,
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<Port>,
    pub mounts: Vec<Mount>,
    pub networks: Vec<ServiceNetwork>,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: String,
    pub replicas: u32,
    pub limits: Limits,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub user: Option<String>,
    pub read_only: bool,
    pub tmpfs: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    /// The file that defines the service, for messages.
    #[serde(skip)]
    pub file: PathBuf,
    /// `logging`, `init`, `extra_hosts` and the other runtime options.
    pub options: ContainerOptions,
    /// The secrets and configs it is granted.
    pub secrets: Vec<Grant>,
    pub configs: Vec<Grant>,
    /// The deploy keys only Swarm applies.
    pub swarm: Swarm,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Build {
    pub context: String,
    pub dockerfile: Option<String>,
    pub args: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Port {
    /// The host address; `None` binds every interface.
    pub host_ip: Option<String>,
    /// The host port; `None` lets the engine choose a free one.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// A volume's name as the file writes it, or a bind mount's host path
    /// (absolute after [`load`]); empty for tmpfs and anonymous volumes.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceNetwork {
    pub name: String,
    pub aliases: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[serde(rename = "service_started")]
    Started,
    #[serde(rename = "service_healthy")]
    Healthy,
    #[serde(rename = "service_completed_successfully")]
    CompletedSuccessfully,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
    pub required: bool,
    /// Restart this service when cryptus recreates the dependency.
    pub restart: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Healthcheck {
    /// The engine's form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
    /// The interval during the start period (the engine's API 1.44 and newer).
    pub start_interval: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub pids: Option<i64>,
    /// Memory and swap together; -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<u64>,
    pub cpu_shares: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Network {
    pub driver: Option<String>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// `ipam:`, when the file sets address ranges.
    pub ipam: Option<Ipam>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Vec<IpamRange>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IpamRange {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Volume {
    pub driver: Option<String>,
    pub labels: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------
// Short and long forms.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPort {
    target: model::Parsed<u32>,
    published: Option<Text>,
    host_ip: Option<Text>,
    protocol: Option<Text>,
}

impl ShortOrLong for Port {
    type Long = LongPort;
    const EXPECTING: &'static str = "a port as \"[ip:][host:]container[/protocol]\" or a map";

    fn from_short(text: &str) -> Result<Port, String> {
        parse_port(text)
    }

    fn from_long(long: LongPort) -> Result<Port, String> {
        let container_port = port_number(&long.target.0.to_string())?;
        let host_port = match long.published.map(|t| t.0) {
            Some(p) if !p.trim().is_empty() => Some(port_number(p.trim())?),
            _ => None,
        };
        let host_ip = long.host_ip.map(|t| t.0).filter(|ip| !ip.is_empty());
        if let Some(ip) = &host_ip {
            ip.parse::<IpAddr>()
                .map_err(|_| format!("host_ip {ip:?} is not an IP address"))?;
        }
        let protocol = protocol(long.protocol.map(|t| t.0).as_deref().unwrap_or("tcp"))?;
        Ok(Port {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

fn protocol(text: &str) -> Result<String, String> {
    match text {
        "tcp" | "udp" | "sctp" => Ok(text.to_owned()),
        other => Err(format!("protocol {other:?} is not tcp, udp or sctp")),
    }
}

fn port_number(text: &str) -> Result<u16, String> {
    if text.contains('-') {
        return Err(format!("port ranges such as {text:?} are not supported"));
    }
    text.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("{text:?} is not a port number (1-65535)"))
}

/// `[ip:][host:]container[/protocol]`; an IPv6 address is written in brackets.
pub fn parse_port(text: &str) -> Result<Port, String> {
    let text = text.trim();
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, proto)) => (spec, self::protocol(proto)?),
        None => (text, "tcp".to_owned()),
    };
    let (host_ip, rest) = if let Some(after) = spec.strip_prefix('[') {
        let (ip, rest) = after
            .split_once(']')
            .ok_or_else(|| format!("port {text:?}: unclosed '[' in the address"))?;
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("port {text:?}: expected ':' after the address"))?;
        (Some(ip.to_owned()), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            1 | 2 => (None, spec),
            3 => (Some(parts[0].to_owned()), &spec[parts[0].len() + 1..]),
            _ => {
                return Err(format!(
                    "port {text:?} is not \"[ip:][host:]container[/protocol]\""
                ));
            }
        }
    };
    if let Some(ip) = &host_ip {
        ip.parse::<IpAddr>()
            .map_err(|_| format!("port {text:?}: {ip:?} is not an IP address"))?;
    }
    let (host_port, container_port) = match rest.split_once(':') {
        Some(("", container)) => (None, port_number(container)?),
        Some((host, container)) => (Some(port_number(host)?), port_number(container)?),
        None => (None, port_number(rest)?),
    };
    Ok(Port {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongMount {
    #[serde(rename = "type")]
    kind: Text,
    source: Option<Text>,
    target: Text,
    read_only: Option<model::Parsed<bool>>,
}

impl ShortOrLong for Mount {
    type Long = LongMount;
    const EXPECTING: &'static str = "a volume as \"source:target[:ro]\" or a map";

    fn from_short(text: &str) -> Result<Mount, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [target] => ("", *target, ""),
            [source, target] => (*source, *target, ""),
            [source, target, mode] => (*source, *target, *mode),
            _ => return Err(format!("volume {text:?} is not \"source:target[:mode]\"")),
        };
        let read_only = match mode {
            "" | "rw" => false,
            "ro" => true,
            other => return Err(format!("volume {text:?}: mode {other:?} is not ro or rw")),
        };
        let kind = if source.starts_with(['/', '.', '~']) {
            MountKind::Bind
        } else {
            MountKind::Volume
        };
        mount(kind, source, target, read_only)
    }

    fn from_long(long: LongMount) -> Result<Mount, String> {
        let kind = match long.kind.0.as_str() {
            "volume" => MountKind::Volume,
            "bind" => MountKind::Bind,
            "tmpfs" => MountKind::Tmpfs,
            other => {
                return Err(format!(
                    "volume type {other:?} is not volume, bind or tmpfs"
                ));
            }
        };
        let source = long.source.map(|t| t.0).unwrap_or_default();
        mount(
            kind,
            &source,
            &long.target.0,
            long.read_only.is_some_and(|r| r.0),
        )
    }
}

fn mount(kind: MountKind, source: &str, target: &str, read_only: bool) -> Result<Mount, String> {
    if !target.starts_with('/') {
        return Err(format!(
            "the mount target {target:?} is not an absolute path"
        ));
    }
    if kind == MountKind::Bind && source.is_empty() {
        return Err(format!("the bind mount at {target:?} has no source"));
    }
    Ok(Mount {
        kind,
        source: source.to_owned(),
        target: target.to_owned(),
        read_only,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongBuild {
    context: Option<Text>,
    dockerfile: Option<Text>,
    #[serde(default)]
    args: model::KeyValues,
}

impl ShortOrLong for Build {
    type Long = LongBuild;
    const EXPECTING: &'static str = "a build context path or a map";

    fn from_short(text: &str) -> Result<Build, String> {
        Ok(Build {
            context: text.to_owned(),
            dockerfile: None,
            args: BTreeMap::new(),
        })
    }

    fn from_long(long: LongBuild) -> Result<Build, String> {
        Ok(Build {
            context: long.context.map_or_else(|| ".".to_owned(), |t| t.0),
            dockerfile: long.dockerfile.map(|t| t.0),
            args: long.args.0,
        })
    }
}

// ---------------------------------------------------------------------------
// Loading.

/// Reads the variables for a compose file: the process environment over the
/// `.env` beside the first file, if there is one.
pub fn variables(first_file: &Path) -> Result<Vars> {
    let env_path = first_file.parent().unwrap_or(Path::new(".")).join(".env");
    let env_file = match read_env_file(&env_path) {
        Ok(values) => values,
        Err(err) if is_not_found(&err) => BTreeMap::new(),
        Err(err) => return Err(err),
    };
    Ok(Vars::from_env_file_and_process(env_file))
}

/// Reads and parses a `.env` file, bounded in size.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = limits::read_bounded(path, limits::MAX_ENV_FILE_BYTES, "the file")
        .with_context(|| format!("reading {}", path.display()))?;
    interpolate::parse_env_file(&text).map_err(|err| anyhow!("{}: {err}", path.display()))
}

fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Parses, interpolates, merges and checks the compose files, every service
/// enabled whatever its profiles.
pub fn load(files: &[PathBuf], vars: &Vars) -> Result<Compose> {
    load_with(files, vars, &Profiles::all())
}

/// Parses, interpolates and merges the compose files in order (each
/// later one over the earlier ones, with their includes and extends), keeps
/// the services the active `profiles` enable, and checks the result.
pub fn load_with(files: &[PathBuf], vars: &Vars, profiles: &Profiles) -> Result<Compose> {
    load_from(files, vars, profiles, &|path| {
        limits::read_compose_file(path)
    })
}

fn load_from(
    files: &[PathBuf],
    vars: &Vars,
    profiles: &Profiles,
    read: sources::Reader,
) -> Result<Compose> {
    let first = files.first().context("no compose file given")?;
    let working_dir = first.parent().unwrap_or(Path::new(".")).to_path_buf();
    let merged = sources::load(files, vars, &working_dir, read)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    // A relative env_file left in the merged tree is the first file's.
    let file = model::service_keys::with_base(&working_dir, || merged_model(merged.tree, vars))
        .map_err(|err| anyhow!("{}: {err}", names.join(", ")))?;
    let mut compose = Compose {
        name: None,
        services: BTreeMap::new(),
        networks: BTreeMap::new(),
        volumes: BTreeMap::new(),
        disabled: BTreeMap::new(),
        files: files.to_vec(),
        working_dir,
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
        hooks: Hooks::new(),
    };
    build(&mut compose, file, &merged.origins)?;
    profiles.apply(&mut compose)?;
    check(&compose)?;
    Ok(compose)
}

/// Parses one file's text: every key checked, interpolated, with the line
/// of what is wrong. Errors carry the key path, line and column.
pub fn parse(text: &str, vars: &Vars) -> Result<model::File, String> {
    let (tagged, resets) = checked_tree(text)?;
    let file = typed(text, vars, resets.as_ref())?;
    tagged?;
    Ok(file)
}

/// One file: checked as [`parse`] does, then as the tree it merges.
fn parse_file(text: &str, vars: &Vars) -> Result<sources::Parsed, String> {
    let (tagged, resets) = checked_tree(text)?;
    let file = typed(text, vars, resets.as_ref())?;
    let tagged = tagged?;
    Ok(sources::Parsed {
        includes: file
            .include
            .unwrap_or_default()
            .into_iter()
            .map(|Either(include)| include)
            .collect(),
        tree: tree::prepare(tagged.value, vars)?,
        cleared: tagged.cleared,
    })
}

/// The limits, then the value tree (whose error waits: the typed pass names
/// a broken file's key path first).
type Checked = (Result<tree::Tagged, String>, Option<lenient::Resets>);

fn checked_tree(text: &str) -> Result<Checked, String> {
    if text.trim().is_empty() {
        return Err("the file is empty".to_owned());
    }
    if text.len() as u64 > limits::MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} KiB",
            limits::MAX_FILE_BYTES / 1024
        ));
    }
    limits::check_yaml(text)?;
    let mut tagged = tree::parse(text);
    let resets = tagged
        .as_mut()
        .ok()
        .map(|tagged| std::mem::take(&mut tagged.resets));
    Ok((tagged, resets))
}

/// The typed pass over a file's own text, interpolating as it reads.
fn typed(text: &str, vars: &Vars, resets: Option<&lenient::Resets>) -> Result<model::File, String> {
    interpolate::with_vars(vars, || {
        let de = serde_yaml::Deserializer::from_str(text);
        model::File::deserialize(lenient::Lenient::new(de, resets))
    })
    .map_err(|err| shorten(&err.to_string()))
}

/// The merged tree read as the model. Every file's text was checked with
/// its lines already, so what fails here (a combination) names its key path.
fn merged_model(tree: serde_yaml::Mapping, vars: &Vars) -> Result<model::File, String> {
    let text = serde_yaml::to_string(&tree).map_err(|err| err.to_string())?;
    interpolate::with_resolved(vars, || {
        let de = serde_yaml::Deserializer::from_str(&text);
        model::File::deserialize(lenient::Lenient::new(de, None))
    })
    .map_err(|err| without_position(&shorten(&err.to_string())))
}

/// A message without serde_yaml's position, which names a line of no file.
fn without_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => format!("{} (after merging)", &message[..at]),
        None => message.to_owned(),
    }
}

/// serde's "unknown field `x`, expected one of <every key>" is long; the
/// supported keys are in README.md, so the message keeps the key and place.
fn shorten(message: &str) -> String {
    let message = message.replace("unknown field", "unsupported key");
    match (message.find(", expected one of"), message.find(" at line")) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{}", &message[..start], &message[end..])
        }
        (Some(start), None) => message[..start].to_owned(),
        _ => message,
    }
}

/// The model's networks, volumes and services, from the merged file.
fn build(
    compose: &mut Compose,
    file: model::File,
    origins: &BTreeMap<String, Vec<PathBuf>>,
) -> Result<()> {
    compose.name = file.name.map(|t| t.0);
    compose.hooks = file
        .x_cryptus
        .map(hooks::Extension::hooks)
        .unwrap_or_default();
    for (name, raw) in file.networks {
        compose
            .networks
            .insert(name, network(raw.unwrap_or_default()));
    }
    for (name, raw) in file.volumes {
        let raw = raw.unwrap_or_default();
        compose.volumes.insert(
            name,
            Volume {
                driver: raw.driver.map(|t| t.0),
                labels: raw.labels.0,
            },
        );
    }
    for (kind, declared) in [(Kind::Secret, file.secrets), (Kind::Config, file.configs)] {
        for (name, raw) in declared {
            let source = secrets::source(kind, &name, raw, &compose.working_dir)
                .map_err(|err| anyhow!("{}: {err}", file_list(&compose.files)))?;
            match kind {
                Kind::Secret => compose.secrets.insert(name, source),
                Kind::Config => compose.configs.insert(name, source),
            };
        }
    }
    for (name, raw) in file.services {
        let defined_in = origins
            .get(&name)
            .filter(|files| !files.is_empty())
            .cloned()
            .unwrap_or_else(|| compose.files.clone());
        let first = defined_in.first().cloned().unwrap_or_default();
        let mut service = resolve(&name, raw, &first, &compose.working_dir)
            .map_err(|err| anyhow!("{}: services.{name}: {err}", file_list(&defined_in)))?;
        service.defined_in = defined_in;
        compose.services.insert(name, service);
    }
    Ok(())
}

/// Files as messages name them: `a.yml, b.yml`.
fn file_list(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}

impl Service {
    /// Where the service is, for messages: `a.yml, b.yml: services.web`.
    pub fn location(&self) -> String {
        format!("{}: services.{}", file_list(&self.defined_in), self.name)
    }
}

fn network(raw: model::RawNetwork) -> Network {
    Network {
        driver: raw.driver.map(|t| t.0),
        internal: raw.internal.is_some_and(|i| i.0),
        labels: raw.labels.0,
        ipam: raw.ipam.map(|ipam| Ipam {
            driver: ipam.driver.map(|t| t.0),
            config: ipam
                .config
                .into_iter()
                .map(|range| IpamRange {
                    subnet: range.subnet.map(|t| t.0),
                    ip_range: range.ip_range.map(|t| t.0),
                    gateway: range.gateway.map(|t| t.0),
                })
                .collect(),
        }),
    }
}

fn resolve(
    name: &str,
    mut raw: model::RawService,
    file: &Path,
    base: &Path,
) -> Result<Service, String> {
    if !valid_name(name) {
        return Err("a service name may hold only letters, digits, '_', '.' and '-'".to_owned());
    }
    let extra = options::take(&mut raw)?;
    let image = raw.image.map(|i| i.0);
    let build = raw.build.map(|Either(build)| build);
    if image.is_none() && build.is_none() {
        return Err("has neither image nor build".to_owned());
    }
    let mut mounts: Vec<Mount> = raw.volumes.into_iter().map(|Either(m)| m).collect();
    for mount in &mut mounts {
        if mount.kind == MountKind::Bind {
            mount.source = absolute(&mount.source, base);
        }
    }
    let networks = match raw.networks {
        Some(model::NamesOr(list)) => list
            .into_iter()
            .map(|(name, options)| ServiceNetwork {
                name,
                aliases: options.aliases.into_iter().map(|t| t.0).collect(),
            })
            .collect(),
        None => vec![ServiceNetwork {
            name: DEFAULT_NETWORK.to_owned(),
            aliases: Vec::new(),
        }],
    };
    let depends_on = resolve_depends_on(raw.depends_on)?;
    let healthcheck = raw.healthcheck.map(resolve_healthcheck).transpose()?;
    let restart = raw.restart.map_or_else(|| "no".to_owned(), |t| t.0);
    restart_policy(&restart)?;
    let deploy = raw.deploy;
    let replicas = deploy
        .as_ref()
        .and_then(|d| d.replicas)
        .map_or(1, |r| u32::try_from(r.0).unwrap_or(1));
    let limits = deploy
        .and_then(|d| d.resources)
        .and_then(|r| r.limits)
        .map(|l| Limits {
            cpus: l.cpus.map(|c| c.0.0),
            memory: l.memory.map(|m| m.0.0),
            pids: l.pids.map(|p| p.0),
            ..Limits::default()
        })
        .unwrap_or_default();
    Ok(Service {
        name: name.to_owned(),
        profiles: raw.profiles.into_iter().map(|p| p.0).collect(),
        defined_in: vec![file.to_path_buf()],
        image,
        build,
        command: raw.command.map(|c| c.0),
        entrypoint: raw.entrypoint.map(|c| c.0),
        environment: extra.environment(raw.environment.0),
        labels: raw.labels.0,
        ports: raw.ports.into_iter().map(|Either(p)| p).collect(),
        mounts,
        networks,
        depends_on,
        healthcheck,
        restart: extra.restart(restart),
        replicas,
        limits: extra.limits(limits)?,
        stop_grace_period: raw.stop_grace_period.map(|d| d.0),
        stop_signal: raw.stop_signal.map(|t| t.0),
        user: raw.user.map(|t| t.0),
        read_only: raw.read_only.is_some_and(|r| r.0),
        tmpfs: raw.tmpfs.into_iter().map(|t| t.0).collect(),
        cap_drop: raw.cap_drop.into_iter().map(|t| t.0).collect(),
        security_opt: raw.security_opt.into_iter().map(|t| t.0).collect(),
        file: file.to_path_buf(),
        options: extra.options,
        secrets: extra.secrets,
        configs: extra.configs,
        swarm: extra.swarm,
    })
}

/// `depends_on`, short or long, with its condition and `required`.
fn resolve_depends_on(
    raw: Option<model::NamesOr<model::DependsOptions>>,
) -> Result<Vec<Dependency>, String> {
    let mut depends_on = Vec::new();
    for (service, options) in raw.map(|d| d.0).unwrap_or_default() {
        let condition = match options.condition.as_ref().map(|t| t.0.as_str()) {
            None | Some("service_started") => Condition::Started,
            Some("service_healthy") => Condition::Healthy,
            Some("service_completed_successfully") => Condition::CompletedSuccessfully,
            Some(other) => {
                return Err(format!(
                    "depends_on.{service}.condition {other:?} is not service_started, service_healthy or service_completed_successfully"
                ));
            }
        };
        depends_on.push(Dependency {
            service,
            condition,
            required: options.required.is_none_or(|r| r.0),
            restart: options.restart.is_some_and(|r| r.0),
        });
    }
    Ok(depends_on)
}

/// A service's `healthcheck`: `disable`, or a test in Compose's forms (a
/// plain string is a shell command).
fn resolve_healthcheck(h: model::RawHealthcheck) -> Result<Healthcheck, String> {
    if h.disable.is_some_and(|d| d.0) {
        return Ok(Healthcheck {
            test: vec!["NONE".to_owned()],
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
            start_interval: None,
        });
    }
    let test = match h.test {
        Some(model::Command(test)) => test,
        None => return Err("healthcheck has no test".to_owned()),
    };
    let test = match test.first().map(String::as_str) {
        Some("CMD" | "CMD-SHELL" | "NONE") => test,
        // A plain string test is a shell command, as in Compose.
        Some(_) => vec!["CMD-SHELL".to_owned(), test.join(" ")],
        None => return Err("healthcheck.test is empty".to_owned()),
    };
    Ok(Healthcheck {
        test,
        interval: h.interval.map(|d| d.0),
        timeout: h.timeout.map(|d| d.0),
        retries: h.retries.and_then(|r| u32::try_from(r.0).ok()),
        start_period: h.start_period.map(|d| d.0),
        start_interval: h.start_interval.map(|d| d.0),
    })
}

pub(super) fn absolute(path: &str, base: &Path) -> String {
    let expanded = match path.strip_prefix("~/") {
        Some(rest) => std::env::var("HOME")
            .map_or_else(|_| PathBuf::from(path), |home| Path::new(&home).join(rest)),
        None => PathBuf::from(path),
    };
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    };
    // Lexically drop `.` and `..`, so the engine gets a clean path even when
    // the file does not exist yet.
    let mut clean = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean.to_string_lossy().into_owned()
}

/// The most restarts `restart: on-failure:N` may ask for.
pub const MAX_RESTARTS: i64 = 10_000;

/// The engine's restart policy for a Compose `restart` value.
pub fn restart_policy(text: &str) -> Result<(String, Option<i64>), String> {
    match text {
        "no" | "always" | "unless-stopped" | "on-failure" => Ok((text.to_owned(), None)),
        other => match other.strip_prefix("on-failure:").map(str::parse::<i64>) {
            Some(Ok(count)) if (0..=MAX_RESTARTS).contains(&count) => {
                Ok(("on-failure".to_owned(), Some(count)))
            }
            _ => Err(format!(
                "restart {other:?} is not no, always, unless-stopped or on-failure[:N] (N from 0 to {MAX_RESTARTS})"
            )),
        },
    }
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks an image reference against the engine's grammar, loosely: a name of
/// lowercase path components with an optional registry, tag and digest. It
/// refuses spaces, shell characters and anything the engine would refuse.
pub fn check_image_reference(reference: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("image reference {reference:?} is invalid: {why}"));
    if reference.is_empty() {
        return bad("it is empty");
    }
    if reference.len() > 255 {
        return bad("it is longer than 255 characters");
    }
    if let Some(c) = reference
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        return bad(&format!("it contains {c:?}"));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let ok = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return bad("the digest is not algorithm:hex");
        }
    }
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || tag.len() > 128 || tag.contains(['/', ':', '@']) {
            return bad(
                "the tag must start with a letter, digit or '_' and be at most 128 characters",
            );
        }
    }
    for (index, component) in name.split('/').enumerate() {
        let is_registry = index == 0
            && name.contains('/')
            && (component.contains(['.', ':']) || component == "localhost");
        let ok = if is_registry {
            !component.is_empty()
        } else {
            let separators_ok = !component.starts_with(['.', '_', '-'])
                && !component.ends_with(['.', '_', '-'])
                && !component.contains("..");
            !component.is_empty()
                && separators_ok
                && component.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        };
        if !ok {
            return bad("each name component must be lowercase letters, digits and separators");
        }
    }
    Ok(())
}

fn check(compose: &Compose) -> Result<()> {
    for service in compose.services.values() {
        let at = || service.location();
        for network in &service.networks {
            if network.name != DEFAULT_NETWORK && !compose.networks.contains_key(&network.name) {
                bail!(
                    "{}: networks: {:?} is not declared under the top-level networks",
                    at(),
                    network.name
                );
            }
        }
        for mount in &service.mounts {
            if mount.kind == MountKind::Volume
                && !mount.source.is_empty()
                && !compose.volumes.contains_key(&mount.source)
            {
                bail!(
                    "{}: volumes: {:?} is not declared under the top-level volumes",
                    at(),
                    mount.source
                );
            }
        }
        for dependency in &service.depends_on {
            if dependency.required && !compose.services.contains_key(&dependency.service) {
                bail!(
                    "{}: depends_on: there is no service {:?}",
                    at(),
                    dependency.service
                );
            }
        }
    }
    secrets::check(compose).map_err(|err| anyhow!(err))?;
    compose.start_order()?;
    Ok(())
}

impl Compose {
    /// Services ordered so that each comes after what it depends on.
    pub fn start_order(&self) -> Result<Vec<&Service>> {
        let mut order: Vec<&Service> = Vec::new();
        let mut placed: BTreeSet<&str> = BTreeSet::new();
        while order.len() < self.services.len() {
            let ready: Vec<&Service> = self
                .services
                .values()
                .filter(|s| !placed.contains(s.name.as_str()))
                .filter(|s| {
                    s.depends_on.iter().all(|d| {
                        placed.contains(d.service.as_str())
                            || !self.services.contains_key(&d.service)
                    })
                })
                .collect();
            if ready.is_empty() {
                let stuck: Vec<&str> = self
                    .services
                    .keys()
                    .map(String::as_str)
                    .filter(|name| !placed.contains(name))
                    .collect();
                bail!("depends_on forms a cycle among {}", stuck.join(", "));
            }
            for service in ready {
                placed.insert(&service.name);
                order.push(service);
            }
        }
        Ok(order)
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    /// Whether any service joins the implicit default network.
    pub fn uses_default_network(&self) -> bool {
        self.services
            .values()
            .any(|s| s.networks.iter().any(|n| n.name == DEFAULT_NETWORK))
    }
}

/// Loads `listed` in order, reading every file (and `.env`) from `texts`.
#[cfg(test)]
fn load_texts(
    listed: &[&str],
    texts: &[(&str, &str)],
    vars: &Vars,
    profiles: &Profiles,
) -> Result<Compose> {
    let texts: BTreeMap<PathBuf, String> = texts
        .iter()
        .map(|(path, text)| (PathBuf::from(path), text.to_string()))
        .collect();
    let read = |path: &Path| {
        texts.get(path).cloned().ok_or_else(|| {
            let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
            anyhow!(missing).context(format!("reading {}", path.display()))
        })
    };
    let files: Vec<PathBuf> = listed.iter().map(PathBuf::from).collect();
    load_from(&files, vars, profiles, &read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn load_text(text: &str, vars: &Vars) -> Result<Compose> {
        load_files(
            &["/p/compose/test.yml"],
            &[("/p/compose/test.yml", text)],
            vars,
        )
    }

    /// Loads `listed` in order, reading files from `texts` (by path).
    fn load_files(listed: &[&str], texts: &[(&str, &str)], vars: &Vars) -> Result<Compose> {
        load_texts(listed, texts, vars, &Profiles::none())
    }

    #[test]
    fn the_shipped_compose_file_parses_with_its_defaults() {
        let text = include_str!("../../compose/docker-compose.zero-downtime.yml");
        let compose = load_text(text, &vars(&[])).unwrap();
        let names: Vec<&str> = compose.services.keys().map(String::as_str).collect();
        assert_eq!(names, ["cryptus-blue", "cryptus-green", "nginx", "redis"]);
        assert_eq!(
            compose.services["nginx"].image.as_deref(),
            Some("nginx:1.28-alpine")
        );
        assert_eq!(
            compose.services["redis"].image.as_deref(),
            Some("redis:7-alpine")
        );
        assert_eq!(
            compose.services["cryptus-blue"].image.as_deref(),
            Some("cryptus:latest")
        );
        let lb = &compose.services["nginx"].ports[0];
        assert_eq!(
            (lb.host_ip.as_deref(), lb.host_port, lb.container_port),
            (Some("0.0.0.0"), Some(80), 80)
        );
        let nginx_conf = &compose.services["nginx"].mounts[0];
        assert_eq!(nginx_conf.kind, MountKind::Bind);
        assert_eq!(nginx_conf.source, "/p/nginx");
        assert!(nginx_conf.read_only);
        let blue = &compose.services["cryptus-blue"];
        assert_eq!(blue.depends_on[0].condition, Condition::Healthy);
        assert!(blue.healthcheck.is_some());
        assert!(blue.limits.memory.is_some());
    }

    #[test]
    fn the_shipped_compose_file_follows_its_variables() {
        let text = include_str!("../../compose/docker-compose.zero-downtime.yml");
        let v = vars(&[
            ("NGINX_IMAGE", "cryptus/nginx:offline"),
            ("CRYPTUS_BIND", "127.0.0.1"),
            ("CRYPTUS_HTTP_PORT", "18080"),
        ]);
        let compose = load_text(text, &v).unwrap();
        assert_eq!(
            compose.services["nginx"].image.as_deref(),
            Some("cryptus/nginx:offline")
        );
        let lb = &compose.services["nginx"].ports[0];
        assert_eq!(
            (lb.host_ip.as_deref(), lb.host_port),
            (Some("127.0.0.1"), Some(18080))
        );
    }

    #[test]
    fn unknown_keys_name_the_key_path_and_line() {
        let text = "services:\n  web:\n    image: nginx\n    bogus_key: 1\n";
        let err = load_text(text, &vars(&[])).unwrap_err().to_string();
        assert!(err.contains("services.web"), "{err}");
        assert!(err.contains("bogus_key"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let text = "services:\n  web:\n    image: nginx\n    deploy:\n      placement: {zone: a}\n";
        let err = load_text(text, &vars(&[])).unwrap_err().to_string();
        assert!(err.contains("zone") && err.contains("line 5"), "{err}");
        let err = load_text("services: {}\nsecretz: {}\n", &vars(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("secretz"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = load_text("services:\n  web: [\n", &vars(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line"), "{err}");
        assert!(
            load_text("", &vars(&[]))
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn interpolation_errors_carry_the_line() {
        let text = "services:\n  web:\n    image: ${IMAGE:?set IMAGE}\n";
        let err = load_text(text, &vars(&[])).unwrap_err().to_string();
        assert!(
            err.contains("IMAGE is not set") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn numbers_may_come_from_variables() {
        let text = "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: ${N:-2}\n      resources: {limits: {cpus: '0.5', memory: 64M}}\n";
        let compose = load_text(text, &vars(&[])).unwrap();
        assert_eq!(compose.services["web"].replicas, 2);
        assert_eq!(compose.services["web"].limits.memory, Some(64 << 20));
        let compose = load_text(text, &vars(&[("N", "3")])).unwrap();
        assert_eq!(compose.services["web"].replicas, 3);
        let err = load_text(text, &vars(&[("N", "many")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"many\"") && err.contains("whole number") && err.contains("line 5"),
            "{err}"
        );
    }

    #[test]
    fn durations_and_counts_beyond_their_range_name_the_key_and_line() {
        let base = "services:\n  web:\n    image: nginx\n    restart: always\n";
        for (extra, key) in [
            ("    stop_grace_period: 1e30\n", "stop_grace_period"),
            ("    stop_grace_period: 99999999999h\n", "stop_grace_period"),
            (
                "    stop_grace_period: 18446744073709551616\n",
                "stop_grace_period",
            ),
            ("    stop_grace_period: -1s\n", "stop_grace_period"),
            ("    stop_grace_period: .nan\n", "stop_grace_period"),
            ("    stop_grace_period: .inf\n", "stop_grace_period"),
            (
                "    healthcheck:\n      test: [CMD, x]\n      interval: 25h\n",
                "healthcheck.interval",
            ),
            (
                "    healthcheck:\n      test: [CMD, x]\n      timeout: 0s\n",
                "healthcheck.timeout",
            ),
            (
                "    healthcheck:\n      test: [CMD, x]\n      start_period: 1e19\n",
                "healthcheck.start_period",
            ),
            (
                "    healthcheck:\n      test: [CMD, x]\n      retries: -1\n",
                "healthcheck.retries",
            ),
            (
                "    deploy:\n      replicas: 4294967296\n",
                "deploy.replicas",
            ),
            ("    deploy:\n      replicas: 33\n", "deploy.replicas"),
            (
                "    deploy:\n      resources: {limits: {pids: -2}}\n",
                "limits.pids",
            ),
        ] {
            let text = format!("{base}{extra}");
            let line = text.lines().count();
            let err = load_text(&text, &vars(&[])).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
            assert!(err.contains(&format!("line {line}")), "{extra}: {err}");
        }
        let text = format!("{base}    stop_grace_period: 24h\n");
        let compose = load_text(&text, &vars(&[])).unwrap();
        assert_eq!(
            compose.services["web"].stop_grace_period,
            Some(Duration::from_secs(86400))
        );
        let err = load_text(
            "services:\n  a:\n    image: x\n    restart: on-failure:99999999999\n",
            &vars(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("on-failure"), "{err}");
    }

    #[test]
    fn deeply_nested_yaml_is_refused_in_milliseconds() {
        for text in [
            format!("services: {}{}\n", "[".repeat(200_000), "]".repeat(200_000)),
            format!(
                "services: {}1{}\n",
                "{a: ".repeat(200_000),
                "}".repeat(200_000)
            ),
            format!("services:\n{}x\n", "- ".repeat(200_000)),
            format!("services: {}{}\n", "[".repeat(9_000), "]".repeat(9_000)),
        ] {
            let started = std::time::Instant::now();
            let err = parse(&text, &vars(&[])).unwrap_err();
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "took {:?}",
                started.elapsed()
            );
            assert!(err.contains("refuses"), "{err}");
        }
    }

    #[test]
    fn aliases_cannot_blow_up() {
        // Billion laughs where the schema takes lists: refused, quickly.
        let mut text = String::from("services:\n  web:\n    image: x\n");
        text.push_str("    tmpfs: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (level, key) in ["cap_drop", "security_opt", "environment", "labels"]
            .iter()
            .enumerate()
        {
            let refs = vec![format!("*a{level}"); 9].join(", ");
            text.push_str(&format!("    {key}: &a{} [{refs}]\n", level + 1));
        }
        let started = std::time::Instant::now();
        assert!(parse(&text, &vars(&[])).is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn the_pre_scan_is_linear_on_hostile_text() {
        let size = limits::MAX_FILE_BYTES as usize - 16;
        for unit in [
            "'", "\"", "|: ", "- ", "a: ", "# [", "  \n", "x\\\"", "[]", "> \n  ",
        ] {
            let text = unit.repeat(size / unit.len());
            let started = std::time::Instant::now();
            let _ = limits::check_yaml(&text);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{unit:?} took {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn environment_and_labels_as_list_or_map() {
        let text = "services:\n  web:\n    image: nginx\n    environment: [A=1, B, C=x=y]\n    labels: {x: 1, y: true}\n";
        let compose = load_text(text, &vars(&[("B", "from-env")])).unwrap();
        let env = &compose.services["web"].environment;
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "from-env");
        assert_eq!(env["C"], "x=y");
        assert_eq!(compose.services["web"].labels["y"], "true");
    }

    #[test]
    fn networks_may_set_their_address_ranges() {
        let text = "services:\n  web:\n    image: nginx\n    networks: [n]\nnetworks:\n  n:\n    ipam:\n      config:\n        - subnet: ${NET:-10.5.0.0/24}\n          gateway: 10.5.0.1\n";
        let compose = load_text(text, &vars(&[])).unwrap();
        let ipam = compose.networks["n"].ipam.as_ref().unwrap();
        assert_eq!(ipam.config[0].subnet.as_deref(), Some("10.5.0.0/24"));
        assert_eq!(ipam.config[0].gateway.as_deref(), Some("10.5.0.1"));
        let bad = text.replace("gateway", "gatway");
        let err = load_text(&bad, &vars(&[])).unwrap_err().to_string();
        assert!(err.contains("gatway"), "{err}");
    }

    #[test]
    fn commands_as_string_or_list() {
        let text = "services:\n  a:\n    image: x\n    command: redis-server --save \"60 1000\"\n  b:\n    image: x\n    command: [nginx, -g, 'daemon off;']\n";
        let compose = load_text(text, &vars(&[])).unwrap();
        assert_eq!(
            compose.services["a"].command.as_deref().unwrap(),
            ["redis-server", "--save", "60 1000"]
        );
        assert_eq!(
            compose.services["b"].command.as_deref().unwrap(),
            ["nginx", "-g", "daemon off;"]
        );
    }

    #[test]
    fn ports_short_and_long() {
        assert_eq!(
            parse_port("127.0.0.1::3000").unwrap(),
            Port {
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
                container_port: 3000,
                protocol: "tcp".into()
            }
        );
        assert_eq!(parse_port("8080:80/udp").unwrap().protocol, "udp");
        assert_eq!(
            parse_port("[::1]:80:80").unwrap().host_ip.as_deref(),
            Some("::1")
        );
        assert_eq!(parse_port("80").unwrap().host_port, None);
        assert!(parse_port("a.b.c.d:80:80").is_err());
        assert!(parse_port("8000-8010:80").unwrap_err().contains("ranges"));
        assert!(parse_port("70000:80").is_err());
        assert!(parse_port("1:2:3:4").is_err());
        let text = "services:\n  web:\n    image: x\n    ports:\n      - {target: 80, published: '8080', host_ip: 127.0.0.1}\n";
        let compose = load_text(text, &vars(&[])).unwrap();
        assert_eq!(compose.services["web"].ports[0].host_port, Some(8080));
    }

    #[test]
    fn volumes_must_be_declared() {
        let text = "services:\n  web:\n    image: x\n    volumes: [data:/data]\n";
        let err = load_text(text, &vars(&[])).unwrap_err().to_string();
        assert!(err.contains("\"data\" is not declared"), "{err}");
        let text = "services:\n  web:\n    image: x\n    volumes: [data:/data, ./conf:/etc/conf:ro, /abs:/abs]\nvolumes:\n  data:\n";
        let compose = load_text(text, &vars(&[])).unwrap();
        let mounts = &compose.services["web"].mounts;
        assert_eq!(mounts[0].kind, MountKind::Volume);
        assert_eq!(mounts[1].source, "/p/compose/conf");
        assert!(mounts[1].read_only);
        assert!(
            load_text(
                "services:\n  web:\n    image: x\n    volumes: ['data:rel']\nvolumes: {data: }\n",
                &vars(&[])
            )
            .is_err()
        );
    }

    #[test]
    fn depends_on_is_checked_and_ordered() {
        let text = "services:\n  web:\n    image: x\n    depends_on: {db: {condition: service_healthy}}\n  db:\n    image: y\n";
        let compose = load_text(text, &vars(&[])).unwrap();
        let order: Vec<&str> = compose
            .start_order()
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["db", "web"]);
        let err = load_text(
            "services:\n  web:\n    image: x\n    depends_on: [nope]\n",
            &vars(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no service \"nope\""), "{err}");
        let cycle = "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n";
        assert!(
            load_text(cycle, &vars(&[]))
                .unwrap_err()
                .to_string()
                .contains("cycle")
        );
        let bad = "services:\n  a:\n    image: x\n    depends_on: {b: {condition: sometime}}\n  b:\n    image: x\n";
        assert!(
            load_text(bad, &vars(&[]))
                .unwrap_err()
                .to_string()
                .contains("sometime")
        );
    }

    #[test]
    fn restart_values() {
        assert_eq!(
            restart_policy("on-failure:3").unwrap(),
            ("on-failure".into(), Some(3))
        );
        assert!(restart_policy("sometimes").is_err());
        let err = load_text(
            "services:\n  a:\n    image: x\n    restart: sometimes\n",
            &vars(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sometimes"));
    }

    #[test]
    fn image_references() {
        for good in [
            "nginx",
            "nginx:1.28-alpine",
            "cryptus/nginx:offline",
            "localhost:5000/team/app:v1.2",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_image_reference(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "nginx latest",
            "nginx;rm -rf /",
            "Nginx",
            "app:",
            "app:-x",
            "$(whoami)",
            "a//b",
            "app@md5:1",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad}");
        }
        let err = load_text("services:\n  a:\n    image: 'bad image'\n", &vars(&[])).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn services_need_an_image_or_a_build() {
        let err = load_text("services:\n  a:\n    restart: always\n", &vars(&[])).unwrap_err();
        assert!(err.to_string().contains("neither image nor build"));
        let compose = load_text(
            "services:\n  a:\n    build: {context: ../app, args: {V: 1}}\n",
            &vars(&[]),
        )
        .unwrap();
        assert_eq!(compose.services["a"].build.as_ref().unwrap().args["V"], "1");
    }
}
