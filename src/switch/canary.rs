//! Canary releases: the steps asked for (`--canary 10,50`), the upstream
//! weights that give the new color each step's share, and the tally of the
//! canary's answers in nginx's access log, which fails a step when the new
//! version fails real requests. All pure but [`tally`], which reads the log.
//! The steps themselves run in `deploy` (`Switch::canary_steps`).
//!
//! How a client is split: nginx hashes a cookie (the app's session cookie
//! by default; the client's address when a request has none) onto a ring of
//! points, `hash ... consistent` (ketama), each server holding points in
//! proportion to its weight. A server's points are the same whatever its
//! weight, up to the count the weight gives, so as the canary's weight only
//! grows and the old color's only shrinks from step to step, no client that
//! was sent to the canary is sent back.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::nginx::Canary;
use crate::stack::Color;

/// The most steps a canary may have before its 100%.
pub const MAX_STEPS: usize = 10;

/// The cookie nginx splits clients by unless told otherwise: the reference
/// app's session cookie.
pub const DEFAULT_COOKIE: &str = "cryptus_sid";

/// What a canary deploy was asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The shares of each step, in percent, rising, each 1 to 99.
    pub steps: Vec<u8>,
    /// How long each step is held and watched.
    pub hold: Duration,
    /// The cookie that identifies a client.
    pub cookie: String,
}

/// The shares of a canary's steps, as `--canary` gives them.
#[derive(Clone, Debug, PartialEq)]
pub struct Shares(pub Vec<u8>);

/// `--canary 10,50`: the steps' shares, rising, 1 to 99 each; 100 is
/// implied and may be written last.
pub fn parse_steps(text: &str) -> Result<Shares, String> {
    let mut steps: Vec<u8> = Vec::new();
    for part in text.split(',') {
        let part = part.trim().trim_end_matches('%');
        let percent: u8 = part
            .parse()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| format!("{part:?} is not a share from 1 to 100 (percent)"))?;
        if steps.last().is_some_and(|last| *last >= percent) {
            return Err(format!(
                "the steps must rise: {percent} comes after {}",
                steps.last().copied().unwrap_or_default()
            ));
        }
        steps.push(percent);
    }
    if steps.last() == Some(&100) {
        steps.pop();
    }
    if steps.is_empty() {
        return Err("give at least one step below 100, e.g. 10,50".to_owned());
    }
    if steps.len() > MAX_STEPS {
        return Err(format!("at most {MAX_STEPS} steps"));
    }
    Ok(Shares(steps))
}

/// `--canary-cookie`: a cookie name nginx can read as a variable.
pub fn parse_cookie(text: &str) -> Result<String, String> {
    if crate::nginx::is_cookie_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a cookie name nginx can read: use 1 to 64 letters, digits and _"
        ))
    }
}

/// The scale of the weights: a share is given in thousandths, so each
/// color's share is exact to a tenth of a point for a few replicas.
const SCALE: u32 = 1000;

/// The weight of each server of the old color and of the canary, so that
/// the canary's `canary_servers` together get `percent` of the traffic and
/// the old color's `old_servers` the rest. The canary's weight only grows
/// with the percent, and the old color's only shrinks.
pub fn weights(percent: u8, old_servers: usize, canary_servers: usize) -> (u32, u32) {
    let percent = u32::from(percent.clamp(1, 99));
    let each = |share: u32, servers: usize| {
        let servers = u32::try_from(servers.max(1)).unwrap_or(u32::MAX);
        // Rounded to the nearest, and never 0: nginx refuses weight=0.
        ((share * SCALE / 100 + servers / 2) / servers).max(1)
    };
    (
        each(100 - percent, old_servers),
        each(percent, canary_servers),
    )
}

/// The servers of a canary's upstream, each with its weight.
pub fn servers(percent: u8, old: &[String], canary: &[String], port: u16) -> Vec<(String, u32)> {
    let (old_weight, canary_weight) = weights(percent, old.len(), canary.len());
    old.iter()
        .map(|name| (format!("{name}:{port}"), old_weight))
        .chain(
            canary
                .iter()
                .map(|name| (format!("{name}:{port}"), canary_weight)),
        )
        .collect()
}

/// A canary's progress, for the report, `--json` and the history.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub color: Color,
    pub steps: Vec<u8>,
    /// The last share that nginx served; `None` before the first.
    pub reached: Option<u8>,
    /// The canary's answers counted in nginx's access log, per step.
    pub answers: Vec<StepAnswers>,
}

impl Progress {
    pub fn new(color: Color, steps: &[u8]) -> Progress {
        Progress {
            color,
            steps: steps.to_vec(),
            reached: None,
            answers: Vec::new(),
        }
    }

    pub fn canary(&self, percent: u8) -> Canary {
        Canary {
            color: self.color,
            percent,
        }
    }
}

/// What nginx's access log says the canary answered during one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepAnswers {
    pub percent: u8,
    /// Requests the canary answered (or failed to).
    pub requests: u64,
    /// Of those, answers of 500 and above.
    pub errors: u64,
    /// Requests the old color answered.
    pub others: u64,
    /// Why nginx's log could not be read, when it could not: the 5xx
    /// count was off for the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread: Option<String>,
}

/// Fewest canary requests before its error share can hold a step back.
pub const MIN_REQUESTS: u64 = 20;
/// Fewest canary 5xx answers before they can hold a step back.
pub const MIN_ERRORS: u64 = 3;
/// The canary's 5xx share, in percent, above which a step fails: the
/// default metric gate's, counted from nginx's log rather than Prometheus.
pub const MAX_ERROR_PERCENT: u64 = 1;

impl StepAnswers {
    /// Counts one line of nginx's access log (the project's `cryptus`
    /// format: `... "REQUEST" STATUS BYTES rt=... upstream=ADDR ...`): the
    /// answer is the canary's when its last upstream address is one of
    /// `canary` (`ip:port`). Lines of another format are skipped.
    pub fn count(&mut self, line: &str, canary: &[String]) {
        let Some((status, upstream)) = parse_line(line) else {
            return;
        };
        if canary.iter().any(|addr| addr == upstream) {
            self.requests += 1;
            if status >= 500 {
                self.errors += 1;
            }
        } else {
            self.others += 1;
        }
    }

    /// Why the canary fails this step, if it does.
    pub fn failure(&self) -> Option<String> {
        let failing = self.requests >= MIN_REQUESTS
            && self.errors >= MIN_ERRORS
            && self.errors * 100 > self.requests * MAX_ERROR_PERCENT;
        failing.then(|| {
            format!(
                "the canary answered {} of {} requests with 5xx in nginx's log (more than {MAX_ERROR_PERCENT}%)",
                self.errors, self.requests
            )
        })
    }
}

/// Counts the canary's answers (`canary`: its `ip:port`s) in nginx's
/// access log, from now until `until`; fails as soon as they fail the step.
/// A log that cannot be read fails nothing: the probes and the gate still
/// watch.
pub async fn tally(
    engine: &Engine,
    nginx: &str,
    canary: &[String],
    percent: u8,
    until: Instant,
) -> Result<StepAnswers> {
    use futures_util::StreamExt;
    let mut answers = StepAnswers {
        percent,
        ..StepAnswers::default()
    };
    let lines = engine.log_lines(nginx, true, None, chrono::Utc::now().timestamp());
    let mut lines = std::pin::pin!(lines);
    loop {
        match tokio::time::timeout_at(until, lines.next()).await {
            Ok(Some(Ok(chunk))) if chunk.stream == "stdout" => {
                for line in chunk.text.lines() {
                    answers.count(line, canary);
                }
                if let Some(why) = answers.failure() {
                    bail!(why);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => {
                answers.unread = Some(format!("{err:#}"));
                tokio::time::sleep_until(until).await;
                return Ok(answers);
            }
            // The deadline, or nginx's log ended (it stopped: the probes say so).
            Err(_) | Ok(None) => return Ok(answers),
        }
    }
}

/// The status and the last upstream address of an access-log line.
fn parse_line(line: &str) -> Option<(u16, &str)> {
    // The request is the first quoted field; nginx escapes quotes in it.
    let (_, rest) = line.split_once('"')?;
    let (_, rest) = rest.split_once("\" ")?;
    let status: u16 = rest.split_whitespace().next()?.parse().ok()?;
    let mut addresses = rest.split(" upstream=").nth(1)?.split_whitespace();
    // `a:1, b:2` when nginx tried more than one: the last one answered.
    let mut upstream = addresses.next()?;
    while upstream.ends_with(',') {
        upstream = addresses.next()?;
    }
    Some((status, upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_rise_from_1_to_99_and_100_is_implied() {
        assert_eq!(parse_steps("10,50"), Ok(Shares(vec![10, 50])));
        assert_eq!(parse_steps("10%, 50%,100"), Ok(Shares(vec![10, 50])));
        assert_eq!(parse_steps("1"), Ok(Shares(vec![1])));
        for bad in [
            "",
            "0",
            "100",
            "50,10",
            "10,10",
            "101",
            "x",
            "10,,50",
            "-5",
            "1,2,3,4,5,6,7,8,9,10,11",
        ] {
            assert!(parse_steps(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cookie_names_cannot_inject() {
        assert_eq!(parse_cookie("session_id"), Ok("session_id".to_owned()));
        for bad in ["", "a b", "a;b", "a}", "a-b", &"x".repeat(65)] {
            assert!(parse_cookie(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn weights_give_each_color_its_share() {
        for (old, canary) in [(1, 1), (3, 2), (2, 3), (4, 1), (16, 16), (1, 7)] {
            for percent in [1, 5, 10, 25, 33, 50, 90, 99] {
                let (w_old, w_canary) = weights(percent, old, canary);
                let total = f64::from(w_old) * old as f64 + f64::from(w_canary) * canary as f64;
                let share = 100.0 * f64::from(w_canary) * canary as f64 / total;
                assert!(
                    (share - f64::from(percent)).abs() < 0.6,
                    "{percent}% over {old}+{canary}: {share}"
                );
            }
        }
    }

    #[test]
    fn the_canary_weight_only_grows_and_the_old_only_shrinks() {
        for (old, canary) in [(1, 1), (3, 2), (5, 7)] {
            let mut last = weights(1, old, canary);
            for percent in 2..=99 {
                let next = weights(percent, old, canary);
                assert!(
                    next.0 <= last.0 && next.1 >= last.1,
                    "{percent}%: {last:?} -> {next:?}"
                );
                last = next;
            }
        }
    }

    #[test]
    fn servers_carry_their_weights() {
        let servers = servers(
            10,
            &["p-cryptus-blue-1".to_owned()],
            &["p-cryptus-green-1".to_owned()],
            3000,
        );
        assert_eq!(
            servers,
            vec![
                ("p-cryptus-blue-1:3000".to_owned(), 900),
                ("p-cryptus-green-1:3000".to_owned(), 100)
            ]
        );
    }

    #[test]
    fn the_log_tally_counts_the_canarys_answers() {
        let canary = vec!["172.18.0.5:3000".to_owned()];
        let mut answers = StepAnswers::default();
        let line = |status: u16, upstream: &str| {
            format!(
                "2026-11-30T03:00:00.1Z 127.0.0.1 [30/Nov/2026:03:00:00 +0000] \"GET /api/x?a=\\x22 HTTP/1.1\" {status} 12 rt=0.001 upstream={upstream} color=blue;canary=green:10"
            )
        };
        for _ in 0..30 {
            answers.count(&line(200, "172.18.0.5:3000"), &canary);
        }
        answers.count(&line(200, "172.18.0.4:3000"), &canary);
        answers.count(&line(502, "172.18.0.4:3000, 172.18.0.5:3000"), &canary);
        answers.count("not a log line", &canary);
        assert_eq!(
            (answers.requests, answers.errors, answers.others),
            (31, 1, 1)
        );
        assert_eq!(answers.failure(), None, "one 5xx is not enough");
        for _ in 0..2 {
            answers.count(&line(500, "172.18.0.5:3000"), &canary);
        }
        let why = answers.failure().unwrap();
        assert!(why.contains("3 of 33 requests"), "{why}");
    }

    #[test]
    fn few_requests_never_fail_a_step() {
        let mut answers = StepAnswers {
            requests: 10,
            errors: 10,
            ..StepAnswers::default()
        };
        assert_eq!(answers.failure(), None);
        answers.requests = 1000;
        answers.errors = 10;
        assert_eq!(answers.failure(), None, "1% is not more than 1%");
        answers.errors = 11;
        assert!(answers.failure().is_some());
    }
}
