//! The engines of the swarm's nodes: the manager's is the one cryptus
//! talks to (DOCKER_HOST); any other node's is named by the operator in
//! `CRYPTUS_SWARM_NODES` (`<hostname or node id>=<engine URL>,...`), since
//! a manager does not say how to reach another node's engine. Each is
//! connected when first asked for, checked to be that node's (the swarm's
//! node id in its `/info`), and kept for the command. A deploy of a local
//! image asks every node that may run the color whether it has it.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use tokio::sync::OnceCell;

use crate::context::Stack;
use crate::engine::{Engine, Node};
use crate::error::{failed_with_hint, usage};
use crate::stack::{Color, Release};

/// The setting that names other nodes' engines.
pub const NODES_VAR: &str = "CRYPTUS_SWARM_NODES";

/// What the setting looks like, for hints.
const NODES_FORM: &str =
    "CRYPTUS_SWARM_NODES=\"<node hostname or id>=unix:///PATH|tcp://HOST:PORT,...\"";

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
        let address = url
            .strip_prefix("unix://")
            .or_else(|| url.strip_prefix("tcp://"));
        if address.is_none_or(str::is_empty) {
            return Err(format!(
                "'{url}' (for {node}) is not a unix:// or tcp:// engine URL"
            ));
        }
        if entries.iter().any(|(known, _)| known == node) {
            return Err(format!("{node} is named twice"));
        }
        entries.push((node.to_owned(), url.to_owned()));
    }
    Ok(entries)
}

/// The URL the entries give `node`, by its id or its hostname.
pub fn entry_for<'e>(entries: &'e [(String, String)], node: &Node) -> Option<&'e str> {
    entries
        .iter()
        .find(|(key, _)| *key == node.id || *key == node.hostname)
        .map(|(_, url)| url.as_str())
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

/// Whether an image reference names a registry host
/// (`registry.example:5000/app:2`, `localhost/app`): every node can pull
/// it, so it need not be on a node already.
pub fn names_registry(reference: &str) -> bool {
    reference
        .split_once('/')
        .is_some_and(|(host, _)| host.contains('.') || host.contains(':') || host == "localhost")
}

/// Every ready, active node that may run `color` (by its service's
/// placement constraints) must have `image`, asked of each node's engine;
/// else one error naming the nodes that lack it or whose engine is not
/// known. An image of a registry is not asked for (every node can pull it).
pub async fn image_on_nodes(stack: &Stack<'_>, color: Color, release: &Release) -> Result<()> {
    let (engine, image) = (stack.engine, &release.image);
    let Some(service) = stack.compose.service(color.service()) else {
        return Ok(());
    };
    if names_registry(image) {
        return Ok(());
    }
    let project = &stack.project.name;
    let spec = super::plan::service_spec(project, stack.compose, service, release, None)?.spec;
    let (membership, nodes) = tokio::try_join!(engine.membership(), engine.nodes())?;
    let engines = NodeEngines::from_env(engine, &membership.node_id.unwrap_or_default())?;
    let asked = nodes
        .iter()
        .filter(|n| n.state == "ready" && n.availability == "active")
        .filter(|n| may_run(n, &spec.constraints))
        .map(|node| async {
            if !engines.knows(node) {
                return Ok(Some(format!("{} (no engine known)", node.hostname)));
            }
            let why = format!("{image} is looked for");
            let labels = engines.engine(node, &why).await?.image_labels(image).await;
            let labels =
                labels.with_context(|| format!("looking for {image} on {}", node.hostname))?;
            Ok::<_, anyhow::Error>(labels.is_none().then(|| node.hostname.clone()))
        });
    let missing: Vec<String> = try_join_all(asked).await?.into_iter().flatten().collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(failed_with_hint(
        format!(
            "{image} is not on every node that may run {color}: {}",
            missing.join(", ")
        ),
        format!(
            "load the image on those nodes (docker load) or push it to your registry and deploy that reference; name each node's engine in {NODES_VAR}"
        ),
    ))
}

/// The engine of each node, for one command.
pub struct NodeEngines<'m> {
    manager: &'m Engine,
    manager_id: String,
    entries: Vec<(String, String)>,
    nodes: OnceCell<Vec<Node>>,
    connected: Mutex<HashMap<String, Engine>>,
}

impl<'m> NodeEngines<'m> {
    /// The engines the setting names, beside `manager` (node `manager_id`).
    /// A setting not of the form is a usage error.
    pub fn from_env(manager: &'m Engine, manager_id: &str) -> Result<NodeEngines<'m>> {
        let setting = std::env::var(NODES_VAR).unwrap_or_default();
        let entries = parse_nodes(&setting).map_err(|why| {
            usage(
                format!("{NODES_VAR} is not understood: {why}"),
                format!("write it as {NODES_FORM}; docs/swarm.md"),
            )
        })?;
        Ok(NodeEngines {
            manager,
            manager_id: manager_id.to_owned(),
            entries,
            nodes: OnceCell::new(),
            connected: Mutex::new(HashMap::new()),
        })
    }

    /// The swarm's nodes, asked of the manager once.
    pub async fn nodes(&self) -> Result<&[Node]> {
        let nodes = self.nodes.get_or_try_init(|| self.manager.nodes()).await?;
        Ok(nodes)
    }

    /// Node `id` as the manager lists it.
    pub async fn node(&self, id: &str) -> Result<Node> {
        let nodes = self.nodes().await?;
        nodes.iter().find(|n| n.id == id).cloned().ok_or_else(|| {
            usage(
                format!("the swarm lists no node {id}"),
                "`cryptus status` lists the swarm's nodes",
            )
        })
    }

    /// Whether cryptus can ask `node`'s engine: the manager's, or one the
    /// setting names.
    pub fn knows(&self, node: &Node) -> bool {
        self.is_manager(&node.id) || entry_for(&self.entries, node).is_some()
    }

    /// Whether `id` is the manager cryptus talks to.
    pub fn is_manager(&self, id: &str) -> bool {
        id == self.manager_id
    }

    /// The engine of node `node`: the manager's, or the one the setting
    /// names, connected and checked to be that node's. `why` says what
    /// cryptus needs the node for, in the error when none is known.
    pub async fn engine(&self, node: &Node, why: &str) -> Result<Engine> {
        if self.is_manager(&node.id) {
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
        let Some(url) = entry_for(&self.entries, node) else {
            return Err(usage(
                format!(
                    "{why} on node {}, whose engine cryptus does not know",
                    node.hostname
                ),
                format!(
                    "name it in {NODES_VAR} (\"{}=unix:///PATH or tcp://HOST:PORT\"); docs/swarm.md",
                    node.hostname
                ),
            ));
        };
        let hint = format!(
            "is dockerd running on {}? Check its URL in {NODES_VAR}",
            node.hostname
        );
        let engine = Engine::connect_to(url, &hint).await?;
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
    fn an_image_of_a_registry_is_told_from_a_local_one() {
        assert!(names_registry("registry.example:5000/app:2"));
        assert!(names_registry("localhost/app"));
        assert!(names_registry("ghcr.io/acme/app:1"));
        assert!(!names_registry("acme/app:1"));
        assert!(!names_registry("app:1"));
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
        let entries = parse_nodes(" n2=unix:///tmp/n2/docker.sock, abc123=tcp://10.0.0.3:2375 ,")
            .expect("a good setting");
        assert_eq!(
            entries,
            [
                ("n2".to_owned(), "unix:///tmp/n2/docker.sock".to_owned()),
                ("abc123".to_owned(), "tcp://10.0.0.3:2375".to_owned())
            ]
        );
        assert_eq!(parse_nodes(""), Ok(Vec::new()));
        assert_eq!(
            entry_for(&entries, &node("x", "n2")),
            Some("unix:///tmp/n2/docker.sock")
        );
        assert_eq!(
            entry_for(&entries, &node("abc123", "other")),
            Some("tcp://10.0.0.3:2375")
        );
        assert_eq!(entry_for(&entries, &node("y", "n3")), None);
    }

    #[test]
    fn a_setting_not_of_the_form_says_why() {
        for (setting, says) in [
            ("n2", "'n2' is not <node>=<engine URL>"),
            ("=unix:///s", "names no node"),
            ("n2=/tmp/s", "is not a unix:// or tcp:// engine URL"),
            ("n2=ssh://h", "is not a unix:// or tcp:// engine URL"),
            ("n2=tcp://", "is not a unix:// or tcp:// engine URL"),
            ("n2=unix:///a,n2=unix:///b", "n2 is named twice"),
        ] {
            let why = parse_nodes(setting).expect_err(setting);
            assert!(why.contains(says), "{setting}: {why}");
        }
    }
}
