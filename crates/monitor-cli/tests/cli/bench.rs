//! `monitor-client bench`, the load generator, end to end against an in-process server.

use std::time::Duration;

use monitor_server::TokenConfig;

use crate::support::{json_line, run, TestServer};

#[tokio::test]
async fn bench_json_prints_the_figures() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let out = run(&[
        "bench",
        "--server",
        &addr,
        "--subscribers",
        "3",
        "--size",
        "300",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--settle",
        "0.1",
        "--drain",
        "3",
        "--rate",
        "500",
        "--reporters",
        "2",
        "--json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = json_line(&out.stdout);
    for key in [
        "pub_msgs_per_s",
        "deliv_msgs_per_s",
        "deliv_mb_per_s",
        "lat_p50_us",
        "lat_p99_us",
        "lat_p999_us",
        "lat_max_us",
        "expected",
        "delivered",
        "lost",
        "subscribers",
        "size",
        "duration_s",
        "rate",
    ] {
        assert!(
            r.get(key).is_some_and(|v| v.is_number()),
            "{key} missing: {r}"
        );
    }
    assert_eq!(r["subscribers"], 3);
    assert_eq!(r["mode"], "fan-out");
    assert_eq!(r["subscriber_transport"], "tcp");
    assert_eq!(r["misrouted"], 0);
    assert_eq!(r["size"], 300);
    assert_eq!(r["rate"], 500);
    assert_eq!(r["reporters"], 2);
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 400, "{r}");
    assert_eq!(r["expected"].as_u64().unwrap(), published * 3);
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["report_acks"].as_u64().unwrap(), published);
    let pub_rate = r["pub_msgs_per_s"].as_f64().unwrap();
    assert!((400.0..=600.0).contains(&pub_rate), "{r}");
    let deliv = r["deliv_msgs_per_s"].as_f64().unwrap();
    assert!((1000.0..=1800.0).contains(&deliv), "{r}");
    let p50 = r["lat_p50_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= r["lat_max_us"].as_f64().unwrap(), "{r}");

    // Max rate, bounded by the flow-control window.
    let out = run(&[
        "bench",
        "--server",
        &addr,
        "--subscribers",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--settle",
        "0",
        "--window",
        "50",
        "--json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = json_line(&out.stdout);
    assert_eq!(
        (r["rate"].as_u64(), r["window"].as_u64()),
        (Some(0), Some(50)),
        "{r}"
    );
    assert!(r["published"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["sub_disconnects"], 0, "{r}");
}

/// `bench --size 2000000` used to end in `Broken pipe`: its frames are over the server's
/// max_frame_len. Now it is refused before the run, naming --size, the frame length and
/// --max-frame-len.
#[tokio::test]
async fn bench_refuses_a_size_over_the_frame_limit_up_front() {
    let out = run(&["bench", "--server", "127.0.0.1:1", "--size", "2000000"]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    for says in [
        "--size: ",
        "2000045-byte frame",
        "--max-frame-len (1048576)",
    ] {
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
    }
    // Within a larger limit it is accepted (and then fails for want of a server).
    let out = run(&[
        "bench",
        "--server",
        "127.0.0.1:1",
        "--size",
        "2000000",
        "--max-frame-len",
        "2000045",
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
}

/// A server whose max_frame_len is under the bench's closes the reporter's connection on
/// the first report: the bench says the server closed it, and where to look, instead of a
/// raw `Broken pipe` (fixed rate) or a run that waits out its window (max rate).
#[tokio::test]
async fn bench_says_when_the_server_closes_a_reporter() {
    let server = TestServer::start_on(0, |c| c.server.max_frame_len = 1000).await;
    let addr = server.addr.to_string();
    for rate in ["0", "2000"] {
        let started = std::time::Instant::now();
        let out = run(&[
            "bench",
            "--server",
            &addr,
            "--size",
            "2000",
            "--max-frame-len",
            "4096",
            "--rate",
            rate,
            "--duration",
            "20",
            "--warmup",
            "0",
            "--settle",
            "0",
        ])
        .await;
        assert_eq!(out.code, Some(1), "rate {rate}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("the server closed a reporter's connection mid-run")
                && out.stderr.contains("max_frame_len"),
            "rate {rate}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("Broken pipe"), "{}", out.stderr);
        // Not after the 20 s window: as soon as the connection is gone.
        assert!(started.elapsed() < Duration::from_secs(10), "rate {rate}");
    }
}

/// `--distinct-topics`: subscriber i subscribes to bench.<i> and report k goes to
/// bench.<k mod N>, so each report reaches one subscriber: expected = published, none lost,
/// none delivered to the wrong subscriber, and pushes/s = reports/s.
#[tokio::test]
async fn bench_distinct_topics_routes_each_report_to_one_subscriber() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let common = [
        "bench",
        "--server",
        addr.as_str(),
        "--subscribers",
        "5",
        "--distinct-topics",
        "--warmup",
        "0.2",
        "--settle",
        "0.1",
        "--drain",
        "3",
        "--json",
    ];
    let fixed: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--rate", "500", "--duration", "1"])
        .collect();
    let out = run(&fixed).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = json_line(&out.stdout);
    assert_eq!(r["mode"], "distinct-topics", "{r}");
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 400, "{r}");
    assert_eq!(
        r["expected"].as_u64(),
        Some(published),
        "one subscriber per report: {r}"
    );
    assert_eq!(r["delivered"].as_u64(), Some(published), "{r}");
    assert_eq!(
        (r["lost"].as_i64(), r["misrouted"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(
        r["report_ack_delivered_sum"].as_u64(),
        Some(published),
        "each ack says 1: {r}"
    );
    let (pubs, delivs) = (
        r["pub_msgs_per_s"].as_f64().unwrap(),
        r["deliv_msgs_per_s"].as_f64().unwrap(),
    );
    assert!((400.0..=600.0).contains(&pubs), "{r}");
    assert!(
        (delivs - pubs).abs() <= 0.1 * pubs,
        "pushes/s = reports/s: {r}"
    );

    // Max rate, with a window under N/2: the flow-control window follows deliveries, not
    // the average of the subscribers' highest seq (N/2 behind the reporters here), so the
    // reporters do not stall (they did, at 2 reports in all).
    let max: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--duration", "0.5", "--window", "2"])
        .collect();
    let out = run(&max).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = json_line(&out.stdout);
    assert_eq!(
        (r["rate"].as_u64(), r["window"].as_u64()),
        (Some(0), Some(2)),
        "{r}"
    );
    assert!(r["published"].as_u64().unwrap() > 200, "{r}");
    assert_eq!(
        (r["lost"].as_i64(), r["misrouted"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
}

/// `--ws`: the subscribers read the server's WebSocket endpoint, the reporters still the
/// binary protocol; every report reaches every subscriber, the figures mean what they do
/// over TCP, and the output says which transport the subscribers used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_over_websocket_delivers_every_report() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let ws = server.ws_url();
    let brief = [
        "bench",
        "--server",
        addr.as_str(),
        "--ws",
        ws.as_str(),
        "--warmup",
        "0.2",
        "--settle",
        "0.1",
        "--drain",
        "5",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        brief.iter().copied().chain(extra.iter().copied()).collect()
    };
    let out = run(&with(&[
        "--subscribers",
        "3",
        "--reporters",
        "2",
        "--rate",
        "500",
        "--duration",
        "1",
        "--json",
    ]))
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = json_line(&out.stdout);
    assert_eq!(
        (r["subscriber_transport"].as_str(), r["mode"].as_str()),
        (Some("ws"), Some("fan-out")),
        "{r}"
    );
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 400, "{r}");
    assert_eq!(r["expected"].as_u64(), Some(published * 3), "{r}");
    assert_eq!(r["delivered"].as_u64(), Some(published * 3), "{r}");
    assert_eq!(
        (r["lost"].as_i64(), r["sub_disconnects"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    // Every message was a report with its timestamp, read as a push's data is.
    assert_eq!(r["no_timestamp"], 0, "{r}");
    assert!(r["lat_samples"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        r["report_ack_delivered_sum"].as_u64(),
        Some(published * 3),
        "the server counted the WebSocket subscribers: {r}"
    );
    let deliv = r["deliv_msgs_per_s"].as_f64().unwrap();
    assert!((1000.0..=1800.0).contains(&deliv), "{r}");

    // Max rate, the window following the WebSocket subscribers' progress; distinct
    // topics route each report to one of them.
    for extra in [&[][..], &["--distinct-topics"][..]] {
        let mut args = with(&["--subscribers", "4", "--duration", "0.5", "--json"]);
        args.extend(extra);
        let out = run(&args).await;
        assert_eq!(out.code, Some(0), "{extra:?}: stderr: {}", out.stderr);
        let r = json_line(&out.stdout);
        let published = r["published"].as_u64().unwrap();
        assert!(published > 100, "{extra:?}: {r}");
        let per_report = if extra.is_empty() { 4 } else { 1 };
        assert_eq!(
            r["delivered"].as_u64(),
            Some(published * per_report),
            "{extra:?}: {r}"
        );
        assert_eq!(
            (r["lost"].as_i64(), r["misrouted"].as_u64()),
            (Some(0), Some(0)),
            "{extra:?}: {r}"
        );
    }

    // The summary names the transport too.
    let out = run(&with(&["--rate", "200", "--duration", "0.3"])).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout
            .starts_with("fan-out, WebSocket subscribers: 1 subscribers"),
        "{}",
        out.stdout
    );
    server.stop().await;
}

/// A subscribe body the server refuses (no token, a wrong one, on a server that requires
/// one) ends the run at once with the server's reason; no retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_over_websocket_says_why_a_subscription_is_refused() {
    let server = TestServer::start_on(0, |c| {
        c.auth.required = true;
        c.auth.tokens = vec![TokenConfig {
            name: "bench".into(),
            token_sha256: monitor_server::auth::hash_token("bench-secret"),
            subscribe: vec!["bench*".into()],
            report: vec!["bench*".into()],
            admin: false,
        }];
    })
    .await;
    let addr = server.addr.to_string();
    let ws = server.ws_url();
    let args = [
        "bench",
        "--server",
        addr.as_str(),
        "--ws",
        ws.as_str(),
        "--subscribers",
        "2",
    ];
    for (token, says) in [(None, "forbidden"), (Some("wrong-secret"), "unauthorized")] {
        let mut args = args.to_vec();
        args.extend(["--duration", "5"]);
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        let started = std::time::Instant::now();
        let out = run(&args).await;
        assert_eq!(out.code, Some(1), "{token:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("subscribers could not subscribe")
                && out.stderr.contains("subscribe refused by the server: ")
                && out.stderr.contains(says),
            "{token:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("wrong-secret"), "{}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(5), "not retried");
    }
    // The right token: subscribed, and the run goes on.
    let mut ok = args.to_vec();
    ok.extend([
        "--token",
        "bench-secret",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--rate",
        "100",
        "--json",
    ]);
    let out = run(&ok).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(json_line(&out.stdout)["lost"], 0);
    server.stop().await;
}

/// `--ws` is checked before anything connects: its scheme, its host, and the binary
/// protocol's layers beside it; each refusal names --ws.
#[tokio::test]
async fn bench_ws_flag_is_checked_up_front() {
    let base = ["bench", "--server", "127.0.0.1:1"];
    for (ws, extra, says) in [
        (
            "http://127.0.0.1:1/ws",
            None,
            "--ws: `http://127.0.0.1:1/ws`: the scheme must be ws://, not http://",
        ),
        (
            "wss://127.0.0.1:1/ws",
            None,
            "--ws: `wss://127.0.0.1:1/ws`: wss:// is not supported",
        ),
        (
            "127.0.0.1:1",
            None,
            "--ws: `127.0.0.1:1` is not a ws:// URL",
        ),
        (
            "ws://10.1.2.3:9600/ws",
            None,
            "--ws ws://10.1.2.3:9600/ws is not on this host",
        ),
        (
            "ws://127.0.0.1:1/ws",
            Some("--encrypt"),
            "'--ws <URL>' cannot be used with '--encrypt'",
        ),
        (
            "ws://127.0.0.1:1/ws",
            Some("--compress"),
            "'--ws <URL>' cannot be used with '--compress'",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(["--ws", ws]);
        args.extend(extra);
        let out = run(&args).await;
        assert_eq!(out.code, Some(2), "{ws}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{ws}: {}", out.stderr);
    }
    // Nothing listens there: a runtime failure (after the retries), naming the URL.
    let out = run(&[
        "bench",
        "--server",
        "127.0.0.1:1",
        "--ws",
        "ws://127.0.0.1:1/ws",
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("WebSocket subscriber, ws://127.0.0.1:1/ws: cannot connect"),
        "{}",
        out.stderr
    );
}

/// `--subscribe-server`, repeated: subscribers go round-robin to the servers listed, and
/// reports to `--server`. Two servers that share nothing: the subscriber on the other one
/// gets nothing, so half of what is expected is lost.
#[tokio::test]
async fn bench_spreads_subscribers_over_the_servers_given() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let out = run(&[
        "bench",
        "--server",
        &a_addr,
        "--subscribe-server",
        &a_addr,
        "--subscribe-server",
        &b_addr,
        "--subscribers",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--settle",
        "0",
        "--drain",
        "0.5",
        "--rate",
        "200",
        "--json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = json_line(&out.stdout);
    let published = r["published"].as_u64().unwrap();
    assert!(published > 0, "{r}");
    assert_eq!(r["expected"].as_u64(), Some(published * 2), "{r}");
    assert_eq!(r["delivered"].as_u64(), Some(published), "{r}");
    assert_eq!(
        r["report_ack_delivered_sum"].as_u64(),
        Some(published),
        "one subscriber on the reporters' server: {r}"
    );
    let out = run(&[
        "bench",
        "--server",
        &a_addr,
        "--subscribe-server",
        "10.1.2.3:9503",
    ])
    .await;
    assert_eq!(out.code, Some(2), "a remote subscriber server is refused");
    assert!(out.stderr.contains("10.1.2.3:9503"), "{}", out.stderr);
}
