//! The exit codes, and how a command ends: a usage error (2) with its message on stderr,
//! a runtime failure (1) logged, and its output, one line at a time on stdout.

use std::io::Write;

use tracing::error;

/// Success.
pub const EXIT_OK: u8 = 0;
/// A runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// A usage error.
pub const EXIT_USAGE: u8 = 2;

pub(super) fn usage(msg: &str) -> u8 {
    eprintln!("monitor-client: {msg}");
    EXIT_USAGE
}

pub(super) fn failure(e: &dyn std::fmt::Display) -> u8 {
    error!(error = %e, "failed");
    EXIT_FAILURE
}

/// Writes one line to stdout and flushes it; `false` if stdout is gone (e.g. a closed
/// pipe), which ends the command quietly.
pub(super) fn print_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}
