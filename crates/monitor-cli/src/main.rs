//! `monitor-client`: see [`monitor_cli::cli`].

fn main() -> std::process::ExitCode {
    monitor_cli::cli::main()
}
