//! One subscriber's bounded queue of pushes, and the shared push body it holds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use monitor_proto::message::reply;
use monitor_proto::SharedBody;

/// One report's push body, shared by all its recipients: a [`SharedBody`] (the plaintext
/// envelope, and its zlib form made at most once), which each subscriber's connection
/// encodes with `ServerCodec::encode_shared`.
#[derive(Debug)]
pub struct Push {
    body: SharedBody,
    /// When the report arrived (for the sampled latency of `/metrics`).
    arrived: tokio::time::Instant,
    /// The report as WebSocket subscribers get it, made by the first of them.
    report_text: OnceLock<Option<Utf8Bytes>>,
}

impl Push {
    /// The push body of `report`: `{"errCode":0,"msg":"success","data":<report as sent>}`.
    pub fn new(report: &[u8]) -> Push {
        Push {
            body: SharedBody::new(reply::push(report)),
            arrived: tokio::time::Instant::now(),
            report_text: OnceLock::new(),
        }
    }

    /// When the report arrived.
    pub fn arrived(&self) -> tokio::time::Instant {
        self.arrived
    }

    /// The shared body, as the codec encodes it.
    pub fn body(&self) -> &SharedBody {
        &self.body
    }

    /// The plaintext push body.
    pub fn json(&self) -> &Bytes {
        self.body.json()
    }

    /// The report as its reporter sent it: the push body without its envelope, sharing
    /// the body's bytes (what a WebSocket subscriber gets).
    pub fn report(&self) -> Bytes {
        let json = self.json();
        let start = reply::SUCCESS_PREFIX.len();
        if json.len() <= start {
            return Bytes::new();
        }
        json.slice(start..json.len() - 1)
    }

    /// [`Push::report`] as a WebSocket text message: checked as UTF-8 once for all the
    /// report's WebSocket subscribers (the type's only safe constructor checks), sharing
    /// the body's bytes. `None` if it is not UTF-8, which a parsed report always is.
    pub fn report_text(&self) -> Option<&Utf8Bytes> {
        self.report_text
            .get_or_init(|| Utf8Bytes::try_from(self.report()).ok())
            .as_ref()
    }

    /// Whether the zlib form has been made yet.
    #[cfg(test)]
    pub(crate) fn has_compressed(&self) -> bool {
        self.body.has_compressed()
    }

    /// The zlib form of the body, made on first use and then shared.
    pub fn compressed(&self) -> &Bytes {
        self.body.compressed()
    }
}

/// Why [`PushQueue::try_push`] refused a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The subscriber has as many pushes, or as many bytes of them, unwritten as its queue
    /// allows.
    Full,
    /// The queue was closed (the connection is gone, or it was evicted).
    Closed,
}

/// The consumer's side of a queue: pushes taken and not yet written, oldest first, and
/// their bytes. They still count against the queue's limits until they leave the batch.
#[derive(Debug, Default)]
pub struct Batch {
    pushes: VecDeque<Arc<Push>>,
    bytes: usize,
}

impl Batch {
    /// The oldest push, which leaves the batch (and stops counting against the limits at
    /// the next take).
    pub fn pop_front(&mut self) -> Option<Arc<Push>> {
        let push = self.pushes.pop_front()?;
        self.bytes -= push.json().len();
        Some(push)
    }

    /// The oldest push, without taking it.
    pub fn front(&self) -> Option<&Arc<Push>> {
        self.pushes.front()
    }

    /// Pushes in the batch.
    pub fn len(&self) -> usize {
        self.pushes.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.pushes.is_empty()
    }

    /// Bytes of push bodies in the batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Releases the batch's buffer if it is empty and holds room for more than `keep`
    /// pushes, so that a burst does not pin its buffer for the connection's life.
    pub fn shrink(&mut self, keep: usize) {
        if self.pushes.is_empty() && self.pushes.capacity() > keep {
            self.pushes = VecDeque::new();
        }
    }
}

/// One subscriber's bounded queue of pushes: many publishers, one consumer (its
/// connection task). It is bounded both in pushes and in bytes (NATS's `max_pending`,
/// Centrifugo's `client_queue_max_size`): a subscriber that stops reading holds at most
/// its byte bound plus one push, however large the reports.
///
/// It is a mutex around a `VecDeque` and a waker, rather than a channel, because an idle
/// subscriber should cost almost nothing: about 100 bytes and no allocation until the first
/// push, where a general-purpose channel preallocates a block and cache-padded state. The
/// consumer takes everything queued in one lock (by swapping buffers), so a burst costs one
/// lock and at most one wake-up on its side.
#[derive(Debug)]
pub struct PushQueue {
    state: Mutex<QueueState>,
    capacity: usize,
    capacity_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Arc<Push>>,
    /// Bytes of the push bodies in `items`.
    bytes: usize,
    /// Pushes the consumer has taken but not yet written, and their bytes; they count
    /// against the limits.
    taken: usize,
    taken_bytes: usize,
    /// Pushes refused because the queue was full.
    dropped: u64,
    waker: Option<Waker>,
    closed: bool,
}

/// What a queue holds now (see [`PushQueue::depth`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Pushes queued or taken and not yet written.
    pub pushes: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Pushes refused since the queue was made, because it was full.
    pub dropped: u64,
}

impl PushQueue {
    /// A queue that holds at most `capacity` unwritten pushes, of any size.
    pub fn new(capacity: usize) -> Arc<PushQueue> {
        PushQueue::bounded(capacity, usize::MAX)
    }

    /// A queue that holds at most `capacity` unwritten pushes and, but for one push taken
    /// when it is empty, at most `capacity_bytes` bytes of their bodies.
    pub fn bounded(capacity: usize, capacity_bytes: usize) -> Arc<PushQueue> {
        Arc::new(PushQueue {
            state: Mutex::new(QueueState::default()),
            capacity,
            capacity_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every critical section is a few field updates that cannot panic halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a push without waiting. If the consumer was waiting, returns its waker,
    /// which the caller must wake, once it has queued everything it has for now: a
    /// reporter that read several reports in one go wakes each subscriber once, so each
    /// one writes them all in one syscall instead of racing to write the first.
    ///
    /// # Errors
    /// [`PushError::Full`] or [`PushError::Closed`]; the push is not queued.
    pub fn try_push(&self, push: &Arc<Push>) -> Result<Option<Waker>, PushError> {
        let size = push.json().len();
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        let pushes = state.items.len() + state.taken;
        let bytes = state.bytes + state.taken_bytes;
        // An empty queue takes any one push, so a report larger than the byte bound
        // still reaches a subscriber that keeps up.
        if pushes >= self.capacity
            || (pushes > 0 && bytes.saturating_add(size) > self.capacity_bytes)
        {
            state.dropped += 1;
            return Err(PushError::Full);
        }
        state.items.push_back(Arc::clone(push));
        state.bytes += size;
        Ok(state.waker.take())
    }

    /// Closes the queue: pushes are refused, and the consumer sees the end once it has
    /// taken what was queued. Returns whether this call closed it (false if it already
    /// was), in the same lock, so that of several callers exactly one sees `true`.
    pub fn close(&self) -> bool {
        let (was_open, waker) = {
            let mut state = self.lock();
            let was_open = !std::mem::replace(&mut state.closed, true);
            (was_open, state.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        was_open
    }

    /// Closes the queue and drops the pushes still in it, for when its consumer is gone
    /// or has subscribed again: a publisher's snapshot may keep the queue itself a little
    /// longer, but not them.
    pub fn discard(&self) {
        let unwritten = {
            let mut state = self.lock();
            state.closed = true;
            state.waker = None;
            state.bytes = 0;
            std::mem::take(&mut state.items)
        };
        drop(unwritten);
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// What the queue holds now, counting what its consumer has taken and not written.
    pub fn depth(&self) -> QueueDepth {
        let state = self.lock();
        QueueDepth {
            pushes: state.items.len() + state.taken,
            bytes: state.bytes + state.taken_bytes,
            dropped: state.dropped,
        }
    }

    /// Consumer side: appends everything queued to `batch`, the consumer's unwritten
    /// pushes (what is in it still counts against the limits). Ready with `true`
    /// when `batch` has pushes, `false` when the queue is closed and drained; pending
    /// (with the waker registered) when there is nothing to do.
    pub fn poll_take(&self, cx: &mut Context<'_>, batch: &mut Batch) -> Poll<bool> {
        let mut state = self.lock();
        Self::move_into(&mut state, batch);
        if !batch.is_empty() {
            return Poll::Ready(true);
        }
        if state.closed {
            return Poll::Ready(false);
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Consumer side, without waiting: like [`PushQueue::poll_take`].
    pub fn take_now(&self, batch: &mut Batch) {
        Self::move_into(&mut self.lock(), batch);
    }

    fn move_into(state: &mut QueueState, batch: &mut Batch) {
        if batch.pushes.is_empty() {
            // O(1), and the consumer's spent buffer becomes the queue's next one.
            std::mem::swap(&mut state.items, &mut batch.pushes);
        } else {
            batch.pushes.extend(state.items.drain(..));
        }
        batch.bytes += std::mem::take(&mut state.bytes);
        state.taken = batch.pushes.len();
        state.taken_bytes = batch.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_pushes_count_until_written_and_order_holds() {
        let q = PushQueue::new(3);
        let pushes: Vec<_> = (0..5)
            .map(|i| Arc::new(Push::new(format!("{{\"n\":{i}}}").as_bytes())))
            .collect();
        for p in &pushes[..3] {
            q.try_push(p).unwrap();
        }
        assert_eq!(q.try_push(&pushes[3]).err(), Some(PushError::Full));
        let mut batch = Batch::default();
        q.take_now(&mut batch);
        assert_eq!(batch.len(), 3);
        assert_eq!(
            q.try_push(&pushes[3]).err(),
            Some(PushError::Full),
            "taken but unwritten still counts"
        );
        batch.pop_front();
        q.take_now(&mut batch);
        q.try_push(&pushes[3]).unwrap();
        q.take_now(&mut batch);
        let order: Vec<_> = batch.pushes.iter().map(|p| p.json().clone()).collect();
        let want: Vec<_> = pushes[1..4].iter().map(|p| p.json().clone()).collect();
        assert_eq!(order, want);
        q.close();
        assert_eq!(q.try_push(&pushes[4]).err(), Some(PushError::Closed));
    }

    #[test]
    fn bytes_are_bounded_taken_ones_included_and_an_empty_queue_takes_any_push() {
        let push = |n: usize| Arc::new(Push::new(format!("\"{}\"", "x".repeat(n)).as_bytes()));
        // Bodies are the envelope (37 bytes) + the report; reports of 63 bytes make 100.
        let hundred = push(61);
        assert_eq!(hundred.json().len(), 100);
        let q = PushQueue::bounded(100, 250);
        q.try_push(&hundred).unwrap();
        q.try_push(&hundred).unwrap();
        assert_eq!(
            q.try_push(&hundred).err(),
            Some(PushError::Full),
            "300 > 250"
        );
        assert_eq!(
            q.depth(),
            QueueDepth {
                pushes: 2,
                bytes: 200,
                dropped: 1,
            }
        );
        let mut batch = Batch::default();
        q.take_now(&mut batch);
        assert_eq!(batch.bytes(), 200);
        assert_eq!(
            q.try_push(&hundred).err(),
            Some(PushError::Full),
            "taken bytes count"
        );
        batch.pop_front();
        q.take_now(&mut batch);
        q.try_push(&hundred).unwrap();
        assert_eq!(
            q.depth(),
            QueueDepth {
                pushes: 2,
                bytes: 200,
                dropped: 2,
            }
        );
        while batch.pop_front().is_some() {}
        q.take_now(&mut batch);
        while batch.pop_front().is_some() {}
        q.take_now(&mut batch);
        assert_eq!(q.depth().pushes + q.depth().bytes, 0);
        // Larger than the whole bound: taken only by an empty queue.
        let big = push(1000);
        q.try_push(&big).unwrap();
        assert_eq!(q.try_push(&hundred).err(), Some(PushError::Full));
        q.discard();
        assert_eq!(
            q.depth(),
            QueueDepth {
                pushes: 0,
                bytes: 0,
                dropped: 3,
            }
        );
    }

    #[test]
    fn a_waiting_consumer_is_woken() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let q = PushQueue::new(8);
        let mut batch = Batch::default();
        assert!(q.poll_take(&mut cx, &mut batch).is_pending());
        let waker = q.try_push(&Arc::new(Push::new(b"{}"))).unwrap();
        assert!(
            !flag.0.load(std::sync::atomic::Ordering::SeqCst),
            "woken by the caller"
        );
        waker.expect("the consumer was waiting").wake();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            q.try_push(&Arc::new(Push::new(b"{}"))).unwrap().map(drop),
            None,
            "once"
        );
        assert_eq!(q.poll_take(&mut cx, &mut batch), Poll::Ready(true));
        while batch.pop_front().is_some() {}
        q.close();
        assert_eq!(q.poll_take(&mut cx, &mut batch), Poll::Ready(false));
    }
}
