//! `/metrics`: Prometheus text exposition, from prometheus-client.
//!
//! The server's counters stay what they are (per-connection counts added to shared
//! atomics in batches, no lock and no allocation per push): a collector reads them at
//! each scrape. The one metric measured on the hot path, the time from a report's arrival
//! to its push being written, is sampled: each connection records one push in
//! [`LATENCY_SAMPLE`](crate::stats::LATENCY_SAMPLE), so the histogram's lock is taken a few thousand times a second at
//! most, whatever the fan-out.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::state::Shared;

/// The registry `/metrics` encodes.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub(crate) fn new(shared: &Arc<Shared>) -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "monitor_push_latency_seconds",
            "Time from a report's arrival to its push being written to a subscriber's socket (sampled: one push in 64 per connection)",
            shared.push_latency.clone(),
        );
        registry.register_collector(Box::new(ServerCollector {
            shared: Arc::clone(shared),
        }));
        Metrics { registry }
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the server's counters at each scrape.
#[derive(Debug)]
struct ServerCollector {
    shared: Arc<Shared>,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// A counter family with one member per field of `fields` (a struct of `u64`s), labelled
/// `label="field"`: the field names are the names `/api/status` gives them.
fn labelled_counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    fields: &impl serde::Serialize,
) -> std::fmt::Result {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(fields) else {
        return Err(std::fmt::Error);
    };
    let metric = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    for (field, value) in &fields {
        let labels = [(label, field.as_str())];
        ConstCounter::new(value.as_u64().unwrap_or(0)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.shared.stats.snapshot();
        let counters: [(&str, &str, u64); 18] = [
            (
                "monitor_connections_accepted",
                "Connections accepted",
                s.connections_accepted,
            ),
            (
                "monitor_connections_refused",
                "Connections closed at once: max_connections reached",
                s.connections_refused,
            ),
            ("monitor_frames_in", "Complete frames received", s.frames_in),
            ("monitor_frames_out", "Frames written", s.frames_out),
            ("monitor_reports", "Reports fanned out", s.reports),
            (
                "monitor_pushes_queued",
                "Pushes queued for subscribers",
                s.pushes_queued,
            ),
            (
                "monitor_pushes_dropped",
                "Pushes dropped: a subscriber's queue was full (slow consumer)",
                s.pushes_dropped,
            ),
            (
                "monitor_slow_consumers_disconnected",
                "Subscribers disconnected: their queue was full (slow_consumer = disconnect)",
                s.slow_consumers_disconnected,
            ),
            (
                "monitor_protocol_errors",
                "Connections closed for a bad header",
                s.protocol_errors,
            ),
            (
                "monitor_frame_timeouts",
                "Connections closed: a frame incomplete past frame_timeout_secs",
                s.frame_timeouts,
            ),
            (
                "monitor_write_timeouts",
                "Connections closed: their socket took nothing for write_timeout_secs",
                s.write_timeouts,
            ),
            (
                "monitor_budget_waits",
                "Times a large frame waited for max_buffered_bytes",
                s.budget_waits,
            ),
            (
                "monitor_tls_handshake_failures",
                "TLS handshakes that failed",
                s.tls_handshake_failures,
            ),
            (
                "monitor_auth_granted",
                "Tokens and client certificates accepted",
                s.auth_granted,
            ),
            (
                "monitor_auth_unauthorized",
                "Wrong or missing tokens",
                s.auth_unauthorized,
            ),
            (
                "monitor_auth_forbidden",
                "Requests outside their grants, or before authenticating",
                s.auth_forbidden,
            ),
            (
                "monitor_auth_closed_at_reload",
                "Connections closed: a reload removed or changed their token",
                s.auth_closed_at_reload,
            ),
            (
                "monitor_log_lines_dropped",
                "Log lines that could not be written",
                crate::logging::lines_dropped(),
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut encoder, name, help, value)?;
        }
        labelled_counters(
            &mut encoder,
            "monitor_frames_in_by_type",
            "Complete frames received, by message type (websocket: WebSocket messages)",
            "type",
            &s.frames_in_by_type,
        )?;
        labelled_counters(
            &mut encoder,
            "monitor_frames_out_by_type",
            "Frames written, by message type (websocket: WebSocket messages)",
            "type",
            &s.frames_out_by_type,
        )?;
        labelled_counters(
            &mut encoder,
            "monitor_protocol_errors_by_kind",
            "Protocol errors by kind: bad headers (connection closed) and bad bodies (answered)",
            "kind",
            &s.protocol_errors_by_kind,
        )?;
        labelled_counters(
            &mut encoder,
            "monitor_limits_hit",
            "Times each limit was reached, by setting",
            "limit",
            &s.limits_hit,
        )?;
        // Only a clustered node has these: without `[cluster]`, the scrape is unchanged.
        if let Some(cluster) = &self.shared.cluster {
            let counters: [(&str, &str, u64); 8] = [
                (
                    "monitor_cluster_published",
                    "Reports published to the cluster's Redis channel",
                    s.cluster_published,
                ),
                (
                    "monitor_cluster_publish_failed",
                    "Reports not published: Redis unavailable, or their pipeline failed",
                    s.cluster_publish_failed,
                ),
                (
                    "monitor_cluster_overflow",
                    "Reports not published: the outgoing queue (max_outgoing_bytes) was full",
                    s.cluster_overflow,
                ),
                (
                    "monitor_cluster_received",
                    "Reports received from other nodes and fanned out here",
                    s.cluster_received,
                ),
                (
                    "monitor_cluster_missed",
                    "Reports of other nodes that never arrived (gaps in their sequences)",
                    s.cluster_missed,
                ),
                (
                    "monitor_cluster_out_of_order",
                    "Reports of other nodes that arrived again or out of order, dropped",
                    s.cluster_out_of_order,
                ),
                (
                    "monitor_cluster_rejected",
                    "Messages on the channel that were malformed or too large, dropped",
                    s.cluster_rejected,
                ),
                (
                    "monitor_cluster_incoming_dropped",
                    "Messages from the channel dropped: the incoming queue was full",
                    s.cluster_incoming_dropped,
                ),
            ];
            for (name, help, value) in counters {
                counter(&mut encoder, name, help, value)?;
            }
            gauge(
                &mut encoder,
                "monitor_cluster_up",
                "1 when this node publishes to and is subscribed to the cluster's Redis",
                crate::cluster::up_gauge(cluster),
            )?;
        }
        let clients = self.shared.clients();
        gauge(
            &mut encoder,
            "monitor_connections_open",
            "Connections open now",
            s.connections_open as i64,
        )?;
        gauge(
            &mut encoder,
            "monitor_subscribers",
            "Subscribed connections now",
            self.shared.hub.subscriber_count() as i64,
        )?;
        let (mut pushes, mut bytes) = (0u64, 0u64);
        for (_, depth) in self.shared.hub.queue_depths() {
            pushes += depth.pushes as u64;
            bytes += depth.bytes as u64;
        }
        gauge(
            &mut encoder,
            "monitor_queued_pushes",
            "Pushes queued and not yet written, all subscribers",
            pushes as i64,
        )?;
        gauge(
            &mut encoder,
            "monitor_queued_push_bytes",
            "Bytes of those pushes",
            bytes as i64,
        )?;
        gauge(
            &mut encoder,
            "monitor_buffered_bytes",
            "Bytes of large partial frames held (max_buffered_bytes)",
            self.shared.budget.used() as i64,
        )?;
        let metric = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "monitor_connections",
            "Open connections by role",
            None,
            metric.metric_type(),
        )?;
        for role in ["subscriber", "reporter", "subscriber+reporter", "none"] {
            let count = clients.iter().filter(|c| c.role == role).count();
            let labels = [("role", role)];
            ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
