//! A server per test, a pausable TCP proxy, and client configs with short timings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monitor_client::{ClientConfig, Event, Push, PushReceiver, Status};
use monitor_server::{BoundAddress, Config, Server, ServerHandle};
use tokio::net::{TcpListener, TcpStream};
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

/// Whether no event arrives within `within`.
pub async fn quiet_for(rx: &mut PushReceiver, within: Duration) -> Result<(), Event> {
    match tokio::time::timeout(within, rx.recv()).await {
        Err(_) => Ok(()),
        Ok(Some(Ok(event))) => Err(event),
        Ok(other) => panic!("receiver ended: {other:?}"),
    }
}

/// Waits until `status` says connected with `connections` connections made.
pub async fn wait_connected(mut watch: tokio::sync::watch::Receiver<Status>, connections: u64) {
    tokio::time::timeout(
        WAIT,
        watch.wait_for(|s| matches!(s, Status::Connected { connections: c } if *c == connections)),
    )
    .await
    .expect("connected in time")
    .expect("status channel open");
}

/// Waits until `status` says a connection attempt numbered `attempt` or later is under
/// way: `attempt - 1` attempts of this outage have failed.
pub async fn wait_attempt(mut watch: tokio::sync::watch::Receiver<Status>, attempt: u32) {
    tokio::time::timeout(
        WAIT,
        watch.wait_for(|s| matches!(s, Status::Connecting { attempt: a, .. } if *a >= attempt)),
    )
    .await
    .unwrap_or_else(|_| panic!("connection attempt {attempt} in time"))
    .expect("status channel open");
}

/// A TCP proxy in front of a server, so a test decides when a client can reach it: while
/// paused, every accepted connection is closed at once (the client's handshake fails, as
/// if no server were there), and `pause` also cuts the connections it carries.
pub struct Proxy {
    pub addr: SocketAddr,
    paused: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let task = {
            let (paused, generation) = (Arc::clone(&paused), Arc::clone(&generation));
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if paused.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy {
            addr,
            paused,
            generation,
            task,
        }
    }

    /// Refuses new connections and cuts the ones it carries.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}
