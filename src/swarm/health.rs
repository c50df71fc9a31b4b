//! What `cryptus health` checks on a Swarm, into the same [`Report`] as on
//! one engine, judged by the same functions ([`crate::checks`]): the edge
//! nginx (its configuration by `nginx -t` in its task, and the color it
//! serves), every task of each color (probed on the overlay from the edge,
//! by the task's own name, as the switch's gate probes), and redis (INFO,
//! by exec through its node's engine, when cryptus knows it).

use std::time::Duration;

use anyhow::Result;
use futures_util::future::join_all;

use crate::checks::{Check, Report, judge_app, judge_redis, nothing_to_probe, within};
use crate::engine::Engine;
use crate::health::{Expect, Probe};
use crate::redis::Redis;
use crate::stack::{Color, REDIS_SERVICE};

use super::edge::{Edge, Edges};
use super::nodes::{NODES_VAR, NodeEngines, Reached};
use super::status::{ServiceView, SwarmStatus, TaskView, gather};

/// Every check of a project on the swarm; each question waits at most
/// `timeout`. `declared` are the compose file's services.
pub async fn check(
    engine: &Engine,
    project: &str,
    declared: &[String],
    timeout: Duration,
) -> Result<Report> {
    // A manager in the middle of an election may not answer: each
    // question has the deadline the checks have.
    let status = within(timeout, gather(engine, project, declared)).await?;
    let edges = within(timeout, Edges::find(engine, project)).await;
    let (nginx, served) = match &edges {
        Ok(edges) => {
            let checked = join_all(
                edges
                    .all
                    .iter()
                    .map(|edge| check_nginx(edges, edge, status.active, timeout)),
            )
            .await;
            let (checks, served): (Vec<Check>, Vec<Option<Color>>) = checked.into_iter().unzip();
            // Edges that disagree say nothing of the active color: the
            // record stands.
            let served = served
                .first()
                .copied()
                .flatten()
                .filter(|first| served.iter().all(|c| *c == Some(*first)));
            (checks, served)
        }
        Err(err) => (vec![Check::new("nginx", false, format!("{err:#}"))], None),
    };
    let active = served.or(status.active);
    let engines = within(timeout, engine.membership())
        .await
        .and_then(|membership| NodeEngines::from_env(engine, &membership));
    let edge = edges.as_ref().ok().map(Edges::first);
    let (colors, redis) = tokio::join!(
        join_all(Color::ALL.map(|color| check_color(edge, &status, color, active, timeout))),
        check_redis(engines.as_ref(), edge, project, &status, timeout)
    );
    let mut checks = nginx;
    checks.extend(colors.into_iter().flatten());
    checks.push(redis);
    Ok(Report::new(project.to_owned(), active, checks))
}

/// nginx's configuration passes `nginx -t` in an edge task, and a color
/// answers healthy through it: the one the cluster records. The color it
/// served, when it answered.
async fn check_nginx(
    edges: &Edges,
    edge: &Edge,
    recorded: Option<Color>,
    timeout: Duration,
) -> (Check, Option<Color>) {
    let name = edges.label(edge);
    let unhealthy = |detail: String| Check::new(&name, false, detail);
    match within(timeout, edge.test()).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return (unhealthy(format!("nginx -t fails: {reason}")), None),
        Err(err) => return (unhealthy(format!("nginx -t: {err:#}")), None),
    }
    let probe = match within(timeout, edge.probe_lb()).await {
        Ok(probe) => probe,
        Err(err) => return (unhealthy(format!("config ok; asking nginx: {err:#}")), None),
    };
    let served = match &probe {
        Probe::Answered(report) => Color::parse(&report.instance),
        _ => None,
    };
    let check = judge_edge(&name, &edge.container, &probe, served, recorded);
    (check, served)
}

/// What the edge's answer says: healthy as the color the cluster records.
/// `name` is the check's (`nginx`, or `nginx on <node>`).
fn judge_edge(
    name: &str,
    container: &str,
    probe: &Probe,
    served: Option<Color>,
    recorded: Option<Color>,
) -> Check {
    let Some(color) = served.filter(|color| {
        probe.satisfies(&Expect {
            color: *color,
            version: None,
        })
    }) else {
        return Check::new(
            name,
            false,
            format!("config ok, but nginx in {container} answered: {probe}"),
        );
    };
    match recorded {
        Some(recorded) if recorded != color => Check::new(
            name,
            false,
            format!(
                "nginx in {container} serves {color}, but the cluster records {recorded}: a switch would go by the record"
            ),
        ),
        _ => Check::new(
            name,
            true,
            format!("config ok; {color} answers through nginx in {container}"),
        ),
    }
}

/// Each task of a color that the swarm wants running, asked on the
/// overlay: the active color's must all be healthy; a standby's may be
/// starting. Fewer tasks than replicas: the swarm is rescheduling.
async fn check_color(
    edge: Option<&Edge>,
    status: &SwarmStatus,
    color: Color,
    active: Option<Color>,
    timeout: Duration,
) -> Vec<Check> {
    let Some(view) = status
        .services
        .iter()
        .find(|s| s.service == color.service())
    else {
        return Vec::new();
    };
    let is_active = active == Some(color);
    let running = view.tasks.iter().filter(|t| t.state == "running").count();
    if let Some(checks) = nothing_to_probe(color, is_active, ("task", view.tasks.len()), running) {
        return checks;
    }
    let mut checks = join_all(view.tasks.iter().map(|task| async move {
        let probe = match (edge, task_container(view, task)) {
            (Some(edge), Some(name)) if task.state == "running" => {
                Some(match within(timeout, edge.probe_task(&name)).await {
                    Ok(probe) => probe,
                    Err(err) => Probe::Unreachable(format!("{err:#}")),
                })
            }
            (None, _) if task.state == "running" => Some(Probe::Unreachable(
                "no edge nginx to probe it from".to_owned(),
            )),
            _ => None,
        };
        let component = format!("{} on {}", task.name, task.node);
        judge_app(color, is_active, &component, &task.state_text(), probe)
    }))
    .await;
    checks.extend(rescheduling(view, color, is_active));
    checks
}

/// The name of a replicated task's container, which the swarm gives it
/// (`<service>.<slot>.<task id>`) and puts in the overlay's DNS.
fn task_container(view: &ServiceView, task: &TaskView) -> Option<String> {
    Some(format!(
        "{}.{}.{}",
        view.name.as_ref()?,
        task.slot?,
        task.id
    ))
}

/// A check when the swarm has fewer current tasks than replicas: one ended
/// and its replacement is not scheduled yet.
fn rescheduling(view: &ServiceView, color: Color, is_active: bool) -> Option<Check> {
    let wanted = usize::try_from(view.replicas?).ok()?;
    (view.tasks.len() < wanted).then(|| {
        Check::new(
            color.service(),
            !is_active,
            format!(
                "{} of {wanted} tasks scheduled: the swarm is rescheduling",
                view.tasks.len()
            ),
        )
    })
}

/// Redis runs, and answers INFO (memory and persistence), judged as on one
/// engine: by exec through its node's engine where cryptus knows it (the
/// manager's, or one in `CRYPTUS_SWARM_NODES`), else over the overlay from
/// the edge nginx, as the app reaches it. Only where neither can ask (an
/// edge image with no bash) is the task judged by its state.
async fn check_redis(
    engines: Result<&NodeEngines<'_>, &anyhow::Error>,
    edge: Option<&Edge>,
    project: &str,
    status: &SwarmStatus,
    timeout: Duration,
) -> Check {
    let view = status.services.iter().find(|s| s.service == "redis");
    let Some(task) = view.and_then(|v| v.tasks.iter().find(|t| t.state == "running")) else {
        let detail = match view.and_then(|v| v.tasks.first()) {
            Some(task) => format!("{} on {}: {}", task.name, task.node, task.state_text()),
            None => "there is no redis task (cryptus start)".to_owned(),
        };
        return Check::new("redis", false, detail);
    };
    let engines = match engines {
        Ok(engines) => engines,
        Err(err) => return Check::new("redis", false, format!("{err:#}")),
    };
    let reached = match &task.container_id {
        Some(id) if engines.reaches(&task.node).await => {
            within(
                timeout,
                engines.task_container(&task.node, id, "redis is asked"),
            )
            .await
        }
        _ => return redis_over_overlay(edge, project, task, timeout).await,
    };
    let (engine, container) = match reached {
        Ok(Reached {
            engine,
            container: Some(container),
            ..
        }) => (engine, container.name),
        Ok(_) => return Check::new("redis", false, format!("{} is gone", task.name)),
        Err(err) => return Check::new("redis", false, format!("{err:#}")),
    };
    let redis = Redis {
        engine: &engine,
        container,
    };
    match within(timeout, redis.info("default")).await {
        Ok(info) => {
            let mut check = judge_redis(&info);
            check.detail = format!("{} on {}: {}", task.name, task.node, check.detail);
            check
        }
        Err(err) => Check::new("redis", false, format!("{err:#}")),
    }
}

/// The port redis listens on in its task, as the app's REDIS_URL names it.
const REDIS_PORT: u16 = 6379;

/// [`check_redis`] for a task on a node whose engine cryptus does not
/// know: asked from the edge over the overlay.
async fn redis_over_overlay(
    edge: Option<&Edge>,
    project: &str,
    task: &TaskView,
    timeout: Duration,
) -> Check {
    let where_ = format!("{} on {}", task.name, task.node);
    let not_asked = |why: &str| {
        Check::new(
            "redis",
            true,
            format!(
                "{} runs on {} (not asked: {why}; name its node's engine in {NODES_VAR})",
                task.name, task.node
            ),
        )
    };
    let Some(edge) = edge else {
        return not_asked("its node's engine is not known, and no edge nginx runs");
    };
    let host = super::service_name(project, REDIS_SERVICE);
    let asked = within(timeout, edge.redis_info(&host, REDIS_PORT)).await;
    match asked {
        Ok(Some(info)) => {
            let mut check = judge_redis(&info);
            check.detail = format!("{where_} (asked over the overlay): {}", check.detail);
            check
        }
        Ok(None) => not_asked("its node's engine is not known, and the edge's image has no bash"),
        Err(err) => Check::new(
            "redis",
            false,
            format!("{where_}, asked over the overlay: {err:#}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Memory, Report as Health};

    fn answered(instance: &str) -> Probe {
        Probe::Answered(Health {
            status: "healthy".into(),
            timestamp: "t".into(),
            uptime: 1.0,
            instance: instance.into(),
            version: "1".into(),
            memory: Memory {
                used: 1.0,
                total: 2.0,
            },
        })
    }

    #[test]
    fn the_edge_is_healthy_serving_the_recorded_color() {
        let blue = Some(Color::Blue);
        let check = judge_edge("nginx", "c", &answered("blue"), blue, blue);
        assert!(check.healthy, "{}", check.detail);
        assert_eq!(check.detail, "config ok; blue answers through nginx in c");
        assert!(judge_edge("nginx", "c", &answered("blue"), blue, None).healthy);
        let apart = judge_edge("nginx", "c", &answered("green"), Some(Color::Green), blue);
        assert!(!apart.healthy);
        assert!(
            apart
                .detail
                .contains("serves green, but the cluster records blue")
        );
        let down = Probe::Refused {
            code: 502,
            body: "bad gateway".into(),
        };
        let check = judge_edge("nginx", "c", &down, None, blue);
        assert!(!check.healthy);
        assert_eq!(
            check.detail,
            "config ok, but nginx in c answered: 502 bad gateway"
        );
    }

    fn view(replicas: Option<u64>, slots: &[i64]) -> ServiceView {
        ServiceView {
            service: "cryptus-blue".into(),
            name: Some("shop_cryptus-blue".into()),
            replicas,
            running: slots.len(),
            image: None,
            tasks: slots
                .iter()
                .map(|slot| TaskView {
                    name: format!("cryptus-blue.{slot}"),
                    id: format!("t{slot}"),
                    node: "n1".into(),
                    state: "running".into(),
                    desired_state: "running".into(),
                    error: None,
                    image: "app:1".into(),
                    slot: Some(*slot),
                    container_id: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_task_is_named_as_its_container_and_a_missing_one_is_rescheduling() {
        let three = view(Some(3), &[1, 2, 3]);
        assert_eq!(
            task_container(&three, &three.tasks[1]).as_deref(),
            Some("shop_cryptus-blue.2.t2")
        );
        assert!(rescheduling(&three, Color::Blue, true).is_none());
        let two = view(Some(3), &[1, 3]);
        let check = rescheduling(&two, Color::Blue, true).unwrap();
        assert!(!check.healthy);
        assert_eq!(
            check.detail,
            "2 of 3 tasks scheduled: the swarm is rescheduling"
        );
        assert!(rescheduling(&two, Color::Green, false).unwrap().healthy);
        assert!(rescheduling(&view(None, &[]), Color::Blue, true).is_none());
    }
}
