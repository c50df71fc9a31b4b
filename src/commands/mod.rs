//! One function per subcommand. Each takes resolved settings and the printer
//! and returns the exit code.

mod backup;
mod deploy;
mod health;
mod init;
mod logs;
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
use crate::output::Printer;
use crate::project::Project;

pub async fn run(cli: Cli, printer: &Printer) -> Result<u8> {
    let mut project = Project::new(&cli.project_dir, &cli.project)?;
    // One arm per subcommand, each handing resolved options to its file.
    match cli.command {
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
        Command::Deploy {
            image,
            build,
            version,
            watch,
            keep_failed,
            switch,
        } => {
            let settings = deploy::settings(&switch, watch, keep_failed);
            let source = deploy::source(image, build);
            deploy::deploy(
                &project,
                source,
                version,
                &settings,
                switch.dry_run,
                printer,
            )
            .await
        }
        Command::Rollback { switch } => {
            let settings = deploy::settings(&switch, Duration::ZERO, false);
            rollback::run(&project, &settings, switch.dry_run, printer).await
        }
        Command::Scale {
            service,
            replicas,
            switch,
        } => {
            let settings = deploy::settings(&switch, Duration::ZERO, false);
            scale::run(
                &project,
                &service,
                replicas,
                &settings,
                switch.dry_run,
                printer,
            )
            .await
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
    }
}
