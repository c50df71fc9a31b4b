//! `cryptus completions SHELL`: the shell's completion script, generated from
//! the command line's own tree, so it never falls behind a new flag.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::EXIT_OK;
use crate::output::Printer;

/// The name the scripts complete: the binary's.
const BIN: &str = "cryptus";

pub fn run(shell: Shell, printer: &Printer) -> Result<u8> {
    let script = script(shell)?;
    if printer.json() {
        printer.out_json(&serde_json::json!({
            "ok": true,
            "shell": shell.to_string(),
            "script": script,
        }))?;
    } else {
        printer.out(&script)?;
    }
    Ok(EXIT_OK)
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Result<String> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BIN, &mut script);
    String::from_utf8(script).with_context(|| format!("the {shell} completion script is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in Shell::value_variants() {
            let script = script(*shell).unwrap();
            for command in ["deploy", "rollback", "completions", "man"] {
                assert!(script.contains(command), "{shell} lacks {command}");
            }
        }
    }
}
