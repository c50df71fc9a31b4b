//! `cryptus scale`: a color's replica count, with no failed request, on
//! one engine or on a Swarm.

use anyhow::Result;

use crate::context::Session;
use crate::error::EXIT_OK;
use crate::output::Printer;
use crate::project::Project;
use crate::switch::{self, DryRun, Settings};

use super::deploy::show_plan;
use crate::orchestrator::Orchestrator;

pub async fn run(
    project: &Project,
    service: &str,
    replicas: i64,
    settings: &Settings,
    dry_run: bool,
    printer: &Printer,
) -> Result<u8> {
    // 0 would take the color down: the range is 1 to MAX_REPLICAS, and the
    // upper bound is checked where the service is known.
    let replicas = u32::try_from(replicas)
        .ok()
        .filter(|r| *r >= 1)
        .ok_or_else(|| {
            let why = if replicas == 0 {
                format!("0 replicas of {service} would stop all traffic to it")
            } else {
                format!("{replicas} is not a replica count")
            };
            crate::error::usage(
                why,
                format!(
                    "choose 1 to {}; `cryptus stop` stops the stack",
                    crate::switch::MAX_REPLICAS
                ),
            )
        })?;
    let session = Session::open(project, printer).await?;
    let stack = session.stack();
    if project.orchestrator == Orchestrator::Swarm {
        if dry_run {
            let color = switch::scale::color_to_scale(&stack, service, replicas)?;
            return show_plan(
                &crate::swarm::scale::dry_run(&stack, color, replicas).await?,
                printer,
            );
        }
    } else {
        super::warn_not_applied(stack.compose, stack.engine, printer);
    }
    if dry_run {
        let service = service.to_owned();
        let plan = switch::dry_run(&stack, DryRun::Scale { service, replicas }, settings).await?;
        return show_plan(&plan, printer);
    }
    // The same checks of the service and count, then the orchestrator's
    // own scale: the switch knows nothing of Swarm.
    let report = if project.orchestrator == Orchestrator::Swarm {
        let color = switch::scale::color_to_scale(&stack, service, replicas)?;
        crate::swarm::scale::run(&stack, color, replicas, settings).await?
    } else {
        switch::scale(&stack, service, replicas, settings).await?
    };
    if printer.json() {
        printer.out_json(&report)?;
    } else if report.active {
        printer.info(format!(
            "{} runs {} replica{} (was {})",
            report.service,
            report.to,
            if report.to == 1 { "" } else { "s" },
            report.from
        ));
    }
    Ok(EXIT_OK)
}
