//! `maintenance on|off|status` on a Swarm: the one-engine maintenance file
//! ([`crate::maintenance`]) applied to every edge nginx as the upstream is
//! (written, `nginx -t`, one reload, at once on every edge), under the
//! cluster's deploy lock, and recorded in the cluster's history. `status`
//! reads the file from every edge; edges that disagree are an error that
//! names what each holds.

use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use futures_util::future::{join_all, try_join_all};

use crate::context::Stack;
use crate::engine::Engine;
use crate::error::{failed_with_hint, usage};
use crate::health::{Probe, Report};
use crate::history::{Entry, Outcome, operation};
use crate::maintenance::{
    MAINTENANCE_FILE, State, Switch, check_included, history_reason, history_side, parse, render,
};

use super::edge::{Edge, Edges};
use super::state::{self, ClusterLock};

/// Switches maintenance on or off on every edge under the cluster's deploy
/// lock; the state now in force. If one edge fails, or `/api/health`
/// through one answers maintenance's 503, every edge gets its file back.
pub async fn switch(stack: &Stack<'_>, want: Switch, lock_wait: Duration) -> Result<State> {
    let (engine, project) = (stack.engine, &stack.project.name);
    let edges = Edges::find(engine, project).await?;
    let began = std::time::Instant::now();
    let options = crate::lock::Options {
        wait: lock_wait,
        force_unlock: false,
    };
    let lock = ClusterLock::acquire(
        engine,
        project,
        operation::MAINTENANCE,
        &options,
        stack.printer,
    )
    .await?;
    let result = apply(&edges, want).await;
    if let Ok(wanted) = &result {
        record(stack, wanted, began.elapsed().as_secs_f64()).await;
    }
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
    result
}

async fn apply(edges: &Edges, want: Switch) -> Result<State> {
    let by = format!("{}@{}", crate::lock::user(), crate::lock::hostname());
    let wanted = match &want {
        Switch::On(settings) => {
            let checks = edges
                .all
                .iter()
                .map(|edge| async move { check_included(&edge.nginx()).await });
            try_join_all(checks).await?;
            State::on(settings, Utc::now(), by)
        }
        Switch::Off => State::off(Utc::now(), by),
    };
    let text = render(&wanted)?;
    let before = try_join_all(edges.all.iter().map(|edge| edge.read(MAINTENANCE_FILE))).await?;
    let applied = join_all(
        edges
            .all
            .iter()
            .map(|edge| edge.apply_file(MAINTENANCE_FILE, &text)),
    )
    .await;
    let failed = match applied.into_iter().find_map(Result::err) {
        Some(err) => Some(err),
        None if wanted.on => health_closed(edges).await,
        None => None,
    };
    let Some(err) = failed else {
        return Ok(wanted);
    };
    let off = render(&State::default())?;
    let back =
        join_all(edges.all.iter().zip(&before).map(|(edge, text)| {
            edge.apply_file(MAINTENANCE_FILE, text.as_deref().unwrap_or(&off))
        }))
        .await;
    match back.into_iter().find_map(Result::err) {
        None => Err(err),
        Some(back) => Err(err.context(format!(
            "putting the previous {MAINTENANCE_FILE} back failed too ({back:#}); `cryptus maintenance status` shows each edge"
        ))),
    }
}

/// The error when `/api/health` through an edge answers maintenance's 503
/// (its page, not the app's health document).
async fn health_closed(edges: &Edges) -> Option<anyhow::Error> {
    let closed = edges.probe_lbs().await.into_iter().any(|(_, probe)| {
        matches!(probe, Ok(Probe::Refused { code: 503, body })
            if serde_json::from_str::<Report>(body.trim()).is_err())
    });
    closed.then(|| {
        usage(
            "with maintenance on, /api/health answered 503 too, so it was switched back",
            "add `allow all;` to `location = /api/health` in nginx/app.conf, as `cryptus init` writes it (docs/maintenance.md)",
        )
    })
}

/// The history entry on the cluster: from and to the active color's
/// recorded release.
async fn record(stack: &Stack<'_>, wanted: &State, seconds: f64) {
    let (engine, project) = (stack.engine, &stack.project.name);
    let mut state = match state::read(engine, project).await {
        Ok(state) => state,
        Err(err) => {
            stack.printer.warn(format!(
                "maintenance is not recorded in the history: {err:#}"
            ));
            return;
        }
    };
    let color = state.active.unwrap_or(crate::stack::Color::Blue);
    let Some(release) = state.releases.get(&color).cloned() else {
        stack.printer.warn(format!(
            "maintenance is not recorded in the history: the swarm records no release of {color}"
        ));
        return;
    };
    let replicas = state.replicas.get(&color).copied().unwrap_or(0);
    let side = history_side(color, release, replicas);
    let entry = Entry {
        time: Utc::now(),
        operation: operation::MAINTENANCE.to_owned(),
        user: crate::lock::user(),
        host: crate::lock::hostname(),
        from: side.clone(),
        to: side,
        outcome: Outcome::Ok,
        reason: Some(history_reason(wanted)),
        durations: [("total".to_owned(), seconds)].into_iter().collect(),
        hooks: Vec::new(),
    };
    // Notifications announce switches of traffic, not maintenance.
    for warning in state::record(engine, project, &mut state, entry, &[]).await {
        stack.printer.warn(warning);
    }
}

/// The state every edge holds; an error naming what each holds when they
/// differ, or when one holds no readable state.
pub async fn status(engine: &Engine, project: &str) -> Result<State> {
    let edges = Edges::find(engine, project).await?;
    let texts = try_join_all(edges.all.iter().map(|edge| edge.read(MAINTENANCE_FILE))).await?;
    let mut states = Vec::new();
    for (edge, text) in edges.all.iter().zip(&texts) {
        let Some(state) = parse(text.as_deref()) else {
            return Err(unreadable(edge));
        };
        states.push((edges.label(edge), state));
    }
    let (_, first) = &states[0];
    let mode = |s: &State| (s.on, s.message.clone(), s.retry_after, s.allow.clone());
    if states.iter().all(|(_, state)| mode(state) == mode(first)) {
        return Ok(first.clone());
    }
    let each: Vec<String> = states
        .iter()
        .map(|(edge, state)| format!("{edge}: {}", state.describe()))
        .collect();
    Err(failed_with_hint(
        format!("the edges disagree on maintenance: {}", each.join("; ")),
        "run `cryptus maintenance on` or `off` to write it to every edge",
    ))
}

fn unreadable(edge: &Edge) -> anyhow::Error {
    failed_with_hint(
        format!(
            "{MAINTENANCE_FILE} in {} on {} records no readable state: it was edited by hand",
            edge.container, edge.node
        ),
        "run `cryptus maintenance off` (or `on`) to write it again",
    )
}
