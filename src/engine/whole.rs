//! Requests that change the engine run whole, even when their caller stops
//! waiting.
//!
//! A signal ([`crate::interrupt::or_interrupted`]), a deadline or a sibling's
//! failure drops the future that awaits a request. Once the request is
//! sent, the engine finishes it anyway, only later: a container created
//! after the cleanup removed its name is left behind for good, and a file
//! fed through an exec's stdin that ends early is renamed into place half
//! written. So each such request runs in a task of its own ([`whole`]), and
//! every question about what exists, and every removal, first waits for the
//! requests whose callers gave up ([`settled`]): a cleanup sees what the
//! engine will hold, not what it held a moment before.

use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::sync::watch;

/// How long [`settled`] waits for abandoned requests: bollard's own
/// request timeout is longer, but a cleanup must end.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// How many requests run on whose callers stopped waiting.
static ABANDONED: LazyLock<watch::Sender<usize>> = LazyLock::new(|| watch::channel(0).0);

/// Where one request stands, as its caller and its task see it.
#[derive(Clone, Copy, PartialEq)]
enum Stand {
    Running,
    /// Its caller was dropped first: it is counted in [`ABANDONED`].
    Abandoned,
    Done,
}

/// Runs `request` to its end in a task of its own and returns its output
/// (an error only if the task itself failed). Dropping the returned future
/// leaves the request running, counted until it ends, so that [`settled`]
/// can wait for it.
pub async fn whole<T: Send + 'static>(
    request: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let stand = Arc::new(Mutex::new(Stand::Running));
    let ending = Ending {
        stand: stand.clone(),
    };
    // The task marks the request done before its result is handed over:
    // the caller dropped any time before that counts it as abandoned.
    let _caller = Caller { stand };
    let task = tokio::spawn(async move {
        let _ending = ending;
        request.await
    });
    task.await
        .map_err(|err| anyhow!("an engine request's task ended early: {err}"))
}

/// The awaiting side of [`whole`]: dropped before its task ended, it counts
/// the request as abandoned.
struct Caller {
    stand: Arc<Mutex<Stand>>,
}

impl Drop for Caller {
    fn drop(&mut self) {
        let mut now = self.stand.lock().unwrap_or_else(PoisonError::into_inner);
        if *now == Stand::Running {
            *now = Stand::Abandoned;
            ABANDONED.send_modify(|n| *n += 1);
        }
    }
}

/// The task's side of [`whole`]: dropped when the request ends, however
/// (a panic too), it marks it done and no longer counts it.
struct Ending {
    stand: Arc<Mutex<Stand>>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let mut now = self.stand.lock().unwrap_or_else(PoisonError::into_inner);
        if *now == Stand::Abandoned {
            ABANDONED.send_modify(|n| *n = n.saturating_sub(1));
        }
        *now = Stand::Done;
    }
}

/// Waits until no request whose caller gave up is still running (at most
/// [`SETTLE_WITHIN`]); at once when there is none.
pub async fn settled() {
    if *ABANDONED.borrow() == 0 {
        return;
    }
    let mut receiver = ABANDONED.subscribe();
    let _ = tokio::time::timeout(SETTLE_WITHIN, receiver.wait_for(|n| *n == 0)).await;
}

/// How many requests run abandoned now.
pub fn abandoned() -> usize {
    *ABANDONED.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn panics() -> u8 {
        panic!("a request's task panics")
    }

    /// One test: the count is process-wide, and tests run side by side.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_request_runs_to_its_end_and_settled_waits_for_it() {
        // Awaited to the end: never counted.
        let answer = whole(async { 7 }).await.expect("an answer");
        assert_eq!(answer, 7);
        assert_eq!(abandoned(), 0);
        let panicked = whole(async { panics() }).await;
        assert!(panicked.is_err());
        assert_eq!(abandoned(), 0);

        // Dropped while it runs: it goes on, and settled waits for it.
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let request = whole(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let cut = tokio::time::timeout(Duration::from_millis(20), request).await;
        assert!(cut.is_err(), "the request was cut short");
        assert!(!ended.load(Ordering::SeqCst));
        assert_eq!(abandoned(), 1);
        settled().await;
        assert!(ended.load(Ordering::SeqCst), "settled returned first");
        assert_eq!(abandoned(), 0);

        // Dropped, then its task panics: no longer counted either.
        let request = whole(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panics()
        });
        let cut = tokio::time::timeout(Duration::from_millis(20), request).await;
        assert!(cut.is_err(), "the request was cut short");
        assert_eq!(abandoned(), 1);
        settled().await;
        assert_eq!(abandoned(), 0);
    }
}
