//! TLS, mutual TLS and token permissions, over real sockets, with certificates made by
//! the tests.

use std::time::Duration;

use monitor_proto::MsgType;
use monitor_server::{Config, GrantConfig};
use monitor_test_support::pki::{connector, Ca, TempDir};
use monitor_test_support::token;

use crate::support::{eventually, start, Client, TestServer};

/// A server whose one listener is TLS (mutual TLS with `client_ca`), with `tweak`.
async fn tls_server(
    dir: &TempDir,
    ca: &Ca,
    mutual: bool,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let server_pem = ca.server(&dir.0, "server-1");
    let ca_file = ca.write(&dir.0, "ca.crt");
    start(move |c| {
        let l = &mut c.listeners[0];
        l.tls_cert = Some(server_pem.cert);
        l.tls_key = Some(server_pem.key);
        if mutual {
            l.tls_client_ca = Some(ca_file);
        }
        tweak(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_report_over_tls() {
    let dir = TempDir::new("tls");
    let ca = Ca::new("test CA");
    let server = tls_server(&dir, &ca, false, |_| {}).await;
    let tls = connector(&ca.write(&dir.0, "trust.crt"), None);
    let (mut sub, _) = Client::connect_tls(server.addr(), &tls, "sub")
        .await
        .unwrap();
    sub.key_exchange().await; // the in-band layer works over TLS too
    let (_, ack) = sub
        .subscribe_with(r#"{"code":"s","topics":["host.*"]}"#, true, true)
        .await;
    assert!(ack.is_success());
    let (mut reporter, _) = Client::connect_tls(server.addr(), &tls, "rep")
        .await
        .unwrap();
    assert_eq!(reporter.report(r#"{"code":"host.a","v":1}"#).await, 1);
    assert_eq!(sub.push().await, r#"{"code":"host.a","v":1}"#);
    // The limits hold over TLS as over TCP: a bad header closes that connection.
    let (mut bad, _) = Client::connect_tls(server.addr(), &tls, "bad")
        .await
        .unwrap();
    bad.send_raw(&[9u8; 12]).await;
    bad.expect_closed().await;
    assert_eq!(server.handle.stats().protocol_errors, 1);
    assert_eq!(reporter.report(r#"{"code":"host.b"}"#).await, 1);
    let connections = server.handle.connections();
    assert!(
        connections.iter().all(|c| c.kind == "tls"),
        "{connections:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_no_certificate_and_another_ca_and_grants_mtls_permissions() {
    let dir = TempDir::new("mtls");
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let server = tls_server(&dir, &ca, true, |c| {
        c.auth.required = true;
        c.auth.mtls = Some(GrantConfig {
            subscribe: vec!["host.*".into()],
            report: vec!["host.*".into()],
            admin: false,
        });
    })
    .await;
    let trust = ca.write(&dir.0, "trust.crt");

    let anonymous = connector(&trust, None);
    let refused = Client::connect_tls(server.addr(), &anonymous, "anon").await;
    // TLS 1.3: the server's refusal may arrive with the first read, not the handshake.
    if let Ok((mut c, _)) = refused {
        c.send(MsgType::Heartbeat, "", false, false).await;
        c.expect_closed().await;
    }
    let stranger = other.client(&dir.0, "stranger");
    let foreign = connector(&trust, Some(&stranger));
    if let Ok((mut c, _)) = Client::connect_tls(server.addr(), &foreign, "stranger").await {
        c.send(MsgType::Heartbeat, "", false, false).await;
        c.expect_closed().await;
    }
    eventually("both handshakes counted as failed", || {
        server.handle.stats().tls_handshake_failures == 2
    })
    .await;

    let good = ca.client(&dir.0, "agent-7");
    let trusted = connector(&trust, Some(&good));
    let (mut sub, _) = Client::connect_tls(server.addr(), &trusted, "sub")
        .await
        .unwrap();
    sub.subscribe("s", &["host.*"]).await;
    let (mut reporter, _) = Client::connect_tls(server.addr(), &trusted, "rep")
        .await
        .unwrap();
    assert_eq!(reporter.report(r#"{"code":"host.cpu"}"#).await, 1);
    assert_eq!(sub.push().await, r#"{"code":"host.cpu"}"#);
    // The certificate's grants, and no more.
    reporter
        .send(MsgType::Report, r#"{"code":"db.x"}"#, false, false)
        .await;
    let (_, refused) = reporter.reply(MsgType::ReportAck).await;
    assert_eq!(refused.msg, r#"forbidden: report under "db.x""#);
    let (mut wide, _) = Client::connect_tls(server.addr(), &trusted, "wide")
        .await
        .unwrap();
    let (_, refused) = wide.subscribe_with(r#"{"code":"w"}"#, false, false).await;
    assert_eq!(
        refused.msg,
        "forbidden: subscribe to every report (no topics)"
    );
    wide.expect_closed().await;
    let identities: Vec<_> = server
        .handle
        .connections()
        .into_iter()
        .filter_map(|c| c.authenticated_as)
        .collect();
    assert!(identities.iter().all(|i| i == "mtls") && identities.len() >= 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_connections_the_new_certificate_and_keeps_old_ones() {
    let dir = TempDir::new("reload");
    let ca = Ca::new("test CA");
    let first = ca.server(&dir.0, "server-1");
    let cert_path = dir.0.join("live.crt");
    let key_path = dir.0.join("live.key");
    std::fs::copy(&first.cert, &cert_path).unwrap();
    std::fs::copy(&first.key, &key_path).unwrap();
    let (c, k) = (cert_path.clone(), key_path.clone());
    let server = start(move |cfg| {
        cfg.listeners[0].tls_cert = Some(c);
        cfg.listeners[0].tls_key = Some(k);
    })
    .await;
    let tls = connector(&ca.write(&dir.0, "trust.crt"), None);
    let (mut old, seen) = Client::connect_tls(server.addr(), &tls, "old")
        .await
        .unwrap();
    assert_eq!(seen, der_of(&first.cert));

    // A bad certificate is refused; the listener keeps the one it has.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let mut config = Config::default();
    config.listeners[0].address = "127.0.0.1:0".parse().unwrap();
    config.listeners[0].tls_cert = Some(cert_path.clone());
    config.listeners[0].tls_key = Some(key_path.clone());
    let diff = server.handle.reload(config.clone()).unwrap();
    assert_eq!(diff.failed.len(), 1, "{diff:?}");
    assert!(diff.failed[0].contains("live.crt"), "{diff:?}");
    let (_, seen) = Client::connect_tls(server.addr(), &tls, "same")
        .await
        .unwrap();
    assert_eq!(seen, der_of(&first.cert));

    // A good new one: new connections get it, the old connection goes on.
    let second = ca.server(&dir.0, "server-2");
    std::fs::copy(&second.cert, &cert_path).unwrap();
    std::fs::copy(&second.key, &key_path).unwrap();
    let diff = server.handle.reload(config).unwrap();
    assert!(diff.failed.is_empty(), "{diff:?}");
    let (mut new, seen) = Client::connect_tls(server.addr(), &tls, "new")
        .await
        .unwrap();
    assert_eq!(seen, der_of(&second.cert));
    assert!(new.heartbeat().await > 0);
    assert!(
        old.heartbeat().await > 0,
        "the old connection keeps its session"
    );
    server.stop().await;
}

fn der_of(pem: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_sent_to_a_tls_port_does_not_disturb_others() {
    let dir = TempDir::new("plain");
    let ca = Ca::new("test CA");
    let server = tls_server(&dir, &ca, false, |_| {}).await;
    let tls = connector(&ca.write(&dir.0, "trust.crt"), None);
    let (mut sub, _) = Client::connect_tls(server.addr(), &tls, "sub")
        .await
        .unwrap();
    sub.subscribe("s", &[]).await;
    let mut plain = Client::connect(server.addr(), "plain").await;
    plain.send(MsgType::Heartbeat, "", false, false).await;
    plain.expect_closed().await;
    eventually("the plaintext handshake is counted", || {
        server.handle.stats().tls_handshake_failures == 1
    })
    .await;
    let (mut reporter, _) = Client::connect_tls(server.addr(), &tls, "rep")
        .await
        .unwrap();
    assert_eq!(reporter.report(r#"{"code":"after"}"#).await, 1);
    assert_eq!(sub.push().await, r#"{"code":"after"}"#);
    server.stop().await;
}

/// A client that connects and never starts its handshake is cut at
/// `tls_handshake_timeout_secs` (paused time: no wall-clock wait).
#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_is_cut_at_its_timeout() {
    let dir = TempDir::new("stall");
    let ca = Ca::new("test CA");
    let server = tls_server(&dir, &ca, false, |c| {
        c.server.tls_handshake_timeout_secs = 3
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut silent, &mut byte).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(server.handle.stats().tls_handshake_failures, 1);
    server.stop().await;
}

fn auth_config(c: &mut Config) {
    c.auth.required = true;
    c.auth.tokens = vec![
        token("dashboard", "dash-secret", &["host.*"], &[]),
        token("agents", "agent-secret", &[], &["host.health"]),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_none_wrong_and_outside_their_grants() {
    let server = start(auth_config).await;

    // None: a subscribe is forbidden and closed; a report is forbidden and stays open.
    let mut anon = Client::connect(server.addr(), "anon").await;
    anon.send(MsgType::Report, r#"{"code":"host.health"}"#, false, false)
        .await;
    let (_, r) = anon.reply(MsgType::ReportAck).await;
    assert_eq!(
        r.msg,
        "forbidden: report before authenticating (send a token)"
    );
    assert!(anon.heartbeat().await > 0, "still open");
    let (_, r) = anon
        .subscribe_with(r#"{"code":"a","topics":["host.*"]}"#, false, false)
        .await;
    assert_eq!(
        r.msg,
        "forbidden: subscribe before authenticating (send a token)"
    );
    anon.expect_closed().await;

    // Wrong: unauthorized, then closed, from a key request or a subscribe.
    let mut wrong = Client::connect(server.addr(), "wrong").await;
    wrong
        .send(MsgType::KeyRequest, r#"{"token":"nope"}"#, false, false)
        .await;
    let (_, r) = wrong.reply(MsgType::KeyReply).await;
    assert_eq!((r.err_code, r.msg.as_str()), (-1, "unauthorized"));
    wrong.expect_closed().await;
    let mut wrong = Client::connect(server.addr(), "wrong2").await;
    let (_, r) = wrong
        .subscribe_with(
            r#"{"code":"a","topics":["host.*"],"token":"nope"}"#,
            false,
            false,
        )
        .await;
    assert_eq!(r.msg, "unauthorized");
    wrong.expect_closed().await;

    // The dashboard token: host reports and nothing else.
    let mut dash = Client::connect(server.addr(), "dash").await;
    dash.send(
        MsgType::KeyRequest,
        r#"{"token":"dash-secret"}"#,
        false,
        false,
    )
    .await;
    let (_, r) = dash.reply(MsgType::KeyReply).await;
    assert!(
        r.is_success() && r.data.get().contains("authenticated"),
        "{}",
        r.data.get()
    );
    dash.subscribe("d", &["host.*"]).await;
    let mut agent = Client::connect(server.addr(), "agent").await;
    agent
        .send(
            MsgType::KeyRequest,
            r#"{"token":"agent-secret"}"#,
            false,
            false,
        )
        .await;
    assert!(agent.reply(MsgType::KeyReply).await.1.is_success());
    assert_eq!(agent.report(r#"{"code":"host.health","cpu":1}"#).await, 1);
    assert_eq!(dash.push().await, r#"{"code":"host.health","cpu":1}"#);
    // Outside a grant: a report is refused and the connection stays.
    agent
        .send(MsgType::Report, r#"{"code":"db.slow"}"#, false, false)
        .await;
    let (_, r) = agent.reply(MsgType::ReportAck).await;
    assert_eq!(r.msg, r#"forbidden: report under "db.slow""#);
    assert_eq!(agent.report(r#"{"code":"host.health","cpu":2}"#).await, 1);
    assert_eq!(dash.push().await, r#"{"code":"host.health","cpu":2}"#);
    // A subscription only partly allowed is refused whole, and closed.
    let (_, r) = dash
        .subscribe_with(r#"{"code":"d","topics":["host.*","db.*"]}"#, false, false)
        .await;
    assert_eq!(r.msg, r#"forbidden: subscribe to "db.*""#);
    dash.expect_closed().await;

    let s = server.handle.stats();
    assert_eq!(
        (s.auth_granted, s.auth_unauthorized, s.auth_forbidden),
        (2, 2, 4)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_removed_at_a_reload_closes_its_connections() {
    let server = start(auth_config).await;
    let mut dash = Client::connect(server.addr(), "dash").await;
    let (_, ack) = dash
        .subscribe_with(
            r#"{"code":"d","topics":["host.*"],"token":"dash-secret"}"#,
            false,
            false,
        )
        .await;
    assert!(ack.is_success(), "{}", ack.msg);
    let mut agent = Client::connect(server.addr(), "agent").await;
    agent
        .send(
            MsgType::KeyRequest,
            r#"{"token":"agent-secret"}"#,
            false,
            false,
        )
        .await;
    assert!(agent.reply(MsgType::KeyReply).await.1.is_success());

    let mut config = Config::default();
    config.listeners[0].address = "127.0.0.1:0".parse().unwrap();
    auth_config(&mut config);
    config.auth.tokens.retain(|t| t.name != "dashboard");
    let diff = server.handle.reload(config).unwrap();
    assert!(
        diff.applied
            .iter()
            .any(|l| l.contains("1 connection(s) closed")),
        "{diff:?}"
    );
    dash.expect_closed().await;
    assert_eq!(server.handle.stats().auth_closed_at_reload, 1);
    // The other token's connection goes on.
    assert_eq!(agent.report(r#"{"code":"host.health"}"#).await, 0);
    server.stop().await;
}
