//! The server-wide budget of bytes held in incomplete large frames (`max_buffered_bytes`).
//!
//! Without it, `max_connections × max_frame_len` (about 100 GiB by default) is all that
//! bounds what clients can make the server buffer by sending large frames slowly. A
//! connection takes a frame's whole length from the budget before it reads the frame, and
//! gives it back once the frame is decoded (or the connection is gone); when the budget is
//! spent, it stops reading until another connection gives some back, which is TCP
//! backpressure for its client: nothing is lost. Frames up to
//! [`SMALL_FRAME_LEN`](crate::config::SMALL_FRAME_LEN) never come here, so ordinary
//! clients never wait.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// Bytes that connections may hold in large partial frames, all together.
#[derive(Debug)]
pub struct ByteBudget {
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Debug)]
struct State {
    used: usize,
    limit: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget {
            state: Mutex::new(State { used: 0, limit }),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each critical section is an addition or a comparison: never half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` if that many are left; `false` (and nothing taken) if not.
    pub fn try_take(&self, bytes: usize) -> bool {
        let mut state = self.lock();
        match state.used.checked_add(bytes) {
            Some(used) if used <= state.limit => {
                state.used = used;
                true
            }
            _ => false,
        }
    }

    /// Gives back bytes taken with [`ByteBudget::try_take`], and wakes the connections
    /// waiting for some.
    pub fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        {
            let mut state = self.lock();
            state.used = state.used.saturating_sub(bytes);
        }
        self.freed.notify_waiters();
    }

    /// Waits until `bytes` could be taken, then takes them. Cancel-safe: dropped before it
    /// completes, it has taken nothing.
    pub async fn take(&self, bytes: usize) {
        loop {
            // Registered before checking, so a give-back between the check and the wait
            // is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(bytes) {
                return;
            }
            freed.await;
        }
    }

    /// Changes the limit (a configuration reload). Bytes already taken stay taken; a
    /// lower limit is enforced as they are given back.
    pub fn set_limit(&self, limit: usize) {
        let raised = {
            let mut state = self.lock();
            let raised = limit > state.limit;
            state.limit = limit;
            raised
        };
        if raised {
            self.freed.notify_waiters();
        }
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn takes_up_to_the_limit_and_no_more() {
        let b = ByteBudget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(41));
        assert!(b.try_take(40));
        assert!(!b.try_take(1));
        assert!(!b.try_take(usize::MAX), "no overflow");
        b.give_back(60);
        assert_eq!(b.used(), 40);
        b.set_limit(30);
        assert!(!b.try_take(1), "a lower limit holds as bytes come back");
        b.give_back(40);
        assert!(b.try_take(30));
    }

    #[tokio::test]
    async fn a_waiter_takes_what_is_given_back() {
        let b = Arc::new(ByteBudget::new(100));
        assert!(b.try_take(100));
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.take(70).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.give_back(50);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "50 free is not 70");
        b.give_back(50);
        waiter.await.unwrap();
        assert_eq!(b.used(), 70);
    }

    #[tokio::test]
    async fn raising_the_limit_wakes_waiters() {
        let b = Arc::new(ByteBudget::new(10));
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.take(20).await }
        });
        tokio::task::yield_now().await;
        b.set_limit(20);
        waiter.await.unwrap();
        assert_eq!(b.used(), 20);
    }
}
