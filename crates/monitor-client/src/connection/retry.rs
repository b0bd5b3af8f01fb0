//! Connecting until it works: the first attempt at once, then after backoff delays with
//! jitter, publishing each attempt as the client's [`Status`], and giving up at once on
//! an error that no retry will fix.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::handshake::Handshake;
use super::status::{status_channel, Status};
use super::transport::Dialer;
use super::Connection;
use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Reconnection delays: exponential from `backoff_min`, capped at `backoff_max`, each
/// drawn at random from the upper half of its range ("equal jitter").
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(cfg: &ClientConfig) -> Backoff {
        Backoff {
            min: cfg.backoff_min,
            max: cfg.backoff_max,
            failures: 0,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        let floor = ceiling / 2;
        if ceiling <= floor {
            return ceiling;
        }
        rand::thread_rng().gen_range(floor..=ceiling)
    }
}

/// Errors that no retry will fix: give up at once.
fn is_permanent(e: &Error) -> bool {
    matches!(
        e,
        Error::SubscribeRefused { .. }
            | Error::KeyExchange { .. }
            | Error::Unauthorized { .. }
            | Error::Tls { .. }
            | Error::TlsFile { .. }
            | Error::Config { .. }
            | Error::BadAddress(_)
    )
}

/// A client's first connection, waited for (retried per the config, with nothing to stop
/// it but `max_attempts`), and the status channel it then publishes on, already saying
/// `Connected { connections: 1 }`.
///
/// # Errors
/// As [`connect_with_retry`], never [`Error::Closed`].
pub(crate) async fn connect_first(
    cfg: &ClientConfig,
    dialer: &Dialer,
    handshake: &Handshake,
) -> Result<(Connection, watch::Sender<Status>)> {
    let status = status_channel();
    let (conn, _) = connect_with_retry(
        cfg,
        dialer,
        handshake,
        &status,
        false,
        std::future::pending(),
    )
    .await?;
    status.send_replace(Status::Connected { connections: 1 });
    Ok((conn, status))
}

/// Connects with retries: the first attempt at once unless `delay_first`, then after
/// backoff delays, until one succeeds, `max_attempts` fail in a row, a permanent error
/// occurs, or `stop` completes (then [`Error::Closed`]). Publishes `Connecting` on
/// `status`. Returns the connection and the attempts it took.
pub(crate) async fn connect_with_retry(
    cfg: &ClientConfig,
    dialer: &Dialer,
    handshake: &Handshake,
    status: &watch::Sender<Status>,
    delay_first: bool,
    stop: impl Future<Output = ()>,
) -> Result<(Connection, u32)> {
    tokio::pin!(stop);
    let mut backoff = Backoff::new(cfg);
    let mut last_error: Option<String> = None;
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        if attempt > 1 || delay_first {
            let delay = backoff.next_delay();
            debug!(
                ?delay,
                attempt, "waiting before the next connection attempt"
            );
            tokio::select! {
                () = &mut stop => return Err(Error::Closed),
                () = tokio::time::sleep(delay) => {}
            }
        }
        status.send_replace(Status::Connecting {
            attempt,
            last_error: last_error.clone(),
        });
        let result = tokio::select! {
            () = &mut stop => return Err(Error::Closed),
            result = Connection::establish(cfg, dialer, handshake) => result,
        };
        match result {
            Ok(conn) => {
                info!(server = %cfg.server, attempt, "connected");
                return Ok((conn, attempt));
            }
            Err(e) if is_permanent(&e) => {
                warn!(server = %cfg.server, error = %e, "giving up: this will not succeed on retry");
                return Err(e);
            }
            Err(e) => {
                if cfg.max_attempts.is_some_and(|max| attempt >= max) {
                    warn!(server = %cfg.server, attempt, error = %e, "giving up");
                    return Err(Error::Unreachable {
                        attempts: attempt,
                        last_error: e.to_string(),
                    });
                }
                warn!(server = %cfg.server, attempt, error = %e, "connection attempt failed; retrying");
                last_error = Some(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut cfg = ClientConfig::new("127.0.0.1:1".parse().unwrap());
        cfg.backoff_min = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(1000);
        let mut b = Backoff::new(&cfg);
        let ceilings = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for ceiling in ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(d <= ceiling && d >= ceiling / 2, "{d:?} vs {ceiling:?}");
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= cfg.backoff_max);
        }
    }
}
