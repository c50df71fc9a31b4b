//! Image registries as an engine reaches them: tagging, pushing and
//! pulling an image, asking a registry for the digest of what a reference
//! names, and the login each request carries. Logins are read where
//! `docker login` writes them (the `auths` of the docker CLI's
//! `config.json`), so an operator logs in once, as for the docker CLI; one
//! is sent only for a reference that names its registry host (Docker Hub's
//! private images as `docker.io/acme/app`), so a Docker Hub login is not
//! handed to every service.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Engine, engine_error, progress};
use crate::error::usage;

/// The largest docker CLI config cryptus reads.
const CONFIG_LIMIT: u64 = 1 << 20;

/// The registry host a reference names (`registry.example:5000/app:2`,
/// `localhost/app`), or `None` for one of Docker Hub's (`app:1`,
/// `acme/app`), as the docker CLI tells them: the part before the first
/// `/` is a host when it has a `.` or a `:`, or is `localhost`.
pub fn registry_of(reference: &str) -> Option<&str> {
    reference
        .split_once('/')
        .map(|(host, _)| host)
        .filter(|host| host.contains('.') || host.contains(':') || *host == "localhost")
}

/// A reference's digest (`...@sha256:...`), when it names one.
pub fn digest_of(reference: &str) -> Option<&str> {
    reference.split_once('@').map(|(_, digest)| digest)
}

/// A reference's repository and its tag (`latest` when it names none),
/// leaving out a digest: `host:5000/app:2@sha256:..` is
/// (`host:5000/app`, `2`).
pub fn repository_and_tag(reference: &str) -> (&str, &str) {
    let name = reference.split('@').next().unwrap_or(reference);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rsplit_once(':') {
        Some((_, tag)) => (&name[..name.len() - tag.len() - 1], tag),
        None => (name, "latest"),
    }
}

/// A registry login, as `docker login` keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    server: String,
    username: Option<String>,
    password: Option<String>,
    identity_token: Option<String>,
}

/// A login prints as whose it is, never its secret.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({} as {:?})", self.server, self.username)
    }
}

impl Login {
    /// The login for the registry `reference` names, from the docker
    /// CLI's config (`$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`); `None` without one, or when the reference
    /// names no registry host. A config that cannot be read is a
    /// configuration error naming it.
    pub fn for_image(reference: &str) -> Result<Option<Login>> {
        Login::in_config(reference, config_path())
    }

    /// [`Login::for_image`], with the config at `path`.
    fn in_config(reference: &str, path: Option<PathBuf>) -> Result<Option<Login>> {
        let Some(host) = registry_of(reference) else {
            return Ok(None);
        };
        let Some(path) = path else {
            return Ok(None);
        };
        let text = match read_bounded(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(usage(
                    format!("reading the docker CLI's config {}: {err}", path.display()),
                    "fix the file's permissions, or set DOCKER_CONFIG to the directory of a readable config.json",
                ));
            }
        };
        login_in(&text, host).map_err(|why| {
            usage(
                format!("the docker CLI's config {}: {why}", path.display()),
                "log in again (docker login) or fix the file",
            )
        })
    }
}

/// Where the docker CLI keeps its config.
fn config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
        }
    }
}

fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(CONFIG_LIMIT)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The login a docker CLI config (`text`) holds for `host`: its `auths`
/// entry whose key names that host (`host:5000`, `https://host:5000/v2/`;
/// Docker Hub's as `https://index.docker.io/v1/`), with `auth` (base64 of
/// `user:password`), `username` and `password`, or `identitytoken`.
/// Credential helpers (`credsStore`, `credHelpers`) are not run: a login
/// kept only there is not found.
pub fn login_in(text: &str, host: &str) -> Result<Option<Login>, String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
        identitytoken: Option<String>,
    }
    let config: Config = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let same = |key: &str| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let key = key.split('/').next().unwrap_or(key);
        let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
        key == host || (hub(key) && hub(host))
    };
    // An empty entry (a credential helper's) must not hide a filled one
    // under another spelling of the host.
    let filled = |entry: &&Entry| {
        entry.auth.as_deref().is_some_and(|a| !a.is_empty())
            || entry.username.is_some()
            || entry
                .identitytoken
                .as_deref()
                .is_some_and(|t| !t.is_empty())
    };
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(key, entry)| same(key) && filled(entry))
    else {
        return Ok(None);
    };
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| format!("the login for {key} is not base64 of user:password"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the login for {key} is not base64 of user:password"))?;
        (username, password) = (Some(user.to_owned()), Some(pass.to_owned()));
    }
    let identity_token = entry.identitytoken.clone().filter(|t| !t.is_empty());
    if username.is_none() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(Login {
        server: key.clone(),
        username,
        password,
        identity_token,
    }))
}

/// Rewrites a request's `X-Registry-Auth` into the URL-safe base64 the
/// engine decodes (`base64.URLEncoding`): bollard encodes it in the
/// standard alphabet, whose `+` and `/` (a login whose JSON has them)
/// would make the engine drop the login and go on anonymously.
pub(super) fn url_safe_auth(headers: &mut http::HeaderMap) {
    let Some(value) = headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let safe = value.replace('+', "-").replace('/', "_");
    if let Ok(safe) = http::HeaderValue::from_str(&safe) {
        headers.insert("X-Registry-Auth", safe);
    }
}

/// What a request to the registry carries: the login, or an empty one
/// (an engine refuses a push with no `X-Registry-Auth` at all).
pub(super) fn credentials(login: Option<&Login>) -> DockerCredentials {
    match login {
        Some(login) => DockerCredentials {
            username: login.username.clone(),
            password: login.password.clone(),
            serveraddress: Some(login.server.clone()),
            identitytoken: login.identity_token.clone(),
            ..Default::default()
        },
        None => DockerCredentials::default(),
    }
}

impl Engine {
    /// Tags `image` (a reference or id this engine has) as `reference`.
    pub async fn tag_image(&self, image: &str, reference: &str) -> Result<()> {
        let (repo, tag) = repository_and_tag(reference);
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(image, Some(options))
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("tagging {image} as {reference}"))
    }

    /// Pushes `reference`, a tag this engine has, to the registry it names.
    /// The caller bounds it in time.
    pub async fn push_image(&self, reference: &str, login: Option<&Login>) -> Result<()> {
        let (repo, tag) = repository_and_tag(reference);
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut pushing = self
            .docker
            .push_image(repo, Some(options), Some(credentials(login)));
        let doing = format!("pushing {reference}");
        while let Some(item) = pushing.next().await {
            progress(item, &doing, "the push failed")?;
        }
        Ok(())
    }

    /// Pulls `reference` from its registry: by its digest when it names
    /// one, else its tag (`latest` when it names none: with no tag the
    /// engine would pull every tag of the repository). The caller bounds
    /// it in time.
    pub async fn pull_image(&self, reference: &str, login: Option<&Login>) -> Result<()> {
        let (repository, tag) = repository_and_tag(reference);
        let options = CreateImageOptionsBuilder::default()
            .from_image(repository)
            .tag(digest_of(reference).unwrap_or(tag))
            .build();
        let mut pulling = self
            .docker
            .create_image(Some(options), None, Some(credentials(login)));
        let doing = format!("pulling {reference}");
        while let Some(item) = pulling.next().await {
            progress(item, &doing, "the pull failed")?;
        }
        Ok(())
    }

    /// The digest of the manifest `reference` names, as its registry
    /// answers this engine: what proves this engine can get the image.
    pub async fn registry_digest(&self, reference: &str, login: Option<&Login>) -> Result<String> {
        let inspected = self
            .docker
            .inspect_registry_image(reference, Some(credentials(login)))
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("asking the registry for {reference}"))?;
        inspected
            .descriptor
            .digest
            .filter(|digest| !digest.is_empty())
            .ok_or_else(|| anyhow!("the registry gave no digest for {reference}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_host_is_told_from_a_docker_hub_name() {
        assert_eq!(
            registry_of("registry.example:5000/app:2"),
            Some("registry.example:5000")
        );
        assert_eq!(registry_of("localhost/app"), Some("localhost"));
        assert_eq!(registry_of("ghcr.io/acme/app:1"), Some("ghcr.io"));
        assert_eq!(
            registry_of("10.99.0.11:5000/lab/app"),
            Some("10.99.0.11:5000")
        );
        assert_eq!(registry_of("acme/app:1"), None);
        assert_eq!(registry_of("app:1"), None);
    }

    #[test]
    fn a_reference_splits_into_repository_and_tag() {
        assert_eq!(repository_and_tag("app:1"), ("app", "1"));
        assert_eq!(repository_and_tag("app"), ("app", "latest"));
        assert_eq!(
            repository_and_tag("host:5000/ns/app"),
            ("host:5000/ns/app", "latest")
        );
        assert_eq!(
            repository_and_tag("host:5000/ns/app:2.0@sha256:abc"),
            ("host:5000/ns/app", "2.0")
        );
    }

    #[test]
    fn a_login_is_found_by_its_registry_host_in_any_key_form() {
        let config = r#"{"auths": {
            "https://registry.example:5000/v2/": {"auth": "b3BzOnMzY3JldA=="},
            "https://index.docker.io/v1/": {"auth": "aHViOnB3"},
            "tokens.example": {"identitytoken": "tok"},
            "plain.example": {"username": "u", "password": "p"}
        }, "credsStore": "desktop"}"#;
        let login = login_in(config, "registry.example:5000").unwrap().unwrap();
        assert_eq!(login.username.as_deref(), Some("ops"));
        assert_eq!(login.password.as_deref(), Some("s3cret"));
        assert_eq!(login.server, "https://registry.example:5000/v2/");
        let hub = login_in(config, "docker.io").unwrap().unwrap();
        assert_eq!(hub.username.as_deref(), Some("hub"));
        let token = login_in(config, "tokens.example").unwrap().unwrap();
        assert_eq!(token.identity_token.as_deref(), Some("tok"));
        assert_eq!(token.username, None);
        let plain = login_in(config, "plain.example").unwrap().unwrap();
        assert_eq!(plain.password.as_deref(), Some("p"));
        assert_eq!(login_in(config, "other.example:5000").unwrap(), None);
        assert_eq!(login_in(config, "registry.example").unwrap(), None);
        assert!(!format!("{login:?}").contains("s3cret"));
    }

    #[test]
    fn a_registry_login_header_is_sent_in_the_url_safe_alphabet() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "X-Registry-Auth",
            http::HeaderValue::from_static("ab+c/d=="),
        );
        headers.insert("Content-Type", http::HeaderValue::from_static("a/b+c"));
        url_safe_auth(&mut headers);
        assert_eq!(headers["X-Registry-Auth"], "ab-c_d==");
        assert_eq!(headers["Content-Type"], "a/b+c", "another header changed");
        let mut none = http::HeaderMap::new();
        url_safe_auth(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_login_is_only_looked_for_where_a_reference_names_its_registry() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("config.json");
        std::fs::write(&broken, "not json").unwrap();
        let login = |reference| Login::in_config(reference, Some(broken.clone()));
        assert_eq!(login("cryptus-app:1").unwrap(), None);
        assert_eq!(login("acme/app:1").unwrap(), None);
        let err = login("registry.example/app:1").unwrap_err();
        assert!(format!("{err:#}").contains("config.json"), "{err:#}");
        let missing = Login::in_config("registry.example/app:1", Some(dir.path().join("none")));
        assert_eq!(missing.unwrap(), None);
    }

    #[test]
    fn a_login_kept_by_a_credential_helper_only_is_not_found_and_a_broken_one_is_refused() {
        let helper = r#"{"auths": {"registry.example": {}}, "credsStore": "pass"}"#;
        assert_eq!(login_in(helper, "registry.example").unwrap(), None);
        let shadowed = r#"{"auths": {"https://registry.example": {},
            "registry.example": {"auth": "b3BzOnB3"}}}"#;
        let login = login_in(shadowed, "registry.example").unwrap().unwrap();
        assert_eq!(
            login.username.as_deref(),
            Some("ops"),
            "an empty entry hid it"
        );
        assert_eq!(login_in("{}", "registry.example").unwrap(), None);
        let broken = r#"{"auths": {"registry.example": {"auth": "not base64!"}}}"#;
        let why = login_in(broken, "registry.example").unwrap_err();
        assert!(why.contains("registry.example"), "{why}");
        let no_colon = r#"{"auths": {"registry.example": {"auth": "b3Bz"}}}"#;
        assert!(login_in(no_colon, "registry.example").is_err());
        assert!(
            login_in("not json", "registry.example")
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
