//! `cryptus history`: the kept deployment history, filtered, as a table or
//! one JSON document. Which entries show is [`crate::history::Filter`]'s.
//! One engine keeps it in nginx's state volume; a Swarm in the cluster's
//! state record (`swarm::state`). Both are filtered and printed alike.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::Engine;
use crate::error::{EXIT_OK, failed_with_hint, usage};
use crate::history::{self, Entry, Filter, Outcome};
use crate::nginx::Nginx;
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;

/// The filter as given on the command line.
pub struct Options {
    pub since: Option<String>,
    pub outcomes: Vec<Outcome>,
    pub operations: Vec<String>,
    pub limit: Option<u32>,
}

impl Options {
    /// The filter, with `--since` resolved against `now`; a bad `--since`
    /// is a usage error.
    fn filter(self, now: DateTime<Utc>) -> Result<Filter> {
        let since = match &self.since {
            Some(text) => {
                let seconds = crate::logs::parse_since(text, now).map_err(|err| {
                    usage(err, "write --since 2h or --since 2026-01-02T15:04:05Z")
                })?;
                DateTime::from_timestamp(seconds, 0)
            }
            None => None,
        };
        Ok(Filter {
            since,
            outcomes: self.outcomes,
            operations: self.operations,
            limit: self.limit.map(|n| n as usize),
        })
    }
}

#[derive(Serialize)]
struct Document<'a> {
    ok: bool,
    project: &'a str,
    /// How many entries the history keeps, before the filter.
    kept: usize,
    /// The entries that match, oldest first.
    entries: Vec<&'a Entry>,
}

pub async fn run(project: &Project, options: Options, printer: &Printer) -> Result<u8> {
    let filter = options.filter(Utc::now())?;
    let entries = match project.orchestrator {
        Orchestrator::Engine => from_engine(project).await?,
        Orchestrator::Swarm => {
            let engine = crate::orchestrator::connect(project.orchestrator).await?;
            crate::swarm::state::read(&engine, &project.name)
                .await?
                .history
        }
    };
    show(project, &entries, &filter, printer)
}

/// The history in the nginx container's state volume.
async fn from_engine(project: &Project) -> Result<Vec<Entry>> {
    let engine = Engine::connect().await?;
    let container = super::state_holder(&engine, project, "the deployment history").await?;
    let lb = container.name.clone();
    let nginx = Nginx::of(&engine, &container);
    history::read(&nginx).await.map_err(|err| {
        if err.chain().any(|cause| cause.is::<serde_json::Error>()) {
            failed_with_hint(
                format!("reading the deployment history in {lb}: {err:#}"),
                "the next deploy keeps the unreadable history aside and starts a new one",
            )
        } else {
            err.context(format!("reading the deployment history in {lb}"))
        }
    })
}

/// The entries `filter` selects, as a table or one JSON document.
fn show(project: &Project, entries: &[Entry], filter: &Filter, printer: &Printer) -> Result<u8> {
    let selected = filter.select(entries);
    if printer.json() {
        printer.out_json(&Document {
            ok: true,
            project: &project.name,
            kept: entries.len(),
            entries: selected,
        })?;
    } else if entries.is_empty() {
        printer.info(format!(
            "no deployment recorded in project {} yet",
            project.name
        ));
    } else if selected.is_empty() {
        printer.info(format!(
            "none of the {} recorded entries matches",
            entries.len()
        ));
    } else {
        printer.out(&history::table(&selected))?;
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(since: &str) -> Options {
        Options {
            since: Some(since.into()),
            outcomes: vec![Outcome::Ok],
            operations: vec!["deploy".into()],
            limit: Some(3),
        }
    }

    #[test]
    fn since_is_a_duration_back_or_a_time() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let filter = options("2h").filter(now).unwrap();
        assert_eq!(
            filter.since.unwrap().to_rfc3339(),
            "2026-01-02T13:00:00+00:00"
        );
        assert_eq!(filter.limit, Some(3));
        assert_eq!(filter.outcomes, [Outcome::Ok]);
        let filter = options("2026-01-02T14:30:00+01:00").filter(now).unwrap();
        assert_eq!(
            filter.since.unwrap().to_rfc3339(),
            "2026-01-02T13:30:00+00:00"
        );
        for bad in ["yesterday", "-2h", "2026-01-03T00:00:00Z", "99999999h"] {
            let err = options(bad).filter(now).unwrap_err();
            assert_eq!(crate::error::classify(&err).0, 2, "{bad}: {err:#}");
        }
    }
}
