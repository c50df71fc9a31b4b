//! The test helpers themselves, with no engine: a wait returns what its
//! probe found or fails with the last state it saw, on time.

mod support;

use std::cell::Cell;
use std::time::{Duration, Instant};

use support::wait::{eventually, eventually_async, exited, poll};

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
