//! What a service asks of its containers beyond image, command, ports and
//! mounts, resolved from the file as Compose resolves it: logging, the
//! runtime options (init, extra hosts, capabilities, DNS, ulimits, sysctls,
//! devices...), the legacy resource limits merged with `deploy.resources`,
//! `deploy.restart_policy`, and the deploy keys only Swarm applies, kept for
//! a Swarm backend and reported as not applying on one engine.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::model::service_keys::{self as raw, SwapLimit};
use super::model::{Either, Parsed, RawDeploy, RawService, Text};
use super::secrets::{self, Grant, Kind};
use super::{Limits, Service};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ContainerOptions {
    pub logging: Option<Logging>,
    pub init: Option<bool>,
    /// `host:ip`, the engine's form.
    pub extra_hosts: Vec<String>,
    pub cap_add: Vec<String>,
    pub privileged: bool,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// Ports exposed without being published, as `3000/tcp`, ranges expanded.
    pub expose: Vec<String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub sysctls: BTreeMap<String, String>,
    pub shm_size: Option<u64>,
    pub group_add: Vec<String>,
    pub tty: bool,
    pub stdin_open: bool,
    pub devices: Vec<Device>,
    /// `pull_policy` as written; cryptus never pulls (see [`Service::builds`]).
    pub pull_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Logging {
    /// The engine's default driver when `None`.
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Device {
    pub source: String,
    pub target: String,
    pub permissions: String,
}

/// The deploy keys that only a Swarm applies: kept as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Swarm {
    pub mode: Option<String>,
    pub endpoint_mode: Option<String>,
    pub placement: Option<Placement>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub labels: BTreeMap<String, String>,
    /// `deploy.restart_policy`; its condition and attempts also set the
    /// container's restart policy, as in Compose.
    pub restart_policy: Option<RestartPolicy>,
    /// `deploy.resources.reservations.cpus`: the engine has no CPU reservation.
    pub cpus_reservation: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Placement {
    pub constraints: Vec<String>,
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpdateConfig {
    pub parallelism: Option<i64>,
    pub delay: Option<std::time::Duration>,
    pub failure_action: Option<String>,
    pub monitor: Option<std::time::Duration>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestartPolicy {
    pub condition: Option<String>,
    pub delay: Option<std::time::Duration>,
    pub max_attempts: Option<i64>,
    pub window: Option<std::time::Duration>,
}

/// The options of a raw service, taken out of it.
fn options(raw: &mut RawService) -> ContainerOptions {
    let texts = |list: &mut Vec<Text>| std::mem::take(list).into_iter().map(|t| t.0).collect();
    let flag = |value: Option<Parsed<bool>>| value.is_some_and(|v| v.0);
    let (extra_hosts, dns, dns_search, expose) = network_options(raw);
    ContainerOptions {
        logging: raw.logging.take().map(|l| Logging {
            driver: l.driver.map(|t| t.0).filter(|d| !d.is_empty()),
            options: l.options.into_iter().map(|(k, v)| (k, v.0)).collect(),
        }),
        init: raw.init.take().map(|i| i.0),
        extra_hosts,
        cap_add: texts(&mut raw.cap_add),
        privileged: flag(raw.privileged.take()),
        working_dir: raw.working_dir.take().map(|t| t.0),
        hostname: raw.hostname.take().map(|h| h.0.0),
        domainname: raw.domainname.take().map(|h| h.0.0),
        dns,
        dns_search,
        expose,
        ulimits: std::mem::take(&mut raw.ulimits)
            .into_iter()
            .map(|(name, u)| {
                (
                    name,
                    Ulimit {
                        soft: u.soft,
                        hard: u.hard,
                    },
                )
            })
            .collect(),
        sysctls: raw.sysctls.take().map(|s| s.0).unwrap_or_default(),
        shm_size: raw.shm_size.take().map(|s| s.0.0),
        group_add: texts(&mut raw.group_add),
        tty: flag(raw.tty.take()),
        stdin_open: flag(raw.stdin_open.take()),
        devices: std::mem::take(&mut raw.devices)
            .into_iter()
            .map(|Either(d)| Device {
                source: d.source,
                target: d.target,
                permissions: d.permissions,
            })
            .collect(),
        pull_policy: raw.pull_policy.take().map(|p| p.0.0),
    }
}

/// `extra_hosts` (as `host:ip`), `dns`, `dns_search` and `expose` (as
/// `port/protocol`, ranges expanded, each once).
#[allow(clippy::type_complexity)]
fn network_options(raw: &mut RawService) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let extra_hosts = raw
        .extra_hosts
        .take()
        .map(|h| {
            h.0.into_iter()
                .map(|(host, ip)| format!("{host}:{ip}"))
                .collect()
        })
        .unwrap_or_default();
    let dns = raw
        .dns
        .take()
        .map(|d| d.0.into_iter().map(|ip| ip.0.0).collect())
        .unwrap_or_default();
    let dns_search = raw
        .dns_search
        .take()
        .map(|d| d.0.into_iter().map(|t| t.0).collect())
        .unwrap_or_default();
    let expose: BTreeSet<(u16, String)> = std::mem::take(&mut raw.expose)
        .into_iter()
        .flat_map(|Parsed(e)| (e.first..=e.last).map(move |p| (p, e.protocol.clone())))
        .collect();
    let expose = expose
        .into_iter()
        .map(|(p, proto)| format!("{p}/{proto}"))
        .collect();
    (extra_hosts, dns, dns_search, expose)
}

/// The names the engine knows for a ulimit.
const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// What the engine would refuse in the options, said before anything runs.
fn check_options(options: &ContainerOptions) -> Result<(), String> {
    if let Some(name) = options
        .ulimits
        .keys()
        .find(|n| !ULIMITS.contains(&n.as_str()))
    {
        return Err(format!(
            "ulimits: {name:?} is not a ulimit ({})",
            ULIMITS.join(", ")
        ));
    }
    if let Some(dir) = options.working_dir.as_ref().filter(|d| !d.starts_with('/')) {
        return Err(format!("working_dir {dir:?} is not an absolute path"));
    }
    if let Some(logging) = &options.logging {
        check_logging(logging)?;
    }
    Ok(())
}

/// The most rotated files `max-file` may keep.
pub const MAX_LOG_FILES: u32 = 1000;

/// The log drivers that rotate their files; their sizes are checked here,
/// the other drivers' options go to the engine as written.
fn check_logging(logging: &Logging) -> Result<(), String> {
    let driver = logging.driver.as_deref().unwrap_or("json-file");
    if !driver
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
    {
        return Err(format!("logging.driver {driver:?} is not a driver name"));
    }
    if !matches!(driver, "json-file" | "local") {
        return Ok(());
    }
    if let Some(size) = logging.options.get("max-size") {
        use super::model::FromText;
        if super::model::Bytes::from_text(size.trim()).is_none() {
            return Err(format!(
                "logging.options.max-size {size:?} is not a size such as 10m (1 byte or more)"
            ));
        }
    }
    if let Some(files) = logging.options.get("max-file") {
        let ok = files
            .trim()
            .parse::<u32>()
            .is_ok_and(|n| (1..=MAX_LOG_FILES).contains(&n));
        if !ok {
            return Err(format!(
                "logging.options.max-file {files:?} is not a count from 1 to {MAX_LOG_FILES}"
            ));
        }
    }
    Ok(())
}

/// What `resolve` takes out of a raw service beyond the core keys, and
/// the decisions it joins with them (limits, restart, environment).
pub struct Extra {
    pub options: ContainerOptions,
    pub secrets: Vec<Grant>,
    pub configs: Vec<Grant>,
    pub swarm: Swarm,
    env_file: BTreeMap<String, String>,
    legacy: Legacy,
}

/// `mem_limit`, `memswap_limit`, `mem_reservation`, `cpus`, `cpu_shares`,
/// `pids_limit`, and `deploy.resources.reservations.memory`.
struct Legacy {
    memory: Option<u64>,
    swap: Option<SwapLimit>,
    reservation: Option<u64>,
    deploy_reservation: Option<u64>,
    cpus: Option<f64>,
    cpu_shares: Option<i64>,
    pids: Option<i64>,
}

/// Takes the keys beyond the core ones out of `raw` (and the Swarm keys
/// and reservations out of its `deploy`), checked.
pub fn take(raw: &mut RawService) -> Result<Extra, String> {
    let reservations = raw
        .deploy
        .as_mut()
        .and_then(|d| d.resources.as_mut())
        .and_then(|r| r.reservations.take());
    let cpus_reservation = reservations.as_ref().and_then(|r| r.cpus).map(|c| c.0.0);
    let legacy = Legacy {
        memory: raw.mem_limit.take().map(|m| m.0.0),
        swap: raw.memswap_limit.take().map(|s| s.0),
        reservation: raw.mem_reservation.take().map(|m| m.0.0),
        deploy_reservation: reservations.and_then(|r| r.memory).map(|m| m.0.0),
        // Compose reads `cpus: 0` and `pids_limit: 0` as no limit.
        cpus: raw.cpus.take().map(|c| c.0.0).filter(|c| *c > 0.0),
        cpu_shares: raw.cpu_shares.take().map(|c| c.0).filter(|c| *c != 0),
        pids: raw.pids_limit.take().map(|p| p.0).filter(|p| *p != 0),
    };
    let options = options(raw);
    check_options(&options)?;
    let take_grants = |grants: &mut Vec<Either<raw::RawGrant>>| {
        std::mem::take(grants)
            .into_iter()
            .map(|Either(g)| g)
            .collect()
    };
    Ok(Extra {
        options,
        secrets: secrets::grants(Kind::Secret, take_grants(&mut raw.secrets)),
        configs: secrets::grants(Kind::Config, take_grants(&mut raw.configs)),
        swarm: swarm(raw.deploy.as_mut(), cpus_reservation),
        env_file: raw.env_file.take().map(|f| f.values).unwrap_or_default(),
        legacy,
    })
}

impl Extra {
    /// The limits of `deploy.resources.limits` joined with the legacy keys,
    /// which must agree where both are set (Compose's rule).
    pub fn limits(&self, deploy: Limits) -> Result<Limits, String> {
        let legacy = &self.legacy;
        let memory = agree(legacy.memory, deploy.memory, "mem_limit", "memory")?;
        Ok(Limits {
            cpus: agree(legacy.cpus, deploy.cpus, "cpus", "cpus")?,
            memory,
            pids: agree(legacy.pids, deploy.pids, "pids_limit", "pids")?,
            memory_swap: swap(legacy.swap, memory)?,
            memory_reservation: agree_reservation(legacy.reservation, legacy.deploy_reservation)?,
            cpu_shares: legacy.cpu_shares,
        })
    }

    /// `restart`, or what `deploy.restart_policy` stands for (it wins, as
    /// in Compose).
    pub fn restart(&self, restart: String) -> String {
        match &self.swarm.restart_policy {
            Some(policy) => restart_from_policy(policy),
            None => restart,
        }
    }

    /// The environment: `env_file`'s values under `environment`'s.
    pub fn environment(&self, environment: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut merged = self.env_file.clone();
        merged.extend(environment);
        merged
    }
}

fn agree<T: PartialEq + std::fmt::Debug>(
    legacy: Option<T>,
    deploy: Option<T>,
    legacy_key: &str,
    deploy_key: &str,
) -> Result<Option<T>, String> {
    match (legacy, deploy) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "{legacy_key} ({a:?}) and deploy.resources.limits.{deploy_key} ({b:?}) differ; set one of them"
        )),
        (a, b) => Ok(b.or(a)),
    }
}

fn agree_reservation(legacy: Option<u64>, deploy: Option<u64>) -> Result<Option<u64>, String> {
    match (legacy, deploy) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "mem_reservation ({a}) and deploy.resources.reservations.memory ({b}) differ; set one of them"
        )),
        (a, b) => Ok(b.or(a)),
    }
}

/// `memswap_limit`: memory and swap together, so it needs a memory limit
/// and is at least that limit (the engine's rules); -1 is unlimited swap.
fn swap(limit: Option<SwapLimit>, memory: Option<u64>) -> Result<Option<i64>, String> {
    let bytes = match limit {
        None | Some(SwapLimit::Unset) => return Ok(None),
        Some(SwapLimit::Unlimited) => -1,
        Some(SwapLimit::Bytes(bytes)) => i64::try_from(bytes).unwrap_or(i64::MAX),
    };
    let Some(memory) = memory else {
        return Err(
            "memswap_limit needs a memory limit (mem_limit or deploy.resources.limits.memory)"
                .to_owned(),
        );
    };
    if bytes != -1 && u64::try_from(bytes).is_ok_and(|b| b < memory) {
        return Err(format!(
            "memswap_limit ({bytes}) is memory and swap together: it cannot be below the memory limit ({memory})"
        ));
    }
    Ok(Some(bytes))
}

/// `deploy`'s Swarm keys and `restart_policy`, taken out of it.
fn swarm(deploy: Option<&mut RawDeploy>, cpus_reservation: Option<f64>) -> Swarm {
    let Some(deploy) = deploy else {
        return Swarm {
            cpus_reservation,
            ..Swarm::default()
        };
    };
    let update = |u: raw::RawUpdateConfig| UpdateConfig {
        parallelism: u.parallelism.map(|p| p.0),
        delay: u.delay.map(|d| d.0),
        failure_action: u.failure_action.map(|f| f.0.0),
        monitor: u.monitor.map(|m| m.0),
        max_failure_ratio: u.max_failure_ratio.map(|r| r.0.0),
        order: u.order.map(|o| o.0.0),
    };
    Swarm {
        mode: deploy.mode.take().map(|m| m.0.0),
        endpoint_mode: deploy.endpoint_mode.take().map(|m| m.0.0),
        placement: deploy.placement.take().map(|p| Placement {
            constraints: p.constraints.into_iter().map(|t| t.0).collect(),
            preferences: p.preferences.into_iter().map(|p| p.spread.0).collect(),
            max_replicas_per_node: p.max_replicas_per_node.map(|m| m.0),
        }),
        update_config: deploy.update_config.take().map(update),
        rollback_config: deploy.rollback_config.take().map(update),
        labels: deploy.labels.take().map(|l| l.0).unwrap_or_default(),
        restart_policy: deploy.restart_policy.take().map(|r| RestartPolicy {
            condition: r.condition.map(|c| c.0.0),
            delay: r.delay.map(|d| d.0),
            max_attempts: r.max_attempts.map(|m| m.0),
            window: r.window.map(|w| w.0),
        }),
        cpus_reservation,
    }
}

/// The `restart` a `deploy.restart_policy` stands for on one engine, as
/// Compose maps it: `none` is `no`, `any` (the default) is `always`,
/// `on-failure` keeps `max_attempts`.
pub fn restart_from_policy(policy: &RestartPolicy) -> String {
    match policy.condition.as_deref() {
        Some("none") => "no".to_owned(),
        Some("on-failure") => match policy.max_attempts {
            Some(attempts) => format!("on-failure:{attempts}"),
            None => "on-failure".to_owned(),
        },
        _ => "always".to_owned(),
    }
}

impl Service {
    /// Whether `pull_policy: build` asks for the image to be built rather
    /// than taken from the engine.
    pub fn builds(&self) -> bool {
        self.options.pull_policy.as_deref() == Some("build")
    }

    /// What this service asks that one engine does not do, each said once:
    /// the Swarm keys, a CPU reservation, the parts of a restart policy the
    /// engine has no place for, a pull it will not make.
    pub fn not_applied(&self) -> Vec<String> {
        let at = format!("services.{}", self.name);
        let swarm = &self.swarm;
        let mut keys: Vec<&str> = Vec::new();
        for (set, key) in [
            (swarm.mode.is_some(), "deploy.mode"),
            (swarm.endpoint_mode.is_some(), "deploy.endpoint_mode"),
            (swarm.placement.is_some(), "deploy.placement"),
            (swarm.update_config.is_some(), "deploy.update_config"),
            (swarm.rollback_config.is_some(), "deploy.rollback_config"),
            (!swarm.labels.is_empty(), "deploy.labels"),
            (
                swarm.cpus_reservation.is_some(),
                "deploy.resources.reservations.cpus",
            ),
        ] {
            if set {
                keys.push(key);
            }
        }
        let mut notes = Vec::new();
        if !keys.is_empty() {
            notes.push(format!(
                "{at}: {} belong to Swarm and do not apply on one engine (kept, not applied)",
                keys.join(", ")
            ));
        }
        if let Some(policy) = &swarm.restart_policy {
            notes.extend(restart_policy_notes(&at, policy));
        }
        if let Some(policy) = self.options.pull_policy.as_deref()
            && (policy == "always"
                || policy == "daily"
                || policy == "weekly"
                || policy.starts_with("every_"))
        {
            notes.push(format!(
                "{at}: pull_policy {policy} does not apply: cryptus never pulls, it runs the engine's image"
            ));
        }
        notes
    }
}

impl super::Compose {
    /// What the file asks that cryptus on one engine does not do, each
    /// said once by the commands that create containers.
    pub fn warnings(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for service in self.services.values() {
            let at = format!("services.{}", service.name);
            notes.extend(service.not_applied());
            for dependency in &service.depends_on {
                if !dependency.required && !self.services.contains_key(&dependency.service) {
                    notes.push(format!(
                        "{at}.depends_on: there is no service {:?}; required: false skips it",
                        dependency.service
                    ));
                }
            }
            for (kind, grants, declared) in [
                (Kind::Secret, &service.secrets, &self.secrets),
                (Kind::Config, &service.configs, &self.configs),
            ] {
                let fixed = grants.iter().filter(|g| {
                    (g.uid.is_some() || g.gid.is_some() || g.mode.is_some())
                        && matches!(declared.get(&g.name), Some(secrets::Source::File(_)))
                });
                for grant in fixed {
                    notes.push(format!(
                        "{at}.{}: uid, gid and mode of {:?} do not apply to a file: source, which is mounted as it is (as in Compose)",
                        kind.key(),
                        grant.name
                    ));
                }
            }
        }
        notes
    }
}

fn restart_policy_notes(at: &str, policy: &RestartPolicy) -> Vec<String> {
    let mut notes = Vec::new();
    let mut unused = Vec::new();
    if policy.delay.is_some() {
        unused.push("delay");
    }
    if policy.window.is_some() {
        unused.push("window");
    }
    if policy.max_attempts.is_some() && policy.condition.as_deref() != Some("on-failure") {
        unused.push("max_attempts (the engine counts attempts for on-failure only)");
    }
    if !unused.is_empty() {
        notes.push(format!(
            "{at}: deploy.restart_policy sets the container's restart policy; its {} do not apply on one engine",
            unused.join(", ")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_policy_maps_as_compose_maps_it() {
        let policy = |condition: Option<&str>, attempts| RestartPolicy {
            condition: condition.map(str::to_owned),
            max_attempts: attempts,
            ..RestartPolicy::default()
        };
        assert_eq!(restart_from_policy(&policy(None, None)), "always");
        assert_eq!(restart_from_policy(&policy(Some("none"), None)), "no");
        assert_eq!(restart_from_policy(&policy(Some("any"), Some(3))), "always");
        assert_eq!(
            restart_from_policy(&policy(Some("on-failure"), Some(3))),
            "on-failure:3"
        );
    }

    #[test]
    fn logging_sizes_are_checked_for_the_rotating_drivers() {
        let logging = |driver: &str, key: &str, value: &str| Logging {
            driver: Some(driver.to_owned()),
            options: BTreeMap::from([(key.to_owned(), value.to_owned())]),
        };
        assert!(check_logging(&logging("json-file", "max-size", "10m")).is_ok());
        assert!(check_logging(&logging("json-file", "max-size", "lots")).is_err());
        assert!(check_logging(&logging("local", "max-file", "0")).is_err());
        assert!(check_logging(&logging("json-file", "max-file", "1001")).is_err());
        assert!(check_logging(&logging("syslog", "max-size", "anything")).is_ok());
        assert!(check_logging(&logging("bad driver", "x", "y")).is_err());
    }
}

#[cfg(test)]
mod keys_tests {
    use std::path::Path;

    use super::super::{Compose, Vars};
    use super::*;

    fn load_in(dir: &Path, text: &str, vars: &[(&str, &str)]) -> Result<Compose, String> {
        let vars = Vars::new(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let path = dir.join("test.yml");
        let path = path.to_string_lossy();
        let profiles = super::super::Profiles::none();
        super::super::load_texts(&[&path], &[(&path, text)], &vars, &profiles)
            .map_err(|err| format!("{err:#}"))
    }

    fn load(text: &str) -> Result<Compose, String> {
        load_in(Path::new("/p/compose"), text, &[])
    }

    /// `services: web:` with `keys` (indented by four spaces) added.
    fn web(keys: &str) -> String {
        format!("services:\n  web:\n    image: nginx\n{keys}")
    }

    #[test]
    fn the_runtime_keys_parse_into_the_model() {
        let text = web(concat!(
            "    init: true\n",
            "    extra_hosts: [\"db=10.0.0.5\", \"old:10.0.0.6\", \"v6=[::1]\", \"gw=host-gateway\"]\n",
            "    cap_add: [NET_ADMIN]\n",
            "    privileged: true\n",
            "    working_dir: /srv\n",
            "    hostname: web-1\n",
            "    domainname: example.org\n",
            "    dns: 1.1.1.1\n",
            "    dns_search: [a.example, b.example]\n",
            "    expose: [\"3000\", 9000-9002/udp]\n",
            "    ulimits: {nproc: 512, nofile: {soft: 1024, hard: 2048}}\n",
            "    sysctls: [net.core.somaxconn=1024]\n",
            "    shm_size: 64m\n",
            "    group_add: [audio, \"44\"]\n",
            "    tty: true\n",
            "    stdin_open: true\n",
            "    devices: [\"/dev/null:/dev/nothing:r\", {source: /dev/zero}]\n",
            "    pull_policy: never\n",
            "    logging: {driver: json-file, options: {max-size: 10m, max-file: 3}}\n",
        ));
        let compose = load(&text).unwrap();
        let options = &compose.services["web"].options;
        assert_eq!(options.init, Some(true));
        assert_eq!(
            options.extra_hosts,
            ["db:10.0.0.5", "old:10.0.0.6", "v6:::1", "gw:host-gateway"]
        );
        assert_eq!(options.cap_add, ["NET_ADMIN"]);
        assert!(options.privileged && options.tty && options.stdin_open);
        assert_eq!(options.working_dir.as_deref(), Some("/srv"));
        assert_eq!(options.hostname.as_deref(), Some("web-1"));
        assert_eq!(options.domainname.as_deref(), Some("example.org"));
        assert_eq!(options.dns, ["1.1.1.1"]);
        assert_eq!(options.dns_search, ["a.example", "b.example"]);
        assert_eq!(
            options.expose,
            ["3000/tcp", "9000/udp", "9001/udp", "9002/udp"]
        );
        assert_eq!(
            options.ulimits["nproc"],
            Ulimit {
                soft: 512,
                hard: 512
            }
        );
        assert_eq!(
            options.ulimits["nofile"],
            Ulimit {
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(options.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(options.shm_size, Some(64 << 20));
        assert_eq!(options.group_add, ["audio", "44"]);
        assert_eq!(options.devices[0].target, "/dev/nothing");
        assert_eq!(options.devices[0].permissions, "r");
        assert_eq!(
            (
                options.devices[1].target.as_str(),
                options.devices[1].permissions.as_str()
            ),
            ("/dev/zero", "rwm")
        );
        assert_eq!(options.pull_policy.as_deref(), Some("never"));
        let logging = options.logging.as_ref().unwrap();
        assert_eq!(logging.driver.as_deref(), Some("json-file"));
        assert_eq!(logging.options["max-file"], "3");
    }

    #[test]
    fn map_forms_of_extra_hosts_and_sysctls() {
        let text = web(concat!(
            "    extra_hosts: {db: 10.0.0.5, multi: [10.0.0.7, \"::2\"]}\n",
            "    sysctls: {net.core.somaxconn: 1024}\n",
        ));
        let compose = load(&text).unwrap();
        let options = &compose.services["web"].options;
        assert_eq!(
            options.extra_hosts,
            ["db:10.0.0.5", "multi:10.0.0.7", "multi:::2"]
        );
        assert_eq!(options.sysctls["net.core.somaxconn"], "1024");
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        for (extra, needle) in [
            ("    hostname: -bad-\n", "hostname"),
            ("    domainname: \"a b\"\n", "domainname"),
            ("    dns: [not-an-ip]\n", "dns"),
            ("    extra_hosts: [\"db=nowhere\"]\n", "extra_hosts"),
            ("    extra_hosts: [justahost]\n", "extra_hosts"),
            ("    expose: [\"70000\"]\n", "expose"),
            ("    expose: [\"9002-9000\"]\n", "expose"),
            ("    ulimits: {nofile: {soft: 10, hard: 5}}\n", "soft limit"),
            ("    ulimits: {nofile: -2}\n", "ulimits"),
            ("    shm_size: 0\n", "shm_size"),
            ("    cpu_shares: 262145\n", "cpu_shares"),
            ("    pids_limit: -2\n", "pids_limit"),
            ("    cpus: 1025\n", "cpus"),
            ("    mem_limit: lots\n", "mem_limit"),
            ("    memswap_limit: -2\n", "memswap_limit"),
            ("    pull_policy: sometimes\n", "pull_policy"),
            ("    devices: [dev/null]\n", "devices"),
            ("    devices: [\"/dev/null:/dev/null:rx\"]\n", "permissions"),
            ("    privileged: maybe\n", "privileged"),
            (
                "    healthcheck: {test: [CMD, x], start_interval: 0s}\n",
                "start_interval",
            ),
            ("    deploy: {mode: everywhere}\n", "mode"),
            (
                "    deploy: {update_config: {parallelism: 10001}}\n",
                "parallelism",
            ),
            (
                "    deploy: {rollback_config: {max_failure_ratio: 2}}\n",
                "max_failure_ratio",
            ),
            (
                "    deploy: {restart_policy: {condition: sometimes}}\n",
                "condition",
            ),
            ("    deploy: {restart_policy: {delay: 25h}}\n", "delay"),
            (
                "    deploy: {placement: {max_replicas_per_node: -1}}\n",
                "max_replicas_per_node",
            ),
            ("    secrets: [{source: s, mode: \"0999\"}]\n", "mode"),
            ("    secrets: [{source: s, mode: 1000}]\n", "mode"),
            ("    secrets: [{source: s, uid: -1}]\n", "uid"),
            ("    secrets: [{source: s, uid: 4294967295}]\n", "uid"),
            ("    env_file: [{path: x.env, format: yaml}]\n", "format"),
        ] {
            let text = web(extra);
            let err = load(&text).unwrap_err();
            assert!(err.contains(needle), "{extra}: {err}");
            assert!(err.contains("line 4"), "{extra}: {err}");
        }
    }

    #[test]
    fn what_the_engine_would_refuse_is_refused_first() {
        for (extra, needle) in [
            ("    ulimits: {nofiles: 5}\n", "not a ulimit"),
            ("    working_dir: srv\n", "absolute"),
            ("    logging: {options: {max-file: 0}}\n", "max-file"),
            (
                "    logging: {driver: local, options: {max-size: big}}\n",
                "max-size",
            ),
            ("    memswap_limit: 1g\n", "needs a memory limit"),
            (
                "    mem_limit: 1g\n    memswap_limit: 512m\n",
                "below the memory limit",
            ),
            (
                "    mem_limit: 1g\n    deploy: {resources: {limits: {memory: 512m}}}\n",
                "differ",
            ),
            (
                "    cpus: 2\n    deploy: {resources: {limits: {cpus: '1'}}}\n",
                "differ",
            ),
            (
                "    pids_limit: 10\n    deploy: {resources: {limits: {pids: 20}}}\n",
                "differ",
            ),
            (
                "    mem_reservation: 1g\n    deploy: {resources: {reservations: {memory: 2g}}}\n",
                "differ",
            ),
        ] {
            let err = load(&web(extra)).unwrap_err();
            assert!(err.contains(needle), "{extra}: {err}");
            assert!(err.contains("services.web"), "{extra}: {err}");
        }
    }

    #[test]
    fn legacy_limits_join_the_deploy_ones() {
        let text = web(concat!(
            "    mem_limit: 1g\n",
            "    memswap_limit: 2g\n",
            "    mem_reservation: 256m\n",
            "    cpus: 0.5\n",
            "    cpu_shares: 512\n",
            "    pids_limit: 100\n",
            "    deploy: {resources: {limits: {memory: 1g}, reservations: {cpus: '0.25'}}}\n",
        ));
        let compose = load(&text).unwrap();
        let service = &compose.services["web"];
        let limits = &service.limits;
        assert_eq!(limits.memory, Some(1 << 30));
        assert_eq!(limits.memory_swap, Some(2 << 30));
        assert_eq!(limits.memory_reservation, Some(256 << 20));
        assert_eq!(limits.cpus, Some(0.5));
        assert_eq!(limits.cpu_shares, Some(512));
        assert_eq!(limits.pids, Some(100));
        assert_eq!(service.swarm.cpus_reservation, Some(0.25));
        let warnings = compose.warnings();
        assert!(
            warnings.iter().any(|w| w.contains("reservations.cpus")),
            "{warnings:?}"
        );
        // Compose reads 0 as no limit, and -1 swap as unlimited.
        let text =
            web("    cpus: 0\n    pids_limit: 0\n    mem_limit: 1g\n    memswap_limit: -1\n");
        let limits = load(&text).unwrap().services["web"].limits.clone();
        assert_eq!(
            (limits.cpus, limits.pids, limits.memory_swap),
            (None, None, Some(-1))
        );
    }

    #[test]
    fn swarm_keys_are_kept_and_reported_once() {
        let text = web(concat!(
            "    deploy:\n",
            "      mode: replicated\n",
            "      endpoint_mode: dnsrr\n",
            "      labels: {team: web}\n",
            "      placement: {constraints: [node.role==manager], preferences: [{spread: node.labels.zone}]}\n",
            "      update_config: {parallelism: 2, delay: 10s, order: start-first, failure_action: rollback}\n",
            "      rollback_config: {parallelism: 1, monitor: 5s, max_failure_ratio: 0.5}\n",
            "      restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s, window: 1m}\n",
        ));
        let compose = load(&text).unwrap();
        let service = &compose.services["web"];
        let swarm = &service.swarm;
        assert_eq!(swarm.mode.as_deref(), Some("replicated"));
        assert_eq!(swarm.endpoint_mode.as_deref(), Some("dnsrr"));
        assert_eq!(swarm.labels["team"], "web");
        let placement = swarm.placement.as_ref().unwrap();
        assert_eq!(placement.constraints, ["node.role==manager"]);
        assert_eq!(placement.preferences, ["node.labels.zone"]);
        assert_eq!(swarm.update_config.as_ref().unwrap().parallelism, Some(2));
        assert_eq!(
            swarm.rollback_config.as_ref().unwrap().max_failure_ratio,
            Some(0.5)
        );
        // The restart policy applies, as Compose applies it.
        assert_eq!(service.restart, "on-failure:3");
        let warnings = compose.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("deploy.mode, deploy.endpoint_mode, deploy.placement"));
        assert!(warnings[1].contains("delay, window"), "{warnings:?}");
    }

    #[test]
    fn pulls_are_never_made() {
        let compose = load(&web("    pull_policy: always\n")).unwrap();
        assert!(compose.warnings()[0].contains("never pulls"));
        let compose = load(&web("    pull_policy: every_12h\n")).unwrap();
        assert!(compose.warnings()[0].contains("never pulls"));
        let compose = load(&web("    pull_policy: build\n    build: .\n")).unwrap();
        assert!(compose.services["web"].builds());
        assert!(compose.warnings().is_empty());
    }

    #[test]
    fn depends_on_restart_and_required() {
        let text = "services:\n  web:\n    image: x\n    depends_on:\n      db: {condition: service_started, restart: true}\n      cache: {required: false}\n  db:\n    image: y\n";
        let compose = load(text).unwrap();
        let web = &compose.services["web"];
        assert!(web.depends_on[1].restart || web.depends_on[0].restart);
        let warnings = compose.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("\"cache\"") && w.contains("required: false")),
            "{warnings:?}"
        );
        let err =
            load("services:\n  web:\n    image: x\n    depends_on: {db: {restart: sometimes}}\n")
                .unwrap_err();
        assert!(err.contains("restart") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn start_interval_is_kept() {
        let text = web("    healthcheck: {test: [CMD, x], start_interval: 2s}\n");
        let compose = load(&text).unwrap();
        let health = compose.services["web"].healthcheck.as_ref().unwrap();
        assert_eq!(
            health.start_interval,
            Some(std::time::Duration::from_secs(2))
        );
    }

    /// cryptus's own services rotate their logs, by default and as told.
    #[test]
    fn the_shipped_files_rotate_every_log() {
        let monitoring = format!(
            "{}networks:\n  cryptus:\n",
            include_str!("../../compose/docker-compose.monitoring.yml")
        );
        for text in [
            include_str!("../../compose/docker-compose.zero-downtime.yml"),
            monitoring.as_str(),
        ] {
            let dir = Path::new("/p/compose");
            for (vars, size, files) in [
                (&[][..], "10m", "3"),
                (
                    &[
                        ("CRYPTUS_LOG_MAX_SIZE", "50m"),
                        ("CRYPTUS_LOG_MAX_FILE", "5"),
                    ][..],
                    "50m",
                    "5",
                ),
            ] {
                let compose = load_in(dir, text, vars).unwrap();
                for service in compose.services.values() {
                    let logging = service.options.logging.as_ref().expect(&service.name);
                    assert_eq!(logging.driver.as_deref(), Some("json-file"));
                    assert_eq!(logging.options["max-size"], size, "{}", service.name);
                    assert_eq!(logging.options["max-file"], files, "{}", service.name);
                }
            }
            let err = load_in(dir, text, &[("CRYPTUS_LOG_MAX_FILE", "0")]).unwrap_err();
            assert!(err.contains("max-file"), "{err}");
        }
    }
}
