//! Deploy hooks as they run (what a project declares is `compose::hooks`'s):
//! each one a one-off container of the new release, made from the target
//! color's service ([`crate::stack::plan_hook`]), its output streamed with
//! the hook's name in front, under `--hook-timeout`, and removed with its
//! anonymous volumes whatever happened (on a Swarm, a job of the swarm:
//! `swarm::hooks`). They run under the deploy lock, so two
//! deploys never run theirs at once.

use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::compose::Hook;
use crate::context::Stack;
use crate::engine::{Container, ContainerSpec, LogChunk};
use crate::error::failed_with_hint;
use crate::history::{HookRun, Side};
use crate::output::{Printer, seconds};
use crate::ready::{self, WaitFor};
use crate::stack::{Color, HOOK_LABEL, Release, plan_hook};
use crate::wait::Limits;

use super::plan::PlannedHook;
use super::report::{Steps, round};

/// How hooks run: `--hook-timeout` and `--skip-hooks`.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The deadline of each hook, from its start.
    pub timeout: Duration,
    pub skip: bool,
}

/// `--hook-timeout`'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: DEFAULT_TIMEOUT,
            skip: false,
        }
    }
}

/// Lines of a failed hook's output kept to show and record.
const LAST_LINES: usize = 20;
/// A kept line longer than this is cut (characters).
const LINE_CHARS: usize = 500;

/// Between which sides a hook runs: what its variables say.
pub struct Between<'a> {
    pub operation: &'a str,
    pub from: &'a Side,
    pub to: Color,
    pub release: &'a Release,
}

impl Between<'_> {
    /// The variables every hook gets.
    fn environment(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("CRYPTUS_OPERATION".to_owned(), self.operation.to_owned()),
            (
                "CRYPTUS_FROM_COLOR".to_owned(),
                self.from.color.as_str().to_owned(),
            ),
            ("CRYPTUS_FROM_VERSION".to_owned(), self.from.version.clone()),
            ("CRYPTUS_TO_COLOR".to_owned(), self.to.as_str().to_owned()),
            (
                "CRYPTUS_TO_VERSION".to_owned(),
                self.release.version.clone(),
            ),
        ])
    }
}

/// Says which declared hooks of `operation` `--skip-hooks` leaves out.
pub fn say_skipped(stack: &Stack<'_>, operation: &str, options: Options) {
    let Some((before, after)) = Hook::of(operation) else {
        return;
    };
    let skipped: Vec<&str> = [before, after]
        .into_iter()
        .filter(|hook| stack.compose.hooks.contains_key(hook))
        .map(Hook::as_str)
        .collect();
    if options.skip && !skipped.is_empty() {
        stack.printer.warn(format!(
            "skipping the {} hook{} (--skip-hooks)",
            skipped.join(" and "),
            if skipped.len() == 1 { "" } else { "s" }
        ));
    }
}

/// The hooks of `operation` that run, as the plan shows them (none with
/// `--skip-hooks`).
pub fn planned(stack: &Stack<'_>, operation: &str, options: Options) -> Vec<PlannedHook> {
    let Some((before, after)) = Hook::of(operation).filter(|_| !options.skip) else {
        return Vec::new();
    };
    [before, after]
        .into_iter()
        .filter_map(|hook| {
            Some(PlannedHook {
                hook: hook.as_str().to_owned(),
                post: hook.is_post(),
                command: stack.compose.hooks.get(&hook)?.clone(),
            })
        })
        .collect()
}

/// Removes the hook containers a killed run left (the engine's list, as the
/// switch read it), saying so.
pub async fn sweep(stack: &Stack<'_>, containers: &[Container]) {
    for left in containers.iter().filter(|c| c.label(HOOK_LABEL).is_some()) {
        let removed = stack.engine.remove(&left.name, true).await;
        say_swept(stack.printer, &left.name, "container", removed);
    }
}

/// Says how the removal of `name`, a hook's `what` (container, job) that
/// an interrupted run left, went.
pub(crate) fn say_swept(printer: &Printer, name: &str, what: &str, removed: Result<()>) {
    match removed {
        Ok(()) => printer.warn(format!(
            "removed {name}, a hook {what} an interrupted run left"
        )),
        Err(err) => printer.warn(format!("removing {name}: {err:#}")),
    }
}

/// Runs `hook` when the project declares it (and `--skip-hooks` was not
/// given) as the step of that name, and records how it ran in `ran`. A
/// hook that fails, or outlives `--hook-timeout`, is an error saying so;
/// its last lines are shown first.
pub async fn step(
    stack: &Stack<'_>,
    steps: &mut Steps<'_>,
    (hook, between): (Hook, &Between<'_>),
    (options, runner): (Options, &impl RunHook),
    ran: &mut Vec<HookRun>,
) -> Result<()> {
    let Some(command) = stack.compose.hooks.get(&hook) else {
        return Ok(());
    };
    if options.skip {
        return Ok(());
    }
    let service = stack
        .compose
        .service(between.to.service())
        .with_context(|| format!("the compose file has no service {}", between.to.service()))?;
    let release = between.release;
    let began = Instant::now();
    let mut last = VecDeque::new();
    let message = format!("running the {hook} hook: {}", command.join(" "));
    let mut exit_code = None;
    let running = async {
        let one_off = OneOff {
            service,
            release,
            run_as: (hook, command.as_slice()),
            env: between.environment(),
            timeout: options.timeout,
        };
        exit_code = runner.run_hook(stack, one_off, &mut last).await?;
        judge(hook, command, exit_code, options.timeout)
    };
    let result = steps.stream(hook.as_str(), message, running).await;
    let failed = result.is_err();
    if failed && !last.is_empty() {
        show_last(stack.printer, hook, &last);
    }
    ran.push(HookRun {
        hook: hook.as_str().to_owned(),
        ok: !failed,
        exit_code,
        seconds: round(began.elapsed()),
        last_lines: if failed { last.into() } else { Vec::new() },
    });
    result
}

/// What an exit code (none: stopped at its deadline) makes of a hook.
fn judge(hook: Hook, command: &[String], code: Option<i64>, timeout: Duration) -> Result<()> {
    let hint = if hook.is_post() {
        "its last lines are above; traffic stays on the new color"
    } else {
        "its last lines are above, and nothing was changed; fix the hook, or run with --skip-hooks"
    };
    let command = command.join(" ");
    match code {
        Some(0) => Ok(()),
        Some(code) => Err(failed_with_hint(
            format!("the {hook} hook ({command}) exited with code {code}"),
            hint,
        )),
        None => Err(failed_with_hint(
            format!(
                "the {hook} hook ({command}) did not finish within {}: it was stopped",
                seconds(timeout)
            ),
            "raise --hook-timeout (at most 24h) if it needs longer",
        )),
    }
}

/// One hook's one-off run, from the target color's service: what a
/// [`RunHook`] makes and runs.
pub struct OneOff<'a> {
    pub service: &'a crate::compose::Service,
    pub release: &'a Release,
    pub run_as: (Hook, &'a [String]),
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// How an orchestrator runs a hook to its end, its output followed: its
/// exit code, none when it was still running at the deadline. One engine
/// runs a container ([`Containers`]); a Swarm a job (`swarm::hooks::Jobs`).
#[allow(async_fn_in_trait)]
pub trait RunHook {
    async fn run_hook(
        &self,
        stack: &Stack<'_>,
        one_off: OneOff<'_>,
        last: &mut VecDeque<String>,
    ) -> Result<Option<i64>>;
}

/// Hooks as one-off containers of one engine.
pub struct Containers;

impl RunHook for Containers {
    async fn run_hook(
        &self,
        stack: &Stack<'_>,
        one_off: OneOff<'_>,
        last: &mut VecDeque<String>,
    ) -> Result<Option<i64>> {
        let OneOff {
            service,
            release,
            run_as,
            env,
            timeout,
        } = one_off;
        let project = &stack.project.name;
        let spec = plan_hook(project, stack.compose, service, release, run_as, env)?;
        run(stack, &spec, run_as.0, timeout, last).await
    }
}

/// Runs the hook's container to its end, streaming its output; its exit
/// code, none when it was still running at `timeout`. The container goes
/// afterwards, with its anonymous volumes, whatever happened.
async fn run(
    stack: &Stack<'_>,
    spec: &ContainerSpec,
    hook: Hook,
    timeout: Duration,
    last: &mut VecDeque<String>,
) -> Result<Option<i64>> {
    let engine = stack.engine;
    crate::interrupt::check()?;
    // One of this name is what a killed run left.
    engine.remove(&spec.name, true).await?;
    let ran = async {
        // Inside: a container made but not joined to every network goes too.
        crate::host_files::create_container(engine, spec, stack.printer)
            .await
            .with_context(|| format!("making the {hook} hook's container"))?;
        engine.start(&spec.name).await?;
        let deadline = Instant::now() + timeout;
        let lines = engine.log_lines(&spec.name, true, None, 0);
        let following = follow(lines, stack.printer, hook, last);
        // The log ends when the container stops; the engine says how.
        match tokio::time::timeout_at(deadline, crate::interrupt::or_interrupted(following)).await {
            Err(_elapsed) => return Ok(None),
            Ok(followed) => followed?,
        }
        let stopped = WaitFor::Completed {
            container: &spec.name,
        };
        let limits = Limits::until(deadline, ready::POLL);
        let _ = crate::interrupt::or_interrupted(stack.wait(&stopped, limits)).await;
        crate::interrupt::check()?;
        let container = engine.inspect(&spec.name).await?;
        Ok(container
            .filter(|c| !c.running && c.state == "exited")
            .and_then(|c| c.exit_code))
    }
    .await;
    // Stopped first, with its stop signal and grace (a migration past its
    // deadline or interrupted gets to end cleanly), then removed.
    let gone = async {
        engine.stop(&spec.name, Some(HOOK_STOP_GRACE)).await?;
        engine.remove(&spec.name, true).await
    };
    if let Err(err) = gone.await {
        stack
            .printer
            .warn(format!("removing the {hook} hook's container: {err:#}"));
    }
    ran
}

/// How long a hook stopped at its deadline (or by Ctrl-C) has to end
/// after its stop signal, before the engine kills it.
const HOOK_STOP_GRACE: Duration = Duration::from_secs(10);

/// Prints the container's output as it comes, each line after `[hook]`,
/// keeping the last ones; until the log ends (or fails: the wait that
/// follows tells how the container ended).
pub(crate) async fn follow(
    lines: impl futures_util::Stream<Item = Result<LogChunk>>,
    printer: &Printer,
    hook: Hook,
    last: &mut VecDeque<String>,
) -> Result<()> {
    let mut lines = pin!(lines);
    let mut partial = String::new();
    while let Some(chunk) = lines.next().await {
        match chunk {
            Ok(chunk) => partial.push_str(&chunk.text),
            Err(err) => {
                tracing::debug!("following the {hook} hook's output: {err:#}");
                break;
            }
        }
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            show(printer, hook, &line, last);
        }
    }
    if !partial.is_empty() {
        show(printer, hook, &partial, last);
    }
    Ok(())
}

/// One line of output, without the engine's timestamp.
fn show(printer: &Printer, hook: Hook, line: &str, last: &mut VecDeque<String>) {
    let line = line.trim_end_matches(['\n', '\r']);
    let line = match line.split_once(' ') {
        Some((time, rest)) if chrono::DateTime::parse_from_rfc3339(time).is_ok() => rest,
        _ => line,
    };
    printer.info(format!("[{hook}] {line}"));
    if last.len() == LAST_LINES {
        last.pop_front();
    }
    last.push_back(line.chars().take(LINE_CHARS).collect());
}

fn show_last(printer: &Printer, hook: Hook, last: &VecDeque<String>) {
    printer.info(format!(
        "--- last {} lines of the {hook} hook ---",
        last.len()
    ));
    for line in last {
        printer.info(format!("  {line}"));
    }
    printer.info("---");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_is_judged_by_its_exit() {
        let command = ["./bin/migrate".to_owned()];
        let timeout = Duration::from_secs(90);
        assert!(judge(Hook::PreDeploy, &command, Some(0), timeout).is_ok());
        let failed = judge(Hook::PreDeploy, &command, Some(3), timeout).unwrap_err();
        assert_eq!(
            failed.to_string(),
            "the pre-deploy hook (./bin/migrate) exited with code 3"
        );
        assert_eq!(crate::error::classify(&failed).0, crate::error::EXIT_FAILED);
        let hint = crate::error::classify(&failed).1.unwrap_or_default();
        assert!(hint.contains("nothing was changed"), "{hint}");
        let post = judge(Hook::PostDeploy, &command, Some(1), timeout).unwrap_err();
        let hint = crate::error::classify(&post).1.unwrap_or_default();
        assert!(hint.contains("traffic stays"), "{hint}");
        let late = judge(Hook::PreRollback, &command, None, timeout).unwrap_err();
        assert!(late.to_string().contains("did not finish within"), "{late}");
    }

    #[test]
    fn output_lines_lose_the_engine_timestamp_and_the_last_are_kept() {
        let printer = Printer::new(crate::output::Verbosity::Quiet, false);
        let mut last = VecDeque::new();
        show(
            &printer,
            Hook::PreDeploy,
            "2026-01-02T15:04:05.123456789Z migrating 1 of 2\n",
            &mut last,
        );
        show(&printer, Hook::PreDeploy, "no time here\r\n", &mut last);
        assert_eq!(last, ["migrating 1 of 2", "no time here"]);
        for n in 0..LAST_LINES {
            show(
                &printer,
                Hook::PreDeploy,
                &"x".repeat(n + LINE_CHARS),
                &mut last,
            );
        }
        assert_eq!(last.len(), LAST_LINES);
        assert!(last.iter().all(|line| line.chars().count() == LINE_CHARS));
    }

    #[test]
    fn hooks_know_both_sides() {
        let from = Side {
            color: Color::Blue,
            image: "app:1".into(),
            version: "1".into(),
            image_id: None,
            replicas: 1,
        };
        let release = Release {
            image: "app:2".into(),
            version: "2".into(),
        };
        let between = Between {
            operation: "deploy",
            from: &from,
            to: Color::Green,
            release: &release,
        };
        let env = between.environment();
        assert_eq!(env["CRYPTUS_OPERATION"], "deploy");
        assert_eq!(env["CRYPTUS_FROM_COLOR"], "blue");
        assert_eq!(env["CRYPTUS_FROM_VERSION"], "1");
        assert_eq!(env["CRYPTUS_TO_COLOR"], "green");
        assert_eq!(env["CRYPTUS_TO_VERSION"], "2");
    }
}
