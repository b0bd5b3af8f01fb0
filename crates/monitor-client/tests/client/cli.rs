//! The `monitor-client` binary end to end, against an in-process server.

use std::process::Stdio;
use std::time::Duration;

use monitor_client::{PushReceiver, Reporter, Subscription};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{config, next_push, TestServer, WAIT};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_monitor-client"));
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(60), bin().args(args).output())
        .await
        .expect("the command finished in time")
        .expect("the command ran");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json_line(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().next().expect("a line on stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}

#[tokio::test]
async fn push_prints_each_report_as_one_json_line() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let mut child: Child = bin()
        .args([
            "push",
            "--server",
            &addr,
            "--code",
            "cli",
            "--topic",
            "cli.*",
            "--encrypt",
        ])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    server.wait_subscribers(1).await;

    let reporter = Reporter::connect(config(server.addr)).await.unwrap();
    let reports = [
        r#"{"code":"cli.one","n":1}"#,
        "{\n  \"code\": \"cli.two\",\n  \"nested\": {\"a\": [1, 2]}\n}",
        r#"{"code":"not-for-cli"}"#,
        r#"{"code":"cli.three","s":"line\nbreak"}"#,
    ];
    for r in reports {
        reporter.report_raw(r).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("stdout open");
        got.push(line);
    }
    assert_eq!(got[0], reports[0], "printed as sent");
    assert_eq!(
        got[1], r#"{"code":"cli.two","nested":{"a":[1,2]}}"#,
        "made one line"
    );
    assert_eq!(got[2], reports[3]);
    for line in &got {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn report_body_prints_the_ack() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let mut rx = PushReceiver::connect(config(server.addr), Subscription::new("r"))
        .await
        .unwrap();
    let body = r#"{"code":"deploy","version":"1.2.3"}"#;
    let out = run(&["report", "--server", &addr, "--body", body, "--compress"]).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout.trim(), r#"{"delivered":1}"#);
    assert_eq!(next_push(&mut rx).await.as_str(), body);
}

#[tokio::test]
async fn report_health_count_1_reports_this_host() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let mut rx = PushReceiver::connect(config(server.addr), Subscription::new("h").topic("host.*"))
        .await
        .unwrap();
    let out = run(&[
        "report",
        "--server",
        &addr,
        "--health",
        "--count",
        "1",
        "--interval",
        "0.2",
    ])
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.starts_with(r#"{"code":"host.health","host":"#),
        "keys in the documented order: {}",
        out.stdout
    );
    let printed = json_line(&out.stdout);
    let push = next_push(&mut rx).await;
    let report: serde_json::Value = push.parse().unwrap();
    assert_eq!(report, printed, "stdout shows what was sent");
    assert_eq!(report["code"], "host.health");
    for key in [
        "host",
        "ts",
        "cpu_percent",
        "load",
        "mem_used",
        "mem_total",
        "swap_used",
        "disks",
        "uptime_secs",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert!(report["host"].is_string());
    assert_eq!(report["load"].as_array().unwrap().len(), 3);
    assert!(report["disks"].is_array());
    assert!(report["mem_total"].as_u64().unwrap() > 0);
    assert!(report["cpu_percent"].as_f64().unwrap() >= 0.0);
}

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

#[tokio::test]
async fn usage_errors_exit_2_and_runtime_failures_exit_1() {
    for args in [
        &["report", "--server", "127.0.0.1:1"][..],
        &["report", "--server", "127.0.0.1:1", "--body", "[1]"],
        &["report", "--server", "127.0.0.1:1", "--body", "{nope"],
        &["report", "--server", "no-port", "--body", "{}"],
        &["push", "--server", "127.0.0.1:1"],
        &[
            "push",
            "--server",
            "127.0.0.1:1",
            "--code",
            "c",
            "--heartbeat",
            "0",
        ],
        &["bench", "--server", "192.0.2.1:9503"],
        &["frobnicate"],
    ] {
        let out = run(args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    let out = run(&["--help"]).await;
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("push") && out.stdout.contains("bench"));

    // Nothing listens there any more.
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    server.stop().await;
    let out = run(&[
        "report",
        "--server",
        &addr,
        "--body",
        "{}",
        "--retries",
        "2",
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("gave up after 2 failed connection attempts in a row")
            && out.stderr.contains("refused"),
        "{}",
        out.stderr
    );
    let out = run(&["push", "--server", &addr, "--code", "c", "--retries", "1"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
}

/// A bad value names the flag the user typed, not the library's field
/// (`--heartbeat: must be more than zero`, not `heartbeat_interval: ...`).
#[tokio::test]
async fn usage_errors_name_the_flag() {
    let push = ["push", "--server", "127.0.0.1:1", "--code", "c"];
    let report = ["report", "--server", "127.0.0.1:1", "--body", "{}"];
    let bench = ["bench", "--server", "127.0.0.1:1"];
    let cases: [(&[&str], &[&str], &str, &str); 9] = [
        (
            &push,
            &["--heartbeat", "0"],
            "--heartbeat: must be more than zero",
            "heartbeat_interval",
        ),
        (
            &push,
            &["--heartbeat", "40000000"],
            "--heartbeat: must be at most one year",
            "heartbeat_interval",
        ),
        (
            &push,
            &["--connect-timeout", "0"],
            "--connect-timeout: must be more than zero",
            "connect_timeout",
        ),
        (
            &report,
            &["--ack-timeout", "0"],
            "--ack-timeout: must be more than zero",
            "ack_timeout",
        ),
        (
            &report,
            &["--ack-timeout", "1e8"],
            "--ack-timeout: must be at most one year",
            "ack_timeout",
        ),
        (
            &report,
            &["--uuid", "short"],
            "--uuid: must be exactly 33 bytes",
            "invalid configuration",
        ),
        (
            &bench,
            &["--subscribers", "0"],
            "--subscribers: must be from 1",
            "invalid configuration",
        ),
        (
            &bench,
            &["--settle", "601"],
            "--settle: must be at most 600 s",
            "invalid configuration",
        ),
        (
            &bench,
            &["--drain", "601"],
            "--drain: must be at most 600 s",
            "duration",
        ),
    ];
    for (command, flags, says, not) in cases {
        let args: Vec<&str> = command.iter().chain(flags).copied().collect();
        let out = run(&args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains(not), "{args:?}: {}", out.stderr);
    }
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

/// A file of its own in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "monitor-client-body-{}-{}.json",
            std::process::id(),
            monitor_client::config::random_uuid(b'f')
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> String {
        format!("@{}", self.0.display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The report limit for `--body`: the default max_report_frame_len less the header.
const BODY_LIMIT: usize = 1024 * 1024 - 45;

/// Runs `args` with `stdin` written to the command's standard input (as much as it takes
/// before it exits), once or, with `forever`, over and over until the command stops
/// reading.
async fn run_with_stdin(args: &[&str], stdin: Vec<u8>, forever: bool) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = bin().args(args).stdin(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer =
        tokio::spawn(async move { while input.write_all(&stdin).await.is_ok() && forever {} });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finished in time")
        .unwrap();
    writer.abort();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn report_body_from_stdin_or_a_file() {
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let mut rx = PushReceiver::connect(config(server.addr), Subscription::new("f"))
        .await
        .unwrap();

    let piped = r#"{"code":"from.stdin","n":1}"#;
    let out = run_with_stdin(
        &["report", "--server", &addr, "--body", "-"],
        format!("{piped}\n").into_bytes(),
        false,
    )
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout.trim(), r#"{"delivered":1}"#);
    assert_eq!(
        next_push(&mut rx).await.as_str(),
        piped,
        "sent without its newline"
    );

    let filed = "{\n  \"code\": \"from.file\",\n  \"n\": 2\n}";
    let file = TempFile::new(format!("{filed}\n").as_bytes());
    let out = run(&["report", "--server", &addr, "--body", &file.arg()]).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout.trim(), r#"{"delivered":1}"#);
    assert_eq!(next_push(&mut rx).await.as_str(), filed, "sent as written");

    // Not JSON: the message names the file.
    let bad = TempFile::new(b"[1, 2]");
    let out = run(&["report", "--server", &addr, "--body", &bad.arg()]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("--body {} must be a JSON object", bad.arg())),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn report_body_errors_name_the_file_or_stdin_and_the_limit() {
    let missing = std::env::temp_dir().join(format!(
        "monitor-client-missing-{}.json",
        std::process::id()
    ));
    let out = run(&[
        "report",
        "--server",
        "127.0.0.1:1",
        "--body",
        &format!("@{}", missing.display()),
    ])
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "--body @{0}: cannot read {0}: No such file",
            missing.display()
        )),
        "{}",
        out.stderr
    );

    // One byte over the limit: refused before anything is sent.
    let big = TempFile::new(&vec![b' '; BODY_LIMIT + 1]);
    let out = run(&["report", "--server", "127.0.0.1:1", "--body", &big.arg()]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let says = format!(
        "--body {}: {} has {} bytes, over the report limit of {BODY_LIMIT} bytes",
        big.arg(),
        big.0.display(),
        BODY_LIMIT + 1
    );
    assert!(out.stderr.contains(&says), "{}", out.stderr);

    // Stdin that never ends: refused once past the limit, without reading it all.
    let out = run_with_stdin(
        &["report", "--server", "127.0.0.1:1", "--body", "-"],
        vec![b' '; 64 * 1024],
        true,
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "--body - (stdin): stdin has more than the report limit of {BODY_LIMIT} bytes"
        )),
        "{}",
        out.stderr
    );
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
