//! One function per subcommand. Each takes resolved settings and the printer
//! and returns the exit code.

mod backup;
mod deploy;
mod health;
mod init;
mod logs;
mod resources;
mod restart;
mod start;
mod status;
mod stop;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::output::Printer;
use crate::project::Project;

pub async fn run(cli: Cli, printer: &Printer) -> Result<u8> {
    let project = Project::new(&cli.project_dir, &cli.project)?;
    match cli.command {
        Command::Deploy {
            image,
            build,
            version,
            watch,
            keep_failed,
            switch,
        } => {
            let source = match (image, build) {
                (Some(image), _) => crate::deploy::Source::Image(image),
                (None, Some(context)) => crate::deploy::Source::Build(context),
                (None, None) => crate::deploy::Source::Compose,
            };
            let settings = deploy::settings(&switch, watch, keep_failed);
            deploy::deploy(&project, source, version, &settings, printer).await
        }
        Command::Scale {
            service,
            replicas,
            switch,
        } => {
            let settings = deploy::settings(&switch, std::time::Duration::ZERO, false);
            deploy::scale(&project, &service, replicas, &settings, printer).await
        }
        Command::Rollback { switch } => {
            let settings = deploy::settings(&switch, std::time::Duration::ZERO, false);
            deploy::rollback(&project, &settings, printer).await
        }
        command => run_stack_command(command, project, printer).await,
    }
}

/// Every command but the switch's: bringing the stack up and down, looking
/// at it, and backing it up.
async fn run_stack_command(
    command: Command,
    mut project: Project,
    printer: &Printer,
) -> Result<u8> {
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
        Command::Resources => resources::run(&project, printer).await,
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
        Command::Deploy { .. } | Command::Scale { .. } | Command::Rollback { .. } => Err(
            anyhow::anyhow!("deploy, scale and rollback are run by commands::run"),
        ),
    }
}
