//! The Docker Engine client: the only module that talks to bollard.
//!
//! Every call names the object it acts on in its error, because raw engine
//! errors ("Docker responded with status code 404") do not say which
//! container or path was meant.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerSummary, NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::error::usage;

mod container;
pub mod registry;
mod spec;
mod stats;
mod swarm;
pub mod tls;
pub mod whole;

pub use container::{Container, Listed};
pub use spec::{
    ApiVersion, ContainerSpec, DeviceSpec, HealthSpec, HostFile, LogSpec, MountSpec, NetworkSpec,
    PortSpec, RestartSpec, RuntimeSpec, START_INTERVAL_API, UlimitSpec,
};
pub use stats::{HostInfo, Usage};
pub use swarm::{
    Membership, Node, SPEC_DIGEST_LABEL, STACK_IMAGE_LABEL, STACK_LABEL, Service, ServiceMode,
    ServiceSpec, SwarmConfig, SwarmFile, Task, UpdateOrder, spec_digest,
};

/// The label Compose puts on everything of a project.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
pub const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";
pub const CONFIG_FILES_LABEL: &str = "com.docker.compose.project.config_files";
pub const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";
pub const NETWORK_LABEL: &str = "com.docker.compose.network";
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";

/// The tracing target of the engine client library, so that `-vv` can show
/// its requests without naming it outside this module.
pub const CLIENT_LOG_TARGET: &str = "bollard";

/// [`Engine::put_file`]'s script: `sh -c SCRIPT sh PATH SIZE`, the content
/// on stdin, into a temporary of this run's own, renamed into place only
/// when SIZE bytes arrived. `wc`'s count is left unquoted: some print it
/// padded with spaces.
pub const PUT_FILE_SCRIPT: &str = r#"t="$1.tmp.$$"
cat > "$t" || { rm -f "$t"; echo "cannot write $t" >&2; exit 1; }
n=$(wc -c < "$t") && [ $n -eq "$2" ] || { rm -f "$t"; echo "the content did not arrive whole" >&2; exit 1; }
[ -d "$1" ] && { rm -f "$t"; echo "$1 is a directory" >&2; exit 1; }
mv -f "$t" "$1" || { rm -f "$t"; echo "cannot rename $t to $1" >&2; exit 1; }"#;

/// How long to wait for the engine to answer its first ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request to an engine reached by its address may take, as
/// for DOCKER_HOST's (bollard's default).
const CLIENT_TIMEOUT: u64 = 120;

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// An engine prints as what it is: a client holds no state worth showing.
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

/// A piece of a container's log: whole lines, all from one stream.
#[derive(Clone, Debug)]
pub struct LogChunk {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub text: String,
}

/// The options of a log stream: both streams, each line with the
/// engine's timestamp, from `since` (seconds since the epoch), the last
/// `tail` lines, kept open with `follow`.
pub(crate) fn log_options(follow: bool, tail: Option<usize>, since: i64) -> LogsOptionsBuilder {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .timestamps(true)
        .since(i32::try_from(since).unwrap_or(0));
    match tail {
        Some(tail) => options.tail(&tail.to_string()),
        None => options,
    }
}

/// One chunk of a log stream of `name`, naming its stream.
pub(crate) fn log_chunk(
    chunk: Result<bollard::container::LogOutput, bollard::errors::Error>,
    name: &str,
) -> Result<LogChunk> {
    chunk
        .map(|output| {
            let stream = match &output {
                bollard::container::LogOutput::StdErr { .. } => "stderr",
                bollard::container::LogOutput::StdIn { .. } => "stdin",
                _ => "stdout",
            };
            LogChunk {
                stream,
                text: String::from_utf8_lossy(&output.into_bytes()).into_owned(),
            }
        })
        .map_err(|err| engine_error(&err))
        .with_context(|| format!("reading the logs of {name}"))
}

/// One container event from the engine.
#[derive(Debug)]
pub struct ContainerEvent {
    pub id: String,
    /// start, die, destroy, ...
    pub action: String,
    /// For `die`: the exit code.
    pub exit_code: Option<i64>,
}

/// The result of a command run inside a container.
#[derive(Debug)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Engine {
    /// Connects to the engine named by DOCKER_HOST (or the local socket) and
    /// agrees on an API version both sides speak.
    pub async fn connect() -> Result<Engine> {
        let set = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let host = Engine::endpoint();
        let hint = "is dockerd running? Start it, or point DOCKER_HOST at a running engine";
        // A tcp:// engine is spoken to over TLS when DOCKER_TLS_VERIFY
        // asks, as the docker CLI does: read here, not by bollard, which
        // would take a DOCKER_TLS_VERIFY set empty as a yes.
        if host.starts_with("tcp://") {
            let tls = tls::manager_dir_from_env();
            return Engine::connect_to(&host, tls.as_deref(), hint).await;
        }
        if host.starts_with("ssh://") {
            return Engine::connect_to(&host, None, hint).await;
        }
        // An empty DOCKER_HOST means the local socket, as for the docker CLI.
        let docker = match set {
            Some(_) => Docker::connect_with_defaults(),
            None => Docker::connect_with_local_defaults(),
        };
        Engine::negotiate(docker, &host, hint).await
    }

    /// Connects to the engine at `endpoint` (`unix://PATH`,
    /// `tcp://HOST:PORT` or `ssh://[USER@]HOST[:PORT]`), whatever
    /// DOCKER_HOST says; over TLS with the certificates in `tls` (a tcp://
    /// one only). `hint` is what an unreachable engine's error suggests.
    /// Certificates that cannot be read or parsed are a usage error naming
    /// the file. Over ssh, as the docker CLI: the system's `ssh` (its
    /// config, keys, agent and known hosts) runs `docker system
    /// dial-stdio` on the host, whose user must be allowed to use docker.
    pub async fn connect_to(endpoint: &str, tls: Option<&Path>, hint: &str) -> Result<Engine> {
        let docker = if endpoint.starts_with("unix://") {
            Docker::connect_with_unix(endpoint, CLIENT_TIMEOUT, bollard::API_DEFAULT_VERSION)
        } else if let (true, Some(dir)) = (endpoint.starts_with("tcp://"), tls) {
            tls::check(dir).map_err(|why| {
                usage(
                    format!("the TLS certificates for the engine at {endpoint} are not usable: {why}"),
                    format!(
                        "put the engine's CA ({}), the client's certificate ({}) and key ({}), in PEM, in {}, as `docker --tlsverify` wants them",
                        tls::CA,
                        tls::CERT,
                        tls::KEY,
                        dir.display()
                    ),
                )
            })?;
            // rustls needs its crypto provider before any client is made;
            // a second install is refused, harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let hint = format!(
                "{hint}; over TLS, the engine must run with --tlsverify and a certificate signed by {}",
                dir.join(tls::CA).display()
            );
            let docker = Docker::connect_with_ssl(
                endpoint,
                &dir.join(tls::KEY),
                &dir.join(tls::CERT),
                &dir.join(tls::CA),
                CLIENT_TIMEOUT,
                bollard::API_DEFAULT_VERSION,
            );
            return Engine::negotiate(docker, endpoint, &hint).await;
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(endpoint, CLIENT_TIMEOUT, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with("ssh://") {
            if let Some(fault) = ssh_url_fault(endpoint) {
                return Err(usage(format!("{endpoint} {fault}"), "give ssh://USER@HOST"));
            }
            if let Some((name, port)) = ssh_port(endpoint) {
                return Err(usage(
                    format!(
                        "{endpoint} names a port, which cryptus's ssh transport cannot pass to ssh"
                    ),
                    ssh_port_hint(name, port),
                ));
            }
            let hint = format!(
                "{hint}; over ssh, `ssh {}` must log in with no prompt (a key, the host in known_hosts) and `docker version` must work there",
                endpoint.trim_start_matches("ssh://")
            );
            let docker = Docker::connect_with_ssh(
                endpoint,
                CLIENT_TIMEOUT,
                bollard::API_DEFAULT_VERSION,
                None,
            );
            return Engine::negotiate(docker, endpoint, &hint).await;
        } else {
            return Err(usage(
                format!(
                    "cannot reach the Docker engine at {endpoint}: not a unix://, tcp:// or ssh:// address"
                ),
                hint,
            ));
        };
        Engine::negotiate(docker, endpoint, hint).await
    }

    /// Agrees on an API version with the engine `docker` talks to, at `host`.
    async fn negotiate(
        docker: Result<Docker, BollardError>,
        host: &str,
        hint: &str,
    ) -> Result<Engine> {
        let unreachable = |detail: String| {
            usage(
                format!("cannot reach the Docker engine at {host}: {detail}"),
                hint,
            )
        };
        let docker = docker.map_err(|err| unreachable(err.to_string()))?;
        // Ask `/version` unversioned: every engine answers it, whatever API
        // versions it supports. bollard then speaks the older of its own
        // version and the engine's, so old engines (API 1.41) and new ones work.
        // A registry login goes in the alphabet the engine reads.
        let docker = docker.with_request_modifier(|mut request| {
            registry::url_safe_auth(request.headers_mut());
            let path = request.uri().path();
            if let Some(rest) = path.strip_prefix("/v")
                && let Some((_, tail)) = rest.split_once('/')
                && tail == "version"
            {
                let mut parts = request.uri().clone().into_parts();
                parts.path_and_query = "/version".parse().ok();
                if let Ok(uri) = hyper_uri(parts) {
                    *request.uri_mut() = uri;
                }
            }
            request
        });
        let docker = tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {PING_TIMEOUT:?}")))?
            .map_err(|err| unreachable(describe(&err)))?;
        Ok(Engine { docker })
    }

    /// The API version agreed with the engine at connection.
    pub fn api_version(&self) -> ApiVersion {
        let version = self.docker.client_version();
        ApiVersion(version.major_version, version.minor_version)
    }

    /// Runs a request that changes the engine whole: a caller dropped while
    /// it runs leaves it running to its end ([`whole::whole`]).
    async fn whole<T, F>(&self, request: impl FnOnce(Docker) -> F) -> Result<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        whole::whole(request(self.docker.clone())).await
    }

    /// Every container of a project, running or not, ordered by service and number.
    pub async fn containers(&self, project: &str) -> Result<Vec<Container>> {
        Ok(self.containers_listed(project).await?.0)
    }

    /// What one list call says of a project's containers, without an
    /// inspect each: enough to tell that none was created, removed,
    /// started, stopped or changed health since another listing.
    pub async fn listing(&self, project: &str) -> Result<Vec<Listed>> {
        Ok(self
            .project_summaries(project)
            .await?
            .iter()
            .map(Listed::of)
            .collect())
    }

    /// [`Engine::containers`], with the listing they were inspected from.
    pub async fn containers_listed(&self, project: &str) -> Result<(Vec<Container>, Vec<Listed>)> {
        let summaries = self.project_summaries(project).await?;
        let listing = summaries.iter().map(Listed::of).collect();
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let inspected = futures_util::future::join_all(ids.iter().map(|id| self.inspect(id))).await;
        let mut containers = Vec::new();
        for result in inspected {
            match result {
                Ok(Some(container)) => containers.push(container),
                // Removed between the list and the inspect: it is gone.
                Ok(None) => {}
                Err(err) => return Err(err),
            }
        }
        containers.sort_by(|a, b| (&a.service, a.number).cmp(&(&b.service, b.number)));
        Ok((containers, listing))
    }

    async fn project_summaries(&self, project: &str) -> Result<Vec<ContainerSummary>> {
        let filter = format!("{PROJECT_LABEL}={project}");
        self.list(("label", &filter), true)
            .await
            .with_context(|| format!("listing the containers of project {project}"))
    }

    /// The containers one filter selects (`all`: stopped ones too).
    async fn list(&self, (key, value): (&str, &str), all: bool) -> Result<Vec<ContainerSummary>> {
        whole::settled().await;
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([(key, vec![value])]);
        let options = ListContainersOptionsBuilder::default()
            .all(all)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|err| engine_error(&err))
    }

    /// The running containers, engine-wide and whatever their labels, that
    /// mount the volume `volume`: a volume's writers are known by the
    /// volume, not by the project's labels (a swarm's tasks carry others).
    pub async fn running_on_volume(&self, volume: &str) -> Result<Vec<String>> {
        let summaries = self
            .list(("volume", volume), false)
            .await
            .with_context(|| format!("listing the containers on the volume {volume}"))?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                s.names?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
            })
            .collect())
    }

    /// The host ports running containers publish, engine-wide: (container
    /// name, its project label, host port), to tell a taken port before
    /// anything is created.
    pub async fn published_host_ports(&self) -> Result<Vec<(String, Option<String>, u16)>> {
        whole::settled().await;
        let options = ListContainersOptionsBuilder::default().all(false).build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|err| engine_error(&err))
            .context("listing the engine's running containers")?;
        let mut ports = Vec::new();
        for summary in summaries {
            let name = summary
                .names
                .as_ref()
                .and_then(|names| names.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            let project = summary
                .labels
                .as_ref()
                .and_then(|labels| labels.get(PROJECT_LABEL).cloned());
            for port in summary.ports.unwrap_or_default() {
                if let Some(public) = port.public_port {
                    ports.push((name.clone(), project.clone(), public));
                }
            }
        }
        Ok(ports)
    }

    /// Removes a network; gone already is fine.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        whole::settled().await;
        removed(self.docker.remove_network(name).await, || {
            format!("removing network {name}")
        })
    }

    /// Removes a volume; gone already is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        whole::settled().await;
        let result = self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await;
        removed(result, || format!("removing volume {name}"))
    }

    /// Where the engine is: DOCKER_HOST, or the local socket.
    pub fn endpoint() -> String {
        std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
    }

    /// Whether the engine runs on this host (a unix socket), where a port
    /// can be tried by binding it.
    pub fn is_local() -> bool {
        std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .is_none_or(|host| host.starts_with("unix://"))
    }

    /// One container by name or id; `None` if there is no such container.
    pub async fn inspect(&self, name: &str) -> Result<Option<Container>> {
        whole::settled().await;
        match self.docker.inspect_container(name, None).await {
            Ok(response) => Ok(Some(container::from_inspect(response))),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => {
                Err(engine_error(&err)).with_context(|| format!("inspecting container {name}"))
            }
        }
    }

    /// The labels of a local image; `None` if the engine does not have it.
    pub async fn image_labels(&self, reference: &str) -> Result<Option<BTreeMap<String, String>>> {
        Ok(self
            .image_config(reference)
            .await?
            .map(|config| config.labels.unwrap_or_default().into_iter().collect()))
    }

    /// The user a local image runs as (`USER`), empty for root; `None` if
    /// the engine does not have the image.
    pub async fn image_user(&self, reference: &str) -> Result<Option<String>> {
        Ok(self
            .image_config(reference)
            .await?
            .map(|config| config.user.unwrap_or_default()))
    }

    async fn image_config(&self, reference: &str) -> Result<Option<bollard::models::ImageConfig>> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(Some(image.config.unwrap_or_default())),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => {
                Err(engine_error(&err)).with_context(|| format!("inspecting image {reference}"))
            }
        }
    }

    /// Creates the network unless it exists. Returns whether it was created.
    pub async fn ensure_network(
        &self,
        name: &str,
        network: &crate::compose::Network,
        labels: BTreeMap<String, String>,
    ) -> Result<bool> {
        whole::settled().await;
        if self.network_exists(name).await? {
            return Ok(false);
        }
        let ipam = network.ipam.as_ref().map(|ipam| bollard::models::Ipam {
            driver: ipam.driver.clone(),
            config: Some(
                ipam.config
                    .iter()
                    .map(|range| bollard::models::IpamConfig {
                        subnet: range.subnet.clone(),
                        ip_range: range.ip_range.clone(),
                        gateway: range.gateway.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some(network.driver.as_deref().unwrap_or("bridge").to_owned()),
            internal: Some(network.internal),
            // A swarm's network that plain containers may join too (a probe).
            attachable: Some(network.driver.as_deref() == Some("overlay")),
            labels: Some(labels.into_iter().collect()),
            ipam,
            ..Default::default()
        };
        let created = self
            .whole(|docker| async move { docker.create_network(request).await })
            .await?;
        match created {
            Ok(_) => Ok(true),
            // Created meanwhile by a concurrent cryptus: that is fine.
            Err(err) if status(&err) == Some(409) => Ok(false),
            Err(err) => Err(engine_error(&err)).with_context(|| format!("creating network {name}")),
        }
    }

    async fn network_exists(&self, name: &str) -> Result<bool> {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("name", vec![name])]);
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("looking up network {name}"))?;
        // The name filter matches substrings; compare exactly.
        Ok(networks.iter().any(|n| n.name.as_deref() == Some(name)))
    }

    /// Creates the volume unless it exists. Returns whether it was created.
    pub async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<bool> {
        whole::settled().await;
        match self.docker.inspect_volume(name).await {
            Ok(_) => return Ok(false),
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                return Err(engine_error(&err))
                    .with_context(|| format!("inspecting volume {name}"));
            }
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            driver: Some(driver.unwrap_or("local").to_owned()),
            labels: Some(labels.into_iter().collect()),
            ..Default::default()
        };
        self.whole(|docker| async move { docker.create_volume(request).await })
            .await?
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("creating volume {name}"))?;
        Ok(true)
    }

    /// Creates the container `spec` describes. Networks after the first are
    /// joined after creation, since older engines accept only one network at
    /// create time.
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        whole::settled().await;
        let engine = self.clone();
        let spec = spec.clone();
        self.whole(|_| async move { engine.create_container_now(&spec).await })
            .await?
    }

    async fn create_container_now(&self, spec: &ContainerSpec) -> Result<String> {
        let name = &spec.name;
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), spec::create_body(spec, self.api_version()))
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("creating container {name}"))?;
        for network in spec.networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(spec::endpoint(&network.aliases)),
            };
            self.docker
                .connect_network(&network.name, request)
                .await
                .map_err(|err| engine_error(&err))
                .with_context(|| {
                    format!("connecting container {name} to network {}", network.name)
                })?;
        }
        Ok(created.id)
    }

    /// Creates a container whose name must be new: `None` if a container of
    /// that name exists. The engine checks names atomically, which makes this
    /// a lock. The spec's networks after the first are not joined.
    pub async fn create_container_exclusive(&self, spec: &ContainerSpec) -> Result<Option<String>> {
        let name = &spec.name;
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let body = spec::create_body(spec, self.api_version());
        whole::settled().await;
        let created = self
            .whole(|docker| async move { docker.create_container(Some(options), body).await })
            .await?;
        match created {
            Ok(created) => Ok(Some(created.id)),
            Err(err) if status(&err) == Some(409) => Ok(None),
            Err(err) => {
                Err(engine_error(&err)).with_context(|| format!("creating container {name}"))
            }
        }
    }

    pub async fn start(&self, name: &str) -> Result<()> {
        whole::settled().await;
        let id = name.to_owned();
        let started = self
            .whole(|docker| async move { docker.start_container(&id, None).await })
            .await?;
        match started {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(err) if status(&err) == Some(304) => Ok(()),
            // A port taken between the preflight's check and the start (by
            // another program, or another stack) is the same clean failure
            // the preflight gives, not an engine fault.
            Err(err) if describe(&err).contains("port is already allocated") => {
                Err(crate::error::failed_with_hint(
                    format!("starting container {name}: {}", describe(&err)),
                    "another program or stack took the port: free it, or choose another (CRYPTUS_HTTP_PORT, CRYPTUS_BIND)",
                ))
            }
            Err(err) => {
                Err(engine_error(&err)).with_context(|| format!("starting container {name}"))
            }
        }
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout`
    /// (the container's own stop timeout when `None`).
    pub async fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        let mut options = StopContainerOptionsBuilder::default();
        if let Some(timeout) = timeout {
            options = options.t(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX));
        }
        whole::settled().await;
        let (id, options) = (name.to_owned(), options.build());
        let stopped = self
            .whole(|docker| async move { docker.stop_container(&id, Some(options)).await })
            .await?;
        match stopped {
            Ok(()) => Ok(()),
            Err(err) if status(&err) == Some(304) || is_not_found(&err) => Ok(()),
            Err(err) => {
                Err(engine_error(&err)).with_context(|| format!("stopping container {name}"))
            }
        }
    }

    /// Removes a container, stopping it first if `force`, with its anonymous
    /// volumes (an image's `VOLUME` that nothing mounted over: redis's /data
    /// in a scratch container), which nothing could ever use again. Named
    /// volumes stay. Gone already is fine.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(force)
            .v(true)
            .build();
        whole::settled().await;
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            // 409 "removal already in progress": the engine finishes it.
            Err(err) if status(&err) == Some(409) && describe(&err).contains("in progress") => {
                Ok(())
            }
            Err(err) => {
                Err(engine_error(&err)).with_context(|| format!("removing container {name}"))
            }
        }
    }

    /// Runs a command in a running container and collects its output.
    pub async fn exec(&self, container: &str, command: &[&str]) -> Result<ExecOutput> {
        self.exec_with_input(container, command, None).await
    }

    /// Runs a command in a running container, feeding `input` to its stdin,
    /// and collects its output.
    pub async fn exec_with_input(
        &self,
        container: &str,
        command: &[&str],
        input: Option<&[u8]>,
    ) -> Result<ExecOutput> {
        self.exec_as(container, command, input, None).await
    }

    /// [`Engine::exec_with_input`] as `user` (the container's own when `None`).
    async fn exec_as(
        &self,
        container: &str,
        command: &[&str],
        input: Option<&[u8]>,
        user: Option<&str>,
    ) -> Result<ExecOutput> {
        self.start_exec(container, command, input.is_some(), user)
            .await?
            .output(input)
            .await
    }

    /// Creates and starts an exec whose output is attached, and its stdin
    /// when `stdin`.
    async fn start_exec(
        &self,
        container: &str,
        command: &[&str],
        stdin: bool,
        user: Option<&str>,
    ) -> Result<WaitingShell> {
        let what = || format!("running `{}` in {container}", command.join(" "));
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            user,
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container, options)
            .await
            .map_err(|err| engine_error(&err))
            .with_context(what)?;
        let started = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|err| engine_error(&err))
            .with_context(what)?;
        Ok(WaitingShell {
            docker: self.docker.clone(),
            id: created.id,
            what: what(),
            started,
        })
    }

    /// Image ids with a label `key=value`.
    pub async fn images_labelled(&self, key: &str, value: &str) -> Result<Vec<String>> {
        let filter = format!("{key}={value}");
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", vec![filter.as_str()])]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|err| engine_error(&err))
            .context("listing images")?;
        Ok(images.into_iter().map(|i| i.id).collect())
    }

    /// Removes an image and its tags unless a container uses it. Returns
    /// whether it was removed.
    pub async fn remove_unused_image(&self, id: &str) -> Result<bool> {
        // Any container, running or stopped (a warm standby), keeps its
        // image: that is what keeps rollback possible. Asked first, because
        // whether a forced removal spares a stopped container's image
        // depends on the engine's version.
        let users = self
            .list(("ancestor", id), true)
            .await
            .with_context(|| format!("listing the containers of image {id}"))?;
        if !users.is_empty() {
            return Ok(false);
        }
        // Forced: the image may carry more than one tag. A container started
        // from it meanwhile still makes the engine refuse (409).
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(true)
            .build();
        match self.docker.remove_image(id, Some(options), None).await {
            Ok(_) => Ok(true),
            Err(err) if status(&err) == Some(409) || is_not_found(&err) => Ok(false),
            Err(err) => Err(engine_error(&err)).with_context(|| format!("removing image {id}")),
        }
    }

    /// Runs a script with `sh` in a running container, `input` on its stdin;
    /// `None` if the image has no shell. A script changes things: it runs
    /// whole, a caller dropped meanwhile does not cut it.
    pub async fn shell(
        &self,
        container: &str,
        script: &str,
        args: &[&str],
        input: &[u8],
    ) -> Result<Option<ExecOutput>> {
        whole::settled().await;
        let engine = self.clone();
        let (container, script) = (container.to_owned(), script.to_owned());
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let input = input.to_vec();
        self.whole(|_| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            engine
                .shell_as(&container, &script, &args, &input, None)
                .await
        })
        .await?
    }

    /// Runs a command that changes something in a running container (a
    /// reload), whole: a caller dropped meanwhile does not cut it.
    pub async fn exec_change(&self, container: &str, command: &[&str]) -> Result<ExecOutput> {
        whole::settled().await;
        let engine = self.clone();
        let container = container.to_owned();
        let command: Vec<String> = command.iter().map(|part| (*part).to_owned()).collect();
        self.whole(|_| async move {
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            engine.exec(&container, &command).await
        })
        .await?
    }

    /// [`Engine::shell`] as `user` (the container's own when `None`).
    async fn shell_as(
        &self,
        container: &str,
        script: &str,
        args: &[&str],
        input: &[u8],
        user: Option<&str>,
    ) -> Result<Option<ExecOutput>> {
        let mut command = vec!["sh", "-c", script, "sh"];
        command.extend_from_slice(args);
        let output = self.exec_as(container, &command, Some(input), user).await?;
        Ok(unless_no_shell(output))
    }

    /// Starts a script with `sh` in a running container, as [`Engine::shell`]
    /// does, but holds back its stdin: the script runs up to its first read
    /// and waits there, while the caller does other work. Starting a process
    /// in a container is most of an exec's cost; this takes it off the path
    /// of whatever later feeds the input ([`WaitingShell::finish`]). A script
    /// run this way must change nothing unless its input arrives whole: a
    /// caller that gives up drops the shell, which closes its stdin.
    pub async fn shell_waiting(
        &self,
        container: &str,
        script: &str,
        args: &[&str],
    ) -> Result<WaitingShell> {
        let mut command = vec!["sh", "-c", script, "sh"];
        command.extend_from_slice(args);
        self.start_exec(container, &command, true, None).await
    }

    /// Writes one file into a running container so that no reader sees half
    /// of it: in one exec the content arrives on stdin, goes to a temporary
    /// name and is renamed into place only if all of it arrived (a stdin
    /// closed early, by a caller gone or a connection lost, leaves the old
    /// file). That needs a shell in the image (the official images have
    /// one); without one the archive upload replaces the file. It runs
    /// whole: a caller dropped meanwhile does not cut it.
    pub async fn put_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        content: &[u8],
    ) -> Result<()> {
        whole::settled().await;
        let engine = self.clone();
        let (container, dir, name) = (container.to_owned(), dir.to_owned(), name.to_owned());
        let content = content.to_vec();
        self.whole(|_| async move { engine.put_file_now(&container, &dir, &name, &content).await })
            .await?
    }

    async fn put_file_now(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        content: &[u8],
    ) -> Result<()> {
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        let size = content.len().to_string();
        // As root: the directory is cryptus's (a volume the engine made,
        // owned by root), while the image may run as nobody, as the official
        // node-exporter does. Readers get the file 0644.
        match self
            .shell_as(
                container,
                PUT_FILE_SCRIPT,
                &[&path, &size],
                content,
                Some("0"),
            )
            .await?
        {
            Some(output) if output.code != 0 => Err(anyhow!(
                "writing {path} in {container} failed: {}",
                said(&output)
            )),
            Some(_) => Ok(()),
            // Already in a whole task of its own: no request inside another.
            None => {
                let archive = pack(&[(name, content, 0o644)], (0, 0))?;
                self.upload(container, dir, archive).await
            }
        }
    }

    /// The engine's tar archive of a path in a container (running or not,
    /// volumes included); `None` if the path does not exist.
    pub async fn download(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        self.download_head(container, path, usize::MAX).await
    }

    /// Who owns a path in a container, as (uid, gid): the first header of
    /// its archive, without reading the rest.
    pub async fn owner_of(&self, container: &str, path: &str) -> Result<(u64, u64)> {
        let head = self
            .download_head(container, path, 512)
            .await?
            .ok_or_else(|| anyhow!("{path} does not exist in container {container}"))?;
        let block = head
            .get(..512)
            .ok_or_else(|| anyhow!("the engine's archive of {path} is empty"))?;
        let header = tar::Header::from_byte_slice(block);
        Ok((
            header.uid().context("reading an owner")?,
            header.gid().context("reading a group")?,
        ))
    }

    /// [`Engine::download`], stopping once `limit` bytes have arrived.
    async fn download_head(
        &self,
        container: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>> {
        whole::settled().await;
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self
            .docker
            .download_from_container(container, Some(options));
        let mut archive = Vec::new();
        while archive.len() < limit
            && let Some(chunk) = stream.next().await
        {
            match chunk {
                Ok(bytes) => archive.extend_from_slice(&bytes),
                Err(err) if is_not_found(&err) => return Ok(None),
                Err(err) => {
                    return Err(engine_error(&err))
                        .with_context(|| format!("reading {path} from container {container}"));
                }
            }
        }
        Ok(Some(archive))
    }

    /// Reads one file from a container; `None` if the path does not exist.
    pub async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(archive) = self.download(container, path).await? else {
            return Ok(None);
        };
        let what = || format!("reading {path} from container {container}");
        let mut reader = tar::Archive::new(archive.as_slice());
        for entry in reader.entries().with_context(what)? {
            let mut entry = entry.with_context(what)?;
            if entry.header().entry_type().is_file() {
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut content).with_context(what)?;
                return Ok(Some(content));
            }
        }
        Ok(None)
    }

    /// When a file in a container was last written; `None` if it does not exist.
    pub async fn file_mtime(&self, container: &str, path: &str) -> Result<Option<DateTime<Utc>>> {
        let Some(archive) = self.download(container, path).await? else {
            return Ok(None);
        };
        let what = || format!("reading {path} from container {container}");
        let mut reader = tar::Archive::new(archive.as_slice());
        let Some(entry) = reader.entries().with_context(what)?.next() else {
            return Ok(None);
        };
        let mtime = entry
            .with_context(what)?
            .header()
            .mtime()
            .unwrap_or_default();
        Ok(DateTime::from_timestamp(
            i64::try_from(mtime).unwrap_or_default(),
            0,
        ))
    }

    /// Writes files into a directory of a container (running or not, volumes
    /// included) in one archive upload.
    pub async fn write_files(
        &self,
        container: &str,
        dir: &str,
        files: &[(&str, &[u8], u32)],
    ) -> Result<()> {
        self.write_files_as(container, dir, files, (0, 0)).await
    }

    /// [`Engine::write_files`], owned by `owner` (uid, gid), the directories
    /// the paths name included: a service that runs as another user (the
    /// official Prometheus image runs as nobody) must be able to write and
    /// delete what is restored for it. It runs whole.
    pub async fn write_files_as(
        &self,
        container: &str,
        dir: &str,
        files: &[(&str, &[u8], u32)],
        owner: (u64, u64),
    ) -> Result<()> {
        whole::settled().await;
        let archive = pack(files, owner)?;
        let engine = self.clone();
        let (container, dir) = (container.to_owned(), dir.to_owned());
        self.whole(|_| async move { engine.upload(&container, &dir, archive).await })
            .await?
    }

    /// [`Engine::write_files`] at once, waiting for no abandoned request
    /// and cut if its caller gives up: for the lock's heartbeat, which must
    /// never be held back (a late beat lets another run take a live lock
    /// for stale), and which the next beat writes again anyway.
    pub async fn write_files_at_once(
        &self,
        container: &str,
        dir: &str,
        files: &[(&str, &[u8], u32)],
    ) -> Result<()> {
        self.upload(container, dir, pack(files, (0, 0))?).await
    }

    /// Unpacks a tar `archive` into `dir` of a container.
    async fn upload(&self, container: &str, dir: &str, archive: Vec<u8>) -> Result<()> {
        let options = UploadToContainerOptionsBuilder::default().path(dir).build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("writing into {dir} of container {container}"))
    }

    /// The last `lines` lines a container wrote, stdout and stderr together.
    pub async fn logs_tail(&self, container: &str, lines: usize) -> Result<String> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|err| engine_error(&err))
                .with_context(|| format!("reading the logs of {container}"))?;
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(text)
    }

    /// A container's log as a stream of chunks of lines, each line with the
    /// engine's timestamp, each chunk naming its stream. `follow` keeps it
    /// open.
    pub fn log_lines(
        &self,
        container: &str,
        follow: bool,
        tail: Option<usize>,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<LogChunk>> + Send + 'static {
        let options = log_options(follow, tail, since).build();
        let name = container.to_owned();
        self.docker
            .logs(container, Some(options))
            .map(move |chunk| log_chunk(chunk, &name))
    }

    /// The ids of the project's containers as they start, from the engine's
    /// event stream.
    pub fn container_starts(
        &self,
        project: &str,
    ) -> impl futures_util::Stream<Item = Result<String>> + Send + 'static {
        let label = format!("{PROJECT_LABEL}={project}");
        self.container_events(("label", &label), &["start"], None)
            .map(|event| event.map(|event| event.id))
    }

    /// The engine's events of the containers `filter` names (`("label",
    /// "k=v")`, `("container", name)`) whose action is one of `actions`, as
    /// they happen, from `since` on when given (so nothing since then is
    /// missed). The stream ends, or errs, when the engine goes away.
    pub fn container_events(
        &self,
        filter: (&str, &str),
        actions: &[&str],
        since: Option<DateTime<Utc>>,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent>> + Send + use<> {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([
            ("type", vec!["container"]),
            ("event", actions.to_vec()),
            (filter.0, vec![filter.1]),
        ]);
        let mut options =
            bollard::query_parameters::EventsOptionsBuilder::default().filters(&filters);
        if let Some(since) = since {
            let since = format!(
                "{}.{:09}",
                since.timestamp(),
                since.timestamp_subsec_nanos()
            );
            options = options.since(&since);
        }
        self.docker
            .events(Some(options.build()))
            .filter_map(|event| async move {
                match event {
                    Ok(event) => {
                        let actor = event.actor?;
                        let exit_code = actor
                            .attributes
                            .as_ref()
                            .and_then(|a| a.get("exitCode"))
                            .and_then(|code| code.parse().ok());
                        Some(Ok(ContainerEvent {
                            id: actor.id?,
                            action: event.action.unwrap_or_default(),
                            exit_code,
                        }))
                    }
                    Err(err) => Some(Err(
                        engine_error(&err).context("following the engine's events")
                    )),
                }
            })
    }

    /// One sample of a container's resource use. The engine takes two
    /// readings about a second apart, so CPU use is a rate.
    pub async fn stats(&self, container: &str) -> Result<Usage> {
        let options = bollard::query_parameters::StatsOptionsBuilder::default()
            .stream(false)
            .build();
        let mut stream = self.docker.stats(container, Some(options));
        match stream.next().await {
            Some(result) => result
                .map(|sample| stats::usage(&sample))
                .map_err(|err| engine_error(&err))
                .with_context(|| format!("reading the resource use of {container}")),
            None => Err(anyhow!("the engine sent no resource use for {container}")),
        }
    }

    /// The engine's host: cores, memory and where it keeps its data.
    pub async fn host(&self) -> Result<HostInfo> {
        self.docker
            .info()
            .await
            .map(HostInfo::from)
            .map_err(|err| engine_error(&err))
            .context("reading the engine's host information")
    }

    /// The processes running in a container: pid (as the host sees it) and
    /// command line.
    pub async fn processes(&self, container: &str) -> Result<Vec<(String, String)>> {
        let top = self
            .docker
            .top_processes(container, None)
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("listing the processes of {container}"))?;
        let titles = top.titles.unwrap_or_default();
        let pid = titles.iter().position(|t| t == "PID").unwrap_or(1);
        let command = titles
            .iter()
            .position(|t| t == "CMD" || t == "COMMAND")
            .unwrap_or(titles.len().saturating_sub(1));
        Ok(top
            .processes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|row| Some((row.get(pid)?.clone(), row.get(command)?.clone())))
            .collect())
    }

    /// Copies `image` from this engine to `to`: this engine's `docker save`
    /// stream is `to`'s `docker load`, with nothing held on disk or in
    /// memory on the way. The caller bounds it in time.
    pub async fn copy_image(&self, image: &str, to: &Engine) -> Result<()> {
        let saved = self.docker.export_image(image);
        let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(true)
            .build();
        let mut loading = to.docker.import_image_stream(options, saved, None);
        let doing = format!("copying image {image}");
        while let Some(item) = loading.next().await {
            progress(item, &doing, "the load failed")?;
        }
        Ok(())
    }

    /// Builds an image from a tar of its context with the classic builder,
    /// which builds `FROM scratch` with no registry. Returns the image id.
    pub async fn build_image(
        &self,
        context: Vec<u8>,
        dockerfile: &str,
        tag: &str,
        labels: BTreeMap<String, String>,
        args: BTreeMap<String, String>,
    ) -> Result<String> {
        let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels.into_iter().collect())
            .buildargs(&args.into_iter().collect())
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        let mut id = None;
        let mut last_lines: Vec<String> = Vec::new();
        let doing = format!("building image {tag}");
        while let Some(item) = stream.next().await {
            let info = progress(item, &doing, "the build failed")?;
            if let Some(text) = info.stream {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::debug!("build: {line}");
                    last_lines.push(line.to_owned());
                    if last_lines.len() > 20 {
                        last_lines.remove(0);
                    }
                }
            }
            if let Some(aux) = info.aux {
                id = aux.id.or(id);
            }
        }
        match id {
            Some(id) => Ok(id),
            None => self
                .image_labels(tag)
                .await?
                .map(|_| tag.to_owned())
                .ok_or_else(|| {
                    anyhow!(
                        "building image {tag} produced no image: {}",
                        last_lines.join(" | ")
                    )
                }),
        }
    }
}

/// One item of a build's, load's, push's or pull's progress stream: an error of the
/// stream, or one the engine reports in it (`doing` says what ran; `failed`
/// when the engine gives no message).
fn progress<I: Reported>(item: Result<I, BollardError>, doing: &str, failed: &str) -> Result<I> {
    let info = item
        .map_err(|err| engine_error(&err))
        .with_context(|| doing.to_owned())?;
    if let Some(detail) = info.error_detail() {
        let message = detail.message.as_deref().unwrap_or(failed);
        return Err(anyhow!("{doing}: {}", message.trim()));
    }
    Ok(info)
}

/// An item of a progress stream (a build's, a load's, a push's, a
/// pull's): each may carry the error the engine met.
trait Reported {
    fn error_detail(&self) -> Option<&bollard::models::ErrorDetail>;
}

macro_rules! reported {
    ($($item:ty),*) => {$(
        impl Reported for $item {
            fn error_detail(&self) -> Option<&bollard::models::ErrorDetail> {
                self.error_detail.as_ref()
            }
        }
    )*};
}

reported!(
    bollard::models::BuildInfo,
    bollard::models::PushImageInfo,
    bollard::models::CreateImageInfo
);

/// A started exec, waiting for its input (see [`Engine::shell_waiting`]).
pub struct WaitingShell {
    docker: Docker,
    id: String,
    /// What it runs where, for errors.
    what: String,
    started: StartExecResults,
}

impl WaitingShell {
    /// Feeds `input`, closes stdin and collects what the script said and
    /// its exit code; `None` if the image has no shell.
    /// It runs whole: once fed, the script changes things, and a caller
    /// dropped meanwhile does not cut it.
    pub async fn finish(self, input: &[u8]) -> Result<Option<ExecOutput>> {
        whole::settled().await;
        let input = input.to_vec();
        let output = whole::whole(async move { self.output(Some(&input)).await }).await??;
        Ok(unless_no_shell(output))
    }

    async fn output(self, input: Option<&[u8]>) -> Result<ExecOutput> {
        let what = self.what;
        let (stdout, stderr) = exchange(self.started, input)
            .await
            .with_context(|| what.clone())?;
        let inspected = self
            .docker
            .inspect_exec(&self.id)
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| what.clone())?;
        Ok(ExecOutput {
            code: inspected.exit_code.unwrap_or(-1),
            stdout,
            stderr,
        })
    }
}

/// A tar archive of `files` (name, content, mode), with the directories
/// their names hold, every entry owned by `owner` (uid, gid).
fn pack(files: &[(&str, &[u8], u32)], owner: (u64, u64)) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or_default();
    let mut dirs: Vec<&str> = files
        .iter()
        .flat_map(|(name, _, _)| {
            name.match_indices('/')
                .map(|(end, _)| &name[..end])
                .collect::<Vec<_>>()
        })
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    for name in dirs {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        header.set_mtime(now);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_entry_type(tar::EntryType::Directory);
        builder
            .append_data(&mut header, format!("{name}/"), std::io::empty())
            .with_context(|| format!("packing {name}/"))?;
    }
    for (name, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(now);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, *content)
            .with_context(|| format!("packing {name}"))?;
    }
    builder.into_inner().context("packing files for upload")
}

/// What a command said, stderr then stdout, each trimmed, joined by `; `.
fn said(output: &ExecOutput) -> String {
    [output.stderr.trim(), output.stdout.trim()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A shell's output, or `None` when the image has no `sh` to run it.
fn unless_no_shell(output: ExecOutput) -> Option<ExecOutput> {
    let missing = (output.code == 126 || output.code == 127)
        && format!("{}{}", output.stdout, output.stderr).contains("executable file not found");
    (!missing).then_some(output)
}

/// Feeds `input` to a started exec, closing its stdin after, and collects
/// what it writes to stdout and stderr until it ends.
async fn exchange(started: StartExecResults, input: Option<&[u8]>) -> Result<(String, String)> {
    let StartExecResults::Attached {
        mut output,
        input: mut stdin,
    } = started
    else {
        return Ok((String::new(), String::new()));
    };
    if let Some(bytes) = input {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(bytes).await?;
        stdin.shutdown().await?;
    }
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(chunk) = output.next().await {
        match chunk.map_err(|err| engine_error(&err))? {
            bollard::container::LogOutput::StdOut { message } => {
                stdout.push_str(&String::from_utf8_lossy(&message));
            }
            bollard::container::LogOutput::StdErr { message } => {
                stderr.push_str(&String::from_utf8_lossy(&message));
            }
            _ => {}
        }
    }
    Ok((stdout, stderr))
}

/// The host and port an `ssh://` URL names, when it names a port:
/// bollard's ssh transport hands `ssh` the URL's `user@host:port` as one
/// destination, which `ssh` reads as a host named `host:port`, so such a
/// URL is refused (the port belongs in the ssh config).
pub fn ssh_port(endpoint: &str) -> Option<(&str, &str)> {
    let authority = endpoint.strip_prefix("ssh://")?;
    let authority = authority.split('/').next().unwrap_or(authority);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match host.strip_prefix('[') {
        Some(bracketed) => {
            let (name, after) = bracketed.split_once(']')?;
            after.strip_prefix(':').map(|port| (name, port))
        }
        None => host.split_once(':'),
    }
}

/// Why an `ssh://` URL cannot name an engine, other than a port: a path
/// (the engine is the one the host's docker CLI talks to), no host, or a
/// host ssh would read as an option.
pub fn ssh_url_fault(endpoint: &str) -> Option<&'static str> {
    let authority = endpoint.strip_prefix("ssh://")?;
    let (authority, path) = authority.split_once('/').unwrap_or((authority, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if !path.is_empty() {
        Some("names a path: the engine reached is the one the host's docker CLI uses")
    } else if host.is_empty() {
        Some("names no host")
    } else if host.starts_with('-') {
        Some("names a host ssh would read as an option")
    } else {
        None
    }
}

/// The hint for an `ssh://` URL that names a port.
pub fn ssh_port_hint(name: &str, port: &str) -> String {
    format!(
        "name the port in ~/.ssh/config (Host {name}-engine, HostName {name}, Port {port}) and use ssh://USER@{name}-engine"
    )
}

fn hyper_uri(parts: http::uri::Parts) -> Result<http::Uri, http::uri::InvalidUriParts> {
    http::Uri::from_parts(parts)
}

fn status(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_not_found(err: &BollardError) -> bool {
    status(err) == Some(404)
}

/// A removal's outcome: done, or gone already, is fine; else the engine's
/// error under `what`.
fn removed(result: Result<(), BollardError>, what: impl FnOnce() -> String) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        Err(err) => Err(engine_error(&err)).with_context(what),
    }
}

/// An engine call's error: the engine's own message where it answered; where
/// it did not (its socket went, the connection broke, no answer came), an
/// error saying so with a hint, whatever call met it first.
fn engine_error(err: &BollardError) -> anyhow::Error {
    if is_connection_lost(err) {
        lost(describe(err))
    } else {
        anyhow!(describe(err))
    }
}

/// The engine stopped answering in the middle of a command (it was
/// restarted, stopped or crashed): the error a caller gets, whichever call
/// or stream met it first. Exit 2, as for an engine unreachable at the start.
pub fn lost(detail: impl std::fmt::Display) -> anyhow::Error {
    usage(
        format!("the Docker engine stopped answering: {detail}"),
        "was dockerd restarted? Once it answers, `cryptus status` shows what runs; then run the command again",
    )
}

/// Whether the error is the connection to the engine failing, rather than
/// an answer from it.
fn is_connection_lost(err: &BollardError) -> bool {
    match err {
        BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::RequestTimeoutError
        | BollardError::SocketNotFoundError(_) => true,
        BollardError::DockerResponseServerError { .. } => false,
        // Transparent: its own source is the io error's source.
        BollardError::IOError { err } => is_broken_io(err),
        other => {
            let mut cause: Option<&dyn std::error::Error> = Some(other);
            while let Some(current) = cause {
                if current
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(is_broken_io)
                {
                    return true;
                }
                cause = current.source();
            }
            false
        }
    }
}

/// Whether an io error is a socket that is gone or a connection that broke.
fn is_broken_io(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::NotFound
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// The engine's own message where there is one, rather than bollard's wrapper.
fn describe(err: &BollardError) -> String {
    match err {
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        other => {
            // The innermost cause says what happened: "No such file or
            // directory (os error 2)" beats "error trying to connect".
            let mut innermost: &dyn std::error::Error = other;
            while let Some(cause) = innermost.source() {
                innermost = cause;
            }
            innermost.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssh_url_with_a_port_is_told_apart() {
        assert_eq!(ssh_port("ssh://ops@node2:2222"), Some(("node2", "2222")));
        assert_eq!(ssh_port("ssh://node2:22/"), Some(("node2", "22")));
        assert_eq!(ssh_port("ssh://ops@node2"), None);
        assert_eq!(ssh_port("tcp://node2:2376"), None);
        assert_eq!(ssh_port("ssh://ops@[fd00::2]"), None);
        assert_eq!(ssh_port("ssh://ops@[fd00::2]:22"), Some(("fd00::2", "22")));
        assert_eq!(ssh_port("ssh://h/x:1"), None);
        assert_eq!(ssh_url_fault("ssh://ops@h"), None);
        assert!(
            ssh_url_fault("ssh://ops@h/var/run/docker.sock").is_some_and(|f| f.contains("path"))
        );
        assert!(ssh_url_fault("ssh://ops@").is_some_and(|f| f.contains("no host")));
        assert!(ssh_url_fault("ssh://-oProxyCommand=x").is_some_and(|f| f.contains("option")));
        assert!(ssh_port_hint("node2", "2222").contains("Port 2222"));
    }
    use crate::error::{EXIT_USAGE, classify};

    #[test]
    fn a_vanished_socket_or_broken_connection_is_the_engine_lost() {
        for kind in [
            std::io::ErrorKind::NotFound,
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let err = engine_error(&BollardError::from(std::io::Error::from(kind)));
            let text = format!("{:#}", err.context("inspecting container x"));
            assert!(
                text.contains("the Docker engine stopped answering"),
                "{text}"
            );
            assert!(text.starts_with("inspecting container x: "), "{text}");
        }
        let err = engine_error(&BollardError::RequestTimeoutError);
        assert_eq!(classify(&err).0, EXIT_USAGE);
        assert!(
            classify(&err)
                .1
                .is_some_and(|hint| hint.contains("dockerd"))
        );
    }

    #[test]
    fn an_answer_from_the_engine_is_its_own_message() {
        let err = engine_error(&BollardError::DockerResponseServerError {
            status_code: 500,
            message: "driver failed programming external connectivity\n".to_owned(),
        });
        assert_eq!(
            err.to_string(),
            "driver failed programming external connectivity"
        );
        assert!(!crate::error::is_user_error(&err));
        let other = engine_error(&BollardError::from(std::io::Error::other("disk full")));
        assert!(!other.to_string().contains("stopped answering"), "{other}");
    }
}
