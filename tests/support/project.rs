//! One isolated project on the real engine: a unique name, its own loopback
//! port and its own copy of the project files; everything carrying its label
//! is removed when the test ends, pass or fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};

use super::{
    COUNTER, REPO, app_image, assert_code, command, free_port, get_json, nginx_image, on_engine_at,
    redis_image, remove_at,
};

/// One isolated project on the real engine.
pub struct TestProject {
    pub name: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

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

    /// [`TestProject::new`], started, with per-client rate limits no
    /// test's load reaches (every request of a test comes from one address).
    #[track_caller]
    pub fn started(hint: &str) -> TestProject {
        let mut project = TestProject::new(hint);
        project.set_env("CRYPTUS_RATE_SITE", "100000r/s");
        project.set_env("CRYPTUS_RATE_API", "100000r/s");
        project.ok(&["start"]);
        project
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

    /// Starts cryptus against this project in the background, its output
    /// discarded: a run a test interrupts or kills.
    #[track_caller]
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting cryptus")
    }

    /// Runs cryptus against this project.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Output {
        super::run(self.command(args))
    }

    /// Runs cryptus without blocking the async runtime (load keeps flowing).
    pub async fn run_async(&self, args: &[&str]) -> Output {
        super::run_async(self.command(args)).await
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
    #[track_caller]
    pub fn deploy(&self, version: &str, extra: &[&str]) -> Output {
        super::run(self.deploy_command(version, extra))
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
        super::run_async(self.deploy_command(version, extra)).await
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

    /// Runs cryptus and requires exit `code` with `says` in its stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32, says: &str) -> Output {
        let output = self.run(args);
        assert_code(&output, code);
        let err = super::stderr(&output);
        assert!(err.contains(says), "{err}");
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

    /// Whether any container of `color`'s app service exists, running or
    /// not: after a failed switch, none of the new color's may.
    pub fn has_color(&self, color: &str) -> bool {
        let prefix = format!("{}-cryptus-{color}-", self.name);
        self.containers()
            .keys()
            .any(|name| name.starts_with(&prefix))
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
        super::self_signed(&ssl.join("key.pem"), &ssl.join("cert.pem"), "localhost");
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

    /// The engine's whole view of one container.
    pub fn inspect(&self, container: &str) -> bollard::models::ContainerInspectResponse {
        let container = container.to_owned();
        self.on_engine(move |docker| async move {
            docker
                .inspect_container(&container, None)
                .await
                .expect("inspecting a container")
        })
    }

    /// When a container last started, from the engine.
    pub fn started_at(&self, container: &str) -> String {
        let state = self.inspect(container).state;
        state.and_then(|s| s.started_at).unwrap_or_default()
    }

    /// The labels of one container.
    pub fn labels(&self, container: &str) -> HashMap<String, String> {
        let config = self.inspect(container).config;
        config.and_then(|c| c.labels).unwrap_or_default()
    }

    /// The environment of one container, `KEY=value`.
    pub fn container_env(&self, container: &str) -> Vec<String> {
        let config = self.inspect(container).config;
        config.and_then(|c| c.env).unwrap_or_default()
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        remove_at(self.docker_host(), Some(&self.name));
    }
}

/// Copies a directory tree (a project's files).
pub fn copy_dir(from: &Path, to: &PathBuf) {
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
