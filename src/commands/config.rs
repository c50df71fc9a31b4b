//! `cryptus config`: the resolved compose model, as YAML or one JSON
//! document ([`crate::compose::render`]); changes nothing, needs no engine.

use anyhow::{Context, Result};

use crate::compose::render;
use crate::error::EXIT_OK;
use crate::output::Printer;
use crate::project::Project;

pub fn run(project: &Project, printer: &Printer) -> Result<u8> {
    let compose = project.load()?;
    let document = render::document(&project.name, &compose);
    if printer.json() {
        printer.out_json(&document)?;
    } else {
        let text = serde_yaml::to_string(&document).context("writing the model as YAML")?;
        printer.out(&text)?;
    }
    Ok(EXIT_OK)
}
