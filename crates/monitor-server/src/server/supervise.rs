//! Supervised tasks: a background task that panics is logged and shuts the server down in
//! order, and the reason is kept for `ServerHandle::failure`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::error;

use crate::state::Shared;

/// Runs `task` as its own tokio task and waits for it; a panic is logged and cancels
/// `token` (the server's shutdown).
pub(super) async fn supervised<F>(
    name: &'static str,
    task: F,
    shared: Arc<Shared>,
    token: CancellationToken,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    watch(
        name,
        AbortOnDropHandle::new(tokio::spawn(task)),
        shared,
        token,
    )
    .await;
}

/// Waits for a task; a panic is logged and cancels `token` (the server's shutdown).
/// Dropping the wait aborts the task.
pub(super) async fn watch(
    name: &'static str,
    task: AbortOnDropHandle<()>,
    shared: Arc<Shared>,
    token: CancellationToken,
) {
    if let Err(e) = task.await {
        if e.is_panic() {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            error!(task = name, panic = %message, "background task panicked: shutting down");
            shared
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| format!("{name} panicked: {message}"));
            token.cancel();
        }
    }
}
