//! `cryptus status`: each service's containers, the color nginx serves and
//! each color's version (gathered by [`crate::status`]), as text or JSON;
//! on a Swarm, the tasks of each service and their nodes ([`crate::swarm::status`]).

use anyhow::Result;

use crate::error::EXIT_OK;
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;
use crate::status;
use crate::swarm;

pub async fn run(project: &Project, printer: &Printer) -> Result<u8> {
    let declared = declared_services(project, printer);
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    if project.orchestrator == Orchestrator::Swarm {
        let status = swarm::status::gather(&engine, &project.name, &declared).await?;
        if printer.json() {
            printer.out_json(&status)?;
        } else {
            printer.out(&swarm::status::render(&status))?;
        }
        return Ok(EXIT_OK);
    }
    let containers = status::service_containers(&engine, &project.name).await?;
    let status = status::gather(&engine, project, &containers, &declared).await;
    if printer.json() {
        printer.out_json(&status)?;
    } else {
        printer.out(&status::render(&status))?;
    }
    Ok(EXIT_OK)
}

/// The compose file's services. The file only adds services that have no
/// container yet; status works from the engine's labels even when the file
/// is missing or broken (a broken one is warned about).
fn declared_services(project: &Project, printer: &Printer) -> Vec<String> {
    match project.load() {
        Ok(compose) => compose.services.keys().cloned().collect(),
        Err(err) => {
            if project.main_file().exists() {
                printer.warn(format!("{err:#}"));
            }
            Vec::new()
        }
    }
}
