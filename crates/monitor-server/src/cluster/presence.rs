//! Presence: each node keeps its client list in Redis, so that any node can list the
//! cluster's clients (`GET /api/clients?scope=cluster`).
//!
//! - `<channel>:presence:<node_id>`: a hash, field = client id, value = the client's row
//!   as `/api/clients` shows it (JSON), plus a field `_node` (the node's own line, so the
//!   hash exists even when the node has no clients). Written whole every third of
//!   `presence_ttl_secs` (DEL, HSET, PEXPIRE in one MULTI), so a node that dies leaves
//!   it to expire within the TTL; a node that stops cleanly deletes it.
//! - `<channel>:nodes`: a sorted set of node ids, scored by when their hash expires
//!   (unix ms, by the writer's clock). It is the index a listing walks. Whether a node
//!   is alive is its hash's existence, which Redis expires by its own clock, so clocks
//!   that differ between nodes do not matter; a listing removes the ids whose hash is
//!   gone, and each write removes ids ten TTLs stale.
//!
//! Everything is bounded: rows per node written and read, bytes per row and per
//! listing, nodes per listing, and the time of each Redis operation.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Cluster, OP_TIMEOUT};
use crate::state::Shared;

/// The field of a node's hash that describes the node itself.
const NODE_FIELD: &str = "_node";
/// Rows a node writes at most (a node with more clients lists the first ones).
const MAX_ROWS_PER_NODE: usize = 10_000;
/// Bytes of rows a node writes at most.
const MAX_BYTES_PER_NODE: usize = 8 * 1024 * 1024;
/// A row larger than this is skipped when read (a node writes none so large: 64 topics
/// of 256 bytes and its other fields fit).
const MAX_ROW_BYTES: usize = 64 * 1024;
/// Nodes a listing reads at most.
const MAX_NODES: isize = 1024;
/// Rows a listing returns at most, all nodes together.
pub(crate) const MAX_LISTED_ROWS: usize = 100_000;
/// Bytes of rows a listing reads at most, all nodes together.
const MAX_LISTED_BYTES: usize = 64 * 1024 * 1024;
/// Fields asked for per HSCAN round trip.
const SCAN_COUNT: usize = 500;
/// A whole listing gives up after this long.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster's clients, as a listing found them.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Each row is a client as `/api/clients` shows it, with the `node` it is on.
    pub(crate) rows: Vec<Value>,
    /// Whether a bound cut the listing short (or a node listed only part of its clients).
    pub(crate) truncated: bool,
}

/// Writes this node's presence every third of the TTL until `stop`, then deletes it.
pub(super) async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>, stop: CancellationToken) {
    let every = cluster.presence_ttl / 3;
    let mut truncated_logged = false;
    loop {
        match write(&cluster, &shared).await {
            Ok(truncated) => {
                if truncated && !truncated_logged {
                    tracing::warn!(
                        node = %cluster.node_id,
                        max_rows = MAX_ROWS_PER_NODE,
                        max_bytes = MAX_BYTES_PER_NODE,
                        "cluster: presence lists only part of this node's clients"
                    );
                }
                truncated_logged = truncated;
            }
            // The publishing link's own checks log Redis's state; this is the same link.
            Err(e) => {
                tracing::debug!(node = %cluster.node_id, error = %e, "cluster: presence not written")
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    // Without Redis, the presence expires by itself: stopping does not wait for it.
    if !cluster.link_up(super::Link::Publish) {
        return;
    }
    if let Err(e) = remove(&cluster).await {
        tracing::debug!(node = %cluster.node_id, error = %e, "cluster: presence not removed; it expires");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes this node's hash and its place in the index, in one transaction. Whether the
/// rows were cut short by the bounds.
async fn write(cluster: &Cluster, shared: &Shared) -> Result<bool, String> {
    let clients = shared.clients();
    let mut fields: Vec<(String, Vec<u8>)> =
        Vec::with_capacity(clients.len().min(MAX_ROWS_PER_NODE) + 1);
    let mut bytes = 0;
    for client in clients.iter().take(MAX_ROWS_PER_NODE) {
        let Ok(row) = serde_json::to_vec(client) else {
            continue;
        };
        bytes += row.len();
        if bytes > MAX_BYTES_PER_NODE {
            break;
        }
        fields.push((client.id.to_string(), row));
    }
    let listed = fields.len();
    let ttl_ms = cluster.presence_ttl.as_millis() as u64;
    let now = now_ms();
    let node = serde_json::json!({
        "node": &*cluster.node_id,
        "epoch": cluster.epoch,
        "clients": clients.len(),
        "listed": listed,
        "refreshed_ms": now,
    });
    fields.push((NODE_FIELD.to_owned(), node.to_string().into_bytes()));
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(&cluster.presence_key)
        .ignore()
        .cmd("HSET")
        .arg(&cluster.presence_key)
        .arg(&fields)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&cluster.presence_key)
        .arg(ttl_ms)
        .ignore()
        .cmd("ZADD")
        .arg(&cluster.nodes_key)
        .arg(now + ttl_ms)
        .arg(&*cluster.node_id)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&cluster.nodes_key)
        .arg("-inf")
        .arg(now.saturating_sub(10 * ttl_ms))
        .ignore();
    let mut conn = cluster.publish_conn.clone();
    match tokio::time::timeout(OP_TIMEOUT, pipe.exec_async(&mut conn)).await {
        Ok(Ok(())) => Ok(listed < clients.len()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {OP_TIMEOUT:?}")),
    }
}

/// Deletes this node's presence (a clean shutdown).
async fn remove(cluster: &Cluster) -> Result<(), String> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(&cluster.presence_key)
        .ignore()
        .cmd("ZREM")
        .arg(&cluster.nodes_key)
        .arg(&*cluster.node_id)
        .ignore();
    let mut conn = cluster.publish_conn.clone();
    match tokio::time::timeout(OP_TIMEOUT, pipe.exec_async(&mut conn)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {OP_TIMEOUT:?}")),
    }
}

/// Every live node's clients, each row with a `"node"` member, in node order then as
/// each node listed them; bounded (see the constants) and within [`LIST_TIMEOUT`],
/// waiting included: listings run one at a time, so that concurrent requests never hold
/// more than one listing's bytes.
pub(crate) async fn list(cluster: &Cluster) -> Result<Listing, String> {
    let one_at_a_time = async {
        let _turn = cluster
            .listing
            .acquire()
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Client, "closed")))?;
        read_all(cluster).await
    };
    match tokio::time::timeout(LIST_TIMEOUT, one_at_a_time).await {
        Ok(Ok(listing)) => Ok(listing),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("redis did not answer in {LIST_TIMEOUT:?}")),
    }
}

async fn read_all(cluster: &Cluster) -> redis::RedisResult<Listing> {
    let mut conn = cluster.publish_conn.clone();
    let mut nodes: Vec<String> = redis::cmd("ZRANGE")
        .arg(&cluster.nodes_key)
        .arg(0)
        .arg(MAX_NODES - 1)
        .query_async(&mut conn)
        .await?;
    nodes.sort();
    let mut listing = Listing::default();
    let mut bytes = 0usize;
    let mut gone = Vec::new();
    'nodes: for node in nodes {
        let key = format!("{}{node}", cluster.presence_prefix);
        let mut cursor = 0u64;
        let mut found = false;
        let mut rows = 0usize;
        loop {
            let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await?;
            for pair in flat.chunks_exact(2) {
                found = true;
                let (field, value) = (&pair[0], &pair[1]);
                if field == NODE_FIELD.as_bytes() {
                    let listed_all = serde_json::from_slice::<Value>(value)
                        .ok()
                        .is_some_and(|n| n.get("clients") == n.get("listed"));
                    listing.truncated |= !listed_all;
                    continue;
                }
                if value.len() > MAX_ROW_BYTES {
                    continue;
                }
                if rows >= MAX_ROWS_PER_NODE
                    || listing.rows.len() >= MAX_LISTED_ROWS
                    || bytes + value.len() > MAX_LISTED_BYTES
                {
                    listing.truncated = true;
                    break 'nodes;
                }
                let Ok(Value::Object(mut row)) = serde_json::from_slice::<Value>(value) else {
                    continue;
                };
                row.insert("node".into(), Value::String(node.clone()));
                bytes += value.len();
                rows += 1;
                listing.rows.push(Value::Object(row));
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if !found {
            gone.push(node);
        }
    }
    if !gone.is_empty() {
        // Their hashes expired: the nodes died without removing themselves.
        redis::cmd("ZREM")
            .arg(&cluster.nodes_key)
            .arg(&gone)
            .exec_async(&mut conn)
            .await?;
    }
    Ok(listing)
}
