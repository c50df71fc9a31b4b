//! Test support: every end-to-end test gets its own project (a unique name,
//! its own loopback port, its own copy of the project files) on the real
//! engine, and everything carrying that project's label is removed when the
//! test ends, pass or fail.
//!
//! Here: the cryptus binary, its runs (each under a deadline) and the
//! images. [`project`]: the isolated project; [`engine`]: engine calls and
//! removal; [`http`]: single requests; [`private_engine`]: a dockerd of a
//! test's own; [`swarm_lab`]: a Docker Swarm of a test's own; [`ssh_gate`]:
//! an sshd reaching one of its engines, for `ssh://` URLs; [`wait`]:
//! every wait; [`load`]: load through the load balancer.

// Each test file compiles this module and uses a part of it.
#![allow(dead_code)]

mod engine;
mod http;
pub mod lab_load;
pub mod load;
pub mod private_engine;
mod project;
pub mod ssh_gate;
pub mod swarm_lab;
pub mod wait;

// Each test file uses a part of these: what one leaves unused is not dead.
#[allow(unused_imports)]
pub use engine::{
    assert_no_dangling_since, dangling_volumes, on_engine, on_engine_at, remove_at, remove_project,
};
#[allow(unused_imports)]
pub use http::{get, get_json, get_with_headers};
#[allow(unused_imports)]
pub use project::{TestProject, copy_dir};

use std::process::Output;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_cryptus");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The images the tests run: the offline ones by default.
pub fn nginx_image() -> String {
    std::env::var("CRYPTUS_TEST_NGINX_IMAGE").unwrap_or_else(|_| "cryptus/nginx:offline".into())
}

pub fn redis_image() -> String {
    std::env::var("CRYPTUS_TEST_REDIS_IMAGE").unwrap_or_else(|_| "cryptus/redis:offline".into())
}

/// The registry the Swarm lab's nodes push to and pull from
/// (`scripts/make-images.sh --registry`).
pub const REGISTRY_IMAGE: &str = "cryptus/registry:offline";

pub fn app_image() -> String {
    std::env::var("CRYPTUS_TEST_APP_IMAGE").unwrap_or_else(|_| "cryptus:latest".into())
}

/// A free port on loopback, for the load balancer.
pub fn free_port() -> u16 {
    // A port handed out once is not handed out again in this run: tests in
    // parallel threads would otherwise race for one the kernel freed.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
        let port = listener.local_addr().expect("reading the port").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// How long one cryptus run may take in a test: far longer than any takes,
/// so that only a hang reaches it, and a hang fails the test instead of
/// holding it forever.
pub const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// Runs the cryptus binary with a clean cryptus environment.
#[track_caller]
pub fn cryptus(args: &[&str], env: &[(&str, &str)]) -> Output {
    run(command(args, env))
}

/// Runs a cryptus command to its end and collects its output (as
/// `Command::output` does), for at most [`RUN_DEADLINE`].
#[track_caller]
pub fn run(command: std::process::Command) -> Output {
    let what = format!("{} ended", shown(&command));
    wait::run_within(&what, command, RUN_DEADLINE)
}

/// [`run`] without blocking the async runtime (load keeps flowing).
pub async fn run_async(command: std::process::Command) -> Output {
    let what = format!("{} ended", shown(&command));
    let mut command = tokio::process::Command::from(command);
    // Past the deadline the future is dropped, and the child with it.
    command.kill_on_drop(true);
    match tokio::time::timeout(RUN_DEADLINE, command.output()).await {
        Ok(output) => output.expect("running cryptus"),
        Err(_) => panic!("{what} not true after {RUN_DEADLINE:?}; last seen: still running"),
    }
}

/// A command line, for messages.
fn shown(command: &std::process::Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// The variables cryptus reads that a test's environment must not leak
/// into a run: each run is given its own.
pub const CRYPTUS_VARIABLES: [&str; 14] = [
    "CRYPTUS_PROJECT",
    "CRYPTUS_ORCHESTRATOR",
    "CRYPTUS_SWARM_REGISTRY",
    "CRYPTUS_NOTIFY_URL",
    "NGINX_IMAGE",
    "REDIS_IMAGE",
    "CRYPTUS_IMAGE",
    "CRYPTUS_BIND",
    "CRYPTUS_HTTP_PORT",
    "CRYPTUS_HTTPS_PORT",
    "RUST_LOG",
    "COMPOSE_FILE",
    "COMPOSE_PATH_SEPARATOR",
    "COMPOSE_PROFILES",
];

/// The cryptus binary with a clean cryptus environment.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command.args(args);
    for name in CRYPTUS_VARIABLES {
        command.env_remove(name);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts an exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(output),
        stderr(output)
    );
}

/// Makes names unique within the test process (projects, private engines).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Every file under `dir`, archives unpacked, holds no `secret`.
pub fn assert_nowhere_in(dir: &std::path::Path, secret: &str) {
    for entry in std::fs::read_dir(dir).expect("reading a directory") {
        let path = entry.expect("reading a directory entry").path();
        if path.is_dir() {
            assert_nowhere_in(&path, secret);
            continue;
        }
        let bytes = std::fs::read(&path).expect("reading a file");
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the secret",
            path.display()
        );
        if path.to_string_lossy().ends_with(".tar.gz") {
            let unpacked = tempfile::tempdir().expect("making a directory");
            let status = std::process::Command::new("tar")
                .arg("-xzf")
                .arg(&path)
                .arg("-C")
                .arg(unpacked.path())
                .status()
                .expect("running tar");
            assert!(status.success(), "unpacking {}", path.display());
            assert_nowhere_in(unpacked.path(), secret);
        }
    }
}

/// A self-signed certificate for `name` and its key, made by openssl.
pub fn self_signed(key: &std::path::Path, cert: &std::path::Path, name: &str) {
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl makes a self-signed certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}
