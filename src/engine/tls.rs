//! TLS to an engine reached at `tcp://HOST:PORT`, as the docker CLI does
//! it: a directory holds `ca.pem` (the CA that signed the engine's
//! certificate), `cert.pem` and `key.pem` (the client's). The manager's is
//! asked for by `DOCKER_TLS_VERIFY` (non-empty) and found in
//! `DOCKER_CERT_PATH`, else `~/.docker`. Another node's (an entry of
//! `CRYPTUS_SWARM_NODES`) is in `CRYPTUS_SWARM_NODES_CERT_PATH`: its own
//! subdirectory named as the entry names the node when there is one, else
//! that directory; without that setting, the manager's when it has one.
//! The files are read and parsed before connecting, so a missing or
//! malformed one is named in one line, not as a failed handshake.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The setting naming the directory of the other nodes' certificates.
pub const NODES_CERT_VAR: &str = "CRYPTUS_SWARM_NODES_CERT_PATH";

/// The CA, the client's certificate and its key, in a certificate directory.
pub const CA: &str = "ca.pem";
pub const CERT: &str = "cert.pem";
pub const KEY: &str = "key.pem";

/// The manager's certificate directory, when `verify` (DOCKER_TLS_VERIFY)
/// is set and not empty: `cert_path` (DOCKER_CERT_PATH), else `.docker`
/// in `home`.
pub fn manager_dir(
    verify: Option<&str>,
    cert_path: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    verify.filter(|v| !v.is_empty())?;
    match cert_path.filter(|p| !p.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(Path::new(home.unwrap_or("/")).join(".docker")),
    }
}

/// The manager's certificate directory, from the environment.
pub fn manager_dir_from_env() -> Option<PathBuf> {
    let var = |name| std::env::var(name).ok();
    manager_dir(
        var("DOCKER_TLS_VERIFY").as_deref(),
        var("DOCKER_CERT_PATH").as_deref(),
        var("HOME").as_deref(),
    )
}

/// The certificate directory of the node an entry names `node`: its own
/// subdirectory of `nodes_dir` when `has_dir` says there is one, else
/// `nodes_dir`; without `nodes_dir`, `manager` (the manager's). `None`:
/// plain tcp.
pub fn node_dir(
    node: &str,
    nodes_dir: Option<&Path>,
    manager: Option<&Path>,
    has_dir: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    match nodes_dir {
        Some(dir) => {
            let own = dir.join(node);
            Some(if has_dir(&own) {
                own
            } else {
                dir.to_path_buf()
            })
        }
        None => manager.map(Path::to_path_buf),
    }
}

/// Whether `dir` holds a CA, a certificate and one key that parse; why
/// not, in one line naming the file.
pub fn check(dir: &Path) -> Result<(), String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|err| format!("cannot read {}: {err}", path.display()))
    };
    let certs = |name: &str| -> Result<(), String> {
        let bytes = read(name)?;
        let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        match parsed {
            Ok(certs) if !certs.is_empty() => Ok(()),
            Ok(_) => Err(format!(
                "{} holds no PEM certificate",
                dir.join(name).display()
            )),
            Err(err) => Err(format!("{} is not PEM: {err}", dir.join(name).display())),
        }
    };
    certs(CA)?;
    certs(CERT)?;
    let key = read(KEY)?;
    PrivateKeyDer::from_pem_slice(&key)
        .map(drop)
        .map_err(|err| format!("{} holds no private key: {err}", dir.join(KEY).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managers_directory_follows_the_docker_cli() {
        assert_eq!(manager_dir(None, Some("/certs"), Some("/root")), None);
        assert_eq!(manager_dir(Some(""), Some("/certs"), Some("/root")), None);
        assert_eq!(
            manager_dir(Some("1"), Some("/certs"), Some("/root")),
            Some(PathBuf::from("/certs"))
        );
        assert_eq!(
            manager_dir(Some("1"), None, Some("/root")),
            Some(PathBuf::from("/root/.docker"))
        );
        assert_eq!(
            manager_dir(Some("1"), Some(""), Some("/home/op")),
            Some(PathBuf::from("/home/op/.docker"))
        );
    }

    #[test]
    fn a_node_has_its_own_directory_or_the_shared_one() {
        let nodes = Path::new("/certs/nodes");
        let manager = Path::new("/certs/manager");
        let only_n2 = |p: &Path| p == Path::new("/certs/nodes/n2");
        assert_eq!(
            node_dir("n2", Some(nodes), Some(manager), only_n2),
            Some(PathBuf::from("/certs/nodes/n2"))
        );
        assert_eq!(
            node_dir("n3", Some(nodes), Some(manager), only_n2),
            Some(PathBuf::from("/certs/nodes"))
        );
        assert_eq!(
            node_dir("n3", None, Some(manager), only_n2),
            Some(PathBuf::from("/certs/manager"))
        );
        assert_eq!(node_dir("n3", None, None, only_n2), None);
    }

    #[test]
    fn missing_or_malformed_files_are_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let why = check(dir.path()).expect_err("no files");
        assert!(why.contains("cannot read") && why.contains(CA), "{why}");
        // Not a certificate: a PEM block of another kind.
        let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join(CA), "not pem at all\n").expect("writing");
        let why = check(dir.path()).expect_err("no certificate");
        assert!(why.contains("holds no PEM certificate"), "{why}");
        std::fs::write(dir.path().join(CA), pem).expect("writing");
        std::fs::write(dir.path().join(CERT), pem).expect("writing");
        std::fs::write(dir.path().join(KEY), pem).expect("writing");
        let why = check(dir.path()).expect_err("no key");
        assert!(why.contains("key.pem holds no private key"), "{why}");
        let key = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
        std::fs::write(dir.path().join(KEY), key).expect("writing");
        assert_eq!(check(dir.path()), Ok(()));
        assert!(!why.contains('\n'), "one line: {why}");
    }
}
