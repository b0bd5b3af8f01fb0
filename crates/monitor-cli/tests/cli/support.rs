//! A server per test, client configs with short timings, and the `monitor-client`
//! binary run with its output captured.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use monitor_client::{ClientConfig, Event, Push, PushReceiver};
use monitor_server::{BoundAddress, Config, Server, ServerHandle};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on 127.0.0.1:`port` (0 = a free port) with `tweak` applied.
    pub async fn start_on(port: u16, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.listeners[0].address = format!("127.0.0.1:{port}").parse().unwrap();
        config.admin.address = "127.0.0.1:0".parse().unwrap();
        config.server.drain_timeout_secs = 1;
        tweak(&mut config);
        let server = Server::bind(config).await.unwrap();
        let BoundAddress::Tcp(addr) = server.local_addrs()[0].clone() else {
            panic!("not tcp")
        };
        let handle = server.handle();
        let task = Some(tokio::spawn(server.run()));
        TestServer { addr, handle, task }
    }

    /// The URL of the server's WebSocket endpoint, on its admin listener.
    pub fn ws_url(&self) -> String {
        let admin = self.handle.admin_addr().expect("the admin listener is on");
        format!("ws://{admin}/ws")
    }

    pub async fn start() -> TestServer {
        TestServer::start_on(0, |_| {}).await
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stopped in time")
                .unwrap();
        }
    }

    /// Waits until the server has `n` subscribers.
    pub async fn wait_subscribers(&self, n: usize) {
        let handle = self.handle.clone();
        eventually(&format!("{n} subscribers"), move || {
            handle.subscribers() == n
        })
        .await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A client config for `addr` with test timings: fast heartbeats and backoff.
pub fn config(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new(addr.into());
    c.heartbeat_interval = Duration::from_millis(500);
    c.connect_timeout = Duration::from_secs(5);
    c.ack_timeout = Duration::from_secs(5);
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

/// Waits until `check` holds, polling, within [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next event, within [`WAIT`].
pub async fn next_event(rx: &mut PushReceiver) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("receiver still running")
        .expect("no error")
}

/// The next push, within [`WAIT`]; fails on any other event.
pub async fn next_push(rx: &mut PushReceiver) -> Push {
    match next_event(rx).await {
        Event::Push(p) => p,
        other => panic!("expected a push, got {other:?}"),
    }
}

/// The binary, logging warnings only, its output piped.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_monitor-client"));
    // A token in the developer's environment must not leak into the tests.
    cmd.env("RUST_LOG", "warn")
        .env_remove("MONITOR_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// What a finished command left.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` to its end (within 60 s).
pub async fn run(args: &[&str]) -> Output {
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

/// The first line of `stdout`, parsed as JSON.
pub fn json_line(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().next().expect("a line on stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}
