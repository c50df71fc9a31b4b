//! `cryptus man`: the manual page, in roff, generated from the command
//! line's own tree: on stdout, or one page per command written into a
//! directory (`cryptus.1`, `cryptus-deploy.1`, ...).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{EXIT_OK, usage};
use crate::files;
use crate::output::Printer;

pub fn run(out: Option<&Path>, printer: &Printer) -> Result<u8> {
    let pages = pages()?;
    match out {
        None => {
            let (name, main) = pages.first().context("no manual page was generated")?;
            if printer.json() {
                printer.out_json(&serde_json::json!({ "ok": true, "page": name, "roff": main }))?;
            } else {
                printer.out(main)?;
            }
        }
        Some(dir) => {
            let written = write(dir, &pages)?;
            if printer.json() {
                printer.out_json(&serde_json::json!({ "ok": true, "written": written }))?;
            } else {
                printer.info(format!(
                    "wrote {} manual pages into {}",
                    written.len(),
                    dir.display()
                ));
            }
        }
    }
    Ok(EXIT_OK)
}

/// Every page as (file name, roff): `cryptus.1` first, then one per command.
pub fn pages() -> Result<Vec<(String, String)>> {
    // Built as clap builds it for parsing: each command then carries the
    // global options and its display name (`cryptus-deploy`).
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = vec![page(&command)?];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(page(sub)?);
    }
    Ok(pages)
}

fn page(command: &clap::Command) -> Result<(String, String)> {
    let man = clap_mangen::Man::new(command.clone());
    let name = man.get_filename();
    let mut roff = Vec::new();
    man.render(&mut roff)
        .with_context(|| format!("rendering the manual page {name}"))?;
    let roff = String::from_utf8(roff).with_context(|| format!("{name} is not UTF-8"))?;
    Ok((name, roff))
}

/// Writes each page into `dir`, each atomically; returns the paths written.
fn write(dir: &Path, pages: &[(String, String)]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|err| {
        usage(
            format!("cannot create the directory {}: {err}", dir.display()),
            "pass --out a directory you can write",
        )
    })?;
    pages
        .iter()
        .map(|(name, roff)| {
            let path = dir.join(name);
            files::write_atomically(&path, roff.as_bytes())?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command_and_the_main_page_names_them_all() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names[0], "cryptus.1");
        assert!(names.contains(&"cryptus-deploy.1"), "{names:?}");
        let (_, main) = &pages[0];
        assert!(main.starts_with(".ie"), "{main}");
        assert!(main.contains(".TH cryptus 1"), "{main}");
        for command in Cli::command().get_subcommands() {
            assert!(
                main.contains(&format!("cryptus\\-{}(1)", command.get_name())),
                "{}",
                command.get_name()
            );
        }
    }
}
