//! `cryptus logs [SERVICE...]`: the logs of one service, several, or all,
//! multiplexed with a prefix per container; `--follow` keeps following
//! across a deploy, as new containers of a service start.
//!
//! Under `--json` every line is an object `{"service", "container", "stream",
//! "time", "line"}`: without `--follow` they come in one document
//! `{"ok": true, "lines": [...]}`; with `--follow`, which streams, one
//! object per line of output (JSON Lines).

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use serde::Serialize;

use crate::compose::duration;
use crate::engine::{Container, Engine};
use crate::error::{EXIT_OK, usage};
use crate::output::Printer;
use crate::project::Project;

pub struct Options {
    pub services: Vec<String>,
    pub follow: bool,
    pub tail: Option<usize>,
    pub since: Option<String>,
    pub timestamps: bool,
}

/// The seed's `logs nginx true`: a trailing `true`/`false` is the follow flag.
pub fn seed_form(mut services: Vec<String>, follow: bool) -> (Vec<String>, bool) {
    match services.last().map(String::as_str) {
        Some("true") => {
            services.pop();
            (services, true)
        }
        Some("false") => {
            services.pop();
            (services, follow)
        }
        _ => (services, follow),
    }
}

/// `--since`: a duration back from now (`10m`, at most ten years) or a time
/// (RFC 3339) from 1970 to now, as seconds since the epoch.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<i64, String> {
    if duration::parse(text).is_ok() {
        let back = duration::parse_in(text, &duration::LOOKBACK)
            .map_err(|err| format!("--since {err}"))?;
        let back = chrono::Duration::from_std(back)
            .map_err(|_| format!("--since {text:?} is too long ago"))?;
        return now
            .checked_sub_signed(back)
            .map(|t| t.timestamp().max(0))
            .ok_or_else(|| format!("--since {text:?} is too long ago"));
    }
    let time = DateTime::parse_from_rfc3339(text.trim()).map_err(|_| {
        format!("--since {text:?} is neither a duration (10m) nor a time (2026-01-02T15:04:05Z)")
    })?;
    if time.timestamp() < 0 {
        return Err(format!("--since {text:?} is before 1970"));
    }
    if time > now {
        return Err(format!("--since {text:?} is in the future"));
    }
    Ok(time.timestamp())
}

/// One line of a container's log: the engine's timestamp, then the text.
fn split_timestamp(line: &str) -> (Option<DateTime<Utc>>, &str) {
    match line.split_once(' ') {
        Some((stamp, rest)) => match DateTime::parse_from_rfc3339(stamp) {
            Ok(time) => (Some(time.with_timezone(&Utc)), rest),
            Err(_) => (None, line),
        },
        None => (None, line),
    }
}

const COLORS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

/// One line of a container's log, as it is shown.
struct Record<'a> {
    container: &'a Container,
    /// The container's place among those followed, for its color.
    index: usize,
    stream: &'static str,
    time: Option<DateTime<Utc>>,
    text: &'a str,
}

/// A line under `--json`.
#[derive(Serialize)]
struct Entry<'a> {
    service: &'a str,
    container: &'a str,
    stream: &'a str,
    /// RFC 3339, as the engine stamped the line.
    time: Option<String>,
    line: &'a str,
}

/// The one document of `logs --json` without `--follow`.
#[derive(Serialize)]
struct Document<'a> {
    ok: bool,
    lines: Vec<Entry<'a>>,
}

impl<'a> Record<'a> {
    fn entry(&self) -> Entry<'a> {
        Entry {
            service: &self.container.service,
            container: &self.container.name,
            stream: self.stream,
            time: self
                .time
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            line: self.text,
        }
    }
}

/// How lines are written: plain text with a prefix, or JSON.
#[derive(Clone, Copy)]
enum Render {
    Text {
        prefixer: Prefixer,
        timestamps: bool,
    },
    Json,
}

impl Render {
    /// One line of output for a record, newline included.
    fn line(&self, record: &Record<'_>) -> Result<String> {
        match self {
            Render::Text {
                prefixer,
                timestamps,
            } => Ok(prefixer.line(
                &label(record.container),
                record.index,
                record.time,
                record.text,
                *timestamps,
            )),
            Render::Json => {
                let mut line =
                    serde_json::to_string(&record.entry()).context("encoding a log line")?;
                line.push('\n');
                Ok(line)
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Prefixer {
    multiplex: bool,
    colored: bool,
    width: usize,
}

impl Prefixer {
    fn line(
        &self,
        label: &str,
        index: usize,
        time: Option<DateTime<Utc>>,
        text: &str,
        timestamps: bool,
    ) -> String {
        let mut out = String::new();
        if self.multiplex {
            let padded = format!("{label:<width$} |", width = self.width);
            if self.colored {
                out.push_str(&format!(
                    "\x1b[{}m{padded}\x1b[0m ",
                    COLORS[index % COLORS.len()]
                ));
            } else {
                out.push_str(&padded);
                out.push(' ');
            }
        }
        if timestamps && let Some(time) = time {
            out.push_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            out.push(' ');
        }
        out.push_str(text);
        out.push('\n');
        out
    }
}

/// The label of a container in the prefix: `cryptus-blue-1`.
fn label(container: &Container) -> String {
    format!("{}-{}", container.service, container.number)
}

pub async fn run(project: &Project, options: Options, printer: &Printer) -> Result<u8> {
    let declared: Vec<String> = project
        .load()
        .map(|compose| compose.services.keys().cloned().collect())
        .unwrap_or_default();
    let since = match &options.since {
        Some(text) => parse_since(text, Utc::now())
            .map_err(|err| usage(err, "write --since 10m or --since 2026-01-02T15:04:05Z"))?,
        None => 0,
    };
    let engine = Engine::connect().await?;
    let containers: Vec<Container> = engine
        .containers(&project.name)
        .await?
        .into_iter()
        .filter(|c| !c.service.is_empty())
        .collect();
    let mut known: BTreeSet<String> = declared.into_iter().collect();
    known.extend(containers.iter().map(|c| c.service.clone()));
    for service in &options.services {
        if !known.contains(service) {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(usage(
                format!(
                    "there is no service {service:?} in project {}",
                    project.name
                ),
                format!("the services are: {}", list.join(", ")),
            ));
        }
    }
    let selected: BTreeSet<String> = if options.services.is_empty() {
        known.clone()
    } else {
        options.services.iter().cloned().collect()
    };
    let chosen: Vec<&Container> = containers
        .iter()
        .filter(|c| selected.contains(&c.service))
        .collect();
    let render = if printer.json() {
        Render::Json
    } else {
        Render::Text {
            prefixer: Prefixer {
                multiplex: selected.len() > 1 || chosen.len() > 1,
                colored: printer.stdout_is_terminal(),
                width: chosen
                    .iter()
                    .map(|c| label(c).len())
                    .max()
                    .unwrap_or(0)
                    .max(14),
            },
            timestamps: options.timestamps,
        }
    };
    if options.follow {
        follow(
            &engine, project, &selected, &chosen, &options, since, render,
        )
        .await
    } else {
        dump(&engine, &chosen, &options, since, render, printer).await
    }
}

/// Prints what the containers logged so far, interleaved by time: text, or
/// one JSON document.
async fn dump(
    engine: &Engine,
    chosen: &[&Container],
    options: &Options,
    since: i64,
    render: Render,
    printer: &Printer,
) -> Result<u8> {
    let mut chunks: Vec<(usize, &'static str, String)> = Vec::new();
    for (index, container) in chosen.iter().enumerate() {
        let mut stream = Box::pin(engine.log_lines(&container.name, false, options.tail, since));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            chunks.push((index, chunk.stream, chunk.text));
        }
    }
    let mut records: Vec<Record<'_>> = Vec::new();
    for (index, stream, text) in &chunks {
        for line in text.lines() {
            let (time, text) = split_timestamp(line);
            records.push(Record {
                container: chosen[*index],
                index: *index,
                stream,
                time,
                text,
            });
        }
    }
    // Stable: lines of one container keep their order when times tie.
    records.sort_by_key(|record| record.time);
    if let Render::Json = render {
        let lines: Vec<Entry<'_>> = records.iter().map(Record::entry).collect();
        printer.out_json(&Document { ok: true, lines })?;
        return Ok(EXIT_OK);
    }
    let mut text = String::new();
    for record in &records {
        text.push_str(&render.line(record)?);
    }
    printer.out(&text)?;
    Ok(EXIT_OK)
}

/// Follows one container's log, sending each rendered line to `sender`.
fn spawn_follower(
    engine: &Engine,
    container: &Container,
    index: usize,
    from: (i64, Option<usize>),
    render: Render,
    sender: mpsc::Sender<Result<String>>,
) {
    let (since, tail) = from;
    let stream = engine.log_lines(&container.name, true, tail, since);
    let container = container.clone();
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(Ok(chunk)) = stream.next().await {
            for line in chunk.text.lines() {
                let (time, text) = split_timestamp(line);
                let record = Record {
                    container: &container,
                    index,
                    stream: chunk.stream,
                    time,
                    text,
                };
                if sender.send(render.line(&record)).await.is_err() {
                    return;
                }
            }
        }
    });
}

/// Streams the logs until Ctrl-C, adding containers of the selected services
/// as they start.
async fn follow(
    engine: &Engine,
    project: &Project,
    selected: &BTreeSet<String>,
    chosen: &[&Container],
    options: &Options,
    since: i64,
    render: Render,
) -> Result<u8> {
    let (sender, mut receiver) = mpsc::channel::<Result<String>>(1024);
    let mut followed: HashSet<String> = HashSet::new();
    let mut index = 0usize;
    for container in chosen {
        let from = (since, options.tail);
        spawn_follower(engine, container, index, from, render, sender.clone());
        followed.insert(container.id.clone());
        index += 1;
    }
    let mut starts = Box::pin(engine.container_starts(&project.name));
    let mut stdout = std::io::stdout().lock();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    loop {
        tokio::select! {
            line = receiver.recv() => {
                if let Some(line) = line {
                    stdout.write_all(line?.as_bytes()).context("writing to stdout")?;
                    stdout.flush().context("writing to stdout")?;
                }
            }
            started = starts.next() => {
                let Some(started) = started else {
                    // The engine closed the event stream; keep what we follow.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let id = started?;
                if let Some(container) = engine.inspect(&id).await?
                    && selected.contains(&container.service)
                {
                    // A restarted container is followed again from now, so no
                    // line is printed twice.
                    let from = if followed.insert(container.id.clone()) { 0 } else { Utc::now().timestamp() };
                    spawn_follower(engine, &container, index, (from.max(since), None), render, sender.clone());
                    index += 1;
                }
            }
            _ = &mut interrupted => return Ok(EXIT_OK),
            _ = terminate.recv() => return Ok(EXIT_OK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_form_follows() {
        let (services, follow) = seed_form(vec!["nginx".into(), "true".into()], false);
        assert_eq!((services, follow), (vec!["nginx".to_owned()], true));
        let (services, follow) = seed_form(vec!["nginx".into()], false);
        assert_eq!((services, follow), (vec!["nginx".to_owned()], false));
        let (services, follow) = seed_form(vec!["nginx".into(), "false".into()], false);
        assert_eq!((services, follow), (vec!["nginx".to_owned()], false));
    }

    #[test]
    fn since_as_duration_or_time() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_since("10m", now).unwrap(), now.timestamp() - 600);
        assert_eq!(
            parse_since("2026-01-02T14:00:00Z", now).unwrap(),
            now.timestamp() - 3600
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn lines_carry_their_time() {
        let (time, text) = split_timestamp("2026-01-02T15:04:05.123456789Z hello world");
        assert_eq!(text, "hello world");
        assert_eq!(time.unwrap().timestamp_subsec_millis(), 123);
        assert_eq!(split_timestamp("no stamp here"), (None, "no stamp here"));
    }

    #[test]
    fn prefixes_only_when_multiplexed() {
        let plain = Prefixer {
            multiplex: false,
            colored: false,
            width: 14,
        };
        assert_eq!(plain.line("nginx-1", 0, None, "hi", false), "hi\n");
        let multiplexed = Prefixer {
            multiplex: true,
            colored: false,
            width: 14,
        };
        assert_eq!(
            multiplexed.line("nginx-1", 0, None, "hi", false),
            "nginx-1        | hi\n"
        );
        let colored = Prefixer {
            multiplex: true,
            colored: true,
            width: 7,
        };
        assert!(
            colored
                .line("nginx-1", 1, None, "hi", false)
                .starts_with("\x1b[33m")
        );
    }
}
