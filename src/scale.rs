//! Scaling a color. The active color grows or shrinks with no failed
//! request: new replicas are health-gated before nginx names them, removed
//! replicas leave nginx's upstream and are drained before they stop. For the
//! idle color the count is recorded for the next deploy into it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;

use crate::context::{Stack, of_service, release_of};
use crate::deploy;
use crate::engine::Container;
use crate::error::{failed, failed_with_hint, usage};
use crate::health::{self, Expect};
use crate::history::{self, Entry, Outcome, Side};
use crate::lock::{self, Lock};
use crate::nginx;
use crate::replicas::{MAX_REPLICAS, read_pending, write_pending};
use crate::stack::{APP_PORT, Color, LB_SERVICE, Release, plan_container};

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
}

/// Which color a service is, or why it cannot be scaled.
pub fn color_to_scale(stack: &Stack<'_>, service: &str, replicas: u32) -> Result<Color> {
    let Some(color) = Color::of_service(service) else {
        if service == LB_SERVICE {
            return Err(usage(
                "nginx cannot be scaled: it is the one load balancer that publishes the stack's port",
                "scale the app instead: cryptus scale cryptus-blue 3",
            ));
        }
        if service == "redis" {
            return Err(usage(
                "redis cannot be scaled: it is the one store of the sessions",
                "scale the app instead: cryptus scale cryptus-blue 3",
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
    if replicas > MAX_REPLICAS {
        return Err(usage(
            format!(
                "{replicas} replicas is more than {MAX_REPLICAS}, the most cryptus runs on one host"
            ),
            format!("choose 1 to {MAX_REPLICAS}"),
        ));
    }
    Ok(color)
}

pub async fn scale(
    stack: &Stack<'_>,
    service: &str,
    replicas: u32,
    settings: &deploy::Settings,
) -> Result<Report> {
    let color = color_to_scale(stack, service, replicas)?;
    let lb = stack
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
    let client = health::client();
    let status_addr = Stack::status_addr(&lb).context("nginx publishes no status port")?;
    let active = nginx::served_color(&client, &status_addr).await?;
    if replicas == 0 {
        return Err(usage(
            if color == active {
                format!("scaling {service} to 0 would stop all traffic: it is the active color")
            } else {
                format!(
                    "{service} is idle: 0 replicas would leave the next deploy nothing to start"
                )
            },
            "choose 1 or more replicas; `cryptus stop` stops the whole stack",
        ));
    }
    crate::interrupt::catch();
    let step = stack.printer.step("taking the deploy lock");
    let lock = match Lock::acquire(
        stack.engine,
        &stack.project.name,
        "scale",
        &lb.image,
        &settings.lock,
        stack.printer,
    )
    .await
    {
        Ok(lock) => {
            step.done();
            lock
        }
        Err(err) => {
            step.fail();
            return Err(err);
        }
    };
    let result = if color == active {
        scale_active(stack, color, replicas, settings).await
    } else {
        scale_idle(stack, color, replicas).await
    };
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
    // After the lock was taken every failure is a clean one (exit 1): what
    // was started is undone and the failure recorded before it gets here.
    result.map_err(|err| {
        if err
            .chain()
            .any(|cause| cause.downcast_ref::<crate::error::UserError>().is_some())
        {
            err
        } else {
            // A new error: `classify` looks for a UserError among the causes.
            failed_with_hint(format!("{err:#}"), "`cryptus status` shows what serves now")
        }
    })
}

async fn scale_idle(stack: &Stack<'_>, color: Color, replicas: u32) -> Result<Report> {
    let nginx = stack.nginx();
    let mut pending = read_pending(&nginx).await;
    let containers = stack.containers().await?;
    let from = pending.get(&color).copied().unwrap_or_else(|| {
        u32::try_from(of_service(&containers, color.service()).len()).unwrap_or(0)
    });
    pending.insert(color, replicas);
    write_pending(&nginx, &pending).await?;
    stack.printer.info(format!(
        "{} is idle: the next deploy into {color} starts {replicas} replica{}",
        color.service(),
        if replicas == 1 { "" } else { "s" }
    ));
    Ok(Report {
        ok: true,
        service: color.service().to_owned(),
        color,
        active: false,
        from,
        to: replicas,
        pending: true,
    })
}

/// A scale of the active color under way: enough to record it.
struct Scaling<'s> {
    stack: &'s Stack<'s>,
    color: Color,
    release: Release,
    from: u32,
    to: u32,
    began: Instant,
}

impl Scaling<'_> {
    /// Records the outcome in the history and publishes it; a failure to
    /// record is a warning.
    async fn record(&self, outcome: Outcome, reason: Option<String>) {
        let side = |replicas| Side {
            color: self.color,
            image: self.release.image.clone(),
            version: self.release.version.clone(),
            image_id: None,
            replicas,
        };
        let entry = Entry {
            time: Utc::now(),
            operation: "scale".to_owned(),
            user: lock::user(),
            host: lock::hostname(),
            from: side(self.from),
            to: side(self.to),
            outcome,
            reason,
            durations: BTreeMap::from([("total".to_owned(), self.began.elapsed().as_secs_f64())]),
        };
        let nginx = self.stack.nginx();
        let history = match history::record(&nginx, entry, self.stack.printer).await {
            Ok(history) => Some(history),
            Err(err) => {
                self.stack
                    .printer
                    .warn(format!("recording the scale: {err:#}"));
                None
            }
        };
        self.stack.publish_metrics(Some(self.color), history).await;
    }

    fn upstream(&self, names: &[String]) -> Result<String> {
        let servers: Vec<String> = names.iter().map(|n| format!("{n}:{APP_PORT}")).collect();
        nginx::render_upstream(self.color, &servers)
    }
}

async fn scale_active(
    stack: &Stack<'_>,
    color: Color,
    replicas: u32,
    settings: &deploy::Settings,
) -> Result<Report> {
    let began = Instant::now();
    let containers = stack.containers().await?;
    let running: Vec<&Container> = of_service(&containers, color.service())
        .into_iter()
        .filter(|c| c.running)
        .collect();
    let from = u32::try_from(running.len()).unwrap_or(0);
    let release =
        release_of(&running).ok_or_else(|| failed(format!("no {color} container is running")))?;
    let report = Report {
        ok: true,
        service: color.service().to_owned(),
        color,
        active: true,
        from,
        to: replicas,
        pending: false,
    };
    if from == replicas {
        stack.printer.info(format!(
            "{} already runs {replicas} replicas",
            color.service()
        ));
        return Ok(report);
    }
    let scaling = Scaling {
        stack,
        color,
        release,
        from,
        to: replicas,
        began,
    };
    let done = if replicas > from {
        grow(&scaling, &containers, &running, settings).await
    } else {
        shrink(&scaling, &running, settings).await
    };
    match done {
        Ok(()) => {
            scaling.record(Outcome::Ok, None).await;
            Ok(report)
        }
        Err(err) => {
            scaling
                .record(Outcome::Failed, Some(format!("{err:#}")))
                .await;
            Err(err.context(format!(
                "scaling {} failed; it still runs {from} replica{}",
                color.service(),
                if from == 1 { "" } else { "s" }
            )))
        }
    }
}

/// New replicas answer healthy before nginx names them; any failure or
/// signal before nginx names them removes them again.
async fn grow(
    scaling: &Scaling<'_>,
    containers: &[Container],
    running: &[&Container],
    settings: &deploy::Settings,
) -> Result<()> {
    let (stack, color) = (scaling.stack, scaling.color);
    let step = stack.printer.step(format!(
        "starting {} more {color} replicas",
        scaling.to - scaling.from
    ));
    let mut added = Vec::new();
    let started = start_replicas(scaling, containers, running, settings, &mut added).await;
    let mut keep: Vec<String> = running.iter().map(|c| c.name.clone()).collect();
    keep.extend(added.iter().cloned());
    keep.sort();
    let nginx = stack.nginx();
    let applied = match started {
        Ok(()) => {
            step.done();
            let step = stack.printer.step("adding them to nginx's upstream");
            let applied = match scaling.upstream(&keep) {
                Ok(upstream) => nginx.apply(&[(nginx::UPSTREAM_FILE, &upstream)]).await,
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
            // nginx rejected or never loaded the new upstream: name the
            // old replicas again before the new ones go.
            let old: Vec<String> = running.iter().map(|c| c.name.clone()).collect();
            let put_back = match scaling.upstream(&old) {
                Ok(upstream) => nginx.apply(&[(nginx::UPSTREAM_FILE, &upstream)]).await,
                Err(err) => Err(err),
            };
            if let Err(back) = put_back {
                stack
                    .printer
                    .warn(format!("putting nginx's upstream back: {back:#}"));
            }
            applied
        }
        Err(err) => {
            step.fail();
            Err(err)
        }
    };
    if let Err(err) = applied {
        for name in &added {
            if let Err(gone) = stack.engine.remove(name, true).await {
                stack.printer.warn(format!("removing {name}: {gone:#}"));
            }
        }
        return Err(err);
    }
    Ok(())
}

/// Creates and starts the replicas a grow adds (named in `added` as they
/// are made), then waits for them to answer healthy.
async fn start_replicas(
    scaling: &Scaling<'_>,
    containers: &[Container],
    running: &[&Container],
    settings: &deploy::Settings,
    added: &mut Vec<String>,
) -> Result<()> {
    let (stack, color) = (scaling.stack, scaling.color);
    let service = stack
        .compose
        .service(color.service())
        .with_context(|| format!("the compose file has no service {}", color.service()))?;
    let used: Vec<u32> = running.iter().map(|c| c.number).collect();
    let mut number = 0;
    while u32::try_from(added.len()).unwrap_or(u32::MAX) < scaling.to - scaling.from {
        crate::interrupt::check()?;
        number += 1;
        if used.contains(&number) {
            continue;
        }
        let plan = plan_container(
            &stack.project.name,
            stack.compose,
            service,
            number,
            Some(&scaling.release),
        )?;
        if let Some(stale) = containers.iter().find(|c| c.name == plan.name) {
            stack.engine.remove(&stale.id, true).await?;
        }
        stack
            .engine
            .create_container(&plan.name, plan.body, &plan.extra_networks)
            .await?;
        added.push(plan.name.clone());
        stack.engine.start(&plan.name).await?;
    }
    let expect = Expect {
        color,
        version: Some(scaling.release.version.clone()),
    };
    crate::interrupt::or_interrupted(stack.wait_app_ready(
        added,
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
async fn shrink(
    scaling: &Scaling<'_>,
    running: &[&Container],
    settings: &deploy::Settings,
) -> Result<()> {
    let stack = scaling.stack;
    let nginx = stack.nginx();
    let mut by_number: Vec<&Container> = running.to_vec();
    by_number.sort_by_key(|c| c.number);
    let cut = scaling.to as usize;
    let removed: Vec<String> = by_number[cut..].iter().map(|c| c.name.clone()).collect();
    let keep: Vec<String> = by_number[..cut].iter().map(|c| c.name.clone()).collect();
    let step = stack.printer.step(format!(
        "removing {} from nginx's upstream",
        removed.join(", ")
    ));
    let applied = async {
        crate::interrupt::check()?;
        let old_workers = nginx.workers().await?;
        nginx
            .apply(&[(nginx::UPSTREAM_FILE, &scaling.upstream(&keep)?)])
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
    if let Err(err) = deploy::drain(stack, &old_workers, settings.drain).await {
        stack
            .printer
            .warn(format!("waiting for nginx's old workers: {err:#}"));
    }
    for name in &removed {
        if let Err(err) = stack.engine.stop(name, None).await {
            stack.printer.warn(format!("stopping {name}: {err:#}"));
        }
        if let Err(err) = stack.engine.remove(name, true).await {
            stack.printer.warn(format!("removing {name}: {err:#}"));
        }
    }
    step.done();
    if crate::interrupt::seen() {
        stack.printer.warn(
            "interrupted after nginx stopped naming the removed replicas: the scale was finished, not undone",
        );
    }
    Ok(())
}
