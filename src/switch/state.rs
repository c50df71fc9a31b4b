//! What the switch reads before it decides and writes after it acts, other
//! than nginx's upstream (`upstream`): the color nginx serves, each color's
//! containers, the replica counts `scale` records for the next deploy (kept
//! with the engine in nginx's state volume beside the history), and the
//! record of every switch: the history entry, the published metrics and
//! Grafana's deploy mark, in one place.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::Utc;

use crate::context::Stack;
use crate::engine::{Container, Listed};
use crate::error::failed_with_hint;
use crate::history::{self, Entry, Outcome, Side};
use crate::metrics;
use crate::nginx::{self, Nginx, Served};
use crate::notify::{self, Target};
use crate::stack::{Color, Release, VERSION_LABEL};

use super::plan::{Observed, Recorded, Replica};

/// Counts recorded for the next deploy into a color.
pub use crate::nginx::PENDING_FILE;

/// The running load balancer and where this host reaches it.
pub struct Lb {
    pub container: Container,
    /// nginx's status port: which color its loaded configuration serves.
    pub status_addr: String,
    /// nginx's HTTP port: the app through the load balancer.
    pub addr: String,
}

/// The load balancer, which a switch needs running.
pub async fn lb(stack: &Stack<'_>) -> Result<Lb> {
    let container = stack
        .engine
        .inspect(&stack.lb_container())
        .await?
        .filter(|c| c.running)
        .ok_or_else(|| {
            failed_with_hint(
                format!("the stack of project {} is not running", stack.project.name),
                "run `cryptus start` first",
            )
        })?;
    let status_addr = Stack::status_addr(&container).context("nginx publishes no status port")?;
    let addr = container
        .published_addr(nginx::HTTP_PORT)
        .with_context(|| format!("{} publishes no port {}", container.name, nginx::HTTP_PORT))?;
    Ok(Lb {
        container,
        status_addr,
        addr,
    })
}

/// The planner's view of one app container.
fn replica(container: &Container) -> Replica {
    Replica {
        name: container.name.clone(),
        number: container.number,
        running: container.running,
        release: Release {
            image: container.image.clone(),
            version: container
                .label(VERSION_LABEL)
                .unwrap_or("unknown")
                .to_owned(),
        },
    }
}

/// What runs, as the planner sees it, from the served color and the
/// project's containers. `recorded` is read only when a rollback needs it.
fn observe(
    stack: &Stack<'_>,
    active: Color,
    containers: &[Container],
    pending: BTreeMap<Color, u32>,
) -> Observed {
    let colors = Color::ALL
        .into_iter()
        .map(|color| {
            let mut replicas: Vec<Replica> = containers
                .iter()
                .filter(|c| c.service == color.service())
                .map(replica)
                .collect();
            replicas.sort_by_key(|r| r.number);
            (color, replicas)
        })
        .collect();
    Observed {
        project: stack.project.name.clone(),
        active,
        colors,
        pending,
        recorded: Recorded::Unread,
        canary: None,
    }
}

/// What runs: the color nginx serves, the project's containers and the
/// recorded counts, read at once; for a rollback into a color with no
/// containers, also what the history last recorded for it. The containers
/// come back too, as read, for what else the switch asks of them (redis,
/// Prometheus) without listing them again.
pub async fn read(
    stack: &Stack<'_>,
    lb: &Lb,
    client: &reqwest::Client,
    rollback: bool,
) -> Result<(Observed, Vec<Container>)> {
    let ahead = read_ahead(stack, lb, client).await?;
    finish(stack, lb, ahead, rollback).await
}

/// What the switch plans from, read before its lock is held (while it is
/// being taken): [`confirm`] makes it the truth once the lock is held.
pub struct Ahead {
    served: Served,
    containers: Vec<Container>,
    listing: Vec<Listed>,
    pending: BTreeMap<Color, u32>,
}

/// The served color, the project's containers (inspected) and the recorded
/// counts, at once.
pub async fn read_ahead(stack: &Stack<'_>, lb: &Lb, client: &reqwest::Client) -> Result<Ahead> {
    let nginx = Nginx::of(stack.engine, &lb.container);
    let (served, containers, pending) = tokio::join!(
        nginx::served(client, &lb.status_addr),
        stack.engine.containers_listed(&stack.project.name),
        read_pending(&nginx),
    );
    let (containers, listing) = containers?;
    Ok(Ahead {
        served: served?,
        containers,
        listing: without_lock(stack, listing),
        pending,
    })
}

/// [`read`], from what was read ahead of the lock: once the lock is held,
/// the served color, one list call (no inspects) and the recorded counts
/// are asked again, at once. When they are what was read ahead (the list's
/// ids, names, states, health, addresses and ports), nothing a plan reads
/// changed in between, and the read ahead stands; otherwise (another run
/// released the lock meanwhile, or a container was stopped, started or
/// restarted) everything is read again.
pub async fn confirm(
    stack: &Stack<'_>,
    lb: &Lb,
    client: &reqwest::Client,
    ahead: Result<Ahead>,
    rollback: bool,
) -> Result<(Observed, Vec<Container>)> {
    let nginx = Nginx::of(stack.engine, &lb.container);
    let (served, listing, pending) = tokio::join!(
        nginx::served(client, &lb.status_addr),
        stack.engine.listing(&stack.project.name),
        read_pending(&nginx),
    );
    let still = |ahead: &Ahead| {
        served.as_ref().is_ok_and(|served| *served == ahead.served)
            && listing
                .as_ref()
                .is_ok_and(|listing| without_lock(stack, listing.clone()) == ahead.listing)
            && pending == ahead.pending
    };
    let ahead = match ahead {
        Ok(ahead) if still(&ahead) => ahead,
        _ => {
            tracing::debug!("what runs changed while the lock was taken: reading it again");
            read_ahead(stack, lb, client).await?
        }
    };
    finish(stack, lb, ahead, rollback).await
}

/// The listing without the deploy lock's container, which a run reading
/// ahead of its lock may or may not see.
fn without_lock(stack: &Stack<'_>, mut listing: Vec<Listed>) -> Vec<Listed> {
    let lock = crate::lock::lock_name(&stack.project.name);
    listing.retain(|listed| listed.name != lock);
    listing.sort_by(|a, b| a.id.cmp(&b.id));
    listing
}

/// The planner's view of what was read; for a rollback into a color with
/// no containers, with what the history last recorded for it.
async fn finish(
    stack: &Stack<'_>,
    lb: &Lb,
    ahead: Ahead,
    rollback: bool,
) -> Result<(Observed, Vec<Container>)> {
    let mut observed = observe(stack, ahead.served.color, &ahead.containers, ahead.pending);
    observed.canary = ahead.served.canary;
    let target = observed.active.other();
    if rollback && observed.replicas(target).is_empty() {
        let nginx = Nginx::of(stack.engine, &lb.container);
        observed.recorded = recorded(&nginx, target).await;
    }
    Ok((observed, ahead.containers))
}

/// What the history last recorded for `color`.
pub async fn recorded(nginx: &Nginx<'_>, color: Color) -> Recorded {
    match history::read(nginx).await {
        Ok(entries) => {
            history::last_release(&entries, color).map_or(Recorded::Nothing, Recorded::Release)
        }
        Err(err) => Recorded::Unreadable(format!("{err:#}")),
    }
}

/// The recorded counts; none when the file is missing or unreadable.
pub async fn read_pending(nginx: &Nginx<'_>) -> BTreeMap<Color, u32> {
    match nginx.read(PENDING_FILE).await {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

pub async fn write_pending(nginx: &Nginx<'_>, pending: &BTreeMap<Color, u32>) -> Result<()> {
    let text = serde_json::to_string(pending).context("encoding the replica counts")?;
    nginx.write(&[(PENDING_FILE, &text)], true).await
}

/// One switch's record: what it was, between which sides, how it ended.
pub struct Record {
    pub operation: String,
    pub from: Side,
    pub to: Side,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub durations: BTreeMap<String, f64>,
    pub hooks: Vec<history::HookRun>,
}

/// Records a switch in the history, then publishes the metrics and the
/// deploy mark where monitoring runs; meanwhile it is announced to `targets`.
/// A failure is a warning: the switch itself is done. The announcements'
/// warnings come back, for the report (`--json`) to carry.
pub async fn record(stack: &Stack<'_>, record: Record, targets: &[Target]) -> Vec<String> {
    let entry = Entry {
        time: Utc::now(),
        operation: record.operation,
        user: crate::lock::user(),
        host: crate::lock::hostname(),
        from: record.from,
        to: record.to,
        outcome: record.outcome,
        reason: record.reason,
        durations: record.durations,
        hooks: record.hooks,
    };
    let payload = notify::Payload::of(&stack.project.name, &entry);
    let (notified, ()) = tokio::join!(notify::send(targets, &payload), bookkeeping(stack, entry));
    notified
}

/// The history entry, then the metrics and the mark that read it.
async fn bookkeeping(stack: &Stack<'_>, entry: Entry) {
    let nginx = stack.nginx();
    let history = match history::record(&nginx, entry.clone(), stack.printer).await {
        Ok(history) => history,
        Err(err) => {
            stack
                .printer
                .warn(format!("recording the {}: {err:#}", what(&entry.operation)));
            history::read(&nginx).await.unwrap_or_default()
        }
    };
    let active = if entry.outcome == Outcome::Ok {
        entry.to.color
    } else {
        entry.from.color
    };
    let containers = stack.containers().await.unwrap_or_default();
    let (published, annotated) = tokio::join!(
        metrics::publish(stack.engine, &containers, Some(active), &history),
        metrics::annotate(
            &containers,
            stack.grafana_password_file().map(|(_, path)| path),
            &entry
        )
    );
    for err in [published.err(), annotated.err()].into_iter().flatten() {
        stack.printer.warn(format!("{err:#}"));
    }
}

fn what(operation: &str) -> &'static str {
    if operation == "scale" {
        "scale"
    } else {
        "deployment"
    }
}
