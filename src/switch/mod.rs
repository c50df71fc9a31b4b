//! The traffic switch: the one place where traffic moves, between the
//! colors (`deploy`, `rollback`) or within one (`scale`).
//!
//! - `plan`: pure decisions from what runs and what was asked (`--dry-run`
//!   prints them);
//! - `state`: what the switch reads (served color, containers, recorded
//!   replica counts) and its record (history, metrics, deploy marks);
//! - `upstream`: the only writer of nginx's `upstream.conf`;
//! - `runner`: how a color runs (containers on one engine), the seam for
//!   other ways to run one;
//! - `watch`: the watch after a proven flip, with the metric gate;
//! - `deploy`, `scale`: the orchestrations, with their undo;
//! - `hooks`: the deploy hooks a deploy or rollback runs;
//! - `report`: step timings and the report of a deploy or rollback.

pub mod canary;
pub mod deploy;
pub mod hooks;
pub mod plan;
pub mod report;
pub mod runner;
pub mod scale;
pub mod state;
pub mod upstream;
pub mod watch;

use std::time::Duration;

use anyhow::Result;

use crate::context::Stack;
use crate::lock::{self, Lock};
use crate::stack::Color;

pub use deploy::{Ask, Source, check_version};
pub use plan::{MAX_REPLICAS, Plan};
pub use report::Report;

pub struct Settings {
    /// The health gate's deadline, from the moment the new containers
    /// start; also how long nginx may take to serve a new upstream and the
    /// load balancer to answer from the new color.
    pub timeout: Duration,
    /// How long nginx's old workers may take to finish in-flight requests.
    pub drain: Duration,
    /// How long the new color is watched after the flip.
    pub watch: Duration,
    /// How often health is polled.
    pub poll: Duration,
    /// Answers in a row from the new color, through the load balancer.
    pub verify: u32,
    pub keep_standby: bool,
    pub keep_failed: bool,
    pub lock: lock::Options,
    /// The metric gate's PromQL condition, with `{color}` and `{window}`.
    pub gate: String,
    /// Where each recorded switch is announced (`CRYPTUS_NOTIFY_URL`).
    pub notify: Vec<crate::notify::Target>,
    /// A deploy's canary steps, before the flip to 100%.
    pub canary: Option<canary::Options>,
    /// How deploy hooks run (deploy and rollback).
    pub hooks: hooks::Options,
}

pub async fn deploy(
    stack: &Stack<'_>,
    source: Source,
    version: Option<String>,
    settings: &Settings,
) -> Result<Report> {
    deploy::run(stack, Ask::Deploy { source, version }, settings).await
}

pub async fn rollback(stack: &Stack<'_>, settings: &Settings) -> Result<Report> {
    deploy::run(stack, Ask::Rollback, settings).await
}

pub use scale::scale;

/// What a deploy, rollback or scale would do, read without the lock and
/// without changing anything: not a container, a file or the history.
pub async fn dry_run(stack: &Stack<'_>, ask: DryRun, settings: &Settings) -> Result<Plan> {
    let rollback = matches!(ask, DryRun::Switch(Ask::Rollback));
    if let DryRun::Switch(ask) = &ask {
        ask.check()?;
    }
    let lb = state::lb(stack).await?;
    let (observed, _) = state::read(stack, &lb, &crate::health::client(), rollback).await?;
    let mut build = None;
    let request = match ask {
        DryRun::Switch(Ask::Rollback) => plan::Request::Rollback {
            keep_standby: settings.keep_standby,
        },
        DryRun::Switch(Ask::Deploy { source, version }) => {
            let target = observed.active.other();
            build = deploy::planned_build(stack, target, &source, version.as_deref())?;
            plan::Request::Deploy {
                release: deploy::known_release(stack, target, source, version).await?,
                keep_standby: settings.keep_standby,
            }
        }
        DryRun::Scale { service, replicas } => plan::Request::Scale {
            color: scale::color_to_scale(stack, &service, replicas)?,
            replicas,
        },
    };
    let mut plan = plan::plan(&observed, &request)?;
    plan.hooks = hooks::planned(stack, &plan.operation, settings.hooks);
    plan.build = build.map(|image| plan::PlannedBuild {
        image,
        copy_to: Vec::new(),
    });
    Ok(plan)
}

pub enum DryRun {
    Switch(Ask),
    Scale { service: String, replicas: u32 },
}

/// Takes the deploy lock for `operation`.
async fn lock(
    stack: &Stack<'_>,
    operation: &str,
    lb: &state::Lb,
    settings: &Settings,
) -> Result<Lock> {
    Lock::acquire(
        stack.engine,
        &stack.project.name,
        operation,
        &lb.container.image,
        &settings.lock,
        stack.printer,
    )
    .await
}

async fn unlock(stack: &Stack<'_>, lock: Lock) {
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
}

/// Records a deploy's or rollback's report and announces it; the warnings
/// of the announcements that failed.
async fn record(stack: &Stack<'_>, report: &Report, settings: &Settings) -> Vec<String> {
    let durations = report.durations();
    let record = state::Record {
        operation: report.operation.clone(),
        from: report.from.clone(),
        to: report.to.clone(),
        outcome: report.outcome,
        reason: report.recorded_reason(),
        durations,
        hooks: report.hooks.clone(),
    };
    state::record(stack, record, &settings.notify).await
}

/// A deploy used up the count `scale` recorded for its color.
async fn clear_pending(stack: &Stack<'_>, color: Color) {
    let nginx = stack.nginx();
    let mut pending = state::read_pending(&nginx).await;
    if pending.remove(&color).is_some()
        && let Err(err) = state::write_pending(&nginx, &pending).await
    {
        stack
            .printer
            .warn(format!("clearing the replica count of {color}: {err:#}"));
    }
}
