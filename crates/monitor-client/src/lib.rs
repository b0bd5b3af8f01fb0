//! Clients of the monitor push/report protocol, built on [`monitor_proto`]: what a service
//! embeds to report or to receive pushes. The `monitor-client` command line an operator
//! runs on every host (`push`, `report`, the `report --health` agent, the `bench` load
//! generator) is the `monitor-cli` crate, so that embedding this one pulls in no argument
//! parser, progress bar, histogram or system probe.
//!
//! - A [`PushReceiver`] subscribes (optionally with an X25519 key exchange, encrypted and
//!   compressed pushes) and is a [`Stream`](futures::Stream) of [`Event`]s: each
//!   [`Push`] (the report, and when it arrived), and each disconnection and
//!   reconnection. It sends heartbeats, and when the connection drops it reconnects with
//!   exponential backoff and jitter, exchanges keys again and subscribes again.
//! - A [`Reporter`] sends reports and matches their acknowledgements in order; reports can
//!   be pipelined. While disconnected it keeps reports in a bounded buffer and sends them,
//!   in order, once it has reconnected.
//!
//! - Both connect over TCP, TLS (`tls://host:port`, mutual TLS with a client
//!   certificate: [`TlsSettings`]) or a Unix socket, and authenticate every connection
//!   with a [`Token`] when given one ([`ClientConfig::token`]).
//!
//! `docs/client.md` says what can be lost, and when, and how TLS and tokens fail.
//!
//! # Layout
//! - [`config`]: [`ClientConfig`] (server [`Endpoint`], TLS, token, uuid, heartbeat,
//!   timeouts, backoff, buffer sizes, flags, limits), [`TlsSettings`]; [`Endpoint`],
//!   [`Address`] and [`Token`] come from monitor-proto.
//! - `connection`: connecting over TCP (plain or TLS) or a Unix socket, authentication,
//!   the key exchange, handshakes, backoff, and the [`Status`] both clients publish.
//! - `tls`: the rustls client configuration built from [`TlsSettings`], and rustls'
//!   errors told as what to do about them.
//! - [`receiver`]: [`PushReceiver`], [`Subscription`], [`Event`], [`Push`].
//! - [`reporter`]: [`Reporter`], [`AckFuture`], [`ReporterStats`].
//! - `supervise`: a background task's panic (or its runtime shutting down under it)
//!   becomes [`Error::BackgroundTask`] for its handles, never a silent end.
//! - [`raw`]: a connection handed over past its handshake, for a caller that reads and
//!   writes the frames itself (the load generator of `monitor-client bench`).
//! - [`error`]: the one [`Error`] type.
//!
//! # Example
//! A server on a free port, a push receiver and a reporter:
//! ```
//! use monitor_client::{ClientConfig, PushReceiver, Reporter, Subscription};
//! use monitor_server::{BoundAddress, Config, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The server (in production: the `monitor-server` binary).
//! let mut config = Config::default();
//! config.listeners[0].address = "127.0.0.1:0".parse()?;
//! config.admin.enabled = false; // no admin API here
//! let server = Server::bind(config).await?;
//! let BoundAddress::Tcp(addr) = server.local_addrs()[0].clone() else { unreachable!() };
//! let handle = server.handle();
//! tokio::spawn(server.run());
//!
//! let client = ClientConfig::new(addr.into());
//! let subscription = Subscription::new("doc-example").topic("host.*");
//! let mut pushes = PushReceiver::connect(client.clone(), subscription).await?;
//! let reporter = Reporter::connect(client).await?;
//!
//! let report = serde_json::json!({"code": "host.health", "cpu_percent": 12.5});
//! let delivered = reporter.report(&report).await?;
//! assert_eq!(delivered, 1); // one subscriber: `pushes`
//!
//! let push = pushes.next_push().await.expect("a push")?;
//! assert_eq!(push.as_str(), r#"{"code":"host.health","cpu_percent":12.5}"#);
//! assert_eq!(push.code().as_deref(), Some("host.health"));
//!
//! handle.shutdown();
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
mod connection;
pub mod error;
pub mod raw;
pub mod receiver;
pub mod reporter;
mod supervise;
mod tls;

pub use config::{ClientConfig, Delivery, Endpoint, TlsSettings, Token};
pub use connection::Status;
pub use error::{Error, Result, TlsFileKind};
pub use monitor_proto::message::reply::ReportAckData;
pub use monitor_proto::Address;
pub use monitor_proto::Uuid;
pub use receiver::{Event, Push, PushReceiver, Subscription};
pub use reporter::{AckFuture, Acknowledgement, Reporter, ReporterStats};
