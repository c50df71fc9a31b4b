//! The registry a Swarm's nodes pull images from. Where the operator names
//! one (`CRYPTUS_SWARM_REGISTRY`), an image only the manager has (`deploy
//! --image` of a local image, or `deploy --build`'s) is pushed there
//! through the manager's engine, rather than copied to every node. Every
//! image of a registry a deploy runs is asked of the registry by the
//! manager and by each node that may run the color whose engine is known,
//! before the stack changes, pinned to the digest the manager was given,
//! and pulled on the manager by that digest (its labels give the version):
//! every task runs the same image, whatever the tag names later.

use std::time::Duration;

use anyhow::{Result, anyhow};
use futures_util::future::try_join_all;

use crate::context::Stack;
use crate::engine::Engine;
use crate::engine::registry::{Login, registry_of, repository_and_tag};
use crate::error::{failed_with_hint, usage};
use crate::stack::{Color, Release, image_version};

/// The setting that names the registry.
pub const REGISTRY_VAR: &str = "CRYPTUS_SWARM_REGISTRY";

/// The longest a push or a pull of an image may take.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(600);

/// The longest one engine may take to ask the registry for a digest.
const ASK_DEADLINE: Duration = Duration::from_secs(30);

/// What to check when a registry does not give an image.
const REGISTRY_HINT: &str = "check the image's name, that the registry answers every node (a plain-HTTP registry must be in each engine's insecure-registries) and the login (docker login <registry>: cryptus reads the auths of the docker CLI's config.json; credential helpers are not run)";

/// Where images only the manager has are pushed: a registry host, and a
/// path under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    prefix: String,
}

impl Registry {
    /// The registry `CRYPTUS_SWARM_REGISTRY` names; `None` when it is not
    /// set or empty. One not of the form is a usage error.
    pub fn from_env() -> Result<Option<Registry>> {
        let setting = std::env::var(REGISTRY_VAR).unwrap_or_default();
        Registry::parse(&setting).map_err(|why| {
            usage(
                format!("{REGISTRY_VAR}: {why}"),
                format!(
                    "name a registry as image references name it, a host with its port and a path if you like: {REGISTRY_VAR}=registry.example:5000/acme"
                ),
            )
        })
    }

    /// A setting's registry: `host[:port][/path]`, as image references
    /// name it (no scheme, no tag), the host with a `.` or a port, or
    /// `localhost`, the path in lowercase letters, digits and `._-`.
    pub fn parse(setting: &str) -> Result<Option<Registry>, String> {
        let setting = setting.trim().trim_end_matches('/');
        if setting.is_empty() {
            return Ok(None);
        }
        if setting.len() > 200 {
            return Err("longer than 200 characters".to_owned());
        }
        if setting.contains("://") {
            return Err(format!(
                "'{setting}' names a scheme: give the host alone (registry.example:5000)"
            ));
        }
        let (host, path) = setting.split_once('/').unwrap_or((setting, ""));
        let (name, port) = host.split_once(':').unwrap_or((host, ""));
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
        let port_ok = !host.contains(':')
            || (!port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit()));
        if !name_ok || !port_ok {
            return Err(format!(
                "'{host}' is not a registry host (a name or an IPv4 address, and a port in digits)"
            ));
        }
        if registry_of(&format!("{host}/x")).is_none() {
            return Err(format!(
                "'{host}' is not a registry host: it needs a '.' or a ':port', or is localhost"
            ));
        }
        let part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        if !path.is_empty() && !path.split('/').all(part) {
            return Err(format!(
                "'{path}' is not a repository path: lowercase letters, digits, '.', '_' and '-', parts joined by '/'"
            ));
        }
        Ok(Some(Registry {
            prefix: setting.to_owned(),
        }))
    }

    /// Where `image`, a reference only the manager has, is pushed: its
    /// repository's path and tag under the registry (`app:2` as
    /// `registry.example:5000/acme/app:2`). An image id names nothing to
    /// push it as.
    pub fn reference(&self, image: &str) -> Result<String, String> {
        let bare = image.split('@').next().unwrap_or(image);
        let looks_like_id = bare.starts_with("sha256:")
            || (bare.len() == 64 && bare.chars().all(|c| c.is_ascii_hexdigit()));
        if looks_like_id {
            return Err(format!(
                "{image} is an image id: tag it (docker tag) to push it by a name"
            ));
        }
        let tagged = bare
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
        if image.contains('@') && !tagged {
            return Err(format!(
                "{image} names a digest and no tag: tag it (docker tag) to push it by a name"
            ));
        }
        let (repository, tag) = repository_and_tag(image);
        let path = match registry_of(repository) {
            Some(host) => &repository[host.len() + 1..],
            None => repository,
        };
        Ok(format!("{}/{path}:{tag}", self.prefix))
    }
}

/// `reference` pinned to `digest` (`host/app:2@sha256:...`), as `docker
/// stack deploy` pins a service's image: a tag pushed again later does
/// not change what the service's tasks run.
pub fn pinned(reference: &str, digest: &str) -> String {
    let bare = reference.split('@').next().unwrap_or(reference);
    format!("{bare}@{digest}")
}

/// Whether `image` names a registry, so the nodes pull it.
pub fn names_registry(image: &str) -> bool {
    registry_of(image).is_some()
}

/// Pushes `release`'s image, one named with no registry host, to
/// `registry` through the manager's engine (tagged under the registry's
/// name first), then checks it as every registry image ([`release`]).
/// The push comes before the nodes are asked (the registry must hold the
/// image to be asked for it): a deploy refused after it leaves the image
/// in the registry and its tag on the manager, and the stack as it was.
pub async fn push(
    stack: &Stack<'_>,
    color: Color,
    registry: &Registry,
    release: &Release,
) -> Result<Release> {
    let image = &release.image;
    let target = registry
        .reference(image)
        .map_err(|why| failed_with_hint(why, "deploy a tagged image"))?;
    let login = Login::for_image(&target).await?;
    stack.printer.info(format!("pushing {image} as {target}"));
    stack.engine.tag_image(image, &target).await?;
    let pushed = stack.engine.push_image(&target, login.as_ref());
    bounded(TRANSFER_DEADLINE, pushed)
        .await
        .map_err(|err| failed_with_hint(format!("{err:#}"), REGISTRY_HINT))?;
    let version = Some(release.version.clone());
    self::release(stack, color, &target, version, false).await
}

/// The release of `reference`, an image of a registry, as `color`'s
/// tasks will run it: the manager asks the registry for its digest; the
/// manager pulls it by that digest when it lacks it (`pull`: a dry run
/// pulls nothing), and its labels give the version where `version` does
/// not (as on one engine; else its tag); each node that may run `color`
/// whose engine is known (`CRYPTUS_SWARM_NODES`) must be given the same
/// digest (a node whose engine is not known pulls when its task starts,
/// and the health gate sees one that cannot). A node that cannot get it
/// is named in one error (exit 1) before the stack changes. The image is
/// pinned to the digest.
pub async fn release(
    stack: &Stack<'_>,
    color: Color,
    reference: &str,
    version: Option<String>,
    pull: bool,
) -> Result<Release> {
    let login = Login::for_image(reference).await?;
    let login = login.as_ref();
    let digest = ask(stack.engine, reference, login)
        .await
        .map_err(|err| cannot_get(reference, color, &[format!("the manager ({err:#})")]))?;
    let (repository, _) = repository_and_tag(reference);
    let by_digest = format!("{repository}@{digest}");
    let mut labels = stack.engine.image_labels(&by_digest).await?;
    if labels.is_none() && pull {
        stack
            .printer
            .info(format!("pulling {reference} on the manager"));
        let pulled = stack.engine.pull_image(&by_digest, login);
        bounded(TRANSFER_DEADLINE, pulled)
            .await
            .map_err(|err| failed_with_hint(format!("{err:#}"), REGISTRY_HINT))?;
        labels = stack.engine.image_labels(&by_digest).await?;
    }
    let version = version.unwrap_or_else(|| image_version(reference, &labels.unwrap_or_default()));
    crate::switch::deploy::check_version(&version)?;
    let release = Release {
        image: pinned(reference, &digest),
        version,
    };
    let refused = nodes_refusing(stack, color, &release, reference, &digest, login).await?;
    if !refused.is_empty() {
        return Err(cannot_get(reference, color, &refused));
    }
    Ok(release)
}

/// The nodes other than the manager that may run `color` for `release`,
/// whose engines are known, that cannot get `image` at `digest`, each with
/// why.
async fn nodes_refusing(
    stack: &Stack<'_>,
    color: Color,
    release: &Release,
    image: &str,
    digest: &str,
    login: Option<&Login>,
) -> Result<Vec<String>> {
    let Some((engines, nodes)) = super::nodes::may_run_color(stack, color, release).await? else {
        return Ok(Vec::new());
    };
    let others = nodes
        .iter()
        .filter(|node| engines.knows(node) && !engines.is_manager(&node.id));
    let asked = others.map(|node| async {
        let engine = engines
            .engine(node, &format!("{image} is asked of the registry"))
            .await?;
        Ok::<_, anyhow::Error>(match ask(&engine, image, login).await {
            Ok(theirs) if theirs == digest => None,
            Ok(theirs) => Some(format!(
                "{} (given {theirs}, the manager {digest})",
                node.hostname
            )),
            Err(err) => Some(format!("{} ({err:#})", node.hostname)),
        })
    });
    Ok(try_join_all(asked).await?.into_iter().flatten().collect())
}

/// The digest of `image` as the registry answers `engine`, within
/// [`ASK_DEADLINE`].
async fn ask(engine: &Engine, image: &str, login: Option<&Login>) -> Result<String> {
    bounded(ASK_DEADLINE, engine.registry_digest(image, login)).await
}

async fn bounded<T>(deadline: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| anyhow!("not done within {}", crate::output::uptime(deadline)))
        .and_then(|done| done)
}

/// Why a deploy cannot run `image` as `color`: the nodes that cannot get it.
fn cannot_get(image: &str, color: Color, nodes: &[String]) -> anyhow::Error {
    failed_with_hint(
        format!(
            "{image} cannot be got from its registry by every node that may run {color}: {}",
            nodes.join(", ")
        ),
        REGISTRY_HINT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(setting: &str) -> Registry {
        Registry::parse(setting).unwrap().unwrap()
    }

    #[test]
    fn a_registry_setting_is_a_host_with_an_optional_path() {
        assert_eq!(Registry::parse("").unwrap(), None);
        assert_eq!(Registry::parse("  ").unwrap(), None);
        assert_eq!(
            registry("registry.example:5000/").prefix,
            "registry.example:5000"
        );
        assert_eq!(
            registry("localhost:5000/acme/apps").prefix,
            "localhost:5000/acme/apps"
        );
        assert_eq!(registry("localhost").prefix, "localhost");
        for (bad, why) in [
            ("https://registry.example", "scheme"),
            ("registry/acme", "not a registry host"),
            ("registry.example:5000/Acme", "not a repository path"),
            ("registry.example:5000//acme", "not a repository path"),
            ("reg istry.example", "not a registry host"),
            ("registry.example:5000/app:2", "not a repository path"),
            ("a:b:c", "not a registry host"),
            ("reg.example:abc", "not a registry host"),
            ("[::1]:5000", "not a registry host"),
            ("reg.example:123456", "not a registry host"),
        ] {
            let err = Registry::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(Registry::parse(&format!("r.example/{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn an_image_is_pushed_under_the_registry_by_its_path_and_tag() {
        let acme = registry("registry.example:5000/acme");
        assert_eq!(
            acme.reference("app:2.0").unwrap(),
            "registry.example:5000/acme/app:2.0"
        );
        assert_eq!(
            acme.reference("team/app").unwrap(),
            "registry.example:5000/acme/team/app:latest"
        );
        assert_eq!(
            acme.reference("other.example/team/app:3").unwrap(),
            "registry.example:5000/acme/team/app:3"
        );
        assert_eq!(
            registry("localhost:5000")
                .reference("cryptus-app:1")
                .unwrap(),
            "localhost:5000/cryptus-app:1"
        );
        assert!(
            acme.reference("sha256:0123456789ab")
                .unwrap_err()
                .contains("image id")
        );
        assert!(
            acme.reference(&"0a".repeat(32))
                .unwrap_err()
                .contains("image id")
        );
        assert!(
            acme.reference("app@sha256:0123")
                .unwrap_err()
                .contains("no tag"),
            "a digest alone would be pushed as latest"
        );
        assert_eq!(
            acme.reference("app:2@sha256:0123").unwrap(),
            "registry.example:5000/acme/app:2"
        );
    }

    #[test]
    fn a_pinned_reference_keeps_its_tag_and_replaces_a_digest() {
        assert_eq!(
            pinned("reg.example/app:2", "sha256:aa"),
            "reg.example/app:2@sha256:aa"
        );
        assert_eq!(
            pinned("reg.example/app:2@sha256:bb", "sha256:aa"),
            "reg.example/app:2@sha256:aa"
        );
    }
}
