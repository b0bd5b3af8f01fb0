//! The rules of protocol-v1 sections 3 and 4, one by one, over TCP.

use std::time::Duration;

use monitor_proto::message::reply::{KeyReplyData, ReportAckData};
use monitor_proto::{MsgType, SessionKey};
use serde_json::Value;

use crate::support::{start, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_is_answered_with_the_time() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "hb").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = c.heartbeat().await;
    assert!(t.abs_diff(now) <= 2, "{t} vs {now}");
    // A body on a heartbeat is ignored.
    c.send(MsgType::Heartbeat, "junk", false, false).await;
    let (_, r) = c.reply(MsgType::HeartbeatReply).await;
    assert!(r.is_success());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_acknowledged_with_the_body_as_sent() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "sub").await;
    let body = r#"{ "code" : "demo", "status":"1", "x": [1, 2.50] }"#;
    let (h, ack) = c.subscribe_with(body, false, false).await;
    assert!(!h.cipher && !h.compress);
    assert!(ack.is_success());
    assert_eq!(ack.msg, "success");
    assert_eq!(ack.data.get(), body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reaches_every_subscriber_with_its_own_uuid_and_flags() {
    let server = start(|_| {}).await;
    let mut plain = Client::connect(server.addr(), "plain").await;
    plain.subscribe("demo", &[]).await;
    let mut compressed = Client::connect(server.addr(), "zipped").await;
    let (h, ack) = compressed
        .subscribe_with(r#"{"code":"demo"}"#, true, false)
        .await;
    assert!(
        h.compress && ack.is_success(),
        "the ack mirrors the compress flag"
    );
    let mut encrypted = Client::connect(server.addr(), "secret").await;
    encrypted.key_exchange().await;
    let (h, ack) = encrypted
        .subscribe_with(r#"{"code":"demo"}"#, false, true)
        .await;
    assert!(
        h.cipher && ack.is_success(),
        "the ack is encrypted as asked"
    );

    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let report = r#"{"code":"demo","host":"web-01","cpu":12.5,"note":"h\u00e9llo"}"#;
    assert_eq!(reporter.report(report).await, 3);

    for (client, compress, cipher) in [
        (&mut plain, false, false),
        (&mut compressed, true, false),
        (&mut encrypted, false, true),
    ] {
        let r = client.recv().await;
        assert_eq!(r.header.msg_type, MsgType::Push);
        assert_eq!(r.header.uuid, client.uuid);
        assert_eq!((r.header.compress, r.header.cipher), (compress, cipher));
        let body = r.body.unwrap();
        let expected = format!(r#"{{"errCode":0,"msg":"success","data":{report}}}"#);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            expected,
            "forwarded byte for byte"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_patterns_select_reports() {
    let server = start(|_| {}).await;
    let mut host = Client::connect(server.addr(), "host").await;
    host.subscribe("a", &["host.*"]).await;
    let mut exact = Client::connect(server.addr(), "exact").await;
    exact.subscribe("b", &["db.cpu"]).await;
    let mut all = Client::connect(server.addr(), "all").await;
    all.subscribe("c", &[]).await;
    let mut star = Client::connect(server.addr(), "star").await;
    star.subscribe("d", &["*"]).await;

    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let cases = [
        (r#"{"code":"host.cpu","n":1}"#, 3),
        (r#"{"code":"db.cpu","n":2}"#, 3),
        (r#"{"code":"db.cpux","n":3}"#, 2),
        (r#"{"n":4}"#, 2),
        (r#"{"code":7,"n":5}"#, 2),
    ];
    for (report, delivered) in cases {
        assert_eq!(reporter.report(report).await, delivered, "{report}");
    }
    let expect = |ns: &[u64]| ns.to_vec();
    for (client, want) in [
        (&mut host, expect(&[1])),
        (&mut exact, expect(&[2])),
        (&mut all, expect(&[1, 2, 3, 4, 5])),
        (&mut star, expect(&[1, 2, 3, 4, 5])),
    ] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let v: Value = serde_json::from_str(&client.push().await).unwrap();
            got.push(v["n"].as_u64().unwrap());
        }
        assert_eq!(got, want);
        assert!(
            client.nothing_within(Duration::from_millis(200)).await,
            "no extra pushes"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_replaces_topics_flags_and_uuid() {
    let server = start(|_| {}).await;
    let mut sub = Client::connect(server.addr(), "first").await;
    sub.subscribe("a", &["a"]).await;
    sub.uuid = crate::support::uuid("second");
    let (h, _) = sub
        .subscribe_with(r#"{"code":"b","topics":["b"]}"#, true, false)
        .await;
    assert!(h.compress);
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    assert_eq!(reporter.report(r#"{"code":"a"}"#).await, 0);
    assert_eq!(reporter.report(r#"{"code":"b"}"#).await, 1);
    let r = sub.recv().await;
    assert_eq!(r.header.uuid, crate::support::uuid("second"));
    assert!(r.header.compress);
    assert_eq!(server.handle.subscribers(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reports_arrive_in_order_at_every_subscriber() {
    let server = start(|_| {}).await;
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut s = Client::connect(server.addr(), &format!("sub{i}")).await;
        s.subscribe("seq", &[]).await;
        subs.push(s);
    }
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    // Pipelined: all reports first, then all acks.
    for n in 0..1000 {
        reporter
            .send(
                MsgType::Report,
                format!(r#"{{"code":"seq","n":{n}}}"#),
                false,
                false,
            )
            .await;
    }
    for _ in 0..1000 {
        let (_, ack) = reporter.reply(MsgType::ReportAck).await;
        assert_eq!(ack.data_as::<ReportAckData>().unwrap().delivered, 3);
    }
    for s in &mut subs {
        for n in 0..1000u64 {
            let v: Value = serde_json::from_str(&s.push().await).unwrap();
            assert_eq!(v["n"].as_u64(), Some(n));
        }
    }
    server.stop().await;
}

/// A subscriber whose socket fills up while it is not reading gets everything, in order,
/// once it reads again: a write that found the socket full must leave the connection
/// waiting for writability, not parked for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_pauses_gets_every_push_in_order_when_it_reads_again() {
    const REPORTS: u64 = 200;
    // Room for all 200 in the queue: this test is about writability, not the byte bound.
    let server = start(|c| c.server.subscriber_queue_bytes = 64 << 20).await;
    let mut sub = Client::connect(server.addr(), "pausing").await;
    sub.subscribe("bulk", &[]).await;
    // 200 pushes of 64 KiB are 12.8 MB: more than loopback's socket buffers and the
    // server's write high-water mark together, so the server's writes find the socket
    // full while the subscriber is not reading.
    let pad = "p".repeat(64 * 1024);
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    for n in 0..REPORTS {
        let delivered = reporter
            .report(&format!(r#"{{"code":"bulk","n":{n},"pad":"{pad}"}}"#))
            .await;
        assert_eq!(delivered, 1, "report {n} queued for the subscriber");
    }
    for n in 0..REPORTS {
        let v: Value = serde_json::from_str(&sub.push().await).unwrap();
        assert_eq!(v["n"].as_u64(), Some(n), "in order, none lost");
    }
    assert_eq!(server.handle.stats().pushes_dropped, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_get_compressed_replies() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "zip").await;
    c.send(MsgType::Heartbeat, "", true, false).await;
    let (h, _) = c.reply(MsgType::HeartbeatReply).await;
    assert!(h.compress);
    c.send(
        MsgType::Report,
        r#"{"code":"z","pad":"zzzzzzzzzzzzzzzzzzzzzzzz"}"#,
        true,
        false,
    )
    .await;
    let (h, ack) = c.reply(MsgType::ReportAck).await;
    assert!(h.compress && ack.is_success());
    c.send(MsgType::Report, r#"{"code":"z"}"#, false, false)
        .await;
    let (h, _) = c.reply(MsgType::ReportAck).await;
    assert!(!h.compress);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_threshold_are_compressed() {
    let server = start(|c| c.server.compress_threshold = 200).await;
    let mut sub = Client::connect(server.addr(), "sub").await;
    sub.subscribe("big", &[]).await;
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    let small = r#"{"code":"s"}"#.to_owned();
    let big = format!(r#"{{"code":"b","pad":"{}"}}"#, "x".repeat(300));
    reporter.report(&small).await;
    reporter.report(&big).await;
    let first = sub.recv().await;
    assert!(!first.header.compress);
    let second = sub.recv().await;
    assert!(
        second.header.compress,
        "a push body over compress_threshold is compressed"
    );
    assert!(std::str::from_utf8(&second.body.unwrap())
        .unwrap()
        .contains(&big));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_pushes_after_x25519_decrypt() {
    let server = start(|_| {}).await;
    let mut sub = Client::connect(server.addr(), "enc").await;
    sub.key_exchange().await;
    let (h, ack) = sub.subscribe_with(r#"{"code":"e"}"#, true, true).await;
    assert!(h.cipher && h.compress && ack.is_success());
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    reporter.report(r#"{"code":"e","secret":42}"#).await;
    let push = sub.recv().await;
    assert!(push.header.cipher && push.header.compress);
    assert!(std::str::from_utf8(&push.body.unwrap())
        .unwrap()
        .contains(r#""secret":42"#));

    // Under any other key the next push does not open: it really is encrypted.
    sub.framed
        .codec_mut()
        .set_session_key(Some(SessionKey::from_bytes(&[0; 32])));
    reporter.report(r#"{"code":"e","secret":43}"#).await;
    let push = sub.recv().await;
    assert!(matches!(
        push.body,
        Err(monitor_proto::BodyError::DecryptFailed)
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_without_a_key_is_refused_in_plaintext() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "nokey").await;
    let (h, reply) = c.subscribe_with(r#"{"code":"x"}"#, false, true).await;
    assert!(!h.cipher);
    assert_eq!(reply.err_code, -1);
    assert_eq!(reply.msg, "no session key: send a key request first");
    assert_eq!(reply.data.get(), "null");
    assert_eq!(server.handle.subscribers(), 0, "not carried out");
    c.heartbeat().await; // still open
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_exchange_is_refused_by_default() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "php").await;
    c.send(MsgType::KeyRequest, "", false, false).await;
    let (h, reply) = c.reply(MsgType::KeyReply).await;
    assert!(!h.cipher);
    assert_eq!(reply.err_code, -1);
    assert!(
        reply.msg.contains("legacy_key_exchange") && reply.msg.contains("pubkey"),
        "{}",
        reply.msg
    );
    c.heartbeat().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_exchange_works_when_enabled() {
    let server = start(|c| c.server.legacy_key_exchange = true).await;
    let mut c = Client::connect(server.addr(), "php").await;
    c.send(MsgType::KeyRequest, "{}", false, false).await;
    let (_, reply) = c.reply(MsgType::KeyReply).await;
    assert!(reply.is_success());
    let key = reply.data_as::<KeyReplyData>().unwrap().cipher_key.unwrap();
    assert_eq!(key.len(), 32);
    c.framed
        .codec_mut()
        .set_session_key(Some(SessionKey::from_legacy(&key).unwrap()));
    let (h, ack) = c.subscribe_with(r#"{"code":"l"}"#, false, true).await;
    assert!(h.cipher && ack.is_success());
    let mut reporter = Client::connect(server.addr(), "reporter").await;
    reporter.report(r#"{"code":"l","v":1}"#).await;
    assert_eq!(c.push().await, r#"{"code":"l","v":1}"#);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_public_keys_are_refused() {
    let server = start(|_| {}).await;
    let mut c = Client::connect(server.addr(), "badkey").await;
    for body in [
        r#"{"pubkey":"not base64!"}"#,
        r#"{"pubkey":"AAAA"}"#,
        r#"{"pubkey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#,
    ] {
        c.send(MsgType::KeyRequest, body, false, false).await;
        let (_, reply) = c.reply(MsgType::KeyReply).await;
        assert_eq!(reply.err_code, -1, "{body}");
        assert!(reply.msg.starts_with("bad public key"), "{}", reply.msg);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_report_is_answered_and_the_connection_stays() {
    let server = start(|_| {}).await;
    let mut sub = Client::connect(server.addr(), "sub").await;
    sub.subscribe("m", &[]).await;
    let mut c = Client::connect(server.addr(), "rep").await;
    for bad in ["[1,2]", "\"text\"", "{\"a\":", "", "{} {}"] {
        c.send(MsgType::Report, bad, false, false).await;
        let (_, reply) = c.reply(MsgType::ReportAck).await;
        assert_eq!(reply.err_code, -1, "{bad:?}");
        assert!(reply.msg.starts_with("malformed body: "), "{}", reply.msg);
        assert_eq!(reply.data.get(), "null");
    }
    assert_eq!(c.report(r#"{"code":"m"}"#).await, 1);
    assert_eq!(
        sub.push().await,
        r#"{"code":"m"}"#,
        "only the good report was delivered"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_subscribe_is_answered_then_closed() {
    let server = start(|_| {}).await;
    for (body, msg) in [
        ("{}", "malformed body: missing code"),
        (
            r#"{"code":""}"#,
            "malformed body: code must be a non-empty string",
        ),
        (
            r#"{"code":"c","topics":"x"}"#,
            "malformed body: topics must be an array of strings",
        ),
        ("[]", "malformed body: not a JSON object"),
    ] {
        let mut c = Client::connect(server.addr(), "bad").await;
        let (_, reply) = c.subscribe_with(body, false, false).await;
        assert_eq!(reply.err_code, -1);
        assert_eq!(reply.msg, msg);
        assert_eq!(reply.data.get(), "null");
        c.expect_closed().await;
    }
    assert_eq!(server.handle.subscribers(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_reporter_gets_its_own_reports_and_counts() {
    let server = start(|_| {}).await;
    let mut both = Client::connect(server.addr(), "both").await;
    both.subscribe("self", &[]).await;
    assert_eq!(both.report(r#"{"code":"self"}"#).await, 1);
    assert_eq!(both.push().await, r#"{"code":"self"}"#);
    server.stop().await;
}
