//! Bad input and limits: each offender is closed (or answered) alone, and everyone else
//! keeps being served.

use std::time::Duration;

use monitor_proto::layer::compress::deflate;
use monitor_proto::{Frame, FrameCodec, Header, MsgType};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_util::codec::Encoder;

use crate::support::{eventually, start, uuid, Client, WAIT};

/// A valid frame's bytes.
fn frame(msg_type: MsgType, body: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    FrameCodec::new()
        .encode(
            Frame::new(Header::new(msg_type, uuid("raw")), body.to_vec().into()),
            &mut out,
        )
        .unwrap();
    out.to_vec()
}

fn with_crc(mut raw: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&raw[..8]);
    raw[8..12].copy_from_slice(&crc.to_le_bytes());
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_header_closes_only_its_connection() {
    let server = start(|c| c.server.max_frame_len = 4096).await;
    let mut healthy = Client::connect(server.addr(), "healthy").await;
    healthy.subscribe("h", &[]).await;
    let mut reporter = Client::connect(server.addr(), "reporter").await;

    let good = frame(MsgType::Heartbeat, b"");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v = good.clone();
    v[0] = 2;
    cases.push(("version 2", with_crc(v)));
    for t in [0u8, 9, 255] {
        let mut v = good.clone();
        v[1] = t;
        cases.push(("unknown type", with_crc(v)));
    }
    for t in [
        MsgType::KeyReply,
        MsgType::HeartbeatReply,
        MsgType::Push,
        MsgType::ReportAck,
    ] {
        cases.push(("server-only type", frame(t, b"{}")));
    }
    let mut v = good.clone();
    v[2] = 2;
    cases.push(("cipher flag 2", with_crc(v)));
    let mut v = good.clone();
    v[3] = 7;
    cases.push(("compress flag 7", with_crc(v)));
    let mut v = good.clone();
    v[4..8].copy_from_slice(&44u32.to_le_bytes());
    cases.push(("length 44", with_crc(v)));
    let mut v = good.clone();
    v[4..8].copy_from_slice(&4097u32.to_le_bytes());
    cases.push(("length over max_frame_len", with_crc(v)));
    let mut v = good.clone();
    v[9] ^= 0x40;
    cases.push(("bad crc", v));

    let before = server.handle.stats().protocol_errors;
    for (n, (what, bytes)) in cases.iter().enumerate() {
        let mut offender = Client::connect(server.addr(), "offender").await;
        offender.send_raw(bytes).await;
        // No reply: a bad header cannot be trusted, the stream is closed.
        match tokio::time::timeout(WAIT, futures::StreamExt::next(&mut offender.framed)).await {
            Ok(None) | Ok(Some(Err(_))) => {}
            Ok(Some(Ok(f))) => panic!("{what}: got a reply {:?}", f.header),
            Err(_) => panic!("{what}: not closed"),
        }
        assert_eq!(
            reporter.report(&format!(r#"{{"code":"h","n":{n}}}"#)).await,
            1,
            "{what}"
        );
        let v: Value = serde_json::from_str(&healthy.push().await).unwrap();
        assert_eq!(v["n"].as_u64(), Some(n as u64), "{what}");
    }
    let after = server.handle.stats();
    assert_eq!(after.protocol_errors - before, cases.len() as u64);
    // Each by its kind; the server started with this test, so these are all of them.
    let kinds = after.protocol_errors_by_kind;
    assert_eq!(
        [
            kinds.bad_version,
            kinds.bad_msg_type,
            kinds.wrong_direction,
            kinds.bad_flag,
            kinds.frame_too_short,
            kinds.frame_too_long,
            kinds.bad_header_crc,
            kinds.other_frame,
        ],
        [1, 3, 4, 2, 1, 1, 1, 0],
        "{kinds:?}"
    );
    assert_eq!(
        kinds.malformed_body + kinds.bad_compression + kinds.decrypt_failed,
        0,
        "no body errors: {kinds:?}"
    );
    assert_eq!(after.limits_hit.max_frame_len, 1, "{:?}", after.limits_hit);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_gigabyte_header_is_closed_after_twelve_bytes() {
    let server = start(|_| {}).await;
    let mut v = frame(MsgType::Report, b"");
    v[4..8].copy_from_slice(&2_000_000_000u32.to_le_bytes());
    let v = with_crc(v);
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &v[..12])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once, nothing sent: {n:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zlib_bomb_is_refused() {
    let server = start(|_| {}).await;
    let bomb = deflate(&vec![b' '; 9 << 20]);
    assert!(bomb.len() < 1 << 20);
    let mut c = Client::connect(server.addr(), "raw").await;
    let mut raw = frame(MsgType::Report, &bomb);
    raw[3] = 1;
    let raw = with_crc(raw);
    c.send_raw(&raw).await;
    let (_, reply) = c.reply(MsgType::ReportAck).await;
    assert_eq!(reply.err_code, -1);
    assert_eq!(
        reply.msg,
        "malformed body: compressed body inflates beyond max_inflated_len 8388608"
    );
    // A report stays answered and the connection open.
    assert_eq!(c.report(r#"{"code":"after"}"#).await, 0);

    // In a subscribe, a bomb is a malformed subscribe: answered, then closed.
    let mut s = Client::connect(server.addr(), "raw").await;
    let mut raw = frame(MsgType::Subscribe, &bomb);
    raw[3] = 1;
    s.send_raw(&with_crc(raw)).await;
    let (_, reply) = s.reply(MsgType::Push).await;
    assert_eq!(reply.err_code, -1);
    s.expect_closed().await;
    server.stop().await;
}

/// Paused time: each 2 ms pause lets the server take the byte alone, at no wall-clock cost.
#[tokio::test(start_paused = true)]
async fn a_byte_at_a_time_writer_is_served() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "raw").await;
    let mut wire = frame(MsgType::Subscribe, br#"{"code":"slow"}"#);
    wire.extend(frame(MsgType::Report, br#"{"code":"slow","v":1}"#));
    for byte in &wire {
        c.send_raw(std::slice::from_ref(byte)).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (_, ack) = c.reply(MsgType::Push).await;
    assert!(ack.is_success());
    // The ack and the push may come in either order relative to each other only after
    // the subscribe ack; read both.
    let a = c.recv().await;
    let b = c.recv().await;
    let mut types = [a.header.msg_type, b.header.msg_type];
    types.sort_by_key(|t| t.as_u8());
    assert_eq!(types, [MsgType::Push, MsgType::ReportAck]);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_partial_frame_is_closed_by_the_idle_timeout() {
    let server = start(|c| c.server.idle_timeout_secs = 1).await;
    let mut c = Client::connect(server.addr(), "stall").await;
    let wire = frame(MsgType::Report, br#"{"code":"never finished"}"#);
    let started = tokio::time::Instant::now();
    c.send_raw(&wire[..30]).await;
    c.expect_closed().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "{took:?}"
    );
    server.stop().await;
}

/// Paused time: the pauses between heartbeats cost no wall-clock time.
#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_connection_past_the_idle_timeout() {
    let server = start(|c| c.server.idle_timeout_secs = 1).await;
    let mut c = Client::connect(server.addr(), "alive").await;
    c.subscribe("x", &[]).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.heartbeat().await;
    }
    // Then silence: closed.
    c.expect_closed().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_subscriber_does_not_slow_the_others() {
    const REPORTS: u64 = 300;
    let server = start(|c| c.server.subscriber_queue = 32).await;
    let pad = "x".repeat(64 * 1024);

    // Subscribes, then never reads again: its socket, write buffer and queue fill up.
    let mut stuck = Client::connect(server.addr(), "stuck").await;
    stuck.subscribe("load", &[]).await;

    // The good subscriber confirms each push, and the reporter sends the next report only
    // then: every round trip must complete while the stuck one is full.
    let mut good = Client::connect(server.addr(), "good").await;
    good.subscribe("load", &[]).await;
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        for n in 0..REPORTS {
            let (_, push) = good.reply(MsgType::Push).await;
            let v: Value = serde_json::from_str(push.data.get()).unwrap();
            assert_eq!(v["n"].as_u64(), Some(n), "in order, none lost");
            got_tx.send(n).unwrap();
        }
    });

    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let mut delivered = 0;
    for n in 0..REPORTS {
        delivered += reporter
            .report(&format!(r#"{{"code":"load","n":{n},"pad":"{pad}"}}"#))
            .await;
        let confirmed = tokio::time::timeout(WAIT, got.recv())
            .await
            .expect("the good subscriber is not held up");
        assert_eq!(confirmed, Some(n));
    }
    reader.await.unwrap();
    let stats = server.handle.stats();
    assert!(
        stats.pushes_dropped > 0,
        "the stuck subscriber's pushes were dropped: {stats:?}"
    );
    assert_eq!(
        delivered + stats.pushes_dropped,
        2 * REPORTS,
        "every push queued or counted"
    );
    drop(stuck);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_disconnects_under_the_disconnect_policy() {
    let server = start(|c| {
        c.server.subscriber_queue = 8;
        c.server.slow_consumer = monitor_server::SlowConsumer::Disconnect;
    })
    .await;
    let mut stuck = Client::connect(server.addr(), "stuck").await;
    stuck.subscribe("load", &[]).await;
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let pad = "y".repeat(64 * 1024);
    for n in 0..300 {
        reporter
            .report(&format!(r#"{{"code":"load","n":{n},"pad":"{pad}"}}"#))
            .await;
        if server.handle.stats().slow_consumers_disconnected > 0 {
            break;
        }
    }
    assert_eq!(server.handle.stats().slow_consumers_disconnected, 1);
    eventually("the slow subscriber is gone", || {
        server.handle.subscribers() == 0
    })
    .await;
    // It still gets what was queued before the close, then EOF.
    stuck.expect_closed().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_at_once() {
    let server = start(|c| c.server.max_connections = 2).await;
    let mut a = Client::connect(server.addr(), "a").await;
    let mut b = Client::connect(server.addr(), "b").await;
    a.heartbeat().await;
    b.heartbeat().await;
    let mut c = Client::connect(server.addr(), "c").await;
    c.expect_closed().await;
    assert_eq!(server.handle.stats().connections_refused, 1);
    a.heartbeat().await;
    drop(b);
    eventually("a slot frees up", || {
        server.handle.stats().connections_open == 1
    })
    .await;
    let mut d = Client::connect(server.addr(), "d").await;
    d.heartbeat().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_whose_push_could_exceed_max_frame_len_is_refused() {
    // push = 45 header + 28 encryption + 36 envelope prefix + report + 1 must fit in 200.
    let server = start(|c| c.server.max_frame_len = 200).await;
    let mut sub = Client::connect(server.addr(), "enc").await;
    sub.key_exchange().await;
    let (_, ack) = sub.subscribe_with(r#"{"code":"big"}"#, false, true).await;
    assert!(ack.is_success());
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let report = |len: usize| {
        let head = r#"{"code":"big","pad":""#;
        format!("{head}{}\"}}", "x".repeat(len - head.len() - 2))
    };
    let fits = report(200 - 45 - 28 - 36 - 1);
    assert_eq!(reporter.report(&fits).await, 1);
    assert_eq!(sub.push().await, fits);

    reporter
        .send(MsgType::Report, report(fits.len() + 1), false, false)
        .await;
    let (_, refused) = reporter.reply(MsgType::ReportAck).await;
    assert_eq!(refused.err_code, -1);
    assert_eq!(
        refused.msg,
        "report too large: its push of 201 bytes would exceed max_frame_len 200"
    );
    assert_eq!(server.handle.stats().pushes_dropped, 0);
    server.stop().await;
}

/// "Limits are inclusive" end to end: a report frame of exactly `max_frame_len`, and a
/// compressed one that inflates to exactly `max_inflated_len`, are accepted and pushed,
/// because their pushes go out compressed (over `compress_threshold`) and fit. They used
/// to be refused as if their pushes went out plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_at_the_limits_are_pushed_compressed() {
    const MAX_FRAME: usize = 4096;
    const MAX_INFLATED: usize = 8192;
    let server = start(|c| {
        c.server.max_frame_len = MAX_FRAME as u32;
        c.server.max_inflated_len = MAX_INFLATED;
        c.server.max_buffered_bytes = MAX_FRAME;
        c.server.compress_threshold = 1000;
    })
    .await;
    let mut sub = Client::connect(server.addr(), "sub").await;
    sub.key_exchange().await;
    let (_, ack) = sub.subscribe_with(r#"{"code":"edge"}"#, false, true).await;
    assert!(ack.is_success());
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let report = |len: usize| {
        let head = r#"{"code":"edge","pad":""#;
        format!("{head}{}\"}}", "e".repeat(len - head.len() - 2))
    };

    // A whole frame of exactly max_frame_len, sent plain.
    let whole = report(MAX_FRAME - 45);
    assert_eq!(reporter.report(&whole).await, 1);
    let r = sub.recv().await;
    assert!(r.header.compress && r.header.cipher, "{:?}", r.header);
    let reply = monitor_proto::message::reply::Reply::parse(&r.body.unwrap()).unwrap();
    assert_eq!(reply.data.get(), whole);

    // Compressed, inflating to exactly max_inflated_len; one byte more is refused.
    let inflated = report(MAX_INFLATED);
    reporter
        .send(MsgType::Report, inflated.clone(), true, false)
        .await;
    let (_, ack) = reporter.reply(MsgType::ReportAck).await;
    assert!(ack.is_success(), "{}", ack.msg);
    assert_eq!(sub.push().await, inflated);
    reporter
        .send(MsgType::Report, report(MAX_INFLATED + 1), true, false)
        .await;
    let (_, refused) = reporter.reply(MsgType::ReportAck).await;
    assert_eq!(
        refused.msg,
        format!("malformed body: compressed body inflates beyond max_inflated_len {MAX_INFLATED}")
    );
    assert_eq!(server.handle.stats().pushes_dropped, 0);
    server.stop().await;
}
