//! The admin HTTP API over real sockets: every endpoint and its errors.

use monitor_proto::MsgType;
use monitor_server::{Config, TokenConfig};
use serde_json::Value;

use crate::support::{eventually_async, start, Client, TestServer, WAIT};

fn base(server: &TestServer) -> String {
    format!("http://{}", server.handle.admin_addr().unwrap())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

async fn get_json(url: &str) -> Value {
    let r = http().get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// The samples of a `/metrics` scrape, parsed by a Prometheus text parser.
async fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let text = http()
        .get(format!("{}/metrics", base(server)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no {name} in the scrape"));
    match found.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_status_clients_and_metrics() {
    let server = start(|_| {}).await;
    let b = base(&server);
    let health = http().get(format!("{b}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap().trim(), "ok");

    let mut sub = Client::connect(server.addr(), "sub").await;
    let (_, ack) = sub
        .subscribe_with(
            r#"{"code":"ops","topics":["host.*","db.slow"]}"#,
            true,
            false,
        )
        .await;
    assert!(ack.is_success());
    let mut reporter = Client::connect(server.addr(), "rep").await;
    let before = scrape(&server).await;
    for n in 0..3 {
        assert_eq!(
            reporter
                .report(&format!(r#"{{"code":"host.a","n":{n}}}"#))
                .await,
            1
        );
        sub.push().await;
    }

    let status = get_json(&format!("{b}/api/status")).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listeners"][0]["kind"], "tcp");
    assert_eq!(status["connections"]["open"], 2);
    assert_eq!(status["connections"]["subscriber"], 1);
    assert_eq!(status["connections"]["reporter"], 1);
    assert_eq!(status["counters"]["reports"], 3);
    assert_eq!(status["counters"]["pushes_queued"], 3);

    let clients = get_json(&format!("{b}/api/clients")).await;
    let clients = clients.as_array().unwrap();
    assert_eq!(clients.len(), 2);
    let s = clients.iter().find(|c| c["role"] == "subscriber").unwrap();
    assert_eq!(s["code"], "ops");
    let mut topics: Vec<&str> = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    topics.sort_unstable();
    assert_eq!(topics, ["db.slow", "host.*"]);
    assert_eq!(s["compressed"], true);
    assert_eq!(s["encrypted"], false);
    assert_eq!(s["uuid"], sub.uuid.to_string());
    assert_eq!(s["kind"], "tcp");
    let only_subs = get_json(&format!("{b}/api/clients?role=subscriber")).await;
    assert_eq!(only_subs.as_array().unwrap().len(), 1);
    let by_code = get_json(&format!("{b}/api/clients?code=nope")).await;
    assert!(by_code.as_array().unwrap().is_empty());

    let after = scrape(&server).await;
    assert_eq!(
        sample(&after, "monitor_reports_total") - sample(&before, "monitor_reports_total"),
        3.0
    );
    assert_eq!(sample(&after, "monitor_connections_open"), 2.0);
    assert_eq!(sample(&after, "monitor_subscribers"), 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_closes_that_connection() {
    let server = start(|_| {}).await;
    let b = base(&server);
    let mut victim = Client::connect(server.addr(), "victim").await;
    victim.subscribe("v", &[]).await;
    let mut bystander = Client::connect(server.addr(), "bystander").await;
    assert!(bystander.heartbeat().await > 0);
    let clients = get_json(&format!("{b}/api/clients?role=subscriber")).await;
    let id = clients[0]["id"].as_u64().unwrap();
    let r = http()
        .delete(format!("{b}/api/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    victim.expect_closed().await;
    assert!(bystander.heartbeat().await > 0);
    let r = http()
        .delete(format!("{b}/api/clients/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_report_reaches_a_tcp_subscriber_and_refuses_as_tcp_does() {
    let server = start(|c| c.server.max_frame_len = 4096).await;
    let b = base(&server);
    let mut sub = Client::connect(server.addr(), "sub").await;
    sub.subscribe("s", &["web.*"]).await;
    let r = http()
        .post(format!("{b}/api/report"))
        .body(r#"{"code":"web.signup","user":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"errCode":0,"msg":"success","data":{"delivered":1}})
    );
    assert_eq!(sub.push().await, r#"{"code":"web.signup","user":7}"#);
    assert_eq!(server.handle.stats().reports, 1);

    // The TCP path's answers, for the same bodies.
    let mut tcp = Client::connect(server.addr(), "tcp").await;
    for body in ["[1,2]", "{\"code\":", ""] {
        tcp.send(MsgType::Report, body.to_owned(), false, false)
            .await;
        let (_, tcp_reply) = tcp.reply(MsgType::ReportAck).await;
        let r = http()
            .post(format!("{b}/api/report"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let http_reply: Value = r.json().await.unwrap();
        assert_eq!(http_reply["msg"], tcp_reply.msg, "{body}");
        assert_eq!(http_reply["errCode"], -1);
    }
    // Over the report limit: 413, from the declared length, before it is read.
    let big = format!(r#"{{"code":"web.x","pad":"{}"}}"#, "p".repeat(5000));
    let r = http()
        .post(format!("{b}/api/report"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A body that fits but whose push would not: 400, with the TCP path's message.
    let near = format!(r#"{{"code":"web.x","pad":"{}"}}"#, "p".repeat(4000));
    let r = http()
        .post(format!("{b}/api/report"))
        .body(near.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let http_reply: Value = r.json().await.unwrap();
    tcp.send(MsgType::Report, near, false, false).await;
    let (_, tcp_reply) = tcp.reply(MsgType::ReportAck).await;
    assert_eq!(http_reply["msg"], tcp_reply.msg);
    assert!(
        tcp_reply.msg.starts_with("report too large"),
        "{}",
        tcp_reply.msg
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumers_drops_show_everywhere() {
    let server = start(|c| {
        c.server.subscriber_queue = 2;
        c.server.compress_threshold = usize::MAX;
    })
    .await;
    let b = base(&server);
    let mut stuck = Client::connect(server.addr(), "stuck").await;
    stuck.subscribe("slow", &[]).await;
    let mut reporter = Client::connect(server.addr(), "rep").await;
    let pad = "s".repeat(200_000);
    let mut delivered = 0;
    for n in 0..40 {
        delivered += reporter
            .report(&format!(r#"{{"code":"x","n":{n},"pad":"{pad}"}}"#))
            .await;
    }
    let dropped = 40 - delivered;
    assert!(dropped > 0);
    let status = get_json(&format!("{b}/api/status")).await;
    assert_eq!(status["counters"]["pushes_dropped"], dropped);
    let clients = get_json(&format!("{b}/api/clients?role=subscriber")).await;
    assert_eq!(clients[0]["pushes_dropped"], dropped);
    let scraped = scrape(&server).await;
    assert_eq!(
        sample(&scraped, "monitor_pushes_dropped_total"),
        dropped as f64
    );
    assert_eq!(
        status["counters"]["limits_hit"]["subscriber_queue_drop"],
        dropped
    );
    assert_eq!(
        labelled(
            &scraped,
            "monitor_limits_hit_total",
            "subscriber_queue_drop"
        ),
        dropped as f64
    );
    server.stop().await;
}

/// The one sample of `name` whose only label has the value `value`.
fn labelled(scrape: &prometheus_parse::Scrape, name: &str, value: &str) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.values().any(|v| v == value))
        .unwrap_or_else(|| panic!("no {name}{{…=\"{value}\"}} in the scrape"));
    match found.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} {value}: {other:?}"),
    }
}

/// Frames in and out by type, protocol errors by kind and limits by setting, in
/// `/api/status` and `/metrics`, after one of each; the parts add up to the totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_errors_and_limits_are_counted_by_kind() {
    let server = start(|c| {
        c.server.max_topics = 2;
        c.server.max_frame_len = 4096;
        c.server.compress_threshold = usize::MAX;
    })
    .await;
    let b = base(&server);
    let mut sub = Client::connect(server.addr(), "sub").await;
    sub.key_exchange().await;
    sub.heartbeat().await;
    sub.heartbeat().await;
    sub.subscribe("ops", &[]).await;
    let mut reporter = Client::connect(server.addr(), "rep").await;
    for n in 0..3 {
        assert_eq!(reporter.report(&format!(r#"{{"n":{n}}}"#)).await, 1);
        sub.push().await;
    }
    // A report that fits a frame, but whose push (the report in its envelope) would not.
    let big = format!(r#"{{"pad":"{}"}}"#, "p".repeat(4000));
    reporter.send(MsgType::Report, big, false, false).await;
    let (_, refused) = reporter.reply(MsgType::ReportAck).await;
    assert!(refused.msg.contains("report too large"), "{}", refused.msg);
    // Three topics: one over max_topics, answered and closed.
    let mut greedy = Client::connect(server.addr(), "greedy").await;
    let (_, refused) = greedy
        .subscribe_with(r#"{"code":"g","topics":["a","b","c"]}"#, false, false)
        .await;
    assert!(refused.msg.contains("max_topics 2"), "{}", refused.msg);
    greedy.expect_closed().await;
    // Not JSON: answered and closed.
    let mut garbled = Client::connect(server.addr(), "garbled").await;
    let (_, refused) = garbled.subscribe_with("not json", false, false).await;
    assert!(refused.msg.starts_with("malformed body"), "{}", refused.msg);
    garbled.expect_closed().await;
    // A header whose CRC is wrong: closed, unanswered.
    let mut broken = Client::connect(server.addr(), "broken").await;
    let mut raw = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut monitor_proto::FrameCodec::new(),
        monitor_proto::Frame::new(
            monitor_proto::Header::new(MsgType::Heartbeat, broken.uuid),
            bytes::Bytes::new(),
        ),
        &mut raw,
    )
    .unwrap();
    raw[9] ^= 1;
    broken.send_raw(&raw).await;
    broken.expect_closed().await;
    // Closed connections have added all their frames.
    drop((sub, reporter));
    eventually_async("every connection closed", || async {
        get_json(&format!("{b}/api/status")).await["connections"]["open"] == 0
    })
    .await;

    let status = get_json(&format!("{b}/api/status")).await;
    let c = &status["counters"];
    assert_eq!(
        c["frames_in_by_type"],
        serde_json::json!({"key_request": 1, "heartbeat": 2, "subscribe": 3, "report": 4, "websocket": 0}),
        "{c}"
    );
    assert_eq!(c["frames_in"], 10, "{c}");
    // Pushes: the subscribe acks (one each) and the three reports.
    assert_eq!(
        c["frames_out_by_type"],
        serde_json::json!({"key_reply": 1, "heartbeat_reply": 2, "push": 6, "report_ack": 4, "websocket": 0}),
        "{c}"
    );
    assert_eq!(c["frames_out"], 13, "{c}");
    let kinds = &c["protocol_errors_by_kind"];
    let nonzero: Vec<(&str, u64)> = kinds
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_u64()?)).filter(|(_, n)| *n > 0))
        .collect();
    assert_eq!(
        nonzero,
        [
            ("bad_header_crc", 1),
            ("malformed_body", 1),
            ("too_many_topics", 1)
        ],
        "{kinds}"
    );
    assert_eq!(c["protocol_errors"], 1, "frames that closed: {c}");
    let limits = &c["limits_hit"];
    assert_eq!(
        (&limits["max_topics"], &limits["push_size"]),
        (&1.into(), &1.into()),
        "{limits}"
    );
    assert_eq!(limits["max_topic_len"], 0, "{limits}");

    let scraped = scrape(&server).await;
    for (name, label, value) in [
        ("monitor_frames_in_by_type_total", "report", 4.0),
        ("monitor_frames_in_by_type_total", "key_request", 1.0),
        ("monitor_frames_out_by_type_total", "push", 6.0),
        (
            "monitor_protocol_errors_by_kind_total",
            "bad_header_crc",
            1.0,
        ),
        (
            "monitor_protocol_errors_by_kind_total",
            "too_many_topics",
            1.0,
        ),
        ("monitor_limits_hit_total", "max_topics", 1.0),
        ("monitor_limits_hit_total", "push_size", 1.0),
        ("monitor_limits_hit_total", "idle_timeout", 0.0),
    ] {
        assert_eq!(labelled(&scraped, name, label), value, "{name} {label}");
    }
    server.stop().await;

    // A connection that says nothing for idle_timeout_secs.
    let server = start(|c| c.server.idle_timeout_secs = 1).await;
    let mut silent = Client::connect(server.addr(), "silent").await;
    silent.expect_closed().await;
    eventually_async("the idle timeout is counted", || async {
        server.handle.stats().limits_hit.idle_timeout == 1
    })
    .await;
    server.stop().await;
}

fn admin_auth(c: &mut Config) {
    let token = |name: &str, secret: &str, admin: bool, report: &[&str]| TokenConfig {
        name: name.into(),
        token_sha256: monitor_server::auth::hash_token(secret),
        subscribe: vec![],
        report: report.iter().map(|s| (*s).to_owned()).collect(),
        admin,
    };
    c.auth.required = true;
    c.auth.tokens = vec![
        token("ops", "ops-secret", true, &[]),
        token("web", "web-secret", false, &["web.*"]),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_required_every_endpoint_but_healthz_wants_a_token() {
    let server = start(admin_auth).await;
    let b = base(&server);
    let h = http();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(h.get(format!("{b}/healthz")).send().await.unwrap()),
        200
    );
    for path in ["/api/status", "/api/clients", "/metrics"] {
        let none = h.get(format!("{b}{path}")).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path}");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let wrong = h
            .get(format!("{b}{path}"))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    // Any token may read the status and the metrics; only an admin token the clients.
    for path in ["/api/status", "/metrics"] {
        let r = h
            .get(format!("{b}{path}"))
            .bearer_auth("web-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The client list and DELETE want the admin grant.
    for (method, path, token, status) in [
        (reqwest::Method::GET, "/api/clients", "web-secret", 403),
        (reqwest::Method::GET, "/api/clients", "ops-secret", 200),
        (
            reqwest::Method::DELETE,
            "/api/clients/999",
            "web-secret",
            403,
        ),
        (
            reqwest::Method::DELETE,
            "/api/clients/999",
            "ops-secret",
            404,
        ),
    ] {
        let r = h
            .request(method.clone(), format!("{b}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path} with {token}");
    }
    // Publishing follows the token's report grants.
    let post = |token: &'static str, body: &'static str| {
        h.post(format!("{b}/api/report"))
            .bearer_auth(token)
            .body(body)
            .send()
    };
    assert_eq!(
        post("web-secret", r#"{"code":"web.a"}"#)
            .await
            .unwrap()
            .status(),
        200
    );
    let r = post("web-secret", r#"{"code":"host.a"}"#).await.unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["msg"], r#"forbidden: report under "host.a""#);
    assert_eq!(
        h.post(format!("{b}/api/report"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_503_while_draining() {
    let server = start(|c| {
        c.server.drain_timeout_secs = 20;
        c.server.compress_threshold = usize::MAX;
    })
    .await;
    let b = base(&server);
    // A subscriber that does not read keeps the drain going.
    let mut stuck = Client::connect(server.addr(), "stuck").await;
    stuck.subscribe("d", &[]).await;
    let mut reporter = Client::connect(server.addr(), "rep").await;
    let pad = "d".repeat(500_000);
    for _ in 0..20 {
        reporter.report(&format!(r#"{{"pad":"{pad}"}}"#)).await;
    }
    server.handle.shutdown();
    let url = format!("{b}/healthz");
    eventually_async("healthz says 503", || {
        let url = url.clone();
        async move { matches!(http().get(&url).send().await, Ok(r) if r.status() == 503) }
    })
    .await;
    drop(stuck);
}

/// Slowloris against the admin listener: connections that never finish their headers
/// (and one that trickles a body) are cut off at `frame_timeout_secs`, so a client holding
/// every HTTP place cannot keep the API (or the dashboard) from others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_request_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(|c| c.server.frame_timeout_secs = 1).await;
    let admin = server.handle.admin_addr().unwrap();
    // More than the listener serves at once, each with half a request.
    let mut held = Vec::new();
    for _ in 0..monitor_server::ADMIN_MAX_HTTP_CONNECTIONS + 8 {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    // A complete request with a body that never comes.
    let mut trickle = tokio::net::TcpStream::connect(admin).await.unwrap();
    trickle
        .write_all(b"POST /api/report HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"co")
        .await
        .unwrap();
    // An idle kept-alive connection, after one request.
    let mut idle = tokio::net::TcpStream::connect(admin).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // The API answers others all the same, once the holders time out.
    let r = http()
        .get(format!("{}/healthz", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (n, mut s) in held.into_iter().enumerate() {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "held connection {n} closed");
    }
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, trickle.read_to_end(&mut answer))
        .await
        .expect("the trickling body is cut off")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("frame_timeout_secs"), "{answer}");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, idle.read_to_end(&mut answer))
        .await
        .expect("the idle kept-alive connection is closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(server.handle.stats().frame_timeouts >= 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_port_in_use_fails_start_up_clearly() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = Config::default();
    config.listeners[0].address = "127.0.0.1:0".parse().unwrap();
    config.admin.address = taken.local_addr().unwrap().into();
    let err = monitor_server::Server::bind(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("admin API: cannot bind 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("enabled = false"), "{err}");
}

#[test]
fn status_prints_a_table_and_json_and_fails_without_a_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start(|_| {}));
    let mut sub = rt.block_on(Client::connect(server.addr(), "sub"));
    rt.block_on(sub.subscribe("table", &["host.*"]));
    let admin = server.handle.admin_addr().unwrap().to_string();
    let bin = env!("CARGO_BIN_EXE_monitor-server");
    let out = std::process::Command::new(bin)
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("connections: 1 open (1 subscriber"), "{text}");
    assert!(text.contains("ID  PEER"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("subscriber") && l.contains("table") && l.contains("host.*")),
        "{text}"
    );
    let out = std::process::Command::new(bin)
        .args(["status", "--admin", &admin, "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["connections"]["open"], 1);
    assert_eq!(v["clients"][0]["code"], "table");
    rt.block_on(server.stop());
    let out = std::process::Command::new(bin)
        .args(["status", "--admin", &admin, "--timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer from the admin API"));
}
