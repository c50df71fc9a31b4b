//! The stack's secrets: Grafana's admin password, generated at the first
//! start into the file the grafana service bind-mounts, mode 0600, owned by
//! the uid Grafana runs as.

use std::path::Path;

use anyhow::{Context, Result};

use crate::compose::{MountKind, Service};
use crate::context::Stack;

impl Stack<'_> {
    /// Grafana's admin password file, when Grafana runs: the host side of
    /// the grafana service's bind mount named `admin-password`.
    pub fn grafana_password_file(&self) -> Option<(&Service, &Path)> {
        let grafana = self
            .compose
            .service(crate::metrics::GRAFANA)
            .filter(|s| s.replicas > 0)?;
        grafana
            .mounts
            .iter()
            .filter(|mount| mount.kind == MountKind::Bind)
            .map(|mount| Path::new(&mount.source))
            .find(|path| path.file_name().is_some_and(|n| n == "admin-password"))
            .map(|path| (grafana, path))
    }

    /// Grafana's admin password: generated at the first start, stored with
    /// mode 0600 and shown once; there is no default password anywhere.
    /// Being 0600, the file must belong to the uid Grafana runs as (its
    /// `user:`, else its image's `USER`: 472 for the official image), not to
    /// whoever ran cryptus; where cryptus may not hand it over (not root), a
    /// warning says what to do.
    pub async fn ensure_secrets(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Some((grafana, path)) = self.grafana_password_file() else {
            return Ok(());
        };
        if !path.exists() {
            let password = crate::files::random_token(24)?;
            crate::files::write_secret(path, password.as_bytes())?;
            // Shown once: on stderr, never in --json or the logs.
            self.printer.always(format!(
                "grafana's admin password (shown once; stored in {} with mode 0600): {password}",
                path.display()
            ));
        }
        let user = match (&grafana.user, &grafana.image) {
            (Some(user), _) => user.clone(),
            (None, Some(image)) => self.engine.image_user(image).await?.unwrap_or_default(),
            (None, None) => return Ok(()),
        };
        let Some(uid) = numeric_uid(&user) else {
            self.printer.warn(format!(
                "grafana runs as user {user:?}, not a number: cryptus cannot give it its 0600 password file; set `user:` on the grafana service to a uid"
            ));
            return Ok(());
        };
        let owner = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .uid();
        if owner != uid
            && let Err(err) = std::os::unix::fs::chown(path, Some(uid), None)
        {
            self.printer.warn(format!(
                "grafana runs as uid {uid} and cannot read {} (mode 0600, owner {owner}): {err}; run cryptus as root, or set `user: \"{owner}\"` on the grafana service",
                path.display()
            ));
        }
        Ok(())
    }
}

/// The uid in a container's `user` (`472`, `472:0`); root when empty or
/// `root`; `None` for a name only the image's /etc/passwd knows.
fn numeric_uid(user: &str) -> Option<u32> {
    let name = user.split(':').next().unwrap_or_default().trim();
    match name {
        "" | "root" => Some(0),
        number => number.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_user_names_its_uid() {
        assert_eq!(numeric_uid(""), Some(0));
        assert_eq!(numeric_uid("root"), Some(0));
        assert_eq!(numeric_uid("472"), Some(472));
        assert_eq!(numeric_uid("472:0"), Some(472));
        assert_eq!(numeric_uid("grafana"), None);
        assert_eq!(numeric_uid("grafana:472"), None);
    }
}
