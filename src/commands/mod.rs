//! One function per subcommand. Each takes resolved settings and the printer
//! and returns the exit code.

mod deploy;
mod init;
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
        Command::Init { dir, force } => {
            let dir = dir.unwrap_or_else(|| project.dir.clone());
            init::run(&dir, force, printer)
        }
        Command::Start { timeout } => start::run(&project, timeout, printer).await,
        Command::Stop { timeout } => stop::run(&project, timeout, printer).await,
        Command::Restart { timeout } => restart::run(&project, timeout, printer).await,
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
                (Some(image), _) => crate::deploy::Source::Image(image),
                (None, Some(context)) => crate::deploy::Source::Build(context),
                (None, None) => crate::deploy::Source::Compose,
            };
            let settings = deploy::settings(&switch, watch, keep_failed);
            deploy::deploy(&project, source, version, &settings, printer).await
        }
        Command::Rollback { switch } => {
            let settings = deploy::settings(&switch, std::time::Duration::ZERO, false);
            deploy::rollback(&project, &settings, printer).await
        }
    }
}
