//! A connection's read side: the bytes read are decoded into requests, each handled and
//! its answer encoded at once, in order; an incomplete frame starts the frame clock, and
//! a large one takes its length from the server-wide byte budget before more of it is
//! read.

use bytes::BytesMut;
use monitor_proto::codec::WRITE_HIGH_WATER;
use monitor_proto::message::reply;
use monitor_proto::{BodyError, Error as ProtoError, Header, MsgType, Received, ServerMessage};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tracing::{debug, warn};

use super::close::Close;
use super::Conn;
use crate::cmd::{self, Answer, Ctx};
use crate::config::SMALL_FRAME_LEN;
use crate::stats::{ProtocolErrorKind, Stats};

impl Conn {
    /// Decodes and handles the buffered frames, until the write buffer is over
    /// [`WRITE_HIGH_WATER`]: the rest wait in the read buffer until the peer has read
    /// enough (see the top of [`Conn::run`]), so one read full of requests cannot grow
    /// the replies past the bound. A large frame that is not complete asks for its share
    /// of the budget before more of it is read.
    pub(super) fn on_read(&mut self) {
        self.refresh_settings();
        let before = self.frames_in;
        while self.closing.is_none() && self.out.len() < WRITE_HIGH_WATER {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(received)) => {
                    self.frames_in += 1;
                    self.frame_done();
                    self.handle(received);
                }
                Ok(None) => {
                    self.frame_incomplete(before);
                    break;
                }
                Err(e) => {
                    self.shared
                        .stats
                        .protocol_error(ProtocolErrorKind::of_frame(&e));
                    self.closing = Some(Box::new(Close::Protocol(e)));
                    break;
                }
            }
        }
        if self.frames_in > before {
            self.last_frame = Instant::now();
        }
        // Each subscriber is woken once for all the reports of this read, and writes them
        // in one go.
        if let Some(wakes) = &mut self.wakes {
            wakes.wake_all();
        }
        // Between bursts a connection keeps no read buffer (see `ReadReady`).
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
            self.partial_since = None;
        }
    }

    /// A frame was decoded: the budget it held goes back, and a large read buffer is not
    /// kept alive by the few bytes of the next frame it may hold.
    fn frame_done(&mut self) {
        self.partial_since = None;
        if self.budget_held > 0 {
            self.shared
                .budget
                .give_back(std::mem::take(&mut self.budget_held));
            if self.rbuf.capacity() > 2 * SMALL_FRAME_LEN {
                self.rbuf = BytesMut::from(&self.rbuf[..]);
            }
        }
    }

    /// The read buffer ends in an incomplete frame: start its clock, and if it is large,
    /// take its length from the budget (or wait for it, not reading meanwhile).
    fn frame_incomplete(&mut self, frames_before: u64) {
        if self.rbuf.is_empty() {
            return;
        }
        if self.partial_since.is_none() || self.frames_in > frames_before {
            self.partial_since = Some(Instant::now());
        }
        let Some(length) = self.codec.pending_frame_len() else {
            return;
        };
        if length <= SMALL_FRAME_LEN || self.budget_held > 0 {
            return;
        }
        if self.shared.budget.try_take(length) {
            self.budget_granted(length);
        } else {
            debug!(peer = %self.entry.origin.peer, length, "frame waits for max_buffered_bytes");
            Stats::add(&self.shared.stats.budget_waits, 1);
            self.budget_wanted = length;
        }
    }

    /// The budget gave this connection `length` bytes for the frame it is reading.
    pub(super) fn budget_granted(&mut self, length: usize) {
        self.budget_wanted = 0;
        self.budget_held = length;
        self.rbuf.reserve(length.saturating_sub(self.rbuf.len()));
    }

    /// One request: its handler's answer is encoded at once, before anything else the
    /// connection sends, so replies keep the order of the requests.
    fn handle(&mut self, received: Received) {
        let Received { header, body, .. } = received;
        self.in_tally.note(header.msg_type);
        // The uuid shown for the connection: its first frame's, and then those of its key
        // requests and subscribes (reports may carry any); a lock per frame would cost.
        if self.frames_in == 1 || header.msg_type != MsgType::Report {
            self.entry.set_uuid(header.uuid);
        }
        let no_key = self.codec.session_key().is_none();
        let answer = match cmd::no_session_key(&header).filter(|_| no_key) {
            Some(refusal) => {
                let kind = ProtocolErrorKind::NoSessionKey;
                self.shared.stats.protocol_error(kind);
                refusal
            }
            None => {
                let mut ctx = Ctx {
                    shared: &self.shared,
                    settings: &self.settings,
                    session: &mut self.session,
                    entry: &self.entry,
                    wakes: self.wakes.get_or_insert_with(Box::default),
                    peer: &self.entry.origin.peer,
                };
                cmd::handle(&mut ctx, &header, body)
            }
        };
        self.send(&header, answer);
    }

    /// Encodes an answer: it mirrors the request's compress flag, and is encrypted when
    /// the answer says so. A session key it brings applies after it.
    fn send(&mut self, request: &Header, answer: Answer) {
        let Answer {
            msg_type,
            json,
            encrypt,
            key,
            ending,
        } = answer;
        let out = ServerMessage::new(msg_type, request.uuid, json)
            .compress(request.compress)
            .encrypt(encrypt);
        if let Err(e) = self.codec.encode(out, self.out.encoder()) {
            // An oversized reply, or a key with no nonce left: say so, in plaintext.
            warn!(peer = %self.entry.origin.peer, error = %e, "reply not sent");
            if let ProtoError::Body(BodyError::KeyExhausted { .. }) = e {
                self.closing.get_or_insert(Box::new(Close::KeyExhausted));
            }
            let out = ServerMessage::new(
                msg_type,
                request.uuid,
                reply::error(&format!("reply not sent: {e}")),
            );
            let _ = self.codec.encode(out, self.out.encoder());
        }
        if let Some(key) = key {
            self.codec.set_session_key(Some(key));
        }
        if let Some(ending) = ending {
            self.closing.get_or_insert(Box::new(Close::Refused(ending)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::registry::{Kind, Origin};
    use crate::state::{ConnSlot, Shared};
    use bytes::Bytes;
    use monitor_proto::{Frame, FrameCodec, Header, MsgType, Uuid, HEADER_LEN};
    use std::sync::Arc;
    use tokio_util::codec::Encoder;

    /// `count` heartbeats as one read would deliver them.
    fn heartbeats(count: usize) -> BytesMut {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for _ in 0..count {
            let header = Header::new(MsgType::Heartbeat, Uuid([b'h'; 33]));
            codec
                .encode(Frame::new(header, Bytes::new()), &mut wire)
                .unwrap();
        }
        wire
    }

    #[test]
    fn decoding_stops_at_the_write_high_water_mark_and_resumes_once_written() {
        const COUNT: usize = 50_000; // 2.2 MB of requests, several MB of replies
        let shared = Arc::new(Shared::new(
            Settings::default(),
            &crate::config::AuthConfig::default(),
            Vec::new(),
            Vec::new(),
            Arc::default(),
            None,
        ));
        let origin = Origin {
            peer: "test".into(),
            listener: "test".into(),
            kind: Kind::Tcp,
            client_cert: false,
        };
        let slot = ConnSlot::unlimited(&shared);
        let mut conn = Conn::new(shared, origin, Instant::now(), slot);
        conn.rbuf = heartbeats(COUNT);
        let largest_reply = 512;

        conn.on_read();
        assert!(conn.closing.is_none());
        assert!(
            (WRITE_HIGH_WATER..WRITE_HIGH_WATER + largest_reply).contains(&conn.out.len()),
            "write buffer {} bytes",
            conn.out.len()
        );
        let first = conn.frames_in;
        assert!(
            first > 0 && (first as usize) < COUNT,
            "{first} decoded at once"
        );

        // The peer reads everything written so far: decoding carries on from there, and
        // every request is answered exactly once, in order.
        let mut replies = 0;
        let mut client = FrameCodec::new();
        let mut rounds = 0;
        while !conn.rbuf.is_empty() {
            rounds += 1;
            assert!(rounds <= COUNT, "no progress");
            while let Some(frame) = client.decode(conn.out.encoder()).unwrap() {
                assert_eq!(frame.header.msg_type, MsgType::HeartbeatReply);
                replies += 1;
            }
            assert!(conn.out.len() < HEADER_LEN);
            conn.on_read();
            assert!(conn.out.len() < WRITE_HIGH_WATER + largest_reply);
        }
        while client.decode(conn.out.encoder()).unwrap().is_some() {
            replies += 1;
        }
        assert_eq!((conn.frames_in as usize, replies), (COUNT, COUNT));
        assert!(rounds > 1);
    }
}
