//! The resolved model written back as a Compose document, for `cryptus
//! config`: what the model holds (files merged, variables interpolated,
//! anchors, includes and extends resolved, profiles applied), in the long
//! forms, so that cryptus reads it back to the same model. A field added to
//! [`Service`] is added here too; the tests fail until it is.
//!
//! A secret's value is never part of the document: a secret shows where it
//! comes from (a file's path, a variable's name), never what it holds.

mod deploy;
mod options;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::{Compose, MountKind, Service, Source};

/// The document `config` prints, as YAML or JSON.
#[derive(Debug)]
pub struct Document<'a> {
    fields: Fields<'a>,
}

/// Serialized with every `$` in a value doubled: the document is read back
/// with interpolation, and a `$` the model holds must stay one `$`.
impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_yaml::to_value(&self.fields).map_err(serde::ser::Error::custom)?;
        escape_dollars(&mut value);
        value.serialize(serializer)
    }
}

/// Doubles `$` in every string value; keys are not interpolated, so they
/// stay as they are.
fn escape_dollars(value: &mut serde_yaml::Value) {
    use serde_yaml::Value;
    match value {
        Value::String(text) if text.contains('$') => *text = text.replace('$', "$$"),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars),
        Value::Mapping(map) => map.values_mut().for_each(escape_dollars),
        Value::Tagged(tagged) => escape_dollars(&mut tagged.value),
        _ => {}
    }
}

#[derive(Debug, Serialize)]
struct Fields<'a> {
    name: &'a str,
    services: BTreeMap<&'a str, ServiceDoc<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    networks: BTreeMap<&'a str, NetworkDoc<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    volumes: BTreeMap<&'a str, VolumeDoc<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<&'a str, ObjectDoc<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<&'a str, ObjectDoc<'a>>,
    #[serde(rename = "x-cryptus", skip_serializing_if = "Option::is_none")]
    extension: Option<ExtensionDoc<'a>>,
}

/// `x-cryptus:`, written only when it declares something.
#[derive(Debug, Serialize)]
struct ExtensionDoc<'a> {
    hooks: &'a super::Hooks,
}

#[derive(Debug, Serialize)]
struct ServiceDoc<'a> {
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
    networks: InOrder<&'a str, Option<AliasesDoc<'a>>>,
    #[serde(skip_serializing_if = "InOrder::is_empty")]
    depends_on: InOrder<&'a str, DependsDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthDoc<'a>>,
    restart: &'a str,
    deploy: deploy::DeployDoc<'a>,
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
    /// `logging`, `init`, `extra_hosts` and the other runtime keys, and the
    /// limits that have no `deploy` form.
    #[serde(flatten)]
    options: options::OptionsDoc<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<options::GrantDoc<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    configs: Vec<options::GrantDoc<'a>>,
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// A map written in the model's order (the file's), which a `BTreeMap`
/// would sort: the model keeps `networks` and `depends_on` as written.
#[derive(Debug)]
struct InOrder<K, V>(Vec<(K, V)>);

impl<K, V> InOrder<K, V> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K, V> FromIterator<(K, V)> for InOrder<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        InOrder(entries.into_iter().collect())
    }
}

impl<K: Serialize, V: Serialize> Serialize for InOrder<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
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
    #[serde(skip_serializing_if = "is_false")]
    restart: bool,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    start_interval: Option<String>,
}

#[derive(Debug, Serialize)]
struct NetworkDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    internal: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct VolumeDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

/// A top-level secret or config: where its value comes from. There is no
/// field for a secret's value, and a variable shows by name only.
#[derive(Debug, Default, Serialize)]
struct ObjectDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
    /// A config's inline content, which the compose file itself holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct IpamDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    config: Vec<IpamRangeDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct IpamRangeDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    subnet: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_range: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<&'a str>,
}

/// The document for project `name`.
pub fn document<'a>(name: &'a str, compose: &'a Compose) -> Document<'a> {
    let objects = |declared: &'a BTreeMap<String, Source>, kind| {
        declared
            .iter()
            .map(|(name, source)| (name.as_str(), object_doc(kind, source)))
            .collect()
    };
    let fields = Fields {
        name,
        services: compose
            .services
            .iter()
            .map(|(name, service)| (name.as_str(), service_doc(service)))
            .collect(),
        networks: compose
            .networks
            .iter()
            .map(|(name, network)| (name.as_str(), network_doc(network)))
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
        secrets: objects(&compose.secrets, super::Kind::Secret),
        configs: objects(&compose.configs, super::Kind::Config),
        extension: (!compose.hooks.is_empty()).then_some(ExtensionDoc {
            hooks: &compose.hooks,
        }),
    };
    Document { fields }
}

/// Where a secret or config comes from. A secret's value is printed in no
/// case: the loader refuses `content:` for a secret, and were one to reach
/// here it would still not be written.
fn object_doc(kind: super::Kind, source: &Source) -> ObjectDoc<'_> {
    match source {
        Source::File(path) => ObjectDoc {
            file: Some(path),
            ..ObjectDoc::default()
        },
        Source::Environment { variable, .. } => ObjectDoc {
            environment: Some(variable),
            ..ObjectDoc::default()
        },
        Source::Content(content) => ObjectDoc {
            content: (kind == super::Kind::Config).then_some(content.as_str()),
            ..ObjectDoc::default()
        },
    }
}

fn network_doc(network: &super::Network) -> NetworkDoc<'_> {
    NetworkDoc {
        driver: network.driver.as_deref(),
        internal: network.internal,
        labels: &network.labels,
        ipam: network.ipam.as_ref().map(|ipam| IpamDoc {
            driver: ipam.driver.as_deref(),
            config: ipam
                .config
                .iter()
                .map(|range| IpamRangeDoc {
                    subnet: range.subnet.as_deref(),
                    ip_range: range.ip_range.as_deref(),
                    gateway: range.gateway.as_deref(),
                })
                .collect(),
        }),
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
        networks: service.networks.iter().map(network_entry).collect(),
        depends_on: service.depends_on.iter().map(depends_entry).collect(),
        healthcheck: service.healthcheck.as_ref().map(health_doc),
        restart: &service.restart,
        deploy: deploy::deploy_doc(service),
        stop_grace_period: service.stop_grace_period.map(duration),
        stop_signal: service.stop_signal.as_deref(),
        user: service.user.as_deref(),
        read_only: service.read_only,
        tmpfs: &service.tmpfs,
        cap_drop: &service.cap_drop,
        security_opt: &service.security_opt,
        options: options::options_doc(&service.options, &service.limits),
        secrets: service.secrets.iter().map(options::grant_doc).collect(),
        configs: service.configs.iter().map(options::grant_doc).collect(),
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

fn network_entry(network: &super::ServiceNetwork) -> (&str, Option<AliasesDoc<'_>>) {
    let aliases = (!network.aliases.is_empty()).then_some(AliasesDoc {
        aliases: &network.aliases,
    });
    (network.name.as_str(), aliases)
}

fn depends_entry(dependency: &super::Dependency) -> (&str, DependsDoc) {
    let doc = DependsDoc {
        condition: dependency.condition,
        required: dependency.required,
        restart: dependency.restart,
    };
    (dependency.service.as_str(), doc)
}

fn health_doc(health: &super::Healthcheck) -> HealthDoc<'_> {
    HealthDoc {
        test: &health.test,
        interval: health.interval.map(duration),
        timeout: health.timeout.map(duration),
        retries: health.retries,
        start_period: health.start_period.map(duration),
        start_interval: health.start_interval.map(duration),
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
    use std::path::Path;

    use super::super::{Profiles, Vars, load_texts};
    use super::*;

    /// The value of the variable a secret comes from; shown nowhere.
    const SECRET: &str = "pw-5e1c0a77-never-shown";

    /// Every key the model holds, beside the shipped files: `tool` and
    /// `probe` between them set every field (see
    /// `the_fixture_sets_every_field_of_the_model`).
    const EXTRA: &str = r#"
services:
  tool:
    image: busybox
    profiles: [debug]
    read_only: true
    tmpfs: [/tmp]
    volumes: [{type: tmpfs, target: /run}, /anonymous]
    networks: {cryptus: {aliases: [t]}}
    healthcheck: {disable: true}
    user: '1000'
    stop_grace_period: 1m30s
    deploy: {resources: {limits: {pids: 100, cpus: '0.5'}}}
    labels: {a: b}
    cap_drop: [ALL]
    security_opt: [no-new-privileges:true]
    entrypoint: [sh, -c]
    build: {context: ., dockerfile: Other, args: {V: '1'}}
  probe:
    image: busybox
    command: [sh, -c, 'echo $$HOME costs $$5']
    environment: {PRICE: "$$5", PLAIN: "a $$ b"}
    depends_on:
      tool: {condition: service_started, restart: true}
      absent: {condition: service_healthy, required: false}
    healthcheck:
      test: [CMD, 'true']
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 500ms
      start_interval: 250ms
    logging: {driver: json-file, options: {max-size: 1m, max-file: '2'}}
    init: true
    extra_hosts: ["db.internal=10.9.8.7", "v6.internal=[::1]"]
    cap_add: [NET_ADMIN]
    privileged: true
    working_dir: /srv
    hostname: probe
    domainname: example.internal
    dns: [10.9.8.1, "::1"]
    dns_search: [example.internal]
    expose: ["7000-7001/udp", 3000]
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}
    sysctls: {net.core.somaxconn: 1024}
    shm_size: 32m
    group_add: [audio]
    tty: true
    stdin_open: true
    devices: ["/dev/null:/dev/nothing:r"]
    pull_policy: never
    mem_limit: 64m
    memswap_limit: 128m
    mem_reservation: 32m
    cpu_shares: 256
    secrets:
      - db
      - {source: cert, target: /etc/cert.pem, uid: '103', gid: 104, mode: '0440'}
    configs:
      - {source: app, target: /etc/app.ini, uid: '1', gid: '2', mode: 0o400}
    deploy:
      mode: replicated
      endpoint_mode: vip
      replicas: 2
      labels: {tier: back}
      resources: {reservations: {cpus: '0.25'}}
      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m}
      placement:
        constraints: [node.role==manager]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
      update_config: {parallelism: 2, delay: 10s, failure_action: rollback, monitor: 30s, max_failure_ratio: 0.25, order: start-first}
      rollback_config: {parallelism: 1, delay: 1s, failure_action: pause, monitor: 5s, max_failure_ratio: 0.5, order: stop-first}
secrets:
  db: {environment: DB_PASSWORD}
  cert: {file: CERT_PATH}
configs:
  app: {content: "host=$${HOST}"}
networks:
  cryptus:
    internal: true
    labels: {x: y}
    ipam:
      driver: default
      config: [{subnet: 10.9.0.0/24, ip_range: 10.9.0.0/25, gateway: 10.9.0.1}]
volumes:
  redis-data:
    driver: local
    labels: {k: v}
"#;

    fn vars() -> Vars {
        Vars::new(BTreeMap::from([(
            "DB_PASSWORD".to_owned(),
            SECRET.to_owned(),
        )]))
    }

    fn profiles() -> Profiles {
        Profiles::new(&["debug".to_owned()]).unwrap()
    }

    /// The shipped files and [`EXTRA`], loaded; `dir` holds the secret's file.
    fn fixture(dir: &Path) -> Compose {
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, "certificate").unwrap();
        let extra = EXTRA.replace("CERT_PATH", &cert.to_string_lossy());
        let files = [
            (
                "/p/compose/a.yml",
                include_str!("../../compose/docker-compose.zero-downtime.yml"),
            ),
            (
                "/p/compose/b.yml",
                include_str!("../../compose/docker-compose.monitoring.yml"),
            ),
            ("/p/compose/c.yml", extra.as_str()),
        ];
        let listed = ["/p/compose/a.yml", "/p/compose/b.yml", "/p/compose/c.yml"];
        load_texts(&listed, &files, &vars(), &profiles()).unwrap()
    }

    /// The model as the tests compare it: every field but the files'.
    fn model(compose: &Compose) -> serde_json::Value {
        serde_json::json!({
            "services": compose.services,
            "networks": compose.networks,
            "volumes": compose.volumes,
            "secrets": compose.secrets,
            "configs": compose.configs,
        })
    }

    #[test]
    fn the_document_reads_back_to_the_same_model() {
        let dir = tempfile::tempdir().unwrap();
        let compose = fixture(dir.path());
        let text = serde_yaml::to_string(&document("demo", &compose)).unwrap();
        let again = load_texts(
            &["/p/compose/r.yml"],
            &[("/p/compose/r.yml", &text)],
            &vars(),
            &profiles(),
        )
        .unwrap_or_else(|err| panic!("{err:#}\n{text}"));
        assert_eq!(again.name.as_deref(), Some("demo"));
        let differ = differences(&model(&again), &model(&compose), "");
        assert!(differ.is_empty(), "{differ:#?}\n{text}");
        // A `$` the model holds is written `$$`, and read back as one `$`.
        let probe = &again.services["probe"];
        assert_eq!(probe.environment["PRICE"], "$5");
        assert_eq!(
            compose.configs["app"],
            Source::Content("host=${HOST}".into())
        );
        assert!(text.contains("host=$${HOST}"), "{text}");
    }

    /// Where `a` and `b` differ, as paths with both values.
    fn differences(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Vec<String> {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                let null = Value::Null;
                keys.into_iter()
                    .flat_map(|k| {
                        let (a, b) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                        differences(a, b, &format!("{path}.{k}"))
                    })
                    .collect()
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .flat_map(|(i, (a, b))| differences(a, b, &format!("{path}[{i}]")))
                .collect(),
            _ if a == b => Vec::new(),
            _ => vec![format!("{path}: read back {a}, loaded {b}")],
        }
    }

    /// A field the fixture leaves unset would read back the same whether
    /// `config` prints it or not: so every field must be set somewhere.
    #[test]
    fn the_fixture_sets_every_field_of_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = BTreeMap::new();
        walk(&model(&fixture(dir.path())), "", 0, &mut paths);
        let unset: Vec<&String> = paths
            .iter()
            .filter(|(_, set)| !**set)
            .map(|(p, _)| p)
            .collect();
        assert!(unset.is_empty(), "set these in EXTRA: {unset:?}");
    }

    /// Records each path of `value` and whether any occurrence holds a
    /// value; the names under the top-level keys become `*`, list items `[]`.
    fn walk(
        value: &serde_json::Value,
        path: &str,
        depth: usize,
        paths: &mut BTreeMap<String, bool>,
    ) {
        use serde_json::Value;
        let set = match value {
            Value::Null | Value::Bool(false) => false,
            Value::String(text) => !text.is_empty(),
            Value::Array(items) => !items.is_empty(),
            Value::Object(map) => !map.is_empty(),
            Value::Bool(true) | Value::Number(_) => true,
        };
        *paths.entry(path.to_owned()).or_default() |= set;
        match value {
            Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{path}[]"), depth + 1, paths);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let key = if depth == 1 { "*" } else { key.as_str() };
                    walk(item, &format!("{path}.{key}"), depth + 1, paths);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn config_never_shows_a_secret_value() {
        let dir = tempfile::tempdir().unwrap();
        let compose = fixture(dir.path());
        assert_eq!(compose.secrets["db"].value().unwrap().expose(), SECRET);
        let doc = document("demo", &compose);
        let yaml = serde_yaml::to_string(&doc).unwrap();
        let json = serde_json::to_string_pretty(&doc).unwrap();
        for shown in [&yaml, &json] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("DB_PASSWORD"), "{shown}");
        }
    }

    #[test]
    fn durations_are_written_as_compose_writes_them() {
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_micros(7)), "7000ns");
    }
}
