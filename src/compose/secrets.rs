//! Secrets and configs: the top-level declarations (where each value comes
//! from: a file, a variable, or inline content for a config) and what each
//! service is granted, at which path, owned by whom, with which mode.
//!
//! As in Compose on one engine, a file source is bind-mounted read-only as
//! it is; a value from a variable or inline content is written by cryptus to
//! a file of its own and bind-mounted the same way (see `stack`). A secret's
//! value is [`Sensitive`]: no `Debug`, no serialization shows it.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::Compose;
pub use super::model::service_keys::Sensitive;
use super::model::service_keys::{RawFileObject, RawGrant};

/// Where Compose mounts a secret whose target is not absolute.
pub const SECRETS_DIR: &str = "/run/secrets";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Config => "configs",
        }
    }

    fn one(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// Where a secret's or config's value comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A file on this host, absolute: bind-mounted as it is.
    File(String),
    /// A variable's value (shown by name only).
    Environment {
        variable: String,
        #[serde(skip)]
        value: Sensitive,
    },
    /// Inline content: configs only.
    Content(String),
}

impl Source {
    /// The value cryptus writes to a file of its own; `None` for a file
    /// source, which is mounted as it is.
    pub fn value(&self) -> Option<Sensitive> {
        match self {
            Source::File(_) => None,
            Source::Environment { value, .. } => Some(value.clone()),
            Source::Content(content) => Some(Sensitive::new(content.clone())),
        }
    }
}

/// A secret or config granted to a service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Grant {
    /// The top-level name.
    pub name: String,
    /// The absolute path in the container.
    pub target: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

/// A top-level declaration, resolved; paths relative to `base`.
pub fn source(kind: Kind, name: &str, raw: RawFileObject, base: &Path) -> Result<Source, String> {
    let at = format!("{}.{name}", kind.key());
    if raw.external.is_some_and(|e| e.0) {
        return Err(format!(
            "{at}: external {}s live in a Swarm, and one engine has none (hint: give it a file: or environment: source)",
            kind.one()
        ));
    }
    if !super::valid_name(name) {
        return Err(format!(
            "{at}: a name may hold only letters, digits, '_', '.' and '-'"
        ));
    }
    let content = raw.content.map(|t| t.0);
    if kind == Kind::Secret && content.is_some() {
        return Err(format!(
            "{at}: content is for configs; a secret comes from a file: or environment:"
        ));
    }
    let file = raw.file.map(|t| super::absolute(&t.0, base));
    let environment = raw.environment.map(|e| Source::Environment {
        variable: e.name,
        value: e.value,
    });
    let mut sources = [
        file.map(Source::File),
        environment,
        content.map(Source::Content),
    ]
    .into_iter()
    .flatten();
    match (sources.next(), sources.next()) {
        (Some(source), None) => Ok(source),
        (None, _) => Err(format!(
            "{at}: no source (hint: set file:, environment:{})",
            if kind == Kind::Config {
                " or content:"
            } else {
                ""
            }
        )),
        (Some(_), Some(_)) => Err(format!(
            "{at}: set exactly one of file, environment, content"
        )),
    }
}

/// A service's grants of one kind, with their targets as Compose sets them:
/// a secret under /run/secrets/ unless absolute, a config at /<target>.
pub fn grants(kind: Kind, raw: Vec<RawGrant>) -> Vec<Grant> {
    raw.into_iter()
        .map(|grant| {
            let target = grant.target.unwrap_or_else(|| grant.source.clone());
            let target = match kind {
                _ if target.starts_with('/') => target,
                Kind::Secret => format!("{SECRETS_DIR}/{target}"),
                Kind::Config => format!("/{target}"),
            };
            Grant {
                name: grant.source,
                target,
                uid: grant.uid,
                gid: grant.gid,
                mode: grant.mode,
            }
        })
        .collect()
}

/// Every grant names a declared secret or config whose file exists, and no
/// two mounts of a service share a target.
pub fn check(compose: &Compose) -> Result<(), String> {
    for service in compose.services.values() {
        let at = format!("{}: services.{}", service.file.display(), service.name);
        let mut targets: BTreeSet<&str> =
            service.mounts.iter().map(|m| m.target.as_str()).collect();
        for (kind, grants, declared) in [
            (Kind::Secret, &service.secrets, &compose.secrets),
            (Kind::Config, &service.configs, &compose.configs),
        ] {
            for grant in grants {
                let Some(source) = declared.get(&grant.name) else {
                    return Err(format!(
                        "{at}.{}: there is no {} {:?} under the top-level {}",
                        kind.key(),
                        kind.one(),
                        grant.name,
                        kind.key()
                    ));
                };
                if let Source::File(path) = source
                    && !Path::new(path).exists()
                {
                    return Err(format!(
                        "{at}.{}: the file of {} {:?}, {path}, does not exist",
                        kind.key(),
                        kind.one(),
                        grant.name
                    ));
                }
                if !targets.insert(&grant.target) {
                    return Err(format!(
                        "{at}.{}: {} is mounted twice",
                        kind.key(),
                        grant.target
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::{Compose, Vars};
    use super::*;

    const SECRET: &str = "s3cr3t-value";

    fn load_in(dir: &Path, text: &str) -> Result<Compose, String> {
        let vars = Vars::new(BTreeMap::from([
            ("DB_PASSWORD".to_owned(), SECRET.to_owned()),
            ("HOST".to_owned(), "db.internal".to_owned()),
        ]));
        let path = dir.join("test.yml");
        let path = path.to_string_lossy();
        let profiles = super::super::Profiles::none();
        super::super::load_texts(&[&path], &[(&path, text)], &vars, &profiles)
            .map_err(|err| format!("{err:#}"))
    }

    #[test]
    fn env_files_short_long_and_under_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.env"),
            "A=1\nB=from-a\nURL=http://${HOST}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.env"), "B=from-b\nRAW=\"$x\"\n").unwrap();
        let text = concat!(
            "services:\n  web:\n    image: x\n",
            "    env_file:\n",
            "      - a.env\n",
            "      - {path: ./b.env, format: raw}\n",
            "      - {path: missing.env, required: false}\n",
            "    environment: {A: from-environment}\n",
        );
        let compose = load_in(dir.path(), text).unwrap();
        let env = &compose.services["web"].environment;
        assert_eq!(env["A"], "from-environment");
        assert_eq!(env["B"], "from-b");
        assert_eq!(env["URL"], "http://db.internal");
        assert_eq!(env["RAW"], "\"$x\"");
        let compose = load_in(
            dir.path(),
            "services:\n  web:\n    image: x\n    env_file: a.env\n",
        )
        .unwrap();
        assert_eq!(compose.services["web"].environment["A"], "1");
    }

    #[test]
    fn a_missing_or_huge_env_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = "services:\n  web:\n    image: x\n    env_file: [ok.env, gone.env]\n";
        std::fs::write(dir.path().join("ok.env"), "A=1\n").unwrap();
        let err = load_in(dir.path(), text).unwrap_err();
        assert!(
            err.contains("gone.env") && err.contains("env_file") && err.contains("line 4"),
            "{err}"
        );
        assert!(err.contains("required: false"), "{err}");
        let huge = "A=".to_owned() + &"x".repeat(super::super::MAX_ENV_FILE_BYTES as usize);
        std::fs::write(dir.path().join("gone.env"), huge).unwrap();
        let err = load_in(dir.path(), text).unwrap_err();
        assert!(
            err.contains("larger than") && err.contains("gone.env"),
            "{err}"
        );
        std::fs::write(dir.path().join("gone.env"), "PASSWORD=\"s3cr3t\n").unwrap();
        let err = load_in(dir.path(), text).unwrap_err();
        assert!(err.contains("gone.env") && !err.contains("s3cr3t"), "{err}");
        let many = format!(
            "services:\n  web:\n    image: x\n    env_file: [{}]\n",
            vec!["ok.env"; 65].join(", ")
        );
        let err = load_in(dir.path(), &many).unwrap_err();
        assert!(err.contains("more than 64"), "{err}");
    }

    #[test]
    fn secrets_and_configs_resolve_as_compose_resolves_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "certificate").unwrap();
        let text = concat!(
            "services:\n  web:\n    image: x\n",
            "    secrets:\n",
            "      - db\n",
            "      - {source: cert, target: tls/cert.pem}\n",
            "      - {source: db, target: /etc/db-password, uid: \"103\", gid: 104, mode: \"0440\"}\n",
            "    configs:\n",
            "      - app\n",
            "      - {source: app, target: etc/app.ini, mode: 0o400}\n",
            "secrets:\n",
            "  db: {environment: DB_PASSWORD}\n",
            "  cert: {file: ./cert.pem}\n",
            "configs:\n",
            "  app: {content: \"host=${HOST}\"}\n",
        );
        let compose = load_in(dir.path(), text).unwrap();
        let web = &compose.services["web"];
        let targets: Vec<&str> = web.secrets.iter().map(|g| g.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/run/secrets/db",
                "/run/secrets/tls/cert.pem",
                "/etc/db-password"
            ]
        );
        assert_eq!(
            (web.secrets[2].uid, web.secrets[2].gid, web.secrets[2].mode),
            (Some(103), Some(104), Some(0o440))
        );
        let targets: Vec<&str> = web.configs.iter().map(|g| g.target.as_str()).collect();
        assert_eq!(targets, ["/app", "/etc/app.ini"]);
        assert_eq!(web.configs[1].mode, Some(0o400));
        assert_eq!(
            compose.secrets["cert"],
            Source::File(dir.path().join("cert.pem").to_string_lossy().into_owned())
        );
        assert_eq!(
            compose.configs["app"],
            Source::Content("host=db.internal".into())
        );
        assert_eq!(compose.secrets["db"].value().unwrap().expose(), SECRET);
        // The value is in no Debug and no serialization of the model.
        let debug = format!("{compose:?}");
        let json = serde_json::to_string(&compose).unwrap();
        for shown in [&debug, &json] {
            assert!(!shown.contains(SECRET), "{shown}");
        }
        assert!(json.contains("DB_PASSWORD"), "{json}");
    }

    #[test]
    fn bad_secrets_are_refused_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let base = "services:\n  web:\n    image: x\n    secrets: [s]\n";
        for (top, needle) in [
            (
                "secrets:\n  s: {environment: NOT_SET}\n",
                "NOT_SET is not set",
            ),
            ("secrets:\n  s: {external: true}\n", "external"),
            ("secrets:\n  s: {content: x}\n", "content is for configs"),
            ("secrets:\n  s: {}\n", "no source"),
            (
                "secrets:\n  s: {file: a, environment: DB_PASSWORD}\n",
                "exactly one",
            ),
            ("secrets:\n  s: {file: ./nope.txt}\n", "does not exist"),
            ("secrets:\n  other: {file: ./nope.txt}\n", "no secret \"s\""),
            ("secrets:\n  s: {driver: vault}\n", "driver"),
        ] {
            let err = load_in(dir.path(), &format!("{base}{top}")).unwrap_err();
            assert!(err.contains(needle), "{top}: {err}");
            assert!(!err.contains(SECRET), "{err}");
        }
        let err = load_in(
            dir.path(),
            "services: {}\nsecrets:\n  s: {environment: NOT_SET}\n",
        )
        .unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let twice = "services:\n  web:\n    image: x\n    secrets: [s, {source: s, target: s}]\nsecrets:\n  s: {environment: DB_PASSWORD}\n";
        let err = load_in(dir.path(), twice).unwrap_err();
        assert!(err.contains("mounted twice"), "{err}");
        let fixed = "services:\n  web:\n    image: x\n    secrets: [{source: s, mode: \"0400\"}]\nsecrets:\n  s: {file: test.yml}\n";
        std::fs::write(dir.path().join("test.yml"), "x").unwrap();
        let warnings = load_in(dir.path(), fixed).unwrap().warnings();
        assert!(
            warnings[0].contains("do not apply to a file"),
            "{warnings:?}"
        );
    }
}
