//! The engines of the swarm's nodes: the manager's is the one cryptus
//! talks to (DOCKER_HOST); any other node's is named by the operator in
//! `CRYPTUS_SWARM_NODES` (`<hostname or node id>=<engine URL>,...`), since
//! a manager does not say how to reach another node's engine. Each is
//! connected when first asked for, checked to be that node's (the swarm's
//! node id in its `/info`), and kept for the command. A deploy of a local
//! image asks every node that may run the color whether it has it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use tokio::sync::OnceCell;

use crate::context::Stack;
use crate::engine::{Container, Engine, Membership, Node, tls};
use crate::error::{failed_with_hint, usage};
use crate::stack::{Color, Release};

/// The setting that names other nodes' engines.
pub const NODES_VAR: &str = "CRYPTUS_SWARM_NODES";

/// What the setting looks like, for hints.
const NODES_FORM: &str = "CRYPTUS_SWARM_NODES=\"<node hostname or id>=unix:///PATH|tcp://HOST:PORT|ssh://USER@HOST,...\"";

/// The setting's entries: a node (hostname or id) and its engine's URL.
/// An empty setting names none; anything else not of the form is why.
pub fn parse_nodes(setting: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for entry in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((node, url)) = entry.split_once('=') else {
            return Err(format!("'{entry}' is not <node>=<engine URL>"));
        };
        let (node, url) = (node.trim(), url.trim());
        if node.is_empty() || node.contains(char::is_whitespace) {
            return Err(format!("'{entry}' names no node"));
        }
        let address = ["unix://", "tcp://", "ssh://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme));
        if address.is_none_or(str::is_empty) {
            return Err(format!(
                "'{url}' (for {node}) is not a unix://, tcp:// or ssh:// engine URL"
            ));
        }
        if let Some(fault) = crate::engine::ssh_url_fault(url) {
            return Err(format!("'{url}' (for {node}) {fault}"));
        }
        if let Some((name, port)) = crate::engine::ssh_port(url) {
            return Err(format!(
                "'{url}' (for {node}) names a port, which cryptus's ssh transport cannot pass to ssh: {}",
                crate::engine::ssh_port_hint(name, port)
            ));
        }
        if entries.iter().any(|(known, _)| known == node) {
            return Err(format!("{node} is named twice"));
        }
        entries.push((node.to_owned(), url.to_owned()));
    }
    Ok(entries)
}

/// The entry for `node`, by its id or its hostname: how it names the node,
/// and the URL it gives.
pub fn entry_for<'e>(entries: &'e [(String, String)], node: &Node) -> Option<(&'e str, &'e str)> {
    entries
        .iter()
        .find(|(key, _)| *key == node.id || *key == node.hostname)
        .map(|(key, url)| (key.as_str(), url.as_str()))
}

/// Whether `node` meets every placement constraint on `node.role`,
/// `node.hostname`, `node.id` and `node.labels.<key>` (`==` or `!=`). A
/// constraint on anything else (an engine label, the platform) is taken as
/// met: the swarm judges it, and a node it might place the color on must
/// not be missed.
pub fn may_run(node: &Node, constraints: &[String]) -> bool {
    constraints.iter().all(|constraint| {
        let (key, equal, value) = match constraint.split_once("!=") {
            Some((key, value)) => (key, false, value),
            None => match constraint.split_once("==") {
                Some((key, value)) => (key, true, value),
                None => return true,
            },
        };
        let (key, value) = (key.trim(), value.trim());
        let actual = match key {
            "node.role" => Some(node.role.as_str()),
            "node.hostname" => Some(node.hostname.as_str()),
            "node.id" => Some(node.id.as_str()),
            _ => match key.strip_prefix("node.labels.") {
                Some(label) => node.labels.get(label).map(String::as_str),
                None => return true,
            },
        };
        (actual == Some(value)) == equal
    })
}

/// Every ready, active node that may run `color` (by its service's
/// placement constraints) must have `image`, asked of each node's engine;
/// else one error naming the nodes that lack it or whose engine is not
/// known. An image of a registry is not asked for here: the nodes pull
/// it ([`super::registry::release`] asks whether they can).
pub async fn image_on_nodes(stack: &Stack<'_>, color: Color, release: &Release) -> Result<()> {
    let image = &release.image;
    if super::registry::names_registry(image) {
        return Ok(());
    }
    let Some((engines, nodes)) = may_run_color(stack, color, release).await? else {
        return Ok(());
    };
    let asked = nodes.iter().map(|node| async {
        if !engines.knows(node) {
            return Ok(Some(format!("{} (no engine known)", node.hostname)));
        }
        let why = format!("{image} is looked for");
        let labels = engines.engine(node, &why).await?.image_labels(image).await;
        let labels = labels.with_context(|| format!("looking for {image} on {}", node.hostname))?;
        Ok::<_, anyhow::Error>(labels.is_none().then(|| node.hostname.clone()))
    });
    let missing: Vec<String> = try_join_all(asked).await?.into_iter().flatten().collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(not_on_every_node(image, color, &missing))
}

/// Why a deploy cannot run `image` as `color`: the nodes that lack it.
fn not_on_every_node(image: &str, color: Color, missing: &[String]) -> anyhow::Error {
    failed_with_hint(
        format!(
            "{image} is not on every node that may run {color}: {}",
            missing.join(", ")
        ),
        format!(
            "load the image on those nodes (docker load) or push it to your registry and deploy that reference; name each node's engine in {NODES_VAR}"
        ),
    )
}

/// The ready, active nodes `color`'s placement allows for `release`, with
/// the engines of the nodes; `None` when the compose file has no such
/// color.
pub(super) async fn may_run_color<'s>(
    stack: &'s Stack<'_>,
    color: Color,
    release: &Release,
) -> Result<Option<(NodeEngines<'s>, Vec<Node>)>> {
    let engine = stack.engine;
    let Some(service) = stack.compose.service(color.service()) else {
        return Ok(None);
    };
    let project = &stack.project.name;
    let spec = super::plan::service_spec(
        project,
        &stack.project.dir,
        stack.compose,
        service,
        release,
        None,
    )?
    .spec;
    let (membership, nodes) = tokio::try_join!(engine.membership(), engine.nodes())?;
    let engines = NodeEngines::from_env(engine, &membership)?;
    let nodes = nodes
        .into_iter()
        .filter(|n| n.state == "ready" && n.availability == "active")
        .filter(|n| may_run(n, &spec.constraints))
        .collect();
    Ok(Some((engines, nodes)))
}

/// Loads an image the manager's engine has (one `deploy --build` built
/// there) on every other node that may run `color` and lacks it, through
/// its node's engine, streamed from one engine to the other. Nodes whose
/// engine is not known refuse it before any is loaded.
pub async fn load_on_nodes(stack: &Stack<'_>, color: Color, release: &Release) -> Result<()> {
    let image = &release.image;
    let Some((engines, nodes)) = load_targets(stack, color, release).await? else {
        return Ok(());
    };
    let loads = nodes.iter().map(|node| async {
        let why = format!("{image} is loaded there");
        let engine = engines.engine(node, &why).await?;
        if engine.image_labels(image).await?.is_none() {
            stack
                .printer
                .info(format!("loading {image} on {}", node.hostname));
            let copied = stack.engine.copy_image(image, &engine);
            tokio::time::timeout(LOAD_DEADLINE, copied)
                .await
                .map_err(|_| {
                    anyhow::anyhow!("not done within {}", crate::output::uptime(LOAD_DEADLINE))
                })
                .and_then(|copied| copied)
                .with_context(|| format!("loading {image} on {}", node.hostname))?;
        }
        Ok::<_, anyhow::Error>(())
    });
    try_join_all(loads).await?;
    Ok(())
}

/// The nodes other than the manager's that an image of `color` built on
/// the manager is loaded on (those `color`'s placement allows, ready),
/// with their engines, for [`load_on_nodes`] and a dry run's plan alike;
/// refused, naming them, where a node's engine is not known. `None` when
/// the compose file has no such color.
pub async fn load_targets<'s>(
    stack: &'s Stack<'_>,
    color: Color,
    release: &Release,
) -> Result<Option<(NodeEngines<'s>, Vec<Node>)>> {
    let Some((engines, nodes)) = may_run_color(stack, color, release).await? else {
        return Ok(None);
    };
    let unknown: Vec<String> = nodes
        .iter()
        .filter(|node| !engines.knows(node))
        .map(|node| format!("{} (no engine known)", node.hostname))
        .collect();
    if !unknown.is_empty() {
        return Err(not_on_every_node(&release.image, color, &unknown));
    }
    let others = nodes
        .into_iter()
        .filter(|node| !engines.is_manager(&node.id))
        .collect();
    Ok(Some((engines, others)))
}

/// The longest an image may take to be copied from the manager to a node.
const LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// The engine of each node, for one command.
pub struct NodeEngines<'m> {
    manager: &'m Engine,
    manager_id: String,
    manager_name: String,
    entries: Vec<(String, String)>,
    /// `CRYPTUS_SWARM_NODES_CERT_PATH`, and the manager's certificate
    /// directory: where a tcp:// entry's TLS certificates are.
    nodes_cert: Option<PathBuf>,
    manager_cert: Option<PathBuf>,
    nodes: OnceCell<Vec<Node>>,
    connected: Mutex<HashMap<String, Engine>>,
}

/// A task's container, reached through the engine of the node it runs on:
/// what exec, copies and stats of a task go through.
pub struct Reached {
    pub engine: Engine,
    /// The hostname of the node it runs on.
    pub node: String,
    /// Whether that node is the manager cryptus talks to.
    pub on_manager: bool,
    /// Its container, as that engine inspects it; `None` once it is gone.
    pub container: Option<Container>,
}

impl<'m> NodeEngines<'m> {
    /// The engines the setting names, beside `manager` (whose swarm
    /// membership is `membership`). A setting not of the form is a usage
    /// error.
    pub fn from_env(manager: &'m Engine, membership: &Membership) -> Result<NodeEngines<'m>> {
        let setting = std::env::var(NODES_VAR).unwrap_or_default();
        let entries = parse_nodes(&setting).map_err(|why| {
            usage(
                format!("{NODES_VAR} is not understood: {why}"),
                format!("write it as {NODES_FORM}; docs/swarm.md"),
            )
        })?;
        let manager_id = membership.node_id.clone().unwrap_or_default();
        Ok(NodeEngines {
            manager,
            manager_name: membership.hostname.clone().unwrap_or(manager_id.clone()),
            manager_id,
            entries,
            nodes_cert: std::env::var_os(tls::NODES_CERT_VAR)
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
            manager_cert: tls::manager_dir_from_env(),
            nodes: OnceCell::new(),
            connected: Mutex::new(HashMap::new()),
        })
    }

    /// The one way to a task's container: through the engine of `node`
    /// (its id, or its hostname as `status` shows it), the manager's
    /// without asking any other. `why` says what cryptus needs it for, in
    /// the error (exit 2, naming the setting) when that node's engine is
    /// not known.
    pub async fn task_container(&self, node: &str, container: &str, why: &str) -> Result<Reached> {
        let (engine, hostname, on_manager) = if self.is_manager(node) {
            (self.manager.clone(), self.manager_name.clone(), true)
        } else {
            let node = self.node(node).await?;
            (self.engine(&node, why).await?, node.hostname, false)
        };
        let inspected = engine
            .inspect(container)
            .await
            .with_context(|| format!("inspecting the container of a task on {hostname}"))?;
        Ok(Reached {
            engine,
            node: hostname,
            on_manager,
            container: inspected,
        })
    }

    /// The engine of every node cryptus knows (the manager's, and each
    /// ready node's the setting names), for what may be left on any of
    /// them; why each named one could not be reached, to warn of.
    pub async fn known(&self) -> Result<(Vec<Engine>, Vec<String>)> {
        let nodes = self.nodes().await?;
        let named = nodes
            .iter()
            .filter(|n| n.id != self.manager_id && n.state == "ready" && self.knows(n));
        let reached = futures_util::future::join_all(named.map(|n| self.engine(n, "cleaning up")));
        let (mut engines, mut missed) = (vec![self.manager.clone()], Vec::new());
        for result in reached.await {
            match result {
                Ok(engine) => engines.push(engine),
                Err(err) => missed.push(format!("{err:#}")),
            }
        }
        Ok((engines, missed))
    }

    /// The swarm's nodes, asked of the manager once.
    pub async fn nodes(&self) -> Result<&[Node]> {
        let nodes = self.nodes.get_or_try_init(|| self.manager.nodes()).await?;
        Ok(nodes)
    }

    /// Node `id` (or hostname) as the manager lists it.
    pub async fn node(&self, id: &str) -> Result<Node> {
        let nodes = self.nodes().await?;
        let found = nodes.iter().find(|n| n.id == id).or_else(|| {
            let named: Vec<&Node> = nodes.iter().filter(|n| n.hostname == id).collect();
            // A hostname two nodes share names neither.
            (named.len() == 1).then(|| named[0])
        });
        found.cloned().ok_or_else(|| {
            usage(
                format!("the swarm lists no node {id}"),
                "`cryptus status` lists the swarm's nodes",
            )
        })
    }

    /// Whether cryptus can ask `node`'s engine: the manager's, or one the
    /// setting names.
    pub fn knows(&self, node: &Node) -> bool {
        node.id == self.manager_id || entry_for(&self.entries, node).is_some()
    }

    /// Whether cryptus can ask the engine of `node` (an id or a hostname).
    pub async fn reaches(&self, node: &str) -> bool {
        self.is_manager(node) || self.node(node).await.is_ok_and(|n| self.knows(&n))
    }

    /// Whether `id` (a node's id, or its hostname) is the manager cryptus
    /// talks to.
    pub fn is_manager(&self, id: &str) -> bool {
        id == self.manager_id || (!self.manager_name.is_empty() && id == self.manager_name)
    }

    /// The engine of node `node`: the manager's, or the one the setting
    /// names, connected and checked to be that node's. `why` says what
    /// cryptus needs the node for, in the error when none is known.
    pub async fn engine(&self, node: &Node, why: &str) -> Result<Engine> {
        if node.id == self.manager_id {
            return Ok(self.manager.clone());
        }
        let cached = self
            .connected
            .lock()
            .ok()
            .and_then(|c| c.get(&node.id).cloned());
        if let Some(engine) = cached {
            return Ok(engine);
        }
        let Some((named, url)) = entry_for(&self.entries, node) else {
            return Err(usage(
                format!(
                    "{why} on node {}, whose engine cryptus does not know",
                    node.hostname
                ),
                format!(
                    "name it in {NODES_VAR} (\"{}=unix:///PATH, tcp://HOST:PORT or ssh://USER@HOST\"); docs/swarm.md",
                    node.hostname
                ),
            ));
        };
        let hint = format!(
            "is dockerd running on {}? Check its URL in {NODES_VAR}",
            node.hostname
        );
        let cert = tls::node_dir(
            named,
            self.nodes_cert.as_deref(),
            self.manager_cert.as_deref(),
            Path::is_dir,
        );
        let cert = cert.filter(|_| url.starts_with("tcp://"));
        let engine = Engine::connect_to(url, cert.as_deref(), &hint).await?;
        let membership = engine
            .membership()
            .await
            .with_context(|| format!("asking the engine at {url} which node it is"))?;
        if membership.node_id.as_deref() != Some(node.id.as_str()) {
            let is = membership.node_id.map_or_else(
                || "is in no swarm".to_owned(),
                |id| format!("is node {id}'s"),
            );
            return Err(usage(
                format!(
                    "the engine at {url}, named in {NODES_VAR} for {}, {is}, not {}'s",
                    node.hostname, node.id
                ),
                format!("point {}'s entry at its own engine", node.hostname),
            ));
        }
        if let Ok(mut connected) = self.connected.lock() {
            connected.insert(node.id.clone(), engine.clone());
        }
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, hostname: &str) -> Node {
        Node {
            id: id.into(),
            hostname: hostname.into(),
            role: "worker".into(),
            state: "ready".into(),
            availability: "active".into(),
            addr: None,
            leader: false,
            cores: 1.0,
            memory: 1,
            labels: [("edge".to_owned(), "true".to_owned())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn placement_constraints_pick_the_nodes_that_may_run_a_color() {
        let n2 = node("id2", "n2");
        let yes = |c: &[&str]| may_run(&n2, &c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(yes(&[]));
        assert!(yes(&[
            "node.role==worker",
            "node.hostname==n2",
            "node.id == id2"
        ]));
        assert!(yes(&["node.labels.edge==true", "node.labels.zone!=east"]));
        assert!(yes(&["engine.labels.disk==ssd", "node.platform.os==linux"]));
        assert!(!yes(&["node.role==manager"]));
        assert!(!yes(&["node.hostname!=n2"]));
        assert!(!yes(&["node.labels.zone==east"]));
        assert!(!yes(&["node.labels.edge!=true"]));
        assert!(!yes(&["node.id==id3", "node.role==worker"]));
    }

    #[test]
    fn the_setting_names_each_nodes_engine() {
        let entries = parse_nodes(
            " n2=unix:///tmp/n2/docker.sock, abc123=tcp://10.0.0.3:2375 ,n4=ssh://ops@10.0.0.4",
        )
        .expect("a good setting");
        assert_eq!(
            entries,
            [
                ("n2".to_owned(), "unix:///tmp/n2/docker.sock".to_owned()),
                ("abc123".to_owned(), "tcp://10.0.0.3:2375".to_owned()),
                ("n4".to_owned(), "ssh://ops@10.0.0.4".to_owned())
            ]
        );
        assert_eq!(parse_nodes(""), Ok(Vec::new()));
        assert_eq!(
            entry_for(&entries, &node("x", "n2")),
            Some(("n2", "unix:///tmp/n2/docker.sock"))
        );
        assert_eq!(
            entry_for(&entries, &node("abc123", "other")),
            Some(("abc123", "tcp://10.0.0.3:2375"))
        );
        assert_eq!(entry_for(&entries, &node("y", "n3")), None);
    }

    #[test]
    fn a_setting_not_of_the_form_says_why() {
        for (setting, says) in [
            ("n2", "'n2' is not <node>=<engine URL>"),
            ("=unix:///s", "names no node"),
            ("n2=/tmp/s", "is not a unix://, tcp:// or ssh:// engine URL"),
            ("n2=ssh://", "is not a unix://, tcp:// or ssh:// engine URL"),
            ("n2=ssh://ops@h:2222", "names a port"),
            ("n2=tcp://", "is not a unix://, tcp:// or ssh:// engine URL"),
            ("n2=unix:///a,n2=unix:///b", "n2 is named twice"),
        ] {
            let why = parse_nodes(setting).expect_err(setting);
            assert!(why.contains(says), "{setting}: {why}");
        }
    }
}
