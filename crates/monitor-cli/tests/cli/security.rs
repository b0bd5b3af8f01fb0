//! `--tls`, `--ca`, `--cert`/`--key`, `--server-name` and `--token`/`MONITOR_TOKEN` on
//! `push`, `report` and `bench`, against in-process servers with a TLS listener or an
//! `[auth]` table; certificates made by the tests.

use monitor_client::config::Token;
use monitor_client::{PushReceiver, Subscription};
use monitor_server::Config;
use monitor_test_support::pki::Pki;
use monitor_test_support::token;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{bin, config, json_line, next_push, run, Output, TestServer, WAIT};

/// Runs the binary with `args` and `MONITOR_TOKEN=token` in its environment.
async fn run_with_token(args: &[&str], token: &str) -> Output {
    let out = tokio::time::timeout(
        WAIT * 6,
        bin().args(args).env("MONITOR_TOKEN", token).output(),
    )
    .await
    .expect("the command finished in time")
    .expect("the command ran");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_report_over_tls() {
    let pki = Pki::new("cli-tls");
    let server = TestServer::start_on(0, |c| pki.tls_listener(c, false)).await;
    let ca = pki.ca_file.to_str().unwrap().to_owned();
    let plain_addr = server.addr.to_string();
    // push: --tls on a host:port, the certificate checked for `localhost`.
    let mut child = bin()
        .args([
            "push",
            "--server",
            &plain_addr,
            "--tls",
            "--ca",
            &ca,
            "--server-name",
            "localhost",
            "--code",
            "cli",
        ])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    server.wait_subscribers(1).await;
    // report: a tls:// address.
    let tls_addr = format!("tls://{}", server.addr);
    let body = r#"{"code":"deploy","v":"2"}"#;
    let out = run(&[
        "report",
        "--server",
        &tls_addr,
        "--ca",
        &ca,
        "--server-name",
        "localhost",
        "--body",
        body,
    ])
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout.trim(), r#"{"delivered":1}"#);
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("stdout open");
    assert_eq!(line, body);
    assert!(server.handle.connections().iter().all(|c| c.kind == "tls"));
    child.kill().await.unwrap();

    // Mutual TLS: with --cert/--key it is let in, without it is told why.
    let mtls = TestServer::start_on(0, |c| pki.tls_listener(c, true)).await;
    let agent = pki.client("cli-agent");
    let mtls_addr = format!("tls://{}", mtls.addr);
    let (cert, key) = (agent.cert.to_str().unwrap(), agent.key.to_str().unwrap());
    let with_cert = [
        "report", "--server", &mtls_addr, "--ca", &ca, "--cert", cert, "--key", key, "--body", body,
    ];
    let out = run(&with_cert).await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let out = run(&with_cert[..5]
        .iter()
        .chain(&with_cert[9..])
        .copied()
        .collect::<Vec<_>>())
    .await;
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("requires a client certificate"),
        "{}",
        out.stderr
    );
    server.stop().await;
    mtls.stop().await;
}

#[tokio::test]
async fn tls_usage_errors_name_the_flag_or_the_file() {
    let pki = Pki::new("cli-usage");
    let ca = pki.ca_file.to_str().unwrap().to_owned();
    let missing = pki.file("missing.pem");
    let missing = missing.to_str().unwrap();
    std::fs::write(pki.file("junk.pem"), "junk\n").unwrap();
    let junk = pki.file("junk.pem");
    let junk = junk.to_str().unwrap();
    let base = ["report", "--server", "tls://127.0.0.1:1", "--body", "{}"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    };
    for (args, expected) in [
        (
            with(&["--ca", missing]),
            format!("--ca {missing}: no such file"),
        ),
        (
            with(&["--ca", junk]),
            format!("--ca {junk}: no certificate in it"),
        ),
        (
            with(&["--ca", &ca, "--cert", &ca, "--key", missing]),
            format!("--key {missing}: no such file"),
        ),
        (with(&[]), "--ca: TLS needs a CA to trust".to_owned()),
        (
            with(&["--ca", &ca, "--server-name", "not a name"]),
            "--server-name: `not a name` is not a DNS name".to_owned(),
        ),
        (
            vec![
                "push".into(),
                "--server".into(),
                "127.0.0.1:1".into(),
                "--code".into(),
                "c".into(),
                "--ca".into(),
                ca.clone(),
            ],
            "--ca is for TLS: add --tls, or give the server as tls://host:port".to_owned(),
        ),
        (
            vec![
                "bench".into(),
                "--server".into(),
                "unix:/tmp/x.sock".into(),
                "--tls".into(),
                "--ca".into(),
                ca.clone(),
            ],
            "--tls: TLS runs over TCP".to_owned(),
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&expected),
            "{args:?}: expected {expected:?} in {:?}",
            out.stderr
        );
    }
    // clap's own: --cert goes with --key.
    let out = run(&with(&["--ca", &ca, "--cert", &ca])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--key"), "{}", out.stderr);
}

fn auth(c: &mut Config) {
    c.auth.required = true;
    c.auth.tokens = vec![
        token("dashboard", "dash-secret", &["*"], &[]),
        token("agents", "agent-secret-77f1", &[], &["deploy"]),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_token_is_used_and_never_printed() {
    let server = TestServer::start_on(0, auth).await;
    let addr = server.addr.to_string();
    let mut dash = config(server.addr);
    dash.token = Some(Token::new("dash-secret"));
    let mut rx = PushReceiver::connect(dash, Subscription::new("d"))
        .await
        .unwrap();
    let body = r#"{"code":"deploy"}"#;
    // Debug logs on: the token must not appear in them either.
    let report = ["report", "--server", &addr, "--body", body];
    let mut cmd = bin();
    cmd.args(report)
        .env("MONITOR_TOKEN", "agent-secret-77f1")
        .env("RUST_LOG", "trace");
    let out = tokio::time::timeout(WAIT * 6, cmd.output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout.trim(), r#"{"delivered":1}"#);
    assert!(!stderr.contains("agent-secret-77f1") && !stdout.contains("agent-secret-77f1"));
    assert_eq!(next_push(&mut rx).await.as_str(), body);

    // A wrong one: refused at once (exit 1), and not echoed.
    let out = run_with_token(&report, "wrong-secret-9c2e").await;
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("unauthorized"), "{}", out.stderr);
    assert!(!out.stderr.contains("wrong-secret-9c2e"), "{}", out.stderr);
    assert_eq!(server.handle.stats().auth_unauthorized, 1, "not retried");
    // None: the server's reason.
    let out = run(&report).await;
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("forbidden: report before authenticating"),
        "{}",
        out.stderr
    );
    // --help names the variable, never its value.
    let out = run_with_token(&["report", "--help"], "agent-secret-77f1").await;
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("MONITOR_TOKEN"), "{}", out.stdout);
    assert!(!out.stdout.contains("agent-secret-77f1"), "{}", out.stdout);
    // --token on the command line works too (and a usage error does not echo it).
    let out = run(&[
        "report",
        "--server",
        &addr,
        "--token",
        "agent-secret-77f1",
        "--body",
        body,
    ])
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let out = run(&[
        "report",
        "--server",
        "nope",
        "--token",
        "agent-secret-77f1",
        "--body",
        body,
    ])
    .await;
    assert_eq!(out.code, Some(2));
    assert!(!out.stderr.contains("agent-secret-77f1"), "{}", out.stderr);
    server.stop().await;
}

/// Each layer's cost can be measured: `bench --tls` (with a token), `--encrypt` and
/// `--compress` each run end to end, and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_over_tls_encrypted_and_compressed() {
    let pki = Pki::new("cli-bench");
    let tls_server = TestServer::start_on(0, |c| {
        pki.tls_listener(c, false);
        c.auth.required = true;
        // One token for both kinds of connection: subscribe and report.
        c.auth.tokens = vec![token("bench", "bench-secret", &["bench*"], &["bench*"])];
    })
    .await;
    let plain = TestServer::start().await;
    let ca = pki.ca_file.to_str().unwrap().to_owned();
    let tls_addr = format!("tls://{}", tls_server.addr);
    let plain_addr = plain.addr.to_string();
    let brief = [
        "--subscribers",
        "2",
        "--reporters",
        "1",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--settle",
        "0.05",
        "--drain",
        "5",
        "--rate",
        "200",
        "--json",
    ];
    for (server, extra, token, layers) in [
        (
            &tls_addr,
            vec!["--ca", ca.as_str(), "--server-name", "localhost"],
            Some("bench-secret"),
            "tls",
        ),
        (&plain_addr, vec!["--encrypt"], None, "encrypt"),
        (&plain_addr, vec!["--compress"], None, "compress"),
    ] {
        let mut args = vec!["bench", "--server", server.as_str()];
        args.extend(&extra);
        args.extend(brief);
        let out = match token {
            Some(t) => run_with_token(&args, t).await,
            None => run(&args).await,
        };
        assert_eq!(out.code, Some(0), "{layers}: stderr: {}", out.stderr);
        let r = json_line(&out.stdout);
        assert_eq!(r["layers"], layers, "{r}");
        let published = r["published"].as_u64().unwrap();
        assert!(published >= 50, "{layers}: {r}");
        assert_eq!(
            r["expected"].as_u64().unwrap(),
            published * 2,
            "{layers}: {r}"
        );
        assert_eq!(r["lost"], 0, "{layers}: {r}");
        assert_eq!(
            r["report_acks"].as_u64().unwrap(),
            published,
            "{layers}: {r}"
        );
        assert_eq!(r["report_ack_errors"], 0, "{layers}: {r}");
        // Every push was read through its layers: each body gave its timestamp.
        assert_eq!(r["no_timestamp"], 0, "{layers}: {r}");
        assert!(r["lat_samples"].as_u64().unwrap() > 0, "{layers}: {r}");
    }
    tls_server.stop().await;
    plain.stop().await;
}
