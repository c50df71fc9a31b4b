//! The test helpers themselves, with no engine: a wait returns what its
//! probe found or fails with the last state it saw, on time; a load counts
//! every request by kind and outcome and ends at its bounds. The load runs
//! against a stand-in server on loopback.

mod support;

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::load::Mix;
use support::wait::{
    eventually, eventually_async, exit_within, exited, output_within, poll, run_within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn a_wait_returns_what_the_probe_found_as_soon_as_it_holds() {
    let looks = Cell::new(0);
    let began = Instant::now();
    let found = eventually(
        "the third look",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            looks.set(looks.get() + 1);
            if looks.get() == 3 {
                Ok("found")
            } else {
                Err(format!("look {}", looks.get()))
            }
        },
    );
    assert_eq!(found, "found");
    assert_eq!(looks.get(), 3);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "it did not wait on"
    );
}

#[test]
fn a_wait_fails_at_its_deadline_with_the_last_state_seen() {
    let looks = Cell::new(0);
    let began = Instant::now();
    let timed_out = poll(
        Duration::from_millis(300),
        Duration::from_millis(50),
        || {
            looks.set(looks.get() + 1);
            Err::<(), _>(format!("look {}", looks.get()))
        },
    )
    .unwrap_err();
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(timed_out.within, Duration::from_millis(300));
    assert_eq!(timed_out.last, format!("look {}", looks.get()));
    assert!(looks.get() >= 2, "it looked again: {}", looks.get());
}

#[test]
#[should_panic(expected = "the lock not true after 100ms; last seen: lock null")]
fn eventually_panics_naming_what_it_waited_for_and_what_it_saw() {
    eventually(
        "the lock",
        Duration::from_millis(100),
        Duration::from_millis(20),
        || Err::<(), _>("lock null".to_owned()),
    );
}

#[test]
fn a_wait_looks_once_even_with_no_time() {
    let looks = Cell::new(0);
    let result = poll(Duration::ZERO, Duration::from_secs(60), || {
        looks.set(looks.get() + 1);
        Err::<(), _>("no".to_owned())
    });
    assert!(result.is_err());
    assert_eq!(looks.get(), 1);
}

#[test]
fn a_child_is_waited_for_until_it_exits() {
    let mut child = std::process::Command::new("sleep")
        .arg("0.2")
        .spawn()
        .expect("running sleep");
    assert!(exited(&mut child).is_err(), "sleep is still running");
    let status = eventually(
        "sleep ended",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || exited(&mut child),
    );
    assert!(status.success());
}

fn sh(script: &str) -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command.args(["-c", script]);
    command
}

#[test]
fn a_run_collects_both_streams_and_the_code_as_output_does() {
    let output = run_within(
        "sh ended",
        sh("echo out; echo err >&2; exit 3"),
        Duration::from_secs(10),
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    // stdin is closed, as `output` closes it: `cat` ends at once.
    let output = run_within("cat ended", sh("cat"), Duration::from_secs(10));
    assert!(output.status.success());
}

#[test]
fn a_child_that_writes_much_is_read_while_waited_for() {
    let child = sh("head -c 1000000 /dev/zero")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = output_within("head ended", child, Duration::from_secs(20));
    assert_eq!(output.stdout.len(), 1_000_000);
}

#[test]
#[should_panic(expected = "sleep ended not true after 200ms; last seen: pid")]
fn a_run_that_hangs_fails_at_its_deadline() {
    run_within(
        "sleep ended",
        sh("exec sleep 30"),
        Duration::from_millis(200),
    );
}

#[test]
fn a_hung_child_is_killed_at_the_deadline() {
    let mut child = sh("exec sleep 30").spawn().unwrap();
    let pid = child.id();
    let began = Instant::now();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exit_within("sleep ended", &mut child, Duration::from_millis(200))
    }));
    assert!(failed.is_err(), "the wait failed");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the child was killed and reaped"
    );
}

#[tokio::test]
#[should_panic(expected = "the flag not true after 100ms; last seen: still false")]
async fn the_async_wait_fails_the_same_way() {
    let flag = false;
    eventually_async(
        "the flag",
        Duration::from_millis(100),
        Duration::from_millis(20),
        || async move {
            if flag {
                Ok(())
            } else {
                Err("still false".to_owned())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_async_wait_lets_the_runtime_run() {
    let (sender, receiver) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        for n in 1..=5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = sender.send(n);
        }
    });
    let seen = eventually_async(
        "the fifth message",
        Duration::from_secs(10),
        Duration::from_millis(5),
        || {
            let now = *receiver.borrow();
            async move {
                if now == 5 {
                    Ok(now)
                } else {
                    Err(format!("{now}"))
                }
            }
        },
    )
    .await;
    assert_eq!(seen, 5);
}

/// A stand-in for the load balancer on loopback: `/api/health` answers
/// 200, `POST /api/echo` the length of its body, as the reference app
/// does; every connection is kept.
async fn stand_in() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                // loadgen writes each request at once: one read each.
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    let request = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    let length = request.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
                    let body = format!("{{\"instance\":\"blue\",\"length\":{length}}}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nx-cryptus-instance: blue\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn only(keep_alive: usize, new_connection: usize, post: usize) -> Mix {
    Mix {
        keep_alive,
        new_connection,
        slow: 0,
        session: 0,
        keep_alive_no_retry: 0,
        post,
        pause: Duration::from_millis(5),
        ..Mix::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_counts_every_request_by_kind_until_the_test_stops_it() {
    let load = only(1, 1, 1).start(stand_in().await);
    load.flowing(30, Duration::from_secs(10)).await;
    let report = load.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.ok, report.requests);
    for kind in ["keep_alive", "new_connection", "post"] {
        assert!(report.by_kind.get(kind) > Some(&0), "{kind}: {report:?}");
    }
    assert_eq!(report.by_color.get("blue"), Some(&report.requests));
    assert_eq!(report.cut_short, None);
    assert!(report.first_failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_ends_at_its_request_bound() {
    let mix = Mix {
        max_requests: 40,
        ..only(1, 0, 0)
    };
    let load = mix.start(stand_in().await);
    eventually_async(
        "the load ended by itself",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            if load.running().await {
                Err("running".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    let report = load.stop().await;
    // One client, a request every 5 ms at most: a few more than the bound
    // in the 20 ms between checks, more if the machine is busy.
    assert!((40..100).contains(&report.requests), "{}", report.summary());
    let bound = report.cut_short.as_deref().unwrap_or_default();
    assert!(bound.contains("max_requests 40"), "{bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_ends_at_its_time_bound() {
    let mix = Mix {
        max_time: Duration::from_millis(300),
        ..only(1, 0, 0)
    };
    let began = Instant::now();
    let load = mix.start(stand_in().await);
    eventually_async(
        "the load ended by itself",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            if load.running().await {
                Err("running".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let report = load.stop().await;
    assert!(report.requests > 0, "{}", report.summary());
    let bound = report.cut_short.as_deref().unwrap_or_default();
    assert!(bound.contains("max_time 300ms"), "{bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_against_nothing_reports_its_failures_one_by_one() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let load = only(0, 1, 0).start(addr);
    load.flowing(5, Duration::from_secs(10)).await;
    let report = load.stop().await;
    assert_eq!(report.ok, 0);
    assert_eq!(report.failed, report.requests);
    assert_eq!(report.failures.get("connect_error"), Some(&report.failed));
    assert_eq!(
        report.failed_by_kind.get("new_connection"),
        Some(&report.failed)
    );
    assert_eq!(report.first_failures.len(), 10.min(report.failed as usize));
    assert!(
        report.first_failures[0].contains("new_connection connect_error"),
        "{:?}",
        report.first_failures
    );
}

#[tokio::test]
#[should_panic(expected = "load goes to loopback only")]
async fn a_load_goes_to_loopback_only() {
    only(1, 0, 0).start(SocketAddr::from(([192, 0, 2, 1], 80)));
}
