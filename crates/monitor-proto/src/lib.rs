//! The wire format of the monitor push/report protocol, version 1.
//!
//! Hosts *report* their health to a server, and *push receivers* subscribe and get every
//! matching report. Each message is a frame: a 45-byte header (version, type, cipher and
//! compress flags, length, header CRC, a 33-byte client uuid) followed by a JSON body that
//! may be zlib-compressed and AES-256-GCM-encrypted. `docs/protocol.md` describes it all.
//!
//! This crate has no runtime: its codecs plug into [`tokio_util::codec::Framed`] (or any
//! code that owns a [`bytes::BytesMut`]).
//!
//! # Which codec
//! - A client: [`ClientCodec`]. It sends [`ClientMessage`]s (requests), and receives
//!   replies and pushes as [`Received`], decrypted with the session key it holds in a
//!   [`KeySlot`] (shared by its clones, so a split connection has one key).
//! - A server: [`ServerCodec`]. It receives requests as [`Received`], and sends
//!   [`ServerMessage`]s (replies and pushes), or one [`SharedBody`] to many
//!   [`Recipient`]s ([`ServerCodec::encode_shared`]), compressed and encrypted by the
//!   protocol's rules.
//! - Frames with their bodies untouched (a relay, a load generator): [`FrameCodec`].
//!
//! Each has a `builder()` whose setters each change one limit (as tokio-util's
//! `length_delimited::Builder`), and `new_codec()` / `new_framed(io)`.
//!
//! # Errors
//! [`Error`] is what ends a stream (a bad header, the peer closing mid-frame, the
//! transport failing), or what stops one message from being sent (nothing is written
//! then). [`BodyError`] is what spoils one body and leaves the stream going: a decoder
//! hands it out in [`Received::body`], next to the header that says how to answer.
//! [`Error::fault`] and [`BodyError::fault`] say whose fault it was ([`Fault`]).
//!
//! # Layout
//! Each module looks only down this list, never up.
//! - [`error`]: [`Error`], [`BodyError`], [`Fault`], [`Initiator`].
//! - [`header`]: the 45 header bytes: [`Header`], [`MsgType`], [`Uuid`],
//!   [`Direction`](header::Direction).
//! - [`codec`]: [`FrameCodec`], bytes ⇄ [`Frame`]s within `max_frame_len`; a decoded
//!   body is a zero-copy slice of the read buffer.
//! - [`layer`]: pure body functions: zlib [`layer::compress`] with a bounded inflate,
//!   AES-256-GCM [`layer::crypto`] ([`SessionKey`]), and the X25519 / legacy
//!   [`layer::kex`].
//! - [`message`]: the client and server codecs (frames plus body layers), the
//!   [`message::request`] and [`message::reply`] bodies, and [`message::topic`] patterns.
//! - [`address`]: [`Address`], `host:port` or `unix:/path`, as servers and clients write it.
//!
//! # Features
//! - `fuzzing`: the entry points of the cargo-fuzz targets in `fuzz/`
//!   (`monitor_proto::fuzz_harness`). Not part of the stable API.
//!
//! # Example
//! A client and a server talking over an in-memory duplex stream:
//! ```
//! use futures::{SinkExt, StreamExt};
//! use monitor_proto::message::reply::{self, Reply, ReportAckData};
//! use monitor_proto::{ClientCodec, ClientMessage, MsgType, ServerCodec, ServerMessage, Uuid};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client_io, server_io) = tokio::io::duplex(4096);
//! let mut client = ClientCodec::builder().new_framed(client_io);
//! let mut server = ServerCodec::builder().new_framed(server_io);
//! let uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
//!
//! // The client reports, compressed.
//! let report = ClientMessage::new(MsgType::Report, uuid, r#"{"code":"host.health","cpu":12.5}"#);
//! client.send(report.compress(true)).await?;
//!
//! // The server receives it inflated, and acknowledges it.
//! let received = server.next().await.expect("a frame")?;
//! assert_eq!(received.header.msg_type, MsgType::Report);
//! assert_eq!(&received.body?[..], br#"{"code":"host.health","cpu":12.5}"#);
//! let ack = ServerMessage::new(MsgType::ReportAck, received.header.uuid, reply::report_ack(0));
//! server.send(ack).await?;
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

// In layer order: each module imports only from those above it here.
mod msg_type;

pub mod error;

pub mod header;

pub mod codec;

pub mod layer;

pub mod message;

pub mod address;

#[cfg(feature = "fuzzing")]
pub mod fuzz_harness;

pub use address::Address;
pub use codec::{Frame, FrameCodec};
pub use error::{BodyError, Error, Fault, Initiator};
pub use header::{Header, MsgType, Uuid, HEADER_LEN};
pub use layer::crypto::SessionKey;
pub use message::request::Request;
pub use message::{
    ClientCodec, ClientMessage, KeySlot, Received, Recipient, ServerCodec, ServerMessage,
    SharedBody,
};
