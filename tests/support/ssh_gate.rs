//! sshds of the test's own on 127.0.0.1, one per engine, whose sessions
//! run the docker CLI against that engine (a lab node's socket, by
//! `SetEnv DOCKER_HOST`): what an `ssh://` engine URL reaches, as on a
//! real node where the docker CLI talks to the local engine. The client
//! side is the system's `ssh`, found first in the `PATH`
//! [`SshGates::path`] gives: a wrapper that adds the gates' key, their own
//! known-hosts file and an ssh config naming each gate by a host alias
//! (`ctgate1`: bollard's ssh transport cannot pass a port, so an operator
//! names one the same way), so nothing of the user's `~/.ssh` is read or
//! written. Dropping the gates kills the ssh connections made with their
//! key, then each sshd, and removes their directory.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait::poll;

pub struct SshGates {
    dir: tempfile::TempDir,
    sshds: Vec<Child>,
}

impl SshGates {
    /// Starts one sshd on a free port of 127.0.0.1 per engine of
    /// `docker_hosts` (`unix://...`): the sessions of the Nth (from 1)
    /// run docker against the Nth engine. Needs root, openssh-server and
    /// openssh-client, as `.ci/run` installs.
    pub fn start(docker_hosts: &[&str]) -> SshGates {
        let dir = tempfile::Builder::new()
            .prefix("ctssh")
            .tempdir()
            .expect("a directory for sshd");
        let path = dir.path().to_owned();
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
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("making /run/sshd");
        let mut gates = SshGates {
            dir,
            sshds: Vec::new(),
        };
        let mut client_config = String::new();
        for (n, docker_host) in docker_hosts.iter().enumerate() {
            let port = super::free_port();
            let config = path.join(format!("sshd_config.{}", n + 1));
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                     PidFile {dir}/sshd.{n}.pid\nAuthorizedKeysFile {dir}/authorized_keys\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                     SetEnv DOCKER_HOST={docker_host}\n",
                    dir = path.display()
                ),
            )
            .expect("writing sshd_config");
            let log = std::fs::File::create(path.join(format!("sshd.{}.log", n + 1)))
                .expect("sshd's log");
            let sshd = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .expect("starting sshd (apt-get install openssh-server)");
            gates.sshds.push(sshd);
            let listening = poll(Duration::from_secs(10), Duration::from_millis(50), || {
                TcpStream::connect(("127.0.0.1", port))
                    .map(|_| ())
                    .map_err(|err| err.to_string())
            });
            assert!(listening.is_ok(), "sshd did not listen: {listening:?}");
            client_config.push_str(&format!(
                "Host ctgate{}\n  HostName 127.0.0.1\n  Port {port}\n",
                n + 1
            ));
        }
        // ctgate0: nothing listens there.
        client_config.push_str(&format!(
            "Host ctgate0\n  HostName 127.0.0.1\n  Port {}\n",
            super::free_port()
        ));
        std::fs::write(path.join("ssh_config"), client_config).expect("writing ssh_config");
        let wrapper = path.join("bin/ssh");
        std::fs::create_dir_all(path.join("bin")).expect("a directory for the wrapper");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F {dir}/ssh_config \
                 -o UserKnownHostsFile={dir}/known_hosts -o StrictHostKeyChecking=no \
                 -o IdentitiesOnly=yes -o LogLevel=ERROR -i {dir}/client_key \"$@\"\n",
                dir = path.display()
            ),
        )
        .expect("writing the ssh wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .expect("making the wrapper runnable");
        gates
    }

    /// The engine URL that reaches the Nth (from 1) gate's engine; 0: one
    /// of 127.0.0.1 where no sshd listens.
    pub fn url(&self, n: usize) -> String {
        format!("ssh://root@ctgate{n}")
    }

    /// Where the ssh masters' control sockets go (`XDG_STATE_HOME`): the
    /// gates' own directory, not the user's home.
    pub fn state_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// A `PATH` whose `ssh` is the gates' wrapper.
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

impl Drop for SshGates {
    fn drop(&mut self) {
        // The ssh processes (masters included) made with the gates' key.
        let key: &Path = &self.key();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(key.as_os_str())
            .status();
        // Each sshd and what it started in its process group.
        for sshd in &mut self.sshds {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", sshd.id())])
                .status();
            let _ = sshd.wait();
        }
    }
}
