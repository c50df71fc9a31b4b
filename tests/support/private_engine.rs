//! A Docker engine of a test's own: a second dockerd with its own socket,
//! data and exec roots under /tmp/ct-engine-*, so a test can stop and restart
//! an engine without touching the one every other test (and the operator)
//! uses. It carries copies of the images the test names, and on drop its
//! containers and networks are removed, the daemon stopped and its files
//! deleted, pass or fail. [`PrivateEngine::start_tls`] also listens on
//! 127.0.0.1 over TLS (`--tlsverify`), with certificates openssl makes for
//! it: a client's signed by its CA, and one signed by another CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;

use super::wait::{eventually, poll};

/// How long dockerd may take to answer after starting, or to exit after
/// SIGTERM (it stops every container first, 10 s each at most).
/// The addresses this engine's networks take, apart from the shared
/// engine's default pools (172.17.0.0/16 and up, 192.168.0.0/16). A compose
/// network sets its range with `ipam:` ([`PrivateEngine::SUBNET`]); the
/// engine is not given a default address pool, because a dockerd with one
/// deletes the host's docker0 when it restarts.
const POOL: &str = "10.213.0.0/16";

/// The address of its default bridge, inside its pool, which its networks
/// then avoid.
const BRIDGE_ADDRESS: &str = "10.213.255.1/24";

const DAEMON_DEADLINE: Duration = Duration::from_secs(60);

pub struct PrivateEngine {
    dir: PathBuf,
    socket: PathBuf,
    /// Its default bridge, made for it: a dockerd told `--bridge none`
    /// deletes the host's docker0, which the shared engine needs.
    bridge: String,
    daemon: Option<Child>,
    /// The 127.0.0.1 port it listens on over TLS, when it does.
    tls_port: Option<u16>,
}

/// Makes a CA, the engine's certificate for 127.0.0.1, a client's in
/// `client/`, and in `wrong-ca/` a client's of another CA (whose `ca.pem`
/// did not sign the engine's): the files `docker --tlsverify` reads.
const CERTS_SCRIPT: &str = r#"set -e
cd "$1"
mkdir -p tls client wrong-ca
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2"     -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign     -keyout "$1/ca-key.pem" -out "$1/ca.pem" 2>/dev/null
}
signed() { # dir name ca-dir extensions
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1/$2-key.pem" -out "$1/$2.csr" 2>/dev/null
  printf '%s
' "$4" > "$1/$2.ext"
  openssl x509 -req -in "$1/$2.csr" -CA "$3/ca.pem" -CAkey "$3/ca-key.pem" -CAcreateserial     -days 2 -extfile "$1/$2.ext" -out "$1/$2-cert.pem" 2>/dev/null
}
ca tls ct-engine-ca
ca wrong-ca ct-other-ca
signed tls server tls "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"
for dir in client wrong-ca; do
  signed "$dir" client "$([ "$dir" = client ] && echo tls || echo wrong-ca)" "extendedKeyUsage=clientAuth"
  mv "$dir/client-cert.pem" "$dir/cert.pem"; mv "$dir/client-key.pem" "$dir/key.pem"
done
cp tls/ca.pem client/ca.pem
"#;

impl PrivateEngine {
    /// A subnet for a project network on this engine, inside its pool.
    pub const SUBNET: &str = "10.213.1.0/24";

    /// Starts a private dockerd and loads `images` into it from the shared
    /// engine. Needs root and `dockerd` on PATH, as an engine does.
    pub fn start(images: &[String]) -> PrivateEngine {
        PrivateEngine::started(images, false)
    }

    /// [`PrivateEngine::start`], also listening on 127.0.0.1 over TLS
    /// ([`PrivateEngine::tls_host`]), client certificates required.
    pub fn start_tls(images: &[String]) -> PrivateEngine {
        PrivateEngine::started(images, true)
    }

    fn started(images: &[String], tls: bool) -> PrivateEngine {
        let dir = PathBuf::from(format!(
            "/tmp/ct-engine-{}-{}",
            std::process::id(),
            super::COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("making the private engine's directory");
        // Its own settings, not the host's daemon.json (which may name a data
        // root or a storage driver meant for the shared engine).
        std::fs::write(dir.join("daemon.json"), "{}").expect("writing daemon.json");
        let bridge = format!(
            "cteng{}",
            dir.display()
                .to_string()
                .trim_start_matches("/tmp/ct-engine-")
        )
        .replace('-', "x");
        let mut engine = PrivateEngine {
            socket: dir.join("docker.sock"),
            dir,
            bridge,
            daemon: None,
            tls_port: None,
        };
        if tls {
            engine.make_certs();
        }
        engine.make_bridge();
        engine.firewall("-I");
        engine.run_daemon();
        let names: Vec<String> = images.to_vec();
        let target = engine.host();
        super::on_engine(move |shared| async move {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let tar = shared.export_images(&names);
            let private = super::engine::connect(Some(&target)).await;
            let mut load = private.import_image_stream(
                bollard::query_parameters::ImportImageOptions::default(),
                tar,
                None,
            );
            while let Some(step) = load.next().await {
                let step = step.expect("loading images into the private engine");
                if let Some(error) = step.error_detail {
                    panic!("loading images into the private engine: {error:?}");
                }
            }
        });
        engine
    }

    /// DOCKER_HOST for this engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// DOCKER_HOST for this engine over TLS ([`PrivateEngine::start_tls`]).
    pub fn tls_host(&self) -> String {
        let port = self.tls_port.expect("an engine started with start_tls");
        format!("tcp://127.0.0.1:{port}")
    }

    /// A client's certificate directory (`ca.pem`, `cert.pem`, `key.pem`):
    /// the engine's CA when `right`, another CA when not.
    pub fn client_certs(&self, right: bool) -> PathBuf {
        self.dir.join(if right { "client" } else { "wrong-ca" })
    }

    fn make_certs(&mut self) {
        let status = Command::new("sh")
            .args(["-c", CERTS_SCRIPT, "sh"])
            .arg(&self.dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "making TLS certificates in {} (needs openssl)",
            self.dir.display()
        );
        // A free port now; dockerd binds it in a moment.
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("finding a free port for TLS");
        self.tls_port = Some(listener.local_addr().expect("a bound address").port());
    }

    /// Stops dockerd the way `systemctl restart docker` does (SIGTERM: it
    /// stops every container), then starts it again on the same state.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.run_daemon();
    }

    /// The shared engine sets the host's FORWARD policy to DROP and accepts
    /// only its own bridges; with `--iptables=false` this engine adds no rule,
    /// so this lets its containers reach each other (its address pool only).
    /// `-I` adds the rule, `-D` removes it.
    fn firewall(&self, action: &str) {
        let comment = self.dir.display().to_string();
        let status = Command::new("iptables")
            .args([action, "FORWARD", "-s", POOL, "-d", POOL])
            .args(["-m", "comment", "--comment", &comment, "-j", "ACCEPT"])
            .status();
        if action == "-I" {
            assert!(
                status.is_ok_and(|s| s.success()),
                "adding a FORWARD rule for the private engine (needs root and iptables)"
            );
        }
    }

    fn make_bridge(&self) {
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            ip(&["link", "add", &self.bridge, "type", "bridge"])
                && ip(&["addr", "add", BRIDGE_ADDRESS, "dev", &self.bridge])
                && ip(&["link", "set", &self.bridge, "up"]),
            "making bridge {} for the private engine (needs root and iproute2)",
            self.bridge
        );
    }

    fn run_daemon(&mut self) {
        let arg = |name: &str| self.dir.join(name).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("opening the private engine's log");
        let mut daemon = Command::new("dockerd");
        if self.tls_port.is_some() {
            daemon
                .args(["--host", &self.tls_host(), "--tlsverify"])
                .args(["--tlscacert", &arg("tls/ca.pem")])
                .args(["--tlscert", &arg("tls/server-cert.pem")])
                .args(["--tlskey", &arg("tls/server-key.pem")]);
        }
        let daemon = daemon
            .args(["--config-file", &arg("daemon.json")])
            .args(["--host", &self.host()])
            .args(["--data-root", &arg("data")])
            .args(["--exec-root", &arg("exec")])
            .args(["--pidfile", &arg("dockerd.pid")])
            // Its own default bridge and no iptables rules: the shared engine
            // owns those. Published ports still work through docker-proxy.
            .args([
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip-masq=false",
            ])
            // Should it share a system containerd with the shared engine,
            // its containers stay in namespaces of their own.
            .args(["--containerd-namespace", "ct-engine"])
            .args(["--containerd-plugins-namespace", "ct-engine-plugins"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd (a private engine needs root and dockerd on PATH)");
        self.daemon = Some(daemon);
        let host = self.host();
        let log = self.dir.join("dockerd.log");
        eventually(
            "the private engine answers",
            DAEMON_DEADLINE,
            Duration::from_millis(100),
            || {
                if !self.socket.exists() {
                    return Err(format!("no socket yet; see {}", log.display()));
                }
                super::on_engine_at(Some(host.clone()), |docker| async move {
                    docker.ping().await.map(drop).map_err(|err| err.to_string())
                })
                .map_err(|err| format!("ping: {err}; see {}", log.display()))
            },
        );
    }

    fn stop_daemon(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status();
        // Not `wait::exited`, which panics on an error: this runs in Drop,
        // perhaps while a failed test unwinds, where a panic would abort.
        let ended = poll(
            DAEMON_DEADLINE,
            Duration::from_millis(50),
            || match daemon.try_wait() {
                Ok(Some(_)) => Ok(()),
                _ => Err("running".to_owned()),
            },
        );
        if ended.is_err() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            // Everything on this engine is the test's: remove it all, so the
            // daemon leaves no bridge or mount behind.
            super::remove_at(Some(self.host()), None);
        }
        self.stop_daemon();
        self.firewall("-D");
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unmounts whatever a killed daemon left mounted under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}
