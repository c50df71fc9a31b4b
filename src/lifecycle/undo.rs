//! The undo of a failed or interrupted start: what it created is removed
//! and what it started is stopped, newest first, under a deadline.

use std::time::Duration;

use crate::context::Stack;

/// How long undoing a failed start may take (stopping an app container
/// waits its stop grace period).
const UNDO_DEADLINE: Duration = Duration::from_secs(90);

/// What a run changed, in order, to undo when it fails or is interrupted.
#[derive(Debug, Default)]
pub(super) struct Saga {
    /// Containers it created where none was.
    pub(super) created: Vec<String>,
    /// Containers that existed stopped and it started.
    pub(super) started: Vec<String>,
    pub(super) networks: Vec<String>,
    pub(super) volumes: Vec<String>,
}

impl Saga {
    fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.started.is_empty()
            && self.networks.is_empty()
            && self.volumes.is_empty()
    }
}

impl Stack<'_> {
    /// Undoes a failed or interrupted run, newest first, under a deadline:
    /// what it created is removed, what it started is stopped.
    pub(super) async fn undo(&self, saga: &Saga) {
        if saga.is_empty() {
            return;
        }
        let work = async {
            for name in saga.started.iter().rev() {
                if let Err(err) = self.engine.stop(name, None).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
            for name in saga.created.iter().rev() {
                if let Err(err) = self.engine.remove(name, true).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
            for volume in saga.volumes.iter().rev() {
                if let Err(err) = self.engine.remove_volume(volume).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
            for network in saga.networks.iter().rev() {
                if let Err(err) = self.engine.remove_network(network).await {
                    self.printer.warn(format!("undoing: {err:#}"));
                }
            }
        };
        if tokio::time::timeout(UNDO_DEADLINE, work).await.is_err() {
            self.printer.warn(format!(
                "undoing did not finish within {}s: `cryptus status` shows what is left",
                UNDO_DEADLINE.as_secs()
            ));
            return;
        }
        let undone: Vec<String> = [
            saga.created.clone(),
            saga.volumes.clone(),
            saga.networks.clone(),
        ]
        .concat();
        if !undone.is_empty() {
            self.printer
                .info(format!("undone: removed {}", undone.join(", ")));
        }
        if !saga.started.is_empty() {
            self.printer
                .info(format!("undone: stopped {} again", saga.started.join(", ")));
        }
    }
}
