//! The reference app that cryptus deploys: a stand-in for the Cryptus web app.
//!
//! It answers the endpoints the deploy flow and the tests rely on:
//! `/api/health` (the seed's JSON), `/api/session` (a visit counter kept in
//! Redis, so a session survives a color switch), `/api/sleep?ms=N` (long
//! requests for drain tests), `POST /api/echo` (answers the body's length,
//! for clients that never retry), `/metrics` (Prometheus text format), and
//! receivers for tests and demos (`/api/alerts`, `/api/annotations`,
//! `/api/notifications`), and two long-lived endpoints: server-sent events
//! (`/api/events`) and a WebSocket echo (`/api/ws`), each naming the color
//! and version that serves it.
//! Environment knobs make it misbehave on purpose for tests: a start-up delay,
//! health that never turns healthy, a crash after N seconds and a ratio of 5xx
//! answers. On SIGTERM it stops accepting, finishes in-flight requests, ends
//! event streams and WebSockets (so their clients reconnect), exits.

mod config;
mod live;
mod metrics;
mod redis;
mod routes;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::routes::App;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("cryptus-app: {err}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(config),
        Some("healthcheck") => healthcheck(&config),
        Some(other) => {
            eprintln!(
                "cryptus-app: unknown argument {other:?}; usage: cryptus-app [serve|healthcheck]"
            );
            ExitCode::from(2)
        }
    }
}

/// The container's own HEALTHCHECK: the image is `FROM scratch`, so there is
/// no curl or wget to call; the binary asks itself.
fn healthcheck(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let timeout = Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /api/health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match answer {
        Ok(answer) if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") => {
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("unhealthy: {}", answer.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("unhealthy: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cryptus-app: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cryptus-app: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long the shutdown waits for connections: longer than the longest
/// request the app serves (`/api/sleep`, at most 60 s).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(65);

/// Serves one connection (upgrades to WebSocket included) until it ends,
/// or, once the app closes, until its request in flight is answered.
async fn connection(app: Arc<App>, stream: tokio::net::TcpStream) {
    let mut closing = app.closing();
    let service = service_fn(move |request| {
        let app = Arc::clone(&app);
        async move { app.serve(request).await }
    });
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    // A client that goes away mid-request is not an app error.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = live::until_closing(&mut closing) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

async fn run(config: Config) -> std::io::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    if let Some(after) = config.crash_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!("cryptus-app: crashing on purpose after {after:?} (APP_CRASH_AFTER_S)");
            std::process::exit(3);
        });
    }
    if !config.startup_delay.is_zero() {
        eprintln!(
            "cryptus-app: starting up for {:?} (APP_STARTUP_DELAY_MS)",
            config.startup_delay
        );
        tokio::select! {
            _ = tokio::time::sleep(config.startup_delay) => {}
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
        }
    }

    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], config.port))).await?;
    eprintln!(
        "cryptus-app: {} version {} listening on :{}",
        config.color, config.version, config.port
    );
    let app = Arc::new(App::new(config));

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        eprintln!("cryptus-app: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(Arc::clone(&app), stream));
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    // Stop accepting, let in-flight requests finish, close idle keep-alive
    // connections, end event streams and WebSockets (their clients then
    // reconnect, to whichever color serves). Docker's stop timeout bounds
    // this from the outside; SHUTDOWN_LIMIT from the inside.
    drop(listener);
    eprintln!("cryptus-app: draining in-flight requests");
    if app.close(SHUTDOWN_LIMIT).await {
        eprintln!("cryptus-app: drained, exiting");
    } else {
        eprintln!("cryptus-app: connections still open after {SHUTDOWN_LIMIT:?}, exiting");
    }
    Ok(())
}
