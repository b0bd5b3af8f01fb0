//! The monitor server: accepts reporters and push receivers over TCP or Unix sockets and
//! fans every report out, in memory, to the matching subscribers.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation.
//! - `cluster`: several nodes sharing one fan-out through Redis (`[cluster]`,
//!   `docs/cluster.md`).
//! - `admin`: the admin HTTP API (status, clients, metrics, HTTP publish).
//! - [`auth`]: tokens and the mutual-TLS identity, and what each grants.
//! - [`server`]: listeners, accept loops, `max_connections`, graceful shutdown, live reload.
//! - `conn`: one task per connection over the binary protocol: the socket, its buffers
//!   and deadlines, decoding and encoding; `conn::Transport` is what it runs over.
//! - `cmd`: the request handlers (key exchange, subscribe, report), transport-free.
//! - `session`: one connection's protocol state (its subscription, its queue).
//! - `state`: what every task of a server shares (hub, counters, budget, settings).
//! - [`hub`]: subscriptions and the fan-out of reports (one shared body per report,
//!   the slow-consumer policy).
//! - [`queue`]: a subscriber's bounded queue of pushes, and the shared push body.
//! - `budget`: the server-wide budget of bytes in large partial frames.
//! - [`stats`]: the server's counters.
//! - [`tls`]: TLS listeners: the acceptor from PEM files, reloaded on SIGHUP.
//! - [`runtime`]: the tokio runtime: worker count and the workers' CPU scheduling policy.
//! - [`logging`]: best-effort logging: a log line that cannot be written never stops
//!   the server.
//! - [`cli`]: the `monitor-server` command line; [`status`]: its `status` subcommand.
//!
//! `docs/server.md` explains the design and the reasons for its limits.
//!
//! # Example
//! Serve on a free port, report once, and read the acknowledgement:
//! ```
//! use futures::{SinkExt, StreamExt};
//! use monitor_proto::message::reply::{Reply, ReportAckData};
//! use monitor_proto::{ClientCodec, ClientMessage, MsgType, Uuid};
//! use monitor_server::{BoundAddress, Config, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::default();
//! config.listeners[0].address = "127.0.0.1:0".parse()?;
//! config.admin.enabled = false; // no admin API here
//! let server = Server::bind(config).await?;
//! let BoundAddress::Tcp(addr) = server.local_addrs()[0].clone() else { unreachable!() };
//! let handle = server.handle();
//! let running = tokio::spawn(server.run());
//!
//! let stream = tokio::net::TcpStream::connect(addr).await?;
//! let mut client = ClientCodec::builder().new_framed(stream);
//! let uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
//! client.send(ClientMessage::new(MsgType::Report, uuid, r#"{"code":"demo"}"#)).await?;
//! let ack = client.next().await.expect("an ack")?;
//! let ack = Reply::parse(&ack.body?)?;
//! assert_eq!(ack.data_as::<ReportAckData>()?.delivered, 0); // nobody subscribed yet
//!
//! handle.shutdown();
//! running.await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod admin;
pub mod auth;
mod budget;
pub mod cli;
mod cluster;
mod cmd;
pub mod config;
mod conn;
pub mod hub;
pub mod logging;
pub mod queue;
mod registry;
pub mod runtime;
pub mod server;
mod session;
mod state;
pub mod stats;
pub mod status;
pub mod tls;

pub use admin::MAX_HTTP_CONNECTIONS as ADMIN_MAX_HTTP_CONNECTIONS;
pub use cluster::ClusterError;
pub use config::{
    AuthConfig, ClusterConfig, Config, ConfigDiff, ConfigError, GrantConfig, ListenerConfig,
    SchedPolicy, Settings, SlowConsumer, TokenConfig,
};
pub use monitor_proto::Address;
pub use registry::ClientInfo;
pub use server::{BoundAddress, Server, ServerError, ServerHandle};
pub use stats::StatsSnapshot;
