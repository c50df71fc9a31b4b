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

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// How long an abandoned request is waited for by [`settled`], and how
/// long it may still run, from the moment its caller gave it up: bollard
/// bounds a request only until its answer's headers (an exec's output may
/// never end), and a cleanup must end well within its own deadlines.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(20);

/// The requests that run on whose callers gave them up, each with the end
/// of its window (abandoned + [`SETTLE_WITHIN`]).
static ABANDONED: LazyLock<watch::Sender<BTreeMap<u64, Instant>>> =
    LazyLock::new(|| watch::channel(BTreeMap::new()).0);

static NEXT: AtomicU64 = AtomicU64::new(0);

tokio::task_local! {
    /// Set inside a request's own task: what it calls must not wait for
    /// abandoned requests, itself among them.
    static INSIDE: ();
}

/// Where one request stands, as its caller and its task see it.
#[derive(Clone, Copy, PartialEq)]
enum Stand {
    Running,
    /// Its caller was dropped first: it is in [`ABANDONED`].
    Abandoned,
    Done,
}

/// One request's standing, shared by its caller and its task.
struct Shared {
    id: u64,
    stand: Mutex<Stand>,
}

impl Shared {
    /// Its standing, locked (a panic elsewhere leaves it readable).
    fn stand(&self) -> std::sync::MutexGuard<'_, Stand> {
        self.stand.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `request` to its end in a task of its own and returns its output
/// (an error only if the task itself failed). Dropping the returned future
/// leaves the request running, in [`ABANDONED`] until it ends, or until
/// [`SETTLE_WITHIN`] later it is dropped too.
pub async fn whole<T: Send + 'static>(
    request: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let shared = Arc::new(Shared {
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        stand: Mutex::new(Stand::Running),
    });
    let (give_up, given_up) = oneshot::channel();
    let ending = Ending {
        shared: shared.clone(),
    };
    // The task marks the request done before its result is handed over:
    // the caller dropped any time before that abandons it.
    let _caller = Caller {
        shared,
        give_up: Some(give_up),
    };
    let task = tokio::spawn(INSIDE.scope((), async move {
        let _ending = ending;
        let abandoned_too_long = async {
            match given_up.await {
                Ok(until) => tokio::time::sleep_until(until).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            output = request => Some(output),
            () = abandoned_too_long => None,
        }
    }));
    match task.await {
        Ok(Some(output)) => Ok(output),
        // Given up only once abandoned: no caller waits for this.
        Ok(None) => Err(anyhow!(
            "an engine request ran too long after it was abandoned"
        )),
        Err(err) => Err(anyhow!("an engine request's task ended early: {err}")),
    }
}

/// The awaiting side of [`whole`]: dropped before its task ended, it
/// abandons the request, whose window starts then.
struct Caller {
    shared: Arc<Shared>,
    give_up: Option<oneshot::Sender<Instant>>,
}

impl Drop for Caller {
    fn drop(&mut self) {
        let mut now = self.shared.stand();
        if *now == Stand::Running {
            *now = Stand::Abandoned;
            let until = Instant::now() + SETTLE_WITHIN;
            ABANDONED.send_modify(|abandoned| {
                abandoned.insert(self.shared.id, until);
            });
            if let Some(give_up) = self.give_up.take() {
                let _ = give_up.send(until);
            }
        }
    }
}

/// The task's side of [`whole`]: dropped when the request ends, however
/// (a panic, or given up, too), it marks it done.
struct Ending {
    shared: Arc<Shared>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let mut now = self.shared.stand();
        if *now == Stand::Abandoned {
            ABANDONED.send_modify(|abandoned| {
                abandoned.remove(&self.shared.id);
            });
        }
        *now = Stand::Done;
    }
}

/// Waits until every request whose caller gave it up has ended, or its
/// window has passed; at once when there is none, and inside a request's
/// own task.
pub async fn settled() {
    if INSIDE.try_with(|_| ()).is_ok() {
        return;
    }
    let mut receiver = ABANDONED.subscribe();
    loop {
        let now = Instant::now();
        let last = receiver
            .borrow_and_update()
            .values()
            .copied()
            .filter(|until| *until > now)
            .max();
        let Some(last) = last else {
            return;
        };
        // A change (one ended) looks again; the window's end leaves
        // nothing inside it.
        let _ = tokio::time::timeout_at(last, receiver.changed()).await;
    }
}

/// How many requests run abandoned now.
pub fn abandoned() -> usize {
    ABANDONED.borrow().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn panics() -> u8 {
        panic!("a request's task panics")
    }

    /// Starts `request` through [`whole`] and gives it up 20 ms later,
    /// while it runs.
    async fn abandon<T: Send + 'static>(request: impl Future<Output = T> + Send + 'static) {
        let cut = tokio::time::timeout(Duration::from_millis(20), whole(request)).await;
        assert!(cut.is_err(), "the request ended before it was given up");
    }

    /// One test: the count is process-wide, and tests run side by side.
    /// The clock is paused: it jumps to whatever is next due.
    #[tokio::test(start_paused = true)]
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
        abandon(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            flag.store(true, Ordering::SeqCst);
        })
        .await;
        assert!(!ended.load(Ordering::SeqCst));
        assert_eq!(abandoned(), 1);
        settled().await;
        assert!(ended.load(Ordering::SeqCst), "settled returned first");
        assert_eq!(abandoned(), 0);

        // Dropped, then its task panics: no longer counted either.
        abandon(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panics()
        })
        .await;
        assert_eq!(abandoned(), 1);
        settled().await;
        assert_eq!(abandoned(), 0);

        // Inside a request's own task, nothing waits: a request that asks
        // the engine must not wait for itself.
        abandon(tokio::time::sleep(Duration::from_secs(1))).await;
        let began = Instant::now();
        whole(settled()).await.expect("settled inside a request");
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(abandoned(), 1);
        settled().await;
        assert_eq!(abandoned(), 0);

        // One that would hang: waited for, and run, only for its window
        // after it was abandoned, then dropped too.
        abandon(tokio::time::sleep(Duration::from_secs(3600))).await;
        let began = Instant::now();
        settled().await;
        assert_eq!(began.elapsed(), SETTLE_WITHIN);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(abandoned(), 0, "the request ran past its window");

        // Two abandoned at different times: each is waited for in its own
        // window, so the later one is not cut short by the earlier's end.
        abandon(tokio::time::sleep(Duration::from_secs(3600))).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        abandon(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            flag.store(true, Ordering::SeqCst);
        })
        .await;
        settled().await;
        assert!(
            ended.load(Ordering::SeqCst),
            "the later request was not waited for"
        );
        settled().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(abandoned(), 0);
    }
}
