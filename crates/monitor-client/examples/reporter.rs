//! Reports a counter as `host.example` every second; while the server is away, reports
//! are buffered and sent in order once it is back. The `push_receiver` example (topic
//! `host.*`) prints them: run the two side by side (the README has the commands).
//!
//! `cargo run -p monitor-client --example reporter -- 127.0.0.1:9503`
use std::time::Duration;

use monitor_client::{ClientConfig, Error, Reporter};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9503".into());
    let mut config = ClientConfig::new(server.parse()?);
    config.buffer_size = 100; // reports kept while disconnected

    let reporter = Reporter::connect(config).await?;
    for n in 0u64.. {
        let report = json!({"code": "host.example", "n": n});
        match reporter.send(&report) {
            // Pipelined: the acknowledgement is awaited in its own task.
            Ok(ack) => drop(tokio::spawn(async move {
                match ack.await {
                    Ok(delivered) => println!("report {n}: delivered to {delivered}"),
                    Err(e) => eprintln!("report {n}: {e}"),
                }
            })),
            Err(e @ Error::BufferFull { .. }) => eprintln!("report {n} dropped: {e}"),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
