//! The deploy lock, held by the engine so that an operator and a CI runner on
//! different machines exclude each other.
//!
//! Taking the lock is creating a container with the lock's name: the engine
//! refuses a second container of the same name, atomically. The container is
//! never started; its labels record the holder, host, pid and start time, and
//! the holder rewrites a heartbeat file in it every few seconds. A lock whose
//! holder is gone is stale and is broken: the same host with a dead pid, or a
//! heartbeat older than [`STALE_AFTER`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{Engine, PROJECT_LABEL};
use crate::error::failed_with_hint;
use crate::output::Printer;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
pub const STALE_AFTER: Duration = Duration::from_secs(30);
const HEARTBEAT_DIR: &str = "/";
const HEARTBEAT_FILE: &str = "cryptus-heartbeat";
pub const LOCK_LABEL: &str = "cryptus.lock";

/// Who holds a lock, from its labels.
#[derive(Clone, Debug, Serialize)]
pub struct Holder {
    pub operation: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub since: DateTime<Utc>,
    /// When the holder last proved it is alive.
    pub heartbeat: Option<DateTime<Utc>>,
}

impl Holder {
    fn describe(&self) -> String {
        let age = (Utc::now() - self.since).num_seconds().max(0);
        format!(
            "{} by {}@{} (pid {}) since {} ({age}s ago)",
            self.operation,
            self.user,
            self.host,
            self.pid,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }

    /// Why the holder is gone, if it is.
    fn stale_because(&self, now: DateTime<Utc>) -> Option<String> {
        if self.host == hostname() && !pid_alive(self.pid) {
            return Some(format!("its process {} on this host is gone", self.pid));
        }
        let last = self.heartbeat.unwrap_or(self.since);
        let silent = (now - last).to_std().unwrap_or_default();
        (silent > STALE_AFTER).then(|| format!("no heartbeat for {}s", silent.as_secs()))
    }

    fn from_labels(labels: &BTreeMap<String, String>) -> Holder {
        let get = |key: &str| {
            labels
                .get(&format!("{LOCK_LABEL}.{key}"))
                .cloned()
                .unwrap_or_default()
        };
        Holder {
            operation: get("operation"),
            user: get("user"),
            host: get("host"),
            pid: get("pid").parse().unwrap_or(0),
            since: DateTime::parse_from_rfc3339(&get("since"))
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|_| Utc::now()),
            heartbeat: None,
        }
    }
}

pub fn lock_name(project: &str) -> String {
    format!("{project}-deploy-lock")
}

/// A held lock. Release it with [`Lock::release`]; the heartbeat stops when
/// it is dropped.
pub struct Lock {
    engine: Engine,
    id: String,
    heartbeat: JoinHandle<()>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

pub struct Options {
    pub wait: Duration,
    pub force_unlock: bool,
}

impl Lock {
    /// Takes the project's lock for `operation`, waiting up to `wait` for a
    /// live holder to release it. `image` is any image the engine has: the
    /// lock container is never started.
    pub async fn acquire(
        engine: &Engine,
        project: &str,
        operation: &str,
        image: &str,
        options: &Options,
        printer: &Printer,
    ) -> Result<Lock> {
        let name = lock_name(project);
        let deadline = Instant::now() + options.wait;
        let mut waiting_said = false;
        loop {
            let labels = BTreeMap::from([
                (PROJECT_LABEL.to_owned(), project.to_owned()),
                (LOCK_LABEL.to_owned(), "deploy".to_owned()),
                (format!("{LOCK_LABEL}.operation"), operation.to_owned()),
                (format!("{LOCK_LABEL}.user"), user()),
                (format!("{LOCK_LABEL}.host"), hostname()),
                (format!("{LOCK_LABEL}.pid"), std::process::id().to_string()),
                (format!("{LOCK_LABEL}.since"), Utc::now().to_rfc3339()),
            ]);
            let body = ContainerCreateBody {
                image: Some(image.to_owned()),
                labels: Some(labels.into_iter().collect()),
                cmd: Some(vec!["cryptus-lock".to_owned()]),
                network_disabled: Some(true),
                host_config: Some(HostConfig {
                    network_mode: Some("none".to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match engine.create_container_exclusive(&name, body).await? {
                Some(id) => {
                    let heartbeat = spawn_heartbeat(engine.clone(), id.clone());
                    return Ok(Lock {
                        engine: engine.clone(),
                        id,
                        heartbeat,
                    });
                }
                None => {
                    let Some((id, holder)) = read_holder(engine, &name).await? else {
                        // Released between our attempt and the read: try again.
                        continue;
                    };
                    if options.force_unlock {
                        printer.warn(format!(
                            "breaking the lock held by {} (--force-unlock)",
                            holder.describe()
                        ));
                        engine.remove(&id, true).await?;
                        continue;
                    }
                    if let Some(why) = holder.stale_because(Utc::now()) {
                        printer.warn(format!(
                            "breaking a stale lock held by {}: {why}",
                            holder.describe()
                        ));
                        // By id: if another cryptus broke it first and took a
                        // new lock, that new lock is not removed.
                        engine.remove(&id, true).await?;
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(failed_with_hint(
                            format!(
                                "the deploy lock of project {project} is held: {}",
                                holder.describe()
                            ),
                            "wait for it with --lock-wait 5m; if its holder is gone, --force-unlock breaks it",
                        ));
                    }
                    if !waiting_said {
                        printer.info(format!(
                            "waiting for the deploy lock, held by {}",
                            holder.describe()
                        ));
                        waiting_said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    pub async fn release(self) -> Result<()> {
        self.heartbeat.abort();
        self.engine.remove(&self.id, true).await
    }
}

/// The lock's holder, if the lock is held.
pub async fn read_holder(engine: &Engine, name: &str) -> Result<Option<(String, Holder)>> {
    let Some(container) = engine.inspect(name).await? else {
        return Ok(None);
    };
    let mut holder = Holder::from_labels(&container.labels);
    holder.heartbeat = engine
        .file_mtime(&container.id, &format!("{HEARTBEAT_DIR}{HEARTBEAT_FILE}"))
        .await
        .ok()
        .flatten();
    Ok(Some((container.id, holder)))
}

fn spawn_heartbeat(engine: Engine, id: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // The lock's `since` label is the first beat: a short deploy
            // writes no heartbeat at all, and races no engine call with it.
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            let beat = Utc::now().to_rfc3339();
            if let Err(err) = engine
                .write_files(
                    &id,
                    HEARTBEAT_DIR,
                    &[(HEARTBEAT_FILE, beat.as_bytes(), 0o644)],
                )
                .await
            {
                tracing::warn!("lock heartbeat failed: {err:#}");
            }
        }
    })
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The user running cryptus: $USER, else the name of this process's uid.
pub fn user() -> String {
    if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"))
        && !user.is_empty()
    {
        return user;
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
        });
    let Some(uid) = uid else {
        return "unknown".to_owned();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&uid.as_str())).then(|| fields[0].to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn pid_alive(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Who holds a project's lock, if anyone (for `status`).
pub async fn holder_of(engine: &Engine, project: &str) -> Result<Option<Holder>> {
    Ok(read_holder(engine, &lock_name(project))
        .await
        .context("reading the deploy lock")?
        .map(|(_, holder)| holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(host: &str, pid: u32, seconds_ago: i64, heartbeat_ago: Option<i64>) -> Holder {
        let now = Utc::now();
        Holder {
            operation: "deploy".into(),
            user: "ci".into(),
            host: host.into(),
            pid,
            since: now - chrono::Duration::seconds(seconds_ago),
            heartbeat: heartbeat_ago.map(|s| now - chrono::Duration::seconds(s)),
        }
    }

    #[test]
    fn a_live_holder_is_not_stale() {
        let me = holder(&hostname(), std::process::id(), 600, Some(2));
        assert_eq!(me.stale_because(Utc::now()), None);
        let elsewhere = holder("other-host", 1, 600, Some(3));
        assert_eq!(elsewhere.stale_because(Utc::now()), None);
    }

    #[test]
    fn the_user_has_a_name() {
        let user = user();
        assert!(!user.is_empty() && user != "unknown", "{user}");
    }

    #[test]
    fn a_dead_pid_on_this_host_is_stale() {
        let gone = holder(&hostname(), 4_000_000, 1, Some(1));
        assert!(gone.stale_because(Utc::now()).unwrap().contains("is gone"));
    }

    #[test]
    fn a_silent_holder_elsewhere_is_stale() {
        let silent = holder("other-host", 1, 600, Some(120));
        assert!(
            silent
                .stale_because(Utc::now())
                .unwrap()
                .contains("no heartbeat")
        );
        let never = holder("other-host", 1, 60, None);
        assert!(never.stale_because(Utc::now()).is_some());
    }
}
