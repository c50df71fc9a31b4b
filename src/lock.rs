//! The deploy lock, held by the engine so that an operator and a CI runner on
//! different machines exclude each other.
//!
//! Taking the lock is creating a container with the lock's name: the engine
//! refuses a second container of the same name, atomically. The container is
//! never started; its labels record the holder, host, pid and start time, and
//! the holder rewrites a heartbeat file in it every few seconds. A lock whose
//! holder is gone is stale and is broken: a dead pid in the very same process
//! space (same host, same boot, same PID namespace: see [`Identity`]), or a
//! heartbeat older than [`STALE_AFTER`]. Where the pid cannot be checked
//! (another host, boot or PID namespace, or a lock taken by an older cryptus
//! that did not record them) only the heartbeat decides: a CI runner in a
//! container with `--network host` shares the hostname, not the pids.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::engine::{ContainerSpec, Engine, PROJECT_LABEL};
use crate::error::failed_with_hint;
use crate::output::Printer;
use crate::wait::{self, Limits, Seen};

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// How often a held lock is tried again while waiting for it.
const RETRY_EVERY: Duration = Duration::from_millis(500);
const HEARTBEAT_DIR: &str = "/";
const HEARTBEAT_FILE: &str = "cryptus-heartbeat";
pub const LOCK_LABEL: &str = "cryptus.lock";
/// Where a lock that cannot hold a file (a Swarm config) keeps its heartbeat.
pub const HEARTBEAT_LABEL: &str = "cryptus.lock.heartbeat";

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
    /// The kernel boot the holder ran in (`None`: not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The PID namespace its pid means something in (`None`: not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
}

/// The process space a pid belongs to: a pid says whether a process is alive
/// only to a reader in the same one. Host names repeat across containers
/// (`--network host`), so the boot and the PID namespace are compared too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    pub boot_id: Option<String>,
    pub pid_namespace: Option<String>,
}

impl Identity {
    /// This process's identity.
    pub fn here() -> Identity {
        Identity {
            host: hostname(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty()),
            // `pid:[4026531836]`: the namespace's inode, as the kernel names it.
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|link| link.to_string_lossy().into_owned())
                .filter(|ns| !ns.is_empty()),
        }
    }

    /// Whether a pid recorded by `holder` can be looked up here: same host,
    /// same boot and same PID namespace, each of them known on both sides.
    fn shares_pids_with(&self, holder: &Holder) -> bool {
        let same = |mine: &Option<String>, theirs: &Option<String>| matches!((mine, theirs), (Some(a), Some(b)) if a == b);
        self.host == holder.host
            && same(&self.boot_id, &holder.boot_id)
            && same(&self.pid_namespace, &holder.pid_namespace)
    }
}

impl Holder {
    pub fn describe(&self) -> String {
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

    /// Why the holder is gone, if it is, judged from `here`. `alive` looks a
    /// pid up; it is asked only when the pid means the same process here.
    fn stale_because(
        &self,
        now: DateTime<Utc>,
        here: &Identity,
        alive: impl Fn(u32) -> bool,
    ) -> Option<String> {
        if here.shares_pids_with(self) && !alive(self.pid) {
            return Some(format!("its process {} on this host is gone", self.pid));
        }
        let last = self.heartbeat.unwrap_or(self.since);
        let silent = (now - last).to_std().unwrap_or_default();
        (silent > STALE_AFTER).then(|| format!("no heartbeat for {}s", silent.as_secs()))
    }

    /// The holder a lock's labels name (see [`holder_labels`]).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Holder {
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
            heartbeat: DateTime::parse_from_rfc3339(&get("heartbeat"))
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            boot_id: Some(get("boot-id")).filter(|id| !id.is_empty()),
            pid_namespace: Some(get("pid-namespace")).filter(|ns| !ns.is_empty()),
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
        let here = Identity::here();
        let limits = Limits::within(options.wait, RETRY_EVERY);
        // Atomics, not cells: the acquiring future stays Send.
        let looked = AtomicBool::new(false);
        let waiting_said = AtomicBool::new(false);
        let id = wait::until(
            limits,
            || async {
                // A signal ends the wait between tries, never during one:
                // the lock is either taken or not, never left half-made.
                if looked.swap(true, Ordering::Relaxed) {
                    crate::interrupt::check()?;
                }
                let spec = lock_spec(project, operation, image, &here);
                let seen = try_take(engine, &spec, options.force_unlock, &here, printer).await?;
                if let Seen::Not(holder) = &seen
                    && !limits.expired()
                    && !waiting_said.swap(true, Ordering::Relaxed)
                {
                    printer.info(format!("waiting for the deploy lock, held by {holder}"));
                }
                Ok(seen)
            },
            |holder| {
                failed_with_hint(
                    format!("the deploy lock of project {project} is held: {holder}"),
                    "wait for it with --lock-wait 5m; if its holder is gone, --force-unlock breaks it",
                )
            },
        )
        .await?;
        Ok(Lock {
            engine: engine.clone(),
            heartbeat: spawn_heartbeat(engine.clone(), id.clone()),
            id,
        })
    }

    pub async fn release(self) -> Result<()> {
        self.heartbeat.abort();
        self.engine.remove(&self.id, true).await
    }
}

/// The lock container: labelled with its holder, never started, on no network.
fn lock_spec(project: &str, operation: &str, image: &str, here: &Identity) -> ContainerSpec {
    let mut labels = holder_labels(operation, here);
    labels.insert(PROJECT_LABEL.to_owned(), project.to_owned());
    ContainerSpec {
        name: lock_name(project),
        image: image.to_owned(),
        labels,
        command: Some(vec!["cryptus-lock".to_owned()]),
        ..Default::default()
    }
}

/// The labels that name a lock's holder: this process, for `operation`,
/// with what tells whether it still lives ([`Holder::from_labels`] reads
/// them back), on one engine and on a swarm alike.
pub fn holder_labels(operation: &str, here: &Identity) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LOCK_LABEL.to_owned(), "deploy".to_owned()),
        (format!("{LOCK_LABEL}.operation"), operation.to_owned()),
        (format!("{LOCK_LABEL}.user"), user()),
        (format!("{LOCK_LABEL}.host"), here.host.clone()),
        (format!("{LOCK_LABEL}.pid"), std::process::id().to_string()),
        (format!("{LOCK_LABEL}.since"), Utc::now().to_rfc3339()),
    ]);
    for (key, value) in [
        ("boot-id", &here.boot_id),
        ("pid-namespace", &here.pid_namespace),
    ] {
        if let Some(value) = value {
            labels.insert(format!("{LOCK_LABEL}.{key}"), value.clone());
        }
    }
    labels
}

/// One try at the lock: its container's id when taken, else who holds it.
/// A lock released meanwhile, stale, or broken by `force_unlock` is tried
/// again at once.
async fn try_take(
    engine: &Engine,
    spec: &ContainerSpec,
    force_unlock: bool,
    here: &Identity,
    printer: &Printer,
) -> Result<Seen<String>> {
    loop {
        if let Some(id) = engine.create_container_exclusive(spec).await? {
            return Ok(Seen::Ready(id));
        }
        let Some((id, holder)) = read_holder(engine, &spec.name).await? else {
            // Released between our attempt and the read: try again.
            continue;
        };
        let Some(warning) = why_break(&holder, force_unlock, here) else {
            return Ok(Seen::Not(holder.describe()));
        };
        printer.warn(warning);
        // By id: if another cryptus broke it first and took a new lock, that
        // new lock is not removed.
        engine.remove(&id, true).await?;
    }
}

/// Why a held lock is broken, as the warning that says so; `None` while its
/// holder is alive and no `--force-unlock` asks.
pub fn why_break(holder: &Holder, force_unlock: bool, here: &Identity) -> Option<String> {
    if force_unlock {
        return Some(format!(
            "breaking the lock held by {} (--force-unlock)",
            holder.describe()
        ));
    }
    let why = holder.stale_because(Utc::now(), here, pid_alive)?;
    Some(format!(
        "breaking a stale lock held by {}: {why}",
        holder.describe()
    ))
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
                .write_files_at_once(
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

    fn space(host: &str, boot: Option<&str>, ns: Option<&str>) -> Identity {
        Identity {
            host: host.into(),
            boot_id: boot.map(Into::into),
            pid_namespace: ns.map(Into::into),
        }
    }

    fn holder(at: &Identity, pid: u32, seconds_ago: i64, heartbeat_ago: Option<i64>) -> Holder {
        let now = Utc::now();
        Holder {
            operation: "deploy".into(),
            user: "ci".into(),
            host: at.host.clone(),
            pid,
            since: now - chrono::Duration::seconds(seconds_ago),
            heartbeat: heartbeat_ago.map(|s| now - chrono::Duration::seconds(s)),
            boot_id: at.boot_id.clone(),
            pid_namespace: at.pid_namespace.clone(),
        }
    }

    /// Every pid is dead, as seen from wherever the check runs.
    fn dead(_: u32) -> bool {
        false
    }

    const HOST: Option<&str> = Some("pid:[4026531836]");
    const BOOT: Option<&str> = Some("c5f4ab52");

    #[test]
    fn a_live_holder_is_not_stale() {
        let here = Identity::here();
        let me = holder(&here, std::process::id(), 600, Some(2));
        assert_eq!(me.stale_because(Utc::now(), &here, pid_alive), None);
        let elsewhere = holder(&space("other-host", BOOT, HOST), 1, 600, Some(3));
        assert_eq!(elsewhere.stale_because(Utc::now(), &here, dead), None);
    }

    #[test]
    fn this_process_has_an_identity() {
        let here = Identity::here();
        assert!(here.boot_id.is_some(), "{here:?}");
        assert!(
            here.pid_namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with("pid:["))
        );
    }

    #[test]
    fn the_user_has_a_name() {
        let user = user();
        assert!(!user.is_empty() && user != "unknown", "{user}");
    }

    #[test]
    fn a_dead_pid_in_the_same_process_space_is_stale() {
        let here = space("vm", BOOT, HOST);
        let gone = holder(&here, 4_000_000, 1, Some(1));
        let why = gone.stale_because(Utc::now(), &here, dead).unwrap();
        assert!(why.contains("is gone"), "{why}");
        let real = Identity::here();
        let gone = holder(&real, 4_000_000, 1, Some(1));
        assert!(gone.stale_because(Utc::now(), &real, pid_alive).is_some());
    }

    /// Issue 12, fault 3: the same hostname is not the same process space.
    #[test]
    fn a_pid_from_another_process_space_is_never_judged() {
        let here = space("vm", BOOT, HOST);
        for (what, there) in [
            (
                "another PID namespace",
                space("vm", BOOT, Some("pid:[4026532179]")),
            ),
            ("another boot", space("vm", Some("0d3a"), HOST)),
            ("another host", space("ci-7", BOOT, HOST)),
            ("an older cryptus: no namespace", space("vm", BOOT, None)),
            ("an older cryptus: no boot id", space("vm", None, HOST)),
        ] {
            let live = holder(&there, 4_000_000, 600, Some(4));
            assert_eq!(
                live.stale_because(Utc::now(), &here, dead),
                None,
                "a holder in {what} with a recent heartbeat is alive"
            );
        }
        // Nor is an unknown side here trusted.
        let unknown_here = space("vm", BOOT, None);
        let live = holder(&space("vm", BOOT, None), 4_000_000, 600, Some(4));
        assert_eq!(live.stale_because(Utc::now(), &unknown_here, dead), None);
    }

    #[test]
    fn a_silent_holder_anywhere_is_stale() {
        let here = space("vm", BOOT, HOST);
        for there in [
            space("other-host", BOOT, HOST),
            space("vm", BOOT, Some("pid:[4026532179]")),
        ] {
            let silent = holder(&there, 1, 600, Some(120));
            let why = silent.stale_because(Utc::now(), &here, |_| true).unwrap();
            assert!(why.contains("no heartbeat"), "{why}");
            let never = holder(&there, 1, 60, None);
            assert!(never.stale_because(Utc::now(), &here, |_| true).is_some());
        }
    }

    /// What a Swarm's lock config carries: the holder, and a heartbeat
    /// label that ages as the one-engine lock's file does.
    #[test]
    fn a_holder_and_its_heartbeat_survive_the_labels() {
        let here = Identity::here();
        let mut labels = holder_labels("deploy", &here);
        let holder = Holder::from_labels(&labels);
        assert_eq!(
            (holder.operation.as_str(), holder.pid, holder.heartbeat),
            ("deploy", std::process::id(), None)
        );
        assert!(here.shares_pids_with(&holder));
        assert_eq!(holder.stale_because(Utc::now(), &here, pid_alive), None);
        let beat = Utc::now() - chrono::Duration::seconds(120);
        labels.insert(HEARTBEAT_LABEL.to_owned(), beat.to_rfc3339());
        labels.insert(format!("{LOCK_LABEL}.since"), beat.to_rfc3339());
        labels.insert(format!("{LOCK_LABEL}.host"), "elsewhere".to_owned());
        let silent = Holder::from_labels(&labels);
        assert_eq!(
            silent.heartbeat.map(|t| t.timestamp()),
            Some(beat.timestamp())
        );
        let why = silent.stale_because(Utc::now(), &here, |_| true).unwrap();
        assert!(why.contains("no heartbeat for 12"), "{why}");
        labels.insert(HEARTBEAT_LABEL.to_owned(), Utc::now().to_rfc3339());
        let beating = Holder::from_labels(&labels);
        assert_eq!(beating.stale_because(Utc::now(), &here, |_| true), None);
    }

    #[test]
    fn the_identity_survives_the_labels() {
        let here = Identity::here();
        let labels: BTreeMap<String, String> = [
            ("host", here.host.clone()),
            ("pid", "42".to_owned()),
            ("boot-id", here.boot_id.clone().unwrap_or_default()),
            (
                "pid-namespace",
                here.pid_namespace.clone().unwrap_or_default(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{LOCK_LABEL}.{k}"), v))
        .collect();
        let holder = Holder::from_labels(&labels);
        assert!(here.shares_pids_with(&holder));
        let mut older = labels.clone();
        older.remove(&format!("{LOCK_LABEL}.pid-namespace"));
        assert!(!here.shares_pids_with(&Holder::from_labels(&older)));
    }
}
