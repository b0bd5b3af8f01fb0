//! `monitor-client bench`: the flags checked and turned into a
//! [`BenchConfig`], the run, and its figures printed.

use tracing::warn;

use super::args::BenchArgs;
use super::exit::{failure, print_line, usage, EXIT_OK};
use super::flags::{check_tls_files, flag_error, BENCH_FLAGS};
use crate::bench::{self, BenchConfig};

pub(super) async fn run_bench(args: BenchArgs) -> u8 {
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
