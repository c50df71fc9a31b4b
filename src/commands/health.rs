//! `cryptus health`: checks every service of the project (through
//! [`crate::checks`]), each within a deadline, and exits 1 naming what is
//! unhealthy and why.

use std::time::Duration;

use anyhow::Result;

use crate::checks;
use crate::error::{EXIT_FAILED, EXIT_OK};
use crate::output::Printer;
use crate::project::Project;
use crate::status;

pub async fn run(project: &Project, timeout: Duration, printer: &Printer) -> Result<u8> {
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    let containers = status::service_containers(&engine, &project.name).await?;
    let report = checks::check(&engine, &project.name, &containers, timeout).await;
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
