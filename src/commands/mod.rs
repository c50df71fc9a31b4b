//! One function per subcommand. Each takes resolved settings and the printer
//! and returns the exit code.

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
    }
}
