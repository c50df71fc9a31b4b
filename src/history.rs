//! The deployment history, kept with the engine: a JSON file in the
//! `nginx-state` volume, next to the upstream it describes, so every machine
//! that talks to the engine sees the same history.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::nginx::Nginx;
use crate::output::Printer;
use crate::stack::{Color, Release};

pub use crate::nginx::HISTORY_FILE;
/// How many entries are kept.
pub const KEEP: usize = 200;

/// The operations that write an entry, as the entry names them.
pub mod operation {
    pub const DEPLOY: &str = "deploy";
    pub const ROLLBACK: &str = "rollback";
    pub const SCALE: &str = "scale";
    /// A start that brought back the recorded color and release.
    pub const REPAIR: &str = "repair";
    /// Maintenance mode switched on or off (the reason says which).
    pub const MAINTENANCE: &str = "maintenance";
    pub const ALL: [&str; 5] = [DEPLOY, ROLLBACK, SCALE, REPAIR, MAINTENANCE];
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Entry {
    pub time: DateTime<Utc>,
    /// deploy, rollback, scale, ...
    pub operation: String,
    pub user: String,
    pub host: String,
    pub from: Side,
    pub to: Side,
    pub outcome: Outcome,
    /// Why it did not deploy, for rolled-back and failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds per step, and `total`.
    pub durations: std::collections::BTreeMap<String, f64>,
    /// The deploy hooks that ran, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRun>,
}

/// How one deploy hook ran: its name, its exit code (none when it was
/// stopped: its deadline, a signal, or it never started), its seconds and,
/// when it failed, its last lines.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HookRun {
    pub hook: String,
    pub ok: bool,
    pub exit_code: Option<i64>,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
}

/// How a deploy or rollback ended.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Traffic moved to the new color and stayed.
    Ok,
    /// It failed before the switch; traffic never moved.
    Failed,
    /// The new color failed after the switch; traffic went back by itself.
    RolledBack,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Failed, Outcome::RolledBack];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
        }
    }

    /// An outcome as written in an entry; the error lists them all.
    pub fn parse(text: &str) -> Result<Outcome, String> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text.trim())
            .ok_or_else(|| {
                let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                format!(
                    "{text:?} is not an outcome; the outcomes are: {}",
                    all.join(", ")
                )
            })
    }
}

/// An operation as written in an entry; the error lists them all.
pub fn parse_operation(text: &str) -> Result<String, String> {
    operation::ALL
        .into_iter()
        .find(|known| *known == text.trim())
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "{text:?} is not an operation; the operations are: {}",
                operation::ALL.join(", ")
            )
        })
}

/// Which entries `cryptus history` shows. Each part left empty lets every
/// entry through.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries with one of these outcomes.
    pub outcomes: Vec<Outcome>,
    /// Only entries of one of these operations.
    pub operations: Vec<String>,
    /// Only the newest this many of those that match.
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, entry: &Entry) -> bool {
        self.since.is_none_or(|since| entry.time >= since)
            && (self.outcomes.is_empty() || self.outcomes.contains(&entry.outcome))
            && (self.operations.is_empty() || self.operations.contains(&entry.operation))
    }

    /// The entries that match, oldest first, as the history keeps them; a
    /// limit keeps the newest.
    pub fn select<'a>(&self, entries: &'a [Entry]) -> Vec<&'a Entry> {
        let mut selected: Vec<&Entry> = entries.iter().filter(|e| self.matches(e)).collect();
        if let Some(limit) = self.limit {
            let excess = selected.len().saturating_sub(limit);
            selected.drain(..excess);
        }
        selected
    }
}

/// Entries as a table, one row each in the order given: when, what, how it
/// ended, from which color and version to which, how long, who, and why
/// it did not deploy.
pub fn table(entries: &[&Entry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.operation.clone(),
                e.outcome.as_str().to_owned(),
                format!(
                    "{} {} -> {} {}",
                    e.from.color, e.from.version, e.to.color, e.to.version
                ),
                e.durations
                    .get("total")
                    .map(|t| format!("{t:.2}s"))
                    .unwrap_or_default(),
                format!("{}@{}", e.user, e.host),
                // One line per entry, whatever the reason holds.
                e.reason
                    .as_deref()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "TIME (UTC)",
            "OPERATION",
            "OUTCOME",
            "FROM -> TO",
            "TOOK",
            "BY",
            "REASON",
        ],
        &rows,
    )
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Side {
    pub color: Color,
    pub image: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default)]
    pub replicas: u32,
}

impl Side {
    pub fn release(&self) -> Release {
        Release {
            image: self.image.clone(),
            version: self.version.clone(),
        }
    }
}

/// Parses the history file; an unreadable file is reported, not trusted.
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    serde_json::from_str(text).context("the deployment history is not valid JSON")
}

/// Appends an entry, keeping the newest [`KEEP`].
pub fn append(mut entries: Vec<Entry>, entry: Entry) -> Vec<Entry> {
    entries.push(entry);
    let excess = entries.len().saturating_sub(KEEP);
    entries.drain(..excess);
    entries
}

/// The release that last ran on `color`, as the history recorded it: what a
/// rollback brings back when the color's containers were removed.
pub fn last_release(entries: &[Entry], color: Color) -> Option<Release> {
    entries.iter().rev().find_map(|entry| {
        if entry.to.color == color && entry.outcome == Outcome::Ok {
            Some(entry.to.release())
        } else if entry.from.color == color {
            Some(entry.from.release())
        } else {
            None
        }
    })
}

pub async fn read(nginx: &Nginx<'_>) -> Result<Vec<Entry>> {
    match nginx.read(HISTORY_FILE).await? {
        Some(text) if !text.trim().is_empty() => parse(&text),
        _ => Ok(Vec::new()),
    }
}

/// Records an entry: read, append, write under a temporary name and rename.
/// Returns the history as kept now. A history that is not valid JSON is
/// never overwritten in silence: it is kept beside, under
/// [`corrupt_name`], with a warning, and a new history starts; if it cannot
/// be kept, nothing is written.
pub async fn record(nginx: &Nginx<'_>, entry: Entry, printer: &Printer) -> Result<Vec<Entry>> {
    let path = format!("{}/{HISTORY_FILE}", crate::nginx::STATE_DIR);
    let bytes = nginx.engine.read_file(&nginx.container, &path).await?;
    let text = bytes
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let entries = if text.trim().is_empty() {
        Vec::new()
    } else {
        match parse(&text) {
            Ok(entries) => entries,
            Err(err) => {
                // Kept byte for byte: it is evidence, not something to repair.
                let kept = corrupt_name(Utc::now());
                let original = bytes.as_deref().unwrap_or_default();
                nginx
                    .engine
                    .write_files(
                        &nginx.container,
                        crate::nginx::STATE_DIR,
                        &[(kept.as_str(), original, 0o644)],
                    )
                    .await
                    .with_context(|| {
                        format!("{err:#}; keeping it as {kept} failed, so it was left as it is")
                    })?;
                printer.warn(format!(
                    "{err:#}: kept it as {kept} in the nginx-state volume and started a new history"
                ));
                Vec::new()
            }
        }
    };
    let entries = append(entries, entry);
    let text = serde_json::to_string_pretty(&entries).context("encoding the history")?;
    write(nginx, HISTORY_FILE, &text).await?;
    Ok(entries)
}

/// The name a corrupt history is kept under.
pub fn corrupt_name(now: DateTime<Utc>) -> String {
    format!(
        "{HISTORY_FILE}.corrupt-{}",
        now.format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// Writes a file of the state volume: renamed into place while nginx runs;
/// through the engine's archive upload when nginx is down (killed during a
/// deploy), so that the failure is still recorded.
async fn write(nginx: &Nginx<'_>, name: &str, text: &str) -> Result<()> {
    match nginx.write(&[(name, text)], true).await {
        Ok(()) => Ok(()),
        Err(running) => nginx.write(&[(name, text)], false).await.with_context(|| {
            format!("writing {name} while nginx runs failed ({running:#}), and without it too")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from: Color, to: Color, version: &str, outcome: Outcome) -> Entry {
        entry_from(from, "old", to, version, outcome)
    }

    fn entry_from(
        from: Color,
        from_version: &str,
        to: Color,
        version: &str,
        outcome: Outcome,
    ) -> Entry {
        Entry {
            time: Utc::now(),
            operation: "deploy".into(),
            user: "u".into(),
            host: "h".into(),
            from: Side {
                color: from,
                image: format!("app:{from_version}"),
                version: from_version.into(),
                image_id: None,
                replicas: 1,
            },
            to: Side {
                color: to,
                image: format!("app:{version}"),
                version: version.into(),
                image_id: None,
                replicas: 1,
            },
            outcome,
            reason: None,
            durations: Default::default(),
            hooks: Vec::new(),
        }
    }

    #[test]
    fn the_newest_entries_are_kept() {
        let mut entries = Vec::new();
        for i in 0..KEEP + 5 {
            entries = append(
                entries,
                entry(Color::Blue, Color::Green, &i.to_string(), Outcome::Ok),
            );
        }
        assert_eq!(entries.len(), KEEP);
        assert_eq!(entries.last().unwrap().to.version, (KEEP + 4).to_string());
        assert_eq!(entries.first().unwrap().to.version, "5");
    }

    #[test]
    fn the_last_release_of_a_color() {
        let entries = vec![
            entry_from(Color::Blue, "v1", Color::Green, "v2", Outcome::Ok),
            entry_from(Color::Green, "v2", Color::Blue, "v3", Outcome::Failed),
        ];
        // The failed v3 never stayed on blue: blue last ran v1.
        assert_eq!(last_release(&entries, Color::Blue).unwrap().version, "v1");
        assert_eq!(last_release(&entries, Color::Green).unwrap().version, "v2");
        let entries = vec![entry(Color::Blue, Color::Green, "v2", Outcome::Ok)];
        assert_eq!(last_release(&entries, Color::Green).unwrap().version, "v2");
        assert!(last_release(&[], Color::Blue).is_none());
    }

    #[test]
    fn entries_round_trip() {
        let entries = vec![entry(Color::Blue, Color::Green, "v2", Outcome::Ok)];
        let text = serde_json::to_string(&entries).unwrap();
        assert_eq!(parse(&text).unwrap(), entries);
        assert!(parse("{broken").is_err());
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// deploy ok, deploy failed, rollback ok, scale ok, deploy rolled back:
    /// one an hour from 10:00.
    fn kept() -> Vec<Entry> {
        let kinds = [
            (operation::DEPLOY, Outcome::Ok),
            (operation::DEPLOY, Outcome::Failed),
            (operation::ROLLBACK, Outcome::Ok),
            (operation::SCALE, Outcome::Ok),
            (operation::DEPLOY, Outcome::RolledBack),
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(n, (op, outcome))| {
                let mut e = entry(Color::Blue, Color::Green, &format!("v{n}"), outcome);
                e.operation = op.into();
                e.time = at(&format!("2026-01-02T1{n}:00:00Z"));
                e
            })
            .collect()
    }

    fn versions(selected: &[&Entry]) -> Vec<String> {
        selected.iter().map(|e| e.to.version.clone()).collect()
    }

    #[test]
    fn no_filter_selects_everything_oldest_first() {
        let entries = kept();
        assert_eq!(
            versions(&Filter::default().select(&entries)),
            ["v0", "v1", "v2", "v3", "v4"]
        );
        assert!(Filter::default().select(&[]).is_empty());
    }

    #[test]
    fn each_filter_narrows_and_they_combine() {
        let entries = kept();
        let since = Filter {
            since: Some(at("2026-01-02T12:00:00Z")),
            ..Filter::default()
        };
        // At the very time counts.
        assert_eq!(versions(&since.select(&entries)), ["v2", "v3", "v4"]);
        let deploys = Filter {
            operations: vec![operation::DEPLOY.into()],
            ..Filter::default()
        };
        assert_eq!(versions(&deploys.select(&entries)), ["v0", "v1", "v4"]);
        let bad = Filter {
            outcomes: vec![Outcome::Failed, Outcome::RolledBack],
            ..Filter::default()
        };
        assert_eq!(versions(&bad.select(&entries)), ["v1", "v4"]);
        let both = Filter {
            operations: vec![operation::DEPLOY.into()],
            ..since.clone()
        };
        assert_eq!(versions(&both.select(&entries)), ["v4"]);
        let rollbacks = Filter {
            operations: vec![operation::ROLLBACK.into()],
            outcomes: vec![Outcome::Failed],
            ..Filter::default()
        };
        assert!(rollbacks.select(&entries).is_empty());
    }

    #[test]
    fn a_limit_keeps_the_newest_of_those_that_match() {
        let entries = kept();
        let limit = |n| Filter {
            limit: Some(n),
            ..Filter::default()
        };
        assert_eq!(versions(&limit(2).select(&entries)), ["v3", "v4"]);
        assert_eq!(versions(&limit(99).select(&entries)).len(), 5);
        let deploys = Filter {
            operations: vec![operation::DEPLOY.into()],
            limit: Some(2),
            ..Filter::default()
        };
        assert_eq!(versions(&deploys.select(&entries)), ["v1", "v4"]);
    }

    #[test]
    fn outcomes_and_operations_are_parsed_or_listed() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Ok(outcome));
        }
        let err = Outcome::parse("success").unwrap_err();
        assert!(err.contains("ok, failed, rolled-back"), "{err}");
        assert_eq!(parse_operation("rollback").unwrap(), "rollback");
        let err = parse_operation("deploys").unwrap_err();
        assert!(
            err.contains("deploy, rollback, scale, repair, maintenance"),
            "{err}"
        );
    }

    #[test]
    fn the_table_shows_both_sides_the_time_taken_and_the_reason_on_one_line() {
        let mut entries = kept();
        entries[1].reason = Some("green not healthy after 60s:\n  last answer 503".into());
        entries[1].durations.insert("total".into(), 61.234);
        let table = table(&[&entries[1], &entries[2]]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("TIME (UTC) "), "{table}");
        assert!(
            lines[0].contains("OPERATION  OUTCOME  FROM -> TO"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("2026-01-02 11:00:00  deploy"),
            "{table}"
        );
        assert!(lines[1].contains("failed"), "{table}");
        assert!(lines[1].contains("blue old -> green v1"), "{table}");
        assert!(lines[1].contains("61.23s"), "{table}");
        assert!(lines[1].contains("u@h"), "{table}");
        assert!(
            lines[1].ends_with("green not healthy after 60s: last answer 503"),
            "{table}"
        );
        assert!(lines[2].ends_with("u@h"), "{table}");
    }

    #[test]
    fn a_corrupt_history_is_kept_under_a_name_of_its_own() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T18:30:05.250Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            corrupt_name(at),
            "history.json.corrupt-20261129T183005.250Z"
        );
    }
}
