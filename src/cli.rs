//! The command line: clap's tree and nothing else. Commands receive resolved
//! settings, never these types.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, Parser, Subcommand};

use crate::compose::duration;
use crate::history::{self, Outcome};
use crate::orchestrator::Orchestrator;

const AFTER_HELP: &str = "\
Exit codes:
  0  done
  1  the operation failed cleanly (unhealthy, rolled back, lock held, missing image,
     nothing to roll back to)
  2  usage, configuration or unexpected error (bad arguments, broken compose file,
     unreachable engine)

Durations:
  30s, 1m30s, 500ms, 2h or plain seconds (1.5); each flag gives its range, at
  most 24h (logs --since: 87600h). Out of range is a usage error (exit 2).

Environment:
  CRYPTUS_PROJECT  project name (as -p)
  COMPOSE_FILE     compose files (as -f), separated by COMPOSE_PATH_SEPARATOR (default :)
  COMPOSE_PROFILES active profiles (as --profile), separated by commas
  DOCKER_HOST      the Docker engine (default unix:///var/run/docker.sock)
  CRYPTUS_ORCHESTRATOR  engine (default) or swarm (as --orchestrator)
  CRYPTUS_SWARM_NODES   on a Swarm, other edge nodes' engines: NODE=unix://PATH|tcp://HOST:PORT,...
  CRYPTUS_NOTIFY_URL    URLs that get a JSON POST for each deploy, rollback and scale
  RUST_LOG         tracing filter for -v style diagnostics, e.g. cryptus=debug";

#[derive(Debug, Parser)]
#[command(
    name = "cryptus",
    version,
    about = "Zero-downtime blue/green deployments of a web app on a Docker host",
    after_help = AFTER_HELP
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

    /// A compose file, instead of the project's own (before the command, as
    /// with docker compose); repeat it: each file merges over the ones
    /// before.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Vec<PathBuf>,

    /// Enable the services of this profile; repeat it for more ('*': all).
    #[arg(
        long = "profile",
        global = true,
        env = "COMPOSE_PROFILES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub profile: Vec<String>,

    /// What runs the stack: one Docker engine, or a Docker Swarm through
    /// one of its managers (DOCKER_HOST must name a manager).
    #[arg(
        long,
        global = true,
        env = "CRYPTUS_ORCHESTRATOR",
        default_value = "engine",
        value_parser = Orchestrator::parse,
        value_name = "engine|swarm"
    )]
    pub orchestrator: Orchestrator,

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
        /// Give up after this long (100ms to 24h).
        #[arg(long, default_value = "120s", value_parser = deadline, value_name = "DUR")]
        timeout: Duration,
        /// Bring up the monitoring services too (compose/docker-compose.monitoring.yml);
        /// CRYPTUS_MONITORING=1 does the same.
        #[arg(long)]
        monitoring: bool,
    },
    /// Stop every container of the project; volumes (and Redis data) are kept.
    Stop {
        /// How long each container gets to stop before it is killed, 0 to 24h
        /// (default: its stop_grace_period).
        #[arg(long, value_parser = wait, value_name = "DUR")]
        timeout: Option<Duration>,
    },
    /// Stop, then start; on a Swarm, a rolling restart that keeps serving:
    /// every service gets new tasks one at a time, and nginx is reloaded.
    Restart {
        /// Give up starting after this long (100ms to 24h).
        #[arg(long, default_value = "120s", value_parser = deadline, value_name = "DUR")]
        timeout: Duration,
        /// Bring up the monitoring services too; CRYPTUS_MONITORING=1 does the same.
        #[arg(long)]
        monitoring: bool,
    },
    /// Show each service's containers, the color nginx serves, each color's
    /// version, the deploy lock and the last deployments.
    Status,
    /// Deploy a new version into the idle color and switch traffic to it with
    /// no failed request; roll back by itself if the new color fails.
    ///
    /// Steps: take the deploy lock, find the active color from nginx, get the
    /// image, run the pre-deploy hook, start the idle color with it, wait
    /// until every new container answers /api/health healthy as that color
    /// and version, rewrite nginx's upstream (nginx -t, reload), verify
    /// through the load balancer, watch, run the post-deploy hook, drain
    /// nginx's old workers, stop the old color, record the deployment.
    /// Hooks are declared under x-cryptus: hooks: in the compose file.
    Deploy {
        /// The image to deploy (default: the compose file's image, CRYPTUS_IMAGE).
        #[arg(long, value_name = "REF", conflicts_with = "build")]
        image: Option<String>,
        /// Build the image through the engine from CONTEXT (default: the color's
        /// compose build: context) and tag it with the version.
        #[arg(long, value_name = "CONTEXT", num_args = 0..=1)]
        build: Option<Option<PathBuf>>,
        /// The version the app answers as (default: the image's
        /// org.opencontainers.image.version label, else its tag).
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// Watch the new color this long after the switch; a failure flips back
        /// (0 to 24h).
        #[arg(long, default_value = "10s", value_parser = wait, value_name = "DUR")]
        watch: Duration,
        /// Keep the new containers when the deploy fails, to inspect them.
        #[arg(long)]
        keep_failed: bool,
        /// A canary release: before all clients move, the new color gets
        /// these shares of them in turn (percent, rising, 1 to 99; at most
        /// 10 steps; 100 follows), each held for --step; a failing step puts
        /// every client back on the old color.
        #[arg(long, value_name = "STEPS", value_parser = canary_steps)]
        canary: Option<crate::switch::canary::Shares>,
        /// How long each canary step is held and watched (1s to 24h).
        #[arg(long, default_value = "30s", value_parser = canary_hold, value_name = "DUR", requires = "canary")]
        step: Duration,
        /// The cookie that identifies a client, so it keeps its color during a
        /// canary (clients without it are split by address).
        #[arg(long, default_value = crate::switch::canary::DEFAULT_COOKIE, value_parser = canary_cookie, value_name = "NAME", env = "CRYPTUS_CANARY_COOKIE", requires = "canary")]
        canary_cookie: String,
        #[command(flatten)]
        hooks: HookArgs,
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// Switch back to the previous deployment, with the same zero-downtime path.
    ///
    /// Starts the other color's containers if they are stopped (recreates them
    /// from the recorded image if they were removed), health-gates, flips,
    /// verifies and drains. Rolling back twice returns to where you were.
    Rollback {
        #[command(flatten)]
        hooks: HookArgs,
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// Check every service: nginx (config and an answer through the load
    /// balancer), each app container, redis. Exits 1 naming what is unhealthy.
    Health {
        /// Deadline for each check (100ms to 24h).
        #[arg(long, default_value = "5s", value_parser = deadline, value_name = "DUR")]
        timeout: Duration,
    },
    /// Show the logs of one service, several, or all, multiplexed with a prefix.
    ///
    /// The seed's form `logs nginx true` (follow as a last word) works too.
    Logs {
        /// Services (default: all).
        services: Vec<String>,
        /// Keep following until Ctrl-C, including containers that start later
        /// (a deploy's new color).
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end of each container's log (0 to 1000000).
        #[arg(long, value_name = "N", value_parser = tail)]
        tail: Option<usize>,
        /// Only lines since a duration ago (10m, at most 87600h) or a time
        /// (2026-01-02T15:04:05Z, from 1970 to now).
        #[arg(long, value_name = "DUR|TIME")]
        since: Option<String>,
        /// Show the engine's timestamp on each line.
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Set a color's replica count: `scale cryptus-blue 3`.
    ///
    /// The active color grows or shrinks with no failed request; for the idle
    /// color the count is what the next deploy into it starts.
    #[command(allow_negative_numbers = true)]
    Scale {
        /// cryptus-blue or cryptus-green.
        service: String,
        /// Replicas, 1 to 32.
        replicas: i64,
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// One sample of every container's CPU, memory, network and disk I/O and
    /// processes, and the host's cores, memory and disk.
    Resources,
    /// Print the resolved compose model: the files merged, variables
    /// interpolated, anchors, includes and extends resolved, profiles
    /// applied; as YAML, or as one JSON document with --json.
    ///
    /// Changes nothing and needs no engine: a check to run before a deploy.
    /// A broken file exits 2 naming the file, the key and the line.
    Config,
    /// Back up Redis (a consistent snapshot), nginx's configuration and live
    /// upstream, the compose files and .env, and the deployment history.
    ///
    /// Writes OUT/<YYYYMMDD_HHMMSS>/ atomically: complete or absent. Quiet on
    /// success unless -v or --json; on failure one line and exit 1.
    Backup {
        /// The directory that holds the backups (default: PROJECT_DIR/backups).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Keep only the newest N complete backups (1 to 100000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        keep: Option<u32>,
        /// Check a backup's manifest and every checksum, touching nothing else.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "keep"])]
        verify: Option<PathBuf>,
        /// Wait this long for a deploy in progress to finish (0 to 24h).
        #[arg(long, default_value = "10m", value_parser = wait, value_name = "DUR")]
        lock_wait: Duration,
    },
    /// Restore a backup: verified first, then Redis, configuration and history.
    ///
    /// Asks for confirmation on a terminal; elsewhere it needs --yes.
    Restore {
        /// The backup directory, e.g. backups/20261128_030000.
        dir: PathBuf,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Wait this long for a deploy in progress to finish (0 to 24h).
        #[arg(long, default_value = "10m", value_parser = wait, value_name = "DUR")]
        lock_wait: Duration,
    },
    /// The kept deployment history, oldest first: each deploy, rollback,
    /// scale and repair, how it ended, between which colors and versions,
    /// how long it took, who ran it and why it failed.
    ///
    /// The newest 200 entries are kept with the engine (on a Swarm, the
    /// newest 100 in the cluster's state record). A table, or one JSON
    /// document with --json; an empty history says so and exits 0.
    History {
        /// Only entries since a duration ago (2h, at most 87600h) or a time
        /// (2026-01-02T15:04:05Z, from 1970 to now).
        #[arg(long, value_name = "DUR|TIME")]
        since: Option<String>,
        /// Only entries that ended so (repeat it, or separate with commas).
        #[arg(long, value_name = "OUTCOME", value_delimiter = ',', value_parser = outcome())]
        outcome: Vec<Outcome>,
        /// Only entries of this operation (repeat it, or separate with commas).
        #[arg(long, value_name = "OP", value_delimiter = ',', value_parser = operation())]
        operation: Vec<String>,
        /// Only the newest N of the entries that match (1 to 200).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=history::KEEP as i64))]
        limit: Option<u32>,
    },
    /// Maintenance mode: nginx answers every request but /api/health with
    /// 503, a Retry-After header and a page with the message (JSON when the
    /// client accepts JSON); allowed addresses still reach the app.
    ///
    /// The state is kept with the engine (nginx's state volume): it survives
    /// stop, start and restart, and deploys and rollbacks keep it on.
    Maintenance {
        #[command(subcommand)]
        action: MaintenanceAction,
    },
    /// Print the shell completion script for SHELL on stdout.
    ///
    /// bash: `cryptus completions bash > /etc/bash_completion.d/cryptus`;
    /// see docs/shell.md for zsh, fish, elvish and PowerShell.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, or write one page per command
    /// into a directory.
    ///
    /// `cryptus man | gzip > /usr/local/share/man/man1/cryptus.1.gz`.
    Man {
        /// Write cryptus.1 and cryptus-COMMAND.1 for each command into DIR,
        /// each file atomically, instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init { .. } => "init",
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Restart { .. } => "restart",
            Command::Status => "status",
            Command::Deploy { .. } => "deploy",
            Command::Rollback { .. } => "rollback",
            Command::Health { .. } => "health",
            Command::Logs { .. } => "logs",
            Command::Scale { .. } => "scale",
            Command::Resources => "resources",
            Command::Config => "config",
            Command::Backup { .. } => "backup",
            Command::Restore { .. } => "restore",
            Command::History { .. } => "history",
            Command::Maintenance { .. } => "maintenance",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceAction {
    /// Switch maintenance on (again, to change the message or the list).
    On {
        /// The message on the page, at most 500 characters (HTML-escaped).
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// Seconds clients are told to wait (Retry-After), 0 to 86400.
        #[arg(
            long,
            default_value_t = crate::maintenance::DEFAULT_RETRY_AFTER,
            value_parser = clap::value_parser!(u32).range(0..=crate::maintenance::MAX_RETRY_AFTER as i64),
            value_name = "SECONDS"
        )]
        retry_after: u32,
        /// An address or network (CIDR) that still reaches the app; repeat
        /// it, or separate with commas (at most 64).
        #[arg(long, value_name = "CIDR", value_delimiter = ',')]
        allow: Vec<String>,
        /// Wait this long for a deploy in progress to finish (0 to 24h).
        #[arg(long, default_value = "0s", value_parser = wait, value_name = "DUR")]
        lock_wait: Duration,
    },
    /// Switch maintenance off: the app answers everyone again.
    Off {
        /// Wait this long for a deploy in progress to finish (0 to 24h).
        #[arg(long, default_value = "0s", value_parser = wait, value_name = "DUR")]
        lock_wait: Duration,
    },
    /// Show whether maintenance is on, since when, by whom, and its settings.
    Status,
}

/// The deploy hooks of deploy and rollback (`x-cryptus: hooks:` in the
/// compose file; see docs/hooks.md).
#[derive(Debug, Args)]
pub struct HookArgs {
    /// Deadline of each hook; past it the hook's container is stopped and
    /// removed, and the hook has failed (100ms to 24h).
    #[arg(long, default_value = "5m", value_parser = deadline, value_name = "DUR")]
    pub hook_timeout: Duration,
    /// Run none of the project's hooks (a warning names those skipped).
    #[arg(long)]
    pub skip_hooks: bool,
}

/// Options shared by deploy, rollback and scale.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Deadline of each wait: the new color answering healthy, nginx
    /// serving it, the answers in a row through the load balancer (100ms to 24h).
    #[arg(long, default_value = "60s", value_parser = deadline, value_name = "DUR")]
    pub timeout: Duration,
    /// How long nginx's old workers may finish in-flight requests before the
    /// old color stops (0 to 24h).
    #[arg(long, default_value = "30s", value_parser = wait, value_name = "DUR")]
    pub drain: Duration,
    /// How often health is polled (10ms to 1m).
    #[arg(long, default_value = "100ms", value_parser = poll, value_name = "DUR")]
    pub poll: Duration,
    /// Answers in a row from the new color, through the load balancer, that
    /// prove the switch (1 to 1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub verify: u32,
    /// Keep the old color running as a warm standby (instant rollback).
    #[arg(long)]
    pub keep_standby: bool,
    /// Wait this long for the deploy lock instead of failing at once (0 to 24h).
    #[arg(long, default_value = "0s", value_parser = wait, value_name = "DUR")]
    pub lock_wait: Duration,
    /// Break the deploy lock, whoever holds it (with a warning).
    #[arg(long)]
    pub force_unlock: bool,
    /// When Prometheus runs, roll back if this PromQL condition holds during
    /// the watch window; `{color}`, `{version}` and `{window}` are filled in
    /// (default: the new version answers more than 1% 5xx over the window).
    #[arg(long, value_name = "PROMQL", env = "CRYPTUS_GATE")]
    pub gate: Option<String>,
    /// Print the plan (the target color, replicas, what starts, what nginx
    /// names, what drains and stops) and change nothing; no lock is taken.
    #[arg(long)]
    pub dry_run: bool,
}

// Every duration goes through the one bounded parser, with the range of its
// kind; clap prefixes the flag: `invalid value '1e30' for '--drain <DUR>'`.

/// A timeout or deadline: 100ms to 24h.
pub fn deadline(text: &str) -> Result<Duration, String> {
    duration::parse_in(text, &duration::DEADLINE)
}

/// A wait that may be zero (drain, watch, lock wait, stop grace): 0 to 24h.
pub fn wait(text: &str) -> Result<Duration, String> {
    duration::parse_in(text, &duration::WAIT)
}

/// `deploy --canary`: rising shares of clients, in percent.
pub fn canary_steps(text: &str) -> Result<crate::switch::canary::Shares, String> {
    crate::switch::canary::parse_steps(text)
}

/// `deploy --canary-cookie`: a cookie name nginx can read.
pub fn canary_cookie(text: &str) -> Result<String, String> {
    crate::switch::canary::parse_cookie(text)
}

/// How long a canary step is held: 1s to 24h.
pub fn canary_hold(text: &str) -> Result<Duration, String> {
    let hold = duration::parse_in(text, &duration::WAIT)?;
    if hold < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than 1s"));
    }
    Ok(hold)
}

/// A polling interval: 10ms to 1m.
pub fn poll(text: &str) -> Result<Duration, String> {
    duration::parse_in(text, &duration::POLL)
}

/// `history --outcome`: one of the outcomes an entry records; listed, so
/// that the shells complete them and an unknown one is told them.
pub fn outcome() -> impl TypedValueParser<Value = Outcome> {
    PossibleValuesParser::new(Outcome::ALL.map(Outcome::as_str))
        .try_map(|text| Outcome::parse(&text))
}

/// `history --operation`: one of the operations that record an entry.
pub fn operation() -> impl TypedValueParser<Value = String> {
    PossibleValuesParser::new(history::operation::ALL)
        .try_map(|text| history::parse_operation(&text))
}

/// The most lines `logs --tail` asks each container for.
pub const MAX_TAIL: usize = 1_000_000;

/// `logs --tail N`: 0 to [`MAX_TAIL`].
pub fn tail(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_TAIL)
        .ok_or_else(|| format!("{text:?} is not a line count from 0 to {MAX_TAIL}"))
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
        assert_eq!(deadline("90s"), Ok(Duration::from_secs(90)));
        assert!(deadline("soon").unwrap_err().contains("not a duration"));
        assert!(deadline("0s").is_err());
        assert_eq!(wait("0"), Ok(Duration::ZERO));
        assert!(wait("1e30").is_err());
        assert!(poll("0s").is_err());
        assert!(Cli::try_parse_from(["cryptus", "start", "--timeout", "soon"]).is_err());
        assert!(Cli::try_parse_from(["cryptus", "deploy", "--timeout", "1e19"]).is_err());
    }

    #[test]
    fn tails_are_bounded() {
        assert_eq!(tail("0"), Ok(0));
        assert_eq!(tail("1000000"), Ok(1_000_000));
        for bad in ["-1", "1000001", "18446744073709551616", "1e3", "all"] {
            assert!(tail(bad).is_err(), "{bad}");
        }
    }
}
