//! HTTP asked from inside a container, through exec: on a Swarm the
//! overlay's services answer only there (the edge nginx's probes of the
//! app's tasks, Prometheus for the metric gate). One shell script, run
//! with whatever the image has, and the parsing of its raw answers.

use anyhow::Result;

use crate::engine::Engine;

/// Fetches `/api/health` of each address `tasks.<service>` resolves to (or
/// of one host, with `$4` = `one`), with whatever the image has: curl,
/// bash's `/dev/tcp` (the Debian nginx images have bash), or wget (Alpine's
/// busybox). bash comes before wget: a static busybox's wget can fail to
/// resolve, or crash, where bash's own sockets work. Each answer follows a line `@@ <address>`; a
/// fetch that fails prints `HTTP/1.0 000 <why>`. Each fetch ends within
/// 3 s, its connect too: the address of a task that went away is not
/// refused on the overlay, its connect waits out the kernel's retries.
const PROBE_SCRIPT: &str = r#"name="$1"; port="$2"; path="$3"; how="$4"
get() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -i -m 3 "http://$1:$port$path" || echo "HTTP/1.0 000 curl exit $?"
  elif command -v bash >/dev/null 2>&1; then
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: cryptus\r\nConnection: close\r\n\r\n" "$2" >&3
      exec cat <&3' "$1" "$port" "$path" || echo "HTTP/1.0 000 no connection"
  elif command -v wget >/dev/null 2>&1; then
    body=$(wget -q -T 3 -O- "http://$1:$port$path" 2>&1) && printf 'HTTP/1.0 200 OK\r\n\r\n%s\n' "$body" \
      || printf 'HTTP/1.0 000 %s\n' "$body"
  else
    echo "HTTP/1.0 000 no curl, wget or bash in the image"
  fi
}
if [ "$how" = one ]; then
  addrs="$name"
else
  addrs=$(getent ahostsv4 "$name" 2>/dev/null | while read -r a _; do echo "$a"; done | sort -u)
  [ -n "$addrs" ] || addrs=$(nslookup "$name" 2>/dev/null | sed -n '/^Name:/,$s/^Address[^:]*: *//p' | sort -u)
fi
for a in $addrs; do echo "@@ $a"; get "$a"; echo; done
"#;

/// One raw HTTP answer's code and body; why there is none, when the fetch
/// failed (code 000) or printed no HTTP.
pub fn split_answer(answer: &str) -> Result<(u16, &str), String> {
    let answer = answer.trim_start();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .or_else(|| answer.split_once("\n\n"))
        .unwrap_or((answer, ""));
    let status = head.lines().next().unwrap_or_default();
    let mut words = status.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(_), Some(0)) => Err(words.collect::<Vec<_>>().join(" ")),
        (Some(proto), Some(code)) if proto.starts_with("HTTP/") => Ok((code, body)),
        _ => Err(format!("no HTTP answer: {}", status.trim())),
    }
}

/// [`PROBE_SCRIPT`] in `container`: `path` of `name:port` (`how` = `one`)
/// or of each address `name` resolves to (`all`); what it printed.
pub async fn run_script(
    engine: &Engine,
    container: &str,
    name: &str,
    port: u16,
    path: &str,
    how: &str,
) -> Result<String> {
    let port = port.to_string();
    let args = ["sh", "-c", PROBE_SCRIPT, "sh", name, &port, path, how];
    Ok(engine.exec(container, &args).await?.stdout)
}

/// One HTTP GET of `path` on `host:port` from inside `container`: the
/// answer's code and body; an error saying why there is none.
pub async fn fetch(
    engine: &Engine,
    container: &str,
    host: &str,
    port: u16,
    path: &str,
) -> Result<(u16, String)> {
    let output = run_script(engine, container, host, port, path, "one").await?;
    let (_, answer) = output.split_once('\n').unwrap_or(("", &output));
    let (code, body) = split_answer(answer).map_err(|why| anyhow::anyhow!(why))?;
    Ok((code, body.to_owned()))
}

/// Asks redis at `$0:$1` for `INFO default`, then QUIT (redis closes), with
/// bash's `/dev/tcp` (redis speaks its inline protocol to a plain line),
/// all within 3 s (a connect to an address gone from the overlay is never
/// refused); prints `@@ no connection ...` when it cannot connect, `@@ no
/// bash` when the image has no bash to ask with.
const REDIS_SCRIPT: &str = r#"command -v bash >/dev/null 2>&1 || { echo "@@ no bash"; exit 0; }
timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" 2>/dev/null || exit 1
printf "INFO default\r\nQUIT\r\n" >&3
cat <&3' "$1" "$2" || echo "@@ no connection to $1:$2 within 3 s""#;

/// redis's `INFO default` at `host:port`, asked over the network from
/// inside `container`: `None` when its image has no bash to ask with; an
/// error when redis cannot be reached or answers with an error (one that
/// wants a password among them).
pub async fn redis_info(
    engine: &Engine,
    container: &str,
    host: &str,
    port: u16,
) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    let port = port.to_string();
    let args = ["sh", "-c", REDIS_SCRIPT, "sh", host, &port];
    let output = engine.exec(container, &args).await?.stdout;
    redis_answer(&output)
}

/// What [`REDIS_SCRIPT`] printed, read: the INFO fields of a bulk reply.
fn redis_answer(output: &str) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    let first = output.lines().next().unwrap_or_default().trim();
    if first == "@@ no bash" {
        return Ok(None);
    }
    if let Some(why) = output.lines().find_map(|l| l.trim().strip_prefix("@@ ")) {
        anyhow::bail!("{why}");
    }
    if let Some(error) = first.strip_prefix('-') {
        anyhow::bail!("redis answered: {error}");
    }
    if !first.starts_with('$') {
        anyhow::bail!("no answer of redis: {:?}", first);
    }
    Ok(Some(crate::redis::parse_info(output)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_answer_is_its_info_an_error_or_no_way_to_ask() {
        let info = redis_answer(
            "$60\r\n# Server\r\nredis_version:7.0.15\r\n# Persistence\r\nrdb_last_bgsave_status:ok\r\n\r\n+OK\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(info["redis_version"], "7.0.15");
        assert_eq!(info["rdb_last_bgsave_status"], "ok");
        assert!(!info.contains_key("+OK") && info.len() == 2, "{info:?}");
        assert!(redis_answer("@@ no bash\n").unwrap().is_none());
        let wants = redis_answer("-NOAUTH Authentication required.\r\n").unwrap_err();
        assert_eq!(
            wants.to_string(),
            "redis answered: NOAUTH Authentication required."
        );
        assert!(redis_answer("").is_err());
        let cut = redis_answer("@@ no connection to r:6379 within 3 s\n").unwrap_err();
        assert_eq!(cut.to_string(), "no connection to r:6379 within 3 s");
    }
}
