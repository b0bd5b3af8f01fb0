//! The attacks of the hardening issue, each written as a test over real sockets: what an
//! attacker (or a broken client) does, and that the server bounds it and stays healthy.

use std::time::Duration;

use monitor_proto::message::reply::ReportAckData;
use monitor_proto::{Frame, FrameCodec, Header, MsgType};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

use crate::support::{eventually, start, Client};

/// A report frame's bytes from `client`, its body padded to make the whole frame `len`
/// bytes.
fn report_frame(client: &Client, len: usize, code: &str) -> Vec<u8> {
    let head = format!(r#"{{"code":"{code}","pad":""#);
    let pad = len - monitor_proto::HEADER_LEN - head.len() - 2;
    let body = format!("{head}{}\"}}", "p".repeat(pad));
    let mut out = bytes::BytesMut::new();
    FrameCodec::builder()
        .max_frame_len(u32::MAX)
        .new_codec()
        .encode(
            Frame::new(Header::new(MsgType::Report, client.uuid), body.into()),
            &mut out,
        )
        .unwrap();
    assert_eq!(out.len(), len);
    out.to_vec()
}

/// Large partial frames share one server-wide budget: a second one waits (its client is
/// not read) until the first completes, while a client of small frames is served
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_partial_frames_wait_for_the_budget_and_small_ones_do_not() {
    const LEN: usize = 600 * 1024;
    let server = start(|c| c.server.max_buffered_bytes = 1024 * 1024 + 100 * 1024).await;
    let mut first = Client::connect(server.addr(), "first").await;
    let mut second = Client::connect(server.addr(), "second").await;
    let mut small = Client::connect(server.addr(), "small").await;

    // The first holds all but one byte of its frame: it holds LEN of the budget.
    let a = report_frame(&first, LEN, "big.a");
    first.send_raw(&a[..LEN - 1]).await;
    eventually("the first frame holds the budget", || {
        server.handle.buffered_bytes() == LEN
    })
    .await;

    // The second sends a whole frame: it does not fit what is left, so it waits.
    let b = report_frame(&second, LEN, "big.b");
    let writer = second.framed.get_mut();
    writer.write_all(&b).await.unwrap();
    writer.flush().await.unwrap();
    eventually("the second frame waits for the budget", || {
        server.handle.stats().budget_waits == 1
    })
    .await;
    assert_eq!(server.handle.buffered_bytes(), LEN);

    // Small frames never wait.
    assert_eq!(small.report(r#"{"code":"small"}"#).await, 0);

    // The first completes: it is answered, and the second gets its turn.
    first.send_raw(&a[LEN - 1..]).await;
    let (_, ack) = first.reply(MsgType::ReportAck).await;
    assert!(ack.is_success(), "{}", ack.msg);
    let (_, ack) = second.reply(MsgType::ReportAck).await;
    assert!(ack.is_success(), "{}", ack.msg);
    eventually("the budget is given back", || {
        server.handle.buffered_bytes() == 0
    })
    .await;
    server.stop().await;
}

/// A frame that never completes is closed at `frame_timeout_secs`, even though the
/// idle timeout is far away; it is logged and counted.
#[tokio::test(start_paused = true)]
async fn an_incomplete_frame_is_closed_at_the_frame_timeout() {
    let server = start(|c| {
        c.server.frame_timeout_secs = 5;
        c.server.idle_timeout_secs = 120;
    })
    .await;
    let mut c = Client::connect(server.addr(), "slowloris").await;
    let wire = report_frame(&c, 200_000, "never.finished");
    let started = tokio::time::Instant::now();
    c.send_raw(&wire[..100_000]).await;
    c.expect_closed().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(server.handle.stats().frame_timeouts, 1);
    assert_eq!(server.handle.buffered_bytes(), 0, "its budget is back");
    server.stop().await;
}

/// A subscriber that never reads holds at most its byte bound of pushes (the rest are
/// dropped and counted), and once its socket has taken nothing for `write_timeout_secs`
/// it is disconnected and counted.
#[tokio::test(start_paused = true)]
async fn a_never_reading_subscriber_is_bounded_in_bytes_then_cut_at_the_write_timeout() {
    const REPORTS: usize = 40;
    let server = start(|c| {
        c.server.compress_threshold = usize::MAX; // pushes as large on the wire as queued
        c.server.write_timeout_secs = 5; // well within the test's own 10 s waits
    })
    .await;
    let mut stuck = Client::connect(server.addr(), "stuck").await;
    stuck.subscribe("never-reads", &[]).await;
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let pad = "m".repeat(1_000_000);
    let mut delivered = 0;
    for n in 0..REPORTS {
        delivered += reporter
            .report(&format!(r#"{{"code":"big","n":{n},"pad":"{pad}"}}"#))
            .await;
    }
    let stats = server.handle.stats();
    // 40 MB reported; the queue (8 MiB), the write buffer and the socket buffers hold the
    // few it took: everything else is dropped, not buffered.
    assert!(delivered < 20, "{delivered} of {REPORTS} queued");
    assert_eq!(stats.pushes_dropped, (REPORTS as u64) - delivered);
    for (_, depth) in server.handle.queue_depths() {
        assert!(
            depth.bytes <= 8 * 1024 * 1024 + 1_000_100,
            "{} bytes queued",
            depth.bytes
        );
    }

    eventually("the stuck subscriber is cut", || {
        server.handle.stats().write_timeouts == 1
    })
    .await;
    assert_eq!(server.handle.subscribers(), 0);
    // The reporter was never affected.
    assert_eq!(reporter.report(r#"{"code":"after"}"#).await, 0);
    server.stop().await;
}

/// Subscribing again narrows the topics: once the new subscription is acknowledged, no
/// push of the old one arrives, although a reporter publishes the old topic all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribe_is_a_barrier() {
    const SWITCHES: usize = 20;
    let server = start(|_| {}).await;
    let addr = server.addr();
    let mut sub = Client::connect(addr, "switcher").await;
    sub.subscribe("s", &["a"]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut reporter = Client::connect(addr, "reporter").await;
            let mut n = 0u64;
            while !stop.is_cancelled() {
                for code in ["a", "b"] {
                    reporter
                        .send(
                            MsgType::Report,
                            format!(r#"{{"code":"{code}","n":{n}}}"#),
                            false,
                            false,
                        )
                        .await;
                }
                for _ in 0..2 {
                    let (_, ack) = reporter.reply(MsgType::ReportAck).await;
                    ack.data_as::<ReportAckData>().unwrap();
                }
                n += 1;
            }
        }
    });
    for round in 0..SWITCHES {
        let (old, new) = if round % 2 == 0 {
            ("a", "b")
        } else {
            ("b", "a")
        };
        // Let pushes of the old topic pile up, unread, then switch.
        for _ in 0..5 {
            let v: Value = serde_json::from_str(&sub.push().await).unwrap();
            assert_eq!(v["code"], old);
        }
        let body = monitor_proto::message::request::Subscribe::body("s", &[new]);
        sub.send(MsgType::Subscribe, body, false, false).await;
        // Pushes written before the acknowledgement may still be of the old topic.
        loop {
            let r = sub.recv().await;
            let reply = monitor_proto::message::reply::Reply::parse(&r.body.unwrap()).unwrap();
            let data: Value = serde_json::from_str(reply.data.get()).unwrap();
            if data.get("topics").is_some() {
                break; // the acknowledgement
            }
        }
        for _ in 0..20 {
            let v: Value = serde_json::from_str(&sub.push().await).unwrap();
            assert_eq!(
                v["code"], new,
                "round {round}: a push of the old subscription"
            );
        }
    }
    stop.cancel();
    publisher.await.unwrap();
    server.stop().await;
}

/// A host name is a listen address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_a_host_name_serves() {
    let server = start(|c| c.listeners[0].address = "localhost:0".parse().unwrap()).await;
    let mut c = Client::connect(server.addr(), "named").await;
    assert!(c.heartbeat().await > 0);
    server.stop().await;
}

/// A background task that panics stops the server in order, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_background_task_shuts_the_server_down() {
    let mut server = start(|_| {}).await;
    server
        .handle
        .spawn_supervised("test task", async { panic!("on purpose") });
    let run = server.task.take().unwrap();
    tokio::time::timeout(crate::support::WAIT, run)
        .await
        .expect("run() returned by itself")
        .unwrap();
    let why = server.handle.failure().unwrap();
    assert!(
        why.contains("test task") && why.contains("on purpose"),
        "{why}"
    );
}

/// The topic-amplification attack: a 4 KB zlib body listing 1,000,000 topics, and
/// subscriptions just over each limit, are malformed: answered with the limit and the
/// value, then closed. A reload changes the limits for the next subscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_over_the_topic_limits_are_refused_naming_the_limit() {
    let server = start(|_| {}).await;
    let mut healthy = Client::connect(server.addr(), "healthy").await;
    healthy.subscribe("h", &["t.*"]).await;

    let topics = |n: usize, len: usize| -> String {
        let list: Vec<String> = (0..n).map(|i| format!("\"{i:0>len$}\"")).collect();
        format!(r#"{{"code":"attack","topics":[{}]}}"#, list.join(","))
    };
    // 4 MB inflated, a few KB on the wire: the body of the reported attack.
    let attack = format!(
        r#"{{"code":"attack","topics":[{}"x"]}}"#,
        "\"x\",".repeat(999_999)
    );
    let cases = [
        (
            attack,
            true,
            "topics: 1000000 patterns, more than max_topics 64",
        ),
        (
            topics(65, 3),
            false,
            "topics: 65 patterns, more than max_topics 64",
        ),
        (
            topics(1, 257),
            false,
            "topics[0]: 257 bytes, more than max_topic_len 256",
        ),
    ];
    for (body, compress, msg) in cases {
        let mut attacker = Client::connect(server.addr(), "attacker").await;
        let (_, reply) = attacker.subscribe_with(&body, compress, false).await;
        assert_eq!(reply.err_code, -1);
        assert_eq!(reply.msg, format!("malformed body: {msg}"));
        attacker.expect_closed().await;
    }
    // At the limits: accepted.
    let mut edge = Client::connect(server.addr(), "edge").await;
    let (_, ack) = edge.subscribe_with(&topics(64, 256), false, false).await;
    assert!(ack.is_success(), "{}", ack.msg);
    assert_eq!(server.handle.subscribers(), 2);

    // Live: the next subscribe is judged by the reloaded limits.
    let mut config = monitor_server::Config::default();
    config.listeners[0].address = "127.0.0.1:0".parse().unwrap();
    config.server.max_topics = 2;
    server.handle.reload(config).unwrap();
    let mut late = Client::connect(server.addr(), "late").await;
    let (_, reply) = late.subscribe_with(&topics(3, 1), false, false).await;
    assert_eq!(
        reply.msg,
        "malformed body: topics: 3 patterns, more than max_topics 2"
    );

    let mut reporter = Client::connect(server.addr(), "reporter").await;
    assert_eq!(reporter.report(r#"{"code":"t.1"}"#).await, 1);
    assert_eq!(healthy.push().await, r#"{"code":"t.1"}"#);
    server.stop().await;
}
