//! Every wait in the tests: a probe polled at an interval under one
//! deadline, failing with what it saw last.
//!
//! A probe answers `Ok(value)` once what the test waits for holds, or
//! `Err(what it saw instead)`; a probe may also panic, for what must hold at
//! every look (cryptus ended before printing the line waited for). The probe
//! runs at least once, and a last time at the deadline. The interval is the
//! caller's: a short-lived state (a scratch container that runs for a
//! moment) needs a few milliseconds, a Prometheus scrape half a second.

use std::future::Future;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A wait that ran out: how long it waited and the probe's last answer.
#[derive(Debug)]
pub struct TimedOut {
    pub within: Duration,
    pub last: String,
}

/// Polls `probe` every `every` until it answers `Ok`, for at most `within`;
/// for a caller that does more than panic when the time runs out (kills
/// the process it waited for, fetches a log for the message).
pub fn poll<T>(
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, TimedOut> {
    let deadline = Instant::now() + within;
    loop {
        let last = match probe() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut { within, last });
        }
        // Never sleep past the deadline: the last look is at the deadline.
        std::thread::sleep(every.min(deadline - now));
    }
}

/// [`poll`], panicking with `what` and the last state seen when the time
/// runs out.
#[track_caller]
pub fn eventually<T>(
    what: &str,
    within: Duration,
    every: Duration,
    probe: impl FnMut() -> Result<T, String>,
) -> T {
    match poll(within, every, probe) {
        Ok(value) => value,
        Err(TimedOut { within, last }) => {
            panic!("{what} not true after {within:?}; last seen: {last}")
        }
    }
}

/// [`eventually`] for async tests: the probe is a future and the pauses
/// yield to the runtime, so load running on it keeps flowing.
pub async fn eventually_async<T, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            panic!("{what} not true after {within:?}; last seen: {last}");
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}

/// A probe: the child's exit status once it has ended.
pub fn exited(child: &mut Child) -> Result<ExitStatus, String> {
    match child.try_wait() {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err(format!("pid {} still running", child.id())),
        Err(err) => panic!("waiting for pid {}: {err}", child.id()),
    }
}

/// Waits for `child` to end, for at most `within`; past that kills it and
/// panics naming `what`.
#[track_caller]
pub fn exit_within(what: &str, child: &mut Child, within: Duration) -> ExitStatus {
    match poll(within, Duration::from_millis(20), || exited(child)) {
        Ok(status) => status,
        Err(TimedOut { within, last }) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} not true after {within:?}; last seen: {last}")
        }
    }
}

/// [`Child::wait_with_output`] for at most `within`; past that kills the
/// child and panics naming `what`. Its pipes are read meanwhile, as
/// `wait_with_output` does, so a child that writes much never blocks.
#[track_caller]
pub fn output_within(what: &str, child: Child, within: Duration) -> Output {
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(within) {
        Ok(output) => output.unwrap_or_else(|err| panic!("waiting for pid {pid}: {err}")),
        Err(_) => {
            // Not reaped until that wait returns, the pid is still the
            // child's.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} not true after {within:?}; last seen: pid {pid} still running")
        }
    }
}

/// [`Command::output`] for at most `within` (stdin closed, stdout and
/// stderr collected, as `output` does); past that kills the child and
/// panics naming `what`.
#[track_caller]
pub fn run_within(what: &str, mut command: Command, within: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("starting {:?}: {err}", command.get_program()));
    output_within(what, child, within)
}
