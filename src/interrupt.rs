//! SIGINT and SIGTERM for commands that change the stack.
//!
//! A command that changes the stack calls [`catch`] before its first change.
//! From then on the two signals no longer kill the process: they are
//! remembered, the next wait that goes through [`or_interrupted`] ends as an
//! [`Interrupted`] error, and the command undoes or finishes what it started
//! (removing scratch containers and temporary files, putting data back,
//! releasing the lock) before it exits. A second signal changes nothing: the
//! cleanup itself runs under deadlines.

use std::future::Future;
use std::sync::OnceLock;

use anyhow::Result;

use crate::error::failed;

static INTERRUPTS: OnceLock<tokio::sync::watch::Receiver<bool>> = OnceLock::new();

/// The message of the error a caught signal turns into.
pub const MESSAGE: &str = "interrupted (Ctrl-C or SIGTERM)";

/// From here on SIGINT and SIGTERM are caught instead of killing the process.
/// Idempotent; must run inside the tokio runtime.
pub fn catch() {
    INTERRUPTS.get_or_init(|| {
        use tokio::signal::unix::{SignalKind, signal};
        let (sender, receiver) = tokio::sync::watch::channel(false);
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                let _ = sender.send(true);
            });
        }
        receiver
    });
}

/// Whether a signal has come since [`catch`].
pub fn seen() -> bool {
    INTERRUPTS.get().is_some_and(|receiver| *receiver.borrow())
}

/// Resolves once SIGINT or SIGTERM has come (at once if it already has);
/// never, if [`catch`] was not called.
pub async fn signalled() {
    match INTERRUPTS.get() {
        Some(receiver) => {
            let mut receiver = receiver.clone();
            if receiver.wait_for(|seen| *seen).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Runs `work` unless a signal comes first; then it is dropped and the
/// result is an interrupted error (exit 1), which callers unwind like any
/// other failure.
pub async fn or_interrupted<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    if seen() {
        return Err(interrupted());
    }
    tokio::select! {
        result = work => result,
        () = signalled() => Err(interrupted()),
    }
}

/// The error a caught signal becomes: the operation failed cleanly, exit 1.
pub fn interrupted() -> anyhow::Error {
    failed(MESSAGE)
}

/// Fails with [`interrupted`] if a signal has come: a check between steps
/// that do not wait.
pub fn check() -> Result<()> {
    if seen() {
        return Err(interrupted());
    }
    Ok(())
}
