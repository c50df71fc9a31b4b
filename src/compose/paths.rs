//! Relative paths of a file that belongs to another directory (an included
//! Compose application, or the file an `extends:` names), made absolute
//! against that directory, as Compose resolves them; the listed files' own
//! paths stay relative to the project's directory until the model is built.

use std::path::Path;

use serde_yaml::{Mapping, Value};

/// Every relative path of `model`'s services, secrets and configs, made
/// absolute against `dir`.
pub fn absolutize(model: &mut Mapping, dir: &Path) {
    if let Some(Value::Mapping(services)) = model.get_mut("services") {
        for service in services.values_mut() {
            if let Value::Mapping(service) = service {
                absolutize_service(service, dir);
            }
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(Value::Mapping(resources)) = model.get_mut(section) {
            for resource in resources.values_mut() {
                if let Some(file) = resource.get_mut("file") {
                    absolutize_text(file, dir);
                }
            }
        }
    }
}

/// A service's build context, bind mount sources and env files.
pub fn absolutize_service(service: &mut Mapping, dir: &Path) {
    match service.get_mut("build") {
        Some(Value::Mapping(build)) => {
            if let Some(context) = build.get_mut("context") {
                absolutize_text(context, dir);
            }
        }
        Some(context) => absolutize_text(context, dir),
        None => {}
    }
    if let Some(Value::Sequence(volumes)) = service.get_mut("volumes") {
        for volume in volumes {
            absolutize_volume(volume, dir);
        }
    }
    for key in ["env_file", "label_file"] {
        match service.get_mut(key) {
            Some(Value::Sequence(files)) => {
                for file in files {
                    match file {
                        Value::Mapping(entry) => {
                            if let Some(path) = entry.get_mut("path") {
                                absolutize_text(path, dir);
                            }
                        }
                        other => absolutize_text(other, dir),
                    }
                }
            }
            Some(file) => absolutize_text(file, dir),
            None => {}
        }
    }
}

/// A volume's source when it is a local path (`./data:/data`, or a bind
/// mount's `source:`); a named volume stays a name.
fn absolutize_volume(volume: &mut Value, dir: &Path) {
    match volume {
        Value::String(text) => {
            if let Some((source, rest)) = text.split_once(':') {
                if source.starts_with('.') {
                    *text = format!("{}:{rest}", joined(source, dir));
                }
            }
        }
        Value::Mapping(long) => {
            let bind = long.get("type").and_then(Value::as_str) == Some("bind");
            if let (true, Some(source)) = (bind, long.get_mut("source")) {
                absolutize_text(source, dir);
            }
        }
        _ => {}
    }
}

fn absolutize_text(value: &mut Value, dir: &Path) {
    if let Value::String(text) = value {
        if is_local_relative(text) {
            *text = joined(text, dir);
        }
    }
}

/// A relative path on this host: not absolute, not `~`, not a URL (a build
/// context may be a Git repository).
fn is_local_relative(path: &str) -> bool {
    !path.is_empty()
        && !Path::new(path).is_absolute()
        && !path.starts_with('~')
        && !path.contains("://")
        && !path.starts_with("git@")
}

fn joined(path: &str, dir: &Path) -> String {
    super::absolute(path, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_absolute_and_names_stay() {
        let mut model: Mapping = serde_yaml::from_str(
            "services:\n  web:\n    build: .\n    volumes: ['./data:/data:ro', 'named:/n', {type: bind, source: ../conf, target: /c}]\n    env_file: [a.env, {path: b.env}]\n  api:\n    build: {context: 'https://example.com/repo.git'}\nsecrets:\n  s: {file: ./s.txt}\n",
        )
        .unwrap();
        absolutize(&mut model, Path::new("/other/dir"));
        let web = &model["services"]["web"];
        assert_eq!(web["build"], "/other/dir");
        assert_eq!(web["volumes"][0], "/other/dir/data:/data:ro");
        assert_eq!(web["volumes"][1], "named:/n");
        assert_eq!(web["volumes"][2]["source"], "/other/conf");
        assert_eq!(web["env_file"][0], "/other/dir/a.env");
        assert_eq!(web["env_file"][1]["path"], "/other/dir/b.env");
        assert_eq!(
            model["services"]["api"]["build"]["context"],
            "https://example.com/repo.git"
        );
        assert_eq!(model["secrets"]["s"]["file"], "/other/dir/s.txt");
    }
}
