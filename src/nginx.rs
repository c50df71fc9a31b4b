//! nginx: rendering the files cryptus owns, and applying them to the running
//! load balancer (write, `nginx -t`, reload), and reading the color it serves.
//!
//! cryptus owns three files in the `nginx-state` volume, mounted at
//! [`STATE_DIR`]: `upstream.conf` names the running containers of the active
//! color, `http.conf` holds the rate-limit zones and HTTPS, and
//! `maintenance.conf` maintenance mode (see `maintenance`). Each write goes to a
//! temporary name and is renamed into place inside the container, so nginx
//! never reads half a file.

use std::cell::Cell;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::engine::{Container, Engine, WaitingShell};
use crate::stack::Color;
use crate::wait::{self, Limits, Seen};

/// Where nginx reads the files cryptus renders.
pub const STATE_DIR: &str = "/etc/nginx/cryptus";
pub const UPSTREAM_FILE: &str = "upstream.conf";
pub const HTTP_FILE: &str = "http.conf";
/// Maintenance mode (see `maintenance`), included by app.conf.
pub const MAINTENANCE_FILE: &str = "maintenance.conf";
/// The deployment history (see `history`).
pub const HISTORY_FILE: &str = "history.json";
/// The replica counts the next deploy of each color starts (see `switch::state`).
pub const PENDING_FILE: &str = "replicas.json";
/// What a former start ran (see `recorded`).
pub const STARTED_FILE: &str = "releases.json";
/// nginx's main configuration inside its container: the project's `nginx/`
/// directory is mounted at `/etc/cryptus/nginx`.
pub const CONF: &str = "/etc/cryptus/nginx/nginx.conf";
/// The internal status port: stub_status and the served color.
pub const STATUS_PORT: u16 = 8081;
/// The load balancer's port inside its container.
pub const HTTP_PORT: u16 = 80;

const HEADER: &str =
    "# Rendered by cryptus: do not edit. cryptus rewrites this file on every deploy.";

/// The upstream file for `color`, naming each of its containers.
pub fn render_upstream(color: Color, servers: &[String]) -> Result<String> {
    if servers.is_empty() {
        bail!("the {color} color has no running container to send traffic to");
    }
    let mut text = format!(
        "{HEADER}\n# active: {color}\nmap $host $cryptus_active_color {{\n    default \"{color}\";\n}}\n\nupstream cryptus_app {{\n"
    );
    for server in servers {
        check_server(server)?;
        text.push_str(&format!("    server {server};\n"));
    }
    // Kept-alive connections to the app: a reload opens new ones to the new color.
    text.push_str("    keepalive 32;\n}\n");
    Ok(text)
}

/// The upstream file for `color` on a Swarm: one server, the color
/// service's `tasks.<service>` name, which nginx (1.27.3 and newer) keeps
/// resolving through the swarm's DNS, so tasks that move or scale are
/// followed with no reload. `backups` are addresses of that color's tasks
/// known now, as backup servers: a reload's new workers start with no
/// answer for the name yet, and without them would answer 502 until
/// their first lookup; once it answers, the name's tasks serve.
pub fn render_resolved_upstream(
    color: Color,
    service: &str,
    port: u16,
    backups: &[std::net::IpAddr],
) -> Result<String> {
    if service.is_empty()
        || !service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        bail!("refusing to write the upstream server {service:?} into nginx's configuration");
    }
    Ok(format!(
        "{HEADER}\n# active: {color}\nmap $host $cryptus_active_color {{\n    default \"{color}\";\n}}\n\n\
         upstream cryptus_app {{\n    zone cryptus_app 64k;\n    resolver 127.0.0.11 valid=1s ipv6=off;\n\
         \x20   server tasks.{service}:{port} resolve max_fails=1 fail_timeout={SWARM_FAIL_TIMEOUT};\n{}    keepalive 32;\n}}\n",
        backups
            .iter()
            .map(|addr| format!("    server {addr}:{port} backup;\n"))
            .collect::<String>()
    ))
}

/// How long a task nginx failed to reach (one failure: `max_fails=1`) is
/// left out on a Swarm: longer than the swarm takes to mark a lost node
/// Down and drop its tasks from `tasks.<service>` (about 15 to 20 s), so a
/// lost node gets one request that fails over, then none. A task that
/// failed once for a passing reason is back after it; the others serve.
const SWARM_FAIL_TIMEOUT: &str = "30s";

/// The proxy settings of the app's locations on a Swarm, where a node can
/// be lost with requests in flight to its tasks. A connection to a lost
/// node is never refused, it goes unanswered: the connect timeout is short
/// (the overlay answers in a millisecond when the task is there), and the
/// read timeout bounds a request hung on a node that went away. A request
/// as slow as the app's slowest legitimate one (2 s) that was hung there
/// waits the timeout, then its whole answer from another task: 2.8 s
/// keeps that within 5 s (the slowest answer plus 3 s) with room for the
/// new connection, and is still 40% above the slowest answer, so a slow
/// answer from a busy node is not taken for a lost one (the benchmark saw
/// 5.008 s with 3 s). An error or a timeout passes the request to the next
/// task; nginx does that only for idempotent requests (a POST already sent
/// is not sent twice), and within 5 s. The tries are bounded by that time, not counted: a scale-down
/// removes several tasks at once, and nginx may still hold their addresses
/// until it resolves the name again (each failed one is then left out).
pub const SWARM_PROXY: &str = "# Swarm: a lost node's requests fail over (docs/swarm.md).
proxy_connect_timeout 500ms;
proxy_read_timeout 2800ms;
proxy_next_upstream error timeout;
proxy_next_upstream_tries 0;
proxy_next_upstream_timeout 5s;
";

/// The project's `app.conf` as nginx reads it on a Swarm: its server-level
/// statements (outside any block) of the directives [`SWARM_PROXY`] sets
/// give way to it, wherever they sit on their lines; every other
/// statement, and whatever a block (a location) sets for itself, stays as
/// written.
pub fn swarm_app_conf(text: &str) -> String {
    let ours: Vec<&str> = SWARM_PROXY
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| !word.starts_with('#'))
        .collect();
    let mut out = String::with_capacity(text.len() + SWARM_PROXY.len());
    let mut kept = 0;
    for (start, end) in top_level_statements(text) {
        let directive = text[start..end]
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if ours.contains(&directive) {
            out.push_str(&text[kept..start]);
            kept = end;
        }
    }
    out.push_str(&text[kept..]);
    out.push('\n');
    out.push_str(SWARM_PROXY);
    out
}

/// The byte ranges of the statements of an nginx file outside any block
/// (`directive args;`, the `;` included), skipping comments and quoted
/// strings; a block statement (`location ... { }`) is never one.
fn top_level_statements(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let (mut depth, mut start, mut quote) = (0usize, None, None);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '#' => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
            '"' | '\'' => {
                quote = Some(c);
                start = start.or(Some(i));
            }
            '{' => {
                depth += 1;
                start = None;
            }
            '}' => {
                depth = depth.saturating_sub(1);
                start = None;
            }
            ';' if depth == 0 => {
                if let Some(begun) = start.take() {
                    found.push((begun, i + 1));
                }
            }
            c if depth == 0 && !c.is_whitespace() => {
                start = start.or(Some(i));
            }
            _ => {}
        }
    }
    found
}

/// A canary in progress: `color` takes `percent` of the traffic, the
/// served color the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Canary {
    pub color: Color,
    pub percent: u8,
}

/// What an nginx configuration serves: one color, or during a canary that
/// color and a share for the other. nginx reports it as it has it loaded
/// (`$cryptus_active_color`): `blue`, or `blue;canary=green:10`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub color: Color,
    pub canary: Option<Canary>,
}

impl Served {
    pub fn color(color: Color) -> Served {
        Served {
            color,
            canary: None,
        }
    }

    pub fn parse(text: &str) -> Option<Served> {
        let text = text.trim();
        let Some((color, canary)) = text.split_once(";canary=") else {
            return Some(Served::color(Color::parse(text)?));
        };
        let (canary, percent) = canary.split_once(':')?;
        let canary = Canary {
            color: Color::parse(canary)?,
            percent: percent.parse().ok().filter(|p| (1..=99).contains(p))?,
        };
        let color = Color::parse(color)?;
        (canary.color != color).then_some(Served {
            color,
            canary: Some(canary),
        })
    }
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.canary {
            None => write!(f, "{}", self.color),
            Some(Canary { color, percent }) => write!(f, "{};canary={color}:{percent}", self.color),
        }
    }
}

/// The upstream file during a canary: `served`'s containers and the
/// canary's, each with its weight, chosen per client by a consistent hash
/// of `cookie` (the address when a request has none), so a client keeps
/// its color while the canary's share grows.
pub fn render_canary_upstream(
    served: Served,
    servers: &[(String, u32)],
    cookie: &str,
) -> Result<String> {
    let Some(canary) = served.canary else {
        bail!("a canary upstream needs a canary");
    };
    if !is_cookie_name(cookie) {
        bail!("refusing the cookie name {cookie:?} in nginx's configuration");
    }
    let mut text = format!(
        "{HEADER}\n# active: {}\n# canary: {} {}\nmap $host $cryptus_active_color {{\n    default \"{served}\";\n}}\n\n\
         map $cookie_{cookie} $cryptus_canary_key {{\n    \"\" $remote_addr;\n    default $cookie_{cookie};\n}}\n\n\
         upstream cryptus_app {{\n    hash $cryptus_canary_key consistent;\n",
        served.color, canary.color, canary.percent
    );
    for (server, weight) in servers {
        check_server(server)?;
        text.push_str(&format!("    server {server} weight={weight};\n"));
    }
    text.push_str("    keepalive 32;\n}\n");
    Ok(text)
}

/// Whether nginx can read a cookie of this name as `$cookie_NAME`: 1 to 64
/// letters, digits and `_`.
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A server name safe to write into nginx's configuration.
fn check_server(server: &str) -> Result<()> {
    if server.is_empty()
        || !server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
    {
        bail!("refusing to write the upstream server {server:?} into nginx's configuration");
    }
    Ok(())
}

/// The color an upstream file routes to, when the whole file agrees on it:
/// the `# active:` line [`render_upstream`] writes, the color nginx reports
/// (`map ... default "COLOR"`), and every `server` line naming a container
/// of that color (`<project>-cryptus-COLOR-<n>:<port>`). A file edited so
/// that one line says otherwise names no color: a comment alone is never
/// trusted to move traffic.
pub fn upstream_color(text: &str) -> Option<Color> {
    upstream_served(text).map(|served| served.color)
}

/// What an upstream file serves, when the whole file agrees on it (see
/// [`upstream_color`]); a canary's file also says the canary (`# canary:
/// COLOR PERCENT`), and its servers name containers of either color.
pub fn upstream_served(text: &str) -> Option<Served> {
    let mut active = None;
    let mut canary = None;
    let mut reported = None;
    let mut servers = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(color) = line.strip_prefix("# active: ") {
            if active.is_some() {
                return None;
            }
            active = Some(Color::parse(color)?);
        } else if let Some(rest) = line.strip_prefix("# canary: ") {
            if canary.is_some() {
                return None;
            }
            let (color, percent) = rest.split_once(' ')?;
            canary = Some(Canary {
                color: Color::parse(color)?,
                percent: percent.parse().ok()?,
            });
        } else if let Some(color) = line.strip_prefix("default \"") {
            reported = Some(color.strip_suffix("\";")?.to_owned());
        } else if let Some(server) = line.strip_prefix("server ") {
            servers.push(
                server
                    .strip_suffix(';')?
                    .split_whitespace()
                    .next()?
                    .to_owned(),
            );
        }
    }
    let served = Served {
        color: active?,
        canary,
    };
    let names_color = |server: &String, color: Color| {
        let host = server
            .rsplit_once(':')
            .map_or(server.as_str(), |(host, _)| host);
        host.rsplit_once('-').is_some_and(|(prefix, number)| {
            !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
                && (prefix == color.service() || prefix.ends_with(&format!("-{}", color.service())))
        })
    };
    let named = |color: Color| servers.iter().any(|server| names_color(server, color));
    let agrees = reported.as_deref() == Some(served.to_string().as_str())
        && Served::parse(&served.to_string()) == Some(served)
        && !servers.is_empty()
        && servers.iter().all(|server| {
            names_color(server, served.color)
                || canary.is_some_and(|canary| names_color(server, canary.color))
        })
        && named(served.color)
        && canary.is_none_or(|canary| named(canary.color));
    agrees.then_some(served)
}

/// A rate as nginx writes it: `30r/s` or `600r/m`.
pub fn check_rate(rate: &str) -> Result<(), String> {
    let ok = rate
        .strip_suffix("r/s")
        .or_else(|| rate.strip_suffix("r/m"))
        .is_some_and(|n| {
            !n.is_empty() && n.len() <= 9 && n.chars().all(|c| c.is_ascii_digit()) && n != "0"
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "rate {rate:?} is invalid: write it as nginx does, e.g. 30r/s or 600r/m"
        ))
    }
}

/// The version in `nginx -v`'s answer: `nginx version: nginx/1.30.6` (or a
/// build's `nginx version: nginx/1.27.4 (Ubuntu)`).
pub fn parse_version(text: &str) -> Option<String> {
    let rest = text.split("nginx/").nth(1)?;
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.');
    (!version.is_empty() && version.starts_with(|c: char| c.is_ascii_digit()))
        .then(|| version.to_owned())
}

/// Whether an nginx version (`1.27.4`) has `keepalive_min_timeout`.
pub fn has_keepalive_min_timeout(version: &str) -> bool {
    at_least(version, (1, 27, 4))
}

/// Whether an nginx version has the open-source upstream `resolve`
/// parameter (and `resolver` inside an upstream block): 1.27.3.
pub fn has_upstream_resolve(version: &str) -> bool {
    at_least(version, (1, 27, 3))
}

/// Whether `version` (`1.27`, `1.30.6`) is `least` or later.
fn at_least(version: &str, least: (u32, u32, u32)) -> bool {
    let parts: Vec<u32> = version
        .trim()
        .split('.')
        .map_while(|part| part.parse().ok())
        .collect();
    parts.len() >= 2 && (parts[0], parts[1], parts.get(2).copied().unwrap_or(0)) >= least
}

/// A Swarm upstream ([`render_resolved_upstream`]) for an nginx without
/// `resolve` (older than 1.27.3): each `server tasks.<service>:<port>
/// resolve ...` becomes one server per address in `addresses` for that
/// service, with the same parameters (weights too), and the upstream's
/// `resolver` goes; backup servers already among them go. A service with
/// no address given keeps its name, which nginx then resolves once, when
/// it loads the file. Either way nginx follows no task that moves until
/// the file is rendered again.
pub fn pin_upstream(
    text: &str,
    addresses: &std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
) -> String {
    let pinned: Vec<std::net::IpAddr> = addresses.values().flatten().copied().collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let words: Vec<&str> = line
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .collect();
        match words.as_slice() {
            ["resolver", ..] => continue,
            ["server", target, "resolve", rest @ ..] => {
                let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
                let service = host.strip_prefix("tasks.").unwrap_or(host);
                let rest = rest.iter().map(|w| format!(" {w}")).collect::<String>();
                match addresses.get(service).filter(|a| !a.is_empty()) {
                    Some(addrs) => {
                        for addr in addrs {
                            out.push_str(&format!("    server {addr}:{port}{rest};\n"));
                        }
                    }
                    None => out.push_str(&format!("    server {target}{rest};\n")),
                }
            }
            ["server", target, "backup"]
                if target
                    .rsplit_once(':')
                    .and_then(|(addr, _)| addr.parse().ok())
                    .is_some_and(|addr| pinned.contains(&addr)) =>
            {
                continue;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// What http.conf says.
pub struct HttpSettings<'a> {
    pub site_rate: &'a str,
    pub api_rate: &'a str,
    /// Where nginx has it (1.27.4+): `keepalive_min_timeout` keeps idle
    /// keep-alive client connections open through a reload instead of
    /// closing them under a client that is about to send on them.
    pub keepalive_min_timeout: bool,
    /// nginx/ssl/ holds cert.pem and key.pem: serve HTTPS, redirect HTTP.
    pub tls: bool,
}

/// Where the project's certificate and key are, inside nginx's container.
pub const TLS_DIR: &str = "/etc/cryptus/nginx/ssl";

/// The http-level settings: rate-limit zones, `$cryptus_https`, and the
/// HTTPS server when there are certificates.
pub fn render_http(settings: &HttpSettings<'_>) -> Result<String> {
    let (site, api) = (settings.site_rate, settings.api_rate);
    check_rate(site).map_err(anyhow::Error::msg)?;
    check_rate(api).map_err(anyhow::Error::msg)?;
    let mut text = format!(
        "{HEADER}\n\
         limit_req_zone $binary_remote_addr zone=cryptus_site:10m rate={site};\n\
         limit_req_zone $binary_remote_addr zone=cryptus_api:10m rate={api};\n"
    );
    if settings.keepalive_min_timeout {
        text.push_str("keepalive_min_timeout 1s;\n");
    }
    let https = u8::from(settings.tls);
    text.push_str(&format!(
        "map $host $cryptus_https {{\n    default {https};\n}}\n"
    ));
    if settings.tls {
        text.push_str(&format!(
            "server {{\n    listen 443 ssl;\n    server_name _;\n\
             \x20   ssl_certificate {TLS_DIR}/cert.pem;\n\
             \x20   ssl_certificate_key {TLS_DIR}/key.pem;\n\
             \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
             \x20   ssl_session_cache shared:cryptus_tls:10m;\n\
             \x20   add_header Strict-Transport-Security \"max-age=31536000\" always;\n\
             \x20   include /etc/cryptus/nginx/app.conf;\n}}\n"
        ));
    }
    Ok(text)
}

/// An apply started ahead of its content (see [`Nginx::prepare_apply`]).
pub struct Prepared {
    file: String,
    shell: WaitingShell,
}

/// The running nginx container of a project, through the engine.
pub struct Nginx<'a> {
    pub engine: &'a Engine,
    pub container: String,
    /// nginx's status address on this host, when it runs and publishes one:
    /// its state files are read there ([`STATE_PATH`]) rather than through
    /// the engine, whose archive read costs a process in the container.
    pub status_addr: Option<String>,
}

/// Where nginx's status server hands out the state files cryptus reads, as
/// the project's nginx.conf has it; an nginx.conf without it is read through
/// the engine. The header tells its 404 (no such file) from a missing
/// location.
pub const STATE_PATH: &str = "/cryptus/state/";
const STATE_HEADER: &str = "x-cryptus-state";
/// The state files nginx.conf's location serves (and no other).
const SERVED_STATE: [&str; 5] = [
    UPSTREAM_FILE,
    HISTORY_FILE,
    PENDING_FILE,
    STARTED_FILE,
    MAINTENANCE_FILE,
];

impl<'a> Nginx<'a> {
    /// Reaches the container `name` through the engine only.
    pub fn named(engine: &'a Engine, name: String) -> Nginx<'a> {
        Nginx {
            engine,
            container: name,
            status_addr: None,
        }
    }

    /// Reaches `container`, and its status port when it runs and publishes
    /// one.
    pub fn of(engine: &'a Engine, container: &Container) -> Nginx<'a> {
        Nginx {
            engine,
            container: container.name.clone(),
            status_addr: container
                .running
                .then(|| container.published_addr(STATUS_PORT))
                .flatten(),
        }
    }
}

/// A state file through nginx's status server: `Some(None)` when nginx says
/// there is no such file, `None` when this nginx does not serve them (an
/// nginx.conf of the user's own) or does not answer.
async fn read_served(addr: &str, file: &str) -> Option<Option<String>> {
    if !SERVED_STATE.contains(&file) {
        return None;
    }
    let url = format!("http://{addr}{STATE_PATH}{file}");
    let answer = crate::health::client()
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|err| tracing::debug!("reading {url}: {err}"))
        .ok()?;
    answer.headers().get(STATE_HEADER)?;
    match answer.status().as_u16() {
        200 => answer.text().await.ok().map(Some),
        404 => Some(None),
        code => {
            tracing::debug!("{url} answered {code}");
            None
        }
    }
}

/// The line that ends [`APPLY_SCRIPT`]'s input: without it (the caller gave
/// up and closed stdin) nothing is changed.
const APPLY_END: &str = "# cryptus: end of file";

/// Replaces one file, checks nginx's configuration and reloads, in one exec.
/// If nginx rejects the configuration the previous file is put back.
/// Exit 1: rejected (nginx's reason on the output); 3: writing failed;
/// 4: the reload failed; 5: the input ended before [`APPLY_END`].
const APPLY_SCRIPT: &str = r#"f="$1"; conf="$2"; end="$3"
# nginx's workers: processes named nginx whose parent is the master, PID 1.
# Shell builtins only: this runs inside the switch.
workers() {
  for p in /proc/[0-9]*; do
    read -r stat < "$p/stat" 2>/dev/null || continue
    case "$stat" in *"(nginx) "*) ;; *) continue ;; esac
    set -- ${stat##*) }
    [ "$2" = 1 ] && echo "${p#/proc/}"
  done
}
# Read with builtins, into memory, up to the end line: the script may wait
# here, started ahead of the switch (another cryptus may hold the lock
# meanwhile), so nothing is touched before the input is whole.
whole=0; text=""
while IFS= read -r line; do
  [ "$line" = "$end" ] && { whole=1; break; }
  text="$text$line
"
done
[ $whole = 1 ] || exit 5
printf '%s' "$text" > "$f.next" || exit 3
if [ -e "$f" ]; then cp -p "$f" "$f.prev" || exit 3; else rm -f "$f.prev"; fi
mv -f "$f.next" "$f" || exit 3
if ! nginx -t -q -c "$conf" 2>&1; then
  if [ -e "$f.prev" ]; then mv -f "$f.prev" "$f"; else rm -f "$f"; fi
  exit 1
fi
read -r master < /proc/1/stat 2>/dev/null
case "$master" in
  *"(nginx) "*) ;;
  # nginx is not PID 1: let it reload itself.
  *) nginx -s reload -c "$conf" 2>&1 || exit 4; exit 0 ;;
esac
old=" $(echo $(workers)) "
kill -HUP 1 || exit 4
# The master starts new workers, then waits 100 ms before it tells the old
# ones to stop accepting. Tell them as soon as as many new ones run: they
# finish their in-flight requests either way.
tries=0
while [ $tries -lt 200 ]; do
  fresh=0
  for p in $(workers); do
    case "$old" in *" $p "*) ;; *) fresh=$((fresh + 1)) ;; esac
  done
  set -- $old
  if [ $fresh -ge $# ]; then
    [ $# -gt 0 ] && kill -QUIT "$@" 2>/dev/null
    exit 0
  fi
  sleep 0.005
  tries=$((tries + 1))
done
exit 0"#;

impl Nginx<'_> {
    /// A state file's text, `None` when there is none: through nginx's
    /// status server when it serves it, else through the engine (nginx
    /// running or not).
    pub async fn read(&self, file: &str) -> Result<Option<String>> {
        if let Some(addr) = &self.status_addr
            && let Some(text) = read_served(addr, file).await
        {
            return Ok(text);
        }
        let path = format!("{STATE_DIR}/{file}");
        Ok(self
            .engine
            .read_file(&self.container, &path)
            .await?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Writes files into the state directory. While nginx runs, each file is
    /// written under a temporary name and renamed into place, so nginx never
    /// reads half a file (this needs a shell in the image, as the official
    /// images have; without one the engine's archive upload replaces it).
    pub async fn write(&self, files: &[(&str, &str)], running: bool) -> Result<()> {
        if !running {
            // Nothing reads the files until nginx starts.
            let entries: Vec<(&str, &[u8], u32)> = files
                .iter()
                .map(|(name, text)| (*name, text.as_bytes(), 0o644))
                .collect();
            return self
                .engine
                .write_files(&self.container, STATE_DIR, &entries)
                .await;
        }
        for (name, text) in files {
            self.engine
                .put_file(&self.container, STATE_DIR, name, text.as_bytes())
                .await?;
        }
        Ok(())
    }

    /// The version nginx itself reports (`nginx -v`), such as `1.30.6`: any
    /// nginx image, official or not, says it; `None` when it cannot be read,
    /// and then no version-dependent directive is rendered. Needs nginx's
    /// container to run.
    pub async fn version(&self) -> Result<Option<String>> {
        let output = self
            .engine
            .exec(&self.container, &["nginx", "-v"])
            .await
            .with_context(|| format!("asking nginx in {} for its version", self.container))?;
        Ok(parse_version(&format!(
            "{}{}",
            output.stderr, output.stdout
        )))
    }

    /// `nginx -t`: Ok, or the reason nginx gives.
    pub async fn test(&self) -> Result<Result<(), String>> {
        let output = self
            .engine
            .exec(&self.container, &["nginx", "-t", "-q", "-c", CONF])
            .await?;
        if output.code == 0 {
            Ok(Ok(()))
        } else {
            Ok(Err(reason(&format!("{}{}", output.stderr, output.stdout))))
        }
    }

    pub async fn reload(&self) -> Result<()> {
        let output = self
            .engine
            .exec_change(&self.container, &["nginx", "-c", CONF, "-s", "reload"])
            .await
            .with_context(|| format!("reloading nginx in {}", self.container))?;
        if output.code != 0 {
            bail!(
                "reloading nginx in {} failed: {}",
                self.container,
                output.stderr.trim()
            );
        }
        Ok(())
    }

    /// The pids of nginx's worker processes, as the host sees them.
    pub async fn workers(&self) -> Result<Vec<String>> {
        Ok(self
            .engine
            .processes(&self.container)
            .await?
            .into_iter()
            .filter(|(_, command)| command.contains("worker process"))
            .map(|(pid, _)| pid)
            .collect())
    }

    /// Writes the files, checks the result with `nginx -t` and reloads. If
    /// nginx rejects the files, the previous ones are put back and nothing
    /// is reloaded. One file goes in one exec; more, or an image without a
    /// shell, take one engine call per stage.
    pub async fn apply(&self, files: &[(&str, &str)]) -> Result<()> {
        self.apply_with(files, None).await
    }

    /// Starts the exec that will apply `file`, to wait for its content:
    /// [`Nginx::apply_with`] then costs no process start. `None` when it
    /// cannot start (the apply then starts its own).
    pub async fn prepare_apply(&self, file: &str) -> Option<Prepared> {
        let path = format!("{STATE_DIR}/{file}");
        let args = [path.as_str(), CONF, APPLY_END];
        match self
            .engine
            .shell_waiting(&self.container, APPLY_SCRIPT, &args)
            .await
        {
            Ok(shell) => Some(Prepared {
                file: file.to_owned(),
                shell,
            }),
            Err(err) => {
                tracing::debug!("preparing to apply {path}: {err:#}");
                None
            }
        }
    }

    /// [`Nginx::apply`], through `prepared` when it was made for the one
    /// file given; an exec that broke meanwhile is replaced by a new one
    /// (applying the same file twice changes nothing more).
    pub async fn apply_with(
        &self,
        files: &[(&str, &str)],
        prepared: Option<Prepared>,
    ) -> Result<()> {
        if let [(name, text)] = files {
            let path = format!("{STATE_DIR}/{name}");
            let began = std::time::Instant::now();
            let mut input = text.to_string();
            if !input.ends_with('\n') {
                input.push('\n');
            }
            input.push_str(APPLY_END);
            input.push('\n');
            let prepared = prepared.filter(|p| p.file == *name);
            let through_prepared = match prepared {
                Some(prepared) => prepared
                    .shell
                    .finish(input.as_bytes())
                    .await
                    .map_err(|err| tracing::debug!("the prepared apply of {path}: {err:#}"))
                    .ok(),
                None => None,
            };
            let applied = match through_prepared {
                Some(applied) => applied,
                None => {
                    let args = [path.as_str(), CONF, APPLY_END];
                    self.engine
                        .shell(&self.container, APPLY_SCRIPT, &args, input.as_bytes())
                        .await?
                }
            };
            tracing::debug!(
                "{path} written, checked and reloaded in {:?}",
                began.elapsed()
            );
            if let Some(output) = applied {
                let said = format!("{}{}", output.stdout, output.stderr);
                return match output.code {
                    0 => Ok(()),
                    1 => bail!(
                        "nginx rejected the new configuration, so it was not applied: {}",
                        reason(&said)
                    ),
                    4 => bail!(
                        "reloading nginx in {} failed: {}",
                        self.container,
                        said.trim()
                    ),
                    _ => bail!(
                        "writing {path} in {} failed: {}",
                        self.container,
                        said.trim()
                    ),
                };
            }
        }
        let mut previous = Vec::new();
        for (name, _) in files {
            previous.push((*name, self.read(name).await?));
        }
        self.write(files, true).await?;
        if let Err(reason) = self.test().await? {
            let restore: Vec<(&str, &str)> = previous
                .iter()
                .filter_map(|(name, text)| text.as_deref().map(|text| (*name, text)))
                .collect();
            self.write(&restore, true)
                .await
                .context("putting the previous nginx files back")?;
            bail!("nginx rejected the new configuration, so it was not applied: {reason}");
        }
        self.reload().await
    }

    /// Waits until no worker is shutting down (finishing its in-flight
    /// requests after a reload), up to `limit`. Returns how many still are.
    pub async fn drain_shutting_down(&self, limit: Duration) -> Result<usize> {
        let limits = Limits::within(limit, Duration::from_millis(50));
        self.until_idle(limits, |(_, command)| command.contains("shutting down"))
            .await
    }

    /// Waits until the workers `old` have exited, up to `limit`: a reload
    /// tells them to finish their in-flight requests and go. Returns how many
    /// are still busy when the limit passes.
    pub async fn drain(&self, old: &[String], limit: Duration) -> Result<usize> {
        let limits = Limits::within(limit, Duration::from_millis(20));
        self.until_idle(limits, |(pid, _)| old.contains(pid)).await
    }

    /// How many connections nginx holds open to `peers` on `port`: the
    /// established TCP connections in its container's network namespace
    /// (`/proc/net/tcp` and `tcp6`, read through the engine). Read from
    /// nginx's side because the app's image may have no shell to read its
    /// own (the reference app's is `FROM scratch`), and because only
    /// traffic through the load balancer counts there: not a monitor's
    /// scrapes, not cryptus's probes.
    pub async fn connections_to(&self, peers: &[std::net::IpAddr], port: u16) -> Result<usize> {
        let output = self
            .engine
            .exec(&self.container, &["cat", "/proc/net/tcp", "/proc/net/tcp6"])
            .await
            .with_context(|| format!("reading the TCP connections of {}", self.container))?;
        // A host without IPv6 has no tcp6: cat says so and goes on.
        if output.code != 0 && output.stdout.trim().is_empty() {
            bail!(
                "reading the TCP connections of {} failed: {}",
                self.container,
                output.stderr.trim()
            );
        }
        Ok(crate::tcp::established_to(&output.stdout, peers, port))
    }

    /// Looks at nginx's processes under `limits` until none is `busy`.
    /// Running out of time is no error here: busy workers only delay, so
    /// the caller gets how many were busy at the last look.
    async fn until_idle(
        &self,
        limits: Limits,
        busy: impl Fn(&(String, String)) -> bool,
    ) -> Result<usize> {
        let last = Cell::new(0);
        let expired = Cell::new(false);
        let probe = || async {
            let processes = self.engine.processes(&self.container).await?;
            let count = processes.iter().filter(|p| busy(p)).count();
            last.set(count);
            Ok(if count == 0 {
                Seen::Ready(())
            } else {
                Seen::Not(format!("{count} busy"))
            })
        };
        let idle = wait::until(limits, probe, |busy| {
            expired.set(true);
            anyhow!(busy)
        })
        .await;
        match idle {
            Ok(()) => Ok(0),
            Err(_) if expired.get() => Ok(last.get()),
            Err(err) => Err(err),
        }
    }
}

/// The line of nginx's output that says why it refused a configuration.
fn reason(output: &str) -> String {
    output
        .lines()
        .find(|line| line.contains("[emerg]") || line.contains("failed"))
        .unwrap_or(output.trim())
        .trim()
        .to_owned()
}

/// The color the running nginx serves, asked from its status port: this is
/// the configuration nginx has loaded, not the file on disk.
pub async fn served_color(client: &reqwest::Client, status_addr: &str) -> Result<Color> {
    Ok(served(client, status_addr).await?.color)
}

/// What the running nginx serves, canary included, as its loaded
/// configuration says.
pub async fn served(client: &reqwest::Client, status_addr: &str) -> Result<Served> {
    let url = format!("http://{status_addr}/cryptus/active");
    let answer = client
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .with_context(|| format!("asking nginx which color it serves ({url})"))?;
    let code = answer.status();
    let text = answer.text().await.unwrap_or_default();
    if !code.is_success() {
        bail!("nginx answered {code} at {url}");
    }
    Served::parse(&text).with_context(|| format!("nginx names no color at {url}: {text:?}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_nginx_without_resolve_gets_the_tasks_addresses() {
        let backups: Vec<std::net::IpAddr> =
            vec!["10.0.1.5".parse().unwrap(), "10.0.1.9".parse().unwrap()];
        let text =
            render_resolved_upstream(Color::Green, "s_cryptus-green", 3000, &backups).unwrap();
        let mut addresses = std::collections::BTreeMap::new();
        addresses.insert("s_cryptus-green".to_owned(), backups.clone());
        let pinned = pin_upstream(&text, &addresses);
        assert!(!pinned.contains("resolve"), "{pinned}");
        assert!(!pinned.contains("backup"), "{pinned}");
        assert!(
            pinned.contains(
                "\n    server 10.0.1.5:3000 max_fails=1 fail_timeout=30s;\n    server 10.0.1.9:3000 max_fails=1 fail_timeout=30s;\n"
            ),
            "{pinned}"
        );
        assert!(pinned.contains("zone cryptus_app 64k;") && pinned.contains("keepalive 32;"));
        assert!(pinned.contains("# active: green\n") && pinned.contains("default \"green\";"));
        // A service with no address known keeps its name, without resolve.
        let named = pin_upstream(&text, &std::collections::BTreeMap::new());
        assert!(
            named.contains(
                "\n    server tasks.s_cryptus-green:3000 max_fails=1 fail_timeout=30s;\n"
            ),
            "{named}"
        );
        assert!(named.contains("server 10.0.1.9:3000 backup;"), "{named}");
        // Weights and other parameters stay.
        let weighted = "upstream u {\n    server tasks.a:3000 resolve weight=9 max_fails=1;\n}\n";
        let mut one = std::collections::BTreeMap::new();
        one.insert("a".to_owned(), vec!["10.0.0.2".parse().unwrap()]);
        assert_eq!(
            pin_upstream(weighted, &one),
            "upstream u {\n    server 10.0.0.2:3000 weight=9 max_fails=1;\n}\n"
        );
    }

    #[test]
    fn upstream_resolve_is_known_from_1_27_3() {
        assert!(has_upstream_resolve("1.27.3"));
        assert!(has_upstream_resolve("1.30.6"));
        assert!(!has_upstream_resolve("1.27.2"));
        assert!(!has_upstream_resolve("1.22.1"));
        assert!(!has_upstream_resolve(""));
    }

    #[test]
    fn a_resolved_upstream_names_the_tasks_of_one_service() {
        let text = render_resolved_upstream(Color::Green, "shop_cryptus-green", 3000, &[]).unwrap();
        assert!(text.contains("# active: green\n"), "{text}");
        assert!(text.contains("default \"green\";"), "{text}");
        assert!(
            text.contains(
                "\n    server tasks.shop_cryptus-green:3000 resolve max_fails=1 fail_timeout=30s;\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n    resolver 127.0.0.11 valid=1s ipv6=off;\n"),
            "{text}"
        );
        assert!(text.contains("\n    zone cryptus_app 64k;\n"), "{text}");
        let backups = ["10.0.1.5".parse().unwrap(), "10.0.1.6".parse().unwrap()];
        let text = render_resolved_upstream(Color::Green, "s", 3000, &backups).unwrap();
        assert!(
            text.contains(
                "fail_timeout=30s;\n    server 10.0.1.5:3000 backup;\n    server 10.0.1.6:3000 backup;\n    keepalive"
            ),
            "{text}"
        );
        assert!(render_resolved_upstream(Color::Blue, "a;b", 3000, &[]).is_err());
        assert!(render_resolved_upstream(Color::Blue, "", 3000, &[]).is_err());
    }

    use super::*;

    #[test]
    fn on_a_swarm_app_conf_bounds_and_retries_the_proxying() {
        let app = include_str!("../nginx/app.conf");
        let text = swarm_app_conf(app);
        assert!(!text.contains("proxy_connect_timeout 5s;"), "{text}");
        assert!(!text.contains("proxy_read_timeout 60s;"), "{text}");
        assert!(text.ends_with(SWARM_PROXY), "{text}");
        for line in SWARM_PROXY.lines().skip(1) {
            let directive = line.split_whitespace().next().unwrap_or_default();
            assert_eq!(
                text.matches(&format!("\n{directive} ")).count(),
                1,
                "{line}"
            );
        }
        // nginx's default for non-idempotent requests stays: never resent.
        assert!(!text.contains("non_idempotent"), "{text}");
        let located = "location / {\n    proxy_read_timeout 1h;\n}\nproxy_read_timeout 9s;\n";
        let text = swarm_app_conf(located);
        assert!(text.contains("    proxy_read_timeout 1h;"), "{text}");
        assert!(!text.contains("9s"), "{text}");
    }

    /// A user's app.conf as people write them: indented server-level
    /// lines, unindented lines in a location, two statements on a line, a
    /// statement over several lines, comments and quotes.
    #[test]
    fn on_a_swarm_only_server_level_proxy_statements_give_way() {
        let conf = "  proxy_read_timeout 300s;\n\
            location /ws {\nproxy_read_timeout 1h;\nproxy_pass http://cryptus_app;\n}\n\
            proxy_connect_timeout 2s; proxy_buffering off;\n\
            proxy_next_upstream error\n    timeout http_502;\n\
            # proxy_read_timeout 1s; in a comment\n\
            add_header X-Note \"a; b { c\" always;\n\
            proxy_next_upstream_tries 5;\n";
        let text = swarm_app_conf(conf);
        let body = text.strip_suffix(SWARM_PROXY).unwrap();
        for gone in ["300s", "2s;", "http_502", "tries 5"] {
            assert!(!body.contains(gone), "{gone}: {body}");
        }
        for kept in [
            "location /ws {\nproxy_read_timeout 1h;\nproxy_pass http://cryptus_app;\n}",
            "proxy_buffering off;",
            "# proxy_read_timeout 1s; in a comment",
            "add_header X-Note \"a; b { c\" always;",
        ] {
            assert!(body.contains(kept), "{kept}: {body}");
        }
    }

    #[test]
    fn the_upstream_names_each_container_and_the_color() {
        let text = render_upstream(
            Color::Green,
            &[
                "demo-cryptus-green-1:3000".to_owned(),
                "demo-cryptus-green-2:3000".to_owned(),
            ],
        )
        .unwrap();
        assert!(text.contains("upstream cryptus_app {"));
        assert!(text.contains(
            "    server demo-cryptus-green-1:3000;\n    server demo-cryptus-green-2:3000;\n"
        ));
        assert!(text.contains("default \"green\";"));
        assert!(text.contains("keepalive"));
        assert_eq!(upstream_color(&text), Some(Color::Green));
        // One edited line is not enough to move traffic.
        let moved = text.replace("# active: green", "# active: blue");
        assert_eq!(upstream_color(&moved), None);
        let servers = text.replace("cryptus-green-1", "cryptus-blue-1");
        assert_eq!(upstream_color(&servers), None);
        let reported = text.replace("default \"green\"", "default \"blue\"");
        assert_eq!(upstream_color(&reported), None);
        let twice = format!("{text}# active: blue\n");
        assert_eq!(upstream_color(&twice), None);
    }

    #[test]
    fn nginx_reports_a_canary_beside_its_color() {
        let canary = Served {
            color: Color::Blue,
            canary: Some(Canary {
                color: Color::Green,
                percent: 10,
            }),
        };
        assert_eq!(canary.to_string(), "blue;canary=green:10");
        assert_eq!(Served::parse("blue;canary=green:10\n"), Some(canary));
        assert_eq!(Served::parse("green\n"), Some(Served::color(Color::Green)));
        for bad in [
            "blue;canary=blue:10",
            "blue;canary=green:0",
            "blue;canary=green:100",
            "blue;canary=green",
            "blue;canary=purple:10",
            "",
        ] {
            assert_eq!(Served::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_canary_upstream_weighs_both_colors_and_hashes_the_cookie() {
        let served = Served::parse("blue;canary=green:10").unwrap();
        let servers = [
            ("p-cryptus-blue-1:3000".to_owned(), 900),
            ("p-cryptus-green-1:3000".to_owned(), 100),
        ];
        let text = render_canary_upstream(served, &servers, "sid").unwrap();
        assert!(text.contains("default \"blue;canary=green:10\";"), "{text}");
        assert!(text.contains("map $cookie_sid $cryptus_canary_key {\n    \"\" $remote_addr;\n    default $cookie_sid;\n}"), "{text}");
        assert!(text.contains("    hash $cryptus_canary_key consistent;\n    server p-cryptus-blue-1:3000 weight=900;\n    server p-cryptus-green-1:3000 weight=100;\n    keepalive 32;\n"), "{text}");
        assert_eq!(upstream_served(&text), Some(served));
        assert_eq!(upstream_color(&text), Some(Color::Blue));
        // Every line must agree, as for one color.
        let moved = text.replace("# canary: green 10", "# canary: green 50");
        assert_eq!(upstream_served(&moved), None);
        let one_color = text.replace("p-cryptus-green-1", "p-cryptus-blue-2");
        assert_eq!(upstream_served(&one_color), None);
        assert!(render_canary_upstream(served, &servers, "a;b").is_err());
        assert!(render_canary_upstream(Served::color(Color::Blue), &servers, "sid").is_err());
        let evil = [("a:1; } server evil:80".to_owned(), 1)];
        assert!(render_canary_upstream(served, &evil, "sid").is_err());
    }

    #[test]
    fn an_upstream_needs_a_server_and_refuses_injection() {
        assert!(render_upstream(Color::Blue, &[]).is_err());
        assert!(render_upstream(Color::Blue, &["a:1; } server evil:80".to_owned()]).is_err());
        assert!(render_upstream(Color::Blue, &["a:1\nx".to_owned()]).is_err());
    }

    #[test]
    fn an_unknown_file_has_no_color() {
        assert_eq!(upstream_color("upstream x { server a:1; }"), None);

        assert_eq!(upstream_color("# active: purple"), None);
    }

    #[test]
    fn rates() {
        assert!(check_rate("30r/s").is_ok());
        assert!(check_rate("600r/m").is_ok());
        for bad in ["30", "r/s", "0r/s", "30r/h", "3 0r/s", "30r/s;", "-1r/s"] {
            assert!(check_rate(bad).is_err(), "{bad}");
        }
        let settings = |site, api, keepalive_min_timeout, tls| HttpSettings {
            site_rate: site,
            api_rate: api,
            keepalive_min_timeout,
            tls,
        };
        let render_limits =
            |site, api, keepalive| render_http(&settings(site, api, keepalive, false));
        let limits = render_limits("30r/s", "10r/s", false).unwrap();
        assert!(limits.contains("zone=cryptus_site:10m rate=30r/s;"));
        assert!(limits.contains("zone=cryptus_api:10m rate=10r/s;"));
        assert!(!limits.contains("keepalive_min_timeout"));
        assert!(limits.contains("default 0;") && !limits.contains("listen 443"));
        let tls = render_http(&settings("30r/s", "10r/s", false, true)).unwrap();
        assert!(tls.contains("default 1;") && tls.contains("listen 443 ssl;"));
        assert!(tls.contains("ssl_certificate /etc/cryptus/nginx/ssl/cert.pem;"));
        assert!(tls.contains("    include /etc/cryptus/nginx/app.conf;"));
        assert!(
            render_limits("30r/s", "10r/s", true)
                .unwrap()
                .contains("keepalive_min_timeout 1s;")
        );
        assert!(render_limits("1000r/s; evil", "10r/s", false).is_err());
    }

    #[test]
    fn the_version_is_read_from_nginx_v() {
        assert_eq!(
            parse_version("nginx version: nginx/1.30.6\n").as_deref(),
            Some("1.30.6")
        );
        assert_eq!(
            parse_version("nginx version: nginx/1.22.1 (Debian)").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(parse_version("nginx version: openresty/1.25"), None);
        assert_eq!(parse_version("sh: nginx: not found"), None);
        assert_eq!(parse_version("nginx/"), None);
    }

    #[test]
    fn keepalive_min_timeout_came_with_1_27_4() {
        assert!(has_keepalive_min_timeout("1.27.4"));
        assert!(has_keepalive_min_timeout("1.29.0"));
        assert!(has_keepalive_min_timeout("2.0"));
        assert!(!has_keepalive_min_timeout("1.27.3"));
        assert!(!has_keepalive_min_timeout("1.22.1"));
        assert!(!has_keepalive_min_timeout("mainline"));
    }

    /// Starts [`APPLY_SCRIPT`] with this host's `sh`, an `nginx` that passes
    /// every test and reload in PATH, its stdin open.
    fn start_apply(dir: &std::path::Path) -> std::process::Child {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("nginx"), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(bin.join("nginx"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        std::process::Command::new("sh")
            .args(["-c", APPLY_SCRIPT, "sh"])
            .arg(dir.join("upstream.conf"))
            .args(["/dev/null", APPLY_END])
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Feeds `input` to a started apply and closes its stdin: its exit code.
    fn finish_apply(mut child: std::process::Child, input: &[u8]) -> i32 {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait().unwrap().code().unwrap()
    }

    fn run_apply(dir: &std::path::Path, input: &[u8]) -> i32 {
        finish_apply(start_apply(dir), input)
    }

    fn names_in(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_apply_writes_the_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# a\n  server x:3000;  \n\\n and $var\n\n-n\n";
        let input = format!("{text}{APPLY_END}\n");
        assert_eq!(run_apply(dir.path(), input.as_bytes()), 0);
        let written = std::fs::read_to_string(dir.path().join("upstream.conf")).unwrap();
        assert_eq!(written, text);
    }

    /// A prepared apply waits for its input while another cryptus may hold
    /// the lock and apply: while it waits, and once given up (stdin closed
    /// early), it touches nothing.
    #[test]
    fn a_waiting_apply_touches_nothing_until_its_input_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upstream.conf"), "before\n").unwrap();
        let waiting = start_apply(dir.path());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(names_in(dir.path()), ["bin", "upstream.conf"]);
        // Another apply runs whole meanwhile.
        let input = format!("other\n{APPLY_END}\n");
        assert_eq!(run_apply(dir.path(), input.as_bytes()), 0);
        assert_eq!(
            names_in(dir.path()),
            ["bin", "upstream.conf", "upstream.conf.prev"]
        );
        assert_eq!(finish_apply(waiting, b"half of a fi"), 5);
        assert_eq!(run_apply(dir.path(), b"a whole line\n"), 5);
        assert_eq!(run_apply(dir.path(), b""), 5);
        assert_eq!(
            names_in(dir.path()),
            ["bin", "upstream.conf", "upstream.conf.prev"]
        );
        let kept = std::fs::read_to_string(dir.path().join("upstream.conf")).unwrap();
        assert_eq!(kept, "other\n");
    }
}
