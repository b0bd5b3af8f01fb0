//! Waiting on observable state within a deadline.

use std::future::Future;
use std::time::Duration;

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often [`eventually`] and [`eventually_async`] look again.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `check` holds, polling, within [`WAIT`]; fails the test with `what` if it
/// does not.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    eventually_async(what, || std::future::ready(check())).await;
}

/// Waits until the asynchronous `check` holds, polling, within [`WAIT`]; fails the test
/// with `what` if it does not.
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
