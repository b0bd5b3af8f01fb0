//! `floor-server ADDR [WRITERS]`: a yardstick, not a server. It speaks just enough of the
//! protocol for fanout-bench (subscribe, heartbeat, report) and does the least work a
//! fan-out server can do per push: blocking sockets, a thread per connection, and the
//! reporter's thread writing each read's pushes, already encoded once, to every subscriber
//! in turn. No runtime, no queues, no limits, no slow-consumer policy: a subscriber that
//! stops reading blocks every other one.
//!
//! With `WRITERS` = N > 1, the subscribers are dealt round-robin to N writers: the
//! reporter's thread writes its share and hands the same pushes to N - 1 writer threads
//! for theirs, so a read's fan-out runs on several CPUs at once.
//!
//! Measured with fanout-bench next to monitor-server (`scripts/fanout-vs-nats.sh`, or
//! `scripts/latency_ab.py` with `'floor2=target/release/floor-server {addr} 2'`), it
//! shows how much of a latency figure is the machine and the harness rather than the
//! server (docs/performance.md).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use monitor_proto::message::reply;
use monitor_proto::{Frame, FrameCodec, Header, MsgType};
use tokio_util::codec::Decoder;

type Subscribers = Arc<Mutex<Vec<Arc<TcpStream>>>>;

/// The pushes of one read, and the subscribers as they were when it was made.
type Job = (Arc<[Arc<TcpStream>]>, Bytes);

/// The writer threads beyond the reporter's own: writer `k` (1-based) takes the
/// subscribers whose index is `k` modulo the number of writers.
type Helpers = Arc<[SyncSender<Job>]>;

fn main() -> std::process::ExitCode {
    const USAGE: &str = "usage: floor-server ADDR [WRITERS]   (e.g. 127.0.0.1:19504 2)";
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("{USAGE}");
        return std::process::ExitCode::from(2);
    };
    let writers = match std::env::args().nth(2).map(|w| w.parse::<usize>()) {
        None => 1,
        Some(Ok(w)) if w >= 1 => w,
        Some(_) => {
            eprintln!("floor-server: WRITERS must be a whole number of at least 1. {USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor-server: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let subscribers = Subscribers::default();
    let helpers: Helpers = (1..writers)
        .map(|k| {
            let (jobs, queue) = sync_channel::<Job>(1024);
            let subscribers = Arc::clone(&subscribers);
            std::thread::spawn(move || {
                while let Ok((snapshot, pushes)) = queue.recv() {
                    write_share(&snapshot, k, writers, &pushes, &subscribers);
                }
            });
            jobs
        })
        .collect();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("floor-server: accept: {e}");
                continue;
            }
        };
        let subscribers = Arc::clone(&subscribers);
        let helpers = Arc::clone(&helpers);
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            if let Err(e) = serve(stream, &subscribers, &helpers) {
                eprintln!("floor-server: {peer}: {e}");
            }
        });
    }
    std::process::ExitCode::SUCCESS
}

/// Reads frames until EOF. A subscribe registers a clone of the socket; the pushes of
/// every report in one read are encoded into one buffer and written to each subscriber,
/// by this thread and the `helpers`, each taking its share.
fn serve(
    mut stream: TcpStream,
    subscribers: &Subscribers,
    helpers: &Helpers,
) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut codec = FrameCodec::new();
    let (mut input, mut pushes, mut replies) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => return Err(e.to_string()),
        };
        input.extend_from_slice(&chunk[..n]);
        while let Some(Frame { header, body, .. }) =
            codec.decode(&mut input).map_err(|e| e.to_string())?
        {
            let uuid = header.uuid;
            let encode = |t, json: &[u8], dst: &mut BytesMut| {
                codec
                    .encode_parts(&Header::new(t, uuid), json, dst)
                    .map_err(|e| e.to_string())
            };
            match header.msg_type {
                MsgType::Subscribe => {
                    encode(MsgType::Push, &reply::success_raw(&body), &mut replies)?;
                    stream.write_all(&replies).map_err(|e| e.to_string())?;
                    replies.clear();
                    let clone = stream.try_clone().map_err(|e| e.to_string())?;
                    lock(subscribers).push(Arc::new(clone));
                }
                MsgType::Report => {
                    encode(MsgType::Push, &reply::push(&body), &mut pushes)?;
                    let reached = lock(subscribers).len() as u64;
                    encode(
                        MsgType::ReportAck,
                        &reply::report_ack(reached),
                        &mut replies,
                    )?;
                }
                MsgType::Heartbeat => {
                    encode(MsgType::HeartbeatReply, &reply::heartbeat(0), &mut replies)?
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        if !pushes.is_empty() {
            let pushes = pushes.split().freeze();
            let snapshot: Arc<[Arc<TcpStream>]> = lock(subscribers).as_slice().into();
            for helper in helpers.iter() {
                helper
                    .send((Arc::clone(&snapshot), pushes.clone()))
                    .map_err(|_| "a writer thread is gone".to_owned())?;
            }
            write_share(&snapshot, 0, helpers.len() + 1, &pushes, subscribers);
        }
        if !replies.is_empty() {
            stream.write_all(&replies).map_err(|e| e.to_string())?;
            replies.clear();
        }
    }
}

/// Writes `pushes` to every `writers`-th subscriber of `snapshot`, starting at `first`, and
/// forgets the ones whose write failed.
fn write_share(
    snapshot: &[Arc<TcpStream>],
    first: usize,
    writers: usize,
    pushes: &[u8],
    subscribers: &Subscribers,
) {
    for subscriber in snapshot.iter().skip(first).step_by(writers) {
        let mut socket: &TcpStream = subscriber;
        if socket.write_all(pushes).is_err() {
            lock(subscribers).retain(|s| !Arc::ptr_eq(s, subscriber));
        }
    }
}

fn lock(subscribers: &Subscribers) -> std::sync::MutexGuard<'_, Vec<Arc<TcpStream>>> {
    subscribers.lock().unwrap_or_else(PoisonError::into_inner)
}
