//! Long-lived connections through a deploy, on the real engine with real
//! nginx: a WebSocket and a server-sent event stream, connected through the
//! load balancer's published port, keep working on the old color until
//! `--drain` ends, while new connections go to the new color at once; then
//! the old color stops, they are closed cleanly, they reconnect to the new
//! color, and the deploy reports how many it closed.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::wait::eventually_async;
use support::{TestProject, assert_code, get, stderr};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long any one read may wait: far above the app's intervals.
const READ_LIMIT: Duration = Duration::from_secs(10);
/// How long a client may stay connected in this test.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);
/// The deploy's `--drain`.
const DRAIN: Duration = Duration::from_secs(3);

/// How a long-lived connection ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The server closed it cleanly: a close frame (its code), or the
    /// event stream's `bye` and then its end.
    Closed(String),
    Failed(String),
}

/// What one connection saw: the instance (color) and version it was
/// first greeted by, the instants of each answer it got (echoes, events),
/// with the instance each named, and how and when it ended.
#[derive(Debug)]
struct Seen {
    greeted_by: (String, String),
    answers: Vec<(Instant, String)>,
    end: End,
    ended_at: Instant,
}

fn named(json: &serde_json::Value) -> (String, String) {
    let field = |key: &str| json[key].as_str().unwrap_or_default().to_owned();
    (field("instance"), field("version"))
}

/// A WebSocket to `/api/ws` through the load balancer: the first message
/// names who serves it.
async fn websocket(
    project: &TestProject,
) -> (
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    (String, String),
) {
    let tcp = tokio::net::TcpStream::connect(project.lb_addr())
        .await
        .expect("connecting to the load balancer");
    let url = format!("ws://{}/api/ws", project.lb_addr());
    let (mut socket, answer) = tokio::time::timeout(
        READ_LIMIT,
        tokio_tungstenite::client_async(url.as_str(), tcp),
    )
    .await
    .expect("the WebSocket handshake answers")
    .expect("the WebSocket handshake succeeds through nginx");
    assert_eq!(answer.status(), 101);
    let hello = match tokio::time::timeout(READ_LIMIT, socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("no hello on the WebSocket: {other:?}"),
    };
    let hello: serde_json::Value = serde_json::from_str(&hello).expect("the hello is JSON");
    assert_eq!(hello["type"], "hello", "{hello}");
    (socket, named(&hello))
}

/// Echoes a message every 100 ms on an open WebSocket until the server
/// closes it; each echo must come back whole.
async fn keep_echoing(
    mut socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    greeted_by: (String, String),
) -> Seen {
    let mut answers = Vec::new();
    let began = Instant::now();
    let end = loop {
        if began.elapsed() > CLIENT_LIMIT {
            break End::Failed("still open at the test's limit".into());
        }
        let sent = format!("echo {}", answers.len());
        if let Err(err) = socket.send(Message::text(sent.clone())).await {
            break End::Failed(format!("sending: {err}"));
        }
        match tokio::time::timeout(READ_LIMIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == sent => {
                answers.push((Instant::now(), greeted_by.0.clone()));
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map(|f| f.code);
                break if code == Some(CloseCode::Away) {
                    End::Closed("1001".into())
                } else {
                    End::Failed(format!("closed with {code:?}"))
                };
            }
            other => break End::Failed(format!("after {sent:?}: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Seen {
        greeted_by,
        answers,
        end,
        ended_at: Instant::now(),
    }
}

/// An event stream from `/api/events` (an event every 100 ms) through the
/// load balancer, read until it ends.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(project: &TestProject) -> Events {
        let url = project.url("/api/events?every_ms=100");
        // cryptus's own client: it installs the TLS crypto provider reqwest needs.
        let response = cryptus::health::client()
            .get(&url)
            .header("Accept", "text/event-stream")
            .timeout(CLIENT_LIMIT)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {url}: {err}"));
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's type and data, `Ok(None)` at a clean end.
    async fn next(&mut self) -> Result<Option<(String, serde_json::Value)>, String> {
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_owned)
                };
                let (Some(kind), Some(data)) = (field("event: "), field("data: ")) else {
                    continue; // retry: and comments
                };
                let data = serde_json::from_str(&data).map_err(|e| format!("{e}: {data}"))?;
                return Ok(Some((kind, data)));
            }
            match tokio::time::timeout(READ_LIMIT, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) if self.buffer.trim().is_empty() => return Ok(None),
                Ok(Ok(None)) => return Err(format!("ended inside an event: {:?}", self.buffer)),
                Ok(Err(err)) => return Err(format!("reading: {err}")),
                Err(_) => return Err(format!("no event for {READ_LIMIT:?}")),
            }
        }
    }

    /// The first event: who serves the stream.
    async fn greeted_by(&mut self) -> (String, String) {
        match self.next().await {
            Ok(Some((kind, data))) if kind == "tick" => named(&data),
            other => panic!("no first event: {other:?}"),
        }
    }

    /// Reads every event until the stream ends: it must end with `bye`.
    async fn read_to_end(mut self, greeted_by: (String, String)) -> Seen {
        let mut answers = Vec::new();
        let mut bye = false;
        let end = loop {
            match self.next().await {
                Ok(Some((kind, data))) if kind == "tick" && !bye => {
                    answers.push((Instant::now(), named(&data).0));
                }
                Ok(Some((kind, _))) if kind == "bye" => bye = true,
                Ok(Some((kind, data))) => break End::Failed(format!("{kind}: {data}")),
                Ok(None) if bye => break End::Closed("bye".into()),
                Ok(None) => break End::Failed("ended without bye".into()),
                Err(err) => break End::Failed(err),
            }
        };
        Seen {
            greeted_by,
            answers,
            end,
            ended_at: Instant::now(),
        }
    }
}

/// The color that answers `/api/health` through the load balancer.
fn serving_color(project: &TestProject) -> Result<String, String> {
    let (code, _, body) = get(&project.url("/api/health"), None)?;
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    match json["instance"].as_str() {
        Some(color) if code == 200 => Ok(color.to_owned()),
        _ => Err(format!("{code} {body}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_and_event_stream_stay_on_the_old_color_until_the_drain_then_reconnect() {
    let project = TestProject::started("live");
    let (blue, v1) = project.serving();
    assert_eq!(blue, "blue");
    // Plain requests leave nginx's workers idle keep-alive connections to
    // blue: closed as those workers exit, they are not long-lived.
    for _ in 0..8 {
        serving_color(&project).expect("blue answers");
    }

    let (socket, ws_greeted) = websocket(&project).await;
    assert_eq!(ws_greeted, (blue.clone(), v1.clone()));
    let mut events = Events::open(&project).await;
    let sse_greeted = events.greeted_by().await;
    assert_eq!(sse_greeted, (blue.clone(), v1.clone()));
    let ws = tokio::spawn(keep_echoing(socket, ws_greeted));
    let sse = tokio::spawn(events.read_to_end(sse_greeted));

    let drain = format!("{}s", DRAIN.as_secs());
    let deploy = project.deploy_command("2.0.0", &["--drain", &drain, "--json"]);
    let deploy = tokio::spawn(support::run_async(deploy));

    // New connections go to green as soon as nginx serves it.
    let flipped = eventually_async(
        "nginx serves green",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async {
            serving_color(&project).and_then(|c| (c == "green").then(Instant::now).ok_or(c))
        },
    )
    .await;
    // nginx's old workers stop accepting moments after the reload (as
    // they take its signal); until then a new connection may reach one.
    let fresh_greeted = eventually_async(
        "a new WebSocket greeted by green",
        Duration::from_secs(2),
        Duration::from_millis(20),
        || async {
            let (fresh, greeted) = websocket(&project).await;
            drop(fresh);
            if greeted.0 == "green" {
                Ok(greeted)
            } else {
                Err(format!("greeted by {greeted:?}"))
            }
        },
    )
    .await;
    assert_eq!(fresh_greeted, ("green".to_owned(), "2.0.0".to_owned()));
    let mut fresh = Events::open(&project).await;
    assert_eq!(
        fresh.greeted_by().await,
        ("green".to_owned(), "2.0.0".to_owned())
    );
    drop(fresh);

    let output = deploy.await.expect("the deploy ran");
    assert_code(&output, 0);
    let (ws, sse) = (ws.await.expect("echoing"), sse.await.expect("reading"));
    for (what, seen, end) in [("WebSocket", &ws, "1001"), ("event stream", &sse, "bye")] {
        assert_eq!(seen.greeted_by, (blue.clone(), v1.clone()), "{what}");
        // No error: a clean close by the old color, as it stopped.
        assert_eq!(seen.end, End::Closed(end.into()), "{what}: {seen:?}");
        // Open, on blue, until the drain's deadline: closed no sooner.
        let open_for = seen.ended_at.duration_since(flipped);
        assert!(
            open_for >= DRAIN - Duration::from_millis(300),
            "{what} closed {open_for:?} after the flip, before --drain {DRAIN:?}"
        );
        let after_flip: Vec<&String> = seen
            .answers
            .iter()
            .filter(|(at, _)| *at > flipped)
            .map(|(_, instance)| instance)
            .collect();
        assert!(
            after_flip.len() >= 10,
            "{what} answered {} times after the flip",
            after_flip.len()
        );
        assert!(
            after_flip.iter().all(|i| **i == blue),
            "{what}: {after_flip:?}"
        );
    }

    // The count: the two long-lived connections, not the idle keep-alive
    // ones, and said on the terminal too.
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("--json is one document");
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["long_lived_closed"], 2, "{report}");
    let said = stderr(&output);
    eprintln!("{said}");
    assert!(
        said.contains("closed 2 long-lived connections still open to blue when it stopped"),
        "{said}"
    );

    // Reconnects land on green.
    let (_, again) = websocket(&project).await;
    assert_eq!(again, ("green".to_owned(), "2.0.0".to_owned()));
    let mut again = Events::open(&project).await;
    assert_eq!(
        again.greeted_by().await,
        ("green".to_owned(), "2.0.0".to_owned())
    );
}
