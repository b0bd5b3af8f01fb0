//! monitor-client as the tests use it: configs with short timings, and the next event of a
//! push receiver within [`WAIT`].

use std::net::SocketAddr;
use std::time::Duration;

use monitor_client::{ClientConfig, Event, Push, PushReceiver};

use crate::wait::WAIT;

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
