//! `monitor-client`: see [`monitor_client::cli`].

fn main() -> std::process::ExitCode {
    monitor_client::cli::main()
}
