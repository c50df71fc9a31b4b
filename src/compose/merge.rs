//! The Compose Specification's merge rules (13-merge.md), as docker compose
//! applies them: how a later file changes what an earlier one wrote, how a
//! service changes the one it `extends`, and how a file changes a resource
//! it includes. Maps merge key by key; sequences append; `command`,
//! `entrypoint` and `healthcheck.test` are replaced; ports, volumes and the
//! other keyed sequences keep one entry per key, the later one.

use serde_yaml::{Mapping, Value};

use super::tree::{KeyPath, dotted, item};

/// Merges `over` (a later file) over `base`, then keeps keyed sequences unique.
pub fn files(base: Mapping, over: Mapping) -> Result<Mapping, String> {
    let merged = merge(Value::Mapping(base), Value::Mapping(over), &mut Vec::new())?;
    let mut merged = match merged {
        Value::Mapping(map) => map,
        _ => Mapping::new(),
    };
    unique_in(&mut merged, &mut Vec::new())?;
    Ok(merged)
}

/// Merges a service over the one it extends, or over the one it includes.
pub fn resource(section: &str, base: Value, over: Value) -> Result<Value, String> {
    let mut path = vec![section.to_owned(), "*".to_owned()];
    let mut merged = merge(base, over, &mut path)?;
    if let Value::Mapping(map) = &mut merged {
        unique_in(map, &mut path)?;
    }
    Ok(merged)
}

/// Removes from `model` what a file resets or overrides, before it merges.
pub fn clear(model: &mut Mapping, paths: &[KeyPath]) {
    for path in paths {
        if let Some((last, parents)) = path.split_last() {
            let mut node = Some(&mut *model);
            for key in parents {
                node = node.and_then(|map| map.get_mut(key.as_str())?.as_mapping_mut());
            }
            match node {
                Some(map) => {
                    map.remove(last.as_str());
                }
                None => clear_item(model, parents, last),
            }
        }
    }
}

/// Removes the sequence item `last` (`[i]`) under `parents`.
fn clear_item(model: &mut Mapping, parents: &[String], last: &str) {
    let Some(index) = last
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|i| i.parse::<usize>().ok())
    else {
        return;
    };
    let Some((seq_key, map_keys)) = parents.split_last() else {
        return;
    };
    let mut node = Some(model);
    for key in map_keys {
        node = node.and_then(|map| map.get_mut(key.as_str())?.as_mapping_mut());
    }
    if let Some(Value::Sequence(items)) = node.and_then(|map| map.get_mut(seq_key.as_str())) {
        if index < items.len() {
            items.remove(index);
        }
    }
}

/// How one place of the model merges.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// The later value wins whole.
    Replace,
    /// Both become `KEY=VALUE` lists, appended (then unique by key).
    ToSequence,
    /// Both become lists; the later one's new entries are appended.
    ExtraHosts,
    /// A list of names becomes a map of default options; maps merge.
    DependsOn,
    /// A list of network names becomes a map; maps merge.
    Networks,
    /// A build context string becomes `{context: ...}`; maps merge.
    Build,
    /// Options merge only for the same driver.
    Logging,
    /// Ranges merge by subnet.
    IpamConfig,
}

const RULES: &[(&str, Rule)] = &[
    ("networks.*.ipam.config", Rule::IpamConfig),
    ("networks.*.labels", Rule::ToSequence),
    ("volumes.*.labels", Rule::ToSequence),
    ("services.*.annotations", Rule::ToSequence),
    ("services.*.build", Rule::Build),
    ("services.*.build.args", Rule::ToSequence),
    ("services.*.build.additional_contexts", Rule::ToSequence),
    ("services.*.build.extra_hosts", Rule::ExtraHosts),
    ("services.*.build.labels", Rule::ToSequence),
    ("services.*.command", Rule::Replace),
    ("services.*.depends_on", Rule::DependsOn),
    ("services.*.deploy.labels", Rule::ToSequence),
    ("services.*.dns", Rule::ToSequence),
    ("services.*.dns_opt", Rule::ToSequence),
    ("services.*.dns_search", Rule::ToSequence),
    ("services.*.entrypoint", Rule::Replace),
    ("services.*.env_file", Rule::ToSequence),
    ("services.*.label_file", Rule::ToSequence),
    ("services.*.environment", Rule::ToSequence),
    ("services.*.extra_hosts", Rule::ExtraHosts),
    ("services.*.healthcheck.test", Rule::Replace),
    ("services.*.labels", Rule::ToSequence),
    ("services.*.logging", Rule::Logging),
    ("services.*.networks", Rule::Networks),
    ("services.*.sysctls", Rule::ToSequence),
    ("services.*.tmpfs", Rule::ToSequence),
    ("services.*.ulimits.*", Rule::Replace),
    // A later file's hook replaces the command, as `command` does.
    ("x-cryptus.hooks.*", Rule::Replace),
];

/// Whether `path` matches `pattern` (dotted, `*` for any one key).
fn matches(path: &[String], pattern: &str) -> bool {
    let mut parts = pattern.split('.');
    let mut keys = path.iter();
    loop {
        match (parts.next(), keys.next()) {
            (None, None) => return true,
            (Some(part), Some(key)) if part == "*" || part == key => {}
            _ => return false,
        }
    }
}

fn rule(path: &[String]) -> Option<Rule> {
    RULES
        .iter()
        .find(|(pattern, _)| matches(path, pattern))
        .map(|(_, rule)| *rule)
}

fn merge(base: Value, over: Value, path: &mut KeyPath) -> Result<Value, String> {
    if let Some(rule) = rule(path) {
        return special(rule, base, over, path);
    }
    match (base, over) {
        (base, Value::Null) => Ok(base),
        (Value::Mapping(base), Value::Mapping(over)) => {
            merge_maps(base, over, path).map(Value::Mapping)
        }
        (Value::Sequence(mut base), Value::Sequence(over)) => {
            base.extend(over);
            Ok(Value::Sequence(base))
        }
        (Value::Mapping(_), _) | (Value::Sequence(_), _) => Err(format!(
            "{}: cannot override a map or a list with another kind of value",
            dotted(path)
        )),
        (_, over) => Ok(over),
    }
}

fn merge_maps(mut base: Mapping, over: Mapping, path: &mut KeyPath) -> Result<Mapping, String> {
    for (key, value) in over {
        let name = key.as_str().unwrap_or_default().to_owned();
        match base.remove(&key) {
            None => {
                base.insert(key, value);
            }
            Some(earlier) => {
                path.push(name);
                let merged = merge(earlier, value, path);
                path.pop();
                base.insert(key, merged?);
            }
        }
    }
    Ok(base)
}

fn special(rule: Rule, base: Value, over: Value, path: &mut KeyPath) -> Result<Value, String> {
    match rule {
        Rule::Replace => Ok(over),
        Rule::ToSequence => {
            let mut items = to_sequence(base);
            items.extend(to_sequence(over));
            Ok(Value::Sequence(items))
        }
        Rule::ExtraHosts => {
            let mut items = to_sequence(base);
            for entry in to_sequence(over) {
                if !items.contains(&entry) {
                    items.push(entry);
                }
            }
            Ok(Value::Sequence(items))
        }
        Rule::DependsOn => {
            let defaults = depends_on_defaults();
            let base = to_mapping(base, Some(&defaults));
            let over = to_mapping(over, Some(&defaults));
            merge_maps(base, over, path).map(Value::Mapping)
        }
        Rule::Networks => {
            let base = to_mapping(base, None);
            let over = to_mapping(over, None);
            merge_maps(base, over, path).map(Value::Mapping)
        }
        Rule::Build => {
            let as_map = |value: Value| match value {
                Value::String(context) => {
                    let mut map = Mapping::new();
                    map.insert("context".into(), Value::String(context));
                    map
                }
                Value::Mapping(map) => map,
                _ => Mapping::new(),
            };
            merge_maps(as_map(base), as_map(over), path).map(Value::Mapping)
        }
        Rule::Logging => match (base, over) {
            (Value::Mapping(base), Value::Mapping(over)) => {
                let same = match (base.get("driver"), over.get("driver")) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if same {
                    merge_maps(base, over, path).map(Value::Mapping)
                } else {
                    Ok(Value::Mapping(over))
                }
            }
            (base, Value::Null) => Ok(base),
            (_, over) => Ok(over),
        },
        Rule::IpamConfig => Ok(merge_ipam(base, over)),
    }
}

fn depends_on_defaults() -> Mapping {
    let mut defaults = Mapping::new();
    defaults.insert("condition".into(), "service_started".into());
    defaults.insert("required".into(), Value::Bool(true));
    defaults
}

/// A scalar as Compose writes it in a `KEY=VALUE` entry.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// A map as `KEY=VALUE` entries (sorted; a key without a value stays bare),
/// a string as one entry, a list as it is.
fn to_sequence(value: Value) -> Vec<Value> {
    match value {
        Value::Mapping(map) => {
            let mut items: Vec<String> = Vec::new();
            for (key, value) in map {
                let key = scalar_text(&key).unwrap_or_default();
                match value {
                    Value::Null => items.push(key),
                    Value::Sequence(values) => items.extend(
                        values
                            .iter()
                            .map(|v| format!("{key}={}", scalar_text(v).unwrap_or_default())),
                    ),
                    other => {
                        items.push(format!("{key}={}", scalar_text(&other).unwrap_or_default()))
                    }
                }
            }
            items.sort();
            items.into_iter().map(Value::String).collect()
        }
        Value::Sequence(items) => items,
        Value::String(text) => vec![Value::String(text)],
        _ => Vec::new(),
    }
}

/// A list of names as a map, each name with `defaults` (or no options).
fn to_mapping(value: Value, defaults: Option<&Mapping>) -> Mapping {
    match value {
        Value::Mapping(map) => map,
        Value::Sequence(items) => items
            .into_iter()
            .filter_map(|item| scalar_text(&item))
            .map(|name| {
                let options = defaults.map_or(Value::Null, |d| Value::Mapping(d.clone()));
                (Value::String(name), options)
            })
            .collect(),
        _ => Mapping::new(),
    }
}

/// `networks.*.ipam.config`: a range with the subnet of an earlier one
/// merges into it; any other is added.
fn merge_ipam(base: Value, over: Value) -> Value {
    let mut ranges = match base {
        Value::Sequence(items) => items,
        _ => Vec::new(),
    };
    let Value::Sequence(overs) = over else {
        return Value::Sequence(ranges);
    };
    for range in overs {
        let subnet = range.get("subnet").cloned();
        let earlier = ranges
            .iter_mut()
            .find(|r| subnet.is_some() && r.get("subnet").cloned() == subnet);
        match (earlier, range) {
            (Some(Value::Mapping(earlier)), Value::Mapping(range)) => {
                for (key, value) in range {
                    earlier.insert(key, value);
                }
            }
            (_, range) => ranges.push(range),
        }
    }
    Value::Sequence(ranges)
}

/// How the entries of a keyed sequence are told apart.
#[derive(Clone, Copy)]
enum Index {
    /// The key of `KEY=VALUE`, or the whole entry.
    KeyValue,
    /// `{ip, published, target, protocol}`.
    Port,
    /// The target path.
    Mount,
    /// The target under `/run/secrets` (secrets) or `/` (configs).
    Target(&'static str),
    /// The file (`env_file`).
    EnvFile,
    /// The device's path in the container.
    Device,
}

const UNIQUE: &[(&str, Index)] = &[
    ("networks.*.labels", Index::KeyValue),
    ("networks.*.ipam.options", Index::KeyValue),
    ("services.*.annotations", Index::KeyValue),
    ("services.*.build.args", Index::KeyValue),
    ("services.*.build.additional_contexts", Index::KeyValue),
    ("services.*.build.platforms", Index::KeyValue),
    ("services.*.build.tags", Index::KeyValue),
    ("services.*.build.labels", Index::KeyValue),
    ("services.*.cap_add", Index::KeyValue),
    ("services.*.cap_drop", Index::KeyValue),
    ("services.*.configs", Index::Target("")),
    ("services.*.deploy.labels", Index::KeyValue),
    ("services.*.devices", Index::Device),
    ("services.*.dns", Index::KeyValue),
    ("services.*.dns_opt", Index::KeyValue),
    ("services.*.dns_search", Index::KeyValue),
    ("services.*.environment", Index::KeyValue),
    ("services.*.env_file", Index::EnvFile),
    ("services.*.expose", Index::KeyValue),
    ("services.*.labels", Index::KeyValue),
    ("services.*.links", Index::KeyValue),
    ("services.*.networks.*.aliases", Index::KeyValue),
    ("services.*.networks.*.link_local_ips", Index::KeyValue),
    ("services.*.ports", Index::Port),
    ("services.*.profiles", Index::KeyValue),
    ("services.*.secrets", Index::Target("/run/secrets")),
    ("services.*.security_opt", Index::KeyValue),
    ("services.*.sysctls", Index::KeyValue),
    ("services.*.tmpfs", Index::KeyValue),
    ("services.*.volumes", Index::Mount),
];

/// Keeps one entry per key in each keyed sequence under `map`; a later
/// entry replaces an earlier one in its place.
fn unique_in(map: &mut Mapping, path: &mut KeyPath) -> Result<(), String> {
    for (key, value) in map.iter_mut() {
        path.push(key.as_str().unwrap_or_default().to_owned());
        let result = unique_value(value, path);
        path.pop();
        result?;
    }
    Ok(())
}

fn unique_value(value: &mut Value, path: &mut KeyPath) -> Result<(), String> {
    match value {
        Value::Mapping(map) => unique_in(map, path),
        Value::Sequence(items) => {
            let Some(index) = UNIQUE
                .iter()
                .find(|(pattern, _)| matches(path, pattern))
                .map(|(_, index)| *index)
            else {
                return Ok(());
            };
            let mut kept: Vec<Value> = Vec::with_capacity(items.len());
            let mut keys: Vec<String> = Vec::with_capacity(items.len());
            for (at, entry) in std::mem::take(items).into_iter().enumerate() {
                let key = entry_key(index, &entry).ok_or_else(|| {
                    let mut at_path = path.clone();
                    at_path.push(item(at));
                    format!("{}: an entry of an unexpected kind", dotted(&at_path))
                })?;
                match keys.iter().position(|k| *k == key) {
                    Some(earlier) => kept[earlier] = entry,
                    None => {
                        keys.push(key);
                        kept.push(entry);
                    }
                }
            }
            *items = kept;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn entry_key(index: Index, entry: &Value) -> Option<String> {
    let field = |name: &str| entry.get(name).and_then(scalar_text);
    match (index, entry) {
        (Index::KeyValue, entry) => {
            let text = scalar_text(entry)?;
            Some(
                text.split_once('=')
                    .map_or(text.clone(), |(k, _)| k.to_owned()),
            )
        }
        (Index::Port, Value::Mapping(_)) => Some(format!(
            "{}:{}:{}/{}",
            field("host_ip").unwrap_or_else(|| "0.0.0.0".to_owned()),
            field("published").unwrap_or_default(),
            field("target").unwrap_or_default(),
            field("protocol").unwrap_or_else(|| "tcp".to_owned()),
        )),
        (Index::Port, entry) => scalar_text(entry),
        (Index::Mount, Value::Mapping(_)) => field("target"),
        // A device's target defaults to its source.
        (Index::Device, Value::Mapping(_)) => field("target").or_else(|| field("source")),
        // `source:target[:mode]`, or a lone target.
        (Index::Mount | Index::Device, Value::String(text)) => {
            let parts: Vec<&str> = text.split(':').collect();
            parts.get(1).or(parts.first()).map(|t| (*t).to_owned())
        }
        (Index::Target(root), Value::String(name)) => Some(format!("{root}/{name}")),
        (Index::Target(root), Value::Mapping(_)) => {
            field("target").or_else(|| field("source").map(|source| format!("{root}/{source}")))
        }
        (Index::EnvFile, Value::String(file)) => Some(file.clone()),
        (Index::EnvFile, Value::Mapping(_)) => field("path"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Mapping {
        serde_yaml::from_str(text).unwrap()
    }

    fn merged(base: &str, over: &str) -> Mapping {
        files(yaml(base), yaml(over)).unwrap()
    }

    fn service(model: &Mapping) -> &Value {
        &model["services"]["web"]
    }

    #[test]
    fn maps_merge_and_scalars_are_replaced() {
        let model = merged(
            "services:\n  web:\n    image: a\n    user: root\n    deploy: {replicas: 1, resources: {limits: {cpus: '1'}}}\n",
            "services:\n  web:\n    image: b\n    deploy: {resources: {limits: {memory: 64M}}}\n",
        );
        let web = service(&model);
        assert_eq!(web["image"], "b");
        assert_eq!(web["user"], "root");
        assert_eq!(web["deploy"]["replicas"], 1);
        assert_eq!(web["deploy"]["resources"]["limits"]["cpus"], "1");
        assert_eq!(web["deploy"]["resources"]["limits"]["memory"], "64M");
    }

    #[test]
    fn sequences_append_and_commands_are_replaced() {
        let model = merged(
            "services:\n  web:\n    command: [echo, foo]\n    entrypoint: [sh]\n    healthcheck: {test: [CMD, a], retries: 3}\n    dns: [1.1.1.1]\n    cap_drop: [ALL]\n",
            "services:\n  web:\n    command: [echo, bar]\n    healthcheck: {test: [CMD, b]}\n    dns: [8.8.8.8]\n    cap_drop: [ALL, NET_RAW]\n",
        );
        let web = service(&model);
        assert_eq!(
            serde_yaml::to_string(&web["command"]).unwrap(),
            "- echo\n- bar\n"
        );
        assert_eq!(serde_yaml::to_string(&web["entrypoint"]).unwrap(), "- sh\n");
        assert_eq!(
            serde_yaml::to_string(&web["healthcheck"]["test"]).unwrap(),
            "- CMD\n- b\n"
        );
        assert_eq!(web["healthcheck"]["retries"], 3);
        assert_eq!(
            serde_yaml::to_string(&web["dns"]).unwrap(),
            "- 1.1.1.1\n- 8.8.8.8\n"
        );
        assert_eq!(
            serde_yaml::to_string(&web["cap_drop"]).unwrap(),
            "- ALL\n- NET_RAW\n"
        );
    }

    #[test]
    fn ports_and_volumes_keep_one_entry_per_key() {
        let model = merged(
            "services:\n  web:\n    ports: ['8080:80', {target: 443, published: 8443}]\n    volumes: ['foo:/work', './a:/a']\n",
            "services:\n  web:\n    ports: ['8080:80', '9090:90', {target: 443, published: 8443, host_ip: 0.0.0.0}]\n    volumes: ['bar:/work']\n",
        );
        let web = service(&model);
        assert_eq!(
            serde_yaml::to_string(&web["ports"]).unwrap(),
            "- 8080:80\n- target: 443\n  published: 8443\n  host_ip: 0.0.0.0\n- 9090:90\n"
        );
        assert_eq!(
            serde_yaml::to_string(&web["volumes"]).unwrap(),
            "- bar:/work\n- ./a:/a\n"
        );
    }

    #[test]
    fn environment_and_labels_merge_by_key_whatever_their_form() {
        let model = merged(
            "services:\n  web:\n    environment: {A: '1', B: '2'}\n    labels: [x=1]\n",
            "services:\n  web:\n    environment: [B=3, C=4]\n    labels: {y: 2}\n",
        );
        let web = service(&model);
        assert_eq!(
            serde_yaml::to_string(&web["environment"]).unwrap(),
            "- A=1\n- B=3\n- C=4\n"
        );
        assert_eq!(
            serde_yaml::to_string(&web["labels"]).unwrap(),
            "- x=1\n- y=2\n"
        );
    }

    #[test]
    fn depends_on_networks_and_build_merge_as_maps() {
        let model = merged(
            "services:\n  web:\n    depends_on: [db]\n    networks: [front]\n    build: ../app\n",
            "services:\n  web:\n    depends_on: {cache: {condition: service_healthy}}\n    networks: {back: {aliases: [w]}}\n    build: {dockerfile: Other}\n",
        );
        let web = service(&model);
        assert_eq!(web["depends_on"]["db"]["condition"], "service_started");
        assert_eq!(web["depends_on"]["cache"]["condition"], "service_healthy");
        assert!(web["networks"]["front"].is_null());
        assert_eq!(web["networks"]["back"]["aliases"][0], "w");
        assert_eq!(web["build"]["context"], "../app");
        assert_eq!(web["build"]["dockerfile"], "Other");
    }

    #[test]
    fn a_null_keeps_what_was_there_and_a_kind_change_is_refused() {
        let model = merged(
            "services:\n  web:\n    image: a\n    ports: ['80:80']\n",
            "services:\n  web:\n    ports:\n",
        );
        assert_eq!(service(&model)["ports"][0], "80:80");
        let err = files(
            yaml("services:\n  web:\n    deploy: {replicas: 1}\n"),
            yaml("services:\n  web:\n    deploy: [1]\n"),
        )
        .unwrap_err();
        assert!(err.contains("services.web.deploy"), "{err}");
    }

    #[test]
    fn cleared_paths_reset_before_the_merge() {
        let mut base = yaml(
            "services:\n  web:\n    image: a\n    ports: ['80:80']\n    environment: {FOO: x, BAR: y}\n    tmpfs: [/a, /b]\n",
        );
        let paths: Vec<KeyPath> = ["services.web.ports", "services.web.environment.FOO"]
            .iter()
            .map(|p| p.split('.').map(str::to_owned).collect())
            .chain([vec![
                "services".into(),
                "web".into(),
                "tmpfs".into(),
                "[0]".into(),
            ]])
            .collect();
        clear(&mut base, &paths);
        let web = service(&base);
        assert!(web.get("ports").is_none());
        assert!(web["environment"].get("FOO").is_none());
        assert_eq!(web["environment"]["BAR"], "y");
        assert_eq!(serde_yaml::to_string(&web["tmpfs"]).unwrap(), "- /b\n");
    }

    #[test]
    fn ipam_ranges_merge_by_subnet() {
        let model = merged(
            "networks:\n  n:\n    ipam:\n      config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1}]\n",
            "networks:\n  n:\n    ipam:\n      config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.254}, {subnet: 10.1.0.0/24}]\n",
        );
        let config = &model["networks"]["n"]["ipam"]["config"];
        assert_eq!(config[0]["gateway"], "10.0.0.254");
        assert_eq!(config[1]["subnet"], "10.1.0.0/24");
    }
}
