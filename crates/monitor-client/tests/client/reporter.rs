//! The reporter: pipelining, refusals, buffering while the server is down, delivery
//! semantics across a dropped connection, timeouts.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use monitor_client::{Delivery, Error, PushReceiver, Reporter, Status, Subscription};
use monitor_proto::message::reply;
use monitor_proto::{MsgType, ServerCodec, ServerMessage};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

use crate::support::{
    config, eventually, next_push, quiet_for, wait_attempt, wait_connected, Proxy, TestServer, WAIT,
};

#[tokio::test]
async fn pipelined_reports_are_acked_in_order_and_refusals_do_not_break_it() {
    // A push must fit the server's max_frame_len: a 150-byte report is refused (its push
    // is 233 bytes), with the connection left open.
    let server = TestServer::start_on(0, |c| c.server.max_frame_len = 200).await;
    let mut rx = PushReceiver::connect(config(server.addr), Subscription::new("p"))
        .await
        .unwrap();
    let reporter = Reporter::connect(config(server.addr)).await.unwrap();
    let big = format!(r#"{{"code":"big","pad":"{}"}}"#, "x".repeat(150 - 23));
    assert_eq!(big.len(), 150);
    let mut acks = Vec::new();
    for n in 0..300 {
        let text = if n % 100 == 50 {
            big.clone()
        } else {
            format!(r#"{{"code":"p","n":{n}}}"#)
        };
        acks.push((n, reporter.send_raw(text).unwrap()));
    }
    for (n, ack) in acks {
        let outcome = tokio::time::timeout(WAIT, ack).await.unwrap();
        if n % 100 == 50 {
            match outcome {
                Err(Error::ReportRefused { msg }) => assert!(msg.contains("too large"), "{msg}"),
                other => panic!("report {n}: expected a refusal, got {other:?}"),
            }
        } else {
            assert_eq!(
                outcome.unwrap_or_else(|e| panic!("report {n}: {e:?}")),
                1,
                "report {n}"
            );
        }
    }
    for n in (0..300).filter(|n| n % 100 != 50) {
        let push = next_push(&mut rx).await;
        assert_eq!(push.as_str(), format!(r#"{{"code":"p","n":{n}}}"#));
    }
    let stats = reporter.stats();
    assert_eq!((stats.acked, stats.refused, stats.reconnects), (297, 3, 0));
    assert_eq!(reporter.status(), Status::Connected { connections: 1 });
}

#[tokio::test]
async fn reports_made_while_the_server_is_down_arrive_after_it_returns_in_order_once() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    // The reporter reaches the server through a proxy, so the test decides when it can
    // come back (after the new subscriber is in place).
    let proxy = Proxy::start(server.addr).await;
    let mut cfg = config(proxy.addr);
    cfg.buffer_size = 64;
    let reporter = Reporter::connect(cfg).await.unwrap();
    let mut rx = PushReceiver::connect(config(server.addr), Subscription::new("b"))
        .await
        .unwrap();
    for n in 0..3 {
        assert_eq!(
            reporter
                .report(&serde_json::json!({"code": "b", "n": n}))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            next_push(&mut rx).await.as_str(),
            format!(r#"{{"code":"b","n":{n}}}"#)
        );
    }

    // The server goes down; the reporter notices and cannot get back in.
    proxy.pause();
    server.stop().await;
    drop(rx);
    eventually("the reporter noticed", || !reporter.status().is_connected()).await;

    let acks: Vec<_> = (3..20)
        .map(|n| {
            reporter
                .send(&serde_json::json!({"code": "b", "n": n}))
                .unwrap()
        })
        .collect();
    wait_attempt(reporter.status_watch(), 3).await; // two failed attempts, a third under way
    let stats = reporter.stats();
    assert_eq!((stats.buffered, stats.in_flight, stats.written), (17, 0, 3));
    assert!(!reporter.status().is_connected());

    // The server returns on the same port; a subscriber is there first.
    let server = TestServer::start_on(port, |_| {}).await;
    let mut rx = PushReceiver::connect(config(server.addr), Subscription::new("b2"))
        .await
        .unwrap();
    proxy.resume();
    for (n, ack) in (3..20).zip(acks) {
        assert_eq!(
            tokio::time::timeout(WAIT, ack).await.unwrap().unwrap(),
            1,
            "report {n}"
        );
    }
    for n in 3..20 {
        assert_eq!(
            next_push(&mut rx).await.as_str(),
            format!(r#"{{"code":"b","n":{n}}}"#)
        );
    }
    assert!(
        quiet_for(&mut rx, Duration::from_millis(300)).await.is_ok(),
        "none twice"
    );
    let stats = reporter.stats();
    assert_eq!((stats.acked, stats.resent, stats.buffered), (20, 0, 0));
    assert_eq!(stats.reconnects, 1);
    wait_connected(reporter.status_watch(), 2).await;
}

#[tokio::test]
async fn a_full_buffer_refuses_reports_instead_of_growing() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    server.stop().await;
    let mut cfg = config(format!("127.0.0.1:{port}").parse().unwrap());
    cfg.buffer_size = 3;
    // Not waiting for a connection: reports are buffered from the start.
    let reporter = Reporter::start(cfg).unwrap();
    let acks: Vec<_> = (0..3)
        .map(|n| {
            reporter
                .send(&serde_json::json!({"code": "f", "n": n}))
                .unwrap()
        })
        .collect();
    for _ in 0..2 {
        let err = reporter
            .send(&serde_json::json!({"code": "f", "n": 99}))
            .unwrap_err();
        assert!(matches!(err, Error::BufferFull { capacity: 3 }), "{err}");
    }
    let stats = reporter.stats();
    assert_eq!((stats.buffered, stats.rejected_buffer_full), (3, 2));

    // When the server comes, the three buffered reports are sent.
    let server = TestServer::start_on(port, |_| {}).await;
    for ack in acks {
        assert_eq!(tokio::time::timeout(WAIT, ack).await.unwrap().unwrap(), 0);
    }
    reporter.flush().await.unwrap();
    assert_eq!(server.handle.stats().reports, 3);
}

#[tokio::test]
async fn giving_up_fails_buffered_reports_and_later_sends() {
    let server = TestServer::start().await;
    let addr = server.addr;
    server.stop().await;
    let mut cfg = config(addr);
    cfg.max_attempts = Some(2);
    let reporter = Reporter::start(cfg.clone()).unwrap();
    let ack = reporter.send(&serde_json::json!({"code": "x"})).unwrap();
    let outcome = tokio::time::timeout(WAIT, ack).await.unwrap();
    assert!(
        matches!(outcome, Err(Error::Unreachable { attempts: 2, .. })),
        "{outcome:?}"
    );
    let later = reporter
        .send(&serde_json::json!({"code": "x"}))
        .unwrap_err();
    assert!(
        matches!(later, Error::Unreachable { attempts: 2, .. }),
        "{later}"
    );
    assert!(matches!(reporter.status(), Status::Stopped { .. }));
    assert!(matches!(
        reporter.flush().await,
        Err(Error::Unreachable { .. })
    ));

    let err = Reporter::connect(cfg).await.unwrap_err();
    assert!(
        matches!(err, Error::Unreachable { attempts: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn local_checks_refuse_what_the_server_would() {
    let server = TestServer::start().await;
    let mut cfg = config(server.addr);
    cfg.max_report_frame_len = 1000;
    let reporter = Reporter::connect(cfg).await.unwrap();
    for bad in ["", "[1]", "\"s\"", "{", "{} {}"] {
        assert!(
            matches!(reporter.send_raw(bad), Err(Error::NotAnObject { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        reporter.send(&[1, 2]),
        Err(Error::NotAnObject { .. })
    ));
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
    assert!(matches!(
        reporter.send_raw(big),
        Err(Error::ReportTooLarge { max: 1000, .. })
    ));
    assert_eq!(reporter.report_raw(" {\"ok\":true} ").await.unwrap(), 0);
    assert_eq!(reporter.stats().accepted, 1);
}

#[tokio::test]
async fn a_report_that_compression_grows_over_the_limit_fails_alone() {
    let server = TestServer::start().await;
    let mut cfg = config(server.addr);
    cfg.compress = true;
    cfg.max_report_frame_len = 45 + 40;
    let reporter = Reporter::connect(cfg).await.unwrap();
    // Short text of distinct characters does not compress: zlib adds 6 bytes of its own,
    // and fixed Huffman codes take up to 9 bits a byte.
    let grows = r#"{"k":"qwertyuiopasdfghjklzxcvbnm12"}"#;
    let packed = monitor_proto::layer::compress::deflate(grows.as_bytes());
    assert!(
        grows.len() <= 40 && packed.len() > 40,
        "{} -> {}",
        grows.len(),
        packed.len()
    );

    let err = reporter.report_raw(grows).await.unwrap_err();
    assert!(err.to_string().contains("85"), "{err}");
    // The connection carries on: the next report is acknowledged on it.
    assert_eq!(reporter.report_raw(r#"{"a":1}"#).await.unwrap(), 0);
    let stats = reporter.stats();
    assert_eq!((stats.failed, stats.acked, stats.reconnects), (1, 1, 0));
    assert_eq!(reporter.status(), Status::Connected { connections: 1 });
}

/// A scripted server: the first connection takes the heartbeat handshake and one report,
/// then drops without acknowledging it; the second acknowledges whatever it gets with
/// `delivered = 7`. Returns the reports the second connection received.
async fn drop_before_the_ack(
    delivery: Delivery,
) -> (
    Result<u64, Error>,
    Vec<String>,
    monitor_client::ReporterStats,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = tokio::spawn(async move {
        async fn handshake(listener: &TcpListener) -> Framed<tokio::net::TcpStream, ServerCodec> {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Framed::new(stream, ServerCodec::new());
            let hb = conn.next().await.unwrap().unwrap();
            assert_eq!(hb.header.msg_type, MsgType::Heartbeat);
            conn.send(ServerMessage::new(
                MsgType::HeartbeatReply,
                hb.header.uuid,
                reply::heartbeat(1),
            ))
            .await
            .unwrap();
            conn
        }
        let mut first = handshake(&listener).await;
        let report = first.next().await.unwrap().unwrap();
        assert_eq!(report.header.msg_type, MsgType::Report);
        drop(first);
        let mut second = handshake(&listener).await;
        let mut seen = Vec::new();
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(500), second.next()).await
        {
            if frame.header.msg_type == MsgType::Report {
                seen.push(String::from_utf8(frame.body.unwrap().to_vec()).unwrap());
                second
                    .send(ServerMessage::new(
                        MsgType::ReportAck,
                        frame.header.uuid,
                        reply::report_ack(7),
                    ))
                    .await
                    .unwrap();
            }
        }
        seen
    });
    let mut cfg = config(addr);
    cfg.delivery = delivery;
    let reporter = Reporter::connect(cfg).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, reporter.send_raw(r#"{"code":"once"}"#).unwrap())
        .await
        .unwrap();
    if delivery == Delivery::AtMostOnce {
        // The next report goes to the new connection and is acknowledged normally.
        let later = reporter.report_raw(r#"{"code":"later"}"#).await.unwrap();
        assert_eq!(later, 7);
    }
    let seen = tokio::time::timeout(WAIT, script).await.unwrap().unwrap();
    (outcome, seen, reporter.stats())
}

#[tokio::test]
async fn at_least_once_resends_an_unacknowledged_report() {
    let (outcome, seen, stats) = drop_before_the_ack(Delivery::AtLeastOnce).await;
    assert_eq!(outcome.unwrap(), 7);
    assert_eq!(seen, [r#"{"code":"once"}"#]);
    assert_eq!((stats.resent, stats.written, stats.reconnects), (1, 2, 1));
}

#[tokio::test]
async fn at_most_once_reports_an_unacknowledged_report_as_maybe_lost() {
    let (outcome, seen, stats) = drop_before_the_ack(Delivery::AtMostOnce).await;
    assert!(
        matches!(outcome, Err(Error::MaybeLost { .. })),
        "{outcome:?}"
    );
    assert_eq!(seen, [r#"{"code":"later"}"#]);
    assert_eq!((stats.resent, stats.maybe_lost), (0, 1));
}

/// A listener that accepts connections and never answers: the error says the connection
/// was made and which handshake step got no answer within connect_timeout (it used to say
/// "server unreachable ... timed out"). A refused connection still says refused.
#[tokio::test(start_paused = true)]
async fn a_silent_server_is_named_as_not_answering_the_handshake_step() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let mut cfg = config(addr);
    cfg.connect_timeout = Duration::from_secs(10);
    cfg.max_attempts = Some(1);
    let mut encrypted = cfg.clone();
    encrypted.encrypt = true;
    let attempts = [
        ("heartbeat", Reporter::connect(cfg.clone()).await.map(drop)),
        (
            "subscribe",
            PushReceiver::connect(cfg.clone(), Subscription::new("s"))
                .await
                .map(drop),
        ),
        (
            "key exchange",
            PushReceiver::connect(encrypted, Subscription::new("s"))
                .await
                .map(drop),
        ),
    ];
    for (step, outcome) in attempts {
        let err = outcome.unwrap_err();
        let Error::Unreachable {
            attempts: 1,
            ref last_error,
        } = err
        else {
            panic!("{step}: {err:?}");
        };
        assert_eq!(
            last_error,
            &format!(
                "connected to {addr}, but the server did not answer the {step} within 10s (connect_timeout)"
            )
        );
        assert_eq!(
            err.to_string(),
            format!("gave up after 1 failed connection attempt: {last_error}")
        );
    }

    // Nothing listens: refused, at once.
    accepted.abort();
    let _ = accepted.await;
    let started = tokio::time::Instant::now();
    let err = Reporter::connect(cfg).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        err.starts_with(&format!(
            "gave up after 1 failed connection attempt: cannot connect to {addr}: "
        )),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn acks_time_out() {
    // Answers heartbeats, swallows reports: `report` times out after ack_timeout, and the
    // connection is replaced.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = tokio::spawn(async move {
        let mut conns = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Framed::new(stream, ServerCodec::new());
            let hb = conn.next().await.unwrap().unwrap();
            conn.send(ServerMessage::new(
                MsgType::HeartbeatReply,
                hb.header.uuid,
                reply::heartbeat(1),
            ))
            .await
            .unwrap();
            conns.push(conn);
        }
    });
    let mut cfg = config(addr);
    cfg.ack_timeout = Duration::from_millis(300);
    let reporter = Reporter::connect(cfg).await.unwrap();
    let err = reporter.report_raw(r#"{"code":"t"}"#).await.unwrap_err();
    assert!(matches!(err, Error::AckTimeout { .. }), "{err}");
    wait_connected(reporter.status_watch(), 2).await;
    script.abort();
}

/// A clustered server's acknowledgement says `"cluster": true`; the reporter shows it in
/// the whole acknowledgement, and `delivered` stays what it was.
#[tokio::test]
async fn the_whole_acknowledgement_shows_a_clustered_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Framed::new(stream, ServerCodec::new());
        let mut clustered = true;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(WAIT, conn.next()).await {
            let (reply_type, body) = match frame.header.msg_type {
                MsgType::Heartbeat => (MsgType::HeartbeatReply, reply::heartbeat(1)),
                MsgType::Report => {
                    let data = monitor_client::ReportAckData::new(2).with_cluster(clustered);
                    clustered = !clustered;
                    (MsgType::ReportAck, reply::report_ack_with(&data))
                }
                _ => continue,
            };
            let reply = ServerMessage::new(reply_type, frame.header.uuid, body);
            if conn.send(reply).await.is_err() {
                break;
            }
        }
    });
    let reporter = Reporter::connect(config(addr)).await.unwrap();
    let first = reporter
        .report_acknowledged(r#"{"code":"a"}"#)
        .await
        .unwrap();
    assert_eq!((first.delivered, first.cluster), (2, true));
    let second = reporter
        .send_raw(r#"{"code":"b"}"#)
        .unwrap()
        .acknowledgement()
        .await
        .unwrap();
    assert_eq!((second.delivered, second.cluster), (2, false));
    assert_eq!(reporter.report_raw(r#"{"code":"c"}"#).await.unwrap(), 2);
    reporter.close().await.unwrap();
    script.abort();
}
