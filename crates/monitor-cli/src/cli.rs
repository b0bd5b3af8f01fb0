//! The `monitor-client` command line: `push`, `report` and `bench`.
//!
//! Exit codes: 0 success (or interrupted), 1 a runtime failure (server unreachable after
//! the retries, a refused report or subscription, ...), 2 a usage error.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing::{error, info, warn};

use monitor_client::config::parse_uuid;
use monitor_client::Error as ClientError;
use monitor_client::{
    ClientConfig, Endpoint, Event, PushReceiver, Reporter, Subscription, TlsSettings, Token,
};
use monitor_proto::HEADER_LEN;

use crate::bench::{self, BenchConfig};
use crate::error::Error;
use crate::health::HealthProbe;

/// Success.
pub const EXIT_OK: u8 = 0;
/// A runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// A usage error.
pub const EXIT_USAGE: u8 = 2;

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

/// A client config's TLS files read (as the client will read them when it starts), so
/// that a missing or unusable file is a usage error naming its flag:
/// `--ca /x.pem: no such file`.
fn check_tls_files(config: &ClientConfig, flags: &[(&str, &str)]) -> Result<(), String> {
    config
        .check_tls_files()
        .map_err(|e| client_flag_error(e, flags))
}

/// A library error as a usage message naming the flag at fault: a TLS file's error as
/// `--ca FILE: reason`, a configuration error as `--flag: reason`.
fn client_flag_error(e: ClientError, flags: &[(&str, &str)]) -> String {
    if let ClientError::TlsFile { what, path, reason } = &e {
        let flag = SECURITY_FLAGS
            .iter()
            .find(|(field, _)| *field == what.field())
            .map_or("", |(_, flag)| *flag);
        return format!("{flag} {}: {reason}", path.display());
    }
    flag_error(&e.into(), flags)
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
    fn client_config(&self) -> Result<ClientConfig, String> {
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

/// The flag that sets each [`ClientConfig`] field, so that a usage error names what the
/// user typed rather than the library's field.
const CONN_FLAGS: &[(&str, &str)] = &[
    ("server", "--server"),
    ("uuid", "--uuid"),
    ("heartbeat_interval", "--heartbeat"),
    ("connect_timeout", "--connect-timeout"),
    ("ack_timeout", "--ack-timeout"),
    ("max_attempts", "--retries"),
];

/// The flag that sets each TLS and token field of the library's config ([`SecurityArgs`]),
/// for every command.
const SECURITY_FLAGS: &[(&str, &str)] = &[
    ("tls", "--tls"),
    ("tls.ca_files", "--ca"),
    ("tls.cert_file", "--cert"),
    ("tls.key_file", "--key"),
    ("tls.server_name", "--server-name"),
    ("token", "--token"),
];

/// The flag that sets each [`BenchConfig`] field.
const BENCH_FLAGS: &[(&str, &str)] = &[
    ("server", "--server"),
    ("subscribers", "--subscribers"),
    ("reporters", "--reporters"),
    ("size", "--size"),
    ("duration", "--duration"),
    ("rate", "--rate"),
    ("window", "--window"),
    ("warmup", "--warmup"),
    ("settle", "--settle"),
    ("drain", "--drain"),
    ("max_frame_len", "--max-frame-len"),
    ("ws", "--ws"),
];

/// A configuration error as a usage message: `--flag: reason` when a flag sets the field at
/// fault, the error as it is otherwise. Other fields the reason names (`max_frame_len`)
/// become their flags too; only names with an underscore, so that plain words in the
/// reason ("the server's") are left alone.
fn flag_error(e: &Error, flags: &[(&str, &str)]) -> String {
    let Some((field, reason)) = e.config_field() else {
        return e.to_string();
    };
    let Some((_, flag)) = flags
        .iter()
        .chain(SECURITY_FLAGS)
        .find(|(f, _)| *f == field)
    else {
        return e.to_string();
    };
    let mut reason = reason.to_owned();
    for (name, other) in flags.iter().filter(|(f, _)| f.contains('_')) {
        reason = replace_word(&reason, name, other);
    }
    format!("{flag}: {reason}")
}

/// `text` with each whole-word `word` (not inside a longer identifier) replaced by `with`.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (before, after) = (&rest[..at], &rest[at + word.len()..]);
        let whole = !before.ends_with(is_ident) && !after.starts_with(is_ident);
        out.push_str(before);
        out.push_str(if whole { with } else { word });
        rest = after;
    }
    out.push_str(rest);
    out
}

impl ConnArgs {
    fn config(&self, default_retries: Option<u32>) -> Result<ClientConfig, String> {
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

/// Parses the arguments and runs; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Bench(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

fn init_logging(quiet: bool) {
    // The library's log lines and this crate's (`subscribed`, `health report
    // acknowledged`), as when both were one crate.
    let default = if quiet {
        "warn"
    } else {
        "warn,monitor_client=info,monitor_cli=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Push(args) => push(args).await,
        Command::Report(args) => match args.body.clone() {
            Some(body) => report_once(args, body).await,
            None => health(args).await,
        },
        Command::Bench(args) => run_bench(args).await,
    }
}

fn usage(msg: &str) -> u8 {
    eprintln!("monitor-client: {msg}");
    EXIT_USAGE
}

fn failure(e: &dyn std::fmt::Display) -> u8 {
    error!(error = %e, "failed");
    EXIT_FAILURE
}

/// Writes one line to stdout and flushes it; `false` if stdout is gone (e.g. a closed
/// pipe), which ends the command quietly.
fn print_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// A report as one line: its text as sent, unless that spans lines (pretty-printed JSON),
/// then re-serialised compactly.
fn one_line(json: &str) -> String {
    if !json.contains(['\n', '\r']) {
        return json.to_owned();
    }
    serde_json::from_str::<serde_json::Value>(json)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| json.replace(['\n', '\r'], " "))
}

async fn push(args: PushArgs) -> u8 {
    let config = match args.conn.config(None) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    if args.code.is_empty() {
        return usage("--code must not be empty");
    }
    let subscription = Subscription {
        code: args.code,
        topics: args.topics,
    };
    let connecting = PushReceiver::connect(config, subscription.clone());
    let mut receiver = tokio::select! {
        r = connecting => match r {
            Ok(r) => r,
            Err(e) => return failure(&e),
        },
        _ = tokio::signal::ctrl_c() => return EXIT_OK,
    };
    info!(server = %args.conn.target.server, code = %subscription.code, topics = ?subscription.topics, "subscribed");
    loop {
        let event = tokio::select! {
            e = receiver.recv() => e,
            _ = tokio::signal::ctrl_c() => return EXIT_OK,
        };
        match event {
            Some(Ok(Event::Push(push))) => {
                if !print_line(&one_line(push.as_str())) {
                    return EXIT_OK;
                }
            }
            Some(Ok(Event::Reconnected { attempts, .. })) => {
                info!(attempts, "subscribed again");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return failure(&e),
            None => return failure(&ClientError::Closed),
        }
    }
}

async fn report_once(args: ReportArgs, body: String) -> u8 {
    let config = match args.conn.config(Some(5)) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let limit = (config.max_report_frame_len as usize).saturating_sub(HEADER_LEN);
    let (what, body) = match read_body(body, limit).await {
        Ok(read) => read,
        Err(e) => return usage(&e),
    };
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => {}
        Ok(_) => {
            return usage(&format!(
                "{what} must be a JSON object, e.g. '{{\"code\":\"deploy\",\"version\":\"1.2\"}}'"
            ))
        }
        Err(e) => return usage(&format!("{what} is not valid JSON: {e}")),
    }
    let reporter = match Reporter::connect(config).await {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    match reporter.report_acknowledged(body).await {
        Ok(ack) => {
            // `{"delivered":N}`, and `"cluster":true` from a clustered server.
            print_line(&serde_json::to_string(&ack).unwrap_or_default());
            EXIT_OK
        }
        Err(e) => failure(&e),
    }
}

/// The report `--body` gives: the text itself, `-` for stdin or `@FILE` for a file, at
/// most `limit` bytes, read without holding more than `limit + 1` bytes whatever the
/// source's size. Returns how to name the source in a message, and the report, trimmed of
/// surrounding whitespace (a file's final newline).
///
/// # Errors
/// A message naming the source: unreadable, over `limit`, or not UTF-8.
async fn read_body(arg: String, limit: usize) -> Result<(String, String), String> {
    let (what, path) = if arg == "-" {
        ("--body - (stdin)".to_owned(), None)
    } else if let Some(path) = arg.strip_prefix('@') {
        if path.is_empty() {
            return Err("--body @: a file name must follow the @".into());
        }
        (
            format!("--body @{path}"),
            Some(std::path::PathBuf::from(path)),
        )
    } else {
        return Ok(("--body".into(), arg));
    };
    let source = match &path {
        Some(path) => path.display().to_string(),
        None => "stdin".into(),
    };
    let too_large = |len: Option<u64>| {
        let has = len.map_or("more than the".into(), |len| {
            format!("{len} bytes, over the")
        });
        format!(
            "{what}: {source} has {has} report limit of {limit} bytes \
             (max_report_frame_len less the {HEADER_LEN}-byte header)"
        )
    };
    // Blocking reads, on a thread of their own.
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Option<u64>, Vec<u8>)> {
        let mut buf = Vec::new();
        let cap = limit as u64 + 1;
        match path {
            Some(path) => {
                let file = std::fs::File::open(path)?;
                // A regular file's size tells at once; the bounded read below still
                // holds for one that grows, or a pipe.
                let meta = file.metadata()?;
                if meta.is_file() && meta.len() > limit as u64 {
                    return Ok((Some(meta.len()), buf));
                }
                file.take(cap).read_to_end(&mut buf)?;
            }
            None => {
                std::io::stdin().lock().take(cap).read_to_end(&mut buf)?;
            }
        }
        Ok((None, buf))
    })
    .await
    .map_err(|e| format!("{what}: reading failed: {e}"))?;
    let buf = match read {
        Ok((Some(len), _)) => return Err(too_large(Some(len))),
        Ok((None, buf)) if buf.len() > limit => return Err(too_large(None)),
        Ok((None, buf)) => buf,
        Err(e) => return Err(format!("{what}: cannot read {source}: {e}")),
    };
    let text =
        String::from_utf8(buf).map_err(|e| format!("{what}: {source} is not UTF-8 text: {e}"))?;
    Ok((what, text.trim().to_owned()))
}

async fn health(args: ReportArgs) -> u8 {
    let default_retries = args.count.map(|_| 5);
    let config = match args.conn.config(default_retries) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    if args.interval.is_zero() {
        return usage("--interval must be more than zero");
    }
    if args.count == Some(0) {
        return EXIT_OK;
    }
    let ack_timeout = config.ack_timeout;
    // Started without waiting: reports are buffered until the server is reachable.
    let reporter = match Reporter::start(config) {
        Ok(r) => r,
        Err(e) => return usage(&flag_error(&e.into(), CONN_FLAGS)),
    };
    let mut probe = HealthProbe::new().with_interval(args.interval);
    if let Some(host) = args.host {
        probe = probe.with_host(host);
    }
    // CPU use is measured between two readings.
    tokio::time::sleep(HealthProbe::MIN_INTERVAL).await;
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut acks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let report = probe.report_json();
        match reporter.send_raw(report.clone()) {
            Ok(ack) => {
                sent += 1;
                if !print_line(&report) {
                    break;
                }
                acks.spawn(async move {
                    match ack.await {
                        Ok(delivered) => {
                            info!(delivered, "health report acknowledged");
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                });
            }
            Err(e @ ClientError::BufferFull { .. }) => warn!(error = %e, "health report dropped"),
            Err(e) => return failure(&e),
        }
        // Collect finished acknowledgements; a fatal one ends the agent.
        while let Some(done) = acks.try_join_next() {
            if let Ok(Err(e)) = done {
                if !e.is_retryable() && !matches!(e, ClientError::ReportRefused { .. }) {
                    return failure(&e);
                }
                warn!(error = %e, "health report not delivered");
            }
        }
        if args.count.is_some_and(|n| sent >= n) {
            break;
        }
    }
    // Wait for what is still in flight, boundedly when interrupted.
    let flushed = tokio::select! {
        r = reporter.close() => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = tokio::time::sleep(ack_timeout * 3), if args.count.is_none() => Ok(()),
    };
    if let Err(e) = flushed {
        return failure(&e);
    }
    let mut code = EXIT_OK;
    while let Some(done) = acks.join_next().await {
        if let Ok(Err(e)) = done {
            error!(error = %e, "health report not delivered");
            code = EXIT_FAILURE;
        }
    }
    code
}

async fn run_bench(args: BenchArgs) -> u8 {
    for server in std::iter::once(&args.target.server).chain(&args.subscribe_servers) {
        if !server.is_local() && !args.allow_remote {
            return usage(&format!(
                "{server} is not on this host; a load generator only targets loopback addresses and Unix sockets unless given --allow-remote"
            ));
        }
    }
    let ws = match args
        .ws
        .as_deref()
        .map(str::parse::<bench::WsUrl>)
        .transpose()
    {
        Ok(ws) => ws,
        Err(e) => return usage(&flag_error(&e, BENCH_FLAGS)),
    };
    if let Some(url) = ws.as_ref().filter(|u| !u.is_local() && !args.allow_remote) {
        return usage(&format!(
            "--ws {url} is not on this host; a load generator only targets loopback addresses unless given --allow-remote"
        ));
    }
    let mut client = match args.target.client_config() {
        Ok(client) => client,
        Err(e) => return usage(&e),
    };
    let mut config = BenchConfig::new(args.target.server);
    config.tls = client.tls.take();
    config.token = client.token.take();
    config.encrypt = args.encrypt;
    config.compress = args.compress;
    config.subscribers = args.subscribers;
    config.reporters = args.reporters;
    config.size = args.size;
    config.duration = args.duration;
    config.rate = args.rate;
    config.window = args.window;
    config.warmup = args.warmup;
    config.settle = args.settle;
    config.drain = args.drain;
    config.max_frame_len = args.max_frame_len;
    config.distinct_topics = args.distinct_topics;
    config.ws = ws;
    config.subscribe_servers = args.subscribe_servers;
    if let Err(e) = config.validate() {
        return usage(&flag_error(&e, BENCH_FLAGS));
    }
    if let Err(e) = check_tls_files(&config.client_config(), BENCH_FLAGS) {
        return usage(&e);
    }
    // One descriptor per connection: 10,000 subscribers are over many shells' default
    // `ulimit -n` of 1024, though rarely over the hard limit.
    #[cfg(unix)]
    if let Err(e) = bench::raise_open_files_limit(&config) {
        warn!(error = %e, "cannot raise the open files limit");
    }
    match bench::run(config).await {
        Ok(report) => {
            let text = if args.json {
                serde_json::to_string(&report).unwrap_or_default()
            } else {
                report.summary()
            };
            print_line(&text);
            EXIT_OK
        }
        Err(e) => failure(&e),
    }
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
    fn flags_replace_field_names() {
        let e = Error::Config {
            field: "size",
            reason: "over max_frame_len (10), see max_frame_len_x and the server's size".into(),
        };
        assert_eq!(
            flag_error(&e, BENCH_FLAGS),
            "--size: over --max-frame-len (10), see max_frame_len_x and the server's size"
        );
        assert_eq!(replace_word("a_b a_b.", "a_b", "X"), "X X.");
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
    fn lines() {
        assert_eq!(one_line(r#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(one_line("{\n  \"a\": 1\n}"), r#"{"a":1}"#);
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
