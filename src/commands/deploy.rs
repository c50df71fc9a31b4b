//! `cryptus deploy`, `cryptus rollback` and `cryptus scale`: the commands
//! that move traffic.

use std::time::Duration;

use anyhow::Result;

use crate::cli::SwitchArgs;
use crate::context::Stack;
use crate::deploy::{self, Report, Settings, Source};
use crate::engine::Engine;
use crate::error::{EXIT_FAILED, EXIT_OK};
use crate::lock;
use crate::output::{Printer, seconds};
use crate::project::Project;

pub fn settings(args: &SwitchArgs, watch: Duration, keep_failed: bool) -> Settings {
    Settings {
        timeout: args.timeout,
        drain: args.drain,
        watch,
        poll: args.poll,
        verify: args.verify,
        keep_standby: args.keep_standby,
        keep_failed,
        lock: lock::Options {
            wait: args.lock_wait,
            force_unlock: args.force_unlock,
        },
        gate: args
            .gate
            .clone()
            .unwrap_or_else(|| crate::metrics::DEFAULT_GATE.to_owned()),
    }
}

pub async fn deploy(
    project: &Project,
    source: Source,
    version: Option<String>,
    settings: &Settings,
    printer: &Printer,
) -> Result<u8> {
    let compose = project.load()?;
    let engine = Engine::connect().await?;
    let stack = Stack {
        engine: &engine,
        project,
        compose: &compose,
        printer,
    };
    let report = deploy::deploy(&stack, source, version, settings).await?;
    show(&report, printer)
}

pub async fn rollback(project: &Project, settings: &Settings, printer: &Printer) -> Result<u8> {
    let compose = project.load()?;
    let engine = Engine::connect().await?;
    let stack = Stack {
        engine: &engine,
        project,
        compose: &compose,
        printer,
    };
    let report = deploy::rollback(&stack, settings).await?;
    show(&report, printer)
}

pub async fn scale(
    project: &Project,
    service: &str,
    replicas: i64,
    settings: &Settings,
    printer: &Printer,
) -> Result<u8> {
    // 0 would take the color down: the range is 1 to MAX_REPLICAS, and the
    // upper bound is checked where the service is known.
    let replicas = u32::try_from(replicas)
        .ok()
        .filter(|r| *r >= 1)
        .ok_or_else(|| {
            let why = if replicas == 0 {
                format!("0 replicas of {service} would stop all traffic to it")
            } else {
                format!("{replicas} is not a replica count")
            };
            crate::error::usage(
                why,
                format!(
                    "choose 1 to {}; `cryptus stop` stops the stack",
                    crate::replicas::MAX_REPLICAS
                ),
            )
        })?;
    let compose = project.load()?;
    let engine = Engine::connect().await?;
    let stack = Stack {
        engine: &engine,
        project,
        compose: &compose,
        printer,
    };
    let report = crate::scale::scale(&stack, service, replicas, settings).await?;
    if printer.json() {
        printer.out_json(&report)?;
    } else if report.active {
        printer.info(format!(
            "{} runs {} replica{} (was {})",
            report.service,
            report.to,
            if report.to == 1 { "" } else { "s" },
            report.from
        ));
    }
    Ok(EXIT_OK)
}

fn show(report: &Report, printer: &Printer) -> Result<u8> {
    let error = report.error();
    if printer.json() {
        // A failed report carries the contract's fields too: `error` and
        // `exit_code` beside `ok` and `hint`.
        let mut document = serde_json::to_value(report)?;
        if let (Some(error), Some(fields)) = (&error, document.as_object_mut()) {
            fields.insert("error".into(), error.clone().into());
            fields.insert("exit_code".into(), EXIT_FAILED.into());
            fields.entry("hint").or_insert(serde_json::Value::Null);
        }
        printer.out_json(&document)?;
    }
    match error {
        None => {
            if !printer.json() {
                printer.info(format!(
                    "{}: {} {} -> {} {} in {}",
                    if report.operation == "rollback" {
                        "rolled back"
                    } else {
                        "deployed"
                    },
                    report.from.color,
                    report.from.version,
                    report.to.color,
                    report.to.version,
                    seconds(Duration::try_from_secs_f64(report.total).unwrap_or_default()),
                ));
            }
            Ok(EXIT_OK)
        }
        Some(error) => {
            printer.error(&error, report.hint.as_deref());
            Ok(EXIT_FAILED)
        }
    }
}
