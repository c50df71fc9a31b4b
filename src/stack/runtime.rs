//! How a service's container runs beyond its image, command, ports and
//! volumes: the runtime options and limits its compose keys set, and the
//! secrets and configs it is granted as read-only bind mounts (of the
//! file itself, or of a file cryptus writes for a value the compose file
//! holds). Pure: the files are written before the container is created
//! (`host_files`).

use std::path::PathBuf;

use crate::compose::{Compose, Grant, Kind, Service, Source};
use crate::engine::{DeviceSpec, HostFile, LogSpec, MountSpec, RuntimeSpec, UlimitSpec};

/// The default mode of a secret cryptus writes: its owner (the service's
/// user) reads it, no one else.
pub const SECRET_MODE: u32 = 0o600;
/// The default mode of a config it writes: world-readable, as in Compose.
pub const CONFIG_MODE: u32 = 0o444;

pub fn runtime(service: &Service) -> RuntimeSpec {
    let options = &service.options;
    RuntimeSpec {
        log: options.logging.as_ref().map(|l| LogSpec {
            driver: l.driver.clone(),
            options: l.options.clone(),
        }),
        init: options.init,
        extra_hosts: options.extra_hosts.clone(),
        cap_add: options.cap_add.clone(),
        privileged: options.privileged,
        working_dir: options.working_dir.clone(),
        hostname: options.hostname.clone(),
        domainname: options.domainname.clone(),
        dns: options.dns.clone(),
        dns_search: options.dns_search.clone(),
        expose: options.expose.clone(),
        ulimits: options
            .ulimits
            .iter()
            .map(|(name, u)| UlimitSpec {
                name: name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect(),
        sysctls: options.sysctls.clone(),
        shm_size: options.shm_size,
        group_add: options.group_add.clone(),
        tty: options.tty,
        stdin_open: options.stdin_open,
        devices: options
            .devices
            .iter()
            .map(|d| DeviceSpec {
                host: d.source.clone(),
                container: d.target.clone(),
                permissions: d.permissions.clone(),
            })
            .collect(),
        memory_swap: service.limits.memory_swap,
        memory_reservation: service.limits.memory_reservation,
        cpu_shares: service.limits.cpu_shares,
    }
}

/// Where cryptus keeps the files it writes for a project's containers:
/// beside the compose file, in a directory only its owner enters.
pub fn files_dir(project: &str, compose: &Compose) -> PathBuf {
    compose.working_dir.join(".cryptus").join(project)
}

/// The read-only mounts of the secrets and configs `service` is granted,
/// and the files to write for those whose value the compose file holds.
pub fn granted(
    project: &str,
    compose: &Compose,
    service: &Service,
) -> (Vec<MountSpec>, Vec<HostFile>) {
    let dir = files_dir(project, compose).join(&service.name);
    let mut mounts = Vec::new();
    let mut files: Vec<HostFile> = Vec::new();
    for (kind, grants, declared) in [
        (Kind::Secret, &service.secrets, &compose.secrets),
        (Kind::Config, &service.configs, &compose.configs),
    ] {
        for grant in grants {
            // `compose::load` checked that every grant names a declared one.
            let Some(source) = declared.get(&grant.name) else {
                continue;
            };
            let path = match (source, source.value()) {
                (Source::File(path), _) => path.clone(),
                (_, Some(value)) => {
                    let path = unique(&dir.join(kind.key()), &grant.name, &files);
                    files.push(host_file(kind, grant, &path, value));
                    path
                }
                (_, None) => continue,
            };
            mounts.push(MountSpec::Bind {
                source: path,
                target: grant.target.clone(),
                read_only: true,
            });
        }
    }
    (mounts, files)
}

/// `dir/name`, or `dir/name.2` and on when the service is granted the same
/// name twice (at two targets).
fn unique(dir: &std::path::Path, name: &str, files: &[HostFile]) -> String {
    let mut candidate = dir.join(name).to_string_lossy().into_owned();
    let mut n = 1;
    while files.iter().any(|f| f.path == candidate) {
        n += 1;
        candidate = dir
            .join(format!("{name}.{n}"))
            .to_string_lossy()
            .into_owned();
    }
    candidate
}

fn host_file(kind: Kind, grant: &Grant, path: &str, value: crate::compose::Sensitive) -> HostFile {
    let default_mode = match kind {
        Kind::Secret => SECRET_MODE,
        Kind::Config => CONFIG_MODE,
    };
    HostFile {
        path: path.to_owned(),
        content: value,
        mode: grant.mode.unwrap_or(default_mode),
        uid: grant.uid,
        gid: grant.gid,
        default_mode: grant.mode.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::Vars;
    use crate::stack::{CONFIG_HASH_LABEL, plan_container};

    const SECRET: &str = "s3cr3t-value";

    fn compose(dir: &std::path::Path, extra: &str, password: &str) -> Compose {
        std::fs::write(dir.join("cert.pem"), "certificate").unwrap();
        let text = format!(
            "services:\n  web:\n    image: x\n    user: \"33:33\"\n{extra}secrets:\n  db: {{environment: DB_PASSWORD}}\n  cert: {{file: ./cert.pem}}\nconfigs:\n  app: {{content: hello}}\n"
        );
        let path = dir.join("compose.yml");
        std::fs::write(&path, text).unwrap();
        let vars = Vars::new([("DB_PASSWORD".to_owned(), password.to_owned())].into());
        crate::compose::load(&[path], &vars).unwrap()
    }

    #[test]
    fn grants_become_read_only_mounts_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let extra = "    secrets: [db, cert, {source: db, target: /etc/pw, mode: \"0440\", uid: \"7\"}]\n    configs: [app]\n";
        let compose = compose(dir.path(), extra, SECRET);
        let web = &compose.services["web"];
        let plan = plan_container("demo", &compose, web, 1, None).unwrap();
        let binds: Vec<(&str, &str)> = plan
            .mounts
            .iter()
            .map(|m| match m {
                MountSpec::Bind {
                    source,
                    target,
                    read_only: true,
                } => (source.as_str(), target.as_str()),
                other => panic!("{other:?} is not a read-only bind"),
            })
            .collect();
        let files = files_dir("demo", &compose).join("web");
        let path = |p: &str| files.join(p).to_string_lossy().into_owned();
        let cert = dir.path().join("cert.pem").to_string_lossy().into_owned();
        assert_eq!(
            binds,
            [
                (path("secrets/db").as_str(), "/run/secrets/db"),
                (cert.as_str(), "/run/secrets/cert"),
                (path("secrets/db.2").as_str(), "/etc/pw"),
                (path("configs/app").as_str(), "/app"),
            ]
        );
        let modes: Vec<(u32, Option<u32>, bool)> = plan
            .files
            .iter()
            .map(|f| (f.mode, f.uid, f.default_mode))
            .collect();
        assert_eq!(
            modes,
            [
                (SECRET_MODE, None, true),
                (0o440, Some(7), false),
                (CONFIG_MODE, None, true)
            ]
        );
        assert_eq!(plan.files[0].content.expose(), SECRET);
        assert!(!format!("{plan:?}").contains(SECRET));
    }

    /// A new value recreates the containers: the ones running keep the file
    /// they mounted.
    #[test]
    fn a_new_secret_value_changes_the_config_hash() {
        let dir = tempfile::tempdir().unwrap();
        let extra = "    secrets: [db]\n";
        let hash = |password: &str| {
            let compose = compose(dir.path(), extra, password);
            let plan = plan_container("demo", &compose, &compose.services["web"], 1, None).unwrap();
            plan.label(CONFIG_HASH_LABEL).unwrap().to_owned()
        };
        assert_eq!(hash("one"), hash("one"));
        assert_ne!(hash("one"), hash("two"));
    }

    #[test]
    fn options_and_limits_become_the_runtime_spec() {
        let dir = tempfile::tempdir().unwrap();
        let extra = concat!(
            "    init: true\n    cap_add: [NET_ADMIN]\n    working_dir: /srv\n",
            "    hostname: web\n    ulimits: {nofile: {soft: 1024, hard: 2048}}\n",
            "    devices: [/dev/null]\n    logging: {driver: local}\n",
            "    mem_limit: 64m\n    memswap_limit: 128m\n    mem_reservation: 32m\n    cpu_shares: 256\n",
            "    privileged: true\n    domainname: example.org\n    extra_hosts: {db: 10.0.0.5}\n",
            "    dns: 1.1.1.1\n    dns_search: example.org\n    expose: [\"7000/udp\"]\n",
            "    sysctls: [net.core.somaxconn=1024]\n    shm_size: 1m\n    group_add: [audio]\n",
            "    tty: true\n    stdin_open: true\n",
        );
        let compose = compose(dir.path(), extra, SECRET);
        let plan = plan_container("demo", &compose, &compose.services["web"], 1, None).unwrap();
        let runtime = &plan.runtime;
        assert_eq!(runtime.init, Some(true));
        assert_eq!(runtime.cap_add, ["NET_ADMIN"]);
        assert_eq!(runtime.working_dir.as_deref(), Some("/srv"));
        assert_eq!(runtime.hostname.as_deref(), Some("web"));
        assert_eq!(
            runtime.ulimits,
            [UlimitSpec {
                name: "nofile".to_owned(),
                soft: 1024,
                hard: 2048
            }]
        );
        assert_eq!(runtime.devices[0].container, "/dev/null");
        assert_eq!(
            runtime.log.as_ref().unwrap().driver.as_deref(),
            Some("local")
        );
        assert_eq!(plan.memory, Some(64 << 20));
        assert_eq!(runtime.memory_swap, Some(128 << 20));
        assert_eq!(runtime.memory_reservation, Some(32 << 20));
        assert_eq!(runtime.cpu_shares, Some(256));
        assert!(runtime.privileged && runtime.tty && runtime.stdin_open);
        assert_eq!(runtime.domainname.as_deref(), Some("example.org"));
        assert_eq!(runtime.extra_hosts, ["db:10.0.0.5"]);
        assert_eq!(runtime.dns, ["1.1.1.1"]);
        assert_eq!(runtime.dns_search, ["example.org"]);
        assert_eq!(runtime.expose, ["7000/udp"]);
        assert_eq!(runtime.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(runtime.shm_size, Some(1 << 20));
        assert_eq!(runtime.group_add, ["audio"]);
        assert!(plan.files.is_empty());
    }
}
