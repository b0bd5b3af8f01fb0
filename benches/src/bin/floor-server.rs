//! `floor-server ADDR`: a yardstick, not a server. It speaks just enough of the protocol
//! for fanout-bench (subscribe, heartbeat, report) and does the least work a fan-out
//! server can do per push: blocking sockets, a thread per connection, and the reporter's
//! thread writing each read's pushes, already encoded once, to every subscriber in turn.
//! No runtime, no queues, no limits, no slow-consumer policy: a subscriber that stops
//! reading blocks every other one.
//!
//! Measured with fanout-bench next to monitor-server (`scripts/latency-floor.sh`), it
//! shows how much of a latency figure is the machine and the harness rather than the
//! server (docs/performance.md).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use monitor_proto::message::reply;
use monitor_proto::{Frame, FrameCodec, Header, MsgType};
use tokio_util::codec::Decoder;

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

fn main() -> std::process::ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: floor-server ADDR   (e.g. 127.0.0.1:19504)");
        return std::process::ExitCode::from(2);
    };
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor-server: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let subscribers = Subscribers::default();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("floor-server: accept: {e}");
                continue;
            }
        };
        let subscribers = Arc::clone(&subscribers);
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            if let Err(e) = serve(stream, &subscribers) {
                eprintln!("floor-server: {peer}: {e}");
            }
        });
    }
    std::process::ExitCode::SUCCESS
}

/// Reads frames until EOF. A subscribe registers a clone of the socket; the pushes of
/// every report in one read are encoded into one buffer and written to each subscriber.
fn serve(mut stream: TcpStream, subscribers: &Subscribers) -> Result<(), String> {
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
        while let Some(Frame { header, body }) =
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
                    lock(subscribers).push(clone);
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
            lock(subscribers).retain_mut(|s| s.write_all(&pushes).is_ok());
            pushes.clear();
        }
        if !replies.is_empty() {
            stream.write_all(&replies).map_err(|e| e.to_string())?;
            replies.clear();
        }
    }
}

fn lock(subscribers: &Subscribers) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
    subscribers.lock().unwrap_or_else(PoisonError::into_inner)
}
