//! The `monitor-client` binary run with its output captured, with monitor-test-support's
//! server per test and client configs with short timings.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

// What every crate's tests share: the in-process server, client configs with short
// timings, the next push within a deadline.
pub use monitor_test_support::client::{config, next_push};
pub use monitor_test_support::{TestServer, WAIT};

/// The binary, logging warnings only, its output piped.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_monitor-client"));
    // A token in the developer's environment must not leak into the tests.
    cmd.env("RUST_LOG", "warn")
        .env_remove("MONITOR_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// What a finished command left.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` to its end (within 60 s).
pub async fn run(args: &[&str]) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(60), bin().args(args).output())
        .await
        .expect("the command finished in time")
        .expect("the command ran");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The first line of `stdout`, parsed as JSON.
pub fn json_line(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().next().expect("a line on stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}
