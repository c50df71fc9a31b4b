//! An sshd of the test's own on 127.0.0.1, whose sessions run the docker
//! CLI against one engine (a lab node's socket, by `SetEnv DOCKER_HOST`):
//! what an `ssh://` engine URL reaches, as on a real node where the docker
//! CLI talks to the local engine. The client side is the system's `ssh`,
//! found first in the `PATH` [`SshGate::path`] gives: a wrapper that adds
//! the gate's key and its own known-hosts file, so nothing of the user's
//! `~/.ssh` is read or written. Dropping the gate kills the ssh
//! connections made with its key, then sshd, and removes its directory.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait::poll;

pub struct SshGate {
    dir: tempfile::TempDir,
    sshd: Child,
    port: u16,
}

impl SshGate {
    /// Starts sshd on a free port of 127.0.0.1; its sessions' docker
    /// talks to the engine at `docker_host` (`unix://...`). Needs root,
    /// openssh-server and openssh-client, as `.ci/run` installs.
    pub fn start(docker_host: &str) -> SshGate {
        let dir = tempfile::Builder::new()
            .prefix("ctssh")
            .tempdir()
            .expect("a directory for sshd");
        let path = dir.path();
        for key in ["host_key", "client_key"] {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path.join(key))
                .status()
                .expect("running ssh-keygen");
            assert!(made.success(), "ssh-keygen made no {key}");
        }
        std::fs::copy(path.join("client_key.pub"), path.join("authorized_keys"))
            .expect("authorizing the client's key");
        let port = super::free_port();
        std::fs::write(
            path.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                 PidFile {dir}/sshd.pid\nAuthorizedKeysFile {dir}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 SetEnv DOCKER_HOST={docker_host}\n",
                dir = path.display()
            ),
        )
        .expect("writing sshd_config");
        let wrapper = path.join("bin/ssh");
        std::fs::create_dir_all(path.join("bin")).expect("a directory for the wrapper");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile={dir}/known_hosts \
                 -o StrictHostKeyChecking=no -o IdentitiesOnly=yes -o LogLevel=ERROR \
                 -i {dir}/client_key \"$@\"\n",
                dir = path.display()
            ),
        )
        .expect("writing the ssh wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .expect("making the wrapper runnable");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("making /run/sshd");
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(path.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path.join("sshd.log")).expect("sshd's log"))
            .process_group(0)
            .spawn()
            .expect("starting sshd (apt-get install openssh-server)");
        let gate = SshGate { dir, sshd, port };
        let listening = poll(Duration::from_secs(10), Duration::from_millis(50), || {
            TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|err| err.to_string())
        });
        assert!(
            listening.is_ok(),
            "sshd did not listen: {listening:?}; {}",
            std::fs::read_to_string(gate.dir.path().join("sshd.log")).unwrap_or_default()
        );
        gate
    }

    /// The engine URL that reaches the gate's engine.
    pub fn url(&self) -> String {
        format!("ssh://root@127.0.0.1:{}", self.port)
    }

    /// A `PATH` whose `ssh` is the gate's wrapper.
    pub fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }
}

impl Drop for SshGate {
    fn drop(&mut self) {
        // The ssh processes (masters included) made with the gate's key.
        let key: &Path = &self.key();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(key.as_os_str())
            .status();
        // sshd and what it started in its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.sshd.id())])
            .status();
        let _ = self.sshd.wait();
    }
}
