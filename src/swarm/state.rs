//! What the cluster holds for a project on a Swarm: the active color, each
//! color's release and the recent history (configs
//! `<project>_cryptus-state-<n>`), and the deploy lock (config
//! `<project>_cryptus-lock`). A config's name is unique in the swarm's
//! replicated store, and a config never changes: creating the next number,
//! or the lock, fails with 409 when another cryptus got there first, on
//! whichever manager it talks to. That is the test-and-set two operators
//! on two machines agree by.
//!
//! These configs carry `cryptus.project`, not the stack's label: `stop`
//! (and `docker stack rm`) leave them, so a restarted stack serves the
//! recorded color.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{Engine, SwarmConfig};
use crate::error::failed_with_hint;
use crate::history::Entry;
use crate::lock::{self, Options};
use crate::output::Printer;
use crate::stack::{Color, Release};

/// The label naming the project on the configs cryptus keeps.
pub const PROJECT_LABEL: &str = "cryptus.project";

/// The cluster state's file in a backup's state archive.
pub const BACKUP_FILE: &str = "cluster-state.json";

/// How many history entries the cluster keeps (a config holds at most
/// 500 KB; an entry is about 600 bytes).
pub const KEPT_ENTRIES: usize = 100;

/// How often a held lock is looked at while waiting for it.
const LOCK_POLL: Duration = Duration::from_millis(500);

/// The project's state on the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The color the edge serves; `None` before the first record.
    pub active: Option<Color>,
    /// What each color last ran.
    #[serde(default)]
    pub releases: BTreeMap<Color, Release>,
    /// How many tasks each color ran when it last served.
    #[serde(default)]
    pub replicas: BTreeMap<Color, u32>,
    /// Task counts `scale` recorded for the idle color: the next switch
    /// into it starts that many, then the count is cleared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<Color, u32>,
    /// A canary a deploy holds on the edges (the new color and its share),
    /// while it runs; one left here by a killed deploy is live still.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<LiveCanary>,
    /// The newest [`KEPT_ENTRIES`] switches, oldest first.
    #[serde(default)]
    pub history: Vec<Entry>,
    /// The number of the config it was read from (0: none yet).
    #[serde(skip)]
    pub number: u64,
}

/// A canary the edges hold: its color and share, and the release it runs
/// (which `rollback` names when it ends one a killed deploy left).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveCanary {
    #[serde(flatten)]
    pub canary: crate::nginx::Canary,
    pub release: Release,
}

impl ClusterState {
    /// Appends an entry, keeping the newest [`KEPT_ENTRIES`].
    pub fn push(&mut self, entry: Entry) {
        self.history.push(entry);
        let extra = self.history.len().saturating_sub(KEPT_ENTRIES);
        self.history.drain(..extra);
    }
}

/// `<project>_cryptus-state-`: the prefix of the state's configs.
fn state_prefix(project: &str) -> String {
    format!("{project}_cryptus-state-")
}

/// The config holding state number `number`, zero-padded so names sort.
pub fn state_name(project: &str, number: u64) -> String {
    format!("{}{number:010}", state_prefix(project))
}

/// The number of a state config's name, when it is one of the project's.
pub fn state_number(project: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(&state_prefix(project))?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The newest of the project's state configs.
fn newest<'c>(project: &str, configs: &'c [SwarmConfig]) -> Option<(u64, &'c SwarmConfig)> {
    configs
        .iter()
        .filter_map(|c| Some((state_number(project, &c.name)?, c)))
        .max_by_key(|(number, _)| *number)
}

fn labels(project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(PROJECT_LABEL.to_owned(), project.to_owned())])
}

async fn state_configs(engine: &Engine, project: &str) -> Result<Vec<SwarmConfig>> {
    engine
        .configs_by(
            "name",
            &state_prefix(project),
            &format!("reading the state of project {project} from the swarm"),
        )
        .await
}

/// The project's newest state; the default (nothing recorded) when there
/// is none. A state that is not valid JSON is an error, never replaced
/// silently.
pub async fn read(engine: &Engine, project: &str) -> Result<ClusterState> {
    let configs = state_configs(engine, project).await?;
    let Some((number, config)) = newest(project, &configs) else {
        return Ok(ClusterState::default());
    };
    let mut state: ClusterState = serde_json::from_slice(&config.data).map_err(|err| {
        failed_with_hint(
            format!("the state config {} is not valid: {err}", config.name),
            format!(
                "inspect it with `docker config inspect --pretty {}`; removing it falls back to the one before",
                config.name
            ),
        )
    })?;
    state.number = number;
    Ok(state)
}

/// Records `state` as the next number after the one it was read from, then
/// removes the older ones. Another cryptus that wrote meanwhile (the
/// number is taken) makes this fail: the caller read a stale state.
pub async fn write(engine: &Engine, project: &str, state: &mut ClusterState) -> Result<()> {
    let next = state.number + 1;
    let name = state_name(project, next);
    let data = serde_json::to_vec(state).context("encoding the cluster state")?;
    if engine
        .create_config_exclusive(&name, &data, labels(project))
        .await?
        .is_none()
    {
        return Err(failed_with_hint(
            format!("the state of project {project} changed meanwhile: {name} exists"),
            "another cryptus recorded a switch; `cryptus status` shows it, then run again",
        ));
    }
    state.number = next;
    for config in state_configs(engine, project).await? {
        if state_number(project, &config.name).is_some_and(|n| n < next) {
            engine.remove_config(&config.name).await?;
        }
    }
    Ok(())
}

/// Appends `entry` to the state, records it as the next number, announces
/// it (`CRYPTUS_NOTIFY_URL`) and writes cryptus's metrics for node-exporter
/// where it runs; the warnings of what failed: the operation itself is done
/// either way.
pub async fn record(
    engine: &Engine,
    project: &str,
    state: &mut ClusterState,
    entry: Entry,
    notify: &[crate::notify::Target],
) -> Vec<String> {
    let operation = entry.operation.clone();
    let payload = crate::notify::Payload::of(project, &entry);
    state.push(entry);
    let (written, mut warnings) = tokio::join!(
        write(engine, project, state),
        crate::notify::send(notify, &payload)
    );
    match written {
        // What the metrics say is what the cluster records.
        Ok(()) => {
            if let Err(err) = super::metrics::publish(engine, project, state).await {
                warnings.push(format!("{err:#}"));
            }
        }
        Err(err) => warnings.push(format!("recording the {operation} on the swarm: {err:#}")),
    }
    warnings
}

/// The deploy lock of a project on a swarm: a config only one cryptus can
/// create; removed when released. Its labels name the holder as the
/// one-engine lock's do ([`lock::holder_labels`]), and the holder rewrites
/// a heartbeat label (the only part of a config the swarm lets change)
/// every [`lock::HEARTBEAT_EVERY`]: a lock whose holder is gone is broken
/// by the next run, by the same rule as on one engine ([`lock::why_break`]).
pub struct ClusterLock<'e> {
    engine: &'e Engine,
    /// The lock config's id, not its name (see [`ClusterLock::release`]).
    id: String,
    heartbeat: JoinHandle<()>,
}

impl Drop for ClusterLock<'_> {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

pub fn lock_name(project: &str) -> String {
    format!("{project}_cryptus-lock")
}

impl<'e> ClusterLock<'e> {
    /// Takes the lock for `operation`, waiting up to `options.wait` for a
    /// live holder; a stale one (its process gone on this host, or silent
    /// for [`lock::STALE_AFTER`]) or, with `--force-unlock`, any holder is
    /// broken first.
    pub async fn acquire(
        engine: &'e Engine,
        project: &str,
        operation: &str,
        options: &Options,
        printer: &Printer,
    ) -> Result<ClusterLock<'e>> {
        let name = lock_name(project);
        let here = lock::Identity::here();
        let deadline = Instant::now() + options.wait;
        loop {
            // Made for each try: a lock taken after a wait starts now, or
            // its `since` would make it look silent to the next run.
            let mut labels = labels(project);
            labels.extend(lock::holder_labels(operation, &here));
            if let Some(id) = engine
                .create_config_exclusive(&name, operation.as_bytes(), labels.clone())
                .await?
            {
                let heartbeat = spawn_heartbeat(engine.clone(), id.clone(), labels);
                return Ok(ClusterLock {
                    engine,
                    id,
                    heartbeat,
                });
            }
            let configs = engine
                .configs_by("name", &name, "reading the deploy lock")
                .await?;
            // None: released between our attempt and the read; the next
            // try, after the pause, takes it.
            let holder = configs
                .into_iter()
                .find(|c| c.name == name)
                .map(|held| (held.id, lock::Holder::from_labels(&held.labels)));
            if let Some((id, holder)) = &holder
                && let Some(warning) = lock::why_break(holder, options.force_unlock, &here)
            {
                printer.warn(warning);
                // By id: a lock another run took meanwhile is left alone.
                engine.remove_config(id).await?;
                continue;
            }
            if Instant::now() >= deadline {
                return Err(failed_with_hint(
                    format!(
                        "the deploy lock of project {project} on the swarm is held: {}",
                        holder
                            .map_or_else(|| "released meanwhile".to_owned(), |(_, h)| h.describe())
                    ),
                    format!(
                        "wait for it with --lock-wait 5m; if its holder is gone, --force-unlock removes config {name}"
                    ),
                ));
            }
            crate::interrupt::check()?;
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Removes this run's lock by its id: a lock another run took after a
    /// `--force-unlock` is left alone.
    pub async fn release(self) -> Result<()> {
        self.heartbeat.abort();
        self.engine.remove_config(&self.id).await
    }
}

/// Rewrites the lock's heartbeat label every [`lock::HEARTBEAT_EVERY`]
/// until aborted; the `since` label is the first beat.
fn spawn_heartbeat(
    engine: Engine,
    id: String,
    mut labels: BTreeMap<String, String>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lock::HEARTBEAT_EVERY).await;
            labels.insert(lock::HEARTBEAT_LABEL.to_owned(), Utc::now().to_rfc3339());
            match engine.relabel_config(&id, &labels).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("the deploy lock {id} is gone: broken by another run");
                    return;
                }
                Err(err) => tracing::warn!("lock heartbeat failed: {err:#}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, Side};

    fn config(name: &str, data: &str) -> SwarmConfig {
        SwarmConfig {
            name: name.into(),
            id: name.into(),
            labels: BTreeMap::new(),
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn state_names_sort_and_parse_back() {
        assert_eq!(state_name("shop", 7), "shop_cryptus-state-0000000007");
        assert_eq!(state_number("shop", &state_name("shop", 7)), Some(7));
        assert_eq!(state_number("shop", "shop_cryptus-state-"), None);
        assert_eq!(state_number("shop", "shop_cryptus-state-7x"), None);
        assert_eq!(state_number("sho", &state_name("shop", 7)), None);
        assert_eq!(state_number("shop", "shop2_cryptus-state-0000000001"), None);
        let configs = [
            config(&state_name("shop", 2), "{}"),
            config(&state_name("shop", 10), "{}"),
            config("shop_cryptus-lock", ""),
            config(&state_name("shop-eu", 99), "{}"),
        ];
        let (number, found) = newest("shop", &configs).unwrap();
        assert_eq!(
            (number, found.name.as_str()),
            (10, "shop_cryptus-state-0000000010")
        );
        assert!(newest("none", &configs).is_none());
    }

    #[test]
    fn the_state_keeps_its_newest_entries_and_reads_back() {
        let side = |color| Side {
            color,
            image: "app:1".into(),
            version: "1".into(),
            image_id: None,
            replicas: 3,
        };
        let mut state = ClusterState {
            active: Some(Color::Green),
            ..Default::default()
        };
        state.releases.insert(
            Color::Green,
            Release {
                image: "app:2".into(),
                version: "2".into(),
            },
        );
        for n in 0..KEPT_ENTRIES + 5 {
            state.push(Entry {
                time: Utc::now(),
                operation: format!("deploy{n}"),
                user: "ann".into(),
                host: "build".into(),
                from: side(Color::Blue),
                to: side(Color::Green),
                outcome: Outcome::Ok,
                reason: None,
                durations: BTreeMap::new(),
                hooks: Vec::new(),
            });
        }
        assert_eq!(state.history.len(), KEPT_ENTRIES);
        assert_eq!(state.history[0].operation, "deploy5");
        let text = serde_json::to_string(&state).unwrap();
        let back: ClusterState = serde_json::from_str(&text).unwrap();
        assert_eq!(back.active, Some(Color::Green));
        assert_eq!(back.releases[&Color::Green].version, "2");
        assert!(back.replicas.is_empty());
        assert_eq!(back.history, state.history);
        assert!(text.len() < 500 * 1024, "fits a config");
        // An older cryptus's state with fewer fields still reads.
        let old: ClusterState = serde_json::from_str(r#"{"active":"blue"}"#).unwrap();
        assert_eq!(old.active, Some(Color::Blue));
    }
}
