//! The command line: clap's tree and nothing else. Commands receive resolved
//! settings, never these types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes:
  0  done
  1  the operation failed cleanly (unhealthy, rolled back, lock held, missing image)
  2  usage, configuration or unexpected error (bad arguments, broken compose file,
     unreachable engine)

Environment:
  CRYPTUS_PROJECT  project name (as -p)
  DOCKER_HOST      the Docker engine (default unix:///var/run/docker.sock)
  RUST_LOG         tracing filter for -v style diagnostics, e.g. cryptus=debug";

#[derive(Debug, Parser)]
#[command(
    name = "cryptus",
    version,
    about = "Zero-downtime blue/green deployments of a web app on a Docker host",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Directory holding compose/, nginx/ and monitoring/.
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub project_dir: PathBuf,

    /// Project name: prefixes every container, network and volume.
    #[arg(
        short = 'p',
        long,
        global = true,
        env = "CRYPTUS_PROJECT",
        default_value = "cryptus",
        value_name = "NAME"
    )]
    pub project: String,

    /// Print one JSON document on stdout (progress stays on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// More detail on stderr (-vv for engine calls).
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Nothing on stderr but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the default compose/, nginx/ and monitoring/ files into a project.
    Init {
        /// The project directory (default: --project-dir).
        dir: Option<PathBuf>,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Bring the stack up: network, volumes, redis, the active color, nginx.
    ///
    /// Returns once the app answers healthy through the load balancer. A second
    /// start changes nothing.
    Start {
        /// Give up after this long.
        #[arg(long, default_value = "120s", value_parser = duration, value_name = "DUR")]
        timeout: Duration,
    },
    /// Stop every container of the project; volumes (and Redis data) are kept.
    Stop {
        /// Seconds each container gets to stop before it is killed (default: its
        /// stop_grace_period).
        #[arg(long, value_parser = duration, value_name = "DUR")]
        timeout: Option<Duration>,
    },
    /// Stop, then start.
    Restart {
        /// Give up starting after this long.
        #[arg(long, default_value = "120s", value_parser = duration, value_name = "DUR")]
        timeout: Duration,
    },
    /// Show each service's containers, the color nginx serves and each color's version.
    Status,
}

/// A duration as `30s`, `1m30s`, `500ms` or plain seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
    crate::compose::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration; write it as 30s, 1m30s or 500ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_checked() {
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert!(duration("soon").is_err());
        assert!(Cli::try_parse_from(["cryptus", "start", "--timeout", "soon"]).is_err());
    }
}
