//! `monitor-client push` and `report` (with `--health`), and the usage errors of every
//! command, end to end against an in-process server.

use std::process::Stdio;
use std::time::Duration;

use monitor_client::{PushReceiver, Reporter, Subscription};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::support::{bin, config, json_line, next_push, run, Output, TestServer, WAIT};

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
    assert_eq!(report["interval_secs"], 0.2, "the --interval, announced");
}

#[tokio::test]
async fn report_health_host_overrides_the_host_name() {
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
        "--host",
        "container-7",
    ])
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let report: serde_json::Value = next_push(&mut rx).await.parse().unwrap();
    assert_eq!(report["host"], "container-7");
    assert_eq!(report["interval_secs"], 0.2);

    let out = run(&["report", "--server", &addr, "--health", "--host", ""]).await;
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("--host"), "{}", out.stderr);
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
