//! A monitor-server per test, in process.

use std::net::SocketAddr;
use std::time::Duration;

use monitor_server::{BoundAddress, Config, Server, ServerHandle, TokenConfig};
use tokio::task::JoinHandle;

use crate::wait::eventually;

/// How long [`TestServer::stop`] waits for the server to finish.
const STOP: Duration = Duration::from_secs(30);

/// A monitor-server running in process, on the test's runtime. Dropping it asks the server
/// to shut down; [`TestServer::stop`] also waits for it to finish.
#[derive(Debug)]
pub struct TestServer {
    /// The address of each listener, in the config's order, with the real ports.
    pub addrs: Vec<BoundAddress>,
    /// The address of the first TCP listener (the first listener, in the tests' configs).
    pub addr: SocketAddr,
    /// Stats, shutdown and live reconfiguration of the running server.
    pub handle: ServerHandle,
    /// The task running [`Server::run`]; `None` once [`TestServer::stop`] took it (a test
    /// may take it to abort the server).
    pub task: Option<JoinHandle<()>>,
}

/// A server with the default config, its first listener and its admin listener moved to
/// 127.0.0.1:0, and `tweak` applied last.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::default();
    config.listeners[0].address = "127.0.0.1:0".parse().unwrap();
    config.admin.address = "127.0.0.1:0".parse().unwrap();
    tweak(&mut config);
    TestServer::bind(config).await
}

impl TestServer {
    /// Binds a server with `config` and runs it in a task of its own. Fails the test if
    /// the server does not bind or has no TCP listener.
    pub async fn bind(config: Config) -> TestServer {
        let server = Server::bind(config).await.unwrap();
        let addrs = server.local_addrs();
        let addr = addrs
            .iter()
            .find_map(|a| match a {
                BoundAddress::Tcp(a) => Some(*a),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no TCP listener among {addrs:?}"));
        let handle = server.handle();
        let task = Some(tokio::spawn(server.run()));
        TestServer {
            addrs,
            addr,
            handle,
            task,
        }
    }

    /// A server on 127.0.0.1:`port` (0 = a free port) with a 1 s drain, and `tweak`
    /// applied last: [`start`] with the timings of the client tests.
    pub async fn start_on(port: u16, tweak: impl FnOnce(&mut Config)) -> TestServer {
        start(|config| {
            config.listeners[0].address = SocketAddr::from(([127, 0, 0, 1], port)).into();
            config.server.drain_timeout_secs = 1;
            tweak(config);
        })
        .await
    }

    /// A server on a free port with a 1 s drain: [`TestServer::start_on`] without a tweak.
    pub async fn start() -> TestServer {
        TestServer::start_on(0, |_| {}).await
    }

    /// The address of the first TCP listener: the field [`TestServer::addr`], for the
    /// tests that call it as a method.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of the server's WebSocket endpoint, on its admin listener.
    pub fn ws_url(&self) -> String {
        let admin = self.handle.admin_addr().expect("the admin listener is on");
        format!("ws://{admin}/ws")
    }

    /// Shuts down and waits (within 30 s) for the server's `run` to return.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STOP, task)
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

/// A token named `name` whose secret is `secret`, allowed to subscribe to the patterns
/// `subscribe` and to report under `report`, without the admin grant.
pub fn token(name: &str, secret: &str, subscribe: &[&str], report: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        token_sha256: monitor_server::auth::hash_token(secret),
        subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
        report: report.iter().map(|s| (*s).to_owned()).collect(),
        admin: false,
    }
}
