//! `monitor-client push`: subscribe, and print each pushed report as one line on stdout
//! until interrupted.

use monitor_client::Error as ClientError;
use monitor_client::{Event, PushReceiver, Subscription};
use tracing::info;

use super::args::PushArgs;
use super::exit::{failure, print_line, usage, EXIT_OK};

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

pub(super) async fn push(args: PushArgs) -> u8 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(one_line(r#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(one_line("{\n  \"a\": 1\n}"), r#"{"a":1}"#);
    }
}
