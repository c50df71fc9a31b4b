//! Image registries as an engine reaches them: tagging, pushing and
//! pulling an image, asking a registry for the digest of what a reference
//! names, and the login each request carries. Logins are found where
//! `docker login` keeps them, the docker CLI's `config.json`: its
//! credential helper for the registry (`credHelpers`, else `credsStore`),
//! run as the docker CLI runs it, or else its `auths`; so an operator logs
//! in once, as for the docker CLI. One is sent only for a reference that
//! names its registry host (Docker Hub's private images as
//! `docker.io/acme/app`), so a Docker Hub login is not handed to every
//! service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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

/// How long a credential helper may take (one that asks a cloud for a
/// token takes seconds).
const HELPER_DEADLINE: Duration = Duration::from_secs(30);

/// The logins found in this run, by config and registry host: a helper is
/// run once per registry, however many requests need its login.
static FOUND: Mutex<BTreeMap<(PathBuf, String), Option<Login>>> = Mutex::new(BTreeMap::new());

/// Held while a login is looked for, so that two requests needing one at
/// once run a helper once.
static LOOKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The key the docker CLI keeps Docker Hub's logins under, and hands a
/// credential helper for it.
const HUB_SERVER: &str = "https://index.docker.io/v1/";

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
    /// names no registry host. A config that cannot be read, or a
    /// credential helper that is missing or fails, is a configuration
    /// error naming it.
    pub async fn for_image(reference: &str) -> Result<Option<Login>> {
        Login::in_config(reference, config_path()).await
    }

    /// [`Login::for_image`], with the config at `path`.
    async fn in_config(reference: &str, path: Option<PathBuf>) -> Result<Option<Login>> {
        let Some(host) = registry_of(reference) else {
            return Ok(None);
        };
        let Some(path) = path else {
            return Ok(None);
        };
        let key = (path.clone(), server_key(host).to_owned());
        let known = || {
            FOUND
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned()
        };
        if let Some(found) = known() {
            return Ok(found);
        }
        let _looking = LOOKING.lock().await;
        // Found meanwhile by the lookup this one waited for.
        if let Some(found) = known() {
            return Ok(found);
        }
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
        let broken = |why: String| {
            usage(
                format!("the docker CLI's config {}: {why}", path.display()),
                "log in again (docker login) or fix the file",
            )
        };
        let found = match helper_in(&text, host).map_err(broken)? {
            Some(helper) => ask_helper(&helper, host, &path).await?,
            None => login_in(&text, host).map_err(broken)?,
        };
        FOUND
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, found.clone());
        Ok(found)
    }
}

/// The credential helper a docker CLI config (`text`) names for `host`,
/// as the docker CLI chooses it: `credHelpers`' entry whose key is the
/// host's server key exactly ([`server_key`]), else `credsStore`; `None`
/// when it names neither (its `auths` hold the logins). A helper's name
/// must be a plain program suffix.
pub fn helper_in(text: &str, host: &str) -> Result<Option<String>, String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default, rename = "credHelpers")]
        cred_helpers: BTreeMap<String, String>,
        #[serde(rename = "credsStore")]
        creds_store: Option<String>,
    }
    let config: Config = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let named = config
        .cred_helpers
        .get(server_key(host))
        .cloned()
        .or(config.creds_store)
        .filter(|helper| !helper.is_empty());
    match named {
        Some(helper)
            if !helper
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                || helper.starts_with('.') =>
        {
            Err(format!(
                "the credential helper {helper:?} is not a plain name (docker-credential-<name>)"
            ))
        }
        named => Ok(named),
    }
}

/// Runs `docker-credential-<helper> get` for `host`, as the docker CLI
/// does: the host on its stdin, `{"ServerURL", "Username", "Secret"}` on
/// its stdout (`<token>` as the user name: the secret is an identity
/// token). A helper that has no login for the host says so, and there is
/// none; one that is missing, fails or takes too long is a configuration
/// error.
async fn ask_helper(helper: &str, host: &str, config: &Path) -> Result<Option<Login>> {
    let server = server_key(host);
    use tokio::io::AsyncWriteExt;
    let program = format!("docker-credential-{helper}");
    let named = format!(
        "{program}, the credential helper {} names",
        config.display()
    );
    let hint = format!(
        "log in again (docker login {host}), or fix credHelpers and credsStore in {}",
        config.display()
    );
    let mut child = match tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(usage(
                format!("{named}, is not installed (not found on PATH)"),
                format!(
                    "install it, or remove it from {} and log in again",
                    config.display()
                ),
            ));
        }
        Err(err) => return Err(usage(format!("running {named}: {err}"), hint)),
    };
    let asked = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that failed before reading its input says why on
            // its output: its exit is judged, not the closed pipe.
            match stdin.write_all(server.as_bytes()).await {
                Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => return Err(err),
                _ => {}
            }
        }
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(HELPER_DEADLINE, asked).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(usage(format!("running {named}: {err}"), hint)),
        Err(_) => {
            return Err(usage(
                format!(
                    "{named}, gave no login for {host} within {}s",
                    HELPER_DEADLINE.as_secs()
                ),
                hint,
            ));
        }
    };
    helper_answer(
        output.status.success(),
        &output.stdout,
        &output.stderr,
        server,
    )
    .map_err(|why| usage(format!("{named}, failed for {host}: {why}"), hint))
}

/// What a credential helper's answer (`ok`: it exited 0) says of `host`'s
/// login.
pub fn helper_answer(
    ok: bool,
    stdout: &[u8],
    stderr: &[u8],
    host: &str,
) -> Result<Option<Login>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    if !ok {
        let (out, err) = (said(stdout), said(stderr));
        // The helpers' own words for "no login kept for this host".
        if out.contains("credentials not found") || err.contains("credentials not found") {
            return Ok(None);
        }
        // Its error from stderr only: what it printed on stdout may be
        // an answer, a secret.
        let why = err.lines().next().unwrap_or("").trim().to_owned();
        return Err(if why.is_empty() {
            "it exited with an error and said nothing to show".to_owned()
        } else {
            why
        });
    }
    let answer: Answer = serde_json::from_slice(stdout)
        // Where it broke, never the text (it may hold the secret).
        .map_err(|err| {
            format!(
                "its answer is not the JSON a helper gives ({:?} error at line {}, column {})",
                err.classify(),
                err.line(),
                err.column()
            )
        })?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    let token = answer.username == "<token>";
    Ok(Some(Login {
        server: host.to_owned(),
        username: (!token).then(|| answer.username.clone()),
        password: (!token).then(|| answer.secret.clone()),
        identity_token: token.then_some(answer.secret),
    }))
}

/// The key the docker CLI keeps `host`'s login under and asks a helper
/// for: the host itself, or [`HUB_SERVER`] for Docker Hub under any of
/// its names.
fn server_key(host: &str) -> &str {
    if matches!(host, "docker.io" | "index.docker.io") {
        HUB_SERVER
    } else {
        host
    }
}

/// Whether a config's key (`host:5000`, `https://host:5000/v2/`) names
/// `host` (Docker Hub under any of its names).
fn same_host(key: &str, host: &str) -> bool {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key.split('/').next().unwrap_or(key);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    key == host || (hub(key) && hub(host))
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
/// (Where a credential helper is named, [`helper_in`], it is asked
/// instead, as the docker CLI does.)
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
        .find(|(key, entry)| same_host(key, host) && filled(entry))
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

    #[tokio::test]
    async fn a_login_is_only_looked_for_where_a_reference_names_its_registry() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("config.json");
        std::fs::write(&broken, "not json").unwrap();
        let login = |reference| Login::in_config(reference, Some(broken.clone()));
        assert_eq!(login("cryptus-app:1").await.unwrap(), None);
        assert_eq!(login("acme/app:1").await.unwrap(), None);
        let err = login("registry.example/app:1").await.unwrap_err();
        assert!(format!("{err:#}").contains("config.json"), "{err:#}");
        let missing = Login::in_config("registry.example/app:1", Some(dir.path().join("none")));
        assert_eq!(missing.await.unwrap(), None);
    }

    #[test]
    fn a_credential_helper_is_chosen_as_the_docker_cli_chooses_it() {
        let config = r#"{"auths": {"registry.example": {"auth": "b3BzOnB3"}},
            "credHelpers": {"ecr.example": "ecr-login", "https://gcr.example/": "gcloud",
                "https://index.docker.io/v1/": "hub-helper"},
            "credsStore": "pass"}"#;
        let helper = |host| helper_in(config, host).unwrap();
        assert_eq!(helper("ecr.example").as_deref(), Some("ecr-login"));
        // Keys are the hosts exactly, as the docker CLI reads them.
        assert_eq!(helper("gcr.example").as_deref(), Some("pass"));
        // Docker Hub under its server key, whichever name the image uses.
        assert_eq!(helper("docker.io").as_deref(), Some("hub-helper"));
        assert_eq!(helper("index.docker.io").as_deref(), Some("hub-helper"));
        // The store, for every other host: the auths entry is not used.
        assert_eq!(helper("registry.example").as_deref(), Some("pass"));
        let no_store = r#"{"auths": {}, "credHelpers": {"ecr.example": "ecr-login"}}"#;
        assert_eq!(helper_in(no_store, "other.example").unwrap(), None);
        assert_eq!(
            helper_in(r#"{"credsStore": ""}"#, "a.example").unwrap(),
            None
        );
        for bad in ["../../bin/sh", "a b", ".hidden", "x/y"] {
            let config = format!(r#"{{"credsStore": "{bad}"}}"#);
            assert!(helper_in(&config, "a.example").is_err(), "{bad} accepted");
        }
        assert!(helper_in("not json", "a.example").is_err());
    }

    #[test]
    fn a_credential_helpers_answer_gives_a_login_a_token_none_or_its_error() {
        let host = "registry.example:5000";
        let answer =
            br#"{"ServerURL": "registry.example:5000", "Username": "ops", "Secret": "pw"}"#;
        let login = helper_answer(true, answer, b"", host).unwrap().unwrap();
        assert_eq!(login.username.as_deref(), Some("ops"));
        assert_eq!(login.password.as_deref(), Some("pw"));
        assert_eq!(login.server, host);
        let token = br#"{"Username": "<token>", "Secret": "tok"}"#;
        let login = helper_answer(true, token, b"", host).unwrap().unwrap();
        assert_eq!(login.identity_token.as_deref(), Some("tok"));
        assert_eq!((login.username, login.password), (None, None));
        let absent = helper_answer(
            false,
            b"credentials not found in native keychain\n",
            b"",
            host,
        );
        assert_eq!(absent.unwrap(), None);
        let empty = helper_answer(true, br#"{"Username": "", "Secret": ""}"#, b"", host);
        assert_eq!(empty.unwrap(), None);
        let why = helper_answer(false, b"", b"gpg: decryption failed\nmore\n", host).unwrap_err();
        assert_eq!(why, "gpg: decryption failed");
        assert!(
            helper_answer(false, b"", b"", host)
                .unwrap_err()
                .contains("said nothing")
        );
        assert!(helper_answer(true, b"not json", b"", host).is_err());
        // An answer printed before a failure never goes into the error.
        let leaked = helper_answer(false, answer, b"", host).unwrap_err();
        assert!(!leaked.contains("pw"), "{leaked}");
        let leaked = helper_answer(false, answer, b"keychain locked", host).unwrap_err();
        assert_eq!(leaked, "keychain locked");
    }

    #[tokio::test]
    async fn a_missing_credential_helper_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"credsStore": "cryptus-missing-helper-xyz"}"#).unwrap();
        let err = Login::in_config("registry.example/app:1", Some(config.clone()))
            .await
            .unwrap_err();
        let said = format!("{err:#}");
        assert!(
            said.contains("docker-credential-cryptus-missing-helper-xyz")
                && said.contains("not installed")
                && said.contains("config.json"),
            "{said}"
        );
        // A reference with no registry host asks no helper.
        let hub = Login::in_config("acme/app:1", Some(config)).await.unwrap();
        assert_eq!(hub, None);
    }

    #[test]
    fn an_empty_auths_entry_hides_no_filled_one_and_a_broken_one_is_refused() {
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
