//! Container logs as cryptus shows them: each line split from the engine's
//! timestamp and written with a prefix per container (colored on a
//! terminal) or as JSON; what the containers logged so far, interleaved by
//! time, or followed as it comes, across restarts and new containers.
//!
//! Under `--json` every line is an object `{"service", "container", "stream",
//! "time", "line"}`: without `--follow` they come in one document
//! `{"ok": true, "lines": [...]}`; with `--follow`, which streams, one
//! object per line of output (JSON Lines).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::compose::duration;
use crate::engine::{Container, Engine, LogChunk};
use crate::output::Printer;

/// What is shown: which containers, from when, and how.
pub struct Shown<'a> {
    /// The services shown; when following, their containers that start
    /// later are followed too.
    pub services: BTreeSet<String>,
    pub containers: Vec<&'a Container>,
    /// Seconds since the epoch; 0 for everything.
    pub since: i64,
    /// How many lines back each container starts; `None` for all.
    pub tail: Option<usize>,
    pub render: Render,
}

impl<'a> Shown<'a> {
    /// The containers of `services` among `containers`, rendered as the
    /// printer asks (JSON, or text with timestamps or not).
    pub fn new(
        services: BTreeSet<String>,
        containers: &'a [Container],
        (since, tail): (i64, Option<usize>),
        timestamps: bool,
        printer: &Printer,
    ) -> Shown<'a> {
        let containers: Vec<&Container> = containers
            .iter()
            .filter(|c| services.contains(&c.service))
            .collect();
        let labels: Vec<String> = containers.iter().map(|c| label(c)).collect();
        let render = Render::of(services.len(), &labels, timestamps, printer);
        Shown {
            services,
            containers,
            since,
            tail,
            render,
        }
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
pub fn split_timestamp(line: &str) -> (Option<DateTime<Utc>>, &str) {
    match line.split_once(' ') {
        Some((stamp, rest)) => match DateTime::parse_from_rfc3339(stamp) {
            Ok(time) => (Some(time.with_timezone(&Utc)), rest),
            Err(_) => (None, line),
        },
        None => (None, line),
    }
}

const COLORS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

/// Whose lines they are: a container, or a task of a Swarm service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The compose service.
    pub service: String,
    /// The container's name (on a Swarm, the task's), under `--json`.
    pub name: String,
    /// Its name in a text line's prefix.
    pub label: String,
}

impl Origin {
    pub fn of(container: &Container) -> Origin {
        Origin {
            service: container.service.clone(),
            name: container.name.clone(),
            label: label(container),
        }
    }
}

/// One line of a log, as it is shown.
pub struct Record<'a> {
    pub origin: &'a Origin,
    /// The origin's place among those shown, for its color.
    pub index: usize,
    pub stream: &'static str,
    pub time: Option<DateTime<Utc>>,
    pub text: &'a str,
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
            service: &self.origin.service,
            container: &self.origin.name,
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
pub enum Render {
    Text {
        prefixer: Prefixer,
        timestamps: bool,
    },
    Json,
}

impl Render {
    /// JSON under `--json`; else text, with a prefix naming the origin
    /// when more than one service or origin (by `labels`) is shown.
    pub fn of(services: usize, labels: &[String], timestamps: bool, printer: &Printer) -> Render {
        if printer.json() {
            return Render::Json;
        }
        let multiplex = services > 1 || labels.len() > 1;
        let widths = labels.iter().map(String::len);
        Render::Text {
            prefixer: Prefixer::new(multiplex, widths, printer.stdout_is_terminal()),
            timestamps,
        }
    }

    /// One line of output for a record, newline included.
    pub fn line(&self, record: &Record<'_>) -> Result<String> {
        match self {
            Render::Text {
                prefixer,
                timestamps,
            } => Ok(prefixer.line(
                &record.origin.label,
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

/// The prefix of a text line: the container's label, when more than one
/// container is shown.
#[derive(Clone, Copy)]
pub struct Prefixer {
    multiplex: bool,
    colored: bool,
    width: usize,
}

impl Prefixer {
    /// A prefix names the origin when more than one is shown
    /// (`multiplex`), padded to the longest label; colored on a terminal.
    pub fn new(multiplex: bool, labels: impl Iterator<Item = usize>, colored: bool) -> Prefixer {
        Prefixer {
            multiplex,
            colored,
            width: labels.max().unwrap_or(0).max(14),
        }
    }

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

/// Prints what the containers logged so far, interleaved by time: text, or
/// one JSON document.
pub async fn dump(engine: &Engine, shown: &Shown<'_>, printer: &Printer) -> Result<()> {
    let origins: Vec<Origin> = shown.containers.iter().map(|c| Origin::of(c)).collect();
    let streams = shown.containers.iter().map(|c| {
        (
            engine.log_lines(&c.name, false, shown.tail, shown.since),
            true,
        )
    });
    dump_streams(&origins, streams, shown.render, printer).await
}

/// Prints what each origin logged so far, read from its stream, interleaved
/// by time. A stream not `required` that fails is left out: a replaced
/// task whose container is gone.
pub async fn dump_streams<S>(
    origins: &[Origin],
    streams: impl Iterator<Item = (S, bool)>,
    render: Render,
    printer: &Printer,
) -> Result<()>
where
    S: futures_util::Stream<Item = Result<LogChunk>>,
{
    let mut chunks: Vec<(usize, &'static str, String)> = Vec::new();
    for (index, (stream, required)) in streams.enumerate() {
        let mut stream = Box::pin(stream);
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => read.push((index, chunk.stream, chunk.text)),
                Err(err) if required => return Err(err),
                Err(_) => break,
            }
        }
        chunks.extend(read);
    }
    let mut records: Vec<Record<'_>> = Vec::new();
    for (index, stream, text) in &chunks {
        for line in text.lines() {
            let (time, text) = split_timestamp(line);
            records.push(Record {
                origin: &origins[*index],
                index: *index,
                stream,
                time,
                text,
            });
        }
    }
    print_records(records, render, printer)
}

/// Prints records interleaved by time: text, or one JSON document.
pub fn print_records(
    mut records: Vec<Record<'_>>,
    render: Render,
    printer: &Printer,
) -> Result<()> {
    // Stable: lines of one origin keep their order when times tie.
    records.sort_by_key(|record| record.time);
    if let Render::Json = render {
        let lines: Vec<Entry<'_>> = records.iter().map(Record::entry).collect();
        return printer.out_json(&Document { ok: true, lines });
    }
    let mut text = String::new();
    for record in &records {
        text.push_str(&render.line(record)?);
    }
    printer.out(&text)
}

/// Streams the logs until Ctrl-C or SIGTERM, adding containers of the
/// services shown as they start.
pub async fn follow(
    engine: &Engine,
    project: &str,
    shown: &Shown<'_>,
    printer: &Printer,
) -> Result<()> {
    let (sender, mut receiver) = mpsc::channel::<Result<String>>(1024);
    let mut followers = Followers {
        engine,
        render: shown.render,
        sender,
        followed: HashSet::new(),
        next: 0,
    };
    for container in &shown.containers {
        followers.add(container, shown.since, shown.tail);
    }
    let mut starts = Box::pin(engine.container_starts(project));
    let stopped = stop_signal()?;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            line = receiver.recv() => {
                if let Some(line) = line {
                    printer.out(&line?)?;
                }
            }
            started = starts.next() => {
                let Some(started) = started else {
                    // The engine closed the event stream; keep what we follow.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                if let Some(container) = engine.inspect(&started?).await?
                    && shown.services.contains(&container.service)
                {
                    followers.restarted_or_new(&container, shown.since);
                }
            }
            _ = &mut stopped => return Ok(()),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM: what ends `--follow`.
pub fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// The containers followed so far, each by a task of its own that sends
/// its rendered lines.
struct Followers<'e> {
    engine: &'e Engine,
    render: Render,
    sender: mpsc::Sender<Result<String>>,
    /// Every container followed, by id: a restart is told from a new one.
    followed: HashSet<String>,
    /// The next container's place, for its color.
    next: usize,
}

impl Followers<'_> {
    fn add(&mut self, container: &Container, since: i64, tail: Option<usize>) {
        spawn_follower(
            self.engine.log_lines(&container.name, true, tail, since),
            Origin::of(container),
            self.next,
            self.render,
            self.sender.clone(),
        );
        self.followed.insert(container.id.clone());
        self.next += 1;
    }

    /// A container that started: a restarted one is followed again from
    /// now, so no line is printed twice; a new one from its first line.
    fn restarted_or_new(&mut self, container: &Container, since: i64) {
        let from = if self.followed.contains(&container.id) {
            Utc::now().timestamp()
        } else {
            0
        };
        self.add(container, from.max(since), None);
    }
}

/// Follows one origin's log stream, sending each rendered line to
/// `sender`, until the stream ends or fails (its container or task is
/// gone) or the receiver is dropped.
pub fn spawn_follower(
    stream: impl futures_util::Stream<Item = Result<LogChunk>> + Send + 'static,
    origin: Origin,
    index: usize,
    render: Render,
    sender: mpsc::Sender<Result<String>>,
) {
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(Ok(chunk)) = stream.next().await {
            for line in chunk.text.lines() {
                let (time, text) = split_timestamp(line);
                let record = Record {
                    origin: &origin,
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

#[cfg(test)]
mod tests {
    use super::*;

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
