//! `monitor-client`: see [`monitor_cli::cli`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

fn main() -> std::process::ExitCode {
    monitor_cli::cli::main()
}
