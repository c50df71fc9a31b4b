//! All output goes through the [`Printer`]: data and JSON on stdout;
//! progress, warnings and errors on stderr. Progress is a spinner on a
//! terminal and plain lines otherwise (CI, cron), and nothing with `-q`.
//! Clippy refuses `print!` and `eprint!` everywhere else in the library.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Clone, Debug)]
pub struct Printer {
    verbosity: Verbosity,
    json: bool,
    terminal: bool,
    /// The warnings given once per run, shared by the clones.
    warned: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Printer {
    pub fn new(verbosity: Verbosity, json: bool) -> Printer {
        Printer {
            verbosity,
            json,
            terminal: std::io::stderr().is_terminal(),
            warned: Default::default(),
        }
    }

    /// This printer, but silent at the normal level: for commands cron runs,
    /// which speak only when asked (`-v`) or when they fail.
    pub fn quiet_unless_verbose(&self) -> Printer {
        let verbosity = match self.verbosity {
            Verbosity::Verbose => Verbosity::Normal,
            _ => Verbosity::Quiet,
        };
        Printer {
            verbosity,
            ..self.clone()
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// Whether stdout is a terminal (colors in `logs`).
    pub fn stdout_is_terminal(&self) -> bool {
        std::io::stdout().is_terminal()
    }

    /// A progress or status line on stderr.
    pub fn info(&self, message: impl Display) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("{message}");
        }
    }

    pub fn warn(&self, message: impl Display) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("warning: {message}");
        }
    }

    /// A warning given at most once in a run, however often its cause is
    /// met (a key that does not apply, checked for every container).
    pub fn warn_once(&self, message: impl Display) {
        let message = message.to_string();
        let first = match self.warned.lock() {
            Ok(mut warned) => warned.insert(message.clone()),
            Err(_) => true,
        };
        if first {
            self.warn(message);
        }
    }

    /// A line on stderr whatever the verbosity: for what is said once and
    /// would be lost otherwise, such as a generated password.
    pub fn always(&self, message: impl Display) {
        eprintln!("{message}");
    }

    /// Asks a question on stderr and reads one line of answer from stdin.
    pub fn ask(&self, question: impl Display) -> Result<String> {
        use std::io::BufRead;
        eprint!("{question} ");
        std::io::stderr().flush().context("writing the question")?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        Ok(answer.trim().to_owned())
    }

    /// Starts a step; finish it with [`Step::done`].
    pub fn step(&self, message: impl Into<String>) -> Step {
        let message = message.into();
        let bar = (self.terminal && self.verbosity >= Verbosity::Normal).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}") {
                bar.set_style(style);
            }
            bar.set_message(message.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Step {
            message,
            started: Instant::now(),
            bar,
            verbosity: self.verbosity,
        }
    }

    /// Starts a step whose work prints lines of its own (a hook's output):
    /// its message is printed at once, and no spinner runs over the lines.
    pub fn step_streaming(&self, message: impl Into<String>) -> Step {
        let message = message.into();
        self.info(format!("· {message}"));
        Step {
            message,
            started: Instant::now(),
            bar: None,
            verbosity: self.verbosity,
        }
    }

    /// Data on stdout.
    pub fn out(&self, text: &str) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .context("writing to stdout")?;
        stdout.flush().context("writing to stdout")
    }

    /// `error:` and `hint:` lines on stderr, for a failure whose `--json`
    /// document the command prints itself.
    pub fn error(&self, error: &str, hint: Option<&str>) {
        eprintln!("error: {error}");
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }

    /// A failure, reported the one way every command reports one: `error:`
    /// and `hint:` lines on stderr and, under `--json`, one document with
    /// `ok`, `error`, `hint` and `exit_code` on stdout.
    pub fn report_failure(&self, error: &str, hint: Option<&str>, code: u8) {
        self.error(error, hint);
        if self.json {
            let _ = self.out_json(&failure_document(error, hint, code));
        }
    }

    /// The one JSON document of a `--json` run.
    pub fn out_json(&self, value: &impl Serialize) -> Result<()> {
        let mut text = serde_json::to_string_pretty(value).context("encoding JSON")?;
        text.push('\n');
        self.out(&text)
    }
}

/// A step of a longer operation: one line with its duration when it ends.
pub struct Step {
    message: String,
    started: Instant,
    bar: Option<ProgressBar>,
    verbosity: Verbosity,
}

impl Step {
    /// Ends the step as done and returns how long it took.
    pub fn done(self) -> Duration {
        self.finish("✓", None)
    }

    /// Ends the step as done, with a word on the outcome.
    pub fn done_with(self, detail: impl Display) -> Duration {
        self.finish("✓", Some(detail.to_string()))
    }

    /// Ends the step as failed; the error itself is reported by the caller.
    pub fn fail(self) -> Duration {
        self.finish("✗", None)
    }

    /// Ends the step as done or failed, as `result` says, and passes it on.
    pub fn ended<T, E>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(_) => self.done(),
            Err(_) => self.fail(),
        };
        result
    }

    fn finish(mut self, mark: &str, detail: Option<String>) -> Duration {
        let elapsed = self.started.elapsed();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.verbosity >= Verbosity::Normal {
            let detail = detail.map(|d| format!(": {d}")).unwrap_or_default();
            eprintln!("{mark} {}{detail} ({})", self.message, seconds(elapsed));
        }
        elapsed
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The `--json` document of a failed run.
pub fn failure_document(error: &str, hint: Option<&str>, code: u8) -> serde_json::Value {
    serde_json::json!({
        "ok": false,
        "error": error,
        "hint": hint,
        "exit_code": code,
    })
}

pub fn seconds(duration: Duration) -> String {
    format!("{:.2}s", duration.as_secs_f64())
}

/// A human duration for uptimes: `3d4h`, `5m12s`, `42s`.
pub fn uptime(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A plain text table: columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns() {
        let text = table(
            &["SERVICE", "STATE"],
            &[
                vec!["nginx".into(), "running".into()],
                vec!["cryptus-blue".into(), "exited".into()],
            ],
        );
        assert_eq!(
            text,
            "SERVICE       STATE\nnginx         running\ncryptus-blue  exited\n"
        );
    }

    #[test]
    fn uptimes() {
        assert_eq!(uptime(Duration::from_secs(42)), "42s");
        assert_eq!(uptime(Duration::from_secs(312)), "5m12s");
        assert_eq!(uptime(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d4h");
    }
}
