//! The per-service keys as written beyond the core ones: `env_file`, the
//! `secrets` and `configs` a service is granted (and their top-level
//! declarations), `logging`, the container's runtime options, the legacy
//! resource limits and the deploy keys that only Swarm applies. Each value
//! is checked while serde_yaml reads it, so an error carries its key path
//! and line.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Bytes, Checked, FromText, KeyValues, Parsed, ShortOrLong, Text, variable};
use crate::compose::duration;

thread_local! {
    static BASE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `parse` with `dir` as the directory relative `env_file` paths are
/// read from (the compose file's), for the duration of one parse.
pub fn with_base<T>(dir: &Path, parse: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            BASE.with(|slot| slot.borrow_mut().take());
        }
    }
    BASE.with(|slot| *slot.borrow_mut() = Some(dir.to_path_buf()));
    let _reset = Reset;
    parse()
}

/// Where a relative path of the file being read points.
fn from_base(path: &str) -> PathBuf {
    let base = BASE.with(|slot| slot.borrow().clone());
    match base {
        Some(base) if Path::new(path).is_relative() => base.join(path),
        _ => PathBuf::from(path),
    }
}

// ---------------------------------------------------------------------------
// Values that must not be shown.

/// A secret's value: never printed, logged or serialized; its `Debug` says
/// only how long it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: String) -> Sensitive {
        Sensitive(value)
    }

    /// The value itself, for the one place that writes it to its file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "<hidden, {} bytes>", self.0.len())
    }
}

// ---------------------------------------------------------------------------
// env_file

/// How many `env_file` entries one service may list.
pub const MAX_ENV_FILES: usize = 64;

/// A service's `env_file`, already read: a path, a list of paths, or a list
/// of `{path, required, format}`; each file read in order, a later one
/// winning.
#[derive(Debug, Default)]
pub struct EnvFiles {
    pub values: BTreeMap<String, String>,
    /// The files read, for messages and the model.
    pub paths: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongEnvFile {
    path: Text,
    required: Option<Parsed<bool>>,
    format: Option<Text>,
}

/// One entry of the list, read into the files so far while its line is
/// known: a path, or `{path, required, format}`.
struct EntrySeed<'a>(&'a mut EnvFiles);

impl<'de> de::DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a path or {path, required, format}")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let path = super::interpolated::<E>(v)?;
        read_env_file(self.0, &path, true, false).map_err(E::custom)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let long = LongEnvFile::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let raw = match long.format.as_ref().map(|t| t.0.as_str()) {
            None | Some("") => false,
            Some("raw") => true,
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "env_file format {other:?} is not supported (use raw, or leave it out)"
                )));
            }
        };
        let required = long.required.is_none_or(|r| r.0);
        read_env_file(self.0, &long.path.0, required, raw).map_err(de::Error::custom)
    }
}

fn read_env_file(
    files: &mut EnvFiles,
    path: &str,
    required: bool,
    raw: bool,
) -> Result<(), String> {
    if files.paths.len() >= MAX_ENV_FILES {
        return Err(format!("env_file lists more than {MAX_ENV_FILES} files"));
    }
    let full = from_base(path);
    let limit = crate::compose::MAX_ENV_FILE_BYTES;
    let text = match crate::compose::limits::read_bounded(&full, limit, "the env file") {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => return Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "env file {} does not exist (hint: create it, or mark the entry `required: false`)",
                full.display()
            ));
        }
        Err(err) => return Err(format!("reading env file {}: {err}", full.display())),
    };
    let parsed = if raw {
        crate::compose::env_file::parse_raw(&text, &|name| variable(name))
    } else {
        crate::compose::env_file::parse(&text, &|name| {
            variable(name).or_else(|| files.values.get(name).cloned())
        })
    }
    .map_err(|err| format!("env file {}: {err}", full.display()))?;
    files.values.extend(parsed);
    files.paths.push(full);
    Ok(())
}

impl<'de> Deserialize<'de> for EnvFiles {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EnvFiles, D::Error> {
        struct FilesVisitor;
        impl<'de> Visitor<'de> for FilesVisitor {
            type Value = EnvFiles;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path, or a list of paths or {path, required, format}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvFiles, E> {
                let path = super::interpolated::<E>(v)?;
                let mut files = EnvFiles::default();
                read_env_file(&mut files, &path, true, false).map_err(E::custom)?;
                Ok(files)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EnvFiles, A::Error> {
                let mut files = EnvFiles::default();
                while seq.next_element_seed(EntrySeed(&mut files))?.is_some() {}
                Ok(files)
            }
        }
        deserializer.deserialize_any(FilesVisitor)
    }
}

// ---------------------------------------------------------------------------
// secrets and configs

/// A numeric user or group id, as `uid: "103"` or `uid: 103`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Id(pub u32);

/// The largest id Linux gives a user or group (`(uid_t)-1` means none).
pub const MAX_ID: u32 = u32::MAX - 1;

impl FromText for Id {
    const EXPECTING: &'static str = "a numeric id from 0 to 4294967294";
    fn from_text(text: &str) -> Option<Id> {
        text.parse::<u32>().ok().filter(|id| *id <= MAX_ID).map(Id)
    }
}

/// A file mode as Compose reads it: a string is octal (`"0440"`, `"440"`),
/// a YAML number is taken as it is (`0o440`, or `288`); 0 to 0777.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        struct ModeVisitor;
        fn checked<E: de::Error>(mode: Option<u32>, text: &str) -> Result<Mode, E> {
            mode.filter(|m| *m <= 0o777).map(Mode).ok_or_else(|| {
                E::custom(format!(
                    "mode {text:?} is not a file mode from 0 to 0777 (write it in octal, as \"0440\")"
                ))
            })
        }
        impl Visitor<'_> for ModeVisitor {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file mode such as \"0440\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                let text = super::interpolated::<E>(v)?;
                let digits = text.trim().trim_start_matches("0o");
                checked(u32::from_str_radix(digits, 8).ok(), &text)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mode, E> {
                checked(u32::try_from(v).ok(), &v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mode, E> {
                checked(u32::try_from(v).ok(), &v.to_string())
            }
        }
        deserializer.deserialize_any(ModeVisitor)
    }
}

/// A service's grant of a secret or config: its name, or
/// `{source, target, uid, gid, mode}`.
#[derive(Debug, Default)]
pub struct RawGrant {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongGrant {
    source: Text,
    target: Option<Text>,
    uid: Option<Parsed<Id>>,
    gid: Option<Parsed<Id>>,
    mode: Option<Mode>,
}

impl ShortOrLong for RawGrant {
    type Long = LongGrant;
    const EXPECTING: &'static str = "a name, or {source, target, uid, gid, mode}";

    fn from_short(text: &str) -> Result<RawGrant, String> {
        Ok(RawGrant {
            source: checked_object_name(text)?,
            ..RawGrant::default()
        })
    }

    fn from_long(long: LongGrant) -> Result<RawGrant, String> {
        Ok(RawGrant {
            source: checked_object_name(&long.source.0)?,
            target: long.target.map(|t| t.0).filter(|t| !t.is_empty()),
            uid: long.uid.map(|u| u.0.0),
            gid: long.gid.map(|g| g.0.0),
            mode: long.mode.map(|m| m.0),
        })
    }
}

fn checked_object_name(name: &str) -> Result<String, String> {
    if crate::compose::valid_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a secret or config name (letters, digits, '_', '.', '-')"
        ))
    }
}

/// The value of `environment: NAME`, read while the line is known.
#[derive(Debug)]
pub struct FromVariable {
    pub name: String,
    pub value: Sensitive,
}

impl<'de> Deserialize<'de> for FromVariable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FromVariable, D::Error> {
        let check = |name: String| match variable(&name) {
            Some(value) => Ok(FromVariable {
                name,
                value: Sensitive(value),
            }),
            None => Err(format!(
                "environment: the variable {name} is not set (hint: set it in the environment or in .env)"
            )),
        };
        deserializer.deserialize_any(Checked(check, "a variable name"))
    }
}

/// A top-level `secrets:` or `configs:` entry: where its value comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileObject {
    pub file: Option<Text>,
    pub environment: Option<FromVariable>,
    /// Configs only (Compose refuses it for a secret).
    pub content: Option<Text>,
    pub external: Option<Parsed<bool>>,
    /// The engine-side name Compose gives an external object; kept.
    pub name: Option<Text>,
}

// ---------------------------------------------------------------------------
// logging and the container's options

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub driver: Option<Text>,
    #[serde(default)]
    pub options: BTreeMap<String, Text>,
}

/// A value or a list of values (`dns`, `dns_search`).
#[derive(Debug)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OneOrMany<T>, D::Error> {
        struct ListVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany<T>, E> {
                let one = T::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(OneOrMany(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    out.push(item);
                }
                Ok(OneOrMany(out))
            }
        }
        deserializer.deserialize_any(ListVisitor(std::marker::PhantomData))
    }
}

/// A host or domain name (`hostname`, `domainname`): RFC 1123, labels of
/// letters, digits and '-', at most 253 characters.
#[derive(Clone, Debug, PartialEq)]
pub struct HostName(pub String);

impl FromText for HostName {
    const EXPECTING: &'static str = "an RFC 1123 host name (letters, digits, '-' and '.')";
    fn from_text(text: &str) -> Option<HostName> {
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        (text.len() <= 253 && text.split('.').all(label_ok)).then(|| HostName(text.to_owned()))
    }
}

/// An IP address, as `dns` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Ip(pub String);

impl FromText for Ip {
    const EXPECTING: &'static str = "an IP address";
    fn from_text(text: &str) -> Option<Ip> {
        text.parse::<IpAddr>().ok().map(|ip| Ip(ip.to_string()))
    }
}

/// `extra_hosts`: `["host=ip", "host:ip"]` or `{host: ip}` (or a list of
/// ips); an IPv6 address may be in brackets; `host-gateway` is the engine's
/// name for the host.
#[derive(Debug, Default)]
pub struct ExtraHosts(pub Vec<(String, String)>);

fn host_entry(host: &str, ip: &str) -> Result<(String, String), String> {
    let ip = ip.trim();
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    if host.is_empty() || host.contains([':', '=', ' ']) {
        return Err(format!("extra_hosts: {host:?} is not a host name"));
    }
    if ip != "host-gateway" && ip.parse::<IpAddr>().is_err() {
        return Err(format!(
            "extra_hosts: {ip:?} (for {host}) is not an IP address or host-gateway"
        ));
    }
    Ok((host.to_owned(), ip.to_owned()))
}

fn host_item(text: &str) -> Result<(String, String), String> {
    // `=` first: with `:`, an IPv6 address would split in the wrong place.
    let (host, ip) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| format!("extra_hosts: {text:?} is not host=ip"))?;
    host_entry(host.trim(), ip)
}

impl<'de> Deserialize<'de> for ExtraHosts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ExtraHosts, D::Error> {
        struct HostsVisitor;
        impl<'de> Visitor<'de> for HostsVisitor {
            type Value = ExtraHosts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of host=ip, or a map from host to ip")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ExtraHosts, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(item)) = seq.next_element::<Text>()? {
                    out.push(host_item(&item).map_err(de::Error::custom)?);
                }
                Ok(ExtraHosts(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExtraHosts, A::Error> {
                let mut out = Vec::new();
                while let Some((host, ips)) = map.next_entry::<String, OneOrMany<Text>>()? {
                    for Text(ip) in ips.0 {
                        out.push(host_entry(&host, &ip).map_err(de::Error::custom)?);
                    }
                }
                Ok(ExtraHosts(out))
            }
        }
        deserializer.deserialize_any(HostsVisitor)
    }
}

/// An `expose` entry: `3000`, `3000/udp` or a range `8080-8085/tcp`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expose {
    pub first: u16,
    pub last: u16,
    pub protocol: String,
}

impl FromText for Expose {
    const EXPECTING: &'static str = "a port or range as 3000, 3000/udp or 8080-8085/tcp";
    fn from_text(text: &str) -> Option<Expose> {
        let (ports, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
        if !matches!(protocol, "tcp" | "udp" | "sctp") {
            return None;
        }
        let (first, last) = ports.split_once('-').unwrap_or((ports, ports));
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let (first, last) = (port(first)?, port(last)?);
        (first <= last).then(|| Expose {
            first,
            last,
            protocol: protocol.to_owned(),
        })
    }
}

/// One `ulimits` entry: a number for both limits, or `{soft, hard}`;
/// -1 is unlimited; the soft limit may not exceed the hard one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SoftHard {
    soft: Parsed<UlimitValue>,
    hard: Parsed<UlimitValue>,
}

#[derive(Clone, Copy)]
struct UlimitValue(i64);

impl FromText for UlimitValue {
    const EXPECTING: &'static str = "a whole number from -1 (unlimited) to 2^63-1";
    fn from_text(text: &str) -> Option<UlimitValue> {
        text.parse::<i64>()
            .ok()
            .filter(|n| *n >= -1)
            .map(UlimitValue)
    }
}

fn ulimit<E: de::Error>(soft: i64, hard: i64) -> Result<Ulimit, E> {
    let ceiling = |n: i64| if n == -1 { i64::MAX } else { n };
    if ceiling(soft) > ceiling(hard) {
        return Err(E::custom(format!(
            "the soft limit {soft} is above the hard limit {hard}"
        )));
    }
    Ok(Ulimit { soft, hard })
}

impl<'de> Deserialize<'de> for Ulimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ulimit, D::Error> {
        struct UlimitVisitor;
        impl<'de> Visitor<'de> for UlimitVisitor {
            type Value = Ulimit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number from -1 (unlimited) to 2^63-1, or {soft, hard}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ulimit, E> {
                let text = super::interpolated::<E>(v)?;
                let value = UlimitValue::from_text(text.trim()).ok_or_else(|| {
                    E::custom(format!(
                        "invalid value {text:?}: expected {}",
                        UlimitValue::EXPECTING
                    ))
                })?;
                ulimit(value.0, value.0)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ulimit, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ulimit, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Ulimit, A::Error> {
                let pair = SoftHard::deserialize(de::value::MapAccessDeserializer::new(map))?;
                ulimit(pair.soft.0.0, pair.hard.0.0)
            }
        }
        deserializer.deserialize_any(UlimitVisitor)
    }
}

/// A device: `/dev/x`, `/dev/x:/dev/y` or `/dev/x:/dev/y:rwm`, or
/// `{source, target, permissions}`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDevice {
    pub source: String,
    pub target: String,
    pub permissions: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongDevice {
    source: Text,
    target: Option<Text>,
    permissions: Option<Text>,
}

fn device(
    source: &str,
    target: Option<&str>,
    permissions: Option<&str>,
) -> Result<RawDevice, String> {
    if !source.starts_with('/') {
        return Err(format!(
            "device {source:?} is not an absolute path (CDI device names are not supported on this engine)"
        ));
    }
    let target = target.filter(|t| !t.is_empty()).unwrap_or(source);
    if !target.starts_with('/') {
        return Err(format!("device target {target:?} is not an absolute path"));
    }
    let permissions = permissions.filter(|p| !p.is_empty()).unwrap_or("rwm");
    let mut seen = String::new();
    for c in permissions.chars() {
        if !matches!(c, 'r' | 'w' | 'm') || seen.contains(c) {
            return Err(format!(
                "device permissions {permissions:?} are not some of r, w and m"
            ));
        }
        seen.push(c);
    }
    Ok(RawDevice {
        source: source.to_owned(),
        target: target.to_owned(),
        permissions: permissions.to_owned(),
    })
}

impl ShortOrLong for RawDevice {
    type Long = LongDevice;
    const EXPECTING: &'static str = "a device as /dev/x[:/dev/y[:rwm]] or a map";

    fn from_short(text: &str) -> Result<RawDevice, String> {
        let mut parts = text.splitn(3, ':');
        let source = parts.next().unwrap_or_default();
        device(source, parts.next(), parts.next())
    }

    fn from_long(long: LongDevice) -> Result<RawDevice, String> {
        device(
            &long.source.0,
            long.target.as_ref().map(|t| t.0.as_str()),
            long.permissions.as_ref().map(|t| t.0.as_str()),
        )
    }
}

// ---------------------------------------------------------------------------
// Sizes and counts

/// `memswap_limit`: -1 (unlimited swap), 0 (unset) or a size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SwapLimit {
    Unlimited,
    Unset,
    Bytes(u64),
}

impl FromText for SwapLimit {
    const EXPECTING: &'static str = "-1, 0 or a size such as 1g";
    fn from_text(text: &str) -> Option<SwapLimit> {
        match text {
            "-1" => Some(SwapLimit::Unlimited),
            "0" => Some(SwapLimit::Unset),
            _ => Bytes::from_text(text).map(|b| SwapLimit::Bytes(b.0)),
        }
    }
}

/// The legacy `cpus`: 0 (no limit, as Compose reads it) to 1024.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuLimit(pub f64);

impl FromText for CpuLimit {
    const EXPECTING: &'static str = "a number of CPUs from 0 (no limit) to 1024";
    fn from_text(text: &str) -> Option<CpuLimit> {
        text.parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && (0.0..=1024.0).contains(c))
            .map(CpuLimit)
    }
}

/// `pull_policy`.
#[derive(Clone, Debug, PartialEq)]
pub struct PullPolicy(pub String);

impl FromText for PullPolicy {
    const EXPECTING: &'static str =
        "always, never, missing, if_not_present, build, daily, weekly or every_<duration>";
    fn from_text(text: &str) -> Option<PullPolicy> {
        let known = matches!(
            text,
            "always" | "never" | "missing" | "if_not_present" | "build" | "daily" | "weekly"
        );
        let every = text
            .strip_prefix("every_")
            .is_some_and(|d| duration::parse(d).is_ok());
        (known || every).then(|| PullPolicy(text.to_owned()))
    }
}

/// `sysctls`: a map or a list of `name=value`.
#[derive(Debug, Default)]
pub struct Sysctls(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Sysctls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sysctls, D::Error> {
        let KeyValues(values) = KeyValues::deserialize(deserializer)?;
        for name in values.keys() {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
            if !ok {
                return Err(de::Error::custom(format!(
                    "sysctls: {name:?} is not a kernel parameter name"
                )));
            }
        }
        Ok(Sysctls(values))
    }
}

// ---------------------------------------------------------------------------
// deploy: reservations, and what only Swarm applies

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReservations {
    pub cpus: Option<Parsed<super::Cpus>>,
    pub memory: Option<Parsed<Bytes>>,
}

/// How many attempts, tasks or replicas a Swarm key may name.
pub const MAX_SWARM_COUNT: i64 = 10_000;

count_key!(
    SwarmParallelism,
    "deploy.update_config.parallelism",
    0,
    MAX_SWARM_COUNT
);
count_key!(
    MaxAttempts,
    "deploy.restart_policy.max_attempts",
    0,
    MAX_SWARM_COUNT
);
count_key!(
    MaxPerNode,
    "deploy.placement.max_replicas_per_node",
    0,
    MAX_SWARM_COUNT
);
duration_key!(SwarmDelay, "deploy delay", duration::WAIT);
duration_key!(SwarmWindow, "deploy window or monitor", duration::WAIT);

/// A fraction from 0 to 1 (`max_failure_ratio`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio(pub f64);

impl FromText for Ratio {
    const EXPECTING: &'static str = "a ratio from 0 to 1";
    fn from_text(text: &str) -> Option<Ratio> {
        text.parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .map(Ratio)
    }
}

/// One of a fixed set of words.
macro_rules! word_key {
    ($name:ident, $($word:literal),+) => {
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name(pub String);

        impl FromText for $name {
            const EXPECTING: &'static str = concat!("one of:", $(" ", $word),+);
            fn from_text(text: &str) -> Option<$name> {
                [$($word),+].contains(&text).then(|| $name(text.to_owned()))
            }
        }
    };
}

word_key!(
    DeployMode,
    "replicated",
    "global",
    "replicated-job",
    "global-job"
);
word_key!(EndpointMode, "vip", "dnsrr");
word_key!(RestartCondition, "none", "on-failure", "any");
word_key!(FailureAction, "continue", "rollback", "pause");
word_key!(UpdateOrder, "stop-first", "start-first");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlacement {
    #[serde(default)]
    pub constraints: Vec<Text>,
    #[serde(default)]
    pub preferences: Vec<RawPreference>,
    pub max_replicas_per_node: Option<MaxPerNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreference {
    pub spread: Text,
}

/// `update_config` and `rollback_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpdateConfig {
    pub parallelism: Option<SwarmParallelism>,
    pub delay: Option<SwarmDelay>,
    pub failure_action: Option<Parsed<FailureAction>>,
    pub monitor: Option<SwarmWindow>,
    pub max_failure_ratio: Option<Parsed<Ratio>>,
    pub order: Option<Parsed<UpdateOrder>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestartPolicy {
    pub condition: Option<Parsed<RestartCondition>>,
    pub delay: Option<SwarmDelay>,
    pub max_attempts: Option<MaxAttempts>,
    pub window: Option<SwarmWindow>,
}
