//! TLS, mutual TLS and tokens, against an in-process server with a TLS listener and an
//! `[auth]` table, with certificates made by the tests.

use monitor_client::config::{TlsSettings, Token};
use monitor_client::{
    ClientConfig, Endpoint, Error, PushReceiver, Reporter, Status, Subscription, TlsFileKind,
};
use monitor_server::Config;
use monitor_test_support::pki::{Ca, Pki};
use monitor_test_support::token;

use crate::support::{config, next_push, TestServer, WAIT};

/// `config(addr)` over TLS to 127.0.0.1, trusting `ca_file`.
fn tls_config(server: &TestServer, ca_file: &std::path::Path) -> ClientConfig {
    let mut c = config(server.addr);
    c.server = Endpoint::tls("127.0.0.1", server.addr.port());
    c.tls = Some(TlsSettings::new().ca_file(ca_file));
    c
}

/// A refusal that must come at once, not after retries: `max_attempts` is left at
/// "never give up", so a client that retried would time out here instead.
async fn refused<T: std::fmt::Debug>(
    attempt: impl std::future::Future<Output = Result<T, Error>>,
) -> Error {
    tokio::time::timeout(WAIT, attempt)
        .await
        .expect("refused at once, not retried")
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_and_a_reporter_over_tls() {
    let pki = Pki::new("tls");
    let server = TestServer::start_on(0, |c| pki.tls_listener(c, false)).await;

    // The receiver: tls://, the CA from a file, encrypted and compressed pushes on top.
    let mut sub = tls_config(&server, &pki.ca_file);
    sub.encrypt = true;
    sub.compress = true;
    let mut rx = PushReceiver::connect(sub, Subscription::new("t").topic("host.*"))
        .await
        .unwrap();
    // The reporter: a plain host:port made TLS by its settings, the CA given in memory,
    // the certificate checked against `localhost` rather than the IP address.
    let mut rep = config(server.addr);
    rep.tls = Some(
        TlsSettings::new()
            .root(pki.ca.der())
            .server_name("localhost"),
    );
    let reporter = Reporter::connect(rep).await.unwrap();

    assert_eq!(
        reporter
            .report_raw(r#"{"code":"host.a","n":1}"#)
            .await
            .unwrap(),
        1
    );
    let push = next_push(&mut rx).await;
    assert_eq!(push.as_str(), r#"{"code":"host.a","n":1}"#);
    assert!(push.encrypted);
    let kinds: Vec<_> = server.handle.connections().iter().map(|c| c.kind).collect();
    assert_eq!(kinds, ["tls", "tls"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_trouble_is_a_clear_error_that_is_not_retried() {
    let pki = Pki::new("wrong-ca");
    let server = TestServer::start_on(0, |c| pki.tls_listener(c, false)).await;

    // A CA that did not sign the server's certificate.
    let other = Ca::new("another CA");
    let other_file = other.write(pki.dir.path(), "other.crt");
    let e = refused(PushReceiver::connect(
        tls_config(&server, &other_file),
        Subscription::new("x"),
    ))
    .await;
    let text = e.to_string();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(text.starts_with("TLS with tls://127.0.0.1:"), "{text}");
    assert!(text.contains("certificate is not trusted"), "{text}");
    assert!(text.contains("other.crt"), "names what it trusted: {text}");
    assert!(!e.is_retryable());

    // A name the certificate is not for.
    let mut misnamed = tls_config(&server, &pki.ca_file);
    misnamed.tls = misnamed.tls.map(|t| t.server_name("monitor.example"));
    let e = refused(Reporter::connect(misnamed)).await;
    assert!(
        e.to_string()
            .contains("not valid for the name `monitor.example`"),
        "{e}"
    );

    // A TLS client on a plaintext port: the server drops the ClientHello as a bad frame,
    // which looks like any connection lost mid-handshake (retried), and is named so.
    let plain = TestServer::start().await;
    let mut to_plain = tls_config(&plain, &pki.ca_file);
    to_plain.max_attempts = Some(2);
    let e = refused(Reporter::connect(to_plain)).await;
    match &e {
        Error::Unreachable {
            attempts: 2,
            last_error,
        } => assert!(
            last_error.contains("during the TLS handshake"),
            "{last_error}"
        ),
        other => panic!("{other:?}"),
    }

    // A CA file that is not there: named, before any connection.
    let mut missing = tls_config(&server, &pki.file("nope.pem"));
    missing.max_attempts = Some(1);
    match Reporter::start(missing) {
        Err(Error::TlsFile { what, path, reason }) => {
            assert_eq!(what, TlsFileKind::Ca);
            assert_eq!(path, pki.file("nope.pem"));
            assert_eq!(reason, "no such file");
        }
        other => panic!("{other:?}"),
    }
    // One that holds no certificate.
    std::fs::write(pki.file("empty.pem"), "not a certificate\n").unwrap();
    let e = Reporter::start(tls_config(&server, &pki.file("empty.pem"))).unwrap_err();
    assert!(e.to_string().contains("no certificate in it"), "{e}");
    server.stop().await;
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_and_without_a_client_certificate() {
    let pki = Pki::new("mtls");
    let server = TestServer::start_on(0, |c| pki.tls_listener(c, true)).await;
    let agent = pki.client("agent");
    let with_cert = || {
        let mut c = tls_config(&server, &pki.ca_file);
        c.tls = c.tls.map(|t| t.client_cert(&agent.cert, &agent.key));
        c
    };
    let mut rx = PushReceiver::connect(with_cert(), Subscription::new("m"))
        .await
        .unwrap();
    let reporter = Reporter::connect(with_cert()).await.unwrap();
    assert_eq!(reporter.report_raw(r#"{"code":"m"}"#).await.unwrap(), 1);
    assert_eq!(next_push(&mut rx).await.as_str(), r#"{"code":"m"}"#);

    // No certificate: in TLS 1.3 the server's refusal arrives after the client's side of
    // the handshake is done, with the first reply; either way it reads as TLS's.
    let e = refused(PushReceiver::connect(
        tls_config(&server, &pki.ca_file),
        Subscription::new("n"),
    ))
    .await;
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(
        e.to_string().contains("requires a client certificate"),
        "{e}"
    );

    // A certificate from a CA the server does not trust.
    let stranger = Ca::new("stranger CA").client(pki.dir.path(), "stranger");
    let mut foreign = tls_config(&server, &pki.ca_file);
    foreign.tls = foreign
        .tls
        .map(|t| t.client_cert(&stranger.cert, &stranger.key));
    let e = refused(Reporter::connect(foreign)).await;
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("refused the client certificate"), "{text}");
    assert!(text.contains("stranger.crt"), "{text}");
    server.stop().await;
}

/// Tokens required: a dashboard may subscribe to host reports, an agent may report
/// `host.health`.
pub fn auth(c: &mut Config) {
    c.auth.required = true;
    c.auth.tokens = vec![
        token("dashboard", "dash-secret", &["host.*"], &[]),
        token("agents", "agent-secret", &[], &["host.health"]),
    ];
}

fn with_token(server: &TestServer, secret: &str) -> ClientConfig {
    let mut c = config(server.addr);
    c.token = Some(Token::new(secret));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_each_connection_before_it_subscribes_or_reports() {
    let server = TestServer::start_on(0, auth).await;
    // Token alone, and token with the key exchange (one key request does both).
    let mut rx = PushReceiver::connect(
        with_token(&server, "dash-secret"),
        Subscription::new("d").topic("host.*"),
    )
    .await
    .unwrap();
    let mut encrypted = with_token(&server, "agent-secret");
    encrypted.encrypt = true;
    let reporter = Reporter::connect(encrypted).await.unwrap();
    assert_eq!(
        reporter
            .report_raw(r#"{"code":"host.health"}"#)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        next_push(&mut rx).await.as_str(),
        r#"{"code":"host.health"}"#
    );

    // Outside the token's grant: that report is refused, the connection goes on.
    match reporter.report_raw(r#"{"code":"db.slow"}"#).await {
        Err(Error::ReportRefused { msg }) => {
            assert_eq!(msg, r#"forbidden: report under "db.slow""#)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reporter
            .report_raw(r#"{"code":"host.health","n":2}"#)
            .await
            .unwrap(),
        1
    );
    assert_eq!(reporter.stats().reconnects, 0);

    // A subscription outside the grant is refused whole, with the server's reason.
    let e = refused(PushReceiver::connect(
        with_token(&server, "dash-secret"),
        Subscription::new("d").topic("db.*"),
    ))
    .await;
    match &e {
        Error::SubscribeRefused { msg } => assert_eq!(msg, r#"forbidden: subscribe to "db.*""#),
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    // No token at all.
    let e = refused(PushReceiver::connect(
        config(server.addr),
        Subscription::new("d").topic("host.*"),
    ))
    .await;
    assert!(
        e.to_string()
            .contains("forbidden: subscribe before authenticating"),
        "{e}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_unauthorized_and_not_retried() {
    let server = TestServer::start_on(0, auth).await;
    let secret = "not-a-known-token-4b1d";
    let cfg = with_token(&server, secret);
    assert!(!format!("{cfg:?}").contains(secret), "Debug shows no token");
    let e = refused(PushReceiver::connect(cfg.clone(), Subscription::new("w"))).await;
    assert!(
        matches!(
            e,
            Error::Unauthorized {
                during: "authentication"
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains(secret));
    // With the key exchange, the same.
    let mut encrypted = cfg;
    encrypted.encrypt = true;
    let e = refused(Reporter::connect(encrypted.clone())).await;
    assert!(
        matches!(
            e,
            Error::Unauthorized {
                during: "key exchange"
            }
        ),
        "{e:?}"
    );
    // A reporter started without waiting stops on it, with nothing retried: the
    // report fails with the reason (whether the task stopped before it was taken or
    // after), and so does the status.
    let reporter = Reporter::start(encrypted).unwrap();
    let e = match reporter.send_raw(r#"{"code":"host.health"}"#) {
        Err(e) => e,
        Ok(ack) => tokio::time::timeout(WAIT, ack).await.unwrap().unwrap_err(),
    };
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    let later = reporter.send_raw(r#"{"code":"host.health"}"#).unwrap_err();
    assert!(matches!(later, Error::Unauthorized { .. }), "{later:?}");
    match reporter.status() {
        Status::Stopped { reason } => assert!(reason.contains("unauthorized"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.handle.stats().auth_unauthorized, 3);
    server.stop().await;
}
