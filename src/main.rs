//! cryptus: zero-downtime blue/green deployments of a web app on a Docker host.
//!
//! `main` sets up logging and the runtime and owns the exit codes; each
//! subcommand lives in `commands/`, and the domain in the library's modules.

use std::process::ExitCode;

use clap::Parser;

use cryptus::cli::Cli;
use cryptus::output::{Printer, Verbosity};
use cryptus::{commands, error};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    init_tracing(cli.verbose);
    let printer = Printer::new(verbosity, cli.json);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(error::EXIT_USAGE);
        }
    };
    let json = cli.json;
    match runtime.block_on(commands::run(cli, &printer)) {
        Ok(code) => ExitCode::from(code),
        Err(err) if error::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let (code, hint) = error::classify(&err);
            eprintln!("error: {err:#}");
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            if json {
                let document = serde_json::json!({
                    "ok": false,
                    "error": format!("{err:#}"),
                    "hint": hint,
                    "exit_code": code,
                });
                let _ = printer.out_json(&document);
            }
            ExitCode::from(code)
        }
    }
}

/// Tracing on stderr: off unless `-v` (cryptus at debug) or RUST_LOG asks.
fn init_tracing(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => filter,
        _ => match verbose {
            0 => "off".to_owned(),
            1 => "cryptus=debug".to_owned(),
            _ => "cryptus=trace,bollard=debug".to_owned(),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
