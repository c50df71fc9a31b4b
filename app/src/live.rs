//! Long-lived connections: server-sent events (`GET /api/events`) and a
//! WebSocket echo (`GET /api/ws`). Each names the color and version that
//! serves it, so a client (or a test) sees which color it talks to and
//! where a reconnect lands. On SIGTERM both end cleanly: the event stream
//! with a `bye` event, the WebSocket with a close frame 1001 (going away),
//! so clients reconnect, through nginx, to the color that serves now.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures_util::{SinkExt, StreamExt};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The largest WebSocket message echoed.
const MAX_MESSAGE: usize = 64 * 1024;
/// How long a closing WebSocket waits for the client's close reply.
const CLOSE_REPLY: Duration = Duration::from_secs(2);
/// The event interval's bounds (`/api/events?every_ms=N`) and default.
const EVERY_MS: (u64, u64, u64) = (10, 60_000, 1_000);

/// Returns once the app begins to shut down (or is gone).
pub async fn until_closing(closing: &mut watch::Receiver<bool>) {
    // The value's guard is dropped here, not held across a caller's await.
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Whether a route is one of these.
pub fn is_live(route: &str) -> bool {
    matches!(route, "/api/events" | "/api/ws")
}

/// Who serves: the color and version every event and greeting names.
#[derive(Clone)]
pub struct Serving {
    pub color: String,
    pub version: String,
}

impl Serving {
    fn describe(&self, kind: &str, seq: Option<u64>) -> serde_json::Value {
        let mut value = json!({
            "type": kind,
            "instance": self.color,
            "version": self.version,
            "time": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        if let Some(seq) = seq {
            value["seq"] = json!(seq);
        }
        value
    }
}

/// An event stream's body: the frames a task sends on a channel; it ends
/// when that task drops its sender.
pub struct Events(mpsc::Receiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// The interval `/api/events?every_ms=N` asks for, or why it is refused.
pub fn every(query: Option<&str>) -> Result<Duration, String> {
    let (low, high, default) = EVERY_MS;
    let asked = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("every_ms="));
    let ms = match asked {
        None => default,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|ms| (low..=high).contains(ms))
            .ok_or_else(|| format!("every_ms must be a whole number from {low} to {high}"))?,
    };
    Ok(Duration::from_millis(ms))
}

/// One event in the text/event-stream format.
fn event(kind: &str, id: Option<u64>, data: &serde_json::Value) -> Bytes {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {kind}\ndata: {data}\n\n"))
}

/// `GET /api/events`: a `tick` event at once and then every `every`, each
/// naming the color and version; on shutdown a `bye` event, and the stream
/// ends. `X-Accel-Buffering: no` tells nginx to pass each event on as it
/// comes instead of buffering the response.
pub fn events(
    serving: Serving,
    every: Duration,
    mut closing: watch::Receiver<bool>,
) -> Response<Events> {
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        // EventSource clients reconnect after this many milliseconds.
        if sender.send(Bytes::from("retry: 1000\n\n")).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        for seq in 0.. {
            tokio::select! {
                _ = tick.tick() => {
                    let data = serving.describe("tick", Some(seq));
                    // The client went away: the body was dropped.
                    if sender.send(event("tick", Some(seq), &data)).await.is_err() {
                        return;
                    }
                }
                _ = until_closing(&mut closing) => {
                    let data = serving.describe("bye", None);
                    let _ = sender.send(event("bye", None, &data)).await;
                    return;
                }
            }
        }
    });
    let mut answer = Response::new(Events(receiver));
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    answer
}

/// The `Sec-WebSocket-Accept` for a WebSocket upgrade request, or why it
/// is no such request (RFC 6455 section 4.2.1).
pub fn accept_key<B>(request: &Request<B>) -> Result<String, &'static str> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let has_token = |name, token: &str| {
        header(name)
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err("this endpoint speaks WebSocket: send Upgrade: websocket");
    }
    if header(hyper::header::SEC_WEBSOCKET_VERSION) != "13" {
        return Err("only WebSocket version 13 is spoken");
    }
    let key = header(hyper::header::SEC_WEBSOCKET_KEY);
    if key.is_empty() {
        return Err("Sec-WebSocket-Key is missing");
    }
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// `GET /api/ws`: answers the upgrade, then, on the upgraded connection, a
/// `hello` text message naming the color and version, and an echo of every
/// text or binary message. On shutdown it closes with 1001 (going away).
/// `Err` is the refusal's status and reason.
pub fn websocket(
    request: Request<Incoming>,
    serving: Serving,
    closing: watch::Receiver<bool>,
) -> Result<Response<Events>, (StatusCode, &'static str)> {
    let accept = accept_key(&request).map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    let accept =
        HeaderValue::from_str(&accept).map_err(|_| (StatusCode::BAD_REQUEST, "bad key"))?;
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_MESSAGE))
                    .max_frame_size(Some(MAX_MESSAGE));
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                echo(socket, serving, closing).await;
            }
            Err(err) => eprintln!("cryptus-app: websocket upgrade failed: {err}"),
        }
    });
    // An empty body: the channel's sender is dropped at once.
    let (_, receiver) = mpsc::channel(1);
    let mut answer = Response::new(Events(receiver));
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = answer.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(answer)
}

async fn echo<S>(
    mut socket: WebSocketStream<S>,
    serving: Serving,
    mut closing: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hello = serving.describe("hello", None).to_string();
    if socket.send(Message::text(hello)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                // Pings are answered by the protocol; a close is replied to.
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return,
            },
            _ = until_closing(&mut closing) => break,
        }
    }
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "the server is shutting down: reconnect".into(),
    };
    if socket.close(Some(frame)).await.is_err() {
        return;
    }
    // The client's close reply ends the stream; a client that never sends
    // it is not waited for long.
    let _ = tokio::time::timeout(CLOSE_REPLY, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_interval_is_bounded() {
        assert_eq!(every(None), Ok(Duration::from_secs(1)));
        assert_eq!(every(Some("every_ms=50")), Ok(Duration::from_millis(50)));
        assert_eq!(
            every(Some("x=1&every_ms=60000")),
            Ok(Duration::from_secs(60))
        );
        for bad in [
            "every_ms=0",
            "every_ms=9",
            "every_ms=60001",
            "every_ms=x",
            "every_ms=",
        ] {
            assert!(every(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_event_is_one_block_of_lines() {
        let text = event("tick", Some(3), &json!({"a": 1}));
        assert_eq!(&text[..], b"id: 3\nevent: tick\ndata: {\"a\":1}\n\n");
        let text = event("bye", None, &json!({}));
        assert_eq!(&text[..], b"event: bye\ndata: {}\n\n");
    }

    #[test]
    fn the_accept_key_is_the_rfcs() {
        let request = Request::get("/api/ws")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        assert_eq!(
            accept_key(&request).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let plain = Request::get("/api/ws").body(()).unwrap();
        assert!(accept_key(&plain).is_err());
    }
}
