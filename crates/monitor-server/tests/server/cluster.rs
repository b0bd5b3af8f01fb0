//! Clustering over Redis (`[cluster]`): three in-process nodes and a real `redis-server`
//! that each test starts on a free port, with its own data directory.
//!
//! Without `redis-server` on PATH these tests say how to install it and pass as
//! skipped, except under `CI=true`, where they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use monitor_proto::message::reply::ReportAckData;
use monitor_proto::MsgType;
use monitor_server::{ClusterConfig, Config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{eventually, eventually_async, start, Client, TestServer, WAIT};

/// How long a node may take to find Redis again after it returns: its retries back off
/// up to 5 s, and connecting is bounded by 2 s.
const RECOVERY: Duration = Duration::from_secs(30);

/// Whether the tests can run: `redis-server` is on PATH. Under `CI=true` its absence
/// fails the test; elsewhere the test is skipped, saying how to install it.
fn have_redis() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "redis-server not found: apt-get install -y redis-server"
    );
    eprintln!("skipped: redis-server not found (apt-get install -y redis-server)");
    false
}

/// A `redis-server` of this test's own: a free port on 127.0.0.1, a fresh data directory,
/// no persistence. Killed (and its directory removed) on drop.
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    async fn start() -> Redis {
        // A port freed a moment ago may be taken by another test in between: try again.
        for attempt in 0.. {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let dir = std::env::temp_dir().join(format!(
                "monitor-cluster-test-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut redis = Redis {
                port,
                dir,
                child: None,
            };
            if redis.spawn().await {
                return redis;
            }
            assert!(attempt < 5, "redis-server did not start on a free port");
        }
        unreachable!()
    }

    /// Starts the process on `self.port` and waits until it answers PING; false if it
    /// exited (the port was taken).
    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(child) = &mut self.child {
                if child.try_wait().unwrap().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if self.pong().await {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pong(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok()
            && tokio::time::timeout(WAIT, s.read_exact(&mut buf))
                .await
                .is_ok_and(|r| r.is_ok())
            && &buf == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL: no goodbye to its clients) and waits for it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was saved).
    async fn restart(&mut self) {
        assert!(
            self.spawn().await,
            "redis-server restarts on port {}",
            self.port
        );
    }

    /// A plain connection, to look at Redis or publish on the channel by hand.
    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node of the cluster on `redis`, named `id`.
async fn node(redis: &Redis, id: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let url = redis.url();
    start(|c| {
        c.cluster = Some(ClusterConfig {
            redis: url,
            node_id: Some(id.to_owned()),
            ..ClusterConfig::default()
        });
        tweak(c);
    })
    .await
}

/// Waits until every node publishes to and is subscribed to Redis.
async fn all_up(nodes: &[&TestServer], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while !nodes.iter().all(|n| n.handle.cluster_up() == Some(true)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes not connected to redis within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nodes named `ids`, with the default settings, once all of them are connected to
/// `redis`.
async fn nodes<const N: usize>(redis: &Redis, ids: [&str; N]) -> [TestServer; N] {
    let mut started = Vec::with_capacity(N);
    for id in ids {
        started.push(node(redis, id, |_| {}).await);
    }
    all_up(&started.iter().collect::<Vec<_>>(), WAIT).await;
    started
        .try_into()
        .unwrap_or_else(|_| unreachable!("N nodes were started"))
}

/// Sends `bodies` as reports without waiting, then reads their acknowledgements: the
/// `data` of each, as sent (raw JSON text).
async fn report_all(reporter: &mut Client, bodies: &[String]) -> Vec<String> {
    for body in bodies {
        reporter
            .send(MsgType::Report, body.clone(), false, false)
            .await;
    }
    let mut acks = Vec::with_capacity(bodies.len());
    for _ in bodies {
        let (_, ack) = reporter.reply(MsgType::ReportAck).await;
        assert!(ack.is_success(), "report refused: {}", ack.msg);
        acks.push(ack.data.get().to_owned());
    }
    acks
}

/// The `n` of the next push.
async fn next_n(sub: &mut Client) -> u64 {
    let push: Value = serde_json::from_str(&sub.push().await).unwrap();
    push["n"].as_u64().expect("a numbered report")
}

fn numbered(code: &str, range: std::ops::Range<u64>) -> Vec<String> {
    range
        .map(|n| format!(r#"{{"code":"{code}","n":{n}}}"#))
        .collect()
}

/// `/api/status`'s `cluster` object.
async fn cluster_status(server: &TestServer) -> Value {
    let status: Value = http()
        .get(format!("{}/api/status", admin(server)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["cluster"].clone()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

fn admin(server: &TestServer) -> String {
    format!("http://{}", server.handle.admin_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reports_on_one_node_reach_every_node_once_and_in_order() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let [a, b, c] = nodes(&redis, ["a", "b", "c"]).await;
    let mut subs = Vec::new();
    for (server, tag) in [(&a, "sa"), (&b, "sb"), (&c, "sc")] {
        let mut sub = Client::connect(server.addr(), tag).await;
        sub.subscribe(tag, &["seq.*"]).await;
        subs.push(sub);
    }
    let mut reporter = Client::connect(a.addr(), "reporter").await;
    let acks = report_all(&mut reporter, &numbered("seq.test", 0..1000)).await;
    assert!(
        acks.iter()
            .all(|ack| ack == r#"{"delivered":1,"cluster":true}"#),
        "each ack counts the local subscriber and says it went to the cluster: {:?}",
        &acks[..3]
    );
    for sub in &mut subs {
        for n in 0..1000 {
            assert_eq!(next_n(sub).await, n, "{:?}: in order, once", sub.uuid);
        }
        assert!(
            sub.nothing_within(Duration::from_millis(300)).await,
            "no duplicate after the last one"
        );
    }
    eventually("A published all", || {
        a.handle.stats().cluster_published == 1000
    })
    .await;
    for other in [&b, &c] {
        let s = other.handle.stats();
        assert_eq!(s.cluster_received, 1000);
        assert_eq!(s.cluster_missed, 0);
        assert_eq!(s.cluster_out_of_order, 0);
        assert_eq!(s.cluster_rejected, 0);
        assert_eq!(
            s.pushes_queued, 1000,
            "delivered once, to the one subscriber"
        );
    }
    let s = a.handle.stats();
    assert_eq!(
        (
            s.cluster_received,
            s.cluster_publish_failed,
            s.cluster_overflow
        ),
        (0, 0, 0),
        "a node never delivers its own reports twice"
    );
    assert_eq!(s.pushes_queued, 1000);
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_filters_apply_on_every_node() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let [a, b, c] = nodes(&redis, ["a", "b", "c"]).await;
    // On each node: a prefix, an exact code, and everything.
    let mut subs = Vec::new();
    for server in [&a, &b, &c] {
        let mut host = Client::connect(server.addr(), "host").await;
        host.subscribe("h", &["host.*"]).await;
        let mut db = Client::connect(server.addr(), "db").await;
        db.subscribe("d", &["db.slow"]).await;
        let mut all = Client::connect(server.addr(), "all").await;
        all.subscribe("a", &[]).await;
        subs.push((host, db, all));
    }
    let mut reporter = Client::connect(a.addr(), "reporter").await;
    let codes = [
        "other", "host.cpu", "db.slow", "db.fast", "host.mem", "db.slow",
    ];
    let bodies: Vec<String> = codes
        .iter()
        .enumerate()
        .map(|(n, code)| format!(r#"{{"code":"{code}","n":{n}}}"#))
        .collect();
    report_all(&mut reporter, &bodies).await;
    for (host, db, all) in &mut subs {
        for n in 0..codes.len() as u64 {
            assert_eq!(next_n(all).await, n);
        }
        assert_eq!((next_n(host).await, next_n(host).await), (1, 4));
        assert_eq!((next_n(db).await, next_n(db).await), (2, 5));
        assert!(host.nothing_within(Duration::from_millis(200)).await);
        assert!(db.nothing_within(Duration::from_millis(200)).await);
    }
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscriber_on_one_node_gets_a_report_made_on_another() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let [a, c] = nodes(&redis, ["a", "c"]).await;
    let url = format!("ws://{}/ws", c.handle.admin_addr().unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connected in time")
        .expect("upgraded");
    ws.send(Message::text(r#"{"code":"dash","topics":["host.*"]}"#))
        .await
        .unwrap();
    let mut next_text = async || loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    };
    let ack: Value = serde_json::from_str(&next_text().await).unwrap();
    assert_eq!(ack["errCode"], 0, "{ack}");
    // Over the binary protocol on A, byte for byte; and over A's HTTP API.
    let mut reporter = Client::connect(a.addr(), "reporter").await;
    let over_tcp = r#"{ "code" : "host.health", "n":1 }"#;
    let acks = report_all(&mut reporter, &[over_tcp.to_owned()]).await;
    assert_eq!(acks, [r#"{"delivered":0,"cluster":true}"#]);
    assert_eq!(next_text().await, over_tcp);
    let over_http = r#"{"code":"host.disk","free":[1,2]}"#;
    let r = http()
        .post(format!("{}/api/report", admin(&a)))
        .body(over_http)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["data"],
        serde_json::json!({"delivered": 0, "cluster": true})
    );
    assert_eq!(next_text().await, over_http);
    a.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_keeps_local_delivery_and_the_losses_are_counted() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start().await;
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut local = Client::connect(a.addr(), "local").await;
    local.subscribe("local", &[]).await;
    let mut remote = Client::connect(b.addr(), "remote").await;
    remote.subscribe("remote", &[]).await;
    let mut reporter = Client::connect(a.addr(), "reporter").await;

    // 1. Both ways.
    report_all(&mut reporter, &numbered("x", 0..100)).await;
    for n in 0..100 {
        assert_eq!(next_n(&mut local).await, n);
        assert_eq!(next_n(&mut remote).await, n);
    }

    // 2. Redis dies. Both nodes notice, on both links (checked every second) ...
    redis.kill();
    eventually_async("both nodes see redis gone", || async {
        let (sa, sb) = (cluster_status(&a).await, cluster_status(&b).await);
        [&sa, &sb]
            .iter()
            .all(|s| s["publishing"] == false && s["subscribed"] == false)
    })
    .await;
    // ... and A's own subscriber still gets every report at once; no ack says cluster.
    let acks = report_all(&mut reporter, &numbered("x", 100..200)).await;
    assert!(
        acks.iter().all(|ack| ack == r#"{"delivered":1}"#),
        "{acks:?}"
    );
    for n in 100..200 {
        assert_eq!(next_n(&mut local).await, n, "local delivery goes on");
    }
    let metrics = http()
        .get(format!("{}/metrics", admin(&a)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("monitor_cluster_up 0"), "{metrics}");
    assert!(
        metrics.contains("monitor_cluster_publish_failed_total 100"),
        "{metrics}"
    );

    // 3. Redis returns (empty); both nodes find it, subscribe again, and go on.
    redis.restart().await;
    all_up(&[&a, &b], RECOVERY).await;
    report_all(&mut reporter, &numbered("x", 200..300)).await;
    let mut received = Vec::new();
    loop {
        let n = next_n(&mut remote).await;
        received.push(n);
        if n == 299 {
            break;
        }
    }
    for n in 200..300 {
        assert_eq!(next_n(&mut local).await, n);
    }
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {received:?}"
    );
    let lost = 200 - received.len() as u64;
    assert_eq!(lost, 100, "what was reported while redis was away");
    let (sa, sb) = (a.handle.stats(), b.handle.stats());
    assert_eq!(sb.cluster_missed, lost, "B counts what it missed");
    assert_eq!(sb.cluster_out_of_order, 0);
    // What B missed is what A could not publish, here. In general they may differ: a
    // PUBLISH that Redis carried out before the connection broke is counted as failed by
    // A but reached B; one that Redis took while B was not (yet) subscribed again reached
    // nobody, yet A counts it as published; and B's own incoming queue may drop. This
    // test reports nothing while a link is changing state, so the two are equal.
    assert_eq!(sa.cluster_publish_failed + sa.cluster_overflow, lost);
    eventually("A counted what it published", || {
        a.handle.stats().cluster_published == 200
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// The client list of the whole cluster, as node `via` reads it from Redis: (node, code).
async fn cluster_clients(via: &TestServer, query: &str) -> Vec<(String, String)> {
    let r = http()
        .get(format!("{}/api/clients?scope=cluster{query}", admin(via)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows: Vec<Value> = r.json().await.unwrap();
    let mut pairs: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            (
                row["node"].as_str().unwrap().to_owned(),
                row["code"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_every_nodes_clients_and_a_dead_nodes_expire() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let ttl = |secs| move |c: &mut Config| c.cluster.as_mut().unwrap().presence_ttl_secs = secs;
    let a = node(&redis, "a", ttl(2)).await;
    let b = node(&redis, "b", ttl(2)).await;
    // C's presence outlives its last refresh by at least 4 s less a third: long enough
    // to see it still listed right after C dies.
    let mut c = node(&redis, "c", ttl(6)).await;
    all_up(&[&a, &b, &c], WAIT).await;
    let mut clients = Vec::new();
    for (server, code) in [(&a, "ca"), (&b, "cb"), (&c, "cc")] {
        let mut sub = Client::connect(server.addr(), code).await;
        sub.subscribe(code, &[]).await;
        clients.push(sub);
    }
    let _reporter_on_b = {
        let mut r = Client::connect(b.addr(), "rb").await;
        r.report(r#"{"code":"z"}"#).await;
        r
    };
    let everyone = |c: &[(&str, &str)]| -> Vec<(String, String)> {
        c.iter()
            .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
            .collect()
    };
    eventually_async("every node's clients listed", || async {
        cluster_clients(&a, "").await
            == everyone(&[("a", "ca"), ("b", "-"), ("b", "cb"), ("c", "cc")])
    })
    .await;
    assert_eq!(
        cluster_clients(&c, "&role=subscriber").await,
        everyone(&[("a", "ca"), ("b", "cb"), ("c", "cc")]),
        "filters apply, and any node lists the same"
    );

    // B stops cleanly: its presence goes at once.
    b.stop().await;
    eventually_async("B's clients gone", || async {
        cluster_clients(&a, "").await == everyone(&[("a", "ca"), ("c", "cc")])
    })
    .await;

    // C dies (its tasks are dropped mid-flight): its presence stays until its TTL ends.
    c.task.take().unwrap().abort();
    let died = Instant::now();
    assert_eq!(
        cluster_clients(&a, "").await,
        everyone(&[("a", "ca"), ("c", "cc")]),
        "a dead node is listed until its TTL ends"
    );
    eventually_async("C's presence expired", || async {
        cluster_clients(&a, "").await == everyone(&[("a", "ca")])
    })
    .await;
    assert!(
        died.elapsed() <= Duration::from_secs(6) + Duration::from_secs(1),
        "gone within its TTL: {:?}",
        died.elapsed()
    );
    let mut conn = redis.connection().await;
    let nodes: Vec<String> = redis::cmd("ZRANGE")
        .arg("monitor:reports:nodes")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        nodes,
        ["a"],
        "the listing pruned the dead node from the index"
    );
    drop(clients);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_say_cluster_only_on_a_clustered_node() {
    let plain = start(|_| {}).await;
    let mut reporter = Client::connect(plain.addr(), "r").await;
    assert_eq!(
        report_all(&mut reporter, &[r#"{"code":"x"}"#.to_owned()]).await,
        [r#"{"delivered":0}"#],
        "without [cluster], byte for byte what it always was"
    );
    let status: Value = http()
        .get(format!("{}/api/status", admin(&plain)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status.get("cluster").is_none(), "{status}");
    let metrics = http()
        .get(format!("{}/metrics", admin(&plain)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("cluster"),
        "no cluster metrics without [cluster]"
    );
    let r = http()
        .get(format!("{}/api/clients?scope=cluster", admin(&plain)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    plain.stop().await;

    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let [a] = nodes(&redis, ["a"]).await;
    let mut reporter = Client::connect(a.addr(), "r").await;
    let acks = report_all(&mut reporter, &[r#"{"code":"x"}"#.to_owned()]).await;
    assert_eq!(acks, [r#"{"delivered":0,"cluster":true}"#]);
    let (_, ack) = {
        reporter
            .send(MsgType::Report, r#"{"code":"y"}"#, false, false)
            .await;
        reporter.reply(MsgType::ReportAck).await
    };
    let data: ReportAckData = ack.data_as().unwrap();
    assert_eq!(data, ReportAckData::new(0).with_cluster(true));
    let status: Value = http()
        .get(format!("{}/api/status", admin(&a)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["cluster"]["node_id"], "a");
    assert_eq!(status["cluster"]["up"], true);
    assert_eq!(status["cluster"]["redis"], redis.url());
    a.stop().await;
}

/// Publishes `payload` on the channel as any Redis client could.
async fn publish_raw(redis: &Redis, payload: &[u8]) {
    let mut conn = redis.connection().await;
    redis::cmd("PUBLISH")
        .arg("monitor:reports")
        .arg(payload)
        .exec_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_is_counted_and_dropped() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let a = node(&redis, "a", |_| {}).await;
    let b = node(&redis, "b", |c| c.server.max_frame_len = 4096).await;
    all_up(&[&a, &b], WAIT).await;
    let mut sub = Client::connect(b.addr(), "sub").await;
    sub.subscribe("s", &[]).await;
    let huge = {
        let mut m = b"m1 x 1 1\n{\"pad\":\"".to_vec();
        m.extend(std::iter::repeat_n(b'p', 4 << 20));
        m.extend_from_slice(b"\"}");
        m
    };
    let garbage: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        b"m1 no-newline 1 1".to_vec(),
        b"m1 a b c\n{}".to_vec(),
        b"m1 x 1 2\n{\"code\":".to_vec(),
        b"m1 x 1 3\n[1,2]".to_vec(),
        b"m1 x 1 4\n\xff\xfe".to_vec(),
        // Within B's size limit for a message, but its push is over B's max_frame_len.
        format!(
            r#"m1 x 1 5
{{"code":"big","pad":"{}"}}"#,
            "p".repeat(4000)
        )
        .into_bytes(),
        // Over B's limit as it arrives: dropped before it is queued.
        huge,
        // B's own id, from another process: two nodes must not share an id.
        b"m1 b 1 1\n{\"code\":\"impostor\"}".to_vec(),
    ];
    let before = b.handle.stats();
    for payload in &garbage {
        publish_raw(&redis, payload).await;
    }
    eventually("B counted every bad message", || {
        b.handle.stats().cluster_rejected - before.cluster_rejected == garbage.len() as u64
    })
    .await;
    // Nothing else broke: a report from A still arrives, and B delivered nothing else.
    let mut reporter = Client::connect(a.addr(), "r").await;
    report_all(&mut reporter, &[r#"{"code":"fine","n":7}"#.to_owned()]).await;
    assert_eq!(next_n(&mut sub).await, 7);
    let s = b.handle.stats();
    assert_eq!(s.cluster_out_of_order, 0);
    assert_eq!(s.cluster_received, 1);
    assert_eq!(s.pushes_queued, 1);
    a.stop().await;
    b.stop().await;
}
