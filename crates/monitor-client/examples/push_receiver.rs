//! Subscribes to `host.*` and prints every pushed report, surviving server restarts: the
//! `reporter` example's `host.example` counter, and `monitor-client report --health`
//! (the monitor-cli binary).
//!
//! `cargo run -p monitor-client --example push_receiver -- 127.0.0.1:9503`
use futures::StreamExt;
use monitor_client::{ClientConfig, Event, PushReceiver, Subscription};

#[tokio::main]
async fn main() -> Result<(), monitor_client::Error> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9503".into());
    let mut config = ClientConfig::new(server.parse()?);
    config.encrypt = true; // X25519 key exchange; pushes arrive AES-256-GCM encrypted

    let subscription = Subscription::new("example-receiver").topic("host.*");
    let mut pushes = PushReceiver::connect(config, subscription).await?;
    while let Some(event) = pushes.next().await {
        match event? {
            Event::Push(push) => println!("{}", push.as_str()),
            Event::Disconnected { reason } => eprintln!("disconnected: {reason}"),
            Event::Reconnected { attempts, .. } => eprintln!("back after {attempts} attempt(s)"),
            _ => {}
        }
    }
    Ok(())
}
