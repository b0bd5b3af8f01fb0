//! A subscriber over the binary protocol: subscribed as the library's clients subscribe,
//! then reading the socket itself, one clock reading per read.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use monitor_proto::MsgType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::connect::{open_with_retry, Opened};
use super::frames::{encode_frame, for_each_frame, READ_CHUNK, READ_MIN_FREE};
use super::payload::parse_push;
use super::shared::Shared;
use super::tally::{subscription, Route, Tally};
use crate::error::Result;

/// One subscriber over the binary protocol: subscribe, report readiness, then count and
/// time pushes until stopped.
pub(super) async fn subscriber(
    id: usize,
    sh: Arc<Shared>,
    ready: mpsc::UnboundedSender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let hello = subscription(&sh.cfg, id);
    let opened = {
        let _permit = sh.connect_gate.acquire().await;
        open_with_retry(&sh, sh.cfg.subscriber_server(id), Some(&hello), b's').await
    };
    let Some(Opened {
        mut reader,
        mut writer,
        mut buf,
        mut codec,
        uuid,
    }) = sh.subscribed(id, ready, opened)
    else {
        return;
    };

    let mut heartbeat = BytesMut::new();
    let _ = encode_frame(&mut heartbeat, MsgType::Heartbeat, uuid, b"");
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + sh.cfg.heartbeat_interval,
        sh.cfg.heartbeat_interval,
    );
    let mut samples: Vec<u64> = Vec::with_capacity(512);
    let mut next_seq = 0u64;
    let route = Route::of(&sh.cfg, id);
    loop {
        if buf.capacity() - buf.len() < READ_MIN_FREE {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if writer.write_all(&heartbeat).await.is_err() {
                    sh.disconnects.fetch_add(1, Relaxed);
                    break;
                }
                continue;
            }
            read = reader.read_buf(&mut buf) => read,
        };
        if !matches!(read, Ok(n) if n > 0) {
            if !*stop.borrow() {
                sh.disconnects.fetch_add(1, Relaxed);
                tracing::warn!(subscriber = id, result = ?read, "bench subscriber lost its connection");
            }
            break;
        }
        // One clock reading per read: every push in this read had arrived by now.
        let now = sh.now_ns();
        let window = (sh.window_start.load(Relaxed), sh.window_end.load(Relaxed));
        let mut tally = Tally::default();
        let decoded = for_each_frame(&mut buf, &mut codec, |msg_type, body| {
            if msg_type == MsgType::Push {
                tally.add(body.and_then(parse_push), now, window, route, &mut samples);
            }
        });
        tally.commit(&sh, id, route, &mut next_seq, &mut samples);
        if let Err(e) = decoded {
            sh.disconnects.fetch_add(1, Relaxed);
            tracing::warn!(subscriber = id, error = %e, "bench subscriber: protocol error");
            break;
        }
    }
    sh.subscriber_gone(id);
}
