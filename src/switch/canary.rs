//! Canary releases: the steps asked for (`--canary 10,50`), the upstream
//! weights that give the new color each step's share, and each step's
//! judge: the metric gate where Prometheus sees the new version, else the
//! tally of the canary's answers in nginx's access log; either fails a
//! step when the new version fails real requests. All pure but
//! [`judge_step`], which reads the log and asks Prometheus. The steps
//! themselves run in `deploy` (`Switch::canary_steps`).
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

use super::watch::{Answer, GATE_EVERY, Gate};
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
    /// Who judged the step's 5xx (when it failed, who failed it).
    pub judge: Judge,
    /// Why the metric gate could not ask Prometheus, when it could not
    /// (last seen): nginx's log judged meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_unanswered: Option<String>,
}

/// Fewest canary requests before its error share can hold a step back.
pub const MIN_REQUESTS: u64 = 20;
/// Fewest canary 5xx answers before they can hold a step back.
pub const MIN_ERRORS: u64 = 3;
/// The canary's 5xx share, in percent, above which a step fails: the
/// default metric gate's, counted from nginx's log rather than Prometheus.
pub const MAX_ERROR_PERCENT: u64 = 1;
/// The 5xx share, in percent, above which nginx's log fails a step
/// whoever judges: a canary failing most requests is not left to wait for
/// Prometheus's first scrapes (a blind gate), nor passed by a gate whose
/// rates miss what the app never counted (nginx's own 502s, a burst before
/// the first scrape).
pub const CATASTROPHE_PERCENT: u64 = 50;

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

    /// What the operator should know of the step's judging: a count that
    /// was off, a gate that could not ask, and on a step that `passed`,
    /// 5xx in nginx's log that the gate, judging, did not fail.
    pub fn warnings(&self, passed: bool) -> Vec<String> {
        let percent = self.percent;
        let mut warnings = Vec::new();
        if let Some(why) = &self.unread {
            warnings.push(format!(
                "the canary's 5xx were not counted at {percent}%: nginx's log could not be read ({why}); the probes and the gate still watched"
            ));
        }
        if let Some(why) = &self.gate_unanswered {
            warnings.push(format!(
                "the metric gate could not ask Prometheus at {percent}% ({why}); nginx's log judged while it could not"
            ));
        }
        if let (true, Judge::MetricGate, Some(why)) = (passed, self.judge, self.failure()) {
            warnings.push(format!(
                "at {percent}%, {why}; the metric gate, which judges where Prometheus sees the new version, did not fail it"
            ));
        }
        warnings
    }

    /// Why the canary fails this step by nginx's log, if it does.
    pub fn failure(&self) -> Option<String> {
        self.above(MAX_ERROR_PERCENT)
    }

    /// Why it fails whoever judges: more than [`CATASTROPHE_PERCENT`] 5xx.
    pub fn catastrophe(&self) -> Option<String> {
        self.above(CATASTROPHE_PERCENT)
    }

    fn above(&self, percent: u64) -> Option<String> {
        let failing = self.requests >= MIN_REQUESTS
            && self.errors >= MIN_ERRORS
            && self.errors * 100 > self.requests * percent;
        failing.then(|| {
            format!(
                "the canary answered {} of {} requests with 5xx in nginx's log (more than {percent}%)",
                self.errors, self.requests
            )
        })
    }
}

/// Who judges a step's 5xx.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Judge {
    /// Prometheus's metric gate, for the new version.
    MetricGate,
    /// The tally of the canary's answers in nginx's access log.
    #[default]
    NginxLog,
}

/// How long a step waits for a blind gate (Prometheus has not found and
/// scraped the new containers twice) before nginx's log judges instead:
/// with the shipped configuration (DNS every 5s, scrapes every 5s) it sees
/// them within 15s; twice that leaves room for a slower scrape.
pub const GATE_SEES_WITHIN: Duration = Duration::from_secs(30);

/// Who judges the canary's 5xx now, from the gate's last answer (`None`:
/// no gate, Prometheus does not run). Where the gate sees the new version,
/// it judges alone: it asks the user's own condition (`--gate`) of what the
/// app itself counted, and its answer is the one a plain deploy's watch
/// obeys, so a canary and a deploy agree on what a bad version is.
/// Where it cannot answer, nginx's log is the backstop at once; where it is
/// blind, the log judges once `waited` (the hold ended, or the gate had
/// [`GATE_SEES_WITHIN`]), so a slow first scrape cannot hand the verdict
/// to the log, nor a version Prometheus never scrapes pass unjudged.
/// `None`: nobody yet.
pub fn judge(gate: Option<&Answer>, waited: bool) -> Option<Judge> {
    match gate {
        None | Some(Answer::Unanswered(_)) => Some(Judge::NginxLog),
        Some(Answer::Fails(_) | Answer::Passes) => Some(Judge::MetricGate),
        Some(Answer::Blind) => waited.then_some(Judge::NginxLog),
    }
}

/// Why the step fails by now, if it does: the judge's reason, which names
/// it; or, whoever judges (and while nobody does yet), nginx's log's when
/// most of the canary's answers are 5xx.
pub fn verdict(answers: &StepAnswers, gate: Option<&Answer>, waited: bool) -> Option<String> {
    if let Some(why) = answers.catastrophe() {
        return Some(why);
    }
    match (judge(gate, waited)?, gate) {
        (Judge::MetricGate, Some(Answer::Fails(why))) => Some(why.clone()),
        (Judge::MetricGate, _) => None,
        (Judge::NginxLog, gate) => {
            let why = answers.failure()?;
            Some(match gate {
                Some(Answer::Unanswered(err)) => {
                    format!("{why}; the metric gate could not judge: {err}")
                }
                Some(Answer::Blind) => format!(
                    "{why}; the metric gate could not judge: Prometheus held too few samples of the new version"
                ),
                _ => why,
            })
        }
    }
}

/// One step's judge, until `until`: counts the canary's answers
/// (`canary`: its `ip:port`s) in the access log of every nginx in `logs`
/// (its engine and container: one on one engine, each edge on a Swarm)
/// into `answers`, asks the metric gate, if any, every [`GATE_EVERY`] and
/// at the end, and fails as soon as [`verdict`] says. `answers` keeps the
/// counts either way. A log that cannot be read counts nothing from then
/// on: the probes and the gate still watch.
pub async fn judge_step(
    logs: &[(&Engine, &str)],
    canary: &[String],
    gate: Option<(&reqwest::Client, &Gate)>,
    until: Instant,
    answers: &mut StepAnswers,
) -> Result<()> {
    use futures_util::StreamExt;
    let began = Instant::now();
    let blind_until = until.min(began + GATE_SEES_WITHIN);
    let since = chrono::Utc::now().timestamp();
    // Every nginx's lines as they come: the tally is the stack's, whichever
    // edge a client went through.
    let mut lines = futures_util::stream::select_all(
        logs.iter()
            .map(|(engine, nginx)| Box::pin(engine.log_lines(nginx, true, None, since))),
    );
    let mut log_open = !logs.is_empty();
    // Not asked yet is blind: the first answer comes after GATE_EVERY.
    let mut said = gate.map(|_| Answer::Blind);
    let mut next_ask = began + GATE_EVERY;
    loop {
        let wake = if gate.is_some() {
            next_ask.min(until)
        } else {
            until
        };
        tokio::select! {
            chunk = lines.next(), if log_open => match chunk {
                Some(Ok(chunk)) if chunk.stream == "stdout" => {
                    for line in chunk.text.lines() {
                        answers.count(line, canary);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    answers.unread = Some(format!("{err:#}"));
                    log_open = false;
                }
                // Every nginx's log ended (it stopped: the probes say so).
                None => log_open = false,
            },
            () = tokio::time::sleep_until(wake) => {}
        }
        if let Some((client, gate)) = gate
            && Instant::now() >= wake
        {
            let answer = gate.ask(client).await;
            if let Answer::Unanswered(why) = &answer {
                answers.gate_unanswered = Some(why.clone());
            }
            said = Some(answer);
            next_ask = Instant::now() + GATE_EVERY;
        }
        let (now, gate_said) = (Instant::now(), said.as_ref());
        let waited = now >= blind_until;
        answers.judge = judge(gate_said, waited).unwrap_or_default();
        if let Some(why) = verdict(answers, gate_said, waited) {
            bail!(why);
        }
        if now >= until {
            return Ok(());
        }
    }
}

/// Holds one step at `percent` as step `hold N%` (`message`), while the
/// step is announced to `notify`: `hold` watches and judges it, counting
/// into its answers. The step's result, its answers (a failed step's too:
/// they show what the judge saw), and the warnings of the announcement
/// and of the count.
pub async fn hold_step(
    steps: &mut crate::switch::report::Steps<'_>,
    (percent, message): (u8, String),
    (notify, payload): (&[crate::notify::Target], &crate::notify::Payload),
    hold: impl AsyncFnOnce(&mut StepAnswers) -> Result<()>,
) -> (Result<()>, StepAnswers, Vec<String>) {
    let mut answers = StepAnswers {
        percent,
        ..StepAnswers::default()
    };
    let name = format!("hold {percent}%");
    let (held, mut warnings) = tokio::join!(
        steps.wait(&name, message, hold(&mut answers)),
        crate::notify::send(notify, payload)
    );
    warnings.extend(answers.warnings(held.is_ok()));
    (held, answers, warnings)
}

/// The status and the last upstream address of an access-log line.
/// Where cryptus's own probes through nginx come from (inside nginx's
/// container): a step's count leaves them out, or the hold's probes would
/// fill a quiet canary's count with healthy answers. Clients come through
/// the published port, never from there.
const PROBES_FROM: [&str; 2] = ["127.0.0.1", "::1"];

fn parse_line(line: &str) -> Option<(u16, &str)> {
    // The request is the first quoted field; nginx escapes quotes in it.
    let (head, rest) = line.split_once('"')?;
    let (_, rest) = rest.split_once("\" ")?;
    // cryptus's own probes through nginx, asked from inside its container,
    // are no client's answers: left out.
    let remote = head.split(" [").next()?.split_whitespace().last()?;
    if PROBES_FROM.contains(&remote) {
        return None;
    }
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
                "2026-11-30T03:00:00.1Z 10.99.0.11 [30/Nov/2026:03:00:00 +0000] \"GET /api/x?a=\\x22 HTTP/1.1\" {status} 12 rt=0.001 upstream={upstream} color=blue;canary=green:10"
            )
        };
        for _ in 0..30 {
            answers.count(&line(200, "172.18.0.5:3000"), &canary);
        }
        answers.count(&line(200, "172.18.0.4:3000"), &canary);
        answers.count(&line(502, "172.18.0.4:3000, 172.18.0.5:3000"), &canary);
        answers.count("not a log line", &canary);
        // cryptus's own probes, from inside nginx's container, are no
        // client's: not counted.
        for from in ["127.0.0.1", "::1"] {
            let probe = line(200, "172.18.0.5:3000").replace("10.99.0.11", from);
            assert!(probe.contains(&format!(" {from} [")), "{probe}");
            answers.count(&probe, &canary);
        }
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

    /// Answers nginx's log fails: 5 of 40 with 5xx.
    fn failing_log() -> StepAnswers {
        StepAnswers {
            percent: 10,
            requests: 40,
            errors: 5,
            ..StepAnswers::default()
        }
    }

    #[test]
    fn without_a_gate_nginxs_log_judges() {
        assert_eq!(judge(None, false), Some(Judge::NginxLog));
        let why = verdict(&failing_log(), None, false).unwrap();
        assert!(
            why.contains("5 of 40 requests with 5xx in nginx's log"),
            "{why}"
        );
        assert_eq!(verdict(&StepAnswers::default(), None, true), None);
    }

    #[test]
    fn a_gate_that_sees_the_new_version_judges_alone() {
        let fails = Answer::Fails("the metric gate's condition is true (value 0.2): q".into());
        assert_eq!(judge(Some(&fails), false), Some(Judge::MetricGate));
        assert_eq!(
            verdict(&StepAnswers::default(), Some(&fails), false).as_deref(),
            Some("the metric gate's condition is true (value 0.2): q"),
            "the gate fails a step nginx's log would pass"
        );
        // It passes a step nginx's log would fail, to the end.
        assert_eq!(judge(Some(&Answer::Passes), true), Some(Judge::MetricGate));
        assert_eq!(verdict(&failing_log(), Some(&Answer::Passes), false), None);
        assert_eq!(verdict(&failing_log(), Some(&Answer::Passes), true), None);
    }

    #[test]
    fn nginxs_log_is_the_backstop_of_a_gate_that_cannot_answer() {
        let down = Answer::Unanswered("asking Prometheus: connection refused".into());
        assert_eq!(judge(Some(&down), false), Some(Judge::NginxLog));
        let why = verdict(&failing_log(), Some(&down), false).unwrap();
        assert!(
            why.contains("in nginx's log")
                && why.contains("the metric gate could not judge: asking Prometheus"),
            "{why}"
        );
        assert_eq!(verdict(&StepAnswers::default(), Some(&down), false), None);
    }

    #[test]
    fn a_blind_gate_is_waited_for_then_nginxs_log_judges() {
        let blind = Some(&Answer::Blind);
        assert_eq!(
            judge(blind, false),
            None,
            "Prometheus may not have scraped yet"
        );
        assert_eq!(verdict(&failing_log(), blind, false), None);
        assert_eq!(judge(blind, true), Some(Judge::NginxLog));
        let why = verdict(&failing_log(), blind, true).unwrap();
        assert!(why.contains("too few samples of the new version"), "{why}");
    }

    /// Most answers 5xx fail a step whoever judges, and while a blind gate
    /// is waited for: not only what the gate would call a bad version.
    #[test]
    fn nginxs_log_fails_a_step_of_mostly_5xx_whoever_judges() {
        let dying = StepAnswers {
            percent: 10,
            requests: 40,
            errors: 21,
            ..StepAnswers::default()
        };
        for gate in [
            Some(&Answer::Passes),
            Some(&Answer::Blind),
            Some(&Answer::Unanswered("down".into())),
            None,
        ] {
            let why = verdict(&dying, gate, false).unwrap_or_default();
            assert!(
                why.contains("21 of 40 requests") && why.contains("more than 50%"),
                "{gate:?}: {why}"
            );
        }
        // 5 of 40 is the gate's to judge once it sees the version.
        assert_eq!(verdict(&failing_log(), Some(&Answer::Passes), false), None);
        let few = StepAnswers {
            requests: 10,
            errors: 10,
            ..StepAnswers::default()
        };
        assert_eq!(
            verdict(&few, Some(&Answer::Passes), false),
            None,
            "too few to judge"
        );
    }

    #[test]
    fn a_step_tells_what_its_judge_did_not_fail() {
        let mut answers = failing_log();
        answers.judge = Judge::MetricGate;
        let warnings = answers.warnings(true);
        assert!(
            warnings.len() == 1 && warnings[0].contains("the metric gate, which judges"),
            "{warnings:?}"
        );
        assert!(answers.warnings(false).is_empty(), "not on a failed step");
        answers.judge = Judge::NginxLog;
        answers.gate_unanswered = Some("connection refused".into());
        let warnings = answers.warnings(false);
        assert!(
            warnings.len() == 1 && warnings[0].contains("nginx's log judged while it could not"),
            "{warnings:?}"
        );
        assert_eq!(
            serde_json::to_value(&answers).unwrap()["judge"],
            "nginx-log"
        );
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
