//! One function per subcommand. Each takes resolved settings and the printer
//! and returns the exit code.

mod backup;
mod completions;
mod config;
mod deploy;
mod health;
mod history;
mod init;
mod logs;
mod maintenance;
mod man;
mod resources;
mod restart;
mod rollback;
mod scale;
mod start;
mod status;
mod stop;

use std::time::Duration;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::compose::Compose;
use crate::engine::{Engine, START_INTERVAL_API};
use crate::output::Printer;
use crate::project::Project;

/// Says once what the compose file asks that cryptus on this engine does
/// not do: Swarm's keys, a pull, a `start_interval` the engine's API lacks.
/// For the commands that create containers.
fn warn_not_applied(compose: &Compose, engine: &Engine, printer: &Printer) {
    for warning in compose.warnings() {
        printer.warn_once(warning);
    }
    for service in compose.services.values() {
        if service.builds() && crate::stack::Color::of_service(&service.name).is_none() {
            printer.warn_once(format!(
                "services.{}: pull_policy: build builds only the app's colors (cryptus deploy); its image is taken from the engine",
                service.name
            ));
        }
    }
    let api = engine.api_version();
    if api < START_INTERVAL_API {
        for service in compose.services.values() {
            if service
                .healthcheck
                .as_ref()
                .is_some_and(|h| h.start_interval.is_some())
            {
                printer.warn_once(format!(
                    "services.{}.healthcheck.start_interval does not apply: the engine speaks API {}.{} and start_interval needs {}.{}",
                    service.name, api.0, api.1, START_INTERVAL_API.0, START_INTERVAL_API.1
                ));
            }
        }
    }
}

/// The nginx container of `project`, which keeps `what` in its state
/// volume: read over nginx's status port when it runs, else through the
/// engine (a stopped container).
async fn state_holder(
    engine: &Engine,
    project: &Project,
    what: &str,
) -> Result<crate::engine::Container> {
    let lb = crate::stack::container_name(&project.name, crate::stack::LB_SERVICE, 1);
    engine.inspect(&lb).await?.ok_or_else(|| {
        crate::error::failed_with_hint(
            format!(
                "project {} has no nginx container ({lb}), which holds {what}",
                project.name
            ),
            "run `cryptus start` (with -p NAME for another project)",
        )
    })
}

pub async fn run(cli: Cli, printer: &Printer) -> Result<u8> {
    // These speak of cryptus itself: no project, however it is set.
    match &cli.command {
        Command::Completions { shell } => return completions::run(*shell, printer),
        Command::Man { out } => return man::run(out.as_deref(), printer),
        _ => {}
    }
    let project = open_project(&cli)?;
    dispatch(cli.command, project, printer).await
}

/// The project the command acts on, with its compose files, profiles and
/// orchestrator (every command drives a Swarm as it drives one engine).
fn open_project(cli: &Cli) -> Result<Project> {
    let mut project = Project::new(&cli.project_dir, &cli.project)?
        .with_compose(cli.file.clone(), &cli.profile)?;
    project.orchestrator = cli.orchestrator;
    Ok(project)
}

async fn dispatch(command: Command, mut project: Project, printer: &Printer) -> Result<u8> {
    // One arm per subcommand, each handing resolved options to its file.
    match command {
        Command::Init { dir, force } => {
            init::run(dir.as_deref().unwrap_or(&project.dir), force, printer)
        }
        Command::Start {
            timeout,
            monitoring,
        } => {
            project.monitoring |= monitoring;
            start::run(&project, timeout, printer).await
        }
        Command::Stop { timeout } => stop::run(&project, timeout, printer).await,
        Command::Restart {
            timeout,
            monitoring,
        } => {
            project.monitoring |= monitoring;
            restart::run(&project, timeout, printer).await
        }
        Command::Status => status::run(&project, printer).await,
        command @ (Command::Deploy { .. } | Command::Rollback { .. } | Command::Scale { .. }) => {
            switch(command, &project, printer).await
        }
        Command::Health { timeout } => health::run(&project, timeout, printer).await,
        Command::Logs {
            services,
            follow,
            tail,
            since,
            timestamps,
        } => {
            let options = logs::Options::new(services, follow, tail, since, timestamps);
            logs::run(&project, options, printer).await
        }
        Command::History {
            since,
            outcome,
            operation,
            limit,
        } => {
            let options = history::Options {
                since,
                outcomes: outcome,
                operations: operation,
                limit,
            };
            history::run(&project, options, printer).await
        }
        Command::Maintenance { action } => maintenance::run(&project, action, printer).await,
        Command::Resources => resources::run(&project, printer).await,
        Command::Config => config::run(&project, printer),
        Command::Backup {
            out,
            keep,
            verify,
            lock_wait,
        } => backup::run(&project, out, keep, verify, lock_wait, printer).await,
        Command::Restore {
            dir,
            yes,
            lock_wait,
        } => backup::restore(&project, &dir, yes, lock_wait, printer).await,
        // Answered above, before the project; the same answer here.
        Command::Completions { shell } => completions::run(shell, printer),
        Command::Man { out } => man::run(out.as_deref(), printer),
    }
}

/// deploy, rollback and scale: their switch settings resolved, then the
/// switch.
async fn switch(command: Command, project: &Project, printer: &Printer) -> Result<u8> {
    match command {
        Command::Deploy {
            image,
            build,
            version,
            watch,
            keep_failed,
            canary,
            step,
            canary_cookie,
            hooks,
            switch,
        } => {
            let mut settings = deploy::settings(&switch, watch, keep_failed)?;
            settings.hooks = deploy::hooks(&hooks);
            settings.canary = canary.map(|shares| crate::switch::canary::Options {
                steps: shares.0,
                hold: step,
                cookie: canary_cookie,
            });
            let source = deploy::source(image, build);
            deploy::deploy(project, source, version, &settings, switch.dry_run, printer).await
        }
        Command::Rollback { hooks, switch } => {
            let mut settings = deploy::settings(&switch, Duration::ZERO, false)?;
            settings.hooks = deploy::hooks(&hooks);
            rollback::run(project, &settings, switch.dry_run, printer).await
        }
        Command::Scale {
            service,
            replicas,
            switch,
        } => {
            let settings = deploy::settings(&switch, Duration::ZERO, false)?;
            scale::run(
                project,
                &service,
                replicas,
                &settings,
                switch.dry_run,
                printer,
            )
            .await
        }
        other => Err(anyhow::anyhow!(
            "{} is not deploy, rollback or scale",
            other.name()
        )),
    }
}
