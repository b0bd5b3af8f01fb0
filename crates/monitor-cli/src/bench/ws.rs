//! WebSocket subscribers (`monitor-client bench --ws ws://127.0.0.1:9600/ws`).
//!
//! The server serves `GET /ws` on its admin listener. A subscriber there:
//!
//! 1. sends one text message, the binary protocol's subscribe body with the token in it
//!    (`{"code":…,"topics":[…],"token":…}`; the bench's own code and topics, as its TCP
//!    subscribers send them);
//! 2. reads one text message back: `{"errCode":0,"msg":"success","data":…}`, or
//!    `{"errCode":-1,"msg":"<why>","data":null}` and a close frame (a refusal, never
//!    retried: the run stops naming the server's reason);
//! 3. then reads each matching report as one text message, the report's JSON as the
//!    reporter sent it (no push envelope), and counts it with the TCP subscribers'
//!    accounting (the same `Tally`), so every figure of the run means the same.
//!
//! A subscriber takes what tungstenite has ready (up to 256 messages, one socket read's
//! worth at most rates), then one clock reading for them all and adds them to the run's
//! totals at once, as the TCP subscribers do per socket read. Reading also answers the
//! server's pings. Only `ws://` is supported: the
//! admin listener that serves `/ws` speaks plain HTTP.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use monitor_client::{Subscription, Token};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::connect::CONNECT_ATTEMPTS;
use super::frames::READ_CHUNK;
use super::payload::parse_report;
use super::shared::Shared;
use super::tally::{subscription, Route, Tally};
use crate::error::{Error, Result};

pub use super::ws_url::WsUrl;

/// Most messages a subscriber counts before adding them to the run's totals (and looking
/// at its stop signal again).
const BATCH: usize = 256;
/// Longest wait for the close handshake when the run stops a subscriber.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// The subscribe body: the binary protocol's, with the token in it.
#[derive(Serialize)]
struct SubscribeBody<'a> {
    code: &'a str,
    topics: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

fn subscribe_body(hello: &Subscription, token: Option<&Token>) -> String {
    let body = SubscribeBody {
        code: &hello.code,
        topics: &hello.topics,
        token: token.map(Token::expose),
    };
    // Strings and a list of strings: nothing here can fail to serialize.
    serde_json::to_string(&body).unwrap_or_default()
}

/// The server's answer to a subscribe body: `None` for success, the server's reason for
/// a refusal.
///
/// # Errors
/// An answer that is not the expected JSON object.
fn read_ack(text: &str) -> std::result::Result<Option<String>, String> {
    let ack: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("its answer to the subscribe body is not JSON ({e})"))?;
    match ack.get("errCode").and_then(serde_json::Value::as_i64) {
        Some(0) => Ok(None),
        Some(_) => Ok(Some(
            ack.get("msg")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no reason given")
                .to_owned(),
        )),
        None => Err("its answer to the subscribe body has no errCode".into()),
    }
}

type Ws = WebSocketStream<TcpStream>;

/// Why an attempt failed: a refusal is final, anything else may be tried again.
enum Failed {
    Refused(Error),
    Retry(Error),
}

/// One attempt, bounded by the run's connect timeout: connect, the WebSocket handshake,
/// the subscribe body and its answer.
async fn attempt(sh: &Shared, url: &WsUrl, body: &str) -> std::result::Result<Ws, Failed> {
    let failed = |reason: String| Error::WebSocket {
        url: url.to_string(),
        reason,
    };
    let work = async {
        let tcp = TcpStream::connect((url.host().trim_matches(['[', ']']), url.port()))
            .await
            .map_err(|e| Failed::Retry(failed(format!("cannot connect: {e}"))))?;
        // Pongs and the close frame are all it sends; they should not wait.
        let _ = tcp.set_nodelay(true);
        // A report is at most a frame less its header: the same bound as the binary
        // protocol's. The read buffer is the TCP subscribers' chunk.
        let max = sh.cfg.max_frame_len as usize;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
                .await
                .map_err(|e| match e {
                    WsError::Http(response) => {
                        Failed::Refused(failed(http_refusal(response.status())))
                    }
                    e => Failed::Retry(failed(format!("WebSocket handshake failed: {e}"))),
                })?;
        ws.send(Message::text(body))
            .await
            .map_err(|e| Failed::Retry(failed(format!("sending the subscribe body: {e}"))))?;
        loop {
            let refused = |msg: String| {
                Failed::Refused(monitor_client::Error::SubscribeRefused { msg }.into())
            };
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return match read_ack(text.as_str()) {
                        Ok(None) => Ok(ws),
                        Ok(Some(msg)) => Err(refused(msg)),
                        Err(e) => Err(Failed::Refused(failed(e))),
                    };
                }
                Some(Ok(Message::Close(Some(frame)))) if !frame.reason.is_empty() => {
                    return Err(refused(frame.reason.as_str().to_owned()));
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(Failed::Retry(failed(
                        "the server closed the connection before answering the subscribe body"
                            .into(),
                    )));
                }
                // A ping (answered while reading), or anything else before the answer.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Failed::Retry(failed(format!(
                        "reading the answer to the subscribe body: {e}"
                    ))))
                }
            }
        }
    };
    match tokio::time::timeout(sh.cfg.connect_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Failed::Retry(failed(format!(
            "no subscription within the connect timeout ({:?})",
            sh.cfg.connect_timeout
        )))),
    }
}

/// A refused WebSocket handshake: the server answered HTTP instead of switching.
fn http_refusal(status: StatusCode) -> String {
    let hint = if status == StatusCode::NOT_FOUND {
        ": is this the server's /ws endpoint, on its admin listener (admin.address)?"
    } else {
        ""
    };
    format!("the server refused the WebSocket handshake with HTTP {status}{hint}")
}

/// [`attempt`] up to [`CONNECT_ATTEMPTS`] times, as the TCP subscribers retry; a refusal
/// is final.
async fn open_with_retry(sh: &Shared, url: &WsUrl, hello: &Subscription) -> Result<Ws> {
    let body = subscribe_body(hello, sh.cfg.token.as_ref());
    let mut last = None;
    for n in 0..CONNECT_ATTEMPTS {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(n))).await;
        }
        match attempt(sh, url, &body).await {
            Ok(ws) => return Ok(ws),
            Err(Failed::Refused(e)) => return Err(e),
            Err(Failed::Retry(e)) => last = Some(e),
        }
    }
    Err(last.unwrap_or(Error::Client(monitor_client::Error::Closed)))
}

/// Why a subscriber's stream ended, for the log.
fn ended(message: Option<std::result::Result<Message, WsError>>) -> Option<String> {
    match message {
        Some(Ok(Message::Close(frame))) => Some(match frame {
            Some(f) if f.code != CloseCode::Normal || !f.reason.is_empty() => {
                format!("the server closed it ({}: {})", f.code, f.reason)
            }
            _ => "the server closed it".into(),
        }),
        Some(Err(e)) => Some(e.to_string()),
        None => Some("the connection ended".into()),
        Some(Ok(_)) => None,
    }
}

/// Takes the messages `ws` has ready, up to [`BATCH`], each as its report's `(seq, ts)`
/// (`None` if unreadable) into `reports`. Ready once it has some, or once the stream
/// ended (with why); pending, with nothing taken, while none has come. Every poll uses
/// the caller's waker (tokio-tungstenite registers it at each poll: one waker throughout
/// keeps that cheap).
fn poll_batch(
    ws: &mut Ws,
    cx: &mut Context<'_>,
    reports: &mut Vec<Option<(u64, u64)>>,
) -> Poll<Option<String>> {
    while reports.len() < BATCH {
        match ws.poll_next_unpin(cx) {
            Poll::Pending => break,
            Poll::Ready(Some(Ok(Message::Text(text)))) => {
                reports.push(parse_report(text.as_bytes()));
            }
            Poll::Ready(Some(Ok(Message::Binary(data)))) => reports.push(parse_report(&data)),
            // A ping (answered as tungstenite reads on), a pong: nothing to count.
            Poll::Ready(other) => {
                if let Some(why) = ended(other) {
                    return Poll::Ready(Some(why));
                }
            }
        }
    }
    if reports.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(None)
    }
}

/// One subscriber over WebSocket: subscribe, report readiness, then count and time the
/// reports until stopped.
pub(super) async fn subscriber(
    id: usize,
    sh: Arc<Shared>,
    url: WsUrl,
    ready: mpsc::UnboundedSender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let hello = subscription(&sh.cfg, id);
    let opened = {
        let _permit = sh.connect_gate.acquire().await;
        open_with_retry(&sh, &url, &hello).await
    };
    let Some(mut ws) = sh.subscribed(id, ready, opened) else {
        return;
    };

    let mut samples: Vec<u64> = Vec::with_capacity(BATCH);
    let mut reports: Vec<Option<(u64, u64)>> = Vec::with_capacity(BATCH);
    let mut next_seq = 0u64;
    let route = Route::of(&sh.cfg, id);
    loop {
        let end = tokio::select! {
            biased;
            _ = stop.changed() => {
                let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
                break;
            }
            end = std::future::poll_fn(|cx| poll_batch(&mut ws, cx, &mut reports)) => end,
        };
        // One clock reading per batch: every message in it had arrived by now.
        let now = sh.now_ns();
        let window = (sh.window_start.load(Relaxed), sh.window_end.load(Relaxed));
        let mut tally = Tally::default();
        for &report in &reports {
            tally.add(report, now, window, route, &mut samples);
        }
        reports.clear();
        tally.commit(&sh, id, route, &mut next_seq, &mut samples);
        if let Some(why) = end {
            if !*stop.borrow() {
                sh.disconnects.fetch_add(1, Relaxed);
                tracing::warn!(subscriber = id, %why, "bench WebSocket subscriber lost its connection");
            }
            break;
        }
    }
    sh.subscriber_gone(id);
}

#[cfg(test)]
mod tests {
    use super::super::BenchConfig;
    use super::*;

    #[test]
    fn subscribe_bodies_are_the_binary_protocols() {
        let hello = Subscription::new("bench-subscriber-3").topic("bench");
        assert_eq!(
            subscribe_body(&hello, None),
            r#"{"code":"bench-subscriber-3","topics":["bench"]}"#
        );
        assert_eq!(
            subscribe_body(&hello, Some(&Token::new("s\"e"))),
            r#"{"code":"bench-subscriber-3","topics":["bench"],"token":"s\"e"}"#
        );
    }

    #[test]
    fn acks() {
        let ok = r#"{"errCode":0,"msg":"success","data":{"code":"c","topics":[]}}"#;
        assert_eq!(read_ack(ok), Ok(None));
        assert_eq!(
            read_ack(r#"{"errCode":-1,"msg":"unauthorized","data":null}"#),
            Ok(Some("unauthorized".into()))
        );
        assert!(read_ack("nope").is_err());
        assert!(read_ack(r#"{"msg":"x"}"#).is_err());
    }

    /// Against a scripted server: the subscribe body goes as the first text message,
    /// with the token; a refusal is final (one connection, not three) and names the
    /// server's reason; a success hands the stream over.
    #[tokio::test]
    async fn subscribing_over_a_scripted_server() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: WsUrl = format!("ws://{}/ws", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for answer in [
                r#"{"errCode":-1,"msg":"forbidden: subscribe to \"bench\"","data":null}"#,
                r#"{"errCode":0,"msg":"success","data":{}}"#,
            ] {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let Some(Ok(Message::Text(body))) = ws.next().await else {
                    panic!("no subscribe body")
                };
                bodies.push(body.as_str().to_owned());
                ws.send(Message::Ping(Vec::new().into())).await.unwrap();
                ws.send(Message::text(answer)).await.unwrap();
                if answer.contains("-1") {
                    let _ = ws.close(None).await;
                } else {
                    ws.send(Message::text(r#"{"code":"bench","seq":5,"ts":6}"#))
                        .await
                        .unwrap();
                    // Until the client goes.
                    while ws.next().await.is_some() {}
                }
            }
            bodies
        });
        let mut cfg = BenchConfig::new("127.0.0.1:1".parse().unwrap());
        cfg.token = Some(Token::new("t0k"));
        cfg.connect_timeout = Duration::from_secs(10);
        let sh = Shared::new(cfg).unwrap();
        let hello = Subscription::new("bench-subscriber-0").topic("bench");
        let e = open_with_retry(&sh, &url, &hello).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"subscribe refused by the server: forbidden: subscribe to "bench""#
        );
        let mut ws = open_with_retry(&sh, &url, &hello).await.unwrap();
        let Some(Ok(Message::Text(report))) = ws.next().await else {
            panic!("no report")
        };
        assert_eq!(parse_report(report.as_bytes()), Some((5, 6)));
        drop(ws);
        let body = r#"{"code":"bench-subscriber-0","topics":["bench"],"token":"t0k"}"#;
        assert_eq!(server.await.unwrap(), [body, body]);
    }

    /// A subscriber counts every message, across batches (one message in 256 was
    /// dropped at each batch's end), and stops when told.
    #[tokio::test]
    async fn a_subscriber_counts_every_message() {
        use tokio::net::TcpListener;
        const N: u64 = 3 * BATCH as u64 + 7;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: WsUrl = format!("ws://{}/ws", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _subscribe = ws.next().await;
            let ok = r#"{"errCode":0,"msg":"success","data":{}}"#;
            ws.feed(Message::text(ok)).await.unwrap();
            for seq in 0..N {
                let mut report = Vec::new();
                super::super::write_payload(&mut report, 100, seq, 1);
                let text = String::from_utf8(report).unwrap();
                ws.feed(Message::text(text)).await.unwrap();
                if seq == N / 2 {
                    ws.feed(Message::Ping(Vec::new().into())).await.unwrap();
                }
            }
            ws.flush().await.unwrap();
            // Until the client goes.
            while ws.next().await.is_some() {}
        });
        let sh = Shared::new(BenchConfig::new("127.0.0.1:1".parse().unwrap())).unwrap();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let sub = tokio::spawn(subscriber(0, Arc::clone(&sh), url, ready_tx, stop));
        ready.recv().await.unwrap().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sh.delivered.load(Relaxed) < N && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), sub)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sh.delivered.load(Relaxed), N);
        assert_eq!(sh.progress[0].0.load(Relaxed), super::super::shared::GONE);
        assert_eq!(
            (sh.no_ts.load(Relaxed), sh.disconnects.load(Relaxed)),
            (0, 0)
        );
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }

    /// A message is the report itself: read as a push's `data` is.
    #[test]
    fn messages_are_reports() {
        let mut v = Vec::new();
        super::super::write_payload(&mut v, 200, 42, 7);
        assert_eq!(parse_report(&v), Some((42, 7)));
        let mut v = Vec::new();
        super::super::write_topic_payload(&mut v, 200, 3, 43, 8);
        assert_eq!(parse_report(&v), Some((43, 8)));
        assert_eq!(
            parse_report(br#"{"errCode":0,"msg":"success","data":{}}"#),
            None
        );
    }
}
