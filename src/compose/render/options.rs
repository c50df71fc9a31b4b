//! A service's runtime keys in the document (`logging`, `init`,
//! `extra_hosts`, `ulimits`, `devices`...), the limits that have no
//! `deploy` form (`memswap_limit`, `cpu_shares`), and its grants of secrets
//! and configs, each in Compose's long form.

use std::collections::BTreeMap;

use serde::Serialize;

use super::is_false;
use crate::compose::{ContainerOptions, Device, Grant, Limits, Logging, Ulimit};

#[derive(Debug, Serialize)]
pub struct OptionsDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    logging: Option<LoggingDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    init: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cap_add: &'a [String],
    #[serde(skip_serializing_if = "is_false")]
    privileged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domainname: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    dns: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    dns_search: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    expose: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    ulimits: &'a BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sysctls: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shm_size: Option<String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    group_add: &'a [String],
    #[serde(skip_serializing_if = "is_false")]
    tty: bool,
    #[serde(skip_serializing_if = "is_false")]
    stdin_open: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    devices: &'a [Device],
    #[serde(skip_serializing_if = "Option::is_none")]
    pull_policy: Option<&'a str>,
    /// Memory and swap together; -1 is unlimited swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    memswap_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_shares: Option<i64>,
}

#[derive(Debug, Serialize)]
struct LoggingDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    options: &'a BTreeMap<String, String>,
}

/// A grant: `{source, target, uid, gid, mode}`, ids as strings and the
/// mode in octal, as Compose writes them.
#[derive(Debug, Serialize)]
pub struct GrantDoc<'a> {
    source: &'a str,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

pub fn options_doc<'a>(options: &'a ContainerOptions, limits: &Limits) -> OptionsDoc<'a> {
    OptionsDoc {
        logging: options.logging.as_ref().map(logging_doc),
        init: options.init,
        extra_hosts: options.extra_hosts.iter().map(|h| extra_host(h)).collect(),
        cap_add: &options.cap_add,
        privileged: options.privileged,
        working_dir: options.working_dir.as_deref(),
        hostname: options.hostname.as_deref(),
        domainname: options.domainname.as_deref(),
        dns: &options.dns,
        dns_search: &options.dns_search,
        expose: &options.expose,
        ulimits: &options.ulimits,
        sysctls: &options.sysctls,
        shm_size: options.shm_size.map(|bytes| bytes.to_string()),
        group_add: &options.group_add,
        tty: options.tty,
        stdin_open: options.stdin_open,
        devices: &options.devices,
        pull_policy: options.pull_policy.as_deref(),
        memswap_limit: limits.memory_swap.map(|bytes| bytes.to_string()),
        cpu_shares: limits.cpu_shares,
    }
}

fn logging_doc(logging: &Logging) -> LoggingDoc<'_> {
    LoggingDoc {
        driver: logging.driver.as_deref(),
        options: &logging.options,
    }
}

/// The model holds the engine's `host:ip`; Compose's `host=ip` reads back
/// unambiguously when the address is IPv6.
fn extra_host(entry: &str) -> String {
    match entry.split_once(':') {
        Some((host, ip)) => format!("{host}={ip}"),
        None => entry.to_owned(),
    }
}

pub fn grant_doc(grant: &Grant) -> GrantDoc<'_> {
    GrantDoc {
        source: &grant.name,
        target: &grant.target,
        uid: grant.uid.map(|id| id.to_string()),
        gid: grant.gid.map(|id| id.to_string()),
        mode: grant.mode.map(|mode| format!("0{mode:o}")),
    }
}
