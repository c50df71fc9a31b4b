//! Maintenance mode: nginx answers every request but `/api/health` with 503,
//! a `Retry-After` header and a small page (HTML, or JSON when the client
//! accepts JSON), except to the addresses allowed through.
//!
//! The mode is one file cryptus renders into nginx's state volume,
//! `maintenance.conf`, which the project's `app.conf` includes at server
//! level through a glob (a missing file is maintenance off and cannot break
//! nginx). The file carries its own state on a comment line, so what nginx
//! does and what `status` says can never disagree; it survives `stop`,
//! `start` and `restart` with the volume, and every machine that talks to
//! the engine sees it. It is applied like the upstream: written, `nginx -t`,
//! one reload, in one exec; old workers finish their in-flight requests.
//!
//! How nginx does it: the access module denies every address not allowed
//! (`/api/health` allows all in `app.conf`), and the denial's error page is
//! a named location that answers 503. Allowed addresses reach the app
//! through the same locations as always.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::context::{Stack, of_service, release_of};
use crate::error::{failed_with_hint, usage};
use crate::history::{self, Outcome, Side};
use crate::nginx::{self, Nginx};
use crate::switch::state;

pub use crate::nginx::MAINTENANCE_FILE;

/// The most seconds `--retry-after` takes: one day.
pub const MAX_RETRY_AFTER: u32 = 86_400;
pub const DEFAULT_RETRY_AFTER: u32 = 300;
/// The longest message, in characters: the page must fit in one nginx
/// string (at most 4 KiB once escaped).
pub const MAX_MESSAGE: usize = 500;
/// The most `--allow` entries.
pub const MAX_ALLOW: usize = 64;
pub const DEFAULT_MESSAGE: &str =
    "This site is down for maintenance and will be back shortly. Thank you for your patience.";

/// Where the file's state is kept, one JSON line.
const STATE_PREFIX: &str = "# state: ";
/// nginx refuses a string longer than its configuration buffer (4096 bytes).
const MAX_NGINX_STRING: usize = 4000;

/// What `maintenance on` asked: checked, ready to render.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub message: String,
    pub retry_after: u32,
    /// Normalized CIDRs (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7/32`).
    pub allow: Vec<String>,
}

impl Settings {
    /// Checks what the command line gave; a bad value is a usage error
    /// naming it, with a hint.
    pub fn new(message: Option<String>, retry_after: u32, allow: &[String]) -> Result<Settings> {
        let message = message.unwrap_or_else(|| DEFAULT_MESSAGE.to_owned());
        if message.trim().is_empty() {
            return Err(usage(
                "the maintenance message is empty",
                "leave --message out for the default, or write a sentence",
            ));
        }
        let chars = message.chars().count();
        if chars > MAX_MESSAGE {
            return Err(usage(
                format!("the maintenance message has {chars} characters, more than {MAX_MESSAGE}"),
                "shorten --message; link a status page for the details",
            ));
        }
        if retry_after > MAX_RETRY_AFTER {
            return Err(usage(
                format!("--retry-after {retry_after} is out of range"),
                format!("give seconds from 0 to {MAX_RETRY_AFTER}"),
            ));
        }
        if allow.len() > MAX_ALLOW {
            return Err(usage(
                format!("{} --allow entries, more than {MAX_ALLOW}", allow.len()),
                "allow whole networks (10.0.0.0/8) rather than single addresses",
            ));
        }
        let mut cidrs = Vec::new();
        for text in allow {
            let cidr = parse_cidr(text).map_err(|err| {
                usage(
                    format!("--allow {text:?}: {err}"),
                    "give an address or a network in CIDR notation: 203.0.113.7, 10.0.0.0/8, 2001:db8::/32",
                )
            })?;
            if !cidrs.contains(&cidr) {
                cidrs.push(cidr);
            }
        }
        Ok(Settings {
            message,
            retry_after,
            allow: cidrs,
        })
    }
}

/// An address or network in CIDR notation, normalized (`10.0.0.0/8`; a
/// bare address gains /32 or /128). Host bits set are refused: `10.0.0.1/8`
/// most likely means something else.
pub fn parse_cidr(text: &str) -> Result<String, String> {
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= bits && p.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| format!("the prefix {p:?} is not a number from 0 to {bits}"))?,
    };
    let network = mask(addr, prefix);
    if network != addr {
        return Err(format!(
            "{addr}/{prefix} has host bits set: the network is {network}/{prefix}"
        ));
    }
    Ok(format!("{addr}/{prefix}"))
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

/// The mode as its file records it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub on: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// When it was last switched, and by whom; none when never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl State {
    /// Maintenance on with `settings`, switched now by `by` (`user@host`).
    pub fn on(settings: &Settings, now: DateTime<Utc>, by: String) -> State {
        State {
            on: true,
            message: Some(settings.message.clone()),
            retry_after: Some(settings.retry_after),
            allow: settings.allow.clone(),
            since: Some(now),
            by: Some(by),
        }
    }

    pub fn off(now: DateTime<Utc>, by: String) -> State {
        State {
            on: false,
            since: Some(now),
            by: Some(by),
            ..State::default()
        }
    }

    /// One line for `status` and `maintenance status`.
    pub fn describe(&self) -> String {
        let when = match (&self.since, &self.by) {
            (Some(since), Some(by)) => {
                format!(" since {} by {by}", since.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            _ => String::new(),
        };
        if !self.on {
            return format!("maintenance: off{when}");
        }
        let allowed = if self.allow.is_empty() {
            "no address allowed through".to_owned()
        } else {
            format!("allowed through: {}", self.allow.join(", "))
        };
        format!(
            "maintenance: ON{when}; 503 with Retry-After {}s; {allowed}; message: {}",
            self.retry_after.unwrap_or_default(),
            self.message.as_deref().unwrap_or_default()
        )
    }
}

/// The state a maintenance file records; a missing file is off. `None`
/// when the file has no readable state (edited by hand).
pub fn parse(text: Option<&str>) -> Option<State> {
    let Some(text) = text else {
        return Some(State::default());
    };
    let line = text.lines().find_map(|l| l.strip_prefix(STATE_PREFIX))?;
    serde_json::from_str(line).ok()
}

/// Text as HTML character data or an attribute value: markup, quotes and
/// control characters escaped, and `$` and `\`, which nginx would read as
/// a variable or an escape.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '$' => out.push_str("&#36;"),
            '\\' => out.push_str("&#92;"),
            c if c.is_control() => out.push_str(&format!("&#{};", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A value as an nginx double-quoted string, on one line (nginx reads
/// `\n`, `\r` and `\t` back). The text must hold no `$`: nginx would read a
/// variable there.
fn nginx_string(text: &str) -> Result<String> {
    if text.contains('$') {
        bail!("refusing to write a '$' into nginx's maintenance page");
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    if quoted.len() > MAX_NGINX_STRING {
        bail!(
            "the maintenance page is {} bytes once escaped, more than nginx takes ({MAX_NGINX_STRING}); shorten the message",
            quoted.len()
        );
    }
    Ok(quoted)
}

/// The HTML page.
pub fn html_page(message: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Down for maintenance</title></head>\n\
         <body style=\"font-family: sans-serif; max-width: 40em; margin: 4em auto; padding: 0 1em\">\
         <h1>Down for maintenance</h1>\n<p>{}</p></body></html>\n",
        escape_html(message)
    )
}

/// The JSON answer. `$` is written `\u0024`, which JSON readers read back.
pub fn json_page(message: &str, retry_after: u32) -> String {
    serde_json::json!({
        "status": "maintenance",
        "message": message,
        "retry_after": retry_after,
    })
    .to_string()
    .replace('$', "\\u0024")
}

const HEADER: &str = "# Rendered by cryptus: do not edit. `cryptus maintenance on|off` rewrites this file.\n\
# Included at server level by app.conf; see docs/maintenance.md.";

/// The file for `state`: its state line, and when on, the directives.
pub fn render(state: &State) -> Result<String> {
    let line = serde_json::to_string(state).context("encoding the maintenance state")?;
    let mut text = format!("{HEADER}\n{STATE_PREFIX}{line}\n");
    if !state.on {
        text.push_str("# maintenance is off: nothing here.\n");
        return Ok(text);
    }
    let message = state.message.as_deref().unwrap_or(DEFAULT_MESSAGE);
    let retry_after = state.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
    if retry_after > MAX_RETRY_AFTER {
        bail!("Retry-After {retry_after} is more than {MAX_RETRY_AFTER} seconds");
    }
    for cidr in &state.allow {
        // Only what parses again as a normalized CIDR reaches nginx.
        if parse_cidr(cidr).as_deref() != Ok(cidr.as_str()) {
            bail!("refusing to write the address {cidr:?} into nginx's configuration");
        }
        text.push_str(&format!("allow {cidr};\n"));
    }
    let html = nginx_string(&html_page(message))?;
    let json = nginx_string(&json_page(message, retry_after))?;
    text.push_str(&format!(
        "deny all;\n\
         # The denial answers with the page the client accepts.\n\
         set $cryptus_maintenance_page @cryptus_maintenance_html;\n\
         if ($http_accept ~* \"application/json|\\+json\") {{\n\
         \x20   set $cryptus_maintenance_page @cryptus_maintenance_json;\n\
         }}\n\
         error_page 403 = $cryptus_maintenance_page;\n\
         location @cryptus_maintenance_html {{\n\
         \x20   allow all;\n\
         \x20   types {{ }}\n\
         \x20   default_type text/html;\n\
         \x20   charset utf-8;\n\
         \x20   add_header Retry-After {retry_after} always;\n\
         \x20   add_header Cache-Control \"no-store\" always;\n\
         \x20   return 503 {html};\n\
         }}\n\
         location @cryptus_maintenance_json {{\n\
         \x20   allow all;\n\
         \x20   types {{ }}\n\
         \x20   default_type application/json;\n\
         \x20   add_header Retry-After {retry_after} always;\n\
         \x20   add_header Cache-Control \"no-store\" always;\n\
         \x20   return 503 {json};\n\
         }}\n"
    ));
    Ok(text)
}

/// Whether nginx's loaded configuration (`nginx -T`) includes the
/// maintenance file: an `app.conf` older than maintenance mode does not,
/// and would go on serving.
fn includes_maintenance(dump: &str) -> bool {
    dump.lines().any(|line| {
        let line = line.trim();
        !line.starts_with('#')
            && line.starts_with("include")
            && line.contains(&format!("{}/maintenance", nginx::STATE_DIR))
    })
}

/// The state nginx's state volume holds for this project.
pub async fn read(nginx: &Nginx<'_>) -> Result<Option<State>> {
    let text = nginx
        .read(MAINTENANCE_FILE)
        .await
        .with_context(|| format!("reading {MAINTENANCE_FILE} in {}", nginx.container))?;
    Ok(parse(text.as_deref()))
}

/// The maintenance file as this cryptus renders its recorded state, when
/// that differs from the file nginx has: what `start` writes with nginx's
/// other files, so the mode survives as it was. A missing file (off) needs
/// nothing; one with no readable state is left as it is, with a warning.
pub async fn rerendered(
    nginx: &Nginx<'_>,
    printer: &crate::output::Printer,
) -> Result<Option<String>> {
    let Some(text) = nginx
        .read(MAINTENANCE_FILE)
        .await
        .with_context(|| format!("reading {MAINTENANCE_FILE} in {}", nginx.container))?
    else {
        return Ok(None);
    };
    let Some(state) = parse(Some(&text)) else {
        printer.warn(format!(
            "{MAINTENANCE_FILE} in {} records no readable state, so it is kept as it is; `cryptus maintenance off` writes it again",
            nginx.container
        ));
        return Ok(None);
    };
    let wanted = render(&state)?;
    Ok((wanted != text).then_some(wanted))
}

/// What `maintenance on|off` asks.
pub enum Switch {
    On(Settings),
    Off,
}

/// Switches maintenance on or off under the deploy lock (so it never races
/// a deploy), through one apply, and records it in the history. Returns
/// the state now in force.
pub async fn switch(
    stack: &Stack<'_>,
    want: Switch,
    lock_wait: std::time::Duration,
) -> Result<State> {
    let lb = state::lb(stack).await?;
    let nginx = Nginx::of(stack.engine, &lb.container);
    let by = format!("{}@{}", crate::lock::user(), crate::lock::hostname());
    let began = std::time::Instant::now();
    let lock = stack.lock("maintenance", lock_wait).await?;
    let result = async {
        let wanted = match &want {
            Switch::On(settings) => {
                check_included(&nginx).await?;
                State::on(settings, Utc::now(), by)
            }
            Switch::Off => State::off(Utc::now(), by),
        };
        let text = render(&wanted)?;
        let before = nginx
            .read(MAINTENANCE_FILE)
            .await
            .with_context(|| format!("reading {MAINTENANCE_FILE} in {}", nginx.container))?;
        nginx
            .apply(&[(MAINTENANCE_FILE, text.as_str())])
            .await
            .with_context(|| format!("applying {MAINTENANCE_FILE} in {}", nginx.container))?;
        if wanted.on && health_in_maintenance(&lb.addr).await {
            // Health must stay open: deploys, rollbacks and monitors need it.
            let back = match before {
                Some(text) => text,
                None => render(&State::default())?,
            };
            nginx
                .apply(&[(MAINTENANCE_FILE, back.as_str())])
                .await
                .with_context(|| {
                    format!("putting the previous {MAINTENANCE_FILE} back in {}", nginx.container)
                })?;
            return Err(usage(
                "with maintenance on, /api/health answered 503 too, so it was switched back",
                "add `allow all;` to `location = /api/health` in nginx/app.conf, as `cryptus init` writes it (docs/maintenance.md)",
            ));
        }
        record(stack, &lb, &wanted, began.elapsed().as_secs_f64()).await;
        Ok::<_, anyhow::Error>(wanted)
    }
    .await;
    if let Err(err) = lock.release().await {
        stack
            .printer
            .warn(format!("releasing the deploy lock: {err:#}"));
    }
    result
}

/// Refuses maintenance an nginx would not serve: its configuration must
/// include the file.
pub async fn check_included(nginx: &Nginx<'_>) -> Result<()> {
    let output = nginx
        .engine
        .exec(&nginx.container, &["nginx", "-T", "-c", nginx::CONF])
        .await
        .with_context(|| format!("reading nginx's configuration in {}", nginx.container))?;
    if output.code != 0 {
        return Err(failed_with_hint(
            format!(
                "nginx's configuration in {} does not pass `nginx -T`: {}",
                nginx.container,
                output.stderr.trim()
            ),
            "fix nginx/nginx.conf and nginx/app.conf, then run `cryptus health`",
        ));
    }
    if !includes_maintenance(&output.stdout) {
        return Err(usage(
            format!(
                "nginx's configuration in {} does not include {}/{MAINTENANCE_FILE}, so maintenance mode would change nothing",
                nginx.container,
                nginx::STATE_DIR
            ),
            "add `include /etc/nginx/cryptus/maintenance[.]conf;` at the top of nginx/app.conf and `allow all;` to its `location = /api/health`, as `cryptus init` writes them (docs/maintenance.md)",
        ));
    }
    Ok(())
}

/// Whether `/api/health` through the load balancer gets maintenance's 503
/// (its Retry-After tells it from the app's own 503). An answer that does
/// not come says nothing against maintenance.
async fn health_in_maintenance(lb_addr: &str) -> bool {
    let url = format!("http://{lb_addr}{}", crate::health::HEALTH_PATH);
    match crate::health::client()
        .get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
    {
        Ok(answer) => {
            answer.status().as_u16() == 503 && answer.headers().contains_key("retry-after")
        }
        Err(err) => {
            tracing::debug!("{url}: {err}");
            false
        }
    }
}

/// A maintenance switch's side in the history: the color that serves,
/// its release and task count (maintenance changes none of them).
pub fn history_side(
    color: crate::stack::Color,
    release: crate::stack::Release,
    replicas: u32,
) -> Side {
    Side {
        color,
        image: release.image,
        version: release.version,
        image_id: None,
        replicas,
    }
}

/// A maintenance switch's reason in the history.
pub fn history_reason(wanted: &State) -> String {
    if wanted.on {
        format!("on: {}", wanted.message.as_deref().unwrap_or_default())
    } else {
        "off".to_owned()
    }
}

/// The history entry: from and to the color that serves, its release.
async fn record(stack: &Stack<'_>, lb: &state::Lb, wanted: &State, seconds: f64) {
    let served = nginx::served_color(&crate::health::client(), &lb.status_addr).await;
    let containers = stack.containers().await.unwrap_or_default();
    let Ok(color) = served else {
        stack
            .printer
            .warn("maintenance is not recorded in the history: nginx names no served color");
        return;
    };
    let of_color = of_service(&containers, color.service());
    let Some(release) = release_of(&of_color) else {
        stack.printer.warn(format!(
            "maintenance is not recorded in the history: {color} has no container"
        ));
        return;
    };
    let running = of_color.iter().filter(|c| c.running).count() as u32;
    let side = history_side(color, release, running);
    let reason = history_reason(wanted);
    state::record(
        stack,
        state::Record {
            operation: history::operation::MAINTENANCE.to_owned(),
            from: side.clone(),
            to: side,
            outcome: Outcome::Ok,
            reason: Some(reason),
            durations: [("total".to_owned(), seconds)].into_iter().collect(),
            hooks: Vec::new(),
        },
        // Notifications announce switches of traffic, not maintenance.
        &[],
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(message: &str, retry: u32, allow: &[&str]) -> Result<Settings> {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        Settings::new(Some(message.to_owned()), retry, &allow)
    }

    fn code(err: &anyhow::Error) -> u8 {
        crate::error::classify(err).0
    }

    #[test]
    fn cidrs_are_checked_and_normalized() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(parse_cidr(" 192.0.2.7 ").unwrap(), "192.0.2.7/32");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(parse_cidr("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(parse_cidr("::1").unwrap(), "::1/128");
        let host_bits = parse_cidr("10.0.0.1/8").unwrap_err();
        assert!(
            host_bits.contains("the network is 10.0.0.0/8"),
            "{host_bits}"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "example.com",
            "2001:db8::/129",
            "10.0.0.0/8; deny all",
            "all",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_settings_are_usage_errors_and_the_defaults_hold() {
        let defaults = Settings::new(None, DEFAULT_RETRY_AFTER, &[]).unwrap();
        assert_eq!(defaults.message, DEFAULT_MESSAGE);
        assert!(defaults.allow.is_empty());
        let ok = settings("back soon", 0, &["10.0.0.0/8", "10.0.0.0/8", "::1"]).unwrap();
        assert_eq!(ok.allow, ["10.0.0.0/8", "::1/128"]);
        assert!(settings("x", MAX_RETRY_AFTER, &[]).is_ok());
        let long = "é".repeat(MAX_MESSAGE);
        assert!(settings(&long, 1, &[]).is_ok());
        for err in [
            settings("x", MAX_RETRY_AFTER + 1, &[]).unwrap_err(),
            settings("  ", 1, &[]).unwrap_err(),
            settings(&"a".repeat(MAX_MESSAGE + 1), 1, &[]).unwrap_err(),
            settings("x", 1, &["10.0.0.1/8"]).unwrap_err(),
            settings("x", 1, &["nope"]).unwrap_err(),
        ] {
            assert_eq!(code(&err), 2, "{err:#}");
            assert!(crate::error::classify(&err).1.is_some(), "{err:#}");
        }
        let many: Vec<String> = (0..=MAX_ALLOW).map(|n| format!("10.0.{n}.0/24")).collect();
        assert_eq!(code(&Settings::new(None, 1, &many).unwrap_err()), 2);
    }

    #[test]
    fn the_message_is_escaped_for_html_and_for_nginx() {
        let hostile = "<script>alert(\"x\")</script> & 'y' costs $5 \\n;} deny all;\nline";
        let html = html_page(hostile);
        assert!(html.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39; costs &#36;5 &#92;n;} deny all;&#10;line"
        ), "{html}");
        assert!(!html.contains("<script>") && !html.contains('$'));
        let json = json_page(hostile, 60);
        assert!(!json.contains('$'), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["message"], hostile);
        assert_eq!(back["retry_after"], 60);
        assert_eq!(back["status"], "maintenance");
        let state = State::on(
            &settings(hostile, 60, &[]).unwrap(),
            Utc::now(),
            "a@b".into(),
        );
        let text = render(&state).unwrap();
        // Each page is one quoted nginx string, on one line.
        let returns: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("return 503 "))
            .collect();
        assert_eq!(returns.len(), 2, "{text}");
        for line in returns {
            let value = line.trim().strip_prefix("return 503 \"").unwrap();
            let value = value.strip_suffix("\";").unwrap();
            // Every quote inside is escaped, and no variable is read.
            let unescaped_quote = value
                .char_indices()
                .any(|(i, c)| c == '"' && !value[..i].ends_with('\\'));
            assert!(!unescaped_quote, "{line}");
            assert!(!value.contains('$'), "{line}");
        }
        assert_eq!(parse(Some(&text)), Some(state));
    }

    #[test]
    fn the_longest_message_fits_in_an_nginx_string() {
        for c in ["$", "\u{1}", "\"", "😀"] {
            let worst = c.repeat(MAX_MESSAGE);
            let state = State::on(&settings(&worst, 1, &[]).unwrap(), Utc::now(), "a@b".into());
            assert!(render(&state).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn on_denies_all_but_the_allowed_and_answers_503_with_retry_after() {
        let state = State::on(
            &settings("back at 5", 120, &["172.17.0.1", "10.0.0.0/8"]).unwrap(),
            Utc::now(),
            "ann@box".into(),
        );
        let text = render(&state).unwrap();
        let allow = text
            .find("allow 172.17.0.1/32;\nallow 10.0.0.0/8;\n")
            .unwrap();
        let deny = text.find("deny all;").unwrap();
        assert!(allow < deny, "{text}");
        assert!(text.contains("error_page 403 = $cryptus_maintenance_page;"));
        assert_eq!(
            text.matches("add_header Retry-After 120 always;").count(),
            2
        );
        assert_eq!(text.matches("    allow all;\n").count(), 2, "{text}");
        assert!(text.contains("default_type application/json;"));
        assert!(text.contains("default_type text/html;"));
        assert!(text.contains("<p>back at 5</p>"));
        // An address that does not parse again never reaches nginx.
        let mut forged = state.clone();
        forged.allow = vec!["10.0.0.0/8; allow all".into()];
        assert!(render(&forged).is_err());
        forged.allow.clear();
        forged.retry_after = Some(MAX_RETRY_AFTER + 1);
        assert!(render(&forged).is_err());
    }

    #[test]
    fn off_has_no_directive_and_a_missing_file_is_off() {
        let off = State::off(Utc::now(), "ann@box".into());
        let text = render(&off).unwrap();
        assert!(
            text.lines()
                .all(|l| l.trim().is_empty() || l.starts_with('#')),
            "{text}"
        );
        assert_eq!(parse(Some(&text)), Some(off.clone()));
        assert!(off.describe().starts_with("maintenance: off since "));
        assert_eq!(parse(None), Some(State::default()));
        assert_eq!(State::default().describe(), "maintenance: off");
        assert_eq!(parse(Some("deny all;\n")), None);
        assert_eq!(parse(Some("# state: {broken\n")), None);
    }

    #[test]
    fn the_description_says_what_clients_get() {
        let on = State::on(
            &settings("back soon", 300, &["10.0.0.0/8"]).unwrap(),
            DateTime::parse_from_rfc3339("2026-01-02T15:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
            "ann@box".into(),
        );
        assert_eq!(
            on.describe(),
            "maintenance: ON since 2026-01-02 15:04:05 UTC by ann@box; 503 with Retry-After 300s; allowed through: 10.0.0.0/8; message: back soon"
        );
    }

    #[test]
    fn the_include_is_found_in_nginx_t() {
        let dump = "# configuration file /etc/cryptus/nginx/app.conf:\n\
                    include /etc/nginx/cryptus/maintenance[.]conf;\n";
        assert!(includes_maintenance(dump));
        let commented = "# include /etc/nginx/cryptus/maintenance[.]conf;\n";
        assert!(!includes_maintenance(commented));
        assert!(!includes_maintenance(
            "include /etc/nginx/cryptus/http.conf;\n"
        ));
    }
}
