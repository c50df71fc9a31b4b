//! Every kind of client (loadgen's `Mix::every_kind`: keep-alive, new
//! connections, 2 s requests, sessions, never-retrying GETs and POSTs)
//! inside a Swarm lab node's network namespace, where the lab's addresses
//! are reachable: a thread of its own enters the namespace (`setns` moves
//! only the calling thread) and runs the clients on a runtime of its own,
//! so every socket they open is the node's. The load is bounded (30
//! minutes) and ends when the test finishes it or drops it.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::swarm_lab::SwarmLab;

/// The longest the clients run, however the test goes.
const BOUND: Duration = Duration::from_secs(1800);

pub struct LabLoad {
    stop: Arc<AtomicBool>,
    /// When the clients began (their samples' `at` counts from it), once
    /// their thread has started them.
    began: Arc<std::sync::OnceLock<Instant>>,
    thread: Option<JoinHandle<Result<loadgen::Report, String>>>,
}

impl LabLoad {
    /// Starts the clients in node `node`'s namespace against `addr` (a
    /// lab address: nginx's host-mode port on a node).
    pub fn start(lab: &SwarmLab, node: usize, addr: SocketAddr) -> LabLoad {
        // The script names a node's network namespace as its hostname.
        let netns = format!("/run/netns/{}", lab.node_name(node));
        let stop = Arc::new(AtomicBool::new(false));
        let began = Arc::new(std::sync::OnceLock::new());
        let (stopping, beginning) = (Arc::clone(&stop), Arc::clone(&began));
        let thread = std::thread::spawn(move || run(&netns, addr, &stopping, &beginning));
        LabLoad {
            stop,
            began,
            thread: Some(thread),
        }
    }

    /// When the clients began, if they have.
    pub fn began(&self) -> Option<Instant> {
        self.began.get().copied()
    }

    /// Stops the clients (each ends its request in flight) and reports.
    pub fn finish(mut self) -> Result<loadgen::Report, String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| "the lab's clients panicked".to_owned())?,
            None => Err("the lab's clients were already finished".to_owned()),
        }
    }
}

impl Drop for LabLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run(
    netns: &str,
    addr: SocketAddr,
    stop: &AtomicBool,
    began_at: &std::sync::OnceLock<Instant>,
) -> Result<loadgen::Report, String> {
    let namespace = std::fs::File::open(netns).map_err(|e| format!("opening {netns}: {e}"))?;
    // SAFETY: setns(2) on a descriptor this thread holds open; it moves this
    // thread alone into the namespace, and nothing else runs on it.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "entering {netns}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime for the lab's clients: {e}"))?;
    Ok(runtime.block_on(async {
        let load = loadgen::Load::start(addr, &loadgen::Mix::every_kind());
        let _ = began_at.set(load.began());
        let began = Instant::now();
        while !stop.load(Ordering::SeqCst) && began.elapsed() < BOUND {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        load.stop().await
    }))
}
