//! Scaling a color. The active color grows or shrinks with no failed
//! request: new replicas are health-gated before nginx names them, removed
//! replicas leave nginx's upstream and are drained before they stop. For the
//! idle color the count is recorded for the next deploy into it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;

use crate::deploy;
use crate::engine::Container;
use crate::error::{failed, failed_with_hint, usage};
use crate::health::{self, Expect};
use crate::history::{self, Entry, Outcome, Side};
use crate::lifecycle::{Stack, of_service, release_of};
use crate::lock::{self, Lock};
use crate::nginx::{self, Nginx};
use crate::stack::{APP_PORT, Color, LB_SERVICE, plan_container};

/// More replicas than this on one host is a typo, not a plan.
pub const MAX_REPLICAS: u32 = 32;
/// Counts recorded for the next deploy into a color.
pub const PENDING_FILE: &str = "replicas.json";

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
    let lock = Lock::acquire(
        stack.engine,
        &stack.project.name,
        "scale",
        &lb.image,
        &settings.lock,
        stack.printer,
    )
    .await?;
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
    result
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
    let service = stack
        .compose
        .service(color.service())
        .with_context(|| format!("the compose file has no service {}", color.service()))?;
    let nginx = stack.nginx();
    let upstream_for = |names: &[String]| -> Result<String> {
        let servers: Vec<String> = names.iter().map(|n| format!("{n}:{APP_PORT}")).collect();
        nginx::render_upstream(color, &servers)
    };
    let mut keep: Vec<String> = running.iter().map(|c| c.name.clone()).collect();
    if replicas > from {
        // Grow: new replicas answer healthy before nginx names them.
        let step = stack.printer.step(format!(
            "starting {} more {color} replicas",
            replicas - from
        ));
        let used: Vec<u32> = running.iter().map(|c| c.number).collect();
        let mut added = Vec::new();
        let mut number = 0;
        while u32::try_from(added.len()).unwrap_or(u32::MAX) < replicas - from {
            number += 1;
            if used.contains(&number) {
                continue;
            }
            let plan = plan_container(
                &stack.project.name,
                stack.compose,
                service,
                number,
                Some(&release),
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
            version: Some(release.version.clone()),
        };
        if let Err(err) = stack
            .wait_app_ready(
                &added,
                &expect,
                settings.poll,
                Instant::now() + settings.timeout,
            )
            .await
        {
            step.fail();
            for name in &added {
                let _ = stack.engine.remove(name, true).await;
            }
            return Err(err.context(format!(
                "scaling {} failed; nothing changed",
                color.service()
            )));
        }
        step.done();
        keep.extend(added);
        keep.sort();
        let step = stack.printer.step("adding them to nginx's upstream");
        nginx
            .apply(&[(nginx::UPSTREAM_FILE, &upstream_for(&keep)?)])
            .await?;
        step.done();
    } else {
        // Shrink: the highest numbers leave nginx first, then drain and stop.
        let mut by_number: Vec<&Container> = running.clone();
        by_number.sort_by_key(|c| c.number);
        let removed: Vec<String> = by_number[replicas as usize..]
            .iter()
            .map(|c| c.name.clone())
            .collect();
        keep = by_number[..replicas as usize]
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let step = stack.printer.step(format!(
            "removing {} from nginx's upstream",
            removed.join(", ")
        ));
        let old_workers = nginx.workers().await?;
        nginx
            .apply(&[(nginx::UPSTREAM_FILE, &upstream_for(&keep)?)])
            .await?;
        step.done();
        let step = stack
            .printer
            .step("draining nginx's old workers, then stopping them");
        deploy::drain(stack, &old_workers, settings.drain).await?;
        for name in &removed {
            stack.engine.stop(name, None).await?;
            stack.engine.remove(name, false).await?;
        }
        step.done();
    }
    let entry = Entry {
        time: Utc::now(),
        operation: "scale".to_owned(),
        user: lock::user(),
        host: lock::hostname(),
        from: Side {
            color,
            image: release.image.clone(),
            version: release.version.clone(),
            image_id: None,
            replicas: from,
        },
        to: Side {
            color,
            image: release.image.clone(),
            version: release.version.clone(),
            image_id: None,
            replicas,
        },
        outcome: Outcome::Ok,
        reason: None,
        durations: BTreeMap::from([("total".to_owned(), began.elapsed().as_secs_f64())]),
    };
    let history = match history::record(&nginx, entry).await {
        Ok(history) => Some(history),
        Err(err) => {
            stack.printer.warn(format!("recording the scale: {err:#}"));
            None
        }
    };
    stack.publish_metrics(Some(color), history).await;
    Ok(report)
}
