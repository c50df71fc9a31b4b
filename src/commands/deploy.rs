//! `cryptus deploy`: a new release into the idle color, then traffic moves
//! to it. Also what rollback and scale share: their settings, and how a
//! report and a plan are shown.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{HookArgs, SwitchArgs};
use crate::context::Session;
use crate::error::{EXIT_FAILED, EXIT_OK};
use crate::lock;
use crate::orchestrator::Orchestrator;
use crate::output::{Printer, seconds};
use crate::project::Project;
use crate::swarm;
use crate::switch::{self, Ask, DryRun, Plan, Report, Settings, Source};

/// The switch's settings, from its flags and `CRYPTUS_NOTIFY_URL`; a bad
/// URL is refused here, before anything is touched.
pub fn settings(args: &SwitchArgs, watch: Duration, keep_failed: bool) -> Result<Settings> {
    Ok(Settings {
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
        notify: crate::notify::from_env()?,
        canary: None,
        hooks: Default::default(),
    })
}

/// How the deploy hooks run, from their flags.
pub fn hooks(args: &HookArgs) -> switch::hooks::Options {
    switch::hooks::Options {
        timeout: args.hook_timeout,
        skip: args.skip_hooks,
    }
}

/// Where a deploy's image comes from: `--image`, `--build`, or the compose file.
pub fn source(image: Option<String>, build: Option<Option<PathBuf>>) -> Source {
    match (image, build) {
        (Some(image), _) => Source::Image(image),
        (None, Some(context)) => Source::Build(context),
        (None, None) => Source::Compose,
    }
}

pub async fn deploy(
    project: &Project,
    source: Source,
    version: Option<String>,
    settings: &Settings,
    dry_run: bool,
    printer: &Printer,
) -> Result<u8> {
    let session = Session::open(project, printer).await?;
    let stack = session.stack();
    if project.orchestrator == Orchestrator::Swarm {
        let ask = Ask::Deploy { source, version };
        if dry_run {
            return show_plan(
                &swarm::switch::dry_run(&stack, ask, settings).await?,
                printer,
            );
        }
        return show(&swarm::switch::run(&stack, ask, settings).await?, printer);
    }
    super::warn_not_applied(stack.compose, stack.engine, printer);
    if dry_run {
        let plan = switch::dry_run(
            &stack,
            DryRun::Switch(Ask::Deploy { source, version }),
            settings,
        );
        return show_plan(&plan.await?, printer);
    }
    let report = switch::deploy(&stack, source, version, settings).await?;
    show(&report, printer)
}

/// A `--dry-run`'s plan: lines on stdout, or one JSON document.
pub fn show_plan(plan: &Plan, printer: &Printer) -> Result<u8> {
    if printer.json() {
        printer.out_json(&serde_json::json!({ "ok": true, "dry_run": true, "plan": plan }))?;
    } else {
        let mut text = plan.describe().join("\n");
        text.push_str("\n(dry run: nothing was changed)\n");
        printer.out(&text)?;
    }
    Ok(EXIT_OK)
}

pub fn show(report: &Report, printer: &Printer) -> Result<u8> {
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
