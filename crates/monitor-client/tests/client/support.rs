//! A pausable TCP proxy and waits on a push receiver's events and status, with
//! monitor-test-support's server per test and client configs with short timings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monitor_client::{Event, PushReceiver, Status};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// What every crate's tests share: the in-process server, client configs with short
// timings, the next event within a deadline.
pub use monitor_test_support::client::{config, next_event, next_push};
pub use monitor_test_support::{eventually, TestServer, WAIT};

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
