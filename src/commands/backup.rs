//! `cryptus backup`, `cryptus backup --verify` and `cryptus restore`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::backup::{create, restore};
use crate::error::{EXIT_OK, failed_with_hint, usage};
use crate::lock;
use crate::output::Printer;
use crate::project::Project;

/// `cryptus backup`: writes a backup into `out` (default: the project's
/// `backups/`), or with `--verify DIR` checks one.
pub async fn run(
    project: &Project,
    out: Option<PathBuf>,
    keep: Option<u32>,
    verify_dir: Option<PathBuf>,
    lock_wait: Duration,
    printer: &Printer,
) -> Result<u8> {
    match verify_dir {
        Some(dir) => verify(&dir, printer),
        None => {
            let out = out.unwrap_or_else(|| project.dir.join("backups"));
            backup(project, out, keep, lock_wait, printer).await
        }
    }
}

async fn backup(
    project: &Project,
    out: PathBuf,
    keep: Option<u32>,
    lock_wait: Duration,
    printer: &Printer,
) -> Result<u8> {
    crate::interrupt::catch();
    // Cron runs this: it speaks when asked (-v, --json) or when it fails,
    // or when it cleans up after a killed run.
    let quiet = printer.quiet_unless_verbose();
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    let options = create::Options {
        out,
        keep: keep.map(|k| k as usize),
        lock: lock::Options {
            wait: lock_wait,
            force_unlock: false,
        },
    };
    let created = create::create(&engine, project, &options, &quiet, printer).await?;
    if printer.json() {
        printer.out_json(&created)?;
    } else {
        quiet.info(format!(
            "backup written to {} ({} redis keys)",
            created.dir.display(),
            created.manifest.redis_keys
        ));
        for old in &created.pruned {
            quiet.info(format!("removed the old backup {}", old.display()));
        }
    }
    Ok(EXIT_OK)
}

fn verify(dir: &Path, printer: &Printer) -> Result<u8> {
    let contents = restore::open(dir)?;
    let manifest = &contents.manifest;
    if printer.json() {
        printer.out_json(&json!({"ok": true, "dir": dir, "manifest": manifest}))?;
    } else {
        printer.out(&format!(
            "{}: ok, a backup of project {} from {}: {} files, {} redis keys\n",
            dir.display(),
            manifest.project,
            manifest.time.format("%Y-%m-%d %H:%M:%S UTC"),
            manifest.files.len(),
            manifest.redis_keys
        ))?;
    }
    Ok(EXIT_OK)
}

pub async fn restore(
    project: &Project,
    dir: &Path,
    yes: bool,
    lock_wait: Duration,
    printer: &Printer,
) -> Result<u8> {
    // With --yes nothing waits for a person: SIGINT and SIGTERM are caught
    // from the start, so a signal at any instant unwinds. Without it, Ctrl-C
    // at the question still simply ends the program.
    if yes {
        crate::interrupt::catch();
    }
    // Everything is checked before anything is changed.
    let contents = restore::open(dir)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(usage(
                format!("refusing to restore {} without confirmation", dir.display()),
                "not on a terminal: pass --yes to restore",
            ));
        }
        let answer = printer.ask(format!(
            "Restore project {} from {} ({})? Redis's data is replaced. [y/N]",
            project.name,
            dir.display(),
            contents.manifest.time.format("%Y-%m-%d %H:%M:%S UTC")
        ))?;
        if !matches!(answer.as_str(), "y" | "Y" | "yes") {
            return Err(failed_with_hint(
                format!("not restored: the answer was {answer:?}, not yes"),
                "answer y to restore, or pass --yes",
            ));
        }
    }
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    let options = lock::Options {
        wait: lock_wait,
        force_unlock: false,
    };
    let restored = restore::restore(&engine, project, dir, contents, &options, printer).await?;
    if printer.json() {
        printer.out_json(&restored)?;
    } else {
        printer.info(format!(
            "restored {} redis keys from {}",
            restored.redis_keys,
            dir.display()
        ));
        for file in &restored.files {
            printer.info(format!("restored {file}"));
        }
        for file in &restored.state {
            printer.info(format!("restored {file} into the engine"));
        }
    }
    Ok(EXIT_OK)
}
