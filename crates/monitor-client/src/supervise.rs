//! Supervision of the clients' background tasks.
//!
//! A task that panics, or that is dropped before it finishes (its Tokio runtime shut
//! down), closes the channels its handles read from. Unsupervised, that looks like a clean
//! end: the receiver's stream just stops, a report's outcome is `Closed`. [`supervise`]
//! catches the panic (or notices the drop), and records why in a [`TaskFailure`] *before*
//! those channels close, so the handles can turn the closed channel into
//! [`Error::BackgroundTask`] carrying the panic message.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::watch;

use crate::error::Error;

/// Where a supervised task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Running,
    /// It returned: every handle was told how it ended (or none was left).
    Finished,
    /// It panicked or was dropped unfinished, for this reason.
    Failed(String),
}

/// Why a background task stopped before it was done, as its handles read it when they
/// find its channel closed. Written by the task's [`Supervisor`].
#[derive(Debug)]
pub(crate) struct TaskFailure {
    task: &'static str,
    end: watch::Receiver<End>,
}

/// The writing side of a [`TaskFailure`], owned by the supervised task. Dropped before it
/// has recorded an end (the task was dropped unfinished, even before its first poll), it
/// records that as the failure.
#[derive(Debug)]
pub(crate) struct Supervisor {
    task: &'static str,
    end: watch::Sender<End>,
}

/// A supervisor for the task of a `"push receiver"` or a `"reporter"`, and what its handles
/// read.
pub(crate) fn supervisor(task: &'static str) -> (Supervisor, Arc<TaskFailure>) {
    let (end, rx) = watch::channel(End::Running);
    (
        Supervisor { task, end },
        Arc::new(TaskFailure { task, end: rx }),
    )
}

impl TaskFailure {
    /// The error the handles return, once the task has failed.
    pub(crate) fn error(&self) -> Option<Error> {
        match &*self.end.borrow() {
            End::Failed(reason) => Some(self.failed(reason.clone())),
            End::Running | End::Finished => None,
        }
    }

    /// For a handle whose answer was dropped unsent, which only a failed task does: waits
    /// until the supervisor has recorded why (a dropped answer can be seen a moment before
    /// that, while the panic unwinds), and returns it.
    pub(crate) async fn why(&self) -> Error {
        let mut end = self.end.clone();
        // Err only once the supervisor is gone, and it records an end before it goes.
        let _ = end.wait_for(|e| *e != End::Running).await;
        self.error()
            .unwrap_or_else(|| self.failed("it ended without answering".into()))
    }

    fn failed(&self, reason: String) -> Error {
        Error::BackgroundTask {
            task: self.task,
            reason,
        }
    }
}

impl Supervisor {
    /// Records how the task ended; only the first end counts.
    fn finish(&self, end: End) {
        self.end.send_if_modified(|now| {
            let first = *now == End::Running;
            if first {
                *now = end;
            }
            first
        });
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let reason = if std::thread::panicking() {
            // Not through `supervise`, which catches the panic and keeps its message.
            "it panicked"
        } else {
            "it was dropped before it finished (its Tokio runtime shut down)"
        };
        self.finish(End::Failed(reason.into()));
    }
}

/// Awaits `body`, the work of a background task, and says whether it failed: a panic in
/// it is caught, and so is this future being dropped before `body` finished (then the
/// `supervisor`, dropped with it, records that). Either way the reason is recorded before
/// this returns or finishes dropping, so what the caller drops afterwards (the channels
/// its handles read) closes only once the reason can be read.
///
/// # Errors
/// [`Error::BackgroundTask`] if `body` panicked: the caller hands it to whoever still waits.
pub(crate) async fn supervise(
    supervisor: Supervisor,
    body: impl Future<Output = ()>,
) -> Result<(), Error> {
    // Nothing of `body` is touched after a panic: only the supervisor and what the caller
    // owns.
    match AssertUnwindSafe(body).catch_unwind().await {
        Ok(()) => {
            supervisor.finish(End::Finished);
            Ok(())
        }
        Err(payload) => {
            let reason = format!("it panicked: {}", panic_message(payload.as_ref()));
            supervisor.finish(End::Failed(reason.clone()));
            Err(Error::BackgroundTask {
                task: supervisor.task,
                reason,
            })
        }
    }
}

/// The text of a panic (`panic!("…")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_recorded_with_its_message() {
        let (supervisor, failure) = supervisor("reporter");
        assert!(failure.error().is_none());
        let outcome = supervise(supervisor, async { panic!("boom {}", 42) }).await;
        let Err(Error::BackgroundTask { task, reason }) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            (task, reason.as_str()),
            ("reporter", "it panicked: boom 42")
        );
        assert_eq!(
            failure.error().map(|e| e.to_string()).as_deref(),
            Some("the reporter's background task stopped: it panicked: boom 42")
        );
    }

    #[tokio::test]
    async fn a_clean_end_is_no_failure() {
        let (supervisor, failure) = supervisor("reporter");
        supervise(supervisor, async {}).await.unwrap();
        assert!(failure.error().is_none());
        assert!(failure
            .why()
            .await
            .to_string()
            .contains("without answering"));
    }

    #[test]
    fn dropped_unfinished_is_a_failure() {
        for polled in [false, true] {
            let (supervisor, failure) = supervisor("push receiver");
            let mut task = Box::pin(supervise(supervisor, std::future::pending()));
            if polled {
                assert!((&mut task).now_or_never().is_none());
            }
            assert!(failure.error().is_none());
            drop(task);
            let reason = failure.error().unwrap().to_string();
            assert!(reason.contains("dropped before it finished"), "{reason}");
        }
    }

    /// A handle that sees its answer dropped before the supervisor recorded why waits
    /// for the reason instead of reporting a bare close.
    #[tokio::test]
    async fn why_waits_for_the_reason() {
        let (supervisor, failure) = supervisor("reporter");
        let waiter = tokio::spawn(async move { failure.why().await.to_string() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        supervisor.finish(End::Failed("it panicked: late".into()));
        assert!(waiter.await.unwrap().ends_with("it panicked: late"));
    }
}
