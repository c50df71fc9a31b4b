//! A compose file as a value tree, ready to merge with others: `<<` merge
//! keys applied, `!reset` and `!override` turned into the paths they clear,
//! keys as text, extension fields (`x-*`) of the file and of each resource
//! dropped, and every string value interpolated.
//!
//! The typed pass over the same text ([`super::lenient`]) has checked
//! everything first, with lines; what fails here names its key path.

use serde_yaml::{Mapping, Value};

use super::interpolate::{Vars, interpolate};
use super::lenient::{Resets, key_text};

/// A key path: map keys, and `[i]` for the items of a sequence.
pub type KeyPath = Vec<String>;

/// The key path as written in messages: `services.web.ports[0]`.
pub fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for key in path {
        if !out.is_empty() && !key.starts_with('[') {
            out.push('.');
        }
        out.push_str(key);
    }
    out
}

/// The sequence item `index` as a path segment.
pub fn item(index: usize) -> String {
    format!("[{index}]")
}

/// A file's YAML with its merge keys applied and its tags taken off.
pub struct Tagged {
    pub value: Value,
    /// The entries the file resets, for the typed pass to skip.
    pub resets: Resets,
    /// What the file resets or overrides: cleared from what it merges over.
    pub cleared: Vec<KeyPath>,
}

/// Parses a file's text into its value, merge keys applied, tags resolved.
pub fn parse(text: &str) -> Result<Tagged, String> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|err| err.to_string())?;
    value.apply_merge().map_err(|err| err.to_string())?;
    let mut tagged = Tagged {
        value: Value::Null,
        resets: Resets::default(),
        cleared: Vec::new(),
    };
    untag(&mut value, &mut Vec::new(), &mut tagged)?;
    tagged.value = value;
    Ok(tagged)
}

/// Takes the Compose tags off `value` and what is under it, recording where
/// they were; false when the value itself is reset (and so goes away).
fn untag(value: &mut Value, path: &mut KeyPath, found: &mut Tagged) -> Result<bool, String> {
    if let Value::Tagged(tagged) = value {
        match tagged.tag.to_string().as_str() {
            "!reset" => {
                found.resets.add(path);
                found.cleared.push(path.clone());
                return Ok(false);
            }
            "!override" => {
                found.cleared.push(path.clone());
                let inner = std::mem::replace(&mut tagged.value, Value::Null);
                *value = inner;
                return untag(value, path, found);
            }
            other => {
                return Err(format!(
                    "{}: the YAML tag {other} is not supported (Compose's are !reset and !override)",
                    dotted(path)
                ));
            }
        }
    }
    match value {
        Value::Mapping(map) => {
            let mut gone = Vec::new();
            for (key, value) in map.iter_mut() {
                path.push(key_text(key).map_err(|err| format!("{}: {err}", dotted(path)))?);
                if !untag(value, path, found)? {
                    gone.push(key.clone());
                }
                path.pop();
            }
            for key in gone {
                map.remove(&key);
            }
        }
        Value::Sequence(items) => {
            let mut kept = Vec::with_capacity(items.len());
            for (index, mut value) in std::mem::take(items).into_iter().enumerate() {
                path.push(item(index));
                if untag(&mut value, path, found)? {
                    kept.push(value);
                }
                path.pop();
            }
            *items = kept;
        }
        _ => {}
    }
    Ok(true)
}

/// The tree a file merges: keys as text, `x-*` fields of the file (but
/// `x-cryptus`) and of each resource dropped, strings interpolated with
/// `vars`.
pub fn prepare(value: Value, vars: &Vars) -> Result<Mapping, String> {
    let mut map = match value {
        Value::Mapping(map) => map,
        Value::Null => Mapping::new(),
        _ => return Err("the file must be a map of top-level keys".to_owned()),
    };
    drop_extensions(&mut map, Some(super::hooks::EXTENSION));
    for section in ["services", "networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(resources)) = map.get_mut(section) {
            for resource in resources.values_mut() {
                if let Value::Mapping(resource) = resource {
                    drop_extensions(resource, None);
                }
            }
        }
    }
    let mut value = Value::Mapping(map);
    finish(&mut value, &mut Vec::new(), vars)?;
    match value {
        Value::Mapping(map) => Ok(map),
        _ => Err("the file must be a map of top-level keys".to_owned()),
    }
}

/// Drops the `x-*` fields of `map` but `keep` (cryptus's own, at the top).
fn drop_extensions(map: &mut Mapping, keep: Option<&str>) {
    map.retain(|key, _| {
        !key.as_str()
            .is_some_and(|k| k.starts_with("x-") && Some(k) != keep)
    });
}

/// Makes every key text and interpolates every string value.
fn finish(value: &mut Value, path: &mut KeyPath, vars: &Vars) -> Result<(), String> {
    match value {
        Value::String(text) => {
            *text = interpolate(text, vars).map_err(|err| format!("{}: {err}", dotted(path)))?;
        }
        Value::Mapping(map) => {
            let mut out = Mapping::with_capacity(map.len());
            for (key, mut value) in std::mem::take(map) {
                let key = key_text(&key).map_err(|err| format!("{}: {err}", dotted(path)))?;
                path.push(key.clone());
                finish(&mut value, path, vars)?;
                path.pop();
                out.insert(Value::String(key), value);
            }
            *map = out;
        }
        Value::Sequence(items) => {
            for (index, value) in items.iter_mut().enumerate() {
                path.push(item(index));
                finish(value, path, vars)?;
                path.pop();
            }
        }
        Value::Tagged(tagged) => finish(&mut tagged.value, path, vars)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// The map at `key` of `map`, if it is one.
pub fn map_at<'a>(map: &'a Mapping, key: &str) -> Option<&'a Mapping> {
    map.get(key).and_then(Value::as_mapping)
}

/// Takes the map at `key` out of `map` (empty if absent or not a map), to
/// be put back with [`put_map`].
pub fn take_map(map: &mut Mapping, key: &str) -> Mapping {
    match map.remove(key) {
        Some(Value::Mapping(inner)) => inner,
        _ => Mapping::new(),
    }
}

/// Puts `inner` at `key`, unless it is empty.
pub fn put_map(map: &mut Mapping, key: &str, inner: Mapping) {
    if !inner.is_empty() {
        map.insert(Value::String(key.to_owned()), Value::Mapping(inner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn tree(text: &str, v: &Vars) -> Mapping {
        prepare(parse(text).unwrap().value, v).unwrap()
    }

    #[test]
    fn extension_fields_go_and_merge_keys_apply() {
        let text = "x-common: &common\n  restart: always\n  environment: &env {A: '1'}\nservices:\n  web:\n    <<: *common\n    image: ${IMAGE:-nginx}\n    x-note: kept out\n    environment:\n      <<: *env\n      x-var: data\n";
        let map = tree(text, &vars(&[]));
        let expected = "services:\n  web:\n    environment:\n      A: '1'\n      x-var: data\n    image: nginx\n    restart: always\n";
        let mut sorted = map.clone();
        sort(&mut sorted);
        assert_eq!(serde_yaml::to_string(&sorted).unwrap(), expected);
    }

    fn sort(map: &mut Mapping) {
        let mut entries: Vec<(Value, Value)> = std::mem::take(map).into_iter().collect();
        entries.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
        for (key, mut value) in entries {
            if let Value::Mapping(inner) = &mut value {
                sort(inner);
            }
            map.insert(key, value);
        }
    }

    #[test]
    fn tags_become_cleared_paths() {
        let text = "services:\n  web:\n    ports: !reset []\n    command: !override [a]\n    environment:\n      FOO: !reset null\n";
        let tagged = parse(text).unwrap();
        let cleared: Vec<String> = tagged.cleared.iter().map(|p| dotted(p)).collect();
        assert!(
            cleared.contains(&"services.web.ports".to_owned()),
            "{cleared:?}"
        );
        assert!(cleared.contains(&"services.web.command".to_owned()));
        assert!(cleared.contains(&"services.web.environment.FOO".to_owned()));
        let map = prepare(tagged.value, &vars(&[])).unwrap();
        let web = &map["services"]["web"];
        assert!(web.get("ports").is_none());
        assert_eq!(web["command"][0], "a");
        assert!(web["environment"].get("FOO").is_none());
        let err = parse("services:\n  web: !custom {}\n")
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("services.web") && err.contains("!custom"),
            "{err}"
        );
    }

    #[test]
    fn numbers_and_booleans_as_keys_become_text() {
        let map = tree(
            "services:\n  web:\n    labels: {1: a, true: b}\n",
            &vars(&[]),
        );
        let labels = map["services"]["web"]["labels"].as_mapping().unwrap();
        let keys: Vec<&str> = labels.keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["1", "true"]);
    }

    #[test]
    fn interpolation_errors_name_the_path() {
        let tagged = parse("services:\n  web:\n    image: ${NOPE:?set it}\n").unwrap();
        let err = prepare(tagged.value, &vars(&[])).unwrap_err();
        assert!(err.contains("services.web.image"), "{err}");
    }
}
