//! WebSocket subscribers (`GET /ws` on the admin listener) over real sockets: what they
//! get, that they are subscribers like any other, and how they are refused.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use monitor_server::{Config, SlowConsumer, TokenConfig};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{eventually, start, Client, TestServer, WAIT};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn url(server: &TestServer) -> String {
    format!("ws://{}/ws", server.handle.admin_addr().unwrap())
}

async fn connect(server: &TestServer) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url(server)))
        .await
        .expect("connected in time")
        .expect("upgraded");
    ws
}

/// The next message that is not a ping or a pong.
async fn next(ws: &mut Ws) -> Option<Message> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Some(Message::Text(text)) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Waits for the server's close frame: its code and reason.
async fn close_frame(ws: &mut Ws) -> (CloseCode, String) {
    match next(ws).await {
        Some(Message::Close(Some(frame))) => (frame.code, frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Subscribes with `body` and returns the acknowledgement, parsed.
async fn subscribe(ws: &mut Ws, body: &str) -> Value {
    ws.send(Message::text(body)).await.unwrap();
    serde_json::from_str(&next_text(ws).await).unwrap()
}

async fn subscribed(server: &TestServer, topics: &[&str]) -> Ws {
    let mut ws = connect(server).await;
    let body = serde_json::json!({"code": "dash", "topics": topics}).to_string();
    let ack = subscribe(&mut ws, &body).await;
    assert_eq!(ack["errCode"], 0, "{ack}");
    ws
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_over_tcp_and_http_reach_a_websocket_subscriber_byte_for_byte() {
    let server = start(|_| {}).await;
    let mut ws = connect(&server).await;
    let body = r#"{"code":"dash","topics":["host.*"]}"#;
    ws.send(Message::text(body)).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        format!(r#"{{"errCode":0,"msg":"success","data":{body}}}"#),
        "the type-6 acknowledgement's envelope, with the body as sent"
    );
    eventually("the WebSocket subscriber is in the hub", || {
        server.handle.subscribers() == 1
    })
    .await;

    // Over the binary protocol, with odd spacing kept as is.
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    assert_eq!(reporter.report(r#"{"code":"other","n":0}"#).await, 0);
    let over_tcp = r#"{ "code" : "host.health", "host":"a",  "n":1 }"#;
    assert_eq!(reporter.report(over_tcp).await, 1);
    assert_eq!(
        next_text(&mut ws).await,
        over_tcp,
        "topics apply; byte for byte"
    );

    // Over the admin API.
    let over_http = r#"{"code":"host.disk","host":"b","free":[1,2,3],"s":"é\"x"}"#;
    let r = http()
        .post(format!(
            "http://{}/api/report",
            server.handle.admin_addr().unwrap()
        ))
        .body(over_http)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(next_text(&mut ws).await, over_http);

    // Listed like any other client.
    let clients: Value = http()
        .get(format!(
            "http://{}/api/clients",
            server.handle.admin_addr().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = clients.as_array().unwrap();
    let row = rows.iter().find(|c| c["kind"] == "ws").expect("a ws row");
    assert_eq!(row["role"], "subscriber");
    assert_eq!(row["listener"], "admin");
    assert_eq!(row["code"], "dash");
    assert_eq!(row["topics"], serde_json::json!(["host.*"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_subscribe_is_a_barrier_with_new_topics() {
    let server = start(|_| {}).await;
    let mut ws = subscribed(&server, &["a"]).await;
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    reporter.report(r#"{"code":"a","n":1}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"code":"a","n":1}"#);

    let ack = subscribe(&mut ws, r#"{"code":"dash","topics":["b"]}"#).await;
    assert_eq!(ack["errCode"], 0);
    assert_eq!(ack["data"]["topics"], serde_json::json!(["b"]));
    reporter.report(r#"{"code":"a","n":2}"#).await;
    reporter.report(r#"{"code":"b","n":3}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"code":"b","n":3}"#);
    assert_eq!(server.handle.subscribers(), 1, "re-subscribed, not added");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_first_message_is_refused_with_the_spec_error_and_a_close_frame() {
    let server = start(|_| {}).await;
    for (body, said) in [
        ("not json", "malformed body: not a JSON object"),
        (r#"{"code":"#, "malformed body: invalid JSON"),
        (r#"{"topics":["a"]}"#, "malformed body: missing code"),
        (r#"{"code":"c","topics":[1]}"#, "malformed body:"),
    ] {
        let mut ws = connect(&server).await;
        let ack = subscribe(&mut ws, body).await;
        assert_eq!(ack["errCode"], -1, "{body}: {ack}");
        let msg = ack["msg"].as_str().unwrap();
        assert!(msg.starts_with(said), "{body}: {msg}");
        let (code, reason) = close_frame(&mut ws).await;
        assert_eq!(code, CloseCode::Policy, "{body}");
        assert!(msg.starts_with(&reason) && !reason.is_empty(), "{reason}");
    }

    // A binary message, and a message over max_frame_len, are refused too.
    let mut ws = connect(&server).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_frame(&mut ws).await.0, CloseCode::Unsupported);
    assert_eq!(server.handle.subscribers(), 0);
    eventually("every refused connection is gone", || {
        server.handle.stats().connections_open == 0
    })
    .await;
    // Counted as WebSocket messages (five in, four acks out) and by kind.
    let stats = server.handle.stats();
    assert_eq!(
        (
            stats.frames_in_by_type.websocket,
            stats.frames_out_by_type.websocket,
            stats.frames_in_by_type.subscribe
        ),
        (5, 4, 0),
        "{stats:?}"
    );
    let kinds = stats.protocol_errors_by_kind;
    assert_eq!(
        (kinds.malformed_body, kinds.other_frame),
        (4, 1),
        "{kinds:?}"
    );
    server.stop().await;

    // Over max_frame_len: 1009. The message is small enough to arrive whole in the
    // server's first read, so that no unread input turns the close into a reset (a
    // larger one is cut off mid-send: the server does not read what it refuses).
    let server = start(|c: &mut Config| c.server.max_frame_len = 1024).await;
    let mut ws = connect(&server).await;
    let huge = format!(r#"{{"code":"{}"}}"#, "x".repeat(1500));
    ws.send(Message::text(huge)).await.unwrap();
    assert_eq!(close_frame(&mut ws).await.0, CloseCode::Size);
    eventually("the refused connection is gone", || {
        server.handle.stats().connections_open == 0
    })
    .await;
    assert_eq!(server.handle.stats().limits_hit.max_frame_len, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_grants_apply_to_websocket_subscribers() {
    let server = start(|c: &mut Config| {
        c.auth.required = true;
        c.auth.tokens = vec![TokenConfig {
            name: "viewer".into(),
            token_sha256: monitor_server::auth::hash_token("view-secret"),
            subscribe: vec!["host.*".into()],
            report: vec![],
            admin: false,
        }];
    })
    .await;
    let mut ws = connect(&server).await;
    let ack = subscribe(&mut ws, r#"{"code":"d","topics":["host.*"]}"#).await;
    assert!(
        ack["msg"].as_str().unwrap().starts_with("forbidden"),
        "{ack}"
    );
    assert_eq!(close_frame(&mut ws).await.0, CloseCode::Policy);

    let mut ws = connect(&server).await;
    let ack = subscribe(&mut ws, r#"{"code":"d","token":"wrong"}"#).await;
    assert_eq!(ack["msg"], "unauthorized");
    assert_eq!(
        close_frame(&mut ws).await,
        (CloseCode::Policy, "unauthorized".into())
    );

    let mut ws = connect(&server).await;
    let ack = subscribe(
        &mut ws,
        r#"{"code":"d","token":"view-secret","topics":["db.*"]}"#,
    )
    .await;
    assert!(
        ack["msg"].as_str().unwrap().starts_with("forbidden"),
        "{ack}"
    );

    let mut ws = connect(&server).await;
    let ack = subscribe(
        &mut ws,
        r#"{"code":"d","token":"view-secret","topics":["host.*"]}"#,
    )
    .await;
    assert_eq!(ack["errCode"], 0, "{ack}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_is_refused() {
    let server = start(|c| c.admin.allowed_origins = vec!["https://ops.example".into()]).await;
    let with_origin = |origin: &str| {
        let mut request = url(&server).into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    let refused = tokio_tungstenite::connect_async(with_origin("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r)),
    }
    let own = format!("http://{}", server.handle.admin_addr().unwrap());
    for origin in [own.as_str(), "https://ops.example"] {
        let (mut ws, _) = tokio_tungstenite::connect_async(with_origin(origin))
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(subscribe(&mut ws, r#"{"code":"d"}"#).await["errCode"], 0);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_websocket_subscriber_is_disconnected_without_hurting_tcp_subscribers() {
    const REPORTS: u64 = 300;
    let server = start(|c| {
        c.server.subscriber_queue = 8;
        c.server.slow_consumer = SlowConsumer::Disconnect;
        c.server.write_timeout_secs = 2;
    })
    .await;
    // Subscribes, then never reads: its socket and then its queue fill up.
    let stuck = subscribed(&server, &["load"]).await;
    let mut good = Client::connect(server.addr(), "good").await;
    good.subscribe("load", &["load"]).await;
    eventually("both subscribed", || server.handle.subscribers() == 2).await;

    let pad = "x".repeat(64 * 1024);
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    for n in 0..REPORTS {
        reporter
            .report(&format!(r#"{{"code":"load","n":{n},"pad":"{pad}"}}"#))
            .await;
        // Each round trip completes while the stuck subscriber is full.
        let push: Value = serde_json::from_str(
            &tokio::time::timeout(WAIT, good.push())
                .await
                .expect("the TCP subscriber is not held up"),
        )
        .unwrap();
        assert_eq!(push["n"].as_u64(), Some(n), "in order, none lost");
    }
    assert_eq!(server.handle.stats().slow_consumers_disconnected, 1);
    eventually("the slow WebSocket subscriber is gone", || {
        server.handle.subscribers() == 1 && server.handle.stats().connections_open == 2
    })
    .await;
    drop(stuck);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_reading_subscriber_and_a_silent_one_is_closed() {
    let server = start(|c| {
        c.server.idle_timeout_secs = 2;
        c.server.frame_timeout_secs = 1;
    })
    .await;
    // Never subscribes: closed at frame_timeout_secs.
    let mut mute = connect(&server).await;
    let (code, reason) = close_frame(&mut mute).await;
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("no subscribe"), "{reason}");

    // Reads (so tungstenite answers each ping with a pong): kept past the idle timeout.
    let mut ws = subscribed(&server, &[]).await;
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a ping in time")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    assert_eq!(
        server.handle.subscribers(),
        1,
        "kept for 3 pings: 3 s > 2 s idle"
    );
    drop(ws);
    eventually("the reading subscriber is gone", || {
        server.handle.subscribers() == 0
    })
    .await;

    // Does not read, so never answers: closed once idle, and told why.
    let config = WebSocketConfig::default();
    let (mut silent, _) =
        tokio_tungstenite::connect_async_with_config(url(&server), Some(config), true)
            .await
            .unwrap();
    assert_eq!(
        subscribe(&mut silent, r#"{"code":"s"}"#).await["errCode"],
        0
    );
    assert_eq!(server.handle.subscribers(), 1);
    eventually("the silent subscriber is closed", || {
        server.handle.subscribers() == 0
    })
    .await;
    let (code, reason) = close_frame(&mut silent).await;
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("idle"), "{reason}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_is_queued_then_closes_with_a_reason() {
    let server = start(|c| c.server.drain_timeout_secs = 5).await;
    let mut ws = subscribed(&server, &[]).await;
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    for n in 0..50 {
        reporter.report(&format!(r#"{{"code":"x","n":{n}}}"#)).await;
    }
    let stopping = tokio::spawn(server.stop());
    for n in 0..50 {
        let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(v["n"], n);
    }
    assert_eq!(
        close_frame(&mut ws).await,
        (CloseCode::Away, "server shutting down".into())
    );
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribers_count_against_max_connections() {
    let server = start(|c| c.server.max_connections = 1).await;
    let _first = subscribed(&server, &[]).await;
    match tokio_tungstenite::connect_async(url(&server)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected a 503, got {:?}", other.map(|(_, r)| r)),
    }
    assert_eq!(server.handle.stats().connections_refused, 1);
    server.stop().await;
}
