//! `cryptus maintenance on|off|status`: maintenance mode, switched under the
//! deploy lock and shown from nginx's state volume ([`crate::maintenance`]).

use anyhow::Result;
use serde::Serialize;

use crate::cli::MaintenanceAction;
use crate::context::Session;
use crate::engine::Engine;
use crate::error::{EXIT_OK, failed_with_hint};
use crate::maintenance::{self, Settings, State, Switch};
use crate::nginx::Nginx;
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;

#[derive(Serialize)]
struct Document<'a> {
    ok: bool,
    project: &'a str,
    maintenance: &'a State,
}

pub async fn run(project: &Project, action: MaintenanceAction, printer: &Printer) -> Result<u8> {
    let (want, lock_wait) = match action {
        MaintenanceAction::Status => return status(project, printer).await,
        MaintenanceAction::On {
            message,
            retry_after,
            allow,
            lock_wait,
        } => {
            // Checked before anything is opened: bad input changes nothing.
            let settings = Settings::new(message, retry_after, &allow)?;
            (Switch::On(settings), lock_wait)
        }
        MaintenanceAction::Off { lock_wait } => (Switch::Off, lock_wait),
    };
    let session = Session::open(project, printer).await?;
    let state = if project.orchestrator == Orchestrator::Swarm {
        crate::swarm::maintenance::switch(&session.stack(), want, lock_wait).await?
    } else {
        maintenance::switch(&session.stack(), want, lock_wait).await?
    };
    show(project, &state, printer)
}

/// What is in force now.
async fn status(project: &Project, printer: &Printer) -> Result<u8> {
    if project.orchestrator == Orchestrator::Swarm {
        let engine = crate::orchestrator::connect(project.orchestrator).await?;
        let state = crate::swarm::maintenance::status(&engine, &project.name).await?;
        return show(project, &state, printer);
    }
    let engine = Engine::connect().await?;
    let container = super::state_holder(&engine, project, "the maintenance state").await?;
    let lb = container.name.clone();
    let nginx = Nginx::of(&engine, &container);
    let Some(state) = maintenance::read(&nginx).await? else {
        return Err(failed_with_hint(
            format!(
                "{} in {lb} records no readable state: it was edited by hand",
                maintenance::MAINTENANCE_FILE
            ),
            "run `cryptus maintenance off` (or `on`) to write it again",
        ));
    };
    show(project, &state, printer)
}

fn show(project: &Project, state: &State, printer: &Printer) -> Result<u8> {
    if printer.json() {
        printer.out_json(&Document {
            ok: true,
            project: &project.name,
            maintenance: state,
        })?;
    } else {
        printer.out(&format!("{}\n", state.describe()))?;
    }
    Ok(EXIT_OK)
}
