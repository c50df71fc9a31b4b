//! cryptus: zero-downtime blue/green deployments of a web app on a Docker host.
//!
//! `main` sets up logging and the runtime and owns the exit codes; each
//! subcommand lives in `commands/`, and the domain in the library's modules.

use std::process::ExitCode;

use clap::Parser;

use cryptus::cli::Cli;
use cryptus::error::{EXIT_OK, EXIT_USAGE};
use cryptus::output::{Printer, Verbosity};
use cryptus::{commands, error};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return argument_error(&err),
    };
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    init_tracing(cli.verbose);
    let printer = Printer::new(verbosity, cli.json);
    install_panic_hook(printer.clone());

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            printer.report_failure(
                &format!("cannot start the async runtime: {err}"),
                None,
                EXIT_USAGE,
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let exit = match runtime.block_on(commands::run(cli, &printer)) {
        Ok(code) => ExitCode::from(code),
        Err(err) if error::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let (code, hint) = error::classify(&err);
            printer.report_failure(&format!("{err:#}"), hint, code);
            ExitCode::from(code)
        }
    };
    // Requests a dropped wait left running end before the runtime does,
    // which would cut them (each within its window); the outcome is
    // already printed.
    let abandoned = cryptus::engine::whole::abandoned();
    if abandoned > 0 {
        printer.info(format!(
            "waiting up to {}s for {abandoned} engine request(s) already sent to end",
            cryptus::engine::whole::SETTLE_WITHIN.as_secs()
        ));
    }
    runtime.block_on(cryptus::engine::whole::settled());
    exit
}

/// Bad arguments exit 2 with clap's message; under `--json` the failure
/// document goes to stdout as for any other error. `--help` and `--version`
/// print as usual and exit 0.
fn argument_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) && err.exit_code() == 0
    {
        let _ = err.print();
        return ExitCode::from(EXIT_OK);
    }
    let _ = err.print();
    let json = std::env::args_os()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json");
    if json {
        let rendered = err.render().to_string();
        let message = rendered
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("bad arguments")
            .trim_start_matches("error: ")
            .to_owned();
        let printer = Printer::new(Verbosity::Quiet, true);
        let document = cryptus::output::failure_document(
            &message,
            Some("see `cryptus --help` or `cryptus COMMAND --help`"),
            EXIT_USAGE,
        );
        let _ = printer.out_json(&document);
    }
    ExitCode::from(EXIT_USAGE)
}

/// A panic is a bug: it is reported as an internal error with exit 2 (not
/// Rust's 101), under `--json` as the usual failure document. The tests
/// assert that this never fires.
fn install_panic_hook(printer: Printer) {
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        printer.report_failure(
            &format!("internal error: {payload}{location}"),
            Some("this is a bug in cryptus; please report it with the command you ran"),
            EXIT_USAGE,
        );
        std::process::exit(i32::from(EXIT_USAGE));
    }));
}

/// Tracing on stderr: off unless `-v` (cryptus at debug) or RUST_LOG asks.
fn init_tracing(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => filter,
        _ => match verbose {
            0 => "off".to_owned(),
            1 => "cryptus=debug".to_owned(),
            _ => format!("cryptus=trace,{}=debug", cryptus::engine::CLIENT_LOG_TARGET),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
