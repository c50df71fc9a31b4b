//! `cryptus restart`: stop, then start.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::engine::Engine;
use crate::error::EXIT_OK;
use crate::lifecycle::Stack;
use crate::output::Printer;
use crate::project::Project;

pub async fn run(project: &Project, timeout: Duration, printer: &Printer) -> Result<u8> {
    // Load the files first: a broken compose file must not leave the stack stopped.
    let compose = project.load()?;
    let engine = Engine::connect().await?;
    let stopped = super::stop::stop(&engine, project, None, printer).await?;
    let stack = Stack {
        engine: &engine,
        project,
        compose: &compose,
        printer,
    };
    let summary = stack.up(timeout).await?;
    if printer.json() {
        printer.out_json(&json!({"ok": true, "stopped": stopped, "start": summary}))?;
    } else {
        printer.info(format!(
            "restarted: {} {} serves at {}",
            summary.active, summary.version, summary.url
        ));
    }
    Ok(EXIT_OK)
}
