//! Logging that never stops the server: a log line that cannot be written (stderr is a
//! closed pipe, a full disk) is dropped and counted, and nothing else happens.
//!
//! tracing-subscriber's `fmt` layer reports a failed write with `eprintln!`, which panics
//! when stderr itself is what failed; the task that logged (the signal handler, say) then
//! dies and the server serves on without it. So the writer here swallows errors, and the
//! layer's own error reports are off.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing_subscriber::fmt::MakeWriter;

static LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines that could not be written since the process started.
pub fn lines_dropped() -> u64 {
    LINES_DROPPED.load(Relaxed)
}

/// A [`MakeWriter`] for stderr whose writes never fail: what cannot be written is
/// dropped and counted in [`lines_dropped`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BestEffortStderr;

/// One log line's writer (see [`BestEffortStderr`]).
#[derive(Debug)]
pub struct BestEffortWriter {
    failed: bool,
}

impl Write for BestEffortWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.failed && io::stderr().write_all(buf).is_err() {
            self.failed = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.failed && io::stderr().flush().is_err() {
            self.failed = true;
        }
        Ok(())
    }
}

impl Drop for BestEffortWriter {
    fn drop(&mut self) {
        if self.failed {
            LINES_DROPPED.fetch_add(1, Relaxed);
        }
    }
}

impl<'a> MakeWriter<'a> for BestEffortStderr {
    type Writer = BestEffortWriter;

    fn make_writer(&'a self) -> BestEffortWriter {
        BestEffortWriter { failed: false }
    }
}

/// Installs the process's logger: `RUST_LOG` (default `info`) to stderr, best effort, as
/// text (coloured only on a terminal, never under `NO_COLOR`) or as one JSON object per
/// line; and a panic hook that logs the panic through it (so a panic is a log line, not a
/// write that can fail again).
pub fn init(format: crate::config::LogFormat) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let installed = match format {
        crate::config::LogFormat::Text => {
            let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && io::IsTerminal::is_terminal(&io::stderr());
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(BestEffortStderr)
                .log_internal_errors(false)
                .with_ansi(color)
                .try_init()
        }
        crate::config::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter())
            .with_writer(BestEffortStderr)
            .log_internal_errors(false)
            .try_init(),
    };
    if installed.is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            tracing::error!(thread = thread.name().unwrap_or("?"), "panic: {info}");
        }));
    }
}

/// Writes a line to stderr for a person (a usage error, say); a failure is ignored like a
/// log line's.
pub fn say(line: &str) {
    let mut w = BestEffortWriter { failed: false };
    let _ = writeln!(w, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_reports_success_and_is_counted_once_per_line() {
        let before = lines_dropped();
        let mut w = BestEffortWriter { failed: true };
        assert_eq!(w.write(b"lost line\n").unwrap(), 10);
        assert!(w.flush().is_ok());
        drop(w);
        assert_eq!(lines_dropped(), before + 1);
    }
}
