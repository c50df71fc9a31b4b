//! Which files make the model, and how they combine: the files listed (the
//! base, then each override, in order), each one's `include:` (the
//! resources of another Compose application) and its services' `extends:`
//! (a service that starts from another). Every file is read under the size
//! and nesting limits; include and extends chains are bounded in depth, and
//! a cycle is refused naming its chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use serde_yaml::{Mapping, Value};

use super::interpolate::Vars;
use super::model::Include;
use super::tree::{self, KeyPath};
use super::{merge, paths};

/// The deepest chain of `include:`s, and of `extends:`.
pub const MAX_DEPTH: usize = 16;
/// The most files one load reads (each once for a given set of variables).
pub const MAX_FILES: usize = 64;

/// Reads a file's text, within the limits.
pub type Reader<'a> = &'a dyn Fn(&Path) -> Result<String>;

/// The merged tree, and the files that define each service (for messages).
#[derive(Debug, Default)]
pub struct Merged {
    pub tree: Mapping,
    pub origins: BTreeMap<String, Vec<PathBuf>>,
}

/// One file, checked: what it includes, its tree, and what it clears in
/// the model it merges over.
pub struct Parsed {
    pub includes: Vec<Include>,
    pub tree: Mapping,
    pub cleared: Vec<KeyPath>,
}

/// Loads `files` in order, one project whose relative paths are `dir`'s.
pub fn load(files: &[PathBuf], vars: &Vars, dir: &Path, read: Reader) -> Result<Merged> {
    let mut loader = Loader {
        read,
        parsed: Vec::new(),
    };
    loader.project(files, vars, dir, &[])
}

struct Loader<'a> {
    read: Reader<'a>,
    /// Files parsed so far, by path and variables.
    parsed: Vec<(PathBuf, Vars, Rc<Parsed>)>,
}

/// Where a service is being extended: its file, the directory its relative
/// paths start from, and what that file clears.
struct Place<'p> {
    file: &'p Path,
    dir: &'p Path,
    cleared: &'p [KeyPath],
}

impl Loader<'_> {
    fn parse(&mut self, path: &Path, vars: &Vars) -> Result<Rc<Parsed>> {
        if let Some((_, _, parsed)) = self.parsed.iter().find(|(p, v, _)| p == path && v == vars) {
            return Ok(Rc::clone(parsed));
        }
        if self.parsed.len() >= MAX_FILES {
            bail!(
                "{}: more than {MAX_FILES} compose files to read through include and extends; cryptus refuses so many",
                path.display()
            );
        }
        let text = (self.read)(path)?;
        // A relative env_file is read from the compose file's directory.
        let dir = path.parent().unwrap_or(Path::new("."));
        let parsed = super::model::service_keys::with_base(dir, || super::parse_file(&text, vars))
            .map(Rc::new)
            .map_err(|err| anyhow!("{}: {err}", path.display()))?;
        self.parsed
            .push((path.to_path_buf(), vars.clone(), Rc::clone(&parsed)));
        Ok(parsed)
    }

    /// Files merged in order, as one project: each with its includes and
    /// extends applied first, as Compose does.
    fn project(
        &mut self,
        files: &[PathBuf],
        vars: &Vars,
        dir: &Path,
        chain: &[PathBuf],
    ) -> Result<Merged> {
        let mut merged = Merged::default();
        for path in files {
            let parsed = self.parse(path, vars)?;
            let mut own = parsed.tree.clone();
            let mut chain = chain.to_vec();
            chain.push(path.clone());
            let mut origins = BTreeMap::new();
            for name in service_names(&own) {
                origins.insert(name, vec![path.clone()]);
            }
            self.include(&mut own, &parsed, vars, dir, &chain, &mut origins)?;
            merge::clear(&mut merged.tree, &parsed.cleared);
            let place = Place {
                file: path,
                dir,
                cleared: &parsed.cleared,
            };
            self.extends(&mut own, &place, vars)?;
            merged.tree = merge::files(std::mem::take(&mut merged.tree), own)
                .map_err(|err| anyhow!("{}: {err}", path.display()))?;
            for (name, files) in origins {
                let known = merged.origins.entry(name).or_default();
                for file in files {
                    if !known.contains(&file) {
                        known.push(file);
                    }
                }
            }
        }
        Ok(merged)
    }

    /// Imports what `parsed` includes into its tree `own`: each entry is an
    /// application of its own (its directory, its `.env`), whose resources
    /// join this file's; a resource this file also defines is merged, this
    /// file's definition over the included one (docker compose's rule).
    fn include(
        &mut self,
        own: &mut Mapping,
        parsed: &Parsed,
        vars: &Vars,
        dir: &Path,
        chain: &[PathBuf],
        origins: &mut BTreeMap<String, Vec<PathBuf>>,
    ) -> Result<()> {
        own.remove("include");
        let current = chain.last().map(|p| p.display().to_string());
        let current = current.unwrap_or_default();
        for entry in &parsed.includes {
            let files: Vec<PathBuf> = entry.path.iter().map(|p| clean(dir, p)).collect();
            if let Some(again) = files.iter().find(|f| chain.contains(f)) {
                let names: Vec<String> = chain
                    .iter()
                    .chain([again])
                    .map(|p| p.display().to_string())
                    .collect();
                bail!("include cycle: {}", names.join(" includes "));
            }
            if chain.len() > MAX_DEPTH {
                bail!(
                    "{current}: include: more than {MAX_DEPTH} levels of include; cryptus refuses them"
                );
            }
            let project_dir = match (&entry.project_directory, files.first()) {
                (Some(project_dir), _) => clean(dir, project_dir),
                (None, Some(first)) => parent(first),
                (None, None) => dir.to_path_buf(),
            };
            let included_vars = self
                .included_vars(vars, entry, dir, &project_dir)
                .with_context(|| format!("{current}: include"))?;
            let mut imported = self
                .project(&files, &included_vars, &project_dir, chain)
                .with_context(|| format!("{current}: including {}", entry.path.join(", ")))?;
            paths::absolutize(&mut imported.tree, &project_dir);
            import(own, imported.tree, &parsed.cleared)
                .map_err(|err| anyhow!("{current}: {err}"))?;
            for (name, files) in imported.origins {
                let known = origins.entry(name).or_default();
                known.splice(0..0, files);
            }
        }
        Ok(())
    }

    /// The variables of an included application: the including project's,
    /// over its `env_file`s (by default the `.env` in its directory).
    fn included_vars(
        &self,
        vars: &Vars,
        entry: &Include,
        dir: &Path,
        project_dir: &Path,
    ) -> Result<Vars> {
        let (files, optional) = if entry.env_file.is_empty() {
            (vec![project_dir.join(".env")], true)
        } else {
            (
                entry.env_file.iter().map(|f| clean(dir, f)).collect(),
                false,
            )
        };
        let mut defaults = BTreeMap::new();
        for file in files {
            let text = match (self.read)(&file) {
                Ok(text) => text,
                Err(err) if optional && super::is_not_found(&err) => continue,
                Err(err) => return Err(err.context(format!("env_file {}", file.display()))),
            };
            let values = super::interpolate::parse_env_file(&text)
                .map_err(|err| anyhow!("{}: {err}", file.display()))?;
            defaults.extend(values);
        }
        Ok(vars.with_defaults(defaults))
    }

    /// Resolves the `extends:` of every service of the file's tree `own`.
    fn extends(&mut self, own: &mut Mapping, place: &Place, vars: &Vars) -> Result<()> {
        let mut services = tree::take_map(own, "services");
        let names = service_names_of(&services);
        let mut result = Ok(());
        for name in names {
            result = self.extend(&mut services, &name, place, vars, &mut Vec::new());
            if result.is_err() {
                break;
            }
        }
        tree::put_map(own, "services", services);
        result
    }

    /// Replaces the service `name` of `services` with itself merged over the
    /// service it extends (resolved first, recursively).
    fn extend(
        &mut self,
        services: &mut Mapping,
        name: &str,
        place: &Place,
        vars: &Vars,
        stack: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        let file = place.file.display();
        let Some(extends) = services.get(name).and_then(|s| s.get("extends")) else {
            return Ok(());
        };
        let (base_name, base_file) = extends_target(extends)
            .map_err(|err| anyhow!("{file}: services.{name}.extends: {err}"))?;
        if stack.iter().any(|(f, s)| f == place.file && s == name) {
            let links: Vec<String> = stack
                .iter()
                .map(|(f, s)| format!("{s} ({})", f.display()))
                .chain([format!("{name} ({file})")])
                .collect();
            bail!("extends cycle: {}", links.join(" extends "));
        }
        if stack.len() >= MAX_DEPTH {
            bail!(
                "{file}: services.{name}.extends: more than {MAX_DEPTH} levels of extends; cryptus refuses them"
            );
        }
        stack.push((place.file.to_path_buf(), name.to_owned()));
        let base = match &base_file {
            None => self.same_file_base(services, name, &base_name, place, vars, stack),
            Some(other) => self.other_file_base(name, &base_name, other, place, vars, stack),
        };
        stack.pop();
        let base = cleared_under(base?, name, place.cleared);
        let own = services.get(name).cloned().unwrap_or(Value::Null);
        let mut merged = merge::resource("services", base, own)
            .map_err(|err| anyhow!("{file}: services.{name}: {err}"))?;
        if let Value::Mapping(map) = &mut merged {
            map.remove("extends");
        }
        services.insert(Value::String(name.to_owned()), merged);
        Ok(())
    }

    fn same_file_base(
        &mut self,
        services: &mut Mapping,
        name: &str,
        base_name: &str,
        place: &Place,
        vars: &Vars,
        stack: &mut Vec<(PathBuf, String)>,
    ) -> Result<Value> {
        if !services.contains_key(base_name) {
            bail!(
                "{}: services.{name}.extends: there is no service {base_name:?} in this file",
                place.file.display()
            );
        }
        self.extend(services, base_name, place, vars, stack)?;
        Ok(services.get(base_name).cloned().unwrap_or(Value::Null))
    }

    /// The service `base_name` of the file `other`, its own extends
    /// resolved there and its relative paths made absolute against its
    /// directory.
    fn other_file_base(
        &mut self,
        name: &str,
        base_name: &str,
        other: &str,
        place: &Place,
        vars: &Vars,
        stack: &mut Vec<(PathBuf, String)>,
    ) -> Result<Value> {
        let path = clean(place.dir, other);
        let parsed = self
            .parse(&path, vars)
            .with_context(|| format!("{}: services.{name}.extends", place.file.display()))?;
        let mut theirs = tree::map_at(&parsed.tree, "services")
            .cloned()
            .unwrap_or_default();
        if !theirs.contains_key(base_name) {
            bail!(
                "{}: services.{name}.extends: there is no service {base_name:?} in {}",
                place.file.display(),
                path.display()
            );
        }
        let dir = parent(&path);
        let there = Place {
            file: &path,
            dir: &dir,
            cleared: &parsed.cleared,
        };
        self.extend(&mut theirs, base_name, &there, vars, stack)?;
        let mut base = theirs.get(base_name).cloned().unwrap_or(Value::Null);
        if let Value::Mapping(map) = &mut base {
            paths::absolutize_service(map, &dir);
        }
        Ok(base)
    }
}

/// `extends: NAME` or `extends: {service: NAME, file: FILE}` (checked by the
/// typed pass already).
fn extends_target(extends: &Value) -> Result<(String, Option<String>), String> {
    match extends {
        Value::String(name) => Ok((name.clone(), None)),
        Value::Mapping(map) => {
            let service = map
                .get("service")
                .and_then(Value::as_str)
                .ok_or("names no service")?;
            let file = map.get("file").and_then(Value::as_str).map(str::to_owned);
            Ok((service.to_owned(), file))
        }
        _ => Err("must name a service".to_owned()),
    }
}

/// `base` with what the extending file clears under `services.NAME` cleared.
fn cleared_under(base: Value, name: &str, cleared: &[KeyPath]) -> Value {
    let paths: Vec<KeyPath> = cleared
        .iter()
        .filter_map(|path| match path.as_slice() {
            [section, service, rest @ ..] if section == "services" && service == name => {
                (!rest.is_empty()).then(|| rest.to_vec())
            }
            _ => None,
        })
        .collect();
    match base {
        Value::Mapping(mut map) if !paths.is_empty() => {
            merge::clear(&mut map, &paths);
            Value::Mapping(map)
        }
        other => other,
    }
}

/// Adds the resources of an included tree to `own`; one defined in both is
/// merged, `own`'s over the included one (with what `own`'s file clears).
fn import(own: &mut Mapping, mut imported: Mapping, cleared: &[KeyPath]) -> Result<(), String> {
    for section in ["services", "volumes", "networks", "secrets", "configs"] {
        let theirs = tree::take_map(&mut imported, section);
        let mut ours = tree::take_map(own, section);
        for (key, value) in theirs {
            let merged = match ours.remove(&key) {
                None => value,
                Some(local) => {
                    let name = key.as_str().unwrap_or_default().to_owned();
                    let mut holder = Mapping::new();
                    let mut resource = Mapping::new();
                    resource.insert(key.clone(), value);
                    holder.insert(section.into(), Value::Mapping(resource));
                    merge::clear(&mut holder, cleared);
                    let value = holder
                        .get(section)
                        .and_then(|r| r.get(name.as_str()))
                        .cloned()
                        .unwrap_or(Value::Null);
                    merge::resource(section, value, local)?
                }
            };
            ours.insert(key, merged);
        }
        tree::put_map(own, section, ours);
    }
    Ok(())
}

fn service_names(model: &Mapping) -> Vec<String> {
    tree::map_at(model, "services").map_or_else(Vec::new, service_names_of)
}

fn service_names_of(services: &Mapping) -> Vec<String> {
    services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// `path` against `dir`, absolute and without `.` or `..`.
fn clean(dir: &Path, path: &str) -> PathBuf {
    PathBuf::from(super::absolute(path, dir))
}

fn parent(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new("/")).to_path_buf()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use anyhow::Result;

    use super::super::{Compose, MountKind, Profiles, Vars, load_texts};

    const BASE: &str = "/p/compose/base.yml";

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn load(listed: &[&str], texts: &[(&str, &str)], v: &Vars) -> Result<Compose> {
        load_texts(listed, texts, v, &Profiles::none())
    }

    fn one(text: &str) -> Result<Compose> {
        load(&[BASE], &[(BASE, text)], &vars(&[]))
    }

    fn error(result: Result<Compose>) -> String {
        format!("{:#}", result.expect_err("an error"))
    }

    #[test]
    fn extension_fields_are_accepted_and_ignored() {
        let compose = one(
            "x-top: {anything: [1, 2]}\nservices:\n  web:\n    image: nginx\n    x-owner: team\n    build:\n      context: .\n      x-bake: {platforms: [linux/amd64]}\n    deploy:\n      x-note: 1\n      replicas: 2\n    environment:\n      x-kept: data\n    networks: [n]\nnetworks:\n  n:\n    x-purpose: front\nvolumes:\n  v:\n    x-backup: daily\n",
        )
        .unwrap();
        let web = &compose.services["web"];
        assert_eq!(web.replicas, 2);
        assert_eq!(
            web.environment["x-kept"], "data",
            "a variable named x-* is data"
        );
        assert!(compose.networks.contains_key("n") && compose.volumes.contains_key("v"));
        // Any other unknown key is still refused at its line.
        let err = error(one(
            "x-top: 1\nservices:\n  web:\n    x-a: 1\n    image: nginx\n    bogus: 2\n",
        ));
        assert!(err.contains("bogus") && err.contains("line 6"), "{err}");
        // An extension field's text still interpolates, as Compose does.
        let err = error(one("x-top: ${NOPE:?needed}\nservices: {}\n"));
        assert!(err.contains("NOPE") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "x-defaults: &defaults\n  restart: always\n  environment: &env\n    A: '1'\n    B: '2'\nx-limits: &limits\n  deploy: {replicas: 3}\nservices:\n  web:\n    <<: [*defaults, *limits]\n    image: nginx\n    restart: on-failure\n    environment:\n      <<: *env\n      B: three\n  api:\n    <<: *defaults\n    image: api\n    labels: &labels {tier: back}\n  worker:\n    image: worker\n    labels: *labels\n";
        let compose = one(text).unwrap();
        let web = &compose.services["web"];
        assert_eq!(web.restart, "on-failure", "the map's own key wins");
        assert_eq!(web.replicas, 3);
        assert_eq!(web.environment["A"], "1");
        assert_eq!(web.environment["B"], "three");
        assert_eq!(compose.services["api"].restart, "always");
        assert_eq!(compose.services["worker"].labels["tier"], "back");
    }

    #[test]
    fn errors_in_merged_content_name_the_place_it_is_merged() {
        let text = "x-bad: &bad\n  image: nginx\n  bogus: 1\nservices:\n  web:\n    <<: *bad\n    restart: always\n";
        let err = error(one(text));
        assert!(err.contains(BASE) && err.contains("services.web"), "{err}");
        assert!(err.contains("bogus") && err.contains("line "), "{err}");
        let err = error(one(
            "x-a: &a [1]\nservices:\n  web:\n    <<: *a\n    image: x\n",
        ));
        assert!(err.contains("`<<`") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn an_override_file_merges_over_the_base() {
        let base = "services:\n  web:\n    image: app:1\n    command: [serve, --port, '80']\n    environment: {A: '1', B: '2'}\n    ports: ['8080:80']\n    volumes: ['data:/data', './conf:/conf']\n    healthcheck: {test: [CMD, a], retries: 3}\n    cap_drop: [ALL]\nvolumes:\n  data:\n  other:\n";
        let over = "services:\n  web:\n    command: [serve, --port, '81']\n    environment: [B=two, C=3]\n    ports: ['8080:80', '9090:90']\n    volumes: ['other:/data']\n    healthcheck: {test: [CMD, b]}\n    cap_drop: [NET_RAW]\n";
        let over_path = "/p/compose/docker-compose.override.yml";
        let compose = load(
            &[BASE, over_path],
            &[(BASE, base), (over_path, over)],
            &vars(&[]),
        )
        .unwrap();
        let web = &compose.services["web"];
        assert_eq!(web.image.as_deref(), Some("app:1"));
        assert_eq!(
            web.command.as_deref().unwrap(),
            ["serve", "--port", "81"],
            "replaced"
        );
        assert_eq!(web.environment["A"], "1");
        assert_eq!(web.environment["B"], "two");
        assert_eq!(web.environment["C"], "3");
        let ports: Vec<Option<u16>> = web.ports.iter().map(|p| p.host_port).collect();
        assert_eq!(ports, [Some(8080), Some(9090)], "appended, once each");
        let mounts: Vec<(&str, &str)> = web
            .mounts
            .iter()
            .map(|m| (m.source.as_str(), m.target.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [("other", "/data"), ("/p/compose/conf", "/conf")],
            "one per target"
        );
        let health = web.healthcheck.as_ref().unwrap();
        assert_eq!(health.test, ["CMD", "b"]);
        assert_eq!(health.retries, Some(3));
        assert_eq!(web.cap_drop, ["ALL", "NET_RAW"]);
    }

    #[test]
    fn files_merge_in_the_order_given() {
        let a = (
            "/p/compose/a.yml",
            "services:\n  web:\n    image: a\n    restart: always\n",
        );
        let b = ("/p/compose/b.yml", "services:\n  web:\n    image: b\n");
        let compose = load(&[a.0, b.0], &[a, b], &vars(&[])).unwrap();
        assert_eq!(compose.services["web"].image.as_deref(), Some("b"));
        assert_eq!(compose.services["web"].restart, "always");
        let compose = load(&[b.0, a.0], &[a, b], &vars(&[])).unwrap();
        assert_eq!(compose.services["web"].image.as_deref(), Some("a"));
        // Relative paths of every listed file start at the first one's directory.
        let c = (
            "/elsewhere/c.yml",
            "services:\n  web:\n    volumes: ['./x:/x']\n",
        );
        let compose = load(&[a.0, c.0], &[a, c], &vars(&[])).unwrap();
        assert_eq!(compose.services["web"].mounts[0].source, "/p/compose/x");
    }

    #[test]
    fn errors_in_an_override_file_name_it_and_the_line() {
        let over = (
            "/p/compose/over.yml",
            "services:\n  web:\n    ports:\n      - 'not a port'\n",
        );
        let err = error(load(
            &[BASE, over.0],
            &[(BASE, "services:\n  web:\n    image: a\n"), over],
            &vars(&[]),
        ));
        assert!(
            err.contains("/p/compose/over.yml")
                && err.contains("services.web.ports[0]")
                && err.contains("line 4"),
            "{err}"
        );
    }

    #[test]
    fn reset_and_override_tags_clear_what_the_base_wrote() {
        let base = "services:\n  web:\n    image: a\n    ports: ['80:80']\n    environment: {FOO: x, BAR: y}\n    labels: {a: '1', b: '2'}\n";
        let over = "services:\n  web:\n    ports: !reset []\n    environment:\n      FOO: !reset null\n    labels: !override {c: '3'}\n";
        let path = "/p/compose/over.yml";
        let compose = load(&[BASE, path], &[(BASE, base), (path, over)], &vars(&[])).unwrap();
        let web = &compose.services["web"];
        assert!(web.ports.is_empty());
        assert!(!web.environment.contains_key("FOO"));
        assert_eq!(web.environment["BAR"], "y");
        assert_eq!(web.labels.keys().collect::<Vec<_>>(), ["c"]);
        let err = error(one("services:\n  web:\n    image: !sometag a\n"));
        assert!(err.contains("!sometag"), "{err}");
    }

    #[test]
    fn include_short_and_long_forms() {
        let main = "include:\n  - ../shared/db.yml\n  - path: [../other/cache.yml, ../other/cache.override.yml]\n    env_file: ../other/custom.env\nservices:\n  web:\n    image: web\n    depends_on: [db, cache]\n";
        let texts = [
            (BASE, main),
            (
                "/p/shared/db.yml",
                "services:\n  db:\n    image: ${DB_IMAGE}\n    volumes: ['./init:/init', 'data:/data']\nvolumes:\n  data:\n",
            ),
            ("/p/shared/.env", "DB_IMAGE=postgres:16\n"),
            (
                "/p/other/cache.yml",
                "services:\n  cache:\n    image: ${CACHE_IMAGE:-redis}\n    build: .\n",
            ),
            (
                "/p/other/cache.override.yml",
                "services:\n  cache:\n    restart: always\n",
            ),
            ("/p/other/custom.env", "CACHE_IMAGE=valkey\n"),
        ];
        // The included applications' own .env give defaults; the project's wins.
        let compose = load(&[BASE], &texts, &vars(&[("CACHE_IMAGE", "keydb")])).unwrap();
        let db = &compose.services["db"];
        assert_eq!(db.image.as_deref(), Some("postgres:16"));
        assert_eq!(
            db.mounts[0].source, "/p/shared/init",
            "relative to the included file"
        );
        assert!(compose.volumes.contains_key("data"));
        let cache = &compose.services["cache"];
        assert_eq!(cache.image.as_deref(), Some("keydb"));
        assert_eq!(cache.restart, "always", "an include's files merge too");
        assert_eq!(cache.build.as_ref().unwrap().context, "/p/other");
    }

    #[test]
    fn include_conflicts_merge_and_cycles_are_refused() {
        let main = "include: [inc.yml]\nservices:\n  db:\n    restart: always\n";
        let inc = "services:\n  db:\n    image: postgres\n";
        let compose = load(
            &[BASE],
            &[(BASE, main), ("/p/compose/inc.yml", inc)],
            &vars(&[]),
        )
        .unwrap();
        assert_eq!(compose.services["db"].image.as_deref(), Some("postgres"));
        assert_eq!(compose.services["db"].restart, "always");

        let a = "include: [b.yml]\nservices: {}\n";
        let b = "include: [base.yml]\nservices: {}\n";
        let err = error(load(
            &[BASE],
            &[(BASE, a), ("/p/compose/b.yml", b)],
            &vars(&[]),
        ));
        assert!(err.contains("include cycle: /p/compose/base.yml includes /p/compose/b.yml includes /p/compose/base.yml"), "{err}");

        let missing = error(one("include: [nope.yml]\nservices: {}\n"));
        assert!(missing.contains("nope.yml"), "{missing}");
        let remote = error(one("services: {}\ninclude:\n  - oci://registry/app:1\n"));
        assert!(
            remote.contains("is remote") && remote.contains("line 3"),
            "{remote}"
        );
    }

    #[test]
    fn include_depth_is_bounded() {
        let names: Vec<String> = (0..=super::MAX_DEPTH + 1)
            .map(|i| format!("/p/compose/f{i}.yml"))
            .collect();
        let texts: Vec<String> = (0..names.len())
            .map(|i| format!("include: [f{}.yml]\nservices: {{}}\n", i + 1))
            .collect();
        let pairs: Vec<(&str, &str)> = names
            .iter()
            .zip(&texts)
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let err = error(load(&[&names[0]], &pairs, &vars(&[])));
        assert!(err.contains("levels of include"), "{err}");
    }

    #[test]
    fn extends_in_the_same_file() {
        let text = "services:\n  base:\n    image: busybox\n    user: root\n    environment: {TZ: utc, PORT: '80'}\n    security_opt: ['label:role:ROLE']\n  common:\n    extends: base\n    image: busybox:1\n  cli:\n    extends:\n      service: common\n    environment: [PORT=8080]\n    security_opt: ['label:user:USER']\n";
        let compose = one(text).unwrap();
        let cli = &compose.services["cli"];
        assert_eq!(cli.image.as_deref(), Some("busybox:1"));
        assert_eq!(cli.user.as_deref(), Some("root"), "through two levels");
        assert_eq!(cli.environment["TZ"], "utc");
        assert_eq!(cli.environment["PORT"], "8080");
        assert_eq!(cli.security_opt, ["label:role:ROLE", "label:user:USER"]);
        let err = error(one("services:\n  cli:\n    extends: nothere\n"));
        assert!(
            err.contains("services.cli.extends") && err.contains("\"nothere\""),
            "{err}"
        );
    }

    #[test]
    fn extends_from_another_file() {
        let text = "services:\n  web:\n    extends: {file: ../common/base.yml, service: webapp}\n    environment: {MODE: web}\n";
        let common = "services:\n  webapp:\n    extends: root\n    build: ./app\n    volumes: ['./static:/static:ro']\n    environment: {MODE: base, LEVEL: '1'}\n  root:\n    image: app:1\n    restart: always\n";
        let compose = load(
            &[BASE],
            &[(BASE, text), ("/p/common/base.yml", common)],
            &vars(&[]),
        )
        .unwrap();
        let web = &compose.services["web"];
        assert_eq!(web.image.as_deref(), Some("app:1"));
        assert_eq!(web.restart, "always");
        assert_eq!(web.environment["MODE"], "web");
        assert_eq!(web.environment["LEVEL"], "1");
        assert_eq!(web.build.as_ref().unwrap().context, "/p/common/app");
        assert_eq!(web.mounts[0].kind, MountKind::Bind);
        assert_eq!(web.mounts[0].source, "/p/common/static");
        assert!(
            !compose.services.contains_key("webapp"),
            "only what is extended comes in"
        );
    }

    #[test]
    fn extends_cycles_and_depth_are_refused() {
        let err = error(one(
            "services:\n  a:\n    extends: b\n    image: x\n  b:\n    extends: a\n",
        ));
        assert!(err.contains("extends cycle:"), "{err}");
        assert!(
            err.contains("a (/p/compose/base.yml) extends b (/p/compose/base.yml) extends a"),
            "{err}"
        );
        let other = "services:\n  far:\n    extends: {file: base.yml, service: near}\n";
        let text =
            "services:\n  near:\n    extends: {file: other.yml, service: far}\n    image: x\n";
        let err = error(load(
            &[BASE],
            &[(BASE, text), ("/p/compose/other.yml", other)],
            &vars(&[]),
        ));
        assert!(
            err.contains("extends cycle:") && err.contains("other.yml"),
            "{err}"
        );
        let mut chain = String::from("services:\n");
        for i in 0..=super::MAX_DEPTH + 1 {
            chain.push_str(&format!("  s{i}:\n    extends: s{}\n", i + 1));
        }
        chain.push_str(&format!("  s{}:\n    image: x\n", super::MAX_DEPTH + 2));
        let err = error(one(&chain));
        assert!(err.contains("levels of extends"), "{err}");
    }

    #[test]
    fn a_file_read_through_extends_is_bounded_like_any() {
        let big = format!(
            "services:\n  b:\n    image: x\n{}",
            "# pad\n".repeat(300_000)
        );
        let text = "services:\n  a:\n    extends: {file: big.yml, service: b}\n";
        let texts = [(BASE, text), ("/p/compose/big.yml", big.as_str())];
        let err = error(load(&[BASE], &texts, &vars(&[])));
        assert!(
            err.contains("big.yml") && err.contains("larger than"),
            "{err}"
        );
    }
}
