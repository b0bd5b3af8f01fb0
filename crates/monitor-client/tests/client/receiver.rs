//! The push receiver against a real in-process server (and a scripted one for bad input).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use monitor_client::{Error, Event, PushReceiver, Reporter, Status, Subscription};
use monitor_proto::message::reply;
use monitor_proto::{MsgType, ServerCodec, ServerMessage};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

use crate::support::{
    config, next_event, next_push, quiet_for, wait_attempt, wait_connected, TestServer, WAIT,
};

#[tokio::test]
async fn receiver_gets_reports_in_order() {
    let server = TestServer::start().await;
    let before = SystemTime::now();
    let mut rx = PushReceiver::connect(config(server.addr), Subscription::new("t").topic("t.*"))
        .await
        .unwrap();
    assert_eq!(rx.status(), Status::Connected { connections: 1 });
    let reporter = Reporter::connect(config(server.addr)).await.unwrap();

    let texts: Vec<String> = (0..50)
        .map(|n| format!(r#"{{"code":"t.seq","n":{n},"s":"é \" ok"}}"#))
        .collect();
    let acks: Vec<_> = texts
        .iter()
        .map(|t| reporter.send_raw(t.clone()).unwrap())
        .collect();
    // Not matching the topic: not delivered, and the pipeline is not disturbed.
    let other = reporter.send_raw(r#"{"code":"other"}"#).unwrap();
    for ack in acks {
        assert_eq!(tokio::time::timeout(WAIT, ack).await.unwrap().unwrap(), 1);
    }
    assert_eq!(tokio::time::timeout(WAIT, other).await.unwrap().unwrap(), 0);

    for (n, text) in texts.iter().enumerate() {
        let push = next_push(&mut rx).await;
        assert_eq!(
            push.as_str(),
            text,
            "push {n}: the report as sent, byte for byte"
        );
        assert_eq!(push.code().as_deref(), Some("t.seq"));
        let value: serde_json::Value = push.parse().unwrap();
        assert_eq!(value["n"], n);
        assert!(!push.encrypted);
        assert!(push.received_at >= before && push.received_at <= SystemTime::now());
    }
    assert!(quiet_for(&mut rx, Duration::from_millis(200)).await.is_ok());
    let stats = reporter.stats();
    assert_eq!((stats.accepted, stats.acked, stats.in_flight), (51, 51, 0));
}

async fn restart_and_resubscribe(encrypt: bool) {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let mut cfg = config(server.addr);
    cfg.encrypt = encrypt;
    cfg.compress = encrypt;
    let mut rx = PushReceiver::connect(cfg, Subscription::new("r").topic("svc.*"))
        .await
        .unwrap();
    let reporter = Reporter::connect(config(server.addr)).await.unwrap();
    assert_eq!(
        reporter
            .report_raw(r#"{"code":"svc.a","n":1}"#)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        next_push(&mut rx).await.as_str(),
        r#"{"code":"svc.a","n":1}"#
    );

    server.stop().await;
    match next_event(&mut rx).await {
        Event::Disconnected { reason } => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // Down for a while: several attempts fail.
    wait_attempt(rx.status_watch(), 3).await;
    assert!(matches!(
        rx.status(),
        Status::Connecting { attempt, .. } if attempt >= 3
    ));

    let server = TestServer::start_on(port, |_| {}).await;
    match next_event(&mut rx).await {
        Event::Reconnected {
            attempts,
            connections,
        } => {
            assert!(attempts >= 1);
            assert_eq!(connections, 2);
        }
        other => panic!("expected Reconnected, got {other:?}"),
    }
    assert_eq!(rx.status(), Status::Connected { connections: 2 });
    // Subscribed again, with the same topics.
    server.wait_subscribers(1).await;
    let reporter = Reporter::connect(config(server.addr)).await.unwrap();
    assert_eq!(reporter.report_raw(r#"{"code":"other"}"#).await.unwrap(), 0);
    assert_eq!(
        reporter
            .report_raw(r#"{"code":"svc.b","n":2}"#)
            .await
            .unwrap(),
        1
    );
    let push = next_push(&mut rx).await;
    assert_eq!(push.as_str(), r#"{"code":"svc.b","n":2}"#);
    assert_eq!(
        push.encrypted, encrypt,
        "a fresh key after the reconnection"
    );
}

#[tokio::test]
async fn receiver_reconnects_and_resubscribes_after_a_server_restart() {
    restart_and_resubscribe(false).await;
}

#[tokio::test]
async fn encrypted_receiver_exchanges_keys_again_after_a_restart() {
    restart_and_resubscribe(true).await;
}

#[tokio::test]
async fn encrypted_subscription_decrypts() {
    let server = TestServer::start().await;
    let mut receivers = Vec::new();
    for (encrypt, compress) in [(true, false), (true, true), (false, true)] {
        let mut cfg = config(server.addr);
        cfg.encrypt = encrypt;
        cfg.compress = compress;
        let rx = PushReceiver::connect(cfg, Subscription::new("enc"))
            .await
            .unwrap();
        receivers.push((encrypt, rx));
    }
    let reporter = Reporter::connect(config(server.addr)).await.unwrap();
    let big = "x".repeat(100_000); // over the server's compress threshold
    for text in [
        r#"{"code":"secret","v":42}"#.to_owned(),
        format!(r#"{{"code":"big","pad":"{big}"}}"#),
    ] {
        assert_eq!(reporter.report_raw(text.clone()).await.unwrap(), 3);
        for (encrypt, rx) in &mut receivers {
            let push = next_push(rx).await;
            assert_eq!(push.as_str(), text);
            assert_eq!(push.encrypted, *encrypt);
        }
    }
}

#[tokio::test]
async fn heartbeats_keep_connections_alive_past_a_short_idle_timeout() {
    let server = TestServer::start_on(0, |c| c.server.idle_timeout_secs = 1).await;
    let mut cfg = config(server.addr);
    cfg.heartbeat_interval = Duration::from_millis(200);
    let mut rx = PushReceiver::connect(cfg.clone(), Subscription::new("hb"))
        .await
        .unwrap();
    let reporter = Reporter::connect(cfg).await.unwrap();

    // Control: without heartbeats inside the idle timeout, the server closes the connection.
    let mut lazy = config(server.addr);
    lazy.heartbeat_interval = Duration::from_secs(30);
    let mut lazy_rx = PushReceiver::connect(lazy, Subscription::new("lazy"))
        .await
        .unwrap();

    // Three idle timeouts pass.
    assert!(quiet_for(&mut rx, Duration::from_secs(3)).await.is_ok());
    assert_eq!(rx.status(), Status::Connected { connections: 1 });
    assert_eq!(reporter.status(), Status::Connected { connections: 1 });
    assert!(matches!(
        next_event(&mut lazy_rx).await,
        Event::Disconnected { .. }
    ));

    assert_eq!(reporter.report_raw(r#"{"code":"alive"}"#).await.unwrap(), 2);
    assert_eq!(next_push(&mut rx).await.as_str(), r#"{"code":"alive"}"#);
    assert_eq!(reporter.stats().reconnects, 0);
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let server = TestServer::start().await;
    let addr = server.addr;
    server.stop().await;
    let mut cfg = config(addr);
    cfg.max_attempts = Some(3);
    let err = PushReceiver::connect(cfg, Subscription::new("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unreachable { attempts: 3, .. }),
        "{err}"
    );

    // A receiver that loses its server for good ends its stream with that error.
    let server = TestServer::start().await;
    let mut cfg = config(server.addr);
    cfg.max_attempts = Some(2);
    let mut rx = PushReceiver::connect(cfg, Subscription::new("x"))
        .await
        .unwrap();
    server.stop().await;
    assert!(matches!(
        next_event(&mut rx).await,
        Event::Disconnected { .. }
    ));
    let end = tokio::time::timeout(WAIT, rx.next()).await.unwrap();
    assert!(
        matches!(end, Some(Err(Error::Unreachable { attempts: 2, .. }))),
        "{end:?}"
    );
    assert!(rx.next().await.is_none());
    assert!(matches!(rx.status(), Status::Stopped { .. }));
}

type ServerConn = Framed<tokio::net::TcpStream, ServerCodec>;

/// A scripted server on a free port: it accepts one connection, takes its subscribe,
/// acknowledges it, and then runs `script` with the connection and the client's uuid.
async fn scripted_server<F, Fut>(
    script: F,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Fut::Output>)
where
    F: FnOnce(ServerConn, monitor_proto::Uuid) -> Fut + Send + 'static,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut server = Framed::new(stream, ServerCodec::new());
        let subscribe = server.next().await.unwrap().unwrap();
        assert_eq!(subscribe.header.msg_type, MsgType::Subscribe);
        let uuid = subscribe.header.uuid;
        let ack = reply::success_raw(&subscribe.body.unwrap());
        server
            .send(ServerMessage::new(MsgType::Push, uuid, ack))
            .await
            .unwrap();
        script(server, uuid).await
    });
    (addr, task)
}

#[tokio::test]
async fn bad_server_input_is_skipped_or_ends_the_connection_without_panicking() {
    let (addr, script) = scripted_server(|mut server, uuid| async move {
        let push = |json: Bytes| ServerMessage::new(MsgType::Push, uuid, json);
        for bad in [
            push(Bytes::from_static(b"not json")),
            push(reply::error("something broke")),
            push(Bytes::from_static(br#"{"errCode":0}"#)),
            ServerMessage::new(MsgType::ReportAck, uuid, reply::report_ack(3)),
            ServerMessage::new(MsgType::KeyReply, uuid, reply::key_pubkey("AAAA")),
        ] {
            server.send(bad).await.unwrap();
        }
        // Claims encryption, but the receiver has no key: skipped.
        let mut raw = bytes::BytesMut::new();
        let header = monitor_proto::Header::new(MsgType::Push, uuid).with_cipher(true);
        monitor_proto::FrameCodec::new()
            .encode_parts(&header, &[0u8; 40], &mut raw)
            .unwrap();
        // A bad compressed body: skipped too.
        let header = monitor_proto::Header::new(MsgType::Push, uuid).with_compress(true);
        monitor_proto::FrameCodec::new()
            .encode_parts(&header, b"not zlib", &mut raw)
            .unwrap();
        server.get_mut().write_all(&raw).await.unwrap();
        server
            .send(push(reply::push(br#"{"code":"good"}"#)))
            .await
            .unwrap();
        // Then a header that breaks the protocol: the stream cannot go on.
        server.get_mut().write_all(&[9u8; 45]).await.unwrap();
        server.get_mut().flush().await.unwrap();
        // Keep the connection open until the client drops it: the client must see the
        // bad header, not an end of stream.
        while let Some(Ok(_)) = server.next().await {}
    })
    .await;
    let mut cfg = config(addr);
    cfg.max_attempts = Some(1);
    let mut rx = PushReceiver::connect(cfg, Subscription::new("x"))
        .await
        .unwrap();
    assert_eq!(next_push(&mut rx).await.as_str(), r#"{"code":"good"}"#);
    match next_event(&mut rx).await {
        Event::Disconnected { reason } => {
            assert!(reason.contains("protocol error"), "{reason}")
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    script.abort();
}

#[tokio::test]
async fn status_watch_reports_the_outage() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let rx = PushReceiver::connect(config(server.addr), Subscription::new("w"))
        .await
        .unwrap();
    let mut watch = rx.status_watch();
    server.stop().await;
    tokio::time::timeout(WAIT, watch.wait_for(|s| !s.is_connected()))
        .await
        .unwrap()
        .unwrap();
    let _server = TestServer::start_on(port, |_| {}).await;
    wait_connected(rx.status_watch(), 2).await;
}

#[tokio::test]
async fn unix_socket_receiver_and_reporter() {
    let path = std::env::temp_dir().join(format!(
        "monitor-client-test-{}-{}.sock",
        std::process::id(),
        monitor_client::config::random_uuid(b'u')
    ));
    let listen = format!("unix:{}", path.display());
    let server = TestServer::start_on(0, |c| {
        c.listeners.push(monitor_server::ListenerConfig::new(
            "unix",
            listen.parse().unwrap(),
        ));
    })
    .await;
    let mut cfg = config(server.addr);
    cfg.server = listen.parse().unwrap();
    cfg.encrypt = true;
    let mut rx = PushReceiver::connect(cfg.clone(), Subscription::new("u"))
        .await
        .unwrap();
    let reporter = Reporter::connect(cfg).await.unwrap();
    assert_eq!(
        reporter.report_raw(r#"{"code":"via.unix"}"#).await.unwrap(),
        1
    );
    let push = next_push(&mut rx).await;
    assert_eq!(push.as_str(), r#"{"code":"via.unix"}"#);
    assert!(push.encrypted);
    drop((rx, reporter));
    server.stop().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_server_that_stops_answering_heartbeats_is_left() {
    // Acknowledges the subscribe, then reads everything and answers nothing, with the
    // connection open: only the missing heartbeat replies can tell the client.
    let (addr, silent) = scripted_server(|mut conn, _| async move {
        let mut heartbeats = 0;
        while let Some(Ok(frame)) = conn.next().await {
            heartbeats += u32::from(frame.header.msg_type == MsgType::Heartbeat);
        }
        heartbeats
    })
    .await;
    let mut cfg = config(addr);
    cfg.heartbeat_interval = Duration::from_millis(100);
    cfg.ack_timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let mut rx = PushReceiver::connect(cfg, Subscription::new("s"))
        .await
        .unwrap();
    match next_event(&mut rx).await {
        Event::Disconnected { reason } => {
            assert!(reason.contains("heartbeat unanswered"), "{reason}")
        }
        other => panic!("expected a disconnection, got {other:?}"),
    }
    // Not before heartbeat_interval + ack_timeout of silence.
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(rx);
    let heartbeats = tokio::time::timeout(WAIT, silent).await.unwrap().unwrap();
    assert!(heartbeats >= 2, "{heartbeats} heartbeats sent");
}

/// A client whose background task is gone (here: its runtime shut down under it) says so
/// with an error, once, instead of a stream that just ends or a bare `Closed`.
#[tokio::test]
async fn a_task_dropped_with_its_runtime_is_an_error_not_a_silent_end() {
    let server = TestServer::start().await;
    let down = TestServer::start().await;
    let down_addr = down.addr;
    down.stop().await;
    let (up, down) = (config(server.addr), config(down_addr));
    // Another runtime runs the clients' tasks, then shuts down under them.
    let (mut rx, reporter, ack) = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let clients = rt.block_on(async move {
            let rx = PushReceiver::connect(up, Subscription::new("rt"))
                .await
                .unwrap();
            // Never connects: the report stays buffered.
            let reporter = Reporter::start(down).unwrap();
            let ack = reporter.send(&serde_json::json!({"code": "rt"})).unwrap();
            (rx, reporter, ack)
        });
        drop(rt);
        clients
    })
    .await
    .unwrap();

    match tokio::time::timeout(WAIT, rx.recv()).await.unwrap() {
        Some(Err(Error::BackgroundTask { task, reason })) => {
            assert_eq!(task, "push receiver");
            assert!(reason.contains("runtime shut down"), "{reason}");
        }
        other => panic!("expected the task's failure, got {other:?}"),
    }
    assert!(rx.recv().await.is_none(), "once, then the stream ends");
    let later = reporter.send(&serde_json::json!({"code": "rt"})).map(drop);
    for outcome in [
        tokio::time::timeout(WAIT, ack).await.unwrap().map(drop),
        later,
    ] {
        assert!(
            matches!(
                &outcome,
                Err(Error::BackgroundTask { task: "reporter", reason }) if reason.contains("runtime shut down")
            ),
            "{outcome:?}"
        );
    }
}
