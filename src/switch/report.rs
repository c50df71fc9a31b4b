//! What a switch reports: each step as it finishes (on the terminal), and
//! the whole of it at the end (for the terminal, `--json` and the history).

use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;

use crate::history::{Outcome, Side};
use crate::output::Printer;

/// What a deploy or rollback did, for the terminal and for `--json`. A
/// failure after the lock was taken is a report too, with `ok: false`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub operation: String,
    pub outcome: Outcome,
    pub from: Side,
    pub to: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the operator can do about the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Each step and its seconds, in order.
    pub steps: Vec<StepTime>,
    pub total: f64,
    /// Seconds from the first new container's start call until the last new
    /// container could answer healthy, by the app's own uptime: the app's
    /// readiness, without the polling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<f64>,
    /// When nginx began to serve the new color.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<chrono::DateTime<Utc>>,
    /// Notes an operator should see, e.g. sessions degraded.
    pub warnings: Vec<String>,
    /// Connections through nginx still open to the old color when it
    /// stopped after `--drain`, and so closed (WebSockets, event streams,
    /// requests slower than the drain): established TCP connections from
    /// nginx to the old containers' app port. Absent when the old color
    /// did not stop (`--keep-standby`, a failure) or could not be counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_lived_closed: Option<usize>,
    /// The deploy hooks that ran, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::history::HookRun>,
    /// The reason itself says where traffic is: putting it back failed.
    #[serde(skip)]
    pub traffic_unsettled: bool,
    /// A canary's steps, how far it came, and what its answers were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<super::canary::Progress>,
    /// The canary's share when the step that failed began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<u8>,
}

impl Report {
    /// The report of a switch between `sides` (from, to) that ended
    /// `outcome`, with the steps done so far and no reason yet.
    pub fn new(
        operation: &str,
        outcome: Outcome,
        (from, to): (Side, Side),
        steps: &Steps<'_>,
        began: tokio::time::Instant,
    ) -> Report {
        Report {
            ok: outcome == Outcome::Ok,
            operation: operation.to_owned(),
            outcome,
            from,
            to,
            reason: None,
            hint: None,
            steps: steps.done.clone(),
            total: round(began.elapsed()),
            readiness: None,
            switched_at: None,
            warnings: Vec::new(),
            long_lived_closed: None,
            hooks: Vec::new(),
            traffic_unsettled: false,
            canary: None,
            failed_at: None,
        }
    }

    /// Seconds per step, and `total`: what the history keeps.
    pub fn durations(&self) -> std::collections::BTreeMap<String, f64> {
        let mut durations: std::collections::BTreeMap<String, f64> = self
            .steps
            .iter()
            .map(|s| (s.step.clone(), s.seconds))
            .collect();
        durations.insert("total".to_owned(), self.total);
        durations
    }

    /// The reason the history records: a canary's failed step says where
    /// it stopped.
    pub fn recorded_reason(&self) -> Option<String> {
        match (self.failed_at, &self.reason) {
            (Some(percent), Some(reason)) => Some(format!("at {percent}%: {reason}")),
            _ => self.reason.clone(),
        }
    }

    /// The one-line error of a failed report.
    pub fn error(&self) -> Option<String> {
        let reason = self.reason.as_deref().unwrap_or("unknown");
        match self.outcome {
            Outcome::Ok => None,
            Outcome::RolledBack => Some(match self.failed_at {
                Some(percent) => format!("rolled back at {percent}%: {reason}"),
                None => format!("rolled back: {reason}"),
            }),
            Outcome::Failed if self.traffic_unsettled => {
                Some(format!("{} failed: {reason}", self.operation))
            }
            Outcome::Failed => Some(format!(
                "{} failed; traffic stays on {} {}: {reason}",
                self.operation, self.from.color, self.from.version
            )),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StepTime {
    pub step: String,
    pub seconds: f64,
}

/// Step timings, printed as they finish.
pub struct Steps<'p> {
    printer: &'p Printer,
    pub done: Vec<StepTime>,
}

impl<'p> Steps<'p> {
    pub fn new(printer: &'p Printer) -> Steps<'p> {
        Steps {
            printer,
            done: Vec::new(),
        }
    }

    /// Runs a step that only waits: Ctrl-C (or SIGTERM) ends it as a
    /// failure, so the caller undoes what came before.
    pub async fn wait<T>(
        &mut self,
        name: &str,
        message: impl Into<String>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.run(name, message, crate::interrupt::or_interrupted(work))
            .await
    }

    pub async fn run<T>(
        &mut self,
        name: &str,
        message: impl Into<String>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let step = self.printer.step(message);
        self.finish(name, step, work).await
    }

    /// Runs a step whose work prints lines of its own, with no spinner.
    pub async fn stream<T>(
        &mut self,
        name: &str,
        message: impl Into<String>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let step = self.printer.step_streaming(message);
        self.finish(name, step, work).await
    }

    async fn finish<T>(
        &mut self,
        name: &str,
        step: crate::output::Step,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match work.await {
            Ok(value) => {
                let took = step.done();
                self.done.push(StepTime {
                    step: name.to_owned(),
                    seconds: round(took),
                });
                Ok(value)
            }
            Err(err) => {
                let took = step.fail();
                self.done.push(StepTime {
                    step: name.to_owned(),
                    seconds: round(took),
                });
                Err(err)
            }
        }
    }
}

pub fn round(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Color;

    fn report(outcome: Outcome, unsettled: bool) -> Report {
        let side = |color, version: &str| Side {
            color,
            image: format!("app:{version}"),
            version: version.into(),
            image_id: None,
            replicas: 1,
        };
        Report {
            ok: outcome == Outcome::Ok,
            operation: "deploy".into(),
            outcome,
            from: side(Color::Blue, "1"),
            to: side(Color::Green, "2"),
            reason: Some("boom".into()),
            hint: None,
            steps: Vec::new(),
            total: 1.0,
            readiness: None,
            switched_at: None,
            warnings: Vec::new(),
            long_lived_closed: None,
            hooks: Vec::new(),
            traffic_unsettled: unsettled,
            canary: None,
            failed_at: None,
        }
    }

    #[test]
    fn a_failure_says_where_traffic_is() {
        assert_eq!(report(Outcome::Ok, false).error(), None);
        let stays = report(Outcome::Failed, false).error().unwrap();
        assert!(stays.contains("traffic stays on blue 1"), "{stays}");
        // When putting traffic back failed, the reason says where it is:
        // the line must not claim it stayed.
        let unsettled = report(Outcome::Failed, true).error().unwrap();
        assert!(!unsettled.contains("stays"), "{unsettled}");
        assert!(
            report(Outcome::RolledBack, false)
                .error()
                .unwrap()
                .starts_with("rolled back")
        );
    }
}
