//! The dashboard (`GET /` on the admin listener) in headless Chromium, driven over
//! WebDriver (chromedriver, with fantoccini): two `monitor-client report --health` agents
//! report as `alpha` and `beta`; the page must show both, chart them, follow new reports,
//! and mark `alpha` stale once its agent is killed (and fresh again when it is back).
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`CHROMIUM=/path` and
//! `CHROMEDRIVER=/path` override the binaries). Without them the test prints
//! `skipped: …` and passes, unless `CI=true`, where it fails. It saves screenshots to
//! `<target dir>/dashboard-screenshot.png` (and `-phone.png`, 390 px wide) and prints
//! their paths.
//! Run alone: `cargo test -p monitor-cli --test cli dashboard -- --nocapture`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use monitor_client::Reporter;
use monitor_server::TokenConfig;
use monitor_test_support::pki::TempDir;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{bin, config, TestServer};

/// How long any one thing the page should show may take to show.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// The agents' `--interval`, seconds: a host is stale after 3 of them.
const INTERVAL: &str = "1";

/// Chromium and chromedriver, or why the test cannot run.
fn browser_binaries() -> Result<(PathBuf, PathBuf), String> {
    let chromium = find_binary("CHROMIUM", "chromium")
        .ok_or("chromium not found (install the Debian package chromium)")?;
    let driver = find_binary("CHROMEDRIVER", "chromedriver")
        .ok_or("chromedriver not found (install the Debian package chromium-driver)")?;
    Ok((chromium, driver))
}

/// `$var` if set, else `name` on the PATH.
fn find_binary(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The binaries, or `None` after printing why the test is skipped; panics on CI.
fn binaries_or_skip() -> Option<(PathBuf, PathBuf)> {
    match browser_binaries() {
        Ok(found) => Some(found),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{why}: CI=true needs it (.ci/run installs chromium and chromium-driver)")
        }
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, else the one this test binary
/// was built in (`<target>/debug/deps/cli-…`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            return dir;
        }
        // Relative to the workspace root, two levels above this package.
        return Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.file_name().is_some_and(|n| n == "deps"))
                .and_then(|deps| deps.parent()?.parent().map(Path::to_path_buf))
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Headless Chromium behind chromedriver; both end when dropped, even on a failed
/// assertion (see `Drop`).
struct Browser {
    client: Option<Client>,
    /// chromedriver's port and the WebDriver session, to end it from `Drop`.
    driver_port: u16,
    session: Option<String>,
    driver: Child,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Not closed: the test failed. Killing chromedriver alone would leave Chromium
        // running, and the runtime that would run fantoccini's own cleanup is going away:
        // end the session with a blocking request, and chromedriver quits Chromium.
        if self.client.is_some() {
            if let Some(session) = &self.session {
                end_session(self.driver_port, session);
            }
        }
        // chromedriver itself is killed on drop (`kill_on_drop`).
    }
}

/// `DELETE /session/{session}` to chromedriver, waiting (boundedly) for the start of its
/// answer.
fn end_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(PAGE_WAIT));
    let _ = stream.set_write_timeout(Some(PAGE_WAIT));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        // chromedriver answers once Chromium has quit (it may keep the connection open).
        let _ = stream.read(&mut [0; 1024]);
    }
}

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let profile = TempDir::new("chromium");
        let mut driver = Command::new(chromedriver)
            .args(["--port=0", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        // "ChromeDriver was started successfully on port 43649."
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(PAGE_WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some((_, rest)) = line.split_once("started successfully on port ") {
                    return rest.trim_end_matches('.').parse::<u16>().unwrap();
                }
            }
            panic!("chromedriver exited before saying its port");
        })
        .await
        .expect("chromedriver said its port in time");
        // Keep reading, so that its output never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1000,760",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            PAGE_WAIT,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("chromium started in time")
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
        let session = client.session_id().await.ok().flatten();
        Browser {
            client: Some(client),
            driver_port: port,
            session,
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// What the page shows now.
    async fn snapshot(&self) -> Snapshot {
        let value = self.client().execute(SNAPSHOT_JS, vec![]).await.unwrap();
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("snapshot {value}: {e}"))
    }

    /// Waits until `ok` holds for what the page shows, within [`PAGE_WAIT`], polling; fails
    /// with the last snapshot otherwise.
    async fn wait_for(&self, what: &str, ok: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let snap = self.snapshot().await;
            if ok(&snap) {
                return snap;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page shows {snap:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the page, written to `path`.
    async fn screenshot(&self, path: &Path) {
        let png = self.client().screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (Chromium quits), then chromedriver.
    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(PAGE_WAIT, client.close()).await;
        }
        let _ = self.driver.kill().await;
    }
}

/// Reads the page through its DOM hooks (documented at the top of dashboard.js).
const SNAPSHOT_JS: &str = r#"
const text = (root, sel) => { const el = root.querySelector(sel); return el ? el.textContent : null; };
const conn = document.getElementById('conn');
const form = document.getElementById('token-form');
return {
  conn: conn ? conn.dataset.state : null,
  conn_text: conn ? conn.textContent : null,
  token_form: form ? getComputedStyle(form).display !== 'none' : false,
  token_label: text(document, '#token-label'),
  open: text(document, '#server [data-stat="open"]'),
  ignored: text(document, '#ignored'),
  images: document.querySelectorAll('#hosts img').length,
  hosts: Array.from(document.querySelectorAll('#hosts [data-host]')).map((el) => ({
    host: el.dataset.host,
    stale: el.dataset.stale,
    trouble: el.dataset.trouble,
    reports: Number(el.dataset.reports || 0),
    state: text(el, '[data-field="state"]'),
    cpu: text(el, '[data-field="cpu"]'),
    age: text(el, '[data-field="age"]'),
    cpu_points: Number(el.querySelector('[data-chart="cpu"]').dataset.points),
    mem_points: Number(el.querySelector('[data-chart="mem"]').dataset.points),
  })),
};
"#;

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Fields read only through Debug in failure messages.
struct Snapshot {
    conn: Option<String>,
    conn_text: Option<String>,
    token_form: bool,
    token_label: Option<String>,
    open: Option<String>,
    ignored: Option<String>,
    images: u64,
    hosts: Vec<HostRow>,
}

#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
struct HostRow {
    host: String,
    stale: String,
    trouble: String,
    reports: u64,
    state: Option<String>,
    cpu: Option<String>,
    age: Option<String>,
    cpu_points: u64,
    mem_points: u64,
}

impl Snapshot {
    fn host(&self, name: &str) -> Option<&HostRow> {
        self.hosts.iter().find(|h| h.host == name)
    }

    fn order(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.host.as_str()).collect()
    }

    /// Whether the cards are in the page's order: those in trouble first, then by name.
    fn sorted(&self) -> bool {
        let key = |h: &HostRow| (h.trouble != "true", h.host.clone());
        self.hosts.windows(2).all(|w| key(&w[0]) <= key(&w[1]))
    }
}

/// A health report made up for `host`: CPU at `cpu` %, disk 10 % full, an interval of
/// 10 minutes (it stays fresh through the test).
fn made_up_report(host: &str, cpu: f64) -> String {
    serde_json::json!({
        "code": "host.health", "host": host, "ts": 1_764_500_000u64, "interval_secs": 600,
        "cpu_percent": cpu, "load": [0.1, 0.2, 0.3],
        "mem_used": 1u64 << 30, "mem_total": 4u64 << 30, "swap_used": 0, "swap_total": 0,
        "disks": [{"mount": "/", "fs": "ext4", "total": 1000, "available": 900}],
        "uptime_secs": 90_061,
    })
    .to_string()
}

/// `monitor-client report --health --host NAME --interval 1` against `server`.
fn agent(server: &TestServer, name: &str) -> Child {
    bin()
        .args([
            "report",
            "--server",
            &server.addr.to_string(),
            "--health",
            "--host",
            name,
            "--interval",
            INTERVAL,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_hosts_live_and_marks_a_silent_one_stale() {
    let Some((chromium, chromedriver)) = binaries_or_skip() else {
        return;
    };
    let started = Instant::now();
    let server = TestServer::start().await;
    let admin = server
        .handle
        .admin_addr()
        .expect("the admin listener is on");
    let mut alpha = agent(&server, "alpha");
    let _beta = agent(&server, "beta");
    let browser = Browser::start(&chromium, &chromedriver).await;
    browser
        .client()
        .goto(&format!("http://{admin}/"))
        .await
        .unwrap();

    // Both hosts, with a point on each chart, and the server's figures in the header.
    let snap = browser
        .wait_for("both hosts charted and the header filled", |s| {
            s.conn.as_deref() == Some("connected")
                && ["alpha", "beta"].iter().all(|name| {
                    s.host(name)
                        .is_some_and(|h| h.cpu_points > 0 && h.mem_points > 0)
                })
                && s.open
                    .as_deref()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= 2)
        })
        .await;
    let first = snap.host("alpha").unwrap().clone();
    assert_eq!(first.stale, "false", "{snap:#?}");
    assert!(
        first.cpu.as_deref().is_some_and(|c| c.ends_with('%')),
        "{snap:#?}"
    );
    assert_eq!(snap.conn_text.as_deref(), Some("connected"));
    assert!(!snap.token_form, "no token asked for without auth");
    // Sorted: trouble first, then by name; the page re-sorts within 50 ms of a change.
    // This machine's CPU or disk may be over 90 % (for either agent's reading), so two
    // made-up hosts show the rule: zzz-hot (CPU 95 %) before aaa-calm.
    let reporter = Reporter::connect(config(server.addr)).await.unwrap();
    for (host, cpu) in [("aaa-calm", 5.0), ("zzz-hot", 95.0)] {
        reporter
            .report_raw(made_up_report(host, cpu))
            .await
            .unwrap();
    }
    let snap = browser
        .wait_for("four hosts in order", |s| s.sorted() && s.hosts.len() == 4)
        .await;
    let at = |name: &str| snap.order().iter().position(|h| *h == name).unwrap();
    assert!(at("zzz-hot") < at("aaa-calm"), "trouble first: {snap:#?}");
    let (calm, hot) = (
        snap.host("aaa-calm").unwrap(),
        snap.host("zzz-hot").unwrap(),
    );
    assert_eq!(calm.trouble, "false", "{snap:#?}");
    assert_eq!(calm.state.as_deref(), Some("ok"));
    assert_eq!(hot.trouble, "true", "{snap:#?}");
    assert_eq!(hot.state.as_deref(), Some("CPU ≥ 90 %"));
    assert_eq!(hot.cpu.as_deref(), Some("95.0 %"));

    // New reports show: the count grows and the chart gains points.
    browser
        .wait_for("alpha's next reports, charted", |s| {
            s.host("alpha")
                .is_some_and(|h| h.reports > first.reports && h.cpu_points > first.cpu_points)
        })
        .await;

    // alpha's agent stops: after 3 intervals its card turns stale and comes first;
    // beta's stays fresh.
    alpha.kill().await.unwrap();
    let killed = Instant::now();
    let snap = browser
        .wait_for("alpha stale", |s| {
            s.host("alpha").is_some_and(|h| h.stale == "true")
        })
        .await;
    let waited = killed.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "stale only after about 3 intervals of 1 s, not after {waited:?}"
    );
    let (a, b) = (snap.host("alpha").unwrap(), snap.host("beta").unwrap());
    assert_eq!(a.state.as_deref(), Some("stale"), "{snap:#?}");
    assert_eq!(a.trouble, "true");
    assert_eq!(b.stale, "false", "beta still reports: {snap:#?}");
    assert!(snap.sorted(), "trouble first: {snap:#?}");
    assert_eq!(snap.order()[0], "alpha", "trouble first: {snap:#?}");

    let shot = target_dir().join("dashboard-screenshot.png");
    browser.screenshot(&shot).await;
    println!("dashboard screenshot: {}", shot.display());
    eprintln!("dashboard screenshot: {}", shot.display());

    // A phone's width: one column, nothing wider than the screen.
    browser.client().set_window_size(390, 844).await.unwrap();
    let overflow = browser
        .client()
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, 0, "no sideways scrolling on a phone");
    let phone = target_dir().join("dashboard-screenshot-phone.png");
    browser.screenshot(&phone).await;
    println!("dashboard screenshot (phone): {}", phone.display());

    // alpha back: fresh again.
    let _alpha = agent(&server, "alpha");
    let snap = browser
        .wait_for("alpha fresh again", |s| {
            s.host("alpha").is_some_and(|h| h.stale == "false")
        })
        .await;
    assert_ne!(snap.host("alpha").unwrap().state.as_deref(), Some("stale"));

    browser.close().await;
    server.stop().await;
    println!("dashboard test took {:?}", started.elapsed());
}

/// With `[auth] required = true`, the page asks for a token, keeps it for the session,
/// and subscribes and reads `/api/status` with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_asks_for_a_token_when_the_server_wants_one() {
    let Some((chromium, chromedriver)) = binaries_or_skip() else {
        return;
    };
    let server = TestServer::start_on(0, |c| {
        c.auth.required = true;
        c.auth.tokens = vec![TokenConfig {
            name: "dash".into(),
            token_sha256: monitor_server::auth::hash_token("dash-secret"),
            subscribe: vec!["host.*".into()],
            report: vec![],
            admin: false,
        }];
    })
    .await;
    let admin = server
        .handle
        .admin_addr()
        .expect("the admin listener is on");
    let browser = Browser::start(&chromium, &chromedriver).await;
    let client = browser.client();
    client.goto(&format!("http://{admin}/")).await.unwrap();

    browser
        .wait_for("the token form", |s| {
            s.token_form && s.conn.as_deref() == Some("token")
        })
        .await;
    // A wrong token: refused, asked again.
    let input = client.find(Locator::Id("token-input")).await.unwrap();
    input.send_keys("wrong").await.unwrap();
    input.send_keys("\u{E007}").await.unwrap(); // Enter submits.
    browser
        .wait_for("the token form again, saying the token was refused", |s| {
            s.token_form
                && s.conn.as_deref() == Some("token")
                && s.token_label
                    .as_deref()
                    .is_some_and(|l| l.contains("refused"))
        })
        .await;

    let input = client.find(Locator::Id("token-input")).await.unwrap();
    input.send_keys("dash-secret\u{E007}").await.unwrap();
    browser
        .wait_for("connected with the token, the header filled", |s| {
            !s.token_form
                && s.conn.as_deref() == Some("connected")
                && s.open.as_deref().is_some_and(|n| n.parse::<u64>().is_ok())
        })
        .await;
    let kept = client
        .execute(
            "return sessionStorage.getItem('monitor.dashboard.token');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept, "dash-secret", "kept for the session");

    browser.close().await;
    server.stop().await;
}

/// The page says when it has lost the server, and subscribes again by itself when the
/// server is back (here a new one on the same admin port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_reconnects_when_the_server_is_back() {
    let Some((chromium, chromedriver)) = binaries_or_skip() else {
        return;
    };
    let server = TestServer::start().await;
    let admin = server
        .handle
        .admin_addr()
        .expect("the admin listener is on");
    let browser = Browser::start(&chromium, &chromedriver).await;
    browser
        .client()
        .goto(&format!("http://{admin}/"))
        .await
        .unwrap();
    browser
        .wait_for("connected", |s| s.conn.as_deref() == Some("connected"))
        .await;

    server.stop().await;
    browser
        .wait_for("reconnecting, with a countdown", |s| {
            s.conn.as_deref() == Some("reconnecting")
                && s.conn_text
                    .as_deref()
                    .is_some_and(|t| t.contains("reconnecting in "))
        })
        .await;

    let server =
        TestServer::start_on(0, |c| c.admin.address = admin.to_string().parse().unwrap()).await;
    let _gamma = agent(&server, "gamma");
    browser
        .wait_for("connected again, gamma shown", |s| {
            s.conn.as_deref() == Some("connected") && s.host("gamma").is_some()
        })
        .await;

    // Report fields are text, never markup; a malformed report is ignored (and counted).
    let reporter = Reporter::connect(config(server.addr)).await.unwrap();
    let markup = "<img src=x onerror=alert(1)>";
    reporter
        .report_raw(r#"{"code":"host.health","host":42,"cpu_percent":"x"}"#)
        .await
        .unwrap();
    reporter
        .report_raw(made_up_report(markup, 1.0))
        .await
        .unwrap();
    let snap = browser
        .wait_for("the markup host, and the malformed report counted", |s| {
            s.host(markup).is_some()
                && s.ignored
                    .as_deref()
                    .is_some_and(|t| t.contains("1 malformed"))
        })
        .await;
    assert_eq!(snap.images, 0, "no element made from a report: {snap:#?}");
    let name = browser
        .client()
        .execute(
            "return document.querySelector('#hosts [data-host]:not([data-host=\"gamma\"]) [data-field=\"host\"]').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(name, markup, "shown as text");

    browser.close().await;
    server.stop().await;
}
