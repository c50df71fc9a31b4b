//! The edge of a Swarm stack: the nginx task on the manager cryptus talks
//! to, reached through that manager's engine (exec in the task's
//! container). From inside it cryptus probes the app's tasks on the
//! overlay, by the same `tasks.<service>` name and the same network
//! nginx's upstream uses, so a task that answers is one nginx can reach;
//! and there it writes the upstream, checks it with `nginx -t` and
//! reloads ([`Nginx::apply`], as on one engine).
//!
//! Only the manager's engine is reachable, so only one edge is: an nginx
//! service with running tasks on other nodes is refused, with a hint, until
//! cryptus reaches other nodes' engines.

use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::engine::{Engine, Task};
use crate::error::{failed_with_hint, usage};
use crate::health::{HEALTH_PATH, Probe, Report};
use crate::nginx::{self, Nginx};
use crate::stack::{APP_PORT, Color, LB_SERVICE};

use super::service_name;

/// Fetches `/api/health` of each address `tasks.<service>` resolves to (or
/// of one host, with `$4` = `one`), with whatever the image has: curl,
/// wget (busybox), or bash's `/dev/tcp` (the Debian nginx images have bash
/// and none of the others). Each answer follows a line `@@ <address>`; a
/// fetch that fails prints `HTTP/1.0 000 <why>`.
const PROBE_SCRIPT: &str = r#"name="$1"; port="$2"; path="$3"; how="$4"
get() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -i -m 3 "http://$1:$port$path" || echo "HTTP/1.0 000 curl exit $?"
  elif command -v wget >/dev/null 2>&1; then
    body=$(wget -q -T 3 -O- "http://$1:$port$path" 2>&1) && printf 'HTTP/1.0 200 OK\r\n\r\n%s\n' "$body" \
      || printf 'HTTP/1.0 000 %s\n' "$body"
  elif command -v bash >/dev/null 2>&1; then
    bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: cryptus\r\nConnection: close\r\n\r\n" "$2" >&3
      exec timeout 3 cat <&3' "$1" "$port" "$path" || echo "HTTP/1.0 000 no connection"
  else
    echo "HTTP/1.0 000 no curl, wget or bash in the image"
  fi
}
if [ "$how" = one ]; then
  addrs="$name"
else
  addrs=$(getent ahostsv4 "$name" 2>/dev/null | while read -r a _; do echo "$a"; done | sort -u)
  [ -n "$addrs" ] || addrs=$(nslookup "$name" 2>/dev/null | sed -n '/^Name:/,$s/^Address[^:]*: *//p' | sort -u)
fi
for a in $addrs; do echo "@@ $a"; get "$a"; echo; done
"#;

/// The probes in the probe script's output, per address.
pub fn parse_probes(output: &str) -> Vec<(String, Probe)> {
    let mut probes = Vec::new();
    for chunk in output.split("@@ ").skip(1) {
        let (addr, answer) = chunk.split_once('\n').unwrap_or((chunk, ""));
        probes.push((addr.trim().to_owned(), parse_answer(answer)));
    }
    probes
}

/// One raw HTTP answer's code and body; why there is none, when the fetch
/// failed (code 000) or printed no HTTP.
fn split_answer(answer: &str) -> Result<(u16, &str), String> {
    let answer = answer.trim_start();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .or_else(|| answer.split_once("\n\n"))
        .unwrap_or((answer, ""));
    let status = head.lines().next().unwrap_or_default();
    let mut words = status.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(_), Some(0)) => Err(words.collect::<Vec<_>>().join(" ")),
        (Some(proto), Some(code)) if proto.starts_with("HTTP/") => Ok((code, body)),
        _ => Err(format!("no HTTP answer: {}", status.trim())),
    }
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

/// The edge nginx cryptus drives: its task's container on the manager.
pub struct Edge<'e> {
    engine: &'e Engine,
    project: String,
    /// The container's name on the manager's engine.
    pub container: String,
}

/// Of the nginx service's running tasks, the one on `manager`; the
/// others are on nodes cryptus cannot reach yet.
fn edge_task<'t>(tasks: &'t [&'t Task], manager: &str) -> (Option<&'t Task>, usize) {
    let here = tasks
        .iter()
        .copied()
        .find(|t| t.node_id.as_deref() == Some(manager));
    let elsewhere = tasks
        .iter()
        .filter(|t| t.node_id.as_deref() != Some(manager))
        .count();
    (here, elsewhere)
}

impl<'e> Edge<'e> {
    /// The nginx task on the manager cryptus talks to.
    pub async fn find(engine: &'e Engine, project: &str) -> Result<Edge<'e>> {
        let name = service_name(project, LB_SERVICE);
        let (membership, services, tasks) = tokio::try_join!(
            engine.membership(),
            engine.services(project),
            engine.tasks(project)
        )?;
        let not_running = || {
            failed_with_hint(
                format!(
                    "the stack of project {project} is not running on the swarm ({name} has no running task on this manager)"
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
        let manager = membership.node_id.unwrap_or_default();
        let (here, elsewhere) = edge_task(&running, &manager);
        if elsewhere > 0 {
            return Err(usage(
                format!(
                    "{name} runs on {elsewhere} node(s) besides this manager; cryptus reaches only the manager's nginx yet"
                ),
                "constrain nginx to one manager (deploy.placement.constraints: [node.hostname==...]); docs/swarm.md",
            ));
        }
        let container = here
            .and_then(|t| t.container_id.clone())
            .ok_or_else(not_running)?;
        let inspected = engine
            .inspect(&container)
            .await?
            .filter(|c| c.running)
            .ok_or_else(not_running)?;
        Ok(Edge {
            engine,
            project: project.to_owned(),
            container: inspected.name,
        })
    }

    fn nginx(&self) -> Nginx<'e> {
        Nginx::named(self.engine, self.container.clone())
    }

    async fn run_probe(&self, name: &str, port: u16, how: &str) -> Result<Vec<(String, Probe)>> {
        let port = port.to_string();
        let output = self
            .engine
            .exec(
                &self.container,
                &[
                    "sh",
                    "-c",
                    PROBE_SCRIPT,
                    "sh",
                    name,
                    &port,
                    HEALTH_PATH,
                    how,
                ],
            )
            .await
            .with_context(|| format!("probing {name} from {}", self.container))?;
        Ok(parse_probes(&output.stdout))
    }

    /// Each task of `color`'s service, as nginx's network sees it.
    pub async fn probe_tasks(&self, color: Color) -> Result<Vec<(String, Probe)>> {
        let tasks = format!("tasks.{}", service_name(&self.project, color.service()));
        self.run_probe(&tasks, APP_PORT, "all").await
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

    /// The app through nginx, from inside its container.
    pub async fn probe_lb(&self) -> Result<Probe> {
        let mut probes = self.run_probe("127.0.0.1", nginx::HTTP_PORT, "one").await?;
        Ok(probes.pop().map_or_else(
            || Probe::Unreachable("the probe printed nothing".into()),
            |(_, p)| p,
        ))
    }

    /// The color nginx serves as its loaded configuration says
    /// (`/cryptus/active` on its status port, asked from inside its
    /// container: the port is not published on a Swarm), as on one engine.
    pub async fn served(&self) -> Result<Color> {
        let port = nginx::STATUS_PORT.to_string();
        let args = [
            "sh",
            "-c",
            PROBE_SCRIPT,
            "sh",
            "127.0.0.1",
            &port,
            "/cryptus/active",
            "one",
        ];
        let asking = || format!("asking nginx in {} which color it serves", self.container);
        // Bounded: the switch then goes by the cluster's record.
        let output =
            tokio::time::timeout(SERVED_DEADLINE, self.engine.exec(&self.container, &args))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {}s", SERVED_DEADLINE.as_secs()))
                .with_context(asking)?
                .with_context(asking)?;
        served_in(&output.stdout).map_err(|why| {
            anyhow::anyhow!(
                "nginx in {} names no color it serves: {why}",
                self.container
            )
        })
    }

    /// Points nginx at `color`'s tasks, with the addresses known to
    /// answer as backups: write, `nginx -t`, reload.
    pub async fn apply(&self, color: Color, backups: &[IpAddr]) -> Result<()> {
        let upstream = nginx::render_resolved_upstream(
            color,
            &service_name(&self.project, color.service()),
            APP_PORT,
            backups,
        )?;
        self.nginx()
            .apply(&[(nginx::UPSTREAM_FILE, &upstream)])
            .await
            .with_context(|| format!("switching nginx in {} to {color}", self.container))
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
    fn only_the_managers_edge_task_is_reachable() {
        let task = |node: &str| Task {
            id: node.into(),
            service_id: "s".into(),
            slot: None,
            node_id: Some(node.into()),
            state: "running".into(),
            desired_state: "running".into(),
            error: None,
            container_id: Some(format!("c-{node}")),
            image: "nginx".into(),
        };
        let (a, b) = (task("m1"), task("m2"));
        let one = [&a];
        let (here, elsewhere) = edge_task(&one, "m1");
        assert_eq!((here.map(|t| t.id.as_str()), elsewhere), (Some("m1"), 0));
        let two = [&a, &b];
        assert_eq!(edge_task(&two, "m1").1, 1);
        assert!(edge_task(&[&b], "m1").0.is_none());
    }
}
