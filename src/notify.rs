//! Deploy notifications: every recorded switch (deploy, rollback, a
//! rollback by itself, a failed deploy, a scale) POSTed as one JSON document
//! to each URL of `CRYPTUS_NOTIFY_URL`, with a Slack-compatible `text` so an
//! incoming-webhook URL works as it is. Delivery is bounded (a deadline per
//! attempt, one retry, an overall deadline) and never fails the switch: a
//! failed delivery comes back as a warning. A URL is shown as its scheme and
//! host only, since its path or query may be a secret (Slack's are).

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::usage;
use crate::history::{Entry, Outcome, Side, operation};

/// The variable that names where notifications go.
pub const VARIABLE: &str = "CRYPTUS_NOTIFY_URL";
/// How long one attempt may take, from connecting to the answer.
pub const ATTEMPT: Duration = Duration::from_secs(5);
/// Attempts per URL: the first and one retry.
pub const ATTEMPTS: u32 = 2;
/// The pause before the retry.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);
/// All attempts to one URL, pauses included; URLs are sent to at once.
pub const DEADLINE: Duration = Duration::from_secs(12);
/// Bounded input: at most this many URLs, each at most this long.
pub const MAX_URLS: usize = 10;
pub const MAX_URL_LEN: usize = 2048;
/// The most of a failure's reason the one-line `text` carries.
const MAX_REASON_CHARS: usize = 300;

/// One place notifications go.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    url: reqwest::Url,
}

impl Target {
    /// The URL as output shows it: scheme, host and port, never the path or
    /// query, which may hold a token.
    pub fn shown(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{}://{host}:{port}", self.url.scheme()),
            None => format!("{}://{host}", self.url.scheme()),
        }
    }
}

/// The targets `CRYPTUS_NOTIFY_URL` names; none when it is unset or blank.
pub fn from_env() -> Result<Vec<Target>> {
    match std::env::var(VARIABLE) {
        Ok(text) => parse(&text),
        Err(std::env::VarError::NotPresent) => Ok(Vec::new()),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(usage(format!("{VARIABLE} is not valid UTF-8"), hint()))
        }
    }
}

fn hint() -> String {
    format!(
        "set {VARIABLE} to one to {MAX_URLS} http:// or https:// URLs, separated by spaces or \
         commas (a comma inside a URL is written %2C), or unset it"
    )
}

/// One URL or several, separated by spaces or commas. A bad one is a usage
/// error that names it by its position (and its scheme and host when it
/// has them), never by its whole text.
pub fn parse(text: &str) -> Result<Vec<Target>> {
    let words: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect();
    if words.len() > MAX_URLS {
        return Err(usage(
            format!(
                "{VARIABLE} names {} URLs; at most {MAX_URLS} are taken",
                words.len()
            ),
            hint(),
        ));
    }
    let count = words.len();
    words
        .into_iter()
        .enumerate()
        .map(|(index, word)| {
            let which = if count == 1 {
                VARIABLE.to_owned()
            } else {
                format!("URL {} of {count} in {VARIABLE}", index + 1)
            };
            let bad = |why: String| usage(format!("{which} {why}"), hint());
            if word.len() > MAX_URL_LEN {
                return Err(bad(format!("is longer than {MAX_URL_LEN} bytes")));
            }
            let url =
                reqwest::Url::parse(word).map_err(|err| bad(format!("is not a URL ({err})")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad(format!(
                    "is a {}: URL, not http or https",
                    url.scheme()
                )));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(bad("names no host".to_owned()));
            }
            Ok(Target { url })
        })
        .collect()
}

/// What each URL receives: the history's entry of the switch, flattened
/// for a receiver, with a Slack-compatible `text`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Payload {
    /// One human line (Slack's incoming webhooks show it as the message).
    pub text: String,
    pub project: String,
    /// deploy, rollback or scale.
    pub operation: String,
    /// ok, failed or rolled-back (the switch went back by itself).
    pub outcome: Outcome,
    /// Why it did not deploy; null when it did.
    pub reason: Option<String>,
    pub from: Side,
    pub to: Side,
    /// Seconds the switch took.
    pub duration: f64,
    pub user: String,
    pub host: String,
    pub time: DateTime<Utc>,
    /// A canary step's share of clients (operation `canary`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
}

/// The operation of a canary step's announcement: each step is announced
/// as nginx begins to serve it, since a step can last long. The history
/// records the whole deploy once it ends.
pub const CANARY: &str = "canary";

impl Payload {
    /// A canary step nginx serves now: `to` gets `percent` of clients,
    /// `from` the rest.
    pub fn canary_step(project: &str, from: &Side, to: &Side, percent: u8) -> Payload {
        let (user, host) = (crate::lock::user(), crate::lock::hostname());
        let line = format!(
            "canary: {percent}% of clients go to {} ({} serves the rest) by {user}@{host}",
            release(to),
            release(from)
        );
        Payload {
            text: slack_escape(&format!("{project}: {line}")),
            project: project.to_owned(),
            operation: CANARY.to_owned(),
            outcome: Outcome::Ok,
            reason: None,
            from: from.clone(),
            to: to.clone(),
            duration: 0.0,
            user,
            host,
            time: Utc::now(),
            percent: Some(percent),
        }
    }

    pub fn of(project: &str, entry: &Entry) -> Payload {
        Payload {
            text: text(project, entry),
            project: project.to_owned(),
            operation: entry.operation.clone(),
            outcome: entry.outcome,
            reason: entry.reason.clone(),
            from: entry.from.clone(),
            to: entry.to.clone(),
            duration: duration(entry),
            user: entry.user.clone(),
            host: entry.host.clone(),
            time: entry.time,
            percent: None,
        }
    }
}

fn duration(entry: &Entry) -> f64 {
    entry.durations.get("total").copied().unwrap_or_default()
}

/// The one human line of a switch, escaped as Slack's `text` must be.
pub fn text(project: &str, entry: &Entry) -> String {
    let (from, to) = (release(&entry.from), release(&entry.to));
    let took =
        crate::output::seconds(Duration::try_from_secs_f64(duration(entry)).unwrap_or_default());
    let by = format!("by {}@{}", entry.user, entry.host);
    let reason = one_line(entry.reason.as_deref().unwrap_or("unknown"));
    let line = match (entry.operation.as_str(), entry.outcome) {
        (operation::SCALE, Outcome::Ok) => format!(
            "scaled {} from {} to {} replicas in {took} {by}",
            entry.to.color.service(),
            entry.from.replicas,
            entry.to.replicas
        ),
        (operation::SCALE, _) => format!(
            "scaling {} to {} replicas failed, it still runs {} ({by}): {reason}",
            entry.to.color.service(),
            entry.to.replicas,
            entry.from.replicas
        ),
        (operation::ROLLBACK, Outcome::Ok) => {
            format!("rolled back to {to} (from {from}) in {took} {by}")
        }
        (_, Outcome::Ok) => format!("deployed {to} (was {from}) in {took} {by}"),
        (op, Outcome::Failed) => {
            format!("{op} of {to} failed ({from} was serving) {by}: {reason}")
        }
        (op, Outcome::RolledBack) => format!(
            "{op} of {to} was rolled back automatically, traffic is back on {from} {by}: {reason}"
        ),
    };
    slack_escape(&format!("{project}: {line}"))
}

/// A side as the line names it: `green 2.0.0`, or the color alone when no
/// release was known yet.
fn release(side: &Side) -> String {
    if side.version.is_empty() {
        side.color.to_string()
    } else {
        format!("{} {}", side.color, side.version)
    }
}

/// The first line of a reason, cut to a length a chat line carries.
fn one_line(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or_default().trim();
    if first.chars().count() <= MAX_REASON_CHARS {
        return first.to_owned();
    }
    let mut cut: String = first.chars().take(MAX_REASON_CHARS).collect();
    cut.push('…');
    cut
}

/// Slack reads `&`, `<` and `>` as markup: they are escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Sends `payload` to every target at once, each under [`DEADLINE`]; the
/// warnings of those that failed, naming them by [`Target::shown`].
pub async fn send(targets: &[Target], payload: &Payload) -> Vec<String> {
    if targets.is_empty() {
        return Vec::new();
    }
    let body = match serde_json::to_vec(payload) {
        Ok(body) => body,
        Err(err) => return vec![format!("encoding the notification: {err}")],
    };
    let client = match tokio::task::spawn_blocking(crate::health::tls_client).await {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => return vec![format!("no notification was sent: {err}")],
        Err(err) => return vec![format!("no notification was sent: {err}")],
    };
    let sends = targets.iter().map(|target| deliver(&client, target, &body));
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One target: an attempt, and one retry when the failure may pass.
async fn deliver(client: &reqwest::Client, target: &Target, body: &[u8]) -> Option<String> {
    let mut tried = 0;
    let attempts = async {
        loop {
            tried += 1;
            match post(client, target, body).await {
                Ok(()) => return Ok(()),
                Err((reason, passing)) if passing && tried < ATTEMPTS => {
                    tracing::debug!("notifying {}: {reason}; retrying", target.shown());
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Err((reason, _)) => return Err(reason),
            }
        }
    };
    let reason = match tokio::time::timeout(DEADLINE, attempts).await {
        Ok(Ok(())) => return None,
        Ok(Err(reason)) => reason,
        Err(_) => format!("no answer within {}", crate::output::seconds(DEADLINE)),
    };
    Some(format!(
        "notifying {} failed after {tried} attempt{}: {reason}",
        target.shown(),
        if tried == 1 { "" } else { "s" }
    ))
}

/// One POST; a failure says why, and whether a retry may help (no answer,
/// a timeout, 5xx, 429), without the URL.
async fn post(
    client: &reqwest::Client,
    target: &Target,
    body: &[u8],
) -> Result<(), (String, bool)> {
    let answer = client
        .post(target.url.clone())
        .timeout(ATTEMPT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|err| (crate::health::reason(&err.without_url()), true))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let passing = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
    let text = answer.text().await.unwrap_or_default();
    let said: String = text.trim().chars().take(100).collect();
    Err((
        format!("answered {} {said}", status.as_u16())
            .trim_end()
            .to_owned(),
        passing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Color;
    use std::collections::BTreeMap;

    fn side(color: Color, version: &str, replicas: u32) -> Side {
        Side {
            color,
            image: format!("app:{version}"),
            version: version.to_owned(),
            image_id: None,
            replicas,
        }
    }

    fn entry(operation: &str, outcome: Outcome, reason: Option<&str>) -> Entry {
        Entry {
            time: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
            operation: operation.to_owned(),
            user: "ann".to_owned(),
            host: "box".to_owned(),
            from: side(Color::Blue, "1.0.0", 1),
            to: side(Color::Green, "2.0.0", 1),
            outcome,
            reason: reason.map(str::to_owned),
            durations: BTreeMap::from([("total".to_owned(), 12.5), ("health".to_owned(), 3.0)]),
            hooks: Vec::new(),
        }
    }

    #[test]
    fn the_payload_carries_every_field_of_the_entry() {
        let entry = entry("deploy", Outcome::RolledBack, Some("green died"));
        let payload = serde_json::to_value(Payload::of("shop", &entry)).unwrap();
        assert_eq!(payload["project"], "shop");
        assert_eq!(payload["operation"], "deploy");
        assert_eq!(payload["outcome"], "rolled-back");
        assert_eq!(payload["reason"], "green died");
        assert_eq!(payload["from"]["color"], "blue");
        assert_eq!(payload["from"]["version"], "1.0.0");
        assert_eq!(payload["to"]["color"], "green");
        assert_eq!(payload["to"]["version"], "2.0.0");
        assert_eq!(payload["to"]["image"], "app:2.0.0");
        assert_eq!(payload["duration"], 12.5);
        assert_eq!(payload["user"], "ann");
        assert_eq!(payload["host"], "box");
        assert_eq!(payload["time"], "2026-01-02T03:04:05Z");
        assert!(payload["text"].as_str().unwrap().starts_with("shop: "));
        // A deploy that went through has no reason, as null.
        let ok = serde_json::to_value(Payload::of("shop", &entry_ok())).unwrap();
        assert!(ok["reason"].is_null());
        assert_eq!(ok["outcome"], "ok");
    }

    fn entry_ok() -> Entry {
        entry("deploy", Outcome::Ok, None)
    }

    #[test]
    fn the_text_is_one_human_line_per_case() {
        assert_eq!(
            text("shop", &entry_ok()),
            "shop: deployed green 2.0.0 (was blue 1.0.0) in 12.50s by ann@box"
        );
        assert_eq!(
            text("shop", &entry("rollback", Outcome::Ok, None)),
            "shop: rolled back to green 2.0.0 (from blue 1.0.0) in 12.50s by ann@box"
        );
        assert_eq!(
            text(
                "shop",
                &entry("deploy", Outcome::Failed, Some("unhealthy\nlog lines"))
            ),
            "shop: deploy of green 2.0.0 failed (blue 1.0.0 was serving) by ann@box: unhealthy"
        );
        assert_eq!(
            text("shop", &entry("deploy", Outcome::RolledBack, Some("5xx"))),
            "shop: deploy of green 2.0.0 was rolled back automatically, \
             traffic is back on blue 1.0.0 by ann@box: 5xx"
        );
        let mut scale = entry("scale", Outcome::Ok, None);
        scale.from = side(Color::Green, "2.0.0", 1);
        scale.to = side(Color::Green, "2.0.0", 3);
        assert_eq!(
            text("shop", &scale),
            "shop: scaled cryptus-green from 1 to 3 replicas in 12.50s by ann@box"
        );
        scale.outcome = Outcome::Failed;
        scale.reason = Some("nginx said no".to_owned());
        assert_eq!(
            text("shop", &scale),
            "shop: scaling cryptus-green to 3 replicas failed, it still runs 1 (by ann@box): nginx said no"
        );
        // A deploy that failed before its release was known names the color.
        let mut early = entry("deploy", Outcome::Failed, Some("no image"));
        early.to.version = String::new();
        assert!(text("shop", &early).contains("deploy of green failed"));
    }

    #[test]
    fn the_text_is_escaped_for_slack_and_cut_to_one_line() {
        let long = format!("<b>&{}", "x".repeat(1000));
        let line = text("shop", &entry("deploy", Outcome::Failed, Some(&long)));
        assert!(line.contains("&lt;b&gt;&amp;xxx"), "{line}");
        assert!(!line.contains('<') && !line.contains('\n'), "{line}");
        assert!(line.ends_with('…'), "{line}");
        assert!(line.chars().count() < 450, "{}", line.chars().count());
    }

    #[test]
    fn urls_are_separated_by_spaces_or_commas() {
        assert_eq!(parse("").unwrap(), Vec::new());
        assert_eq!(parse("  , ").unwrap(), Vec::new());
        let targets =
            parse("http://127.0.0.1:9/a, https://hooks.example.com/T1/B2/secret\nhttp://[::1]:8/x")
                .unwrap();
        let shown: Vec<String> = targets.iter().map(Target::shown).collect();
        assert_eq!(
            shown,
            [
                "http://127.0.0.1:9",
                "https://hooks.example.com",
                "http://[::1]:8"
            ]
        );
    }

    #[test]
    fn a_bad_url_is_a_usage_error_that_does_not_print_it() {
        for bad in [
            "hooks.example.com/services/T1/B2/secret",
            "ftp://example.com/secret",
            "http://[::1/secret",
            "http://:80/secret",
        ] {
            let err = parse(&format!("http://ok.example.com {bad}")).unwrap_err();
            assert_eq!(
                crate::error::classify(&err).0,
                crate::error::EXIT_USAGE,
                "{bad}"
            );
            let message = format!("{err:#}");
            assert!(message.contains("URL 2 of"), "{message}");
            assert!(!message.contains("secret"), "{message}");
            assert!(crate::error::classify(&err).1.is_some(), "a hint: {bad}");
        }
        let many = ["http://a.example"; MAX_URLS + 1].join(" ");
        assert!(parse(&many).is_err());
        let long = format!("http://a.example/{}", "x".repeat(MAX_URL_LEN));
        assert!(parse(&long).is_err());
    }

    #[tokio::test]
    async fn a_dead_url_is_a_warning_after_a_retry_that_names_only_the_host() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // https too: this build speaks TLS, so it gets as far as connecting.
        let targets = parse(&format!(
            "http://127.0.0.1:{port}/secret-token https://127.0.0.1:{port}/secret-token"
        ))
        .unwrap();
        let began = std::time::Instant::now();
        let warnings = send(&targets, &Payload::of("shop", &entry_ok())).await;
        assert!(began.elapsed() < DEADLINE, "{:?}", began.elapsed());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        for (warning, scheme) in warnings.iter().zip(["http", "https"]) {
            assert!(
                warning.starts_with(&format!(
                    "notifying {scheme}://127.0.0.1:{port} failed after 2 attempts"
                )),
                "{warning}"
            );
            assert!(warning.contains("refused"), "{warning}");
            assert!(!warning.contains("secret-token"), "{warning}");
        }
        assert!(
            send(&[], &Payload::of("shop", &entry_ok()))
                .await
                .is_empty()
        );
    }
}
