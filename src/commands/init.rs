//! `cryptus init [DIR]`: write the default project files.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::assets::DEFAULTS;
use crate::error::EXIT_OK;
use crate::output::Printer;

pub fn run(dir: &Path, force: bool, printer: &Printer) -> Result<u8> {
    let mut written = Vec::new();
    let mut kept = Vec::new();
    for asset in DEFAULTS {
        let path = dir.join(asset.path);
        if path.exists() && !force {
            kept.push(asset.path);
            continue;
        }
        crate::files::write_atomically(&path, asset.text.as_bytes())?;
        written.push(asset.path);
    }
    if printer.json() {
        printer.out_json(&json!({
            "ok": true,
            "dir": dir.display().to_string(),
            "written": written,
            "kept": kept,
        }))?;
    } else {
        for path in &written {
            printer.info(format!("wrote {}", dir.join(path).display()));
        }
        for path in &kept {
            printer.info(format!(
                "kept {} (it exists; --force overwrites it)",
                dir.join(path).display()
            ));
        }
        if !written.is_empty() {
            printer.info(format!(
                "next: make the images (scripts/make-images.sh), then `cryptus --project-dir {} start`",
                dir.display()
            ));
        }
    }
    Ok(EXIT_OK)
}
