//! `cryptus health`: checks every service of the project (through
//! [`crate::checks`]), each within a deadline, and exits 1 naming what is
//! unhealthy and why; on a Swarm, every task ([`crate::swarm::health`]).

use std::time::Duration;

use anyhow::Result;

use crate::checks;
use crate::error::{EXIT_FAILED, EXIT_OK};
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;
use crate::status;

pub async fn run(project: &Project, timeout: Duration, printer: &Printer) -> Result<u8> {
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    let report = if project.orchestrator == Orchestrator::Swarm {
        let declared: Vec<String> = project
            .load()
            .map(|compose| compose.services.keys().cloned().collect())
            .unwrap_or_default();
        crate::swarm::health::check(&engine, &project.name, &declared, timeout).await?
    } else {
        let containers = status::service_containers(&engine, &project.name).await?;
        checks::check(&engine, &project.name, &containers, timeout).await
    };
    if printer.json() {
        printer.out_json(&report)?;
    } else {
        printer.out(&checks::render(&report))?;
    }
    match &report.error {
        None => Ok(EXIT_OK),
        Some(error) => {
            printer.error(error, report.hint);
            Ok(EXIT_FAILED)
        }
    }
}
