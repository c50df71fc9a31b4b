//! Every wait in cryptus: a probe polled at an interval under one deadline,
//! failing with the last state it saw.
//!
//! A probe answers [`Seen::Ready`] with its value, or [`Seen::Not`] with a
//! description of what it saw instead (`"503 {\"status\":\"starting\"}"`);
//! an `Err` from the probe ends the wait at once (the container is gone,
//! the input is wrong). When the deadline passes the caller's `expired`
//! turns the last description into the error, so every wait says what it
//! waited for and what it saw last. What to wait for, by name
//! (`WaitFor::{Running, Healthy, ...}`), is built on this in `ready`.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

/// When a wait gives up, and how often it looks.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub deadline: Instant,
    pub interval: Duration,
}

impl Limits {
    /// From now, for `within`, looking every `interval`.
    pub fn within(within: Duration, interval: Duration) -> Limits {
        Limits {
            deadline: Instant::now() + within,
            interval,
        }
    }

    pub fn until(deadline: Instant, interval: Duration) -> Limits {
        Limits { deadline, interval }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// What a probe saw.
#[derive(Debug)]
pub enum Seen<T> {
    Ready(T),
    /// Not yet: what it saw instead, for the error if the deadline passes.
    Not(String),
}

/// Polls `probe` until it is ready, it fails, or the deadline passes; then
/// `expired` makes the error from the last state seen. The probe runs at
/// least once, even when the deadline has already passed.
pub async fn until<T, F, Fut>(
    limits: Limits,
    mut probe: F,
    expired: impl FnOnce(String) -> anyhow::Error,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Seen<T>>>,
{
    loop {
        let last = match probe().await? {
            Seen::Ready(value) => return Ok(value),
            Seen::Not(last) => last,
        };
        let now = Instant::now();
        if now >= limits.deadline {
            return Err(expired(last));
        }
        // Never sleep past the deadline: the last look is at the deadline.
        tokio::time::sleep(limits.interval.min(limits.deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;
    use std::cell::Cell;

    #[tokio::test]
    async fn ready_returns_the_probes_value() {
        let calls = Cell::new(0);
        let value = until(
            Limits::within(Duration::from_secs(5), Duration::from_millis(1)),
            || async {
                calls.set(calls.get() + 1);
                Ok(if calls.get() < 3 {
                    Seen::Not(format!("try {}", calls.get()))
                } else {
                    Seen::Ready(calls.get())
                })
            },
            |last| anyhow!("never: {last}"),
        )
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn the_deadline_names_the_last_state_seen() {
        let calls = Cell::new(0);
        let err = until::<(), _, _>(
            Limits::within(Duration::from_millis(30), Duration::from_millis(5)),
            || async {
                calls.set(calls.get() + 1);
                Ok(Seen::Not(format!("answer {}", calls.get())))
            },
            |last| anyhow!("not ready: last {last}"),
        )
        .await
        .unwrap_err();
        let last = calls.get();
        assert!(last >= 2, "polled {last} times");
        assert_eq!(err.to_string(), format!("not ready: last answer {last}"));
    }

    #[tokio::test]
    async fn a_probe_error_ends_the_wait_at_once() {
        let started = Instant::now();
        let err = until::<(), _, _>(
            Limits::within(Duration::from_secs(30), Duration::from_millis(5)),
            || async { Err(anyhow!("gone")) },
            |last| anyhow!("expired: {last}"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "gone");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_expired_deadline_still_looks_once() {
        let limits = Limits::until(Instant::now(), Duration::from_millis(5));
        assert!(limits.expired());
        let value = until(limits, || async { Ok(Seen::Ready(7)) }, |l| anyhow!(l))
            .await
            .unwrap();
        assert_eq!(value, 7);
    }
}
