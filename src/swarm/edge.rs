//! The edges of a Swarm stack: the nginx tasks, each reached through its
//! node's engine (exec in the task's container). From inside one cryptus
//! probes the app's tasks on the overlay, by the same `tasks.<service>` name and the same network
//! nginx's upstream uses, so a task that answers is one nginx can reach;
//! and in each it writes the upstream, checks it with `nginx -t` and
//! reloads ([`Nginx::apply`], as on one engine).
//!
//! Every running task of the nginx service is an edge: each is reached
//! through its node's engine ([`super::nodes`]), and a switch applies to
//! all of them at once.

use std::net::IpAddr;

use anyhow::{Context, Result};
use futures_util::future::join_all;
use tokio::sync::OnceCell;

use crate::engine::{Engine, Task};
use crate::error::failed_with_hint;
use crate::health::{HEALTH_PATH, Probe, Report};
use crate::nginx::{self, Nginx};
use crate::stack::{APP_PORT, Color, LB_SERVICE};

use crate::inside::{run_script, split_answer};

use super::nodes::NodeEngines;
use super::service_name;

/// The probes in the probe script's output, per address.
pub fn parse_probes(output: &str) -> Vec<(String, Probe)> {
    let mut probes = Vec::new();
    for chunk in output.split("@@ ").skip(1) {
        let (addr, answer) = chunk.split_once('\n').unwrap_or((chunk, ""));
        probes.push((addr.trim().to_owned(), parse_answer(answer)));
    }
    probes
}

/// One raw HTTP answer as a [`Probe`].
fn parse_answer(answer: &str) -> Probe {
    let (code, body) = match split_answer(answer) {
        Ok(answer) => answer,
        Err(why) => return Probe::Unreachable(why),
    };
    match serde_json::from_str::<Report>(body.trim()) {
        Ok(report) if code == 200 => Probe::Answered(report),
        _ => Probe::Refused {
            code,
            body: body.to_owned(),
        },
    }
}

/// One edge nginx: its task's container, reached through its node's engine.
pub struct Edge {
    engine: Engine,
    project: String,
    /// The hostname of the node it runs on.
    pub node: String,
    /// The container's name on its node's engine.
    pub container: String,
    /// What `nginx -v` says, asked once ([`Edge::version`]).
    version: OnceCell<Option<String>>,
}

/// Every edge nginx of the stack: one per running task of its nginx
/// service, the manager's first.
pub struct Edges {
    pub all: Vec<Edge>,
}

impl Edges {
    /// The running nginx tasks of the project, each through its node's
    /// engine (the manager's, or one named in `CRYPTUS_SWARM_NODES`). A
    /// single edge on the manager costs no call to any other engine.
    pub async fn find(engine: &Engine, project: &str) -> Result<Edges> {
        let name = service_name(project, LB_SERVICE);
        let (membership, services, tasks) = tokio::try_join!(
            engine.membership(),
            engine.services(project),
            engine.tasks(project)
        )?;
        let not_running = || {
            failed_with_hint(
                format!(
                    "the stack of project {project} is not running on the swarm ({name} has no running task)"
                ),
                "run `cryptus start` first; `cryptus status` shows each task",
            )
        };
        let service = services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(not_running)?;
        let running: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.service_id == service.id && t.state == "running")
            .collect();
        let nodes = NodeEngines::from_env(engine, &membership)?;
        let why = format!("{name} runs a task");
        let reached = running.iter().map(|task| async {
            let node = task.node_id.as_deref().unwrap_or_default();
            let container = task.container_id.as_deref().ok_or_else(not_running)?;
            let reached = nodes.task_container(node, container, &why).await?;
            let inspected = reached
                .container
                .filter(|c| c.running)
                .ok_or_else(not_running)?;
            Ok::<_, anyhow::Error>((
                reached.on_manager,
                Edge {
                    engine: reached.engine,
                    project: project.to_owned(),
                    node: reached.node,
                    container: inspected.name,
                    version: OnceCell::new(),
                },
            ))
        });
        let mut all = futures_util::future::try_join_all(reached).await?;
        if all.is_empty() {
            return Err(not_running());
        }
        all.sort_by_key(|(on_manager, edge)| (!on_manager, edge.node.clone()));
        let all = all.into_iter().map(|(_, edge)| edge).collect();
        Ok(Edges { all })
    }

    /// The edge the app's tasks are probed from: every edge is on the
    /// same overlay, so any one sees them as nginx does.
    pub fn first(&self) -> &Edge {
        &self.all[0]
    }

    /// What a check or a message calls `edge`: `nginx` when it is the
    /// only one, else `nginx on <node>`.
    pub fn label(&self, edge: &Edge) -> String {
        if self.all.len() == 1 {
            "nginx".to_owned()
        } else {
            format!("nginx on {}", edge.node)
        }
    }

    /// The color every edge serves; an error when one cannot say, or when
    /// they disagree (naming what each serves).
    pub async fn served(&self) -> Result<Color> {
        let served = join_all(self.all.iter().map(Edge::served)).await;
        let mut colors = Vec::new();
        for (edge, color) in self.all.iter().zip(served) {
            colors.push((edge.node.as_str(), color?));
        }
        agreed(&colors).map_err(|why| anyhow::anyhow!(why))
    }

    /// Points every edge at `color`, at once; the first failure, naming
    /// its node (the caller puts every edge back).
    pub async fn apply(&self, color: Color, backups: &[IpAddr]) -> Result<()> {
        let applied = join_all(self.all.iter().map(|e| e.apply(color, backups))).await;
        applied.into_iter().collect()
    }

    /// Asks every edge's nginx its version, at once, ahead of a switch
    /// (each is asked once; an answer is kept).
    pub async fn learn_versions(&self) {
        join_all(self.all.iter().map(Edge::version)).await;
    }

    /// Points the edges whose nginx cannot follow `tasks.<service>` (no
    /// `resolve`) at `color`'s tasks as they are now (`addresses`, which
    /// answered healthy): after tasks came or went. The others follow
    /// by themselves and are left alone.
    pub async fn repin(&self, color: Color, addresses: &[IpAddr]) -> Result<()> {
        let mut pinned = Vec::new();
        for edge in &self.all {
            if !edge.follows_names().await {
                pinned.push(edge.apply(color, addresses));
            }
        }
        join_all(pinned).await.into_iter().collect()
    }

    /// A warning for each edge whose nginx has no `resolve`: it serves the
    /// addresses it was given, not tasks the swarm moves later.
    pub async fn pinned_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for edge in &self.all {
            if !edge.follows_names().await {
                let version = edge.version().await.unwrap_or("of an unknown version");
                warnings.push(format!(
                    "nginx {version} on {} has no upstream `resolve` (1.27.3 or later): it sends to the addresses of the tasks as they are now; tasks the swarm moves or restarts are followed only at the next `cryptus deploy`, `rollback`, `scale` or `restart`",
                    edge.node
                ));
            }
        }
        warnings
    }

    /// Writes one upstream file (a canary's) on every edge, at once: write,
    /// `nginx -t`, reload; the first failure, naming its node (the caller
    /// puts every edge back).
    pub async fn apply_upstream(&self, upstream: &str) -> Result<()> {
        let applied = join_all(
            self.all
                .iter()
                .map(|e| e.apply_file(nginx::UPSTREAM_FILE, upstream)),
        )
        .await;
        applied.into_iter().collect()
    }

    /// Each edge's engine and nginx container, whose access logs a
    /// canary's judge reads.
    pub fn logs(&self) -> Vec<(&Engine, &str)> {
        self.all
            .iter()
            .map(|e| (&e.engine, e.container.as_str()))
            .collect()
    }

    /// Each edge's nginx worker pids, to drain after a reload.
    pub async fn workers(&self) -> Vec<Vec<String>> {
        let workers = join_all(self.all.iter().map(Edge::workers)).await;
        workers.into_iter().map(Result::unwrap_or_default).collect()
    }

    /// Waits on every edge for the workers from before a reload (`old`,
    /// as [`Edges::workers`] gave them) to finish their requests.
    pub async fn drain(
        &self,
        printer: &crate::output::Printer,
        old: &[Vec<String>],
        limit: std::time::Duration,
    ) -> Result<()> {
        let none = Vec::new();
        let drained = join_all(
            self.all
                .iter()
                .enumerate()
                .map(|(n, edge)| edge.drain(printer, old.get(n).unwrap_or(&none), limit)),
        )
        .await;
        drained.into_iter().collect()
    }

    /// The app through every edge's nginx: each edge's node and answer.
    pub async fn probe_lbs(&self) -> Vec<(&str, Result<Probe>)> {
        self.probe_lbs_times(1)
            .await
            .into_iter()
            .map(|(node, probes)| (node, probes.map(one_answer)))
            .collect()
    }

    /// [`Edge::probe_lb_times`] through every edge at once.
    pub async fn probe_lbs_times(&self, times: u32) -> Vec<(&str, Result<Vec<Probe>>)> {
        let probes = join_all(self.all.iter().map(|e| e.probe_lb_times(times))).await;
        self.all
            .iter()
            .map(|e| e.node.as_str())
            .zip(probes)
            .collect()
    }
}

/// The longest [`Follower::settle`] waits for the tasks to settle.
const SETTLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the edges whose nginx has no `resolve` pointed at a color's
/// tasks while the swarm replaces them (a rolling restart): each
/// [`Follower::look`] gives them the tasks answering now, when that
/// changed. nginx that follows names needs none ([`Follower::new`] is then
/// `None`).
pub struct Follower<'e> {
    edges: &'e Edges,
    color: Color,
    pinned: std::sync::Mutex<Vec<IpAddr>>,
}

impl<'e> Follower<'e> {
    pub async fn new(edges: &'e Edges, color: Color) -> Option<Follower<'e>> {
        edges.learn_versions().await;
        for edge in &edges.all {
            if !edge.follows_names().await {
                return Some(Follower {
                    edges,
                    color,
                    pinned: std::sync::Mutex::new(Vec::new()),
                });
            }
        }
        None
    }

    /// [`Follower::look`]; a failure is logged and the last pin kept (a
    /// missed look is made up by the next): a probe or reload that fails
    /// once must not end a rolling restart half-way.
    pub async fn look_or_warn(&self) {
        if let Err(err) = self.look().await {
            tracing::warn!("giving nginx the tasks of {}: {err:#}", self.color);
        }
    }

    /// The last look once the swarm is done: until exactly `wanted` tasks
    /// answer (a replaced task can answer for a moment after it left the
    /// task list), for at most [`SETTLE_DEADLINE`]; then the edges get
    /// those (or the last answering, at the deadline).
    pub async fn settle(&self, wanted: usize) {
        let end = tokio::time::Instant::now() + SETTLE_DEADLINE;
        loop {
            match self.answering().await {
                Ok(now) if now.len() == wanted || tokio::time::Instant::now() >= end => {
                    if let Err(err) = self.pin(now).await {
                        tracing::warn!("giving nginx the tasks of {}: {err:#}", self.color);
                    }
                    return;
                }
                Err(err) if tokio::time::Instant::now() >= end => {
                    tracing::warn!("giving nginx the tasks of {}: {err:#}", self.color);
                    return;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }

    /// The color's tasks answering healthy now, sorted.
    async fn answering(&self) -> Result<Vec<IpAddr>> {
        let expect = crate::health::Expect {
            color: self.color,
            version: None,
        };
        let probes = self.edges.first().probe_tasks(self.color).await?;
        let mut now: Vec<IpAddr> = probes
            .iter()
            .filter(|(_, probe)| probe.satisfies(&expect))
            .filter_map(|(addr, _)| addr.parse().ok())
            .collect();
        now.sort();
        Ok(now)
    }

    /// Gives the edges `now` when it differs from what they were given;
    /// none answering leaves them as they are.
    async fn pin(&self, now: Vec<IpAddr>) -> Result<()> {
        let same = self.pinned.lock().map(|p| *p == now).unwrap_or(false);
        if now.is_empty() || same {
            return Ok(());
        }
        self.edges.repin(self.color, &now).await?;
        if let Ok(mut pinned) = self.pinned.lock() {
            *pinned = now;
        }
        Ok(())
    }

    /// Re-pins the edges when the color's answering tasks changed since
    /// the last look; none answering leaves them as they are.
    pub async fn look(&self) -> Result<()> {
        let now = self.answering().await?;
        self.pin(now).await
    }
}

/// The last of a probe's answers; none is a probe that printed nothing.
fn one_answer(mut probes: Vec<Probe>) -> Probe {
    probes
        .pop()
        .unwrap_or_else(|| Probe::Unreachable("the probe printed nothing".into()))
}

/// The one color the edges serve; else what each serves.
fn agreed(served: &[(&str, Color)]) -> Result<Color, String> {
    match served {
        [] => Err("no edge nginx answered".to_owned()),
        [(_, color), rest @ ..] if rest.iter().all(|(_, c)| c == color) => Ok(*color),
        _ => Err(format!(
            "the edges disagree: {}",
            served
                .iter()
                .map(|(node, color)| format!("nginx on {node} serves {color}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

impl Edge {
    /// nginx in this edge's container, through its node's engine.
    pub fn nginx(&self) -> Nginx<'_> {
        Nginx::named(&self.engine, self.container.clone())
    }

    async fn run_probe(&self, name: &str, port: u16, how: &str) -> Result<Vec<(String, Probe)>> {
        let output = run_script(&self.engine, &self.container, name, port, HEALTH_PATH, how)
            .await
            .with_context(|| format!("probing {name} from {}", self.container))?;
        Ok(parse_probes(&output))
    }

    /// Prometheus's service of the stack, asked from inside this edge's
    /// container (it publishes no port on a Swarm).
    pub fn prometheus(&self) -> crate::metrics::Prometheus {
        crate::metrics::Prometheus::Inside {
            engine: self.engine.clone(),
            container: self.container.clone(),
            host: service_name(&self.project, crate::metrics::PROMETHEUS),
            port: crate::metrics::PROMETHEUS_PORT,
        }
    }

    /// Each task of `color`'s service, as nginx's network sees it.
    pub async fn probe_tasks(&self, color: Color) -> Result<Vec<(String, Probe)>> {
        let tasks = format!("tasks.{}", service_name(&self.project, color.service()));
        self.run_probe(&tasks, APP_PORT, "all").await
    }

    /// The app at each of `addrs`, as nginx's network reaches it: the
    /// tasks a canary's upstream names by address.
    pub async fn probe_addrs(&self, addrs: &[IpAddr]) -> Result<Vec<(String, Probe)>> {
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        self.run_probe(&addrs.join(" "), APP_PORT, "one").await
    }

    /// One task of the app, by its container's name, which the swarm
    /// puts in the overlay's DNS once the task is healthy.
    pub async fn probe_task(&self, container: &str) -> Result<Probe> {
        let mut probes = self.run_probe(container, APP_PORT, "all").await?;
        if probes.is_empty() {
            return Ok(Probe::Unreachable(format!(
                "{container} does not resolve on the overlay (the swarm names a task once it is healthy)"
            )));
        }
        Ok(probes.swap_remove(0).1)
    }

    /// redis's `INFO default` at `host:port`, asked over the overlay from
    /// inside nginx's container ([`crate::inside::redis_info`]).
    pub async fn redis_info(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>> {
        crate::inside::redis_info(&self.engine, &self.container, host, port).await
    }

    /// The app through nginx, from inside its container.
    pub async fn probe_lb(&self) -> Result<Probe> {
        Ok(one_answer(self.probe_lb_times(1).await?))
    }

    /// `times` answers through nginx, one after the other, in one exec (an
    /// exec costs about 100 ms; the answers, a millisecond each).
    pub async fn probe_lb_times(&self, times: u32) -> Result<Vec<Probe>> {
        let addrs = vec!["127.0.0.1"; times.max(1) as usize].join(" ");
        let probes = self.run_probe(&addrs, nginx::HTTP_PORT, "one").await?;
        Ok(probes.into_iter().map(|(_, probe)| probe).collect())
    }

    /// The color nginx serves as its loaded configuration says
    /// (`/cryptus/active` on its status port, asked from inside its
    /// container: the port is not published on a Swarm), as on one engine.
    pub async fn served(&self) -> Result<Color> {
        let (engine, container) = (&self.engine, &self.container);
        let port = nginx::STATUS_PORT;
        let asking = || {
            format!(
                "asking nginx in {} on {} which color it serves",
                self.container, self.node
            )
        };
        // Bounded: the switch then goes by the cluster's record.
        let asked = run_script(
            engine,
            container,
            "127.0.0.1",
            port,
            "/cryptus/active",
            "one",
        );
        let output = tokio::time::timeout(SERVED_DEADLINE, asked)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {}s", SERVED_DEADLINE.as_secs()))
            .with_context(asking)?
            .with_context(asking)?;
        served_in(&output).map_err(|why| {
            anyhow::anyhow!(
                "nginx in {} names no color it serves: {why}",
                self.container
            )
        })
    }

    /// What `nginx -v` says in this edge, asked once; `None` when it
    /// cannot be asked or names no version.
    pub async fn version(&self) -> Option<&str> {
        let asked = self.version.get_or_init(|| async {
            match self.nginx().version().await {
                Ok(version) => version,
                Err(err) => {
                    tracing::debug!("asking nginx on {} its version: {err:#}", self.node);
                    None
                }
            }
        });
        asked.await.as_deref()
    }

    /// Whether this edge's nginx follows `tasks.<service>` as tasks move
    /// (`resolve`, 1.27.3 or later). One that names no version is given
    /// addresses, which every nginx reads.
    pub async fn follows_names(&self) -> bool {
        self.version()
            .await
            .is_some_and(nginx::has_upstream_resolve)
    }

    /// Points nginx at `color`'s tasks, with the addresses known to
    /// answer as backups: write, `nginx -t`, reload. An nginx without
    /// `resolve` is given those addresses as its servers instead.
    pub async fn apply(&self, color: Color, backups: &[IpAddr]) -> Result<()> {
        let service = service_name(&self.project, color.service());
        let mut upstream = nginx::render_resolved_upstream(color, &service, APP_PORT, backups)?;
        if !self.follows_names().await {
            let addresses = std::collections::BTreeMap::from([(service, backups.to_vec())]);
            upstream = nginx::pin_upstream(&upstream, &addresses);
        }
        self.nginx()
            .apply(&[(nginx::UPSTREAM_FILE, &upstream)])
            .await
            .with_context(|| {
                format!(
                    "switching nginx in {} on {} to {color}",
                    self.container, self.node
                )
            })
    }

    /// One file of nginx's state volume; `None` when there is none.
    pub async fn read(&self, file: &str) -> Result<Option<String>> {
        self.nginx()
            .read(file)
            .await
            .with_context(|| format!("reading {file} in {} on {}", self.container, self.node))
    }

    /// Writes one file of nginx's state volume, `nginx -t`, reload.
    pub async fn apply_file(&self, file: &str, text: &str) -> Result<()> {
        self.nginx()
            .apply(&[(file, text)])
            .await
            .with_context(|| format!("applying {file} in {} on {}", self.container, self.node))
    }

    /// `nginx -t` in the task: `Err` with nginx's reason when it fails.
    pub async fn test(&self) -> Result<Result<(), String>> {
        self.nginx().test().await
    }

    /// nginx's worker pids, to drain after a reload.
    pub async fn workers(&self) -> Result<Vec<String>> {
        self.nginx().workers().await
    }

    /// Waits for the workers from before a reload to finish their requests.
    pub async fn drain(
        &self,
        printer: &crate::output::Printer,
        old: &[String],
        limit: std::time::Duration,
    ) -> Result<()> {
        crate::switch::upstream::drain(&self.nginx(), printer, old, limit).await?;
        Ok(())
    }
}

/// The color in the probe script's output of `/cryptus/active`.
/// How long the edge may take to say which color it serves.
const SERVED_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

fn served_in(output: &str) -> Result<Color, String> {
    let (_, answer) = output.split_once('\n').unwrap_or(("", output));
    match split_answer(answer)? {
        (200, body) => nginx::Served::parse(body)
            .map(|served| served.color)
            .ok_or_else(|| format!("answered {:?}", body.trim())),
        (code, body) => Err(format!("answered {code} {}", body.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: &str = r#"{"status":"healthy","timestamp":"t","uptime":1.5,"instance":"green","version":"2.0.0","memory":{"used":1,"total":2}}"#;

    #[test]
    fn probes_parse_from_curl_wget_and_raw_answers() {
        let output = format!(
            "@@ 10.0.1.5\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{HEALTHY}\n\
             @@ 10.0.1.6\nHTTP/1.0 200 OK\r\n\r\n{HEALTHY}\n\n\
             @@ 10.0.1.7\nHTTP/1.1 503 Service Unavailable\r\n\r\n{{\"status\":\"unhealthy\"}}\n\
             @@ 10.0.1.8\nHTTP/1.0 000 no connection\n\n"
        );
        let probes = parse_probes(&output);
        let addrs: Vec<&str> = probes.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(addrs, ["10.0.1.5", "10.0.1.6", "10.0.1.7", "10.0.1.8"]);
        let expect = crate::health::Expect {
            color: Color::Green,
            version: Some("2.0.0".into()),
        };
        assert!(probes[0].1.satisfies(&expect), "{}", probes[0].1);
        assert!(probes[1].1.satisfies(&expect), "{}", probes[1].1);
        assert!(matches!(probes[2].1, Probe::Refused { code: 503, .. }));
        assert_eq!(probes[3].1.to_string(), "no answer (no connection)");
        assert!(parse_probes("").is_empty());
        assert!(matches!(parse_answer("garbage"), Probe::Unreachable(_)));
    }

    #[test]
    fn the_served_color_is_read_from_nginx_answer() {
        let ok = "@@ 127.0.0.1\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\ngreen\n\n";
        assert_eq!(served_in(ok), Ok(Color::Green));
        let canary = "@@ 127.0.0.1\nHTTP/1.0 200 OK\r\n\r\nblue;canary=green:10\n";
        assert_eq!(served_in(canary), Ok(Color::Blue));
        let down = "@@ 127.0.0.1\nHTTP/1.0 000 no connection\n\n";
        assert_eq!(served_in(down), Err("no connection".to_owned()));
        assert!(served_in("@@ 127.0.0.1\nHTTP/1.0 200 OK\r\n\r\npurple\n").is_err());
        assert!(served_in("@@ 127.0.0.1\nHTTP/1.0 404 Not Found\r\n\r\nx").is_err());
    }

    #[test]
    fn the_edges_agree_on_a_color_or_say_what_each_serves() {
        use Color::{Blue, Green};
        assert_eq!(agreed(&[("n1", Green)]), Ok(Green));
        assert_eq!(agreed(&[("n1", Blue), ("n2", Blue)]), Ok(Blue));
        assert_eq!(
            agreed(&[("n1", Blue), ("n2", Green)]),
            Err("the edges disagree: nginx on n1 serves blue, nginx on n2 serves green".to_owned())
        );
        assert!(agreed(&[]).is_err());
    }
}
