//! The engine as a Swarm manager: whether it is one, the swarm's nodes, and
//! a project's services and their tasks, read the way `docker node ls` and
//! `docker stack ps` read them.

use std::collections::BTreeMap;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use bollard::models::{
    ConfigSpec, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, Limit, LocalNodeState,
    NetworkAttachmentConfig, Node as NodeModel, SecretSpec, Service as ServiceModel,
    ServiceSpec as EngineServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecModeReplicatedJob, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, SystemInfo,
    Task as TaskModel, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListConfigsOptionsBuilder, ListNetworksOptionsBuilder, ListNodesOptions,
    ListSecretsOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateConfigOptionsBuilder, UpdateServiceOptions,
};
use serde::Serialize;

use super::registry::{Login, credentials};
use super::spec::{health_config, mount};
use super::{
    ApiVersion, ContainerSpec, Engine, LogChunk, PortSpec, engine_error, log_chunk, log_options,
    removed,
};
use futures_util::StreamExt;

/// The label `docker stack deploy` puts on a stack's services (and their
/// tasks): the stack's name, here the project's.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";
/// The label `docker stack deploy` puts on a service: the image it asked for.
pub const STACK_IMAGE_LABEL: &str = "com.docker.stack.image";

/// The label filter `docker stack` lists a stack's objects by.
fn stack_filter(project: &str) -> String {
    format!("{STACK_LABEL}={project}")
}

/// What the engine is in a swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// `inactive` (no swarm), `pending`, `active`, `error` or `locked`.
    pub state: String,
    /// Whether it is a manager: it answers the swarm's API.
    pub manager: bool,
    /// Its node's id in the swarm, when it is in one.
    pub node_id: Option<String>,
    /// The address other nodes reach it at.
    pub node_addr: Option<String>,
    /// The host's name, as the swarm names its node.
    pub hostname: Option<String>,
    /// The swarm's nodes and managers, as a manager counts them.
    pub nodes: Option<i64>,
    pub managers: Option<i64>,
}

impl From<&SystemInfo> for Membership {
    fn from(info: &SystemInfo) -> Membership {
        let swarm = info.swarm.clone().unwrap_or_default();
        let state = match swarm.local_node_state {
            None | Some(LocalNodeState::EMPTY) => "inactive".to_owned(),
            Some(state) => state.to_string(),
        };
        Membership {
            manager: state == "active" && swarm.control_available.unwrap_or(false),
            state,
            node_id: swarm.node_id.filter(|id| !id.is_empty()),
            node_addr: swarm.node_addr.filter(|addr| !addr.is_empty()),
            hostname: info.name.clone().filter(|name| !name.is_empty()),
            nodes: swarm.nodes,
            managers: swarm.managers,
        }
    }
}

/// A node of the swarm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `ready`, `down`, `disconnected` or `unknown`.
    pub state: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    pub addr: Option<String>,
    pub leader: bool,
    /// The node's CPUs, as the swarm schedules them.
    pub cores: f64,
    /// The node's memory in bytes.
    pub memory: i64,
    /// The node's labels (`docker node update --label-add`), which
    /// placement constraints name as `node.labels.<key>`.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

impl From<NodeModel> for Node {
    fn from(node: NodeModel) -> Node {
        let spec = node.spec.unwrap_or_default();
        let status = node.status.unwrap_or_default();
        let text = |value: Option<String>| value.unwrap_or_else(|| "unknown".to_owned());
        let description = node.description.unwrap_or_default();
        let resources = description.resources.unwrap_or_default();
        Node {
            id: node.id.unwrap_or_default(),
            hostname: description.hostname.unwrap_or_default(),
            cores: resources.nano_cpus.unwrap_or(0) as f64 / 1e9,
            memory: resources.memory_bytes.unwrap_or(0),
            role: text(spec.role.map(|r| r.to_string())),
            state: text(status.state.map(|s| s.to_string())),
            availability: text(spec.availability.map(|a| a.to_string())),
            addr: status.addr,
            leader: node.manager_status.and_then(|m| m.leader).unwrap_or(false),
            labels: spec
                .labels
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }
}

/// A service of a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The replicas asked for; `None` for a global service.
    pub replicas: Option<u64>,
    pub image: String,
}

impl From<ServiceModel> for Service {
    fn from(service: ServiceModel) -> Service {
        let spec = service.spec.unwrap_or_default();
        Service {
            id: service.id.unwrap_or_default(),
            name: spec.name.unwrap_or_default(),
            labels: spec.labels.unwrap_or_default().into_iter().collect(),
            replicas: spec
                .mode
                .and_then(|mode| mode.replicated)
                .map(|replicated| replicated.replicas.unwrap_or(1).max(0) as u64),
            image: spec
                .task_template
                .and_then(|t| t.container_spec)
                .and_then(|c| c.image)
                .unwrap_or_default(),
        }
    }
}

/// A task of a service: one replica's attempt on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub service_id: String,
    /// The replica's number (replicated services).
    pub slot: Option<i64>,
    pub node_id: Option<String>,
    /// `new`, `pending`, ..., `running`, `complete`, `failed`, `shutdown`, ...
    pub state: String,
    /// What the swarm wants of it: `running`, `shutdown`, ...
    pub desired_state: String,
    /// Why it failed or is not running yet, in the swarm's words.
    pub error: Option<String>,
    pub container_id: Option<String>,
    /// How its container ended, once it has.
    pub exit_code: Option<i64>,
    pub image: String,
}

impl From<TaskModel> for Task {
    fn from(task: TaskModel) -> Task {
        let status = task.status.unwrap_or_default();
        let state = |s: Option<TaskState>| s.map(|s| s.to_string()).unwrap_or_default();
        Task {
            id: task.id.unwrap_or_default(),
            service_id: task.service_id.unwrap_or_default(),
            slot: task.slot,
            node_id: task.node_id.filter(|id| !id.is_empty()),
            state: state(status.state),
            desired_state: state(task.desired_state),
            error: status.err.filter(|e| !e.is_empty()),
            exit_code: status.container_status.as_ref().and_then(|c| c.exit_code),
            container_id: status
                .container_status
                .and_then(|c| c.container_id)
                .filter(|id| !id.is_empty()),
            image: task
                .spec
                .and_then(|s| s.container_spec)
                .and_then(|c| c.image)
                .unwrap_or_default(),
        }
    }
}

impl Engine {
    /// What this engine is in a swarm.
    pub async fn membership(&self) -> Result<Membership> {
        self.docker
            .info()
            .await
            .map(|info| Membership::from(&info))
            .map_err(|err| engine_error(&err))
            .map_err(|err| err.context("asking the engine whether it is in a swarm"))
    }

    /// Every node of the swarm (a manager's answer).
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|err| engine_error(&err).context("listing the swarm's nodes"))?;
        let mut nodes: Vec<Node> = nodes.into_iter().map(Node::from).collect();
        nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(nodes)
    }

    /// The services of a project's stack, by name.
    pub async fn services(&self, project: &str) -> Result<Vec<Service>> {
        super::whole::settled().await;
        let filter = stack_filter(project);
        let filters = HashMap::from([("label", vec![filter.as_str()])]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let services = self
            .docker
            .list_services(Some(options))
            .await
            .map_err(|err| {
                engine_error(&err).context(format!("listing the services of stack {project}"))
            })?;
        let mut services: Vec<Service> = services.into_iter().map(Service::from).collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(services)
    }

    /// The tasks of a project's stack, every state.
    pub async fn tasks(&self, project: &str) -> Result<Vec<Task>> {
        super::whole::settled().await;
        let filter = stack_filter(project);
        let filters = HashMap::from([("label", vec![filter.as_str()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = self.docker.list_tasks(Some(options)).await.map_err(|err| {
            engine_error(&err).context(format!("listing the tasks of stack {project}"))
        })?;
        Ok(tasks.into_iter().map(Task::from).collect())
    }
}

/// A service to create: a container, run as tasks of the swarm.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// The service's own labels (the stack's among them).
    pub labels: BTreeMap<String, String>,
    /// What each task runs: image, command, environment, healthcheck,
    /// volumes and bind mounts (a bind names a path on whichever node runs
    /// the task), networks (with their aliases), limits. Its ports are not
    /// used: a swarm publishes `host_ports`.
    pub container: ContainerSpec,
    pub mode: ServiceMode,
    /// `endpoint_mode: dnsrr`: the service's name resolves to its tasks'
    /// addresses, with no virtual IP (which needs IPVS).
    pub dnsrr: bool,
    /// `node.role==manager` and the like.
    pub constraints: Vec<String>,
    /// Spread preferences: `node.id` spreads tasks over nodes.
    pub spread: Vec<String>,
    /// At most this many tasks on one node.
    pub max_per_node: Option<i64>,
    /// Ports published in host mode: on the node running the task only.
    pub host_ports: Vec<PortSpec>,
    /// Files given to each task from configs of the swarm.
    pub configs: Vec<SwarmFile>,
    /// Files given to each task from secrets of the swarm.
    pub secrets: Vec<SwarmFile>,
}

#[cfg(test)]
impl ServiceSpec {
    /// A service `name` in `mode` with nothing else set (dnsrr): for tests.
    pub fn plain(name: &str, mode: ServiceMode) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            labels: BTreeMap::new(),
            container: ContainerSpec::default(),
            mode,
            dnsrr: true,
            constraints: Vec::new(),
            spread: Vec::new(),
            max_per_node: None,
            host_ports: Vec::new(),
            configs: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    Replicated(u64),
    /// One task on every node that the constraints allow.
    Global,
    /// One task run to its end, never restarted (a Swarm job: a deploy
    /// hook).
    Job,
}

/// How an update replaces a service's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// The new task runs (healthy, with a healthcheck) before the old one
    /// stops: the service never has fewer tasks than it asks for.
    StartFirst,
    /// The old task stops first: for a task that must run alone (its
    /// volume, its node's port).
    StopFirst,
}

/// A config or a secret of the swarm, given to a task as a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmFile {
    pub name: String,
    pub id: String,
    /// Where the task sees it.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl SwarmFile {
    /// A file owned by root, readable by every user, as `docker stack
    /// deploy` gives one by default.
    pub fn new(name: String, id: String, target: String) -> SwarmFile {
        SwarmFile {
            name,
            id,
            target,
            uid: 0,
            gid: 0,
            mode: 0o444,
        }
    }
}

/// A config of the swarm as stored: its name, id, labels and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmConfig {
    pub name: String,
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

/// The engine's service spec for `spec`.
fn service_body(spec: &ServiceSpec, api: ApiVersion) -> EngineServiceSpec {
    let ports = host_ports(spec);
    let mut body = EngineServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        task_template: Some(task_template(spec, api)),
        mode: Some(service_mode(spec.mode)),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(if spec.dnsrr {
                EndpointSpecModeEnum::DNSRR
            } else {
                EndpointSpecModeEnum::VIP
            }),
            ports: (!ports.is_empty()).then_some(ports),
        }),
        ..Default::default()
    };
    keep_healthcheck(&mut body);
    body
}

/// The service label holding [`spec_digest`] of the spec cryptus made the
/// service from: `start` replaces a service whose planned spec's digest
/// differs (its compose file, nginx's files or a secret changed).
pub const SPEC_DIGEST_LABEL: &str = "cryptus.spec-digest";

/// The digest of what `spec` asks of the swarm, as the engine is sent it,
/// leaving out what differs between two plans of one unchanged compose
/// file: the ids of configs and secrets (their names carry their
/// content), the files and placement pins in `volatile` (nginx's seed
/// upstream, which names the color served; the pin to the node of the
/// manager `start` talks to), and the digest's own label. Keys are
/// sorted, so it does not depend on a map's order.
pub fn spec_digest(spec: &ServiceSpec, volatile: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut spec = spec.clone();
    spec.labels.remove(SPEC_DIGEST_LABEL);
    spec.constraints.retain(|c| !volatile.contains(&c.as_str()));
    spec.configs
        .retain(|f| !volatile.contains(&f.target.as_str()));
    for file in spec.configs.iter_mut().chain(spec.secrets.iter_mut()) {
        file.id.clear();
    }
    let body = service_body(&spec, super::spec::START_INTERVAL_API);
    let sorted = serde_json::to_value(&body).map_or_else(|_| String::new(), |v| v.to_string());
    let hash = format!("{:x}", Sha256::digest(sorted.as_bytes()));
    hash[..16].to_owned()
}

/// The service label holding the container's health check as cryptus sent
/// it. bollard's model names it `HealthCheck` where the engine writes
/// `Healthcheck`, so the engine's answer read through the model has none.
/// An update that scales a service or forces new tasks sends back the spec
/// it read (what a hand's `docker service update` changed stays), with the
/// health check from this label: without it, the lost health check reads
/// as a change of the template, the swarm replaces every task, and the
/// service runs on with none. (A field an engine newer than the model
/// writes is lost the same way, and no label can keep what cryptus never
/// sent.)
pub const HEALTHCHECK_LABEL: &str = "cryptus.healthcheck";

/// Records `body`'s health check in its [`HEALTHCHECK_LABEL`].
fn keep_healthcheck(body: &mut EngineServiceSpec) {
    let Some(json) = body
        .task_template
        .as_ref()
        .and_then(|template| template.container_spec.as_ref())
        .and_then(|container| container.health_check.as_ref())
        .and_then(|health| serde_json::to_string(health).ok())
    else {
        return;
    };
    body.labels
        .get_or_insert_with(Default::default)
        .insert(HEALTHCHECK_LABEL.to_owned(), json);
}

/// A service's spec as the engine gave it, with the health check its
/// [`HEALTHCHECK_LABEL`] keeps where the read has none (a service made
/// otherwise, or by a cryptus before the label, keeps the read).
fn with_healthcheck(mut spec: EngineServiceSpec) -> EngineServiceSpec {
    let kept = spec
        .labels
        .as_ref()
        .and_then(|labels| labels.get(HEALTHCHECK_LABEL))
        .and_then(|json| serde_json::from_str(json).ok());
    if let (Some(health), Some(container)) = (
        kept,
        spec.task_template
            .as_mut()
            .and_then(|template| template.container_spec.as_mut()),
    ) && container.health_check.is_none()
    {
        container.health_check = Some(health);
    }
    spec
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// What each task runs: the container, its mounts and configs.
fn container_spec(spec: &ServiceSpec, api: ApiVersion) -> TaskSpecContainerSpec {
    let c = &spec.container;
    let mounts: Vec<_> = c.mounts.iter().map(mount).collect();
    TaskSpecContainerSpec {
        image: Some(c.image.clone()),
        labels: Some(c.labels.clone().into_iter().collect()),
        command: c.entrypoint.clone(),
        args: c.command.clone(),
        env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: c.user.clone(),
        read_only: c.read_only.then_some(true),
        hostname: c.runtime.hostname.clone(),
        dir: c.runtime.working_dir.clone(),
        init: c.runtime.init,
        mounts: (!mounts.is_empty()).then_some(mounts),
        stop_signal: c.stop_signal.clone(),
        stop_grace_period: c.stop_timeout.map(nanos),
        health_check: c.healthcheck.as_ref().map(|h| health_config(h, api)),
        configs: (!spec.configs.is_empty()).then(|| {
            spec.configs
                .iter()
                .map(|config| TaskSpecContainerSpecConfigs {
                    file: Some(TaskSpecContainerSpecFile1 {
                        name: Some(config.target.clone()),
                        uid: Some(config.uid.to_string()),
                        gid: Some(config.gid.to_string()),
                        mode: Some(config.mode),
                    }),
                    config_id: Some(config.id.clone()),
                    config_name: Some(config.name.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        secrets: (!spec.secrets.is_empty()).then(|| {
            spec.secrets
                .iter()
                .map(|secret| TaskSpecContainerSpecSecrets {
                    file: Some(TaskSpecContainerSpecFile {
                        name: Some(secret.target.clone()),
                        uid: Some(secret.uid.to_string()),
                        gid: Some(secret.gid.to_string()),
                        mode: Some(secret.mode),
                    }),
                    secret_id: Some(secret.id.clone()),
                    secret_name: Some(secret.name.clone()),
                })
                .collect()
        }),
        ..Default::default()
    }
}

/// The task template: container, limits, restart policy, placement,
/// networks and logging.
fn task_template(spec: &ServiceSpec, api: ApiVersion) -> TaskSpec {
    let c = &spec.container;
    let listed = |items: &[String]| (!items.is_empty()).then(|| items.to_vec());
    let limits = Limit {
        nano_cpus: c.cpus.map(|cpus| (cpus * 1e9) as i64),
        memory_bytes: c.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        pids: c.pids,
    };
    TaskSpec {
        container_spec: Some(container_spec(spec, api)),
        resources: Some(TaskSpecResources {
            limits: Some(limits),
            ..Default::default()
        }),
        // A swarm restarts a task that ends, whatever the compose file's
        // one-engine policy: `docker stack deploy`'s default. A job's task
        // runs once: its exit is the answer.
        restart_policy: Some(if spec.mode == ServiceMode::Job {
            TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }
        } else {
            TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(nanos(Duration::from_secs(1))),
                ..Default::default()
            }
        }),
        placement: Some(TaskSpecPlacement {
            constraints: listed(&spec.constraints),
            preferences: (!spec.spread.is_empty()).then(|| {
                spec.spread
                    .iter()
                    .map(|descriptor| TaskSpecPlacementPreferences {
                        spread: Some(TaskSpecPlacementSpread {
                            spread_descriptor: Some(descriptor.clone()),
                        }),
                    })
                    .collect()
            }),
            max_replicas: spec.max_per_node,
            ..Default::default()
        }),
        networks: Some(
            c.networks
                .iter()
                .map(|network| NetworkAttachmentConfig {
                    target: Some(network.name.clone()),
                    aliases: Some(network.aliases.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        log_driver: c.runtime.log.as_ref().map(|log| TaskSpecLogDriver {
            name: log.driver.clone(),
            options: Some(log.options.clone().into_iter().collect()),
        }),
        ..Default::default()
    }
}

fn service_mode(mode: ServiceMode) -> ServiceSpecMode {
    match mode {
        ServiceMode::Replicated(replicas) => ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::try_from(replicas).unwrap_or(i64::MAX)),
            }),
            ..Default::default()
        },
        ServiceMode::Global => ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        },
        ServiceMode::Job => ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..Default::default()
        },
    }
}

/// The ports published in host mode, on the node that runs the task.
fn host_ports(spec: &ServiceSpec) -> Vec<EndpointPortConfig> {
    spec.host_ports
        .iter()
        .filter_map(|port| {
            Some(EndpointPortConfig {
                protocol: Some(if port.protocol == "udp" {
                    EndpointPortConfigProtocolEnum::UDP
                } else {
                    EndpointPortConfigProtocolEnum::TCP
                }),
                target_port: Some(i64::from(port.container_port)),
                published_port: Some(i64::from(port.host_port?)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            })
        })
        .collect()
}

impl Engine {
    /// Creates a service; `false` when one of that name exists already
    /// (left as it is).
    /// Its image's registry login, when the docker CLI's config has one,
    /// goes with it, for the nodes to pull with (as `docker stack deploy
    /// --with-registry-auth`).
    pub async fn create_service(&self, spec: &ServiceSpec) -> Result<bool> {
        let body = service_body(spec, self.api_version());
        let login = Login::for_image(&spec.container.image).await?;
        let auth = login.as_ref().map(|l| credentials(Some(l)));
        super::whole::settled().await;
        let created = self
            .whole(|docker| async move { docker.create_service(body, auth).await })
            .await?;
        match created {
            Ok(_) => Ok(true),
            Err(err) if super::status(&err) == Some(409) => Ok(false),
            Err(err) => {
                Err(engine_error(&err)).with_context(|| format!("creating service {}", spec.name))
            }
        }
    }

    /// Replaces a service's spec with `spec` (its tasks are replaced as
    /// the swarm's update policy says); `false` when there is no such service.
    /// Its image's registry login goes with it, as on creation.
    pub async fn update_service(&self, spec: &ServiceSpec) -> Result<bool> {
        let body = service_body(spec, self.api_version());
        let login = Login::for_image(&spec.container.image).await?;
        self.update_with(&spec.name, login.as_ref(), |_| body).await
    }

    /// Sets a replicated service's replica count; `false` when there is no
    /// such service.
    pub async fn scale_service(&self, name: &str, replicas: u64) -> Result<bool> {
        self.update_with(name, None, |mut current| {
            current.mode = Some(service_mode(ServiceMode::Replicated(replicas)));
            current
        })
        .await
    }

    /// Reads a service's spec and version, and updates it to what `change`
    /// makes of the spec, at that version (the swarm refuses a stale one).
    /// The spec `change` gets has the health check the read loses
    /// ([`HEALTHCHECK_LABEL`]), so what it leaves alone stays as it was.
    /// Without a `login`, the swarm keeps the one the service was given.
    async fn update_with(
        &self,
        name: &str,
        login: Option<&Login>,
        change: impl FnOnce(EngineServiceSpec) -> EngineServiceSpec,
    ) -> Result<bool> {
        super::whole::settled().await;
        let current = match self
            .docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
        {
            Ok(service) => service,
            Err(err) if super::status(&err) == Some(404) => return Ok(false),
            Err(err) => {
                return Err(engine_error(&err))
                    .with_context(|| format!("inspecting service {name}"));
            }
        };
        let version = current
            .version
            .and_then(|v| v.index)
            .and_then(|index| i32::try_from(index).ok())
            .with_context(|| format!("service {name} has no version the engine accepts"))?;
        let spec = change(with_healthcheck(current.spec.unwrap_or_default()));
        let options = UpdateServiceOptions {
            version,
            ..Default::default()
        };
        let (service, auth) = (name.to_owned(), login.map(|l| credentials(Some(l))));
        self.whole(
            |docker| async move { docker.update_service(&service, spec, options, auth).await },
        )
        .await?
        .map_err(|err| engine_error(&err))
        .with_context(|| format!("updating service {name}"))?;
        Ok(true)
    }

    /// Replaces service `spec.name`'s spec with `spec`, one task at a time,
    /// each stopped before its new one starts (a volume or a host port
    /// cannot be shared), and put back by the swarm itself should a new
    /// task fail. Every task is replaced, even where only the service's
    /// labels or count changed (a forced update), so the update always
    /// runs to `completed`. Where `spec` carries `auto_pin` (the pin to
    /// the manager's node the planner gives a service with a volume and no
    /// placement of its own), the service's own `node.id` pin is kept in
    /// its place: its data lives on that node. `false` when there is no
    /// such service. Watch it with [`Engine::update_state`].
    pub async fn replace_service(
        &self,
        spec: &ServiceSpec,
        auto_pin: Option<&str>,
    ) -> Result<bool> {
        let mut body = service_body(spec, self.api_version());
        let login = Login::for_image(&spec.container.image).await?;
        let auto_pinned = auto_pin.is_some_and(|pin| spec.constraints.iter().any(|c| c == pin));
        self.update_with(&spec.name, login.as_ref(), move |current| {
            let template = current.task_template.as_ref();
            let kept: Vec<String> = template
                .and_then(|t| t.placement.as_ref())
                .and_then(|p| p.constraints.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.replace(' ', "").starts_with("node.id=="))
                .cloned()
                .collect();
            let forced = template.and_then(|t| t.force_update).unwrap_or(0);
            if let Some(template) = body.task_template.as_mut() {
                template.force_update = Some(forced.wrapping_add(1));
                if let (true, false, Some(placement)) =
                    (auto_pinned, kept.is_empty(), template.placement.as_mut())
                {
                    let mut constraints = placement.constraints.take().unwrap_or_default();
                    constraints.retain(|c| Some(c.as_str()) != auto_pin);
                    constraints.extend(kept);
                    placement.constraints = Some(constraints);
                }
            }
            body.update_config = Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(nanos(Duration::from_secs(5))),
                ..Default::default()
            });
            body
        })
        .await
    }

    /// Replaces every task of a service with a new one of the same spec,
    /// one task at a time, in `order` (`docker service update --force
    /// --update-parallelism 1 --update-order ...`); `false` when there is
    /// no such service. The swarm goes on with the update by itself: watch
    /// it with [`Engine::update_state`].
    pub async fn restart_service(&self, name: &str, order: UpdateOrder) -> Result<bool> {
        self.update_with(name, None, |mut spec| {
            let template = spec.task_template.get_or_insert_with(Default::default);
            template.force_update = Some(template.force_update.unwrap_or(0).wrapping_add(1));
            let mut update = spec.update_config.take().unwrap_or_default();
            update.parallelism = Some(1);
            update.order = Some(match order {
                UpdateOrder::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                UpdateOrder::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            });
            spec.update_config = Some(update);
            spec
        })
        .await
    }

    /// The state of a service's newest update (`updating`, `paused`,
    /// `completed`, `rollback_started`, ...) with the swarm's message;
    /// `None` when it has had none, or is gone.
    pub async fn update_state(&self, name: &str) -> Result<Option<(String, String)>> {
        super::whole::settled().await;
        let service = match self
            .docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
        {
            Ok(service) => service,
            Err(err) if super::status(&err) == Some(404) => return Ok(None),
            Err(err) => {
                return Err(engine_error(&err))
                    .with_context(|| format!("inspecting service {name}"));
            }
        };
        Ok(service.update_status.and_then(|status| {
            let state = status.state?.to_string();
            Some((state, status.message.unwrap_or_default()))
        }))
    }

    /// The log of one task, on whichever node it ran, through the
    /// manager: as [`Engine::log_lines`] gives a container's.
    pub fn task_log_lines(
        &self,
        task: &str,
        follow: bool,
        tail: Option<usize>,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<LogChunk>> + Send + 'static {
        let options = log_options(follow, tail, since).build();
        let name = format!("task {task}");
        self.docker
            .task_logs(task, Some(options))
            .map(move |chunk| log_chunk(chunk, &name))
    }

    /// Removes a service (its tasks stop); one already gone is no error.
    pub async fn remove_service(&self, name: &str) -> Result<()> {
        super::whole::settled().await;
        removed(self.docker.delete_service(name).await, || {
            format!("removing service {name}")
        })
    }

    /// A config of the swarm holding `data`, made unless one of that name
    /// exists (a config never changes, so its name says what it holds);
    /// its id.
    pub async fn ensure_config(
        &self,
        name: &str,
        data: &[u8],
        labels: BTreeMap<String, String>,
    ) -> Result<String> {
        if let Some(id) = self.config_id(name).await? {
            return Ok(id);
        }
        match self.create_config(name, data, labels).await? {
            Some(id) => Ok(id),
            None => self
                .config_id(name)
                .await?
                .with_context(|| format!("config {name} exists but cannot be found")),
        }
    }

    /// Creates a config: its id, or `None` when one of that name exists.
    async fn create_config(
        &self,
        name: &str,
        data: &[u8],
        labels: BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let spec = ConfigSpec {
            name: Some(name.to_owned()),
            labels: Some(labels.into_iter().collect()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        super::whole::settled().await;
        let created = self
            .whole(|docker| async move { docker.create_config(spec).await })
            .await?;
        match created {
            Ok(created) => Ok(Some(created.id)),
            Err(err) if super::status(&err) == Some(409) => Ok(None),
            Err(err) => Err(engine_error(&err)).with_context(|| format!("creating config {name}")),
        }
    }

    async fn config_id(&self, name: &str) -> Result<Option<String>> {
        let configs = self
            .configs_by("name", name, &format!("looking up config {name}"))
            .await?;
        // The name filter matches prefixes; compare exactly.
        Ok(configs.into_iter().find(|c| c.name == name).map(|c| c.id))
    }

    /// The names of the configs of a project's stack.
    pub async fn configs(&self, project: &str) -> Result<Vec<String>> {
        let what = format!("listing the configs of stack {project}");
        let configs = self
            .configs_by("label", &stack_filter(project), &what)
            .await?;
        Ok(configs.into_iter().map(|c| c.name).collect())
    }

    /// The configs a filter selects, with their labels and data.
    pub async fn configs_by(&self, key: &str, value: &str, what: &str) -> Result<Vec<SwarmConfig>> {
        super::whole::settled().await;
        let filters = HashMap::from([(key, vec![value])]);
        let options = ListConfigsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let configs = self
            .docker
            .list_configs(Some(options))
            .await
            .map_err(|err| engine_error(&err))
            .context(what.to_owned())?;
        Ok(configs
            .into_iter()
            .filter_map(|c| {
                let spec = c.spec?;
                let data = spec
                    .data
                    .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                    .unwrap_or_default();
                Some(SwarmConfig {
                    name: spec.name?,
                    id: c.id?,
                    labels: spec.labels.unwrap_or_default().into_iter().collect(),
                    data,
                })
            })
            .collect())
    }

    /// Creates a config unless one of that name exists: `None` then. The
    /// swarm's store makes names unique cluster-wide, so this is an atomic
    /// test-and-set any manager answers the same.
    /// Returns the new config's id: what removes exactly this one later,
    /// never another of the same name made meanwhile.
    pub async fn create_config_exclusive(
        &self,
        name: &str,
        data: &[u8],
        labels: BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        self.create_config(name, data, labels).await
    }

    /// Sets `labels` on the config `id` (by id, so never on another of its
    /// name), the only part of a config the swarm lets change. `false` when
    /// the config is gone.
    pub async fn relabel_config(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool> {
        // No wait for abandoned requests here: the lock's heartbeat writes
        // through this, and a heartbeat held back would let another run
        // take the lock for stale. It goes by id; a stale version is refused.
        let what = || format!("relabelling config {id}");
        let config = match self.docker.inspect_config(id).await {
            Ok(config) => config,
            Err(err) if super::is_not_found(&err) => return Ok(false),
            Err(err) => return Err(engine_error(&err)).with_context(what),
        };
        let (Some(mut spec), Some(version)) = (config.spec, config.version.and_then(|v| v.index))
        else {
            return Err(anyhow::anyhow!(
                "the engine described config {id} without its spec or version"
            ))
            .with_context(what);
        };
        spec.labels = Some(labels.clone().into_iter().collect());
        let version = i64::try_from(version)
            .map_err(|_| {
                anyhow::anyhow!("config {id} has version {version}, beyond the API's range")
            })
            .with_context(what)?;
        let options = UpdateConfigOptionsBuilder::default()
            .version(version)
            .build();
        let config = id.to_owned();
        let updated = self
            .whole(|docker| async move { docker.update_config(&config, spec, options).await })
            .await?;
        match updated {
            Ok(()) => Ok(true),
            Err(err) if super::is_not_found(&err) => Ok(false),
            Err(err) => Err(engine_error(&err)).with_context(what),
        }
    }

    /// A secret of the swarm holding `data`, made unless one of that name
    /// exists (its name says what it holds, as a config's does); its id.
    pub async fn ensure_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: BTreeMap<String, String>,
    ) -> Result<String> {
        if let Some(id) = self.secret_id(name).await? {
            return Ok(id);
        }
        let spec = SecretSpec {
            name: Some(name.to_owned()),
            labels: Some(labels.into_iter().collect()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        super::whole::settled().await;
        let created = self
            .whole(|docker| async move { docker.create_secret(spec).await })
            .await?;
        match created {
            Ok(created) => Ok(created.id),
            Err(err) if super::status(&err) == Some(409) => self
                .secret_id(name)
                .await?
                .with_context(|| format!("secret {name} exists but cannot be found")),
            Err(err) => Err(engine_error(&err)).with_context(|| format!("creating secret {name}")),
        }
    }

    /// The names and ids of the secrets a filter selects (never their data:
    /// the swarm gives it to tasks only).
    async fn secrets_by(
        &self,
        key: &str,
        value: &str,
        what: &str,
    ) -> Result<Vec<(String, String)>> {
        super::whole::settled().await;
        let filters = HashMap::from([(key, vec![value])]);
        let options = ListSecretsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let secrets = self
            .docker
            .list_secrets(Some(options))
            .await
            .map_err(|err| engine_error(&err))
            .context(what.to_owned())?;
        Ok(secrets
            .into_iter()
            .filter_map(|s| Some((s.spec?.name?, s.id?)))
            .collect())
    }

    async fn secret_id(&self, name: &str) -> Result<Option<String>> {
        let secrets = self
            .secrets_by("name", name, &format!("looking up secret {name}"))
            .await?;
        // The name filter matches prefixes; compare exactly.
        Ok(secrets
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id))
    }

    /// The names of the secrets of a project's stack.
    pub async fn secrets(&self, project: &str) -> Result<Vec<String>> {
        let what = format!("listing the secrets of stack {project}");
        let secrets = self
            .secrets_by("label", &stack_filter(project), &what)
            .await?;
        Ok(secrets.into_iter().map(|(name, _)| name).collect())
    }

    /// Removes a secret; one already gone is no error.
    pub async fn remove_secret(&self, name: &str) -> Result<()> {
        super::whole::settled().await;
        removed(self.docker.delete_secret(name).await, || {
            format!("removing secret {name}")
        })
    }

    /// The names of the networks of a project's stack.
    pub async fn stack_networks(&self, project: &str) -> Result<Vec<String>> {
        super::whole::settled().await;
        let filter = stack_filter(project);
        let filters = HashMap::from([("label", vec![filter.as_str()])]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|err| engine_error(&err))
            .with_context(|| format!("listing the networks of stack {project}"))?;
        Ok(networks.into_iter().filter_map(|n| n.name).collect())
    }

    /// Removes a config; one already gone is no error.
    pub async fn remove_config(&self, name: &str) -> Result<()> {
        super::whole::settled().await;
        removed(self.docker.delete_config(name).await, || {
            format!("removing config {name}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::SwarmInfo;

    #[test]
    fn a_specs_digest_follows_what_the_swarm_runs_and_leaves_out_what_varies() {
        let mut spec = ServiceSpec::plain("shop_nginx", ServiceMode::Global);
        spec.container.image = "nginx:1".into();
        spec.container.env = BTreeMap::from([("A".into(), "1".into())]);
        spec.constraints = vec!["node.role==manager".into(), "node.id==n1".into()];
        spec.configs = vec![
            SwarmFile::new(
                "shop_nginx-app-conf-aa".into(),
                "id1".into(),
                "/etc/a".into(),
            ),
            SwarmFile::new(
                "shop_nginx-upstream-conf-bb".into(),
                "id2".into(),
                "/seed".into(),
            ),
        ];
        let volatile = ["/seed", "node.id==n1"];
        let digest = spec_digest(&spec, &volatile);
        assert_eq!(digest.len(), 16);
        assert_eq!(digest, spec_digest(&spec.clone(), &volatile), "not stable");

        let mut same = spec.clone();
        same.configs[0].id = "other-id".into();
        same.configs[1].name = "shop_nginx-upstream-conf-cc".into();
        same.constraints[1] = "node.id==n2".into();
        same.labels
            .insert(SPEC_DIGEST_LABEL.into(), "an older digest".into());
        assert_eq!(
            spec_digest(&same, &["/seed", "node.id==n2"]),
            digest,
            "config ids, the seed upstream, the home pin or the label itself counted"
        );

        let mut env = spec.clone();
        env.container.env.insert("B".into(), "2".into());
        let mut file = spec.clone();
        file.configs[0].name = "shop_nginx-app-conf-dd".into();
        let mut placed = spec.clone();
        placed.constraints[0] = "node.labels.edge==true".into();
        for (what, changed) in [("env", env), ("a config", file), ("placement", placed)] {
            assert_ne!(spec_digest(&changed, &volatile), digest, "{what} left out");
        }
    }

    fn info(state: Option<LocalNodeState>, control: Option<bool>) -> SystemInfo {
        SystemInfo {
            swarm: Some(SwarmInfo {
                local_node_state: state,
                control_available: control,
                node_id: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A spec as the engine answers it: JSON in the engine's own names
    /// (`Healthcheck`, where bollard's model writes `HealthCheck`), read
    /// back through bollard's model.
    fn as_the_engine_answers(body: &EngineServiceSpec) -> EngineServiceSpec {
        let json = serde_json::to_string(body).expect("JSON");
        let engine = json.replace("\"HealthCheck\":", "\"Healthcheck\":");
        serde_json::from_str(&engine).expect("a spec")
    }

    fn app_spec() -> ServiceSpec {
        let mut spec = ServiceSpec::plain("shop_cryptus-blue", ServiceMode::Replicated(3));
        spec.labels = [(STACK_LABEL.to_owned(), "shop".to_owned())].into();
        spec.container = ContainerSpec {
            image: "app:1".into(),
            healthcheck: Some(super::super::spec::HealthSpec {
                test: vec!["CMD".into(), "/app".into(), "healthcheck".into()],
                interval: Some(Duration::from_secs(10)),
                retries: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        spec
    }

    #[test]
    fn an_update_sends_back_the_read_with_the_health_check_the_read_lost() {
        let sent = service_body(&app_spec(), ApiVersion(1, 41));
        let read = as_the_engine_answers(&sent);
        let health = |spec: &EngineServiceSpec| {
            spec.task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.health_check.clone())
        };
        assert!(health(&sent).is_some());
        assert_eq!(
            health(&read),
            None,
            "bollard's model loses the engine's Healthcheck"
        );

        // Scaled: only the count differs from what was sent.
        let mut scaled = with_healthcheck(read.clone());
        scaled.mode = Some(service_mode(ServiceMode::Replicated(5)));
        assert_eq!(scaled.task_template, sent.task_template);
        assert_eq!(scaled.labels, sent.labels);

        // Changed by hand since (`docker service update --image`, a
        // forced update): the read's stays, with the health check back.
        let mut by_hand = sent.clone();
        let template = by_hand.task_template.as_mut().expect("a template");
        template.force_update = Some(7);
        template.container_spec.as_mut().expect("a container").image = Some("app:hand".into());
        let kept = with_healthcheck(as_the_engine_answers(&by_hand));
        assert_eq!(kept.task_template, by_hand.task_template);

        // A service with no such label (made otherwise) keeps the read.
        let mut foreign = as_the_engine_answers(&sent);
        foreign.labels = Some(HashMap::new());
        assert_eq!(with_healthcheck(foreign.clone()), foreign);
    }

    #[test]
    fn only_an_active_node_with_control_is_a_manager() {
        let none = Membership::from(&SystemInfo::default());
        assert_eq!((none.state.as_str(), none.manager), ("inactive", false));
        assert_eq!(none.node_id, None);
        let empty = Membership::from(&info(Some(LocalNodeState::EMPTY), None));
        assert_eq!(empty.state, "inactive");
        let worker = Membership::from(&info(Some(LocalNodeState::ACTIVE), Some(false)));
        assert_eq!((worker.state.as_str(), worker.manager), ("active", false));
        let manager = Membership::from(&info(Some(LocalNodeState::ACTIVE), Some(true)));
        assert!(manager.manager);
        let locked = Membership::from(&info(Some(LocalNodeState::LOCKED), Some(true)));
        assert_eq!((locked.state.as_str(), locked.manager), ("locked", false));
    }
}
