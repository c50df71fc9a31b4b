//! `cryptus rollback`: traffic moves back to the idle color and the
//! release it ran, by the same path as a deploy.

use anyhow::Result;

use crate::context::Session;
use crate::output::Printer;
use crate::project::Project;
use crate::switch::{self, Ask, DryRun, Settings};

use super::deploy::{show, show_plan};
use crate::orchestrator::Orchestrator;

pub async fn run(
    project: &Project,
    settings: &Settings,
    dry_run: bool,
    printer: &Printer,
) -> Result<u8> {
    let session = Session::open(project, printer).await?;
    let stack = session.stack();
    if project.orchestrator == Orchestrator::Swarm {
        if dry_run {
            let plan = crate::swarm::switch::dry_run(&stack, Ask::Rollback, settings).await?;
            return show_plan(&plan, printer);
        }
        let report = crate::swarm::switch::run(&stack, Ask::Rollback, settings).await?;
        return show(&report, printer);
    }
    super::warn_not_applied(stack.compose, stack.engine, printer);
    if dry_run {
        let plan = switch::dry_run(&stack, DryRun::Switch(Ask::Rollback), settings).await?;
        return show_plan(&plan, printer);
    }
    let report = switch::rollback(&stack, settings).await?;
    show(&report, printer)
}
