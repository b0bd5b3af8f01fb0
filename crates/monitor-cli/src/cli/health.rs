//! `monitor-client report --health`: the host-health agent, a `host.health` report every
//! interval, each printed as it is sent, until interrupted or `--count` reports are done.

use monitor_client::Error as ClientError;
use monitor_client::Reporter;
use tracing::{error, info, warn};

use super::args::ReportArgs;
use super::exit::{failure, print_line, usage, EXIT_FAILURE, EXIT_OK};
use super::flags::{flag_error, CONN_FLAGS};
use crate::health::HealthProbe;

pub(super) async fn health(args: ReportArgs) -> u8 {
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
