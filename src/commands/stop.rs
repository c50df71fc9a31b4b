//! `cryptus stop`: stop every container of the project, keep the volumes;
//! on a Swarm, remove the stack's services.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::engine::Engine;
use crate::error::EXIT_OK;
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;

pub async fn run(project: &Project, timeout: Option<Duration>, printer: &Printer) -> Result<u8> {
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    let stopped = match project.orchestrator {
        Orchestrator::Engine => stop(&engine, project, timeout, printer).await?,
        Orchestrator::Swarm => {
            crate::swarm::up::stop(&engine, &project.name, timeout, printer).await?
        }
    };
    if printer.json() {
        printer.out_json(&json!({"ok": true, "stopped": stopped}))?;
    }
    Ok(EXIT_OK)
}

/// Stops the project (nginx first, so no request reaches a stopping app).
/// Stopping needs no compose file: it works from the engine's labels alone.
pub async fn stop(
    engine: &Engine,
    project: &Project,
    timeout: Option<Duration>,
    printer: &Printer,
) -> Result<Vec<String>> {
    let step = printer.step(format!("stopping project {}", project.name));
    let stopped = crate::lifecycle::stop_project(engine, &project.name, timeout).await?;
    if stopped.is_empty() {
        step.done_with("nothing was running");
    } else {
        step.done_with(format!("stopped {}", stopped.join(", ")));
    }
    Ok(stopped)
}
