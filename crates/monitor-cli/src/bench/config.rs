//! What a run does: [`BenchConfig`], its defaults and the ranges it is checked against,
//! and the flow-control window it defaults to.

use std::time::Duration;

use monitor_client::config::MAX_DURATION;
use monitor_client::{ClientConfig, Endpoint, TlsSettings, Token};
use monitor_proto::HEADER_LEN;

use super::payload::report_frame_len;
use super::ws_url::WsUrl;
use crate::error::{Error, Result};

/// Largest `size` accepted (the server's default `max_frame_len` is 1 MiB; raise it there
/// for larger payloads).
pub const MAX_SIZE: usize = 16 * 1024 * 1024;
/// Most connections of either kind one run may open.
pub(super) const MAX_CONNECTIONS: usize = 1_000_000;

/// The default window at max rate for `n` subscribers: up to 1000 reports ahead of the
/// average subscriber, and at most ~200k deliveries in flight in all.
pub fn default_window(n: usize) -> u64 {
    (200_000 / n.max(1) as u64).clamp(10, 1000)
}

/// The default window at max rate with distinct topics: each report is one delivery, so
/// 1000 reports ahead are 1000 deliveries in flight, whatever the number of subscribers.
pub const DISTINCT_WINDOW: u64 = 1000;

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BenchConfig {
    /// The server (`tls://host:port` for TLS).
    pub server: Endpoint,
    /// TLS settings of every connection (see [`ClientConfig::tls`]).
    pub tls: Option<TlsSettings>,
    /// Token every connection authenticates with.
    pub token: Option<Token>,
    /// Every connection exchanges keys and asks for encrypted acknowledgements and
    /// pushes (the in-band AES-GCM layer).
    pub encrypt: bool,
    /// Reports are compressed, and every connection asks for compressed acknowledgements
    /// and pushes.
    pub compress: bool,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Reporter connections.
    pub reporters: usize,
    /// Report size in bytes.
    pub size: usize,
    /// The measured window.
    pub duration: Duration,
    /// Reports per second over all reporters; 0 = as fast as the window allows.
    pub rate: u64,
    /// At rate 0: how far (in reports) the reporters may run ahead of the subscribers'
    /// average progress; `Some(0)` = no bound. `None` = [`default_window`].
    pub window: Option<u64>,
    /// Reporting before the measured window opens.
    pub warmup: Duration,
    /// Pause between "all subscribed" and the first report.
    pub settle: Duration,
    /// Longest wait for deliveries still in flight after the last report.
    pub drain: Duration,
    /// Limit on each connection's connect and handshake.
    pub connect_timeout: Duration,
    /// Heartbeat interval of every connection (the server closes idle ones).
    pub heartbeat_interval: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// The server's `max_frame_len` (default 1 MiB, the server's default): a `size` whose
    /// report frame would exceed it is refused up front, since the server would close the
    /// connection over it.
    pub max_frame_len: u32,
    /// Each subscriber subscribes to a topic of its own, `bench.<i>`, and the reports
    /// rotate over those topics, so each report reaches exactly one subscriber (see the
    /// module documentation). Default: every subscriber gets every report.
    pub distinct_topics: bool,
    /// The subscribers connect over WebSocket to this URL (the server's `/ws` endpoint,
    /// on its admin listener) instead of the binary protocol; the reporters still use
    /// [`server`](Self::server). `encrypt` and `compress` are the binary protocol's
    /// layers and are refused with it; TLS and the token still apply to the reporters,
    /// and the token rides in the subscribe body. Default: the binary protocol.
    pub ws: Option<WsUrl>,
    /// Where the subscribers connect, round-robin (subscriber `i` to entry
    /// `i mod len`); empty: `server`, like the reporters. For a cluster, reports go to
    /// `server` and pushes come from every node listed. Not with [`ws`](Self::ws), which
    /// says where WebSocket subscribers connect.
    pub subscribe_servers: Vec<Endpoint>,
}

impl BenchConfig {
    /// The defaults of `monitor-client bench` against `server`: 1 subscriber, 1 reporter,
    /// 200 bytes, 10 s measured after 2 s of warmup, max rate.
    pub fn new(server: Endpoint) -> BenchConfig {
        BenchConfig {
            server,
            tls: None,
            token: None,
            encrypt: false,
            compress: false,
            subscribers: 1,
            reporters: 1,
            size: 200,
            duration: Duration::from_secs(10),
            rate: 0,
            window: None,
            warmup: Duration::from_secs(2),
            settle: Duration::from_millis(500),
            drain: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            progress: true,
            max_frame_len: monitor_proto::codec::DEFAULT_MAX_FRAME_LEN,
            distinct_topics: false,
            ws: None,
            subscribe_servers: Vec::new(),
        }
    }

    /// The server subscriber `id` connects to (see [`BenchConfig::subscribe_servers`]).
    pub(super) fn subscriber_server(&self, id: usize) -> &Endpoint {
        match self.subscribe_servers.len() {
            0 => &self.server,
            n => &self.subscribe_servers[id % n],
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| Err(Error::config(field, reason));
        if self.subscribers == 0 || self.subscribers > MAX_CONNECTIONS {
            return bad("subscribers", "must be from 1 to 1,000,000");
        }
        if self.reporters == 0 || self.reporters > MAX_CONNECTIONS {
            return bad("reporters", "must be from 1 to 1,000,000");
        }
        if self.size > MAX_SIZE {
            return bad("size", "must be at most 16 MiB");
        }
        let smallest = report_frame_len(0);
        if (self.max_frame_len as usize) < smallest {
            return bad(
                "max_frame_len",
                &format!("must be at least {smallest} (a header and the smallest report)"),
            );
        }
        let frame = report_frame_len(self.size);
        if frame > self.max_frame_len as usize {
            return bad(
                "size",
                &format!(
                    "a {}-byte report makes a {frame}-byte frame ({HEADER_LEN}-byte header + body), \
                     over max_frame_len ({}), the server's limit: it would close the connection. \
                     Raise max_frame_len here and in the server's config for larger reports",
                    self.size, self.max_frame_len
                ),
            );
        }
        if self.duration.is_zero() {
            return bad("duration", "must be more than zero");
        }
        let caps = [
            ("duration", self.duration, 3600),
            ("warmup", self.warmup, 600),
            ("settle", self.settle, 600),
            ("drain", self.drain, 600),
        ];
        for (field, value, cap) in caps {
            if value > Duration::from_secs(cap) {
                return bad(field, &format!("must be at most {cap} s"));
            }
        }
        for (field, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return bad(field, "must be more than zero");
            }
            if value > MAX_DURATION {
                return bad(field, "must be at most one year");
            }
        }
        if self.ws.is_some() && !self.subscribe_servers.is_empty() {
            return bad(
                "subscribe_servers",
                "WebSocket subscribers connect to the ws URL; leave subscribe_servers empty with ws",
            );
        }
        if self.ws.is_some() {
            for (on, layer) in [(self.encrypt, "encrypt"), (self.compress, "compress")] {
                if on {
                    return bad(
                        "ws",
                        &format!(
                            "WebSocket subscribers get plain JSON: {layer} is a layer of the \
                             binary protocol, which they do not speak; leave it off with ws"
                        ),
                    );
                }
            }
        }
        // The server, TLS and token, as each connection's client config checks them.
        self.client_config().validate()?;
        for server in &self.subscribe_servers {
            let mut cfg = self.client_config();
            cfg.server = server.clone();
            cfg.validate()?;
        }
        Ok(())
    }

    /// The client config each connection starts from (its uuid is drawn per connection).
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.server.clone());
        cfg.tls = self.tls.clone();
        cfg.token = self.token.clone();
        cfg.encrypt = self.encrypt;
        cfg.compress = self.compress;
        cfg.connect_timeout = self.connect_timeout;
        cfg
    }

    /// The layers a run adds over plain TCP, for its report: `None` for none.
    pub(super) fn layers(&self) -> Option<String> {
        let layers: Vec<&str> = [
            (self.server.is_tls() || self.tls.is_some(), "tls"),
            (self.encrypt, "encrypt"),
            (self.compress, "compress"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        (!layers.is_empty()).then(|| layers.join("+"))
    }

    pub(super) fn window(&self) -> u64 {
        if self.rate > 0 {
            0
        } else if self.distinct_topics {
            self.window.unwrap_or(DISTINCT_WINDOW)
        } else {
            self.window
                .unwrap_or_else(|| default_window(self.subscribers))
        }
    }

    /// What the report calls the subscribers' transport.
    pub(super) fn subscriber_transport(&self) -> &'static str {
        match (&self.ws, self.server.address()) {
            (Some(_), _) => "ws",
            (None, monitor_client::Address::Unix(_)) => "unix",
            (None, _) => "tcp",
        }
    }

    /// What the report calls this run's routing.
    pub(super) fn mode(&self) -> &'static str {
        if self.distinct_topics {
            "distinct-topics"
        } else {
            "fan-out"
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let base = BenchConfig::new("127.0.0.1:1".parse().unwrap());
        assert!(base.validate().is_ok());
        type Breaker = fn(&mut BenchConfig);
        let checks: [(&str, Breaker); 7] = [
            ("subscribers", |c| c.subscribers = MAX_CONNECTIONS + 1),
            ("reporters", |c| c.reporters = 0),
            ("settle", |c| c.settle = Duration::from_secs(601)),
            ("size", |c| c.size = MAX_SIZE + 1),
            // A frame over the server's limit, by one byte.
            ("size", |c| c.size = 1024 * 1024 - 44),
            ("max_frame_len", |c| c.max_frame_len = 100),
            ("heartbeat_interval", |c| {
                c.heartbeat_interval = Duration::MAX
            }),
        ];
        let mut fits = base.clone();
        fits.size = 1024 * 1024 - 45;
        assert_eq!(report_frame_len(fits.size), 1024 * 1024);
        assert!(fits.validate().is_ok());
        for (field, break_it) in checks {
            let mut cfg = base.clone();
            break_it(&mut cfg);
            match cfg.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn windows() {
        assert_eq!(default_window(1), 1000);
        assert_eq!(default_window(1000), 200);
        assert_eq!(default_window(100_000), 10);
    }
}
