//! A minimal Redis client: one connection, RESP2 requests and replies.
//!
//! The app needs three commands (AUTH, SELECT, INCR), so a few lines of RESP
//! keep its static image small and its build quick; a full client crate would
//! double the app's dependency tree for them.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

const TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Endpoint {
    host: String,
    port: u16,
    password: Option<String>,
    db: u32,
}

impl Endpoint {
    /// Parses `redis://[[user]:password@]host[:port][/db]`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = || {
            format!(
                "REDIS_URL {:?} is not redis://[:password@]host[:port][/db]",
                redact(url)
            )
        };
        let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((hostport, db)) if !db.is_empty() => (hostport, db.parse().map_err(|_| bad())?),
            Some((hostport, _)) => (hostport, 0),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
            None => (hostport, 6379),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let password = auth
            .map(|auth| auth.split_once(':').map_or(auth, |(_, password)| password))
            .filter(|password| !password.is_empty())
            .map(str::to_owned);
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            password,
            db,
        })
    }
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

pub struct Client {
    endpoint: Endpoint,
    connection: Mutex<Option<BufStream<TcpStream>>>,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            connection: Mutex::new(None),
        }
    }

    /// Runs one command, reconnecting once if the kept connection broke.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Reply, String> {
        let mut slot = self.connection.lock().await;
        for attempt in 0..2 {
            if slot.is_none() {
                *slot = Some(self.connect().await?);
            }
            let Some(stream) = slot.as_mut() else {
                continue;
            };
            match tokio::time::timeout(TIMEOUT, exchange(stream, args)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(Failure::Server(message))) => return Err(message),
                Ok(Err(Failure::Io(err))) if attempt == 0 => {
                    eprintln!("cryptus-app: redis connection lost ({err}), reconnecting");
                    *slot = None;
                }
                Ok(Err(Failure::Io(err))) => {
                    *slot = None;
                    return Err(err.to_string());
                }
                Err(_) => {
                    *slot = None;
                    return Err(format!("redis did not answer within {TIMEOUT:?}"));
                }
            }
        }
        Err("redis connection lost".to_owned())
    }

    async fn connect(&self) -> Result<BufStream<TcpStream>, String> {
        let Endpoint {
            host,
            port,
            password,
            db,
        } = &self.endpoint;
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect((host.as_str(), *port)))
            .await
            .map_err(|_| format!("connecting to redis at {host}:{port} timed out"))?
            .map_err(|err| format!("connecting to redis at {host}:{port}: {err}"))?;
        let _ = stream.set_nodelay(true);
        let mut stream = BufStream::new(stream);
        let mut setup: Vec<Vec<Vec<u8>>> = Vec::new();
        if let Some(password) = password {
            setup.push(vec![b"AUTH".to_vec(), password.as_bytes().to_vec()]);
        }
        if *db != 0 {
            setup.push(vec![b"SELECT".to_vec(), db.to_string().into_bytes()]);
        }
        for command in setup {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            tokio::time::timeout(TIMEOUT, exchange(&mut stream, &args))
                .await
                .map_err(|_| "redis did not answer the connection setup".to_owned())?
                .map_err(|failure| match failure {
                    Failure::Server(message) => message,
                    Failure::Io(err) => err.to_string(),
                })?;
        }
        Ok(stream)
    }
}

enum Failure {
    Io(std::io::Error),
    Server(String),
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Failure {
        Failure::Io(err)
    }
}

async fn exchange(stream: &mut BufStream<TcpStream>, args: &[&[u8]]) -> Result<Reply, Failure> {
    stream.write_all(&encode(args)).await?;
    stream.flush().await?;
    let mut line = Vec::new();
    if stream.read_until(b'\n', &mut line).await? == 0 {
        return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let text = String::from_utf8_lossy(line.strip_suffix(b"\r\n").unwrap_or(&line)).into_owned();
    let invalid = || {
        Failure::Io(std::io::Error::other(format!(
            "unexpected redis reply {text:?}"
        )))
    };
    match text.split_at_checked(1) {
        Some(("+", status)) => Ok(Reply::Status(status.to_owned())),
        Some(("-", message)) => Err(Failure::Server(message.to_owned())),
        Some((":", number)) => number.parse().map(Reply::Integer).map_err(|_| invalid()),
        Some(("$", length)) => {
            let length: i64 = length.parse().map_err(|_| invalid())?;
            let Ok(length) = usize::try_from(length) else {
                return Ok(Reply::Bulk(None));
            };
            let mut body = vec![0; length + 2];
            stream.read_exact(&mut body).await?;
            body.truncate(length);
            Ok(Reply::Bulk(Some(body)))
        }
        _ => Err(invalid()),
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("redis://redis:6379").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.password, e.db),
            ("redis", 6379, None, 0)
        );
        let e = Endpoint::parse("redis://:s3cret@cache:6380/2").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.password.as_deref(), e.db),
            ("cache", 6380, Some("s3cret"), 2)
        );
        let e = Endpoint::parse("redis://user:pw@cache").unwrap();
        assert_eq!((e.port, e.password.as_deref()), (6379, Some("pw")));
        assert!(Endpoint::parse("http://redis").is_err());
        assert!(Endpoint::parse("redis://:6379").is_err());
        assert!(Endpoint::parse("redis://redis:port").is_err());
    }

    #[test]
    fn errors_never_show_the_password() {
        let err = Endpoint::parse("redis://:hunter2@redis:bad").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("***"), "{err}");
    }

    #[test]
    fn encodes_resp_arrays() {
        assert_eq!(
            encode(&[b"INCR", b"session:ab"]),
            b"*2\r\n$4\r\nINCR\r\n$10\r\nsession:ab\r\n".to_vec()
        );
    }
}
