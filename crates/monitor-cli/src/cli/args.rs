//! The command line as clap reads it: [`Cli`], its commands and their flags, the parsers
//! of flag values, and the flags turned into the library's client configs. Every flag's
//! doc comment is its `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use monitor_client::config::parse_uuid;
use monitor_client::{ClientConfig, Endpoint, TlsSettings, Token};

use super::flags::{check_tls_files, flag_error, CONN_FLAGS};

/// Clients of the monitor push/report server.
///
/// `push` subscribes and prints every pushed report as one JSON line; `report` sends a report
/// (or, with --health, this host's health every interval); `bench` is a fan-out load
/// generator. Logs go to stderr (RUST_LOG=debug for more); data goes to stdout.
///
/// Exit codes: 0 ok, 1 runtime failure (e.g. server unreachable after the retries), 2 usage.
#[derive(Debug, Parser)]
#[command(name = "monitor-client", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Subscribe and print each pushed report as one JSON line on stdout, until
    /// interrupted. Reconnects and subscribes again by itself.
    Push(PushArgs),
    /// Send one report (--body) and print its acknowledgement, or run the host-health
    /// agent (--health).
    Report(ReportArgs),
    /// Fan-out load generator: R reporters → server → N subscribers; prints throughput,
    /// latency percentiles and losses.
    Bench(BenchArgs),
}

/// TLS and authentication flags, shared by `push`, `report` and `bench`.
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// Connect over TLS (a tls://host:port --server does too); needs --ca.
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the CA that signed the server's certificate; repeat for several. Only
    /// these are trusted (no system store).
    #[arg(long, value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Mutual TLS: PEM file of this client's certificate (with --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Mutual TLS: PEM file of the certificate's private key (with --cert).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name the server's certificate must be for, instead of the --server host (e.g.
    /// `localhost` for a server reached as 127.0.0.1).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Authenticate with this token. Prefer MONITOR_TOKEN in the environment: a command
    /// line is visible to other users (ps). Never printed.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MONITOR_TOKEN",
        hide_env_values = true,
        value_parser = parse_token
    )]
    pub token: Option<Token>,
}

impl SecurityArgs {
    /// Sets `config`'s TLS and token from these flags, for the server `server`.
    ///
    /// # Errors
    /// A TLS flag given without TLS (no --tls, no tls:// server), naming the flag.
    fn apply(&self, server: &Endpoint, config: &mut ClientConfig) -> Result<(), String> {
        config.token = self.token.clone();
        if !self.tls && !server.is_tls() {
            let given = [
                ("--ca", !self.ca.is_empty()),
                ("--cert", self.cert.is_some()),
                ("--key", self.key.is_some()),
                ("--server-name", self.server_name.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "{flag} is for TLS: add --tls, or give the server as tls://host:port"
                ));
            }
            return Ok(());
        }
        let mut tls = TlsSettings::new();
        tls.ca_files = self.ca.clone();
        tls.cert_file = self.cert.clone();
        tls.key_file = self.key.clone();
        tls.server_name = self.server_name.clone();
        config.tls = Some(tls);
        Ok(())
    }
}

/// The server and how to reach it: the flags of every command that connects.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server address: host:port, tls://host:port (TLS), or unix:/path/to/socket.
    #[arg(long, value_name = "ADDR", value_parser = parse_server)]
    pub server: Endpoint,
    /// TLS and authentication.
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl ServerArgs {
    /// A client config for the server, with its TLS and token settings applied.
    pub(super) fn client_config(&self) -> Result<ClientConfig, String> {
        let mut config = ClientConfig::new(self.server.clone());
        self.security.apply(&self.server, &mut config)?;
        Ok(config)
    }
}

/// Connection flags shared by `push` and `report`.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// The server, TLS and authentication.
    #[command(flatten)]
    pub target: ServerArgs,
    /// Exchange keys (X25519) and ask for encrypted replies and pushes.
    #[arg(long)]
    pub encrypt: bool,
    /// Compress what is sent, and ask for compressed replies and pushes.
    #[arg(long)]
    pub compress: bool,
    /// This client's 33-byte uuid (default: random, 32 hex characters and a letter).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Seconds between heartbeats (keep it under the server's idle timeout, 120 s by
    /// default).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub heartbeat: Duration,
    /// Seconds one connection attempt (connect, key exchange, handshake) may take.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// Seconds an acknowledgement may take.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub ack_timeout: Duration,
    /// Failed connection attempts in a row before giving up with exit code 1; 0 = never
    /// give up. Default: never for `push` and the health agent, 5 for a single report
    /// and for `--health --count N`.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
}

impl ConnArgs {
    pub(super) fn config(&self, default_retries: Option<u32>) -> Result<ClientConfig, String> {
        let mut config = self.target.client_config()?;
        if let Some(uuid) = &self.uuid {
            config.uuid = parse_uuid(uuid).map_err(|e| flag_error(&e.into(), CONN_FLAGS))?;
        }
        config.encrypt = self.encrypt;
        config.compress = self.compress;
        config.heartbeat_interval = self.heartbeat;
        config.connect_timeout = self.connect_timeout;
        config.ack_timeout = self.ack_timeout;
        config.max_attempts = match self.retries {
            Some(0) => None,
            Some(n) => Some(n),
            None => default_retries,
        };
        config
            .validate()
            .map_err(|e| flag_error(&e.into(), CONN_FLAGS))?;
        check_tls_files(&config, CONN_FLAGS)?;
        Ok(config)
    }
}

/// `monitor-client push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Connection flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The subscription's code (a name for this receiver).
    #[arg(long, value_name = "CODE")]
    pub code: String,
    /// Only reports whose code matches: exact (`db.slow`), a prefix (`host.*`) or `*`.
    /// Repeat for several; none = every report.
    #[arg(long = "topic", value_name = "PATTERN")]
    pub topics: Vec<String>,
}

/// `monitor-client report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Connection flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The report: one JSON object, conventionally with a "code"; `-` reads it from stdin,
    /// `@FILE` from a file (either at most the report limit, 1 MiB less the 45-byte
    /// header). Prints the acknowledgement, {"delivered":N}, and exits.
    #[arg(
        long,
        value_name = "JSON|-|@FILE",
        conflicts_with = "health",
        required_unless_present = "health"
    )]
    pub body: Option<String>,
    /// Report this host's health ({"code":"host.health",...}) every --interval seconds;
    /// each report sent is printed as one JSON line.
    #[arg(long)]
    pub health: bool,
    /// Seconds between health reports.
    #[arg(long, value_name = "SECS", default_value = "10", conflicts_with = "body", value_parser = parse_secs)]
    pub interval: Duration,
    /// Stop after this many health reports (and their acknowledgements); default: run
    /// until interrupted.
    #[arg(long, value_name = "N", conflicts_with = "body")]
    pub count: Option<u64>,
    /// The host name in each health report (default: this machine's), e.g. to run one
    /// agent per container. At most 255 bytes, no control characters.
    #[arg(long, value_name = "NAME", conflicts_with = "body", value_parser = parse_host)]
    pub host: Option<String>,
}

/// `monitor-client bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server (the reporters', and the subscribers' unless --subscribe-server or
    /// --ws), TLS and authentication (every connection).
    #[command(flatten)]
    pub target: ServerArgs,
    /// Every connection exchanges keys (X25519) and asks for encrypted acknowledgements
    /// and pushes: measures the in-band AES-GCM layer.
    #[arg(long)]
    pub encrypt: bool,
    /// Reports go compressed and every connection asks for compressed acknowledgements
    /// and pushes: measures the zlib layer.
    #[arg(long)]
    pub compress: bool,
    /// Subscriber connections; all are subscribed before reporting starts.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub subscribers: usize,
    /// Report size in bytes (a JSON object padded to this size, carrying its send time).
    #[arg(long, value_name = "BYTES", default_value_t = 200)]
    pub size: usize,
    /// Measured seconds (after the warmup).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub duration: Duration,
    /// Reports per second over all reporters; 0 = as fast as the flow-control window
    /// allows.
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 0)]
    pub rate: u64,
    /// Reporter connections.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub reporters: usize,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Seconds of reporting before the measured window opens.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Seconds between "all subscribed" and the first report.
    #[arg(long, value_name = "SECS", default_value = "0.5", value_parser = parse_secs)]
    pub settle: Duration,
    /// Longest wait, in seconds, for deliveries still in flight after the last report.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub drain: Duration,
    /// At --rate 0: how many reports the reporters may run ahead of the subscribers'
    /// average progress; 0 = no bound. Default: min(1000, max(10, 200000 / N)).
    #[arg(long, value_name = "MSGS")]
    pub window: Option<u64>,
    /// The server's max_frame_len, in bytes: a --size whose report frame (45-byte header +
    /// body) exceeds it is refused before the run, since the server would close the
    /// connection over it.
    #[arg(long, value_name = "BYTES", default_value_t = monitor_proto::codec::DEFAULT_MAX_FRAME_LEN)]
    pub max_frame_len: u32,
    /// Each subscriber i subscribes to a topic of its own, `bench.<i>`, and report k goes
    /// to topic `bench.<k mod N>`: each report reaches exactly one subscriber (per-device
    /// routing, as a chat server does) instead of all of them.
    #[arg(long)]
    pub distinct_topics: bool,
    /// The subscribers connect over WebSocket to this URL, the server's /ws endpoint on
    /// its admin listener (e.g. ws://127.0.0.1:9600/ws), instead of the binary protocol;
    /// the reporters still use --server. ws:// only. The token (--token, MONITOR_TOKEN)
    /// goes in the subscribe body; --encrypt and --compress, layers of the binary
    /// protocol, are refused with it.
    #[arg(long, value_name = "URL", conflicts_with_all = ["encrypt", "compress"])]
    pub ws: Option<String>,
    /// Allow a server that is not on this host (a load generator is refused anything but
    /// loopback and Unix sockets unless told otherwise).
    #[arg(long)]
    pub allow_remote: bool,
    /// Connect the subscribers here instead of --server; repeat to spread them
    /// round-robin over several servers (the nodes of a cluster: reports go to
    /// --server, pushes come from every node). Not with --ws, whose URL says where the
    /// WebSocket subscribers connect.
    #[arg(long = "subscribe-server", value_name = "ADDR", value_parser = parse_server, conflicts_with = "ws")]
    pub subscribe_servers: Vec<Endpoint>,
}

fn parse_server(s: &str) -> Result<Endpoint, String> {
    s.parse::<Endpoint>().map_err(|e| e.to_string())
}

/// A token from --token or MONITOR_TOKEN. Refusing it would have clap echo it in its
/// message, so only the empty token is refused here (its echo shows nothing).
fn parse_token(s: &str) -> Result<Token, String> {
    if s.is_empty() {
        return Err("the token must not be empty".into());
    }
    Ok(Token::new(s))
}

/// The longest `--host`: a DNS name's limit.
const MAX_HOST_LEN: usize = 255;

fn parse_host(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the host name must not be empty".into());
    }
    if s.len() > MAX_HOST_LEN {
        return Err(format!(
            "the host name is {} bytes, over {MAX_HOST_LEN}",
            s.len()
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("the host name must not contain control characters".into());
    }
    Ok(s.to_owned())
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is not a number of seconds from 0 to 1e9"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("nan").is_err());
        assert!(parse_secs("x").is_err());
    }

    #[test]
    fn host_names() {
        assert_eq!(parse_host("web-1.example"), Ok("web-1.example".to_owned()));
        assert!(parse_host("").is_err());
        assert!(parse_host("  ").is_err());
        assert!(parse_host("a\nb").is_err());
        assert!(parse_host(&"x".repeat(256)).is_err());
        assert!(parse_host(&"x".repeat(255)).is_ok());
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert!(parse(&[
            "m",
            "report",
            "--server",
            "127.0.0.1:1",
            "--health",
            "--host",
            "a"
        ])
        .is_ok());
        assert!(parse(&[
            "m",
            "report",
            "--server",
            "127.0.0.1:1",
            "--body",
            "{}",
            "--host",
            "a"
        ])
        .is_err());
    }

    #[test]
    fn body_or_health() {
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert!(parse(&["m", "report", "--server", "127.0.0.1:1"]).is_err());
        assert!(parse(&["m", "report", "--server", "127.0.0.1:1", "--body", "{}"]).is_ok());
        assert!(parse(&[
            "m",
            "report",
            "--server",
            "127.0.0.1:1",
            "--body",
            "{}",
            "--health"
        ])
        .is_err());
        assert!(parse(&[
            "m",
            "report",
            "--server",
            "127.0.0.1:1",
            "--body",
            "{}",
            "--count",
            "1"
        ])
        .is_err());
        assert!(parse(&[
            "m",
            "report",
            "--server",
            "127.0.0.1:1",
            "--health",
            "--count",
            "1"
        ])
        .is_ok());
        assert!(parse(&["m", "push", "--server", "nope", "--code", "c"]).is_err());
    }
}
