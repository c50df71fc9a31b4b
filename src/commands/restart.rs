//! `cryptus restart`: stop, then start, under the deploy lock; on a Swarm,
//! a rolling restart that keeps serving (`swarm::restart`).

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use tokio::time::Instant;

use crate::context::Session;
use crate::error::EXIT_OK;
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;

pub async fn run(project: &Project, timeout: Duration, printer: &Printer) -> Result<u8> {
    // The files are loaded first: a broken compose file must not leave the
    // stack stopped.
    let session = Session::open(project, printer).await?;
    if project.orchestrator == Orchestrator::Swarm {
        return on_swarm(&session, timeout, printer).await;
    }
    super::warn_not_applied(session.stack().compose, session.stack().engine, printer);
    let stack = session.stack();
    crate::interrupt::catch();
    let deadline = Instant::now() + timeout;
    // What would make the start fail (an image gone, a port taken) is
    // found while the stack still runs.
    stack.preflight().await?;
    let lock = stack.lock("restart", timeout).await?;
    let result = async {
        // A state start would refuse to restore is refused before the stop.
        stack.check_restorable().await?;
        let stopped = super::stop::stop(stack.engine, project, None, printer).await?;
        crate::interrupt::check()?;
        let summary = stack.up_locked(deadline).await?;
        Ok::<_, anyhow::Error>((stopped, summary))
    }
    .await;
    if let Err(err) = lock.release().await {
        printer.warn(format!("releasing the deploy lock: {err:#}"));
    }
    let (stopped, summary) = result?;
    if printer.json() {
        printer.out_json(&json!({"ok": true, "stopped": stopped, "start": summary}))?;
    } else {
        printer.info(format!(
            "restarted: {} {} serves at {}",
            summary.active, summary.version, summary.url
        ));
    }
    Ok(EXIT_OK)
}

/// The rolling restart on a Swarm (with `--monitoring`, its monitoring
/// services among the others), and its summary.
async fn on_swarm(session: &Session<'_>, timeout: Duration, printer: &Printer) -> Result<u8> {
    let report = crate::swarm::restart::run(&session.stack(), timeout).await?;
    if printer.json() {
        printer.out_json(&report)?;
    } else {
        let done: Vec<String> = report
            .services
            .iter()
            .map(|s| match s.how {
                crate::swarm::restart::How::Reload => format!("{} reloaded", s.service),
                crate::swarm::restart::How::Replace(_) => {
                    format!("{} ({} new tasks)", s.service, s.after.len())
                }
            })
            .collect();
        let serving = match (&report.active, &report.version) {
            (Some(color), Some(version)) => format!("; {color} {version} serves"),
            _ => String::new(),
        };
        printer.info(format!(
            "restarted on the swarm: {}{serving}",
            done.join(", ")
        ));
    }
    Ok(EXIT_OK)
}
