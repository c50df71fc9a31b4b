//! Test support: every end-to-end test gets its own project (a unique name,
//! its own loopback port, its own copy of the project files) on the real
//! engine, and everything carrying that project's label is removed when the
//! test ends, pass or fail.

#![allow(dead_code)]

pub mod private_engine;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_cryptus");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The images the tests run: the offline ones by default.
pub fn nginx_image() -> String {
    std::env::var("CRYPTUS_TEST_NGINX_IMAGE").unwrap_or_else(|_| "cryptus/nginx:offline".into())
}

pub fn redis_image() -> String {
    std::env::var("CRYPTUS_TEST_REDIS_IMAGE").unwrap_or_else(|_| "cryptus/redis:offline".into())
}

pub fn app_image() -> String {
    std::env::var("CRYPTUS_TEST_APP_IMAGE").unwrap_or_else(|_| "cryptus:latest".into())
}

/// A free port on loopback, for the load balancer.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("reading the port").port()
}

/// Runs the cryptus binary with a clean cryptus environment.
pub fn cryptus(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("running cryptus")
}

/// The cryptus binary with a clean cryptus environment.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command.args(args);
    for name in [
        "CRYPTUS_PROJECT",
        "NGINX_IMAGE",
        "REDIS_IMAGE",
        "CRYPTUS_IMAGE",
        "CRYPTUS_BIND",
        "CRYPTUS_HTTP_PORT",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts an exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(output),
        stderr(output)
    );
}

/// One isolated project on the real engine.
pub struct TestProject {
    pub name: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestProject {
    /// A project named after the test, with the repository's files copied in.
    pub fn new(hint: &str) -> TestProject {
        let name = format!(
            "ct-{hint}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().expect("making a project directory");
        for sub in ["compose", "nginx", "monitoring"] {
            copy_dir(&Path::new(REPO).join(sub), &dir.path().join(sub));
        }
        let port = free_port();
        let env = vec![
            ("NGINX_IMAGE".to_owned(), nginx_image()),
            ("REDIS_IMAGE".to_owned(), redis_image()),
            ("CRYPTUS_IMAGE".to_owned(), app_image()),
            ("CRYPTUS_BIND".to_owned(), "127.0.0.1".to_owned()),
            ("CRYPTUS_HTTP_PORT".to_owned(), port.to_string()),
            ("CRYPTUS_HTTPS_PORT".to_owned(), free_port().to_string()),
        ];
        TestProject {
            name,
            port,
            dir,
            env,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A variable of the environment cryptus runs with here.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    /// The engine this project runs on when it is not the shared one.
    fn docker_host(&self) -> Option<String> {
        self.env_value("DOCKER_HOST").map(str::to_owned)
    }

    /// Runs engine calls against the engine this project runs on.
    pub fn on_engine<F, Fut, T>(&self, work: F) -> T
    where
        F: FnOnce(Docker) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        on_engine_at(self.docker_host(), work)
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The command that runs cryptus against this project.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let dir = self.path().to_string_lossy().into_owned();
        let mut full = vec!["--project-dir", dir.as_str(), "-p", self.name.as_str()];
        full.extend_from_slice(args);
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        command(&full, &env)
    }

    /// Runs cryptus against this project.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running cryptus")
    }

    /// Runs cryptus without blocking the async runtime (load keeps flowing).
    pub async fn run_async(&self, args: &[&str]) -> Output {
        tokio::process::Command::from(self.command(args))
            .output()
            .await
            .expect("running cryptus")
    }

    /// `deploy --image <the app image> --version VERSION --watch 0s`, then
    /// `extra`: the deploy most tests make.
    pub fn deploy_command(&self, version: &str, extra: &[&str]) -> std::process::Command {
        let image = app_image();
        let mut args = vec![
            "deploy",
            "--image",
            &image,
            "--version",
            version,
            "--watch",
            "0s",
        ];
        args.extend_from_slice(extra);
        self.command(&args)
    }

    /// Runs [`TestProject::deploy_command`].
    pub fn deploy(&self, version: &str, extra: &[&str]) -> Output {
        self.deploy_command(version, extra)
            .output()
            .expect("running cryptus")
    }

    /// [`TestProject::deploy`], requiring exit 0.
    #[track_caller]
    pub fn deploy_ok(&self, version: &str, extra: &[&str]) -> Output {
        let output = self.deploy(version, extra);
        assert_code(&output, 0);
        output
    }

    /// [`TestProject::deploy`] without blocking the async runtime.
    pub async fn deploy_async(&self, version: &str, extra: &[&str]) -> Output {
        tokio::process::Command::from(self.deploy_command(version, extra))
            .output()
            .await
            .expect("running cryptus")
    }

    /// Edits the project's copy of the compose file.
    pub fn edit_compose(&self, edit: impl FnOnce(String) -> String) {
        let path = self.path().join("compose/docker-compose.zero-downtime.yml");
        let text = std::fs::read_to_string(&path).expect("reading the compose file");
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit changed nothing");
        std::fs::write(&path, edited).expect("writing the compose file");
    }

    /// Adds an environment variable to one color of the compose file.
    pub fn set_service_env(&self, color: &str, key: &str, value: &str) {
        let anchor = format!("      INSTANCE_COLOR: {color}\n");
        self.edit_compose(|text| {
            text.replacen(&anchor, &format!("{anchor}      {key}: \"{value}\"\n"), 1)
        });
    }

    pub fn lb_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The color and version answering through the load balancer.
    #[track_caller]
    pub fn serving(&self) -> (String, String) {
        let health = get_json(&self.url("/api/health"), None);
        (
            health["instance"].as_str().unwrap_or_default().to_owned(),
            health["version"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Runs cryptus and requires exit 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert_code(&output, 0);
        output
    }

    /// `status --json`, parsed.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        let output = self.ok(&["status", "--json"]);
        serde_json::from_slice(&output.stdout).expect("status --json is JSON")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The engine's view of this project's containers: name to (id, running).
    pub fn containers(&self) -> HashMap<String, (String, bool)> {
        let filter = self.label_filter();
        self.on_engine(move |docker| async move {
            let filters = HashMap::from([("label", vec![filter.as_str()])]);
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            docker
                .list_containers(Some(options))
                .await
                .expect("listing containers")
                .into_iter()
                .map(|c| {
                    let name = c
                        .names
                        .unwrap_or_default()
                        .first()
                        .cloned()
                        .unwrap_or_default();
                    let running = c.state.map(|s| s.to_string()) == Some("running".into());
                    (
                        name.trim_start_matches('/').to_owned(),
                        (c.id.unwrap_or_default(), running),
                    )
                })
                .collect()
        })
    }

    /// The names of the project's networks on its engine.
    pub fn networks(&self) -> Vec<String> {
        let filter = self.label_filter();
        self.on_engine(move |docker| async move {
            let filters = HashMap::from([("label", vec![filter.as_str()])]);
            let options = ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build();
            let networks = docker.list_networks(Some(options)).await;
            networks
                .expect("listing networks")
                .into_iter()
                .filter_map(|n| n.name)
                .collect()
        })
    }

    /// The names of the project's volumes on its engine.
    pub fn volumes(&self) -> Vec<String> {
        let filter = self.label_filter();
        self.on_engine(move |docker| async move {
            let filters = HashMap::from([("label", vec![filter.as_str()])]);
            let options = ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build();
            let volumes = docker.list_volumes(Some(options)).await;
            let volumes = volumes
                .expect("listing volumes")
                .volumes
                .unwrap_or_default();
            volumes.into_iter().map(|v| v.name).collect()
        })
    }

    /// The label every object of the project carries, as a filter.
    fn label_filter(&self) -> String {
        format!("com.docker.compose.project={}", self.name)
    }

    /// A self-signed certificate and key in the project's nginx/ssl/, so
    /// nginx serves HTTPS.
    pub fn make_certificate(&self) {
        let ssl = self.path().join("nginx/ssl");
        std::fs::create_dir_all(&ssl).unwrap();
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .arg("-keyout")
            .arg(ssl.join("key.pem"))
            .arg("-out")
            .arg(ssl.join("cert.pem"))
            .output()
            .expect("openssl makes a self-signed certificate");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }

    /// Writes 10,000 keys k:1..k:10000 with values v:1..v:10000 into redis.
    pub fn write_keys(&self) {
        let answer = self.redis_cli(&[
            "EVAL",
            "for i=1,10000 do redis.call('SET','k:'..i,'v:'..i) end return 1",
            "0",
        ]);
        assert_eq!(answer, "1");
    }

    /// How many of the 10,000 keys of [`TestProject::write_keys`] are
    /// missing or wrong.
    pub fn wrong_keys(&self) -> u64 {
        self.redis_cli(&[
            "EVAL",
            "local bad=0 for i=1,10000 do if redis.call('GET','k:'..i) ~= 'v:'..i then bad=bad+1 end end return bad",
            "0",
        ])
        .parse()
        .unwrap()
    }

    /// Runs `redis-cli` in the project's redis container and returns stdout.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let mut command = vec!["redis-cli"];
        command.extend_from_slice(args);
        self.exec("redis", &command)
    }

    /// Runs a command in a service's first container through the engine
    /// and returns its stdout and stderr, trimmed.
    pub fn exec(&self, service: &str, command: &[&str]) -> String {
        let container = format!("{}-{service}-1", self.name);
        let command: Vec<String> = command.iter().map(|a| (*a).to_owned()).collect();
        self.on_engine(move |docker| async move {
            use futures_util::StreamExt;
            let options = bollard::exec::CreateExecOptions {
                cmd: Some(command),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let exec = docker
                .create_exec(&container, options)
                .await
                .expect("creating an exec");
            let mut text = String::new();
            if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
                .start_exec(&exec.id, None)
                .await
                .expect("starting an exec")
            {
                while let Some(Ok(chunk)) = output.next().await {
                    text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
            text.trim().to_owned()
        })
    }

    /// When a container last started, from the engine.
    pub fn started_at(&self, container: &str) -> String {
        let container = container.to_owned();
        self.on_engine(move |docker| async move {
            docker
                .inspect_container(&container, None)
                .await
                .expect("inspecting a container")
                .state
                .and_then(|s| s.started_at)
                .unwrap_or_default()
        })
    }

    /// The labels of one container.
    pub fn labels(&self, container: &str) -> HashMap<String, String> {
        let container = container.to_owned();
        self.on_engine(move |docker| async move {
            docker
                .inspect_container(&container, None)
                .await
                .expect("inspecting a container")
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
        })
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        remove_at(self.docker_host(), Some(&self.name));
    }
}

/// Removes every container, network and volume labelled with the project.
pub fn remove_project(project: &str) {
    remove_at(None, Some(project));
}

/// Removes every container, network and volume labelled with `project` on
/// the engine at `host`; everything there when `project` is `None` (an
/// engine of the test's own; the engine refuses to remove its predefined
/// networks, and that refusal is ignored).
pub fn remove_at(host: Option<String>, project: Option<&str>) {
    let project = project.map(str::to_owned);
    on_engine_at(host, move |docker| async move {
        let filter = project
            .map(|project| format!("com.docker.compose.project={project}"))
            .unwrap_or_default();
        let filters = if filter.is_empty() {
            HashMap::new()
        } else {
            HashMap::from([("label", vec![filter.as_str()])])
        };
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for container in docker
            .list_containers(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = container.id {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(&id, Some(options)).await;
            }
        }
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        for network in docker
            .list_networks(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = network.id {
                let _ = docker.remove_network(&id).await;
            }
        }
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let volumes = docker
            .list_volumes(Some(options))
            .await
            .ok()
            .and_then(|v| v.volumes);
        for volume in volumes.unwrap_or_default() {
            let _ = docker
                .remove_volume(
                    &volume.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await;
        }
    });
}

/// The engine's volumes that no container uses (anonymous ones a removal
/// left behind among them).
pub fn dangling_volumes() -> std::collections::HashSet<String> {
    on_engine(|docker| async move {
        let filters = HashMap::from([("dangling", vec!["true"])]);
        docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("listing volumes")
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    })
}

/// Runs engine calls on a runtime of their own, in a thread of their own, so
/// it works from sync tests, async tests and `Drop` alike.
pub fn on_engine<F, Fut, T>(work: F) -> T
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    on_engine_at(None, work)
}

/// [`on_engine`] against the engine at `host` (a DOCKER_HOST value), or the
/// shared one.
pub fn on_engine_at<F, Fut, T>(host: Option<String>, work: F) -> T
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for engine calls");
        runtime.block_on(async move {
            let docker = connect(host.as_deref()).await;
            work(docker).await
        })
    })
    .join()
    .expect("engine calls panicked")
}

async fn connect(host: Option<&str>) -> Docker {
    let docker = match host.and_then(|host| host.strip_prefix("unix://")) {
        Some(socket) => Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_defaults(),
    }
    .expect("connecting to the engine");
    // Speak the engine's API version when it is older than bollard's.
    let docker = docker.with_request_modifier(|mut request| {
        if request.uri().path().ends_with("/version") {
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = "/version".parse().ok();
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        request
    });
    match docker.clone().negotiate_version().await {
        Ok(docker) => docker,
        Err(_) => docker,
    }
}

fn copy_dir(from: &Path, to: &PathBuf) {
    std::fs::create_dir_all(to).expect("making a directory");
    for entry in std::fs::read_dir(from).expect("reading a directory") {
        let entry = entry.expect("reading a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copying a file");
        }
    }
}

/// A blocking HTTP GET to loopback: (status, headers, body). Cookies are sent
/// as given.
pub fn get(
    url: &str,
    cookie: Option<&str>,
) -> Result<(u16, HashMap<String, String>, String), String> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    get_with_headers(url, &headers)
}

/// [`get`] with any request headers.
pub fn get_with_headers(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, HashMap<String, String>, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("http only")?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(hostport).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n{extra}\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((code, headers, body.to_owned()))
}

/// GET that must answer 200 with JSON.
#[track_caller]
pub fn get_json(url: &str, cookie: Option<&str>) -> serde_json::Value {
    let (code, _, body) = get(url, cookie).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}
