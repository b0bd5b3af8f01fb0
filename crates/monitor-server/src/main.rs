//! `monitor-server`: see `monitor-server --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    monitor_server::cli::main()
}
