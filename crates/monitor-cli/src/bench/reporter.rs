//! The reporters: reports written in batches, at a fixed rate or as fast as the window
//! over the subscribers' progress allows, and their acknowledgements read.

use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use monitor_client::config::DEFAULT_MAX_FRAME_LEN;
use monitor_proto::message::reply::SUCCESS_PREFIX;
use monitor_proto::{ClientCodec, FrameCodec, Header, MsgType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::connect::{open_with_retry, BoxRead, BoxWrite, Opened};
use super::frames::{encode_report, for_each_frame, READ_CHUNK, READ_MIN_FREE};
use super::payload::{parse_digits, write_payload, write_topic_payload};
use super::shared::Shared;
use crate::error::Result;

/// Target size of one reporter write at max rate.
const PUB_BATCH_BYTES: usize = 32 * 1024;
/// Most one fixed-rate tick writes: a reporter that fell behind catches up over several
/// ticks instead of building its whole backlog into one buffer.
const FIXED_RATE_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Waits until a reporter about to claim `seq` may send more without running more than
/// `window` reports ahead of the subscribers' progress ([`Shared::progress`]). Once it has had to wait, it waits for
/// half the window, so it resumes with a sizeable batch. Returns how many it may send, or
/// 0 if `deadline` passed first.
async fn wait_for_window(sh: &Shared, window: u64, deadline: tokio::time::Instant) -> u64 {
    let seq = sh.seq.load(SeqCst);
    let limit = sh.progress().saturating_add(window);
    if seq < limit {
        return limit - seq;
    }
    let want = window.div_ceil(2);
    loop {
        let notified = sh.pub_wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        sh.pub_waiting.store(true, SeqCst);
        let seq = sh.seq.load(SeqCst);
        let limit = sh.progress().saturating_add(window);
        if seq.saturating_add(want) <= limit {
            sh.pub_waiting.store(false, SeqCst);
            return limit - seq;
        }
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_millis(5));
        let _ = tokio::time::timeout_at(until, notified).await;
        if tokio::time::Instant::now() >= deadline || sh.reporter_closed.load(Relaxed) {
            sh.pub_waiting.store(false, SeqCst);
            return 0;
        }
    }
}

/// Writes `buf` until done or until `deadline`; returns the bytes written.
///
/// # Errors
/// A failed write: the server closed the connection.
async fn write_until(
    sh: &Shared,
    wr: &mut BoxWrite,
    buf: &[u8],
    deadline: tokio::time::Instant,
) -> Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        match tokio::time::timeout_at(deadline, wr.write(&buf[off..])).await {
            Ok(Ok(0)) => return Err(sh.server_closed("writes are refused")),
            Ok(Ok(n)) => off += n,
            Ok(Err(e)) => {
                use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
                // EPIPE and the like only say that the server closed it, as the message
                // says; anything else is worth showing.
                let detail = match e.kind() {
                    BrokenPipe | ConnectionReset | ConnectionAborted => "writes are refused".into(),
                    _ => format!("a write failed: {e}"),
                };
                return Err(sh.server_closed(&detail));
            }
            Err(_) => break,
        }
    }
    Ok(off)
}

/// Reads a reporter's acknowledgements until the connection closes.
async fn read_acks(
    sh: Arc<Shared>,
    mut reader: BoxRead,
    mut buf: BytesMut,
    mut codec: ClientCodec,
) {
    loop {
        let (mut acks, mut delivered_sum, mut errors) = (0, 0, 0);
        let decoded = for_each_frame(&mut buf, &mut codec, |msg_type, body| {
            if msg_type != MsgType::ReportAck {
                return;
            }
            acks += 1;
            let delivered = body.and_then(|b| {
                let data = b.strip_prefix(SUCCESS_PREFIX)?;
                let data = data.strip_prefix(b"{\"delivered\":")?;
                parse_digits(data).map(|(v, _)| v)
            });
            match delivered {
                Some(d) => delivered_sum += d,
                None => errors += 1,
            }
        });
        sh.acks.fetch_add(acks, Relaxed);
        sh.ack_delivered.fetch_add(delivered_sum, Relaxed);
        sh.ack_errors.fetch_add(errors, Relaxed);
        if let Err(e) = decoded {
            tracing::warn!(error = %e, "bench reporter: protocol error");
            break;
        }
        if buf.capacity() - buf.len() < READ_MIN_FREE {
            buf.reserve(READ_CHUNK);
        }
        match reader.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    // The bench closes its reporters' connections only after this task is aborted: the
    // server closed this one. A reporter waiting for the window must not wait it out.
    sh.reporter_closed.store(true, SeqCst);
    sh.pub_wake.notify_waiters();
}

/// One reporter: write reports until the window's end. Returns its connection's write
/// half (kept open through the drain) and its ack reader.
pub(super) async fn reporter(
    sh: Arc<Shared>,
    rate_share: u64,
) -> Result<(BoxWrite, JoinHandle<()>)> {
    let Opened {
        reader,
        mut writer,
        buf,
        codec,
        uuid,
    } = open_with_retry(&sh, &sh.cfg.server, None, b'p').await?;
    let acks = tokio::spawn(read_acks(Arc::clone(&sh), reader, buf, codec));
    let cfg = &sh.cfg;
    let window = cfg.window();
    let start = sh
        .window_start
        .load(Relaxed)
        .saturating_sub(cfg.warmup.as_nanos() as u64);
    let (ws, we) = (sh.window_start.load(Relaxed), sh.window_end.load(Relaxed));
    let end = sh.deadline(we);
    let frames = FrameCodec::builder()
        .max_frame_len(DEFAULT_MAX_FRAME_LEN)
        .new_codec();
    // The compress flag also asks for a compressed acknowledgement, and the cipher flag
    // for an encrypted one (the report itself stays plaintext in protocol v1).
    let report_header = Header::new(MsgType::Report, uuid)
        .with_compress(cfg.compress)
        .with_cipher(cfg.encrypt);
    let subscribers = cfg.subscribers as u64;
    let heartbeat_header = Header::new(MsgType::Heartbeat, uuid);
    let mut payload = Vec::with_capacity(cfg.size + 64);
    let mut batch = BytesMut::with_capacity(PUB_BATCH_BYTES + cfg.size + 256);
    let mut ends: Vec<(usize, bool)> = Vec::with_capacity(PUB_BATCH_BYTES / 16);
    let mut sent = 0u64;
    let mut last_heartbeat = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if sh.reporter_closed.load(Relaxed) {
            return Err(sh.server_closed("its acknowledgements ended"));
        }
        let allowed = if cfg.rate == 0 {
            if sh.now_ns() >= we {
                break;
            }
            if window == 0 {
                u64::MAX
            } else {
                match wait_for_window(&sh, window, end).await {
                    0 => break,
                    n => n,
                }
            }
        } else {
            tick.tick().await;
            let now = sh.now_ns();
            if now >= we {
                break;
            }
            let due = u64::try_from(
                u128::from(now.saturating_sub(start)) * u128::from(rate_share) / 1_000_000_000,
            )
            .unwrap_or(u64::MAX)
            .saturating_add(1);
            due.saturating_sub(sent)
        };
        batch.clear();
        ends.clear();
        if last_heartbeat.elapsed() >= cfg.heartbeat_interval {
            frames.encode_parts(&heartbeat_header, b"", &mut batch)?;
            last_heartbeat = tokio::time::Instant::now();
        }
        let byte_goal = if cfg.rate == 0 {
            PUB_BATCH_BYTES
        } else {
            FIXED_RATE_BATCH_BYTES
        };
        while (ends.len() as u64) < allowed && batch.len() < byte_goal {
            let seq = sh.seq.fetch_add(1, SeqCst);
            let ts = sh.now_ns();
            payload.clear();
            if cfg.distinct_topics {
                write_topic_payload(&mut payload, cfg.size, seq % subscribers, seq, ts);
            } else {
                write_payload(&mut payload, cfg.size, seq, ts);
            }
            encode_report(&frames, &report_header, &payload, &mut batch)?;
            ends.push((batch.len(), ts >= ws && ts < we));
            sent += 1;
        }
        if batch.is_empty() {
            continue;
        }
        // Never block past the window's end: an open-loop reporter can face a full socket.
        let written = write_until(&sh, &mut writer, &batch, end).await?;
        let (mut published, mut in_window) = (0u64, 0u64);
        for &(e, w) in &ends {
            if e > written {
                break;
            }
            published += 1;
            in_window += u64::from(w);
        }
        sh.published.fetch_add(published, Relaxed);
        sh.published_in_window.fetch_add(in_window, Relaxed);
        if written < batch.len() {
            sh.truncated.store(true, Relaxed);
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.flush()).await;
    if sh.reporter_closed.load(SeqCst) {
        return Err(sh.server_closed("its acknowledgements ended"));
    }
    Ok((writer, acks))
}
