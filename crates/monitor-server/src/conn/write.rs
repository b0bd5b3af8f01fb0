//! A connection's write side: taken pushes and last words encoded into the write buffer,
//! each write of it accounted for (push latency, the batched frame counts that go to the
//! shared stats), and the bounded flushes of a closing or draining connection.

use std::io;
use std::time::Duration;

use monitor_proto::codec::WRITE_HIGH_WATER;
use monitor_proto::{BodyError, Error as ProtoError, MsgType};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

use super::close::Close;
use super::Conn;
use crate::queue::Push;
use crate::registry::Activity;
use crate::stats::{Stats, LATENCY_SAMPLE};

/// How long a closing connection may take to flush its last replies.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames counted locally before they are added to the shared stats (and at close).
const STATS_BATCH: u64 = 64;
/// Frames after which the counts go to the shared stats even while output is pending.
const STATS_FORCE: u64 = 1 << 16;
/// A drained batch buffer larger than this many pushes is released rather than kept.
const BATCH_KEEP: usize = 64;

/// One write attempt that does not wait: `None` if the socket is not writable now. The
/// loop's next turn polls the write again with the task's own waker, so that the no-op
/// waker left here is never the one the task waits on.
pub(super) fn write_now<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &[u8],
) -> Option<io::Result<usize>> {
    if buf.is_empty() {
        return None;
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(writer).poll_write(&mut cx, buf) {
        std::task::Poll::Ready(result) => Some(result),
        std::task::Poll::Pending => None,
    }
}

impl Conn {
    /// Encodes taken pushes, oldest first, until the batch is empty or the write buffer
    /// is full; the rest wait in the batch, in order.
    pub(super) fn encode_batch(&mut self) {
        if self.out.is_empty() {
            // One allocation for the batch instead of doubling up from nothing.
            let batch = &self.session.batch;
            let frame = batch
                .front()
                .map_or(0, |p| monitor_proto::HEADER_LEN + p.json().len());
            self.out.encoder().reserve(
                batch
                    .len()
                    .saturating_mul(frame)
                    .clamp(4096, WRITE_HIGH_WATER),
            );
        }
        while self.out.len() < WRITE_HIGH_WATER {
            let Some(push) = self.session.batch.pop_front() else {
                break;
            };
            self.encode_push(&push);
        }
        self.session.batch.shrink(BATCH_KEEP);
    }

    fn encode_push(&mut self, push: &Push) {
        let Some(sub) = &self.session.subscription else {
            return;
        };
        self.pushes_encoded = self.pushes_encoded.wrapping_add(1);
        if self.pushes_encoded.is_multiple_of(LATENCY_SAMPLE) {
            self.sampled = Some(push.arrived());
        }
        // The report's one body, compressed at most once for all its subscribers, copied
        // once, into the write buffer.
        if let Err(e) =
            self.codec
                .encode_shared(MsgType::Push, &sub.to, push.body(), self.out.encoder())
        {
            if let ProtoError::Body(BodyError::KeyExhausted { .. }) = e {
                // No nonce is left under this key; the client reconnects and exchanges a
                // new one.
                self.closing.get_or_insert(Box::new(Close::KeyExhausted));
            }
            Stats::add(&self.shared.stats.pushes_dropped, 1);
            debug!(peer = %self.entry.origin.peer, error = %e, "push not sent");
        }
    }

    /// Accounts for one write of the write buffer; the reason to close if it failed.
    pub(super) fn wrote(&mut self, written: io::Result<usize>) -> Option<Close> {
        match written {
            Ok(0) => Some(Close::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                self.out.advance(n);
                if self.out.is_empty() {
                    if let Some(arrived) = self.sampled.take() {
                        self.shared
                            .push_latency
                            .observe(arrived.elapsed().as_secs_f64());
                    }
                }
                // The counts go to the shared stats every STATS_BATCH frames: shared
                // counters touched by every write would bounce between cores.
                // Past STATS_FORCE they go anyway, so that a subscriber that never
                // catches up still shows, and a tally never saturates.
                let pending = self.out.tally.pending().max(self.in_tally.pending());
                if (self.out.is_empty() && pending >= STATS_BATCH) || pending >= STATS_FORCE {
                    self.flush_stats();
                }
                None
            }
            Err(e) => Some(Close::Io(e)),
        }
    }

    /// Adds this connection's frames to the server's counters, and publishes its
    /// activity in its registry entry: in batches, never per frame (see `STATS_BATCH`).
    pub(super) fn flush_stats(&mut self) {
        let stats = &self.shared.stats;
        let written = self.out.frames_written();
        self.out
            .tally
            .drain_into(&stats.frames_out_by_type, &stats.frames_out);
        self.in_tally
            .drain_into(&stats.frames_in_by_type, &stats.frames_in);
        let last_frame = (self.frames_in > 0)
            .then(|| std::time::SystemTime::now().checked_sub(self.last_frame.elapsed()))
            .flatten();
        self.entry.publish(Activity {
            frames_in: self.frames_in,
            frames_out: written,
            bytes_in: self.bytes_in,
            bytes_out: self.out.bytes_written(),
            last_frame,
        });
    }

    /// Last words (an error reply before a close) are worth a bounded wait.
    pub(super) async fn finish<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, reason: &Close) {
        let deadline = Instant::now() + CLOSE_FLUSH_TIMEOUT;
        if !matches!(reason, Close::Io(_) | Close::WriteTimeout { .. }) {
            self.write_all_until(writer, deadline).await;
        }
        let _ = tokio::time::timeout_at(deadline, writer.shutdown()).await;
    }

    /// Writes the output until it is all written, the deadline passes or the socket
    /// fails; whatever is left is counted as unsent in the close log.
    async fn write_all_until<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, deadline: Instant) {
        while !self.out.is_empty() {
            let written = tokio::time::timeout_at(deadline, writer.write(self.out.bytes())).await;
            match written {
                Ok(Ok(n)) if n > 0 => self.out.advance(n),
                _ => return,
            }
        }
    }

    /// Shutdown: stop reading, write what is already queued, bounded by the drain timeout.
    pub(super) async fn drain<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) {
        let deadline = Instant::now() + Duration::from_secs(self.settings.drain_timeout_secs);
        if let Some(sub) = &self.session.subscription {
            sub.queue.close();
            sub.queue.take_now(&mut self.session.batch);
        }
        while let Some(push) = self.session.batch.pop_front() {
            self.encode_push(&push);
            if self.out.len() >= WRITE_HIGH_WATER {
                self.write_all_until(writer, deadline).await;
                if !self.out.is_empty() {
                    return;
                }
            }
        }
        self.write_all_until(writer, deadline).await;
        let _ = tokio::time::timeout_at(deadline, writer.shutdown()).await;
    }
}
