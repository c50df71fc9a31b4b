//! Plain HTTP/1.0 requests to loopback, answered whole: what a test reads
//! one answer at a time (load runs in [`super::load`]).

use std::collections::HashMap;
use std::time::Duration;

/// A blocking HTTP GET to loopback: (status, headers, body). Cookies are sent
/// as given.
pub fn get(
    url: &str,
    cookie: Option<&str>,
) -> Result<(u16, HashMap<String, String>, String), String> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    get_with_headers(url, &headers)
}

/// [`get`] with any request headers.
pub fn get_with_headers(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, HashMap<String, String>, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("http only")?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(hostport).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n{extra}\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((code, headers, body.to_owned()))
}

/// GET that must answer 200 with JSON.
#[track_caller]
pub fn get_json(url: &str, cookie: Option<&str>) -> serde_json::Value {
    let (code, _, body) = get(url, cookie).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}
