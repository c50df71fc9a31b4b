//! `cryptus start`: bring the stack up, on one engine or on a Swarm.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::context::Session;
use crate::error::EXIT_OK;
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;
use crate::swarm;

pub async fn run(project: &Project, timeout: Duration, printer: &Printer) -> Result<u8> {
    let session = Session::open(project, printer).await?;
    if project.orchestrator == Orchestrator::Swarm {
        let started = swarm::up::start(&session.stack(), timeout).await?;
        if printer.json() {
            printer
                .out_json(&json!({"ok": true, "changed": started.changed(), "start": started}))?;
        } else if started.changed() {
            printer.info(format!(
                "the stack is up on the swarm: {} {} in services {}",
                started.active,
                started.version,
                started.services.join(", ")
            ));
        } else {
            printer.info(format!(
                "the stack is already up on the swarm; nothing changed ({} {})",
                started.active, started.version
            ));
        }
        return Ok(EXIT_OK);
    }
    super::warn_not_applied(session.stack().compose, session.stack().engine, printer);
    let summary = session.stack().up("start", timeout).await?;
    if printer.json() {
        printer.out_json(&json!({"ok": true, "changed": summary.changed(), "start": summary}))?;
    } else if summary.changed() {
        printer.info(format!(
            "the stack is up: {} {} serves at {}",
            summary.active, summary.version, summary.url
        ));
    } else {
        printer.info(format!(
            "the stack is already up; nothing changed ({} {} serves at {})",
            summary.active, summary.version, summary.url
        ));
    }
    Ok(EXIT_OK)
}
