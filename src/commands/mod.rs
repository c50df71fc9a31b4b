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

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::output::Printer;
use crate::project::Project;

pub async fn run(cli: Cli, printer: &Printer) -> Result<u8> {
    let mut project = Project::new(&cli.project_dir, &cli.project)?;
    match cli.command {
        Command::Init { dir, force } => {
            let dir = dir.unwrap_or_else(|| project.dir.clone());
            init::run(&dir, force, printer)
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
            let source = match (image, build) {
                (Some(image), _) => crate::switch::Source::Image(image),
                (None, Some(context)) => crate::switch::Source::Build(context),
                (None, None) => crate::switch::Source::Compose,
            };
            let settings = deploy::settings(&switch, watch, keep_failed);
            let dry_run = switch.dry_run;
            deploy::deploy(&project, source, version, &settings, dry_run, printer).await
        }
        Command::Health { timeout } => health::run(&project, timeout, printer).await,
        Command::Logs {
            services,
            follow,
            tail,
            since,
            timestamps,
        } => {
            let (services, follow) = logs::seed_form(services, follow);
            let options = logs::Options {
                services,
                follow,
                tail,
                since,
                timestamps,
            };
            logs::run(&project, options, printer).await
        }
        Command::Scale {
            service,
            replicas,
            switch,
        } => {
            let settings = deploy::settings(&switch, std::time::Duration::ZERO, false);
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
        Command::Resources => resources::run(&project, printer).await,
        Command::Backup {
            out,
            keep,
            verify,
            lock_wait,
        } => match verify {
            Some(dir) => backup::verify(&dir, printer),
            None => {
                let out = out.unwrap_or_else(|| project.dir.join("backups"));
                backup::backup(&project, out, keep, lock_wait, printer).await
            }
        },
        Command::Restore {
            dir,
            yes,
            lock_wait,
        } => backup::restore(&project, &dir, yes, lock_wait, printer).await,
        Command::Rollback { switch } => {
            let settings = deploy::settings(&switch, std::time::Duration::ZERO, false);
            rollback::run(&project, &settings, switch.dry_run, printer).await
        }
    }
}
