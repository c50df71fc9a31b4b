//! Scaling a color. The active color grows or shrinks with no failed
//! request: new replicas are health-gated before nginx names them, removed
//! replicas leave nginx's upstream and are drained before they stop. For the
//! idle color the count is recorded for the next deploy into it.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use tokio::time::Instant;

use crate::context::Stack;
use crate::error::{failed_with_hint, usage};
use crate::health::{self, Expect};
use crate::history::{Outcome, Side, operation};
use crate::stack::{Color, LB_SERVICE, Release};

use super::Settings;
use super::plan::{self, Action, Plan, Request};
use super::runner::Runner;
use super::state;
use super::upstream::{self, Upstream};

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub service: String,
    pub color: Color,
    pub active: bool,
    pub from: u32,
    pub to: u32,
    /// For the idle color: the count is applied by the next deploy.
    pub pending: bool,
    /// Notes an operator should see, e.g. a notification not delivered.
    pub warnings: Vec<String>,
}

/// Which color a service is, or why it cannot be scaled.
pub fn color_to_scale(stack: &Stack<'_>, service: &str, replicas: u32) -> Result<Color> {
    let Some(color) = Color::of_service(service) else {
        let but = "scale the app instead: cryptus scale cryptus-blue 3";
        if service == LB_SERVICE {
            return Err(usage(
                "nginx cannot be scaled: it is the one load balancer that publishes the stack's port",
                but,
            ));
        }
        if service == "redis" {
            return Err(usage(
                "redis cannot be scaled: it is the one store of the sessions",
                but,
            ));
        }
        let services: Vec<&str> = stack.compose.services.keys().map(String::as_str).collect();
        return Err(usage(
            format!("there is no service {service:?} to scale"),
            format!(
                "the app's services are cryptus-blue and cryptus-green (all services: {})",
                services.join(", ")
            ),
        ));
    };
    plan::check_count(replicas)?;
    Ok(color)
}

pub async fn scale(
    stack: &Stack<'_>,
    service: &str,
    replicas: u32,
    settings: &Settings,
) -> Result<Report> {
    let color = color_to_scale(stack, service, replicas)?;
    let lb = state::lb(stack).await?;
    crate::interrupt::catch();
    let step = stack.printer.step("taking the deploy lock");
    let lock = step.ended(super::lock(stack, "scale", &lb, settings).await)?;
    let result = locked(stack, &lb, color, replicas, settings).await;
    super::unlock(stack, lock).await;
    result.map_err(failed_cleanly)
}

/// A scale's failure once the lock was taken is a clean one (exit 1):
/// what was started is undone and the failure recorded before it gets
/// here. On one engine and on a Swarm.
pub fn failed_cleanly(err: anyhow::Error) -> anyhow::Error {
    if crate::error::is_user_error(&err) {
        err
    } else {
        // A new error: `classify` looks for a UserError among the causes.
        failed_with_hint(format!("{err:#}"), "`cryptus status` shows what serves now")
    }
}

async fn locked(
    stack: &Stack<'_>,
    lb: &state::Lb,
    color: Color,
    replicas: u32,
    settings: &Settings,
) -> Result<Report> {
    let began = Instant::now();
    let (observed, _) = state::read(stack, lb, &health::client(), false).await?;
    let plan = plan::plan(&observed, &Request::Scale { color, replicas })?;
    let mut report = Report {
        ok: true,
        service: color.service().to_owned(),
        color,
        active: plan.action != Action::Record,
        from: plan.from_replicas,
        to: replicas,
        pending: plan.action == Action::Record,
        warnings: Vec::new(),
    };
    let release = plan.release.clone();
    let done = match (&plan.action, release) {
        (Action::Nothing, _) => {
            stack.printer.info(format!(
                "{} already runs {replicas} replicas",
                color.service()
            ));
            return Ok(report);
        }
        (Action::Record, _) => return record_count(stack, &plan).await.map(|()| report),
        (Action::Grow, Some(release)) => grow(stack, &plan, &release, settings).await,
        (Action::Shrink, Some(_)) => shrink(stack, &plan, settings).await,
        (action, _) => Err(anyhow::anyhow!(
            "a scale cannot {action:?} without a release"
        )),
    };
    let reason = done.as_ref().err().map(|err| format!("{err:#}"));
    let outcome = if done.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    report.warnings = record(stack, &plan, outcome, reason, began, settings).await;
    for warning in &report.warnings {
        stack.printer.warn(warning);
    }
    let from = plan.from_replicas;
    done.map(|()| report).map_err(|err| {
        err.context(format!(
            "scaling {} failed; it still runs {from} replica{}",
            color.service(),
            if from == 1 { "" } else { "s" }
        ))
    })
}

/// The idle color: the count waits for the next deploy into it.
async fn record_count(stack: &Stack<'_>, plan: &Plan) -> Result<()> {
    let nginx = stack.nginx();
    let mut pending = state::read_pending(&nginx).await;
    pending.insert(plan.target, plan.replicas);
    state::write_pending(&nginx, &pending).await?;
    stack.printer.info(format!(
        "{} is idle: the next deploy into {} starts {} replica{}",
        plan.target.service(),
        plan.target,
        plan.replicas,
        if plan.replicas == 1 { "" } else { "s" }
    ));
    Ok(())
}

/// Records the outcome in the history, publishes and announces it; the
/// warnings of the announcements that failed.
async fn record(
    stack: &Stack<'_>,
    plan: &Plan,
    outcome: Outcome,
    reason: Option<String>,
    began: Instant,
    settings: &Settings,
) -> Vec<String> {
    let release = plan.release.clone().unwrap_or(Release {
        image: String::new(),
        version: String::new(),
    });
    let side = |replicas| Side {
        color: plan.target,
        image: release.image.clone(),
        version: release.version.clone(),
        image_id: None,
        replicas,
    };
    let record = state::Record {
        operation: operation::SCALE.to_owned(),
        from: side(plan.from_replicas),
        to: side(plan.replicas),
        outcome,
        reason,
        durations: BTreeMap::from([("total".to_owned(), began.elapsed().as_secs_f64())]),
        hooks: Vec::new(),
    };
    state::record(stack, record, &settings.notify).await
}

/// New replicas answer healthy before nginx names them; any failure or
/// signal before nginx names them removes them again.
async fn grow(
    stack: &Stack<'_>,
    plan: &Plan,
    release: &Release,
    settings: &Settings,
) -> Result<()> {
    let mut runner = Runner::new(stack, settings.drain);
    let step = stack.printer.step(format!(
        "starting {} more {} replicas",
        plan.start.len(),
        plan.target
    ));
    if let Err(err) = start_replicas(stack, &mut runner, plan, release, settings).await {
        step.fail();
        runner.undo().await;
        return Err(err);
    }
    step.done();
    let step = stack.printer.step("adding them to nginx's upstream");
    let nginx = stack.nginx();
    let applied = match Upstream::of(plan.target, &plan.serve) {
        Ok(upstream) => upstream.apply(&nginx, &[]).await,
        Err(err) => Err(err),
    };
    if applied.is_ok() {
        step.done();
        if crate::interrupt::seen() {
            stack.printer.warn(
                "interrupted while nginx took the new replicas: the scale was finished, not undone",
            );
        }
        return Ok(());
    }
    step.fail();
    // nginx rejected or never loaded the new upstream: name the old
    // replicas again before the new ones go.
    let old: Vec<String> = plan
        .serve
        .iter()
        .filter(|name| !plan.start.contains(name))
        .cloned()
        .collect();
    let put_back = match Upstream::of(plan.target, &old) {
        Ok(upstream) => upstream.apply(&nginx, &[]).await,
        Err(err) => Err(err),
    };
    if let Err(back) = put_back {
        stack
            .printer
            .warn(format!("putting nginx's upstream back: {back:#}"));
    }
    runner.undo().await;
    applied
}

/// Creates and starts the replicas a grow adds, then waits for them to
/// answer healthy.
async fn start_replicas(
    stack: &Stack<'_>,
    runner: &mut Runner<'_>,
    plan: &Plan,
    release: &Release,
    settings: &Settings,
) -> Result<()> {
    runner.bring_up(plan, release).await?;
    let expect = Expect {
        color: plan.target,
        version: Some(release.version.clone()),
    };
    crate::interrupt::or_interrupted(stack.wait_app_ready(
        &plan.start,
        &expect,
        settings.poll,
        Instant::now() + settings.timeout,
    ))
    .await?;
    // A signal that came during the last call is honoured before nginx
    // names the new replicas.
    crate::interrupt::check()
}

/// The highest numbers leave nginx's upstream first, then drain and stop.
/// Once nginx no longer names them the scale is done: a signal then lets
/// the drain (bounded by --drain) and the stop finish.
async fn shrink(stack: &Stack<'_>, plan: &Plan, settings: &Settings) -> Result<()> {
    let nginx = stack.nginx();
    let step = stack.printer.step(format!(
        "removing {} from nginx's upstream",
        plan.drain.join(", ")
    ));
    let applied = async {
        crate::interrupt::check()?;
        let old_workers = nginx.workers().await?;
        Upstream::of(plan.target, &plan.serve)?
            .apply(&nginx, &[])
            .await?;
        Ok::<_, anyhow::Error>(old_workers)
    }
    .await;
    let old_workers = match applied {
        Ok(workers) => {
            step.done();
            workers
        }
        Err(err) => {
            step.fail();
            return Err(err);
        }
    };
    let step = stack
        .printer
        .step("draining nginx's old workers, then stopping them");
    if let Err(err) = upstream::drain(&nginx, stack.printer, &old_workers, settings.drain).await {
        stack
            .printer
            .warn(format!("waiting for nginx's old workers: {err:#}"));
    }
    Runner::new(stack, settings.drain)
        .retire(&plan.remove)
        .await;
    step.done();
    if crate::interrupt::seen() {
        stack.printer.warn(
            "interrupted after nginx stopped naming the removed replicas: the scale was finished, not undone",
        );
    }
    Ok(())
}
