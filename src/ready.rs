//! What a wait waits for, as data: a container running, completed or
//! healthy, an app answering healthy, nginx serving a color, the load
//! balancer answering in a row. Each is polled on [`crate::wait::until`]
//! under the caller's limits and fails naming the last state it saw.
//!
//! It takes the engine and an HTTP client, never the command's context, so
//! any module can wait; showing a failed container's log is the caller's
//! (see [`NotReady::explained_by`]).

use std::cell::{Cell, RefCell};
use std::time::Duration;

use anyhow::anyhow;
use tokio::time::Instant;

use crate::engine::{Container, Engine};
use crate::error::{failed, failed_with_hint};
use crate::health::{self, Expect, Probe};
use crate::nginx::{self, Served};
use crate::stack::APP_PORT;
use crate::wait::{self, Limits, Seen};

/// How often a wait looks, unless its caller has a reason to look more or
/// less often.
pub const POLL: Duration = Duration::from_millis(100);

/// While nothing answers (the app does not listen yet), it is asked again
/// this often: a refused or dropped connection costs nothing, and the moment
/// the app starts listening is the moment to see.
const NOT_LISTENING_RETRY: Duration = Duration::from_millis(10);

/// How soon after a container's death the engine's event stream must end
/// for the death to count as the engine going down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What to wait for.
#[derive(Clone, Copy, Debug)]
pub enum WaitFor<'a> {
    /// The container runs.
    Running { container: &'a str },
    /// The container ran to its end with code 0.
    Completed { container: &'a str },
    /// The container's healthcheck (`test`, as in the compose file) passes.
    /// While the engine still says "starting", the check is run here too,
    /// so readiness is seen at once rather than after the engine's first
    /// interval.
    Healthy {
        container: &'a str,
        test: &'a [String],
    },
    /// The app in the container answers `/api/health` as `expect`, for as
    /// long as the container is the one that was started: its death, its
    /// removal or the engine going away end the wait at once. Ready when
    /// the app became ready by its own uptime, not when the poll noticed.
    App {
        container: &'a str,
        expect: &'a Expect,
    },
    /// The load balancer at `lb_addr` answers healthy as `expect`.
    Balanced {
        lb_addr: &'a str,
        expect: &'a Expect,
    },
    /// nginx's loaded configuration (asked at its status address) serves
    /// `served`: a color, and a canary's share when it has one.
    Served {
        status_addr: &'a str,
        served: Served,
    },
    /// `count` answers in a row from `expect` through the load balancer.
    InARow {
        lb_addr: &'a str,
        expect: &'a Expect,
        count: u32,
    },
}

/// What the waits look with.
#[derive(Clone, Copy)]
pub struct Probes<'a> {
    pub engine: &'a Engine,
    pub client: &'a reqwest::Client,
}

/// A wait that failed: the error (naming the last state seen) and, when the
/// container's own log explains it (it stopped, or never passed its check),
/// that container. A container that is gone, or an engine that went away,
/// has no log worth showing.
#[derive(Debug)]
pub struct NotReady {
    pub error: anyhow::Error,
    pub explained_by: Option<String>,
}

impl NotReady {
    fn explained(container: &str, error: anyhow::Error) -> NotReady {
        NotReady {
            error,
            explained_by: Some(container.to_owned()),
        }
    }
}

impl From<anyhow::Error> for NotReady {
    fn from(error: anyhow::Error) -> NotReady {
        NotReady {
            error,
            explained_by: None,
        }
    }
}

impl From<NotReady> for anyhow::Error {
    fn from(not: NotReady) -> anyhow::Error {
        not.error
    }
}

impl WaitFor<'_> {
    /// Waits under `limits`; returns when the awaited state began (for
    /// [`WaitFor::App`] by the app's own clock, else when it was seen).
    pub async fn wait(&self, on: &Probes<'_>, limits: Limits) -> Result<Instant, NotReady> {
        match *self {
            WaitFor::Running { container } => Ok(running(on.engine, container, limits).await?),
            WaitFor::Completed { container } => Ok(completed(on.engine, container, limits).await?),
            WaitFor::Healthy { container, test } => {
                healthy(on.engine, container, test, limits).await
            }
            WaitFor::App { container, expect } => app(on, container, expect, limits).await,
            WaitFor::Balanced { lb_addr, expect } => {
                Ok(balanced(on.client, lb_addr, expect, limits).await?)
            }
            WaitFor::Served {
                status_addr,
                served: state,
            } => Ok(served(on.client, status_addr, state, limits).await?),
            WaitFor::InARow {
                lb_addr,
                expect,
                count,
            } => Ok(in_a_row(on.client, lb_addr, expect, count, limits).await?),
        }
    }
}

/// The container, or an error saying it is gone.
pub async fn inspect(engine: &Engine, name: &str) -> anyhow::Result<Container> {
    engine
        .inspect(name)
        .await?
        .ok_or_else(|| failed(format!("container {name} is gone")))
}

async fn running(engine: &Engine, name: &str, limits: Limits) -> anyhow::Result<Instant> {
    let probe = || async {
        let container = inspect(engine, name).await?;
        Ok(if container.running {
            Seen::Ready(Instant::now())
        } else {
            Seen::Not(container.state)
        })
    };
    let expired = |state| failed(format!("{name} is not running (state {state})"));
    wait::until(limits, probe, expired).await
}

async fn completed(engine: &Engine, name: &str, limits: Limits) -> anyhow::Result<Instant> {
    let probe = || async {
        let container = inspect(engine, name).await?;
        if container.running || container.state != "exited" {
            return Ok(Seen::Not(container.state));
        }
        match container.exit_code {
            Some(0) => Ok(Seen::Ready(Instant::now())),
            code => Err(failed(format!(
                "{name} exited with code {}",
                code.unwrap_or(-1)
            ))),
        }
    };
    let expired = |state| failed(format!("{name} did not complete in time (state {state})"));
    wait::until(limits, probe, expired).await
}

async fn healthy(
    engine: &Engine,
    name: &str,
    test: &[String],
    limits: Limits,
) -> Result<Instant, NotReady> {
    let command = check_command(test);
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    // What the last check said: a look that runs no check keeps it.
    let last = RefCell::new(String::new());
    // A container that stopped, or never passed its check, is explained by
    // its log; one that is gone is not.
    let explained = Cell::new(false);
    let probe = || look_healthy(engine, name, &argv, &last, &explained);
    let expired = |last| {
        explained.set(true);
        failed(format!("{name} is not healthy in time; last check: {last}"))
    };
    wait::until(limits, probe, expired)
        .await
        .map_err(|error| NotReady {
            error,
            explained_by: explained.get().then(|| name.to_owned()),
        })
}

/// The command a compose healthcheck runs, for `exec`; empty for `NONE`.
fn check_command(test: &[String]) -> Vec<String> {
    match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
        _ => Vec::new(),
    }
}

/// One look at a container's health: the engine's word, or, while it still
/// says "starting", the check run here.
async fn look_healthy(
    engine: &Engine,
    name: &str,
    argv: &[&str],
    last: &RefCell<String>,
    explained: &Cell<bool>,
) -> anyhow::Result<Seen<Instant>> {
    let container = inspect(engine, name).await?;
    if !container.running && container.state != "restarting" {
        explained.set(true);
        return Err(failed(format!(
            "{name} is not running: {} with code {}",
            container.state,
            container.exit_code.unwrap_or(-1)
        )));
    }
    match container.health.as_deref() {
        Some("healthy") => return Ok(Seen::Ready(Instant::now())),
        Some("starting") | None if !argv.is_empty() && container.running => {
            match engine.exec(name, argv).await {
                Ok(output) if output.code == 0 => return Ok(Seen::Ready(Instant::now())),
                Ok(output) => {
                    *last.borrow_mut() = format!("{}{}", output.stdout, output.stderr)
                        .trim()
                        .to_owned();
                }
                Err(err) => *last.borrow_mut() = format!("{err:#}"),
            }
        }
        Some(other) => {
            *last.borrow_mut() = format!("{other}: {}", container.health_log.unwrap_or_default());
        }
        None => {}
    }
    Ok(Seen::Not(last.borrow().clone()))
}

async fn app(
    on: &Probes<'_>,
    name: &str,
    expect: &Expect,
    limits: Limits,
) -> Result<Instant, NotReady> {
    let container = inspect(on.engine, name).await?;
    let Some(addr) = health::app_addr(&container) else {
        return Err(
            anyhow!("{name} publishes no port {APP_PORT} and has no address on a network").into(),
        );
    };
    let expired = |last: String| {
        failed(format!(
            "{name} did not answer healthy as {} {} in time; its health endpoint last answered: {last}",
            expect.color,
            expect.version.as_deref().unwrap_or("(any version)")
        ))
    };
    tokio::select! {
        // A container that stopped is the watch's to report; here it runs,
        // and only its answers were wrong.
        answered = answers(on.client, &addr, expect, limits, expired) => {
            answered.map_err(|error| NotReady::explained(name, error))
        }
        lost = watch(on.engine, &container) => Err(lost),
    }
}

async fn balanced(
    client: &reqwest::Client,
    lb_addr: &str,
    expect: &Expect,
    limits: Limits,
) -> anyhow::Result<Instant> {
    let expired = |last| {
        failed(format!(
            "the load balancer at {lb_addr} did not answer healthy as {} in time; last answer: {last}",
            expect.color
        ))
    };
    answers(client, lb_addr, expect, limits, expired).await
}

/// Polls `addr` until it answers as `expect`; returns when the app became
/// ready by its own clock (the answer's time less its uptime). `expired`
/// makes the error from the last answer.
async fn answers(
    client: &reqwest::Client,
    addr: &str,
    expect: &Expect,
    limits: Limits,
    expired: impl FnOnce(String) -> anyhow::Error,
) -> anyhow::Result<Instant> {
    let probe = || async {
        let answer = first_answer(client, addr, limits).await;
        if answer.satisfies(expect)
            && let Probe::Answered(report) = &answer
        {
            let now = Instant::now();
            let up = Duration::try_from_secs_f64(report.uptime).unwrap_or_default();
            return Ok(Seen::Ready(now.checked_sub(up).unwrap_or(now)));
        }
        Ok(Seen::Not(answer.to_string()))
    };
    wait::until(limits, probe, expired).await
}

/// The first answer `addr` gives: while nothing listens there it is asked
/// again every [`NOT_LISTENING_RETRY`], up to the deadline; then the last
/// "no answer" is the answer.
async fn first_answer(client: &reqwest::Client, addr: &str, limits: Limits) -> Probe {
    let retry = Limits::until(limits.deadline, NOT_LISTENING_RETRY.min(limits.interval));
    let probe = || async {
        let left = limits.deadline.saturating_duration_since(Instant::now());
        let timeout = left.clamp(Duration::from_millis(100), Duration::from_secs(5));
        Ok(match health::probe(client, addr, timeout).await {
            Probe::Unreachable(reason) => Seen::Not(reason),
            answer => Seen::Ready(answer),
        })
    };
    // The probe never fails: the only error is the deadline, with the reason.
    wait::until(retry, probe, |reason| anyhow!(reason))
        .await
        .unwrap_or_else(|reason| Probe::Unreachable(reason.to_string()))
}

/// The first sign that `container` is no longer the one being waited for:
/// it died (crashed, or was stopped, perhaps by a dockerd going down) or
/// was removed since it started, or the engine went away. Its address may
/// then belong to another container, so polling it could only mislead.
/// Events, not polling: the engine says so the moment it happens, and
/// replays what came since the start.
async fn watch(engine: &Engine, container: &Container) -> NotReady {
    use futures_util::StreamExt;
    let name = &container.name;
    let lost = |detail: String| {
        NotReady::from(crate::engine::lost(format!(
            "while {name} got ready, {detail}"
        )))
    };
    let events = engine.container_events(
        ("container", &container.id),
        &["die", "destroy"],
        container.started_at,
    );
    let mut events = std::pin::pin!(events);
    match events.next().await {
        Some(Ok(event)) if event.action == "destroy" => {
            failed(format!("{name} was removed while it got ready")).into()
        }
        Some(Ok(event)) => {
            // A dockerd going down stops its containers, then closes its
            // API: the event stream ending soon after the death is what
            // tells that apart from a crash.
            if let Ok(None | Some(Err(_))) =
                tokio::time::timeout(SHUTDOWN_GRACE, events.next()).await
            {
                return lost(format!(
                    "{name} was stopped (code {}), then the event stream closed",
                    event.exit_code.unwrap_or(-1)
                ));
            }
            NotReady::explained(
                name,
                failed_with_hint(
                    format!(
                        "{name} stopped while it got ready, with code {}",
                        event.exit_code.unwrap_or(-1)
                    ),
                    "did it crash, or was dockerd restarted? Check `cryptus logs`, then run the deploy again",
                ),
            )
        }
        Some(Err(err)) => lost(format!("{err:#}")),
        None => lost("it closed its event stream".to_owned()),
    }
}

async fn served(
    client: &reqwest::Client,
    status_addr: &str,
    state: Served,
    limits: Limits,
) -> anyhow::Result<Instant> {
    let probe = || async {
        Ok(match nginx::served(client, status_addr).await {
            Ok(now) if now == state => Seen::Ready(Instant::now()),
            Ok(now) => Seen::Not(now.to_string()),
            Err(err) => Seen::Not(format!("? ({err:#})")),
        })
    };
    let expired = |serves| {
        failed(format!(
            "nginx did not pick up the new upstream in time (it serves {serves})"
        ))
    };
    wait::until(limits, probe, expired).await
}

/// How long one answer through the load balancer may take while counting.
const IN_A_ROW_TIMEOUT: Duration = Duration::from_secs(2);

async fn in_a_row(
    client: &reqwest::Client,
    lb_addr: &str,
    expect: &Expect,
    count: u32,
    limits: Limits,
) -> anyhow::Result<Instant> {
    // One look is one run of answers: the first wrong one ends the run,
    // and the count starts again at the next look.
    let probe = || async {
        for _ in 0..count {
            let answer = health::probe(client, lb_addr, IN_A_ROW_TIMEOUT).await;
            if !answer.satisfies(expect) {
                return Ok(Seen::Not(answer.to_string()));
            }
        }
        Ok(Seen::Ready(Instant::now()))
    };
    let expired = |last| {
        failed(format!(
            "the load balancer did not answer {count} times in a row from {}; last answer: {last}",
            expect.color
        ))
    };
    wait::until(limits, probe, expired).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Color;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback that gives the answers in turn, then the last
    /// one for ever: `(code, body)`.
    async fn server(answers: Vec<(u16, String)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut turn = 0;
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (code, body) = answers[turn.min(answers.len() - 1)].clone();
                turn += 1;
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let reply = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    fn health(status: &str, color: &str) -> (u16, String) {
        let body = format!(
            r#"{{"status":"{status}","timestamp":"t","uptime":1.5,"instance":"{color}","version":"v1","memory":{{"used":1,"total":2}}}}"#
        );
        (200, body)
    }

    fn green() -> Expect {
        Expect {
            color: Color::Green,
            version: None,
        }
    }

    fn limits(within_ms: u64) -> Limits {
        Limits::within(Duration::from_millis(within_ms), Duration::from_millis(5))
    }

    #[test]
    fn a_healthcheck_runs_as_compose_says() {
        let test = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check_command(&test(&["CMD", "curl", "-f", "x"])),
            test(&["curl", "-f", "x"])
        );
        assert_eq!(
            check_command(&test(&["CMD-SHELL", "curl -f", "x"])),
            test(&["/bin/sh", "-c", "curl -f x"])
        );
        assert!(check_command(&test(&["NONE"])).is_empty());
    }

    #[tokio::test]
    async fn an_answer_in_a_row_counts_only_after_the_last_wrong_one() {
        let addr = server(vec![
            health("healthy", "green"),
            (503, "busy".to_owned()),
            health("healthy", "blue"),
            health("healthy", "green"),
        ])
        .await;
        let client = health::client();
        in_a_row(&client, &addr, &green(), 3, limits(5_000))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn in_a_row_names_the_last_answer() {
        let addr = server(vec![health("healthy", "blue")]).await;
        let err = in_a_row(&health::client(), &addr, &green(), 2, limits(50))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("the load balancer did not answer 2 times in a row from green; last answer: 200 status=healthy instance=blue"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_app_is_ready_by_its_own_uptime() {
        let addr = server(vec![
            (503, "starting".to_owned()),
            health("healthy", "green"),
        ])
        .await;
        let before = Instant::now();
        let ready = answers(&health::client(), &addr, &green(), limits(5_000), |l| {
            anyhow!(l)
        })
        .await
        .unwrap();
        // It answered with 1.5 s of uptime: it was ready before the wait began.
        assert!(ready < before, "{ready:?} !< {before:?}");
    }

    #[tokio::test]
    async fn a_wrong_answer_is_the_last_state_seen() {
        let addr = server(vec![(503, r#"{"status":"starting"}"#.to_owned())]).await;
        let err = answers(&health::client(), &addr, &green(), limits(50), |last| {
            anyhow!("last answer: {last}")
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), r#"last answer: 503 {"status":"starting"}"#);
    }

    #[tokio::test]
    async fn the_load_balancer_names_its_last_answer() {
        let addr = server(vec![(502, "bad gateway".to_owned())]).await;
        let err = balanced(&health::client(), &addr, &green(), limits(50))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the load balancer at {addr} did not answer healthy as green in time; last answer: 502 bad gateway"
            )
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_the_last_state_seen() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap().to_string();
        drop(free);
        let err = answers(&health::client(), &addr, &green(), limits(50), |last| {
            anyhow!(last)
        })
        .await
        .unwrap_err();
        assert!(err.to_string().starts_with("no answer ("), "{err}");
    }

    #[tokio::test]
    async fn served_waits_for_nginx_to_name_the_color() {
        let addr = server(vec![(200, "blue".to_owned()), (200, "green\n".to_owned())]).await;
        served(
            &health::client(),
            &addr,
            Served::color(Color::Green),
            limits(5_000),
        )
        .await
        .unwrap();
        let addr = server(vec![(200, "blue".to_owned())]).await;
        let err = served(
            &health::client(),
            &addr,
            Served::color(Color::Green),
            limits(50),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "nginx did not pick up the new upstream in time (it serves blue)"
        );
    }
}
