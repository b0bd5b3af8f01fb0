//! A node's tasks, started with the server's shared state: the publisher, the
//! subscription's keeper, the delivery of what arrives, the presence. Apart from
//! [`Cluster`], which the state holds, so that the state never depends
//! on what depends on it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{presence, publisher, subscriber, Cluster};
use crate::state::Shared;

/// Starts the node's tasks: the publisher, the subscription's keeper, the delivery of
/// what arrives, the presence. They end once `stop` is cancelled (the publisher sends
/// what is queued first, and the presence is removed), or when their handles are
/// dropped (aborted: a node that dies leaves its presence to expire).
pub(crate) fn spawn(
    cluster: &Arc<Cluster>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> Vec<(&'static str, tokio::task::JoinHandle<()>)> {
    tracing::info!(
        node = %cluster.node_id,
        redis = %cluster.redis_shown,
        channel = %cluster.channel,
        "cluster: joining"
    );
    let mut tasks = vec![
        (
            "cluster publisher",
            tokio::spawn(publisher::run(Arc::clone(cluster), stop.clone())),
        ),
        (
            "cluster subscription",
            tokio::spawn(subscriber::keep_subscribed(
                Arc::clone(cluster),
                stop.clone(),
            )),
        ),
        (
            "cluster presence",
            tokio::spawn(presence::run(
                Arc::clone(cluster),
                Arc::clone(shared),
                stop.clone(),
            )),
        ),
    ];
    let rx = cluster
        .incoming
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(rx) = rx {
        tasks.push((
            "cluster delivery",
            tokio::spawn(subscriber::deliver(
                Arc::clone(cluster),
                Arc::clone(shared),
                rx,
                stop.clone(),
            )),
        ));
    }
    tasks
}
