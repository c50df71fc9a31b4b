//! The compose file as written: every key cryptus supports, and nothing else.
//!
//! Scalars are interpolated while they are deserialized, so that every error
//! (an unknown key, a bad `${VAR}`, a port that does not parse) carries the
//! key path and the line and column serde_yaml knows at that point. The
//! variables come from [`super::interpolate::with_vars`], set for the
//! duration of one parse.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::interpolate::{interpolated, variable};

/// Any YAML scalar (string, number, bool) as interpolated text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                interpolated(v).map(Text)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// An image reference, checked as it is read so the error carries the line.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRef(pub String);

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ImageRef, D::Error> {
        let check = |text: String| super::check_image_reference(&text).map(|()| ImageRef(text));
        deserializer.deserialize_any(Checked(check, "an image reference"))
    }
}

/// A value parsed from an interpolated scalar, so `replicas: ${N:-2}` works.
pub trait FromText: Sized {
    const EXPECTING: &'static str;
    fn from_text(text: &str) -> Option<Self>;
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Parsed<T>(pub T);

impl<'de, T: FromText> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Parsed<T>, D::Error> {
        let check = |text: String| {
            T::from_text(text.trim())
                .map(Parsed)
                .ok_or_else(|| format!("invalid value {text:?}: expected {}", T::EXPECTING))
        };
        deserializer.deserialize_any(Checked(check, T::EXPECTING))
    }
}

impl FromText for u32 {
    const EXPECTING: &'static str = "a whole number";
    fn from_text(text: &str) -> Option<u32> {
        text.parse().ok()
    }
}

impl FromText for bool {
    const EXPECTING: &'static str = "true or false";
    fn from_text(text: &str) -> Option<bool> {
        match text {
            "true" | "True" | "yes" => Some(true),
            "false" | "False" | "no" => Some(false),
            _ => None,
        }
    }
}

/// CPUs as in `cpus: "0.5"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cpus(pub f64);

impl FromText for Cpus {
    const EXPECTING: &'static str = "a positive number of CPUs such as 0.5";
    fn from_text(text: &str) -> Option<Cpus> {
        text.parse::<f64>()
            .ok()
            .filter(|cpus| cpus.is_finite() && *cpus > 0.0 && *cpus <= 1024.0)
            .map(Cpus)
    }
}

/// A scalar as interpolated text, checked by `check` inside serde_yaml's
/// call, so that a refusal carries the line of the value itself.
pub(super) struct Checked<F>(pub(super) F, pub(super) &'static str);

impl<T, F: FnOnce(String) -> Result<T, String>> Visitor<'_> for Checked<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        let text = interpolated::<E>(v)?;
        (self.0)(text).map_err(E::custom)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        (self.0)(v.to_string()).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.0)(v.to_string()).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.0)(v.to_string()).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.0)(v.to_string()).map_err(E::custom)
    }
}

/// A duration key held to its range (see [`super::duration`]); the error
/// names the key, the value and the range.
macro_rules! duration_key {
    ($name:ident, $key:literal, $range:expr) => {
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name(pub Duration);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let check = |text: String| {
                    crate::compose::duration::parse_in(text.trim(), &$range)
                        .map($name)
                        .map_err(|err| format!("{}: {err}", $key))
                };
                deserializer.deserialize_any(Checked(check, "a duration such as 10s"))
            }
        }
    };
}

duration_key!(StopGracePeriod, "stop_grace_period", super::duration::WAIT);
duration_key!(
    HealthInterval,
    "healthcheck.interval",
    super::duration::HEALTHCHECK
);
duration_key!(
    HealthTimeout,
    "healthcheck.timeout",
    super::duration::HEALTHCHECK
);
duration_key!(
    StartPeriod,
    "healthcheck.start_period",
    super::duration::WAIT
);
duration_key!(
    StartInterval,
    "healthcheck.start_interval",
    super::duration::HEALTHCHECK
);

/// A count key: a whole number from `$min` to `$max`, named in the error.
macro_rules! count_key {
    ($name:ident, $key:literal, $min:expr, $max:expr) => {
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name(pub i64);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let check = |text: String| {
                    text.trim()
                        .parse::<i64>()
                        .ok()
                        .filter(|n| ($min..=$max).contains(n))
                        .map($name)
                        .ok_or_else(|| {
                            format!(
                                "{}: invalid value {text:?}: expected a whole number from {} to {}",
                                $key, $min, $max
                            )
                        })
                };
                deserializer.deserialize_any(Checked(check, "a whole number"))
            }
        }
    };
}

count_key!(Replicas, "deploy.replicas", 0, MAX_REPLICAS);
count_key!(Retries, "healthcheck.retries", 0, MAX_RETRIES);
count_key!(Pids, "deploy.resources.limits.pids", -1, MAX_PIDS);
count_key!(PidsLimit, "pids_limit", -1, MAX_PIDS);
count_key!(CpuShares, "cpu_shares", 0, MAX_CPU_SHARES);

/// A size in bytes as in `memory: 512M`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bytes(pub u64);

impl FromText for Bytes {
    const EXPECTING: &'static str = "a size such as 512M, 1g or 1048576";
    fn from_text(text: &str) -> Option<Bytes> {
        let lower = text.to_ascii_lowercase();
        let lower = lower.strip_suffix('b').unwrap_or(&lower);
        let (number, scale) = match lower.char_indices().last()? {
            (i, 'k') => (&lower[..i], 1u64 << 10),
            (i, 'm') => (&lower[..i], 1 << 20),
            (i, 'g') => (&lower[..i], 1 << 30),
            (i, 't') => (&lower[..i], 1 << 40),
            _ => (lower, 1),
        };
        let number: f64 = number.trim().parse().ok()?;
        let bytes = number * scale as f64;
        (1.0..1e18).contains(&bytes).then_some(Bytes(bytes as u64))
    }
}

// ---------------------------------------------------------------------------
// Shapes that are either a list or a map.

/// `environment`, `labels` and `build.args`: a map, or a list of `KEY=VALUE`.
/// A key without a value takes the variable of that name (Compose's rule).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyValues(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for KeyValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyValues, D::Error> {
        struct KvVisitor;
        impl<'de> Visitor<'de> for KvVisitor {
            type Value = KeyValues;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of KEY: value, or a list of KEY=value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyValues, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, Option<Text>>()? {
                    let value = match value {
                        Some(Text(value)) => Some(value),
                        None => variable(&key),
                    };
                    if let Some(value) = value {
                        out.insert(key, value);
                    }
                }
                Ok(KeyValues(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyValues, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(Text(item)) = seq.next_element::<Text>()? {
                    match item.split_once('=') {
                        Some((key, value)) => {
                            out.insert(key.to_owned(), value.to_owned());
                        }
                        None => {
                            if let Some(value) = variable(&item) {
                                out.insert(item, value);
                            }
                        }
                    }
                }
                Ok(KeyValues(out))
            }
        }
        deserializer.deserialize_any(KvVisitor)
    }
}

/// `command` and `entrypoint`: a list, or a string split the way a shell would.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Command(pub Vec<String>);

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Command, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command as a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                let text = interpolated::<E>(v)?;
                shell_words::split(&text)
                    .map(Command)
                    .map_err(|err| E::custom(format!("cannot split the command {text:?}: {err}")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut words = Vec::new();
                while let Some(Text(word)) = seq.next_element::<Text>()? {
                    words.push(word);
                }
                Ok(Command(words))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

/// A value written either as a short string or as a long-form map.
pub trait ShortOrLong: Sized {
    type Long: DeserializeOwned;
    const EXPECTING: &'static str;
    fn from_short(text: &str) -> Result<Self, String>;
    fn from_long(long: Self::Long) -> Result<Self, String>;
}

#[derive(Debug)]
pub struct Either<T>(pub T);

impl<'de, T: ShortOrLong> Deserialize<'de> for Either<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Either<T>, D::Error> {
        struct EitherVisitor<T>(PhantomData<T>);
        impl<'de, T: ShortOrLong> Visitor<'de> for EitherVisitor<T> {
            type Value = Either<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Either<T>, E> {
                let text = interpolated::<E>(v)?;
                T::from_short(&text).map(Either).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Either<T>, E> {
                T::from_short(&v.to_string()).map(Either).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Either<T>, A::Error> {
                // Through the lenient view again: the long form is a struct,
                // whose `x-*` keys are extension fields.
                let map = de::value::MapAccessDeserializer::new(map);
                let long = T::Long::deserialize(super::lenient::Lenient::new(map, None))?;
                T::from_long(long).map(Either).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(EitherVisitor(PhantomData))
    }
}

/// A list of names, or a map from name to options (`depends_on`, `networks`).
#[derive(Debug)]
pub struct NamesOr<T>(pub Vec<(String, T)>);

impl<'de, T: DeserializeOwned + Default> Deserialize<'de> for NamesOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NamesOr<T>, D::Error> {
        struct NamesVisitor<T>(PhantomData<T>);
        impl<'de, T: DeserializeOwned + Default> Visitor<'de> for NamesVisitor<T> {
            type Value = NamesOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of names or a map from name to options")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NamesOr<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(name)) = seq.next_element::<Text>()? {
                    out.push((name, T::default()));
                }
                Ok(NamesOr(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NamesOr<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((name, options)) = map.next_entry::<String, Option<T>>()? {
                    out.push((name, options.unwrap_or_default()));
                }
                Ok(NamesOr(out))
            }
        }
        deserializer.deserialize_any(NamesVisitor(PhantomData))
    }
}

/// A string or a list of strings (`include`'s `path` and `env_file`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Strings(pub Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strings, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strings, E> {
                interpolated::<E>(v).map(|text| Strings(vec![text]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(item)) = seq.next_element::<Text>()? {
                    out.push(item);
                }
                Ok(Strings(out))
            }
        }
        deserializer.deserialize_any(StringsVisitor)
    }
}

/// One `include:` entry: a path, or `path` (one or several files merged),
/// `project_directory` and `env_file`.
#[derive(Clone, Debug, PartialEq)]
pub struct Include {
    pub path: Vec<String>,
    pub project_directory: Option<String>,
    pub env_file: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongInclude {
    path: Strings,
    project_directory: Option<Text>,
    env_file: Option<Strings>,
}

impl ShortOrLong for Include {
    type Long = LongInclude;
    const EXPECTING: &'static str = "a path or a map with path, project_directory and env_file";

    fn from_short(text: &str) -> Result<Include, String> {
        Include::from_long(LongInclude {
            path: Strings(vec![text.to_owned()]),
            project_directory: None,
            env_file: None,
        })
    }

    fn from_long(long: LongInclude) -> Result<Include, String> {
        if long.path.0.is_empty() || long.path.0.iter().any(|p| p.trim().is_empty()) {
            return Err("include: every path must name a file".to_owned());
        }
        if let Some(remote) = long.path.0.iter().find(|p| is_remote(p)) {
            return Err(format!(
                "include: {remote:?} is remote; cryptus reads only files on this host"
            ));
        }
        Ok(Include {
            path: long.path.0,
            project_directory: long.project_directory.map(|t| t.0),
            env_file: long.env_file.map(|e| e.0).unwrap_or_default(),
        })
    }
}

/// A Compose file elsewhere than on this host (`oci://`, a Git URL).
fn is_remote(path: &str) -> bool {
    path.contains("://") || path.starts_with("git@")
}

/// A service's `extends:`: the service it starts from, in this file or in
/// `file`.
#[derive(Clone, Debug, PartialEq)]
pub struct Extends {
    pub service: String,
    pub file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongExtends {
    service: Text,
    file: Option<Text>,
}

impl ShortOrLong for Extends {
    type Long = LongExtends;
    const EXPECTING: &'static str = "a service name or a map with service and file";

    fn from_short(text: &str) -> Result<Extends, String> {
        Extends::from_long(LongExtends {
            service: Text(text.to_owned()),
            file: None,
        })
    }

    fn from_long(long: LongExtends) -> Result<Extends, String> {
        if long.service.0.trim().is_empty() {
            return Err("extends.service names no service".to_owned());
        }
        if let Some(remote) = long.file.as_ref().filter(|f| is_remote(&f.0)) {
            return Err(format!(
                "extends.file {:?} is remote; cryptus reads only files on this host",
                remote.0
            ));
        }
        Ok(Extends {
            service: long.service.0,
            file: long.file.map(|t| t.0),
        })
    }
}

/// A profile name, as the Compose Specification writes it:
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile(pub String);

impl<'de> Deserialize<'de> for Profile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Profile, D::Error> {
        let check = |text: String| super::profiles::check_name(&text).map(|()| Profile(text));
        deserializer.deserialize_any(Checked(check, "a profile name"))
    }
}

// ---------------------------------------------------------------------------
// The file.

/// `deploy.replicas`: as many as `cryptus scale` allows.
pub const MAX_REPLICAS: i64 = crate::stack::MAX_REPLICAS as i64;
/// `healthcheck.retries`.
pub const MAX_RETRIES: i64 = 10_000;
/// `deploy.resources.limits.pids` (-1: unlimited); Linux's own maximum.
pub const MAX_PIDS: i64 = 4_194_304;
/// `cpu_shares`: the kernel's largest weight (0 leaves the default).
pub const MAX_CPU_SHARES: i64 = 262_144;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The project's name, which must be the one cryptus runs it as.
    pub name: Option<Text>,
    /// Other Compose applications whose resources join this one.
    pub include: Option<Vec<Either<Include>>>,
    /// Obsolete in the Compose specification; accepted and ignored, as Compose does.
    #[allow(dead_code)]
    pub version: Option<Text>,
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<RawNetwork>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<RawVolume>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, service_keys::RawFileObject>,
    #[serde(default)]
    pub configs: BTreeMap<String, service_keys::RawFileObject>,
    /// cryptus's own extension: the deploy hooks.
    #[serde(rename = "x-cryptus")]
    pub x_cryptus: Option<super::hooks::Extension>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    // How the service is composed and when it runs: applied on the value
    // tree before this struct is read for the merged model.
    pub extends: Option<Either<Extends>>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    pub image: Option<ImageRef>,
    pub build: Option<Either<super::Build>>,
    pub command: Option<Command>,
    pub entrypoint: Option<Command>,
    #[serde(default)]
    pub environment: KeyValues,
    #[serde(default)]
    pub labels: KeyValues,
    #[serde(default)]
    pub ports: Vec<Either<super::Port>>,
    #[serde(default)]
    pub volumes: Vec<Either<super::Mount>>,
    pub networks: Option<NamesOr<NetworkOptions>>,
    pub depends_on: Option<NamesOr<DependsOptions>>,
    pub healthcheck: Option<RawHealthcheck>,
    pub restart: Option<Text>,
    pub deploy: Option<RawDeploy>,
    pub stop_grace_period: Option<StopGracePeriod>,
    pub stop_signal: Option<Text>,
    pub user: Option<Text>,
    pub read_only: Option<Parsed<bool>>,
    #[serde(default)]
    pub tmpfs: Vec<Text>,
    #[serde(default)]
    pub cap_drop: Vec<Text>,
    #[serde(default)]
    pub security_opt: Vec<Text>,
    // The keys below shape the container further; see `service_keys`.
    pub env_file: Option<service_keys::EnvFiles>,
    #[serde(default)]
    pub secrets: Vec<Either<service_keys::RawGrant>>,
    #[serde(default)]
    pub configs: Vec<Either<service_keys::RawGrant>>,
    pub logging: Option<service_keys::RawLogging>,
    pub init: Option<Parsed<bool>>,
    pub extra_hosts: Option<service_keys::ExtraHosts>,
    #[serde(default)]
    pub cap_add: Vec<Text>,
    pub privileged: Option<Parsed<bool>>,
    pub working_dir: Option<Text>,
    pub hostname: Option<Parsed<service_keys::HostName>>,
    pub domainname: Option<Parsed<service_keys::HostName>>,
    pub dns: Option<service_keys::OneOrMany<Parsed<service_keys::Ip>>>,
    pub dns_search: Option<service_keys::OneOrMany<Text>>,
    #[serde(default)]
    pub expose: Vec<Parsed<service_keys::Expose>>,
    #[serde(default)]
    pub ulimits: BTreeMap<String, service_keys::Ulimit>,
    pub sysctls: Option<service_keys::Sysctls>,
    pub shm_size: Option<Parsed<Bytes>>,
    #[serde(default)]
    pub group_add: Vec<Text>,
    pub tty: Option<Parsed<bool>>,
    pub stdin_open: Option<Parsed<bool>>,
    #[serde(default)]
    pub devices: Vec<Either<service_keys::RawDevice>>,
    pub pull_policy: Option<Parsed<service_keys::PullPolicy>>,
    pub mem_limit: Option<Parsed<Bytes>>,
    pub memswap_limit: Option<Parsed<service_keys::SwapLimit>>,
    pub mem_reservation: Option<Parsed<Bytes>>,
    pub cpus: Option<Parsed<service_keys::CpuLimit>>,
    pub cpu_shares: Option<CpuShares>,
    pub pids_limit: Option<PidsLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOptions {
    #[serde(default)]
    pub aliases: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOptions {
    pub condition: Option<Text>,
    /// Compose's `required: false` lets a dependency be absent.
    pub required: Option<Parsed<bool>>,
    /// Compose's `restart: true`: restart this service when cryptus
    /// recreates the dependency.
    pub restart: Option<Parsed<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthcheck {
    pub test: Option<Command>,
    pub interval: Option<HealthInterval>,
    pub timeout: Option<HealthTimeout>,
    pub retries: Option<Retries>,
    pub start_period: Option<StartPeriod>,
    pub disable: Option<Parsed<bool>>,
    pub start_interval: Option<StartInterval>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    pub replicas: Option<Replicas>,
    pub resources: Option<RawResources>,
    /// Applied to the container as Compose applies it (over `restart`).
    pub restart_policy: Option<service_keys::RawRestartPolicy>,
    // Swarm's alone: kept in the model, not applied on one engine.
    pub mode: Option<Parsed<service_keys::DeployMode>>,
    pub endpoint_mode: Option<Parsed<service_keys::EndpointMode>>,
    pub placement: Option<service_keys::RawPlacement>,
    pub update_config: Option<service_keys::RawUpdateConfig>,
    pub rollback_config: Option<service_keys::RawUpdateConfig>,
    pub labels: Option<KeyValues>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub limits: Option<RawLimits>,
    pub reservations: Option<service_keys::RawReservations>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub cpus: Option<Parsed<Cpus>>,
    pub memory: Option<Parsed<Bytes>>,
    pub pids: Option<Pids>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub driver: Option<Text>,
    pub internal: Option<Parsed<bool>>,
    #[serde(default)]
    pub labels: KeyValues,
    pub ipam: Option<RawIpam>,
}

/// A network's `ipam:`: its address ranges.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpam {
    pub driver: Option<Text>,
    #[serde(default)]
    pub config: Vec<RawIpamConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpamConfig {
    pub subnet: Option<Text>,
    pub ip_range: Option<Text>,
    pub gateway: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVolume {
    pub driver: Option<Text>,
    #[serde(default)]
    pub labels: KeyValues,
}

pub mod service_keys;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Bytes::from_text("512M"), Some(Bytes(512 << 20)));
        assert_eq!(Bytes::from_text("1g"), Some(Bytes(1 << 30)));
        assert_eq!(Bytes::from_text("256mb"), Some(Bytes(256 << 20)));
        assert_eq!(Bytes::from_text("1048576"), Some(Bytes(1 << 20)));
        assert_eq!(Bytes::from_text("lots"), None);
        assert_eq!(Bytes::from_text("0"), None);
    }

    #[test]
    fn cpus() {
        assert_eq!(Cpus::from_text("0.5"), Some(Cpus(0.5)));
        assert_eq!(Cpus::from_text("0"), None);
        assert_eq!(Cpus::from_text("-1"), None);
    }
}
