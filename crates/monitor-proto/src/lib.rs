//! The wire format of the monitor push/report protocol, version 1.
//!
//! Hosts *report* their health to a server, and *push receivers* subscribe and get every
//! matching report. Each message is a frame: a 45-byte header (version, type, cipher and
//! compress flags, length, header CRC, a 33-byte client uuid) followed by a JSON body that
//! may be zlib-compressed and AES-256-GCM-encrypted. `docs/protocol.md` describes it all.
//!
//! This crate has no runtime: it plugs into [`tokio_util::codec::Framed`] (or any code
//! that owns a [`bytes::BytesMut`]).
//!
//! # Layout
//! - [`header`]: the 45 header bytes, [`MsgType`], [`Uuid`], and [`header::check_prefix`],
//!   which judges a frame from its first 12 bytes.
//! - [`codec`]: [`FrameCodec`], bytes ⇄ [`Frame`]s with the `max_frame_len` limit; a
//!   decoded body is a zero-copy slice of the read buffer.
//! - [`layer`]: pure body functions: zlib [`layer::compress`] with a bounded inflate,
//!   AES-256-GCM [`layer::crypto`], and the X25519 / legacy [`layer::kex`].
//! - [`message`]: [`MessageCodec`], frames plus the body layers for a client or server
//!   [`Role`]; the [`message::reply`] envelope and the [`message::request`] bodies.
//! - [`address`]: [`Address`], `host:port` or `unix:/path`, as servers and clients write it.
//! - [`error`]: the one [`Error`] type; [`Error::is_fatal`] says whether the stream can go on.
//!
//! # Example
//! A client and a server talking over an in-memory duplex stream:
//! ```
//! use futures::{SinkExt, StreamExt};
//! use monitor_proto::message::reply::{self, Reply, ReportAckData};
//! use monitor_proto::{MessageCodec, MsgType, Outgoing, Role, Uuid};
//! use tokio_util::codec::Framed;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), monitor_proto::Error> {
//! let (client_io, server_io) = tokio::io::duplex(4096);
//! let mut client = Framed::new(client_io, MessageCodec::new(Role::Client));
//! let mut server = Framed::new(server_io, MessageCodec::new(Role::Server));
//! let uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
//!
//! // The client reports, compressed.
//! let report = Outgoing::new(MsgType::Report, uuid, r#"{"code":"host.health","cpu":12.5}"#);
//! client.send(report.with_compress(true)).await?;
//!
//! // The server receives it inflated, and acknowledges it.
//! let received = server.next().await.expect("a frame")?;
//! assert_eq!(received.header.msg_type, MsgType::Report);
//! assert_eq!(&received.body?[..], br#"{"code":"host.health","cpu":12.5}"#);
//! server
//!     .send(Outgoing::new(MsgType::ReportAck, received.header.uuid, reply::report_ack(0)))
//!     .await?;
//!
//! let ack = client.next().await.expect("a frame")?;
//! let ack = Reply::parse(&ack.body?)?;
//! assert_eq!(ack.data_as::<ReportAckData>()?.delivered, 0);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod address;
pub mod codec;
pub mod error;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod header;
pub mod layer;
pub mod message;

pub use address::{Address, AddressError};
pub use codec::{Builder, Frame, FrameCodec, FrameRef};
pub use error::{Error, Fault};
pub use header::{Direction, Header, MsgType, Uuid, HEADER_LEN, PREFIX_LEN, UUID_LEN};
pub use layer::crypto::SessionKey;
pub use message::request::{Report, Request, Subscribe, Token};
pub use message::topic::{TopicLimits, TopicPattern};
pub use message::{MessageCodec, Outgoing, Received, Role, Wants};
