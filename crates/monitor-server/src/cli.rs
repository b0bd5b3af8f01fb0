//! The `monitor-server` command line: flags, config loading, signals.

use std::path::PathBuf;

use std::io::{Read, Write};

use clap::Parser;
use tracing::{error, info, warn};

use monitor_proto::Address;

use crate::config::{Config, ConfigError, ListenerConfig, SchedPolicy};
use crate::logging::say;
use crate::server::Server;

/// The monitor push/report server.
///
/// Reporters send reports (type 7); push receivers subscribe (type 5) and get every
/// matching report, fanned out in memory. With no arguments it serves TCP 0.0.0.0:9503.
///
/// Signals: SIGINT/SIGTERM shut down gracefully (queued pushes are delivered, bounded by
/// drain_timeout_secs); SIGHUP re-reads --config and applies what can change live.
/// Logging: RUST_LOG (e.g. RUST_LOG=debug, RUST_LOG=monitor_server=trace).
#[derive(Debug, Parser)]
#[command(
    name = "monitor-server",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A task other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Read settings from this TOML file (flags below override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen on ADDR (host:port, or unix:/path); repeat for several. Replaces the
    /// config file's listeners.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<Address>,
    /// Close a connection after SECS without a complete frame from it.
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Largest frame accepted, header included.
    #[arg(long, value_name = "BYTES")]
    pub max_frame_len: Option<u32>,
    /// Largest size a compressed body may inflate to.
    #[arg(long, value_name = "BYTES")]
    pub max_inflated_len: Option<usize>,
    /// Runtime worker threads, at most 1024 (default: one per CPU, or TOKIO_WORKER_THREADS).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// CPU scheduling policy of the worker threads (Linux): `batch` runs them under
    /// SCHED_BATCH, so that a worker woken by another does not preempt it; `inherit`
    /// keeps the policy the server was started with.
    #[arg(long, value_name = "POLICY")]
    pub sched_policy: Option<SchedPolicy>,
    /// Allow the legacy key exchange, which sends keys in the clear (for PHP clients).
    #[arg(long)]
    pub legacy_key_exchange: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the configuration and exit (status 0 if valid, 2 if not).
    #[arg(long)]
    pub check_config: bool,
    /// The admin HTTP API's address (default 127.0.0.1:9600; `[admin]` in the file).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<Address>,
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<crate::config::LogFormat>,
    /// Join a cluster through this Redis (redis://host:port, rediss:// for TLS); the
    /// rest of `[cluster]` comes from the file or its defaults. A password belongs in
    /// MONITOR_REDIS_PASSWORD, not here, where `ps` shows it.
    #[arg(long, value_name = "URL")]
    pub cluster_redis: Option<String>,
}

/// What `monitor-server` can do besides serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read a token on stdin (one line) and print the line that puts its SHA-256 in an
    /// `[[auth.token]]` table. The token is not echoed and not stored.
    HashToken,
    /// Show a running server's status and its clients, from its admin API; exit 1 if it
    /// does not answer.
    Status(crate::status::StatusArgs),
}

impl Args {
    /// The configuration: defaults, then the file, then the flags.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, key or flag at fault.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.listeners = self
                .listen
                .iter()
                .enumerate()
                .map(|(i, address)| {
                    let name = if i == 0 {
                        "server".into()
                    } else {
                        format!("server{}", i + 1)
                    };
                    ListenerConfig::new(name, address.clone())
                })
                .collect();
        }
        let s = &mut config.server;
        if let Some(v) = self.idle_timeout {
            s.idle_timeout_secs = v;
        }
        if let Some(v) = self.max_frame_len {
            s.max_frame_len = v;
        }
        if let Some(v) = self.max_inflated_len {
            s.max_inflated_len = v;
        }
        if let Some(v) = self.workers {
            s.workers = v;
        }
        if let Some(v) = self.sched_policy {
            s.sched_policy = v;
        }
        if self.legacy_key_exchange {
            s.legacy_key_exchange = true;
        }
        if let Some(admin) = &self.admin {
            config.admin.enabled = true;
            config.admin.address = admin.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(url) = &self.cluster_redis {
            config.cluster.get_or_insert_with(Default::default).redis = url.clone();
        }
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key: match flag_for(&key) {
                    Some(flag) => format!("{flag} (or {key})"),
                    None => key,
                },
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }
}

/// `monitor-server hash-token`: stdin's first line (without its line end) → the config line.
fn hash_token() -> std::process::ExitCode {
    use std::io::BufRead;
    let mut line = String::new();
    // A token longer than this is not a token someone types or pastes.
    let mut stdin = std::io::stdin().lock().take(64 * 1024);
    if let Err(e) = stdin.read_line(&mut line) {
        say(&format!(
            "monitor-server hash-token: cannot read stdin: {e}"
        ));
        return std::process::ExitCode::from(2);
    }
    let token = line.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        say("monitor-server hash-token: no token on stdin (e.g. `echo -n \"$TOKEN\" | monitor-server hash-token`)");
        return std::process::ExitCode::from(2);
    }
    let hash = crate::auth::hash_token(token);
    let mut out = std::io::stdout().lock();
    match writeln!(out, "token_sha256 = \"{hash}\"").and_then(|()| out.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

fn flag_for(key: &str) -> Option<&'static str> {
    Some(match key {
        "server.idle_timeout_secs" => "--idle-timeout",
        "server.max_frame_len" => "--max-frame-len",
        "server.max_inflated_len" => "--max-inflated-len",
        "listener" | "listener.address" => "--listen",
        "server.workers" => "--workers",
        "admin.address" => "--admin",
        "cluster.redis" => "--cluster-redis",
        _ => return None,
    })
}

/// Runs the command line; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match &args.command {
        Some(Command::HashToken) => return hash_token(),
        Some(Command::Status(status)) => return crate::status::main(status),
        None => {}
    }
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            say(&format!("monitor-server: {e}"));
            return std::process::ExitCode::from(2);
        }
    };
    crate::logging::init(config.log.format);
    if args.print_config {
        let mut out = std::io::stdout().lock();
        let printed = out
            .write_all(config.to_toml().as_bytes())
            .and_then(|()| out.flush());
        return if printed.is_ok() {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        };
    }
    if args.check_config {
        say("monitor-server: configuration is valid");
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match crate::runtime::build(&config.server) {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("monitor-server: cannot start the runtime: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        info!(workers, sched_policy = %config.server.sched_policy, "runtime started");
        serve(args, config).await
    })
}

async fn serve(args: Args, config: Config) -> std::process::ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the listeners announce themselves: a SIGHUP or SIGTERM sent as soon
    // as "listening" is logged must find its handler, not the default action.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers");
        return std::process::ExitCode::FAILURE;
    };
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let handle = server.handle();
    let signals = handle.clone();
    handle.spawn_supervised("signal handler", async move {
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM received"); break; }
                _ = int.recv() => { info!("SIGINT received"); break; }
                _ = hup.recv() => reload(&args, &signals),
            }
        }
        signals.shutdown();
    });
    server.run().await;
    match handle.failure() {
        Some(why) => {
            error!("stopped because {why}");
            std::process::ExitCode::FAILURE
        }
        None => std::process::ExitCode::SUCCESS,
    }
}

fn reload(args: &Args, handle: &crate::ServerHandle) {
    if args.config.is_none() {
        warn!("SIGHUP: no --config file to re-read");
        return;
    }
    match args.config().and_then(|new| handle.reload(new)) {
        Ok(diff) => {
            if diff.applied.is_empty() && diff.needs_restart.is_empty() {
                info!("SIGHUP: configuration unchanged");
            }
            for change in &diff.applied {
                info!(change = %change, "SIGHUP: applied");
            }
            for change in &diff.needs_restart {
                warn!(change = %change, "SIGHUP: needs a restart to take effect");
            }
            for failure in &diff.failed {
                error!(failure = %failure, "SIGHUP: not applied");
            }
        }
        Err(e) => error!("SIGHUP: configuration not reloaded: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("monitor-server").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        args.config().map_err(|e| e.to_string())
    }

    #[test]
    fn flags_override() {
        let c = parse(&[
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "unix:/tmp/x.sock",
            "--listen",
            "localhost:9605",
            "--idle-timeout",
            "7",
            "--legacy-key-exchange",
        ])
        .unwrap();
        assert_eq!(c.listeners.len(), 3);
        assert_eq!(c.listeners[1].name, "server2");
        assert_eq!(c.listeners[2].address.to_string(), "localhost:9605");
        assert_eq!(c.server.idle_timeout_secs, 7);
        assert!(c.server.legacy_key_exchange);
        assert_eq!(parse(&[]).unwrap(), Config::default());
        let c = parse(&["--cluster-redis", "redis://10.0.0.5:6380"]).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.redis, "redis://10.0.0.5:6380");
        assert_eq!(cluster.channel, "monitor:reports");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let err = parse(&["--max-frame-len", "3"]).unwrap_err();
        assert!(
            err.starts_with("--max-frame-len (or server.max_frame_len)"),
            "{err}"
        );
        let err = parse(&["--listen", "bogus"]).unwrap_err();
        assert!(
            err.contains("--listen") && err.contains("expected host:port"),
            "{err}"
        );
        let err = parse(&["--cluster-redis", "http://x"]).unwrap_err();
        assert!(
            err.starts_with("--cluster-redis (or cluster.redis)"),
            "{err}"
        );
        let err = parse(&["--config", "/nonexistent/monitor.toml"]).unwrap_err();
        assert!(err.contains("/nonexistent/monitor.toml"), "{err}");
    }
}
