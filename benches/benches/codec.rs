//! Criterion benchmarks of the monitor-proto hot paths, each against a baseline that does
//! the same work without the protocol, in the same criterion group so the reports sit side
//! by side.
//!
//! | group          | ours (`monitor-proto`)                      | baseline                                  |
//! |----------------|---------------------------------------------|-------------------------------------------|
//! | `decode_stream`| [`FrameCodec`] decoding frames as they arrive in 16 KiB socket reads (each read copied into the buffer, as `FramedRead` does) | [`LengthDelimitedCodec`], same frames, same reads |
//! | `decode_plain` | [`FrameCodec`] decoding back-to-back frames already in memory | [`LengthDelimitedCodec`], same frame size |
//! | `encode_plain` | [`FrameCodec`] encoding a [`Frame`]         | [`LengthDelimitedCodec`], same frame size |
//! | `compress`     | `layer::compress::{deflate, inflate}`       | (none: zlib itself is the cost)           |
//! | `encrypt`      | [`SessionKey::seal_frame`] / [`SessionKey::open`] | raw `ring` AES-256-GCM (and RustCrypto's [`Aes256Gcm`]) with a 45-byte aad |
//! | `message_codec`| the server's message path: [`ServerCodec`] decoding requests as they arrive (as `decode_stream`), and [`ServerCodec::encode_shared`] writing a push to a plain and to an encrypting subscriber | (none: compare with `decode_stream` and `encode_plain`) |
//!
//! The baseline frames for the codecs are a 4-byte length prefix, 41 filler bytes and the
//! same body, so that each of them is `45 + body` bytes on the wire, like ours (a 45-byte
//! header and the body). Decoding and encoding batches hold about 256 KiB of frames (at
//! least 4). Every benchmark reports `Throughput::Bytes`: the wire bytes of the batch for
//! the codecs, the plaintext (uncompressed) bytes for `compress` and `encrypt`.
//!
//! Run it with
//!
//! ```text
//! cargo bench -p monitor-benches --bench codec
//! cargo bench -p monitor-benches --bench codec -- decode_plain   # one group
//! ```
//!
//! Each benchmark warms up for 1 s and measures 30 samples over 3 s, so the whole run
//! takes a few minutes.

// Bench code: the inputs are our own constants, so a failure is a bug in the bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use bytes::{BufMut, Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use monitor_proto::layer::compress::{deflate, inflate};
use monitor_proto::{
    Frame, FrameCodec, Header, MsgType, Recipient, ServerCodec, SessionKey, SharedBody, Uuid,
    HEADER_LEN,
};
use ring::aead::{Aad, LessSafeKey, Nonce as RingNonce, UnboundKey, AES_256_GCM};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

const UUID: Uuid = Uuid(*b"0123456789abcdef0123456789abcdef0");
/// Body sizes of the codec and encryption benchmarks.
const FRAME_BODY_SIZES: [usize; 3] = [64, 1024, 65536];
/// Body sizes of the compression benchmarks.
const COMPRESS_SIZES: [usize; 2] = [1024, 65536];
/// Wire bytes per decode/encode batch (rounded to whole frames, at least `MIN_FRAMES`).
const BATCH_BYTES: usize = 256 * 1024;
const MIN_FRAMES: usize = 4;
/// Length prefix of the baseline frames, and the filler that makes them as long as ours.
const LD_PREFIX: usize = 4;
const LD_FILLER: usize = HEADER_LEN - LD_PREFIX;

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
}

/// A realistic report body: a JSON object of host metrics and checks, exactly `size` bytes
/// (padded with whitespace, which JSON allows). Values vary (a small LCG) so that zlib has
/// the usual amount of work, not one repeated string.
fn json_body(size: usize) -> Bytes {
    const SMALL: &str = r#"{"code":"host.health","host":"web-01","cpu":12.5"#;
    const OPENING: &str = r#"{"code":"host.health","host":"web-01","seq":7,"cpu_percent":12.5,"mem_used_mb":3172,"load":[0.42,0.57,0.61],"checks":["#;
    let (mut text, closing) = if size < OPENING.len() + 2 {
        (String::from(SMALL), "}")
    } else {
        (String::from(OPENING), "]}")
    };
    assert!(
        text.len() + closing.len() <= size,
        "{size} bytes is too short"
    );
    let names = [
        "nginx",
        "php-fpm",
        "redis",
        "mysql",
        "cron",
        "disk./",
        "disk./var",
    ];
    let statuses = ["ok", "ok", "ok", "warn", "ok", "crit"];
    let mut state: u32 = 0x2545_f491;
    let mut first = true;
    if closing == "]}" {
        loop {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let r = state >> 8;
            let entry = format!(
                r#"{}{{"name":"{}","status":"{}","latency_ms":{}.{},"ts":{}}}"#,
                if first { "" } else { "," },
                names[r as usize % names.len()],
                statuses[(r >> 4) as usize % statuses.len()],
                r % 400,
                r % 10,
                1_700_000_000 + (r % 86_400),
            );
            if text.len() + entry.len() + closing.len() > size {
                break;
            }
            text.push_str(&entry);
            first = false;
        }
    }
    while text.len() + closing.len() < size {
        text.push(' ');
    }
    text.push_str(closing);
    assert_eq!(text.len(), size);
    Bytes::from(text)
}

fn frames_per_batch(frame_len: usize) -> usize {
    (BATCH_BYTES / frame_len).max(MIN_FRAMES)
}

/// Our frame and the baseline's equivalent payload (41 filler bytes + the same body).
fn frames(body_len: usize) -> (Frame, Bytes) {
    let body = json_body(body_len);
    let frame = Frame::new(Header::new(MsgType::Push, UUID), body.clone());
    let mut ld_payload = BytesMut::with_capacity(LD_FILLER + body.len());
    ld_payload.put_bytes(b'f', LD_FILLER);
    ld_payload.put_slice(&body);
    (frame, ld_payload.freeze())
}

fn decode_plain(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_plain");
    configure(&mut group);
    for &size in &FRAME_BODY_SIZES {
        let (frame, ld_payload) = frames(size);
        let n = frames_per_batch(HEADER_LEN + size);

        let mut ours = BytesMut::new();
        let mut theirs = BytesMut::new();
        let mut enc = FrameCodec::new();
        let mut ld = LengthDelimitedCodec::new();
        for _ in 0..n {
            enc.encode(&frame, &mut ours).unwrap();
            ld.encode(ld_payload.clone(), &mut theirs).unwrap();
        }
        assert_eq!(ours.len(), theirs.len(), "equivalent frames");
        assert_eq!(ours.len(), n * (HEADER_LEN + size));
        let ours = ours.freeze();
        let theirs = theirs.freeze();
        group.throughput(Throughput::Bytes(ours.len() as u64));

        group.bench_function(BenchmarkId::new("monitor", size), |b| {
            b.iter_batched_ref(
                || (FrameCodec::new(), BytesMut::from(&ours[..])),
                |(codec, buf)| assert_eq!(decode_all(codec, buf), n),
                BatchSize::LargeInput,
            );
        });
        group.bench_function(BenchmarkId::new("length_delimited", size), |b| {
            b.iter_batched_ref(
                || (LengthDelimitedCodec::new(), BytesMut::from(&theirs[..])),
                |(codec, buf)| assert_eq!(decode_all(codec, buf), n),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Decodes and drops every whole frame in `buf`; returns how many there were.
fn decode_all<D: Decoder>(codec: &mut D, buf: &mut BytesMut) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut count = 0;
    while let Some(frame) = codec.decode(buf).unwrap() {
        drop(black_box(frame));
        count += 1;
    }
    count
}

/// Bytes per simulated socket read in `decode_stream`.
const READ_CHUNK: usize = 16 * 1024;

/// Feeds `wire` to `codec` in `READ_CHUNK` reads through one reused buffer, decoding and
/// dropping every frame; returns the number of frames.
fn decode_reads<D: Decoder>(codec: &mut D, buf: &mut BytesMut, wire: &[u8]) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut count = 0;
    for read in wire.chunks(READ_CHUNK) {
        buf.reserve(read.len());
        buf.extend_from_slice(read);
        count += decode_all(codec, buf);
    }
    count
}

/// The decode path of a live connection: bytes arrive in socket-sized reads, are copied
/// into the read buffer (the kernel's copy, here a memcpy), and are decoded while still in
/// cache. Both codecs get the same bytes in the same reads.
fn decode_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_stream");
    configure(&mut group);
    for &size in &FRAME_BODY_SIZES {
        let (frame, ld_payload) = frames(size);
        let n = frames_per_batch(HEADER_LEN + size);
        let mut ours = BytesMut::new();
        let mut theirs = BytesMut::new();
        for _ in 0..n {
            FrameCodec::new().encode(&frame, &mut ours).unwrap();
            LengthDelimitedCodec::new()
                .encode(ld_payload.clone(), &mut theirs)
                .unwrap();
        }
        assert_eq!(ours.len(), theirs.len(), "equivalent frames");
        group.throughput(Throughput::Bytes(ours.len() as u64));
        group.bench_function(BenchmarkId::new("monitor", size), |b| {
            let (mut codec, mut buf) = (FrameCodec::new(), BytesMut::with_capacity(4 * READ_CHUNK));
            b.iter(|| assert_eq!(decode_reads(&mut codec, &mut buf, &ours), n));
        });
        group.bench_function(BenchmarkId::new("length_delimited", size), |b| {
            let mut codec = LengthDelimitedCodec::builder()
                .max_frame_length(1 << 20)
                .new_codec();
            let mut buf = BytesMut::with_capacity(4 * READ_CHUNK);
            b.iter(|| assert_eq!(decode_reads(&mut codec, &mut buf, &theirs), n));
        });
    }
    group.finish();
}

/// Encodes `n` clones of `item` (a refcount bump each) into a reused buffer per iteration.
fn encode_batches<E: Encoder<T>, T: Clone>(
    b: &mut criterion::Bencher<'_>,
    mut codec: E,
    item: &T,
    n: usize,
    batch_len: usize,
) where
    E::Error: std::fmt::Debug,
{
    let mut dst = BytesMut::with_capacity(batch_len);
    b.iter(|| {
        for _ in 0..n {
            codec.encode(black_box(item.clone()), &mut dst).unwrap();
        }
        black_box(&dst);
        dst.clear();
    });
}

fn encode_plain(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_plain");
    configure(&mut group);
    for &size in &FRAME_BODY_SIZES {
        let (frame, ld_payload) = frames(size);
        let n = frames_per_batch(HEADER_LEN + size);
        let batch_len = n * (HEADER_LEN + size);
        group.throughput(Throughput::Bytes(batch_len as u64));

        group.bench_function(BenchmarkId::new("monitor", size), |b| {
            encode_batches(b, FrameCodec::new(), &frame, n, batch_len);
        });
        group.bench_function(BenchmarkId::new("length_delimited", size), |b| {
            encode_batches(b, LengthDelimitedCodec::new(), &ld_payload, n, batch_len);
        });
    }
    group.finish();
}

fn compress(c: &mut Criterion) {
    let mut group = c.benchmark_group("compress");
    configure(&mut group);
    for &size in &COMPRESS_SIZES {
        let json = json_body(size);
        let packed = deflate(&json);
        assert_eq!(inflate(&packed, size).unwrap(), json);
        // Both directions count the uncompressed bytes.
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(BenchmarkId::new("deflate", size), |b| {
            b.iter(|| deflate(black_box(&json)));
        });
        group.bench_function(BenchmarkId::new("inflate", size), |b| {
            b.iter(|| inflate(black_box(&packed), size).unwrap());
        });
    }
    group.finish();
}

/// Encryption. Ours: `seal_frame` writes a whole frame (header with CRC, the next counter
/// nonce of the key, the ciphertext and tag) into a reused buffer;
/// `open` copies the ciphertext out of the body and decrypts it in place. The baselines
/// are the raw cipher with a 45-byte aad and a FIXED nonce (fine for a benchmark, never
/// for real use), each into a fresh `Vec`: `ring`'s AES-256-GCM (`raw_ring`, the cipher
/// the layer uses), so the difference is the nonce, the header write and the buffer
/// handling; and RustCrypto's `aes-gcm` (`raw_aes_gcm`, the cipher it used before), which
/// shows why it changed.
fn encrypt(c: &mut Criterion) {
    let mut group = c.benchmark_group("encrypt");
    configure(&mut group);
    let key_bytes = [7u8; 32];
    let key = SessionKey::from_bytes(&key_bytes);
    let raw = Aes256Gcm::new((&key_bytes).into());
    let raw_ring = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes).unwrap());
    let nonce_bytes = [9u8; 12];
    let nonce = Nonce::from_slice(&nonce_bytes);
    let header = Header::new(MsgType::Push, UUID);
    for &size in &FRAME_BODY_SIZES {
        let plain = json_body(size);
        group.throughput(Throughput::Bytes(size as u64));

        // A sealed frame to open: its header is the aad.
        let mut sealed = BytesMut::new();
        key.seal_frame(&header, &plain, &mut sealed).unwrap();
        let aad: [u8; HEADER_LEN] = sealed[..HEADER_LEN].try_into().unwrap();
        let body = sealed.split_off(HEADER_LEN).freeze();
        assert_eq!(key.open(&aad, &body).unwrap(), plain);
        let raw_sealed = raw
            .encrypt(
                nonce,
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .unwrap();

        group.bench_function(BenchmarkId::new("seal/monitor", size), |b| {
            let mut dst = BytesMut::with_capacity(HEADER_LEN + 28 + size);
            b.iter(|| {
                dst.clear();
                key.seal_frame(black_box(&header), black_box(&plain), &mut dst)
                    .unwrap();
                black_box(&dst);
            });
        });
        group.bench_function(BenchmarkId::new("seal/raw_aes_gcm", size), |b| {
            b.iter(|| {
                raw.encrypt(
                    nonce,
                    Payload {
                        msg: black_box(&plain),
                        aad: black_box(&aad),
                    },
                )
                .unwrap()
            });
        });
        group.bench_function(BenchmarkId::new("seal/raw_ring", size), |b| {
            b.iter(|| {
                let mut out = black_box(&plain).to_vec();
                raw_ring
                    .seal_in_place_append_tag(
                        RingNonce::assume_unique_for_key(nonce_bytes),
                        Aad::from(black_box(&aad)),
                        &mut out,
                    )
                    .unwrap();
                out
            });
        });
        group.bench_function(BenchmarkId::new("open/monitor", size), |b| {
            b.iter(|| key.open(black_box(&aad), black_box(&body)).unwrap());
        });
        group.bench_function(BenchmarkId::new("open/raw_ring", size), |b| {
            b.iter(|| {
                let mut out = black_box(&raw_sealed).clone();
                let len = raw_ring
                    .open_in_place(
                        RingNonce::assume_unique_for_key(nonce_bytes),
                        Aad::from(black_box(&aad)),
                        &mut out,
                    )
                    .unwrap()
                    .len();
                out.truncate(len);
                out
            });
        });
        group.bench_function(BenchmarkId::new("open/raw_aes_gcm", size), |b| {
            b.iter(|| {
                raw.decrypt(
                    nonce,
                    Payload {
                        msg: black_box(&raw_sealed),
                        aad: black_box(&aad),
                    },
                )
                .unwrap()
            });
        });
    }
    group.finish();
}

/// The server's message path, above the frames: decoding plain requests through the body
/// layers (none apply: the cost is the codec's), and encoding one shared push body per
/// subscriber, plain or encrypted (`encode_shared`, as a connection writes its pushes).
fn message_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("message_codec");
    configure(&mut group);
    for &size in &[1024, 65536] {
        let body = json_body(size);
        let n = frames_per_batch(HEADER_LEN + size);
        if size == 1024 {
            let frame = Frame::new(Header::new(MsgType::Report, UUID), body.clone());
            let mut wire = BytesMut::new();
            for _ in 0..n {
                FrameCodec::new().encode(&frame, &mut wire).unwrap();
            }
            group.throughput(Throughput::Bytes(wire.len() as u64));
            group.bench_function(BenchmarkId::new("decode_stream", size), |b| {
                let (mut codec, mut buf) =
                    (ServerCodec::new(), BytesMut::with_capacity(4 * READ_CHUNK));
                b.iter(|| assert_eq!(decode_reads(&mut codec, &mut buf, &wire), n));
            });
        }
        let shared = SharedBody::new(body);
        let mut codec = ServerCodec::new();
        codec.set_session_key(Some(SessionKey::from_bytes(&[7; 32])));
        for (label, encrypt) in [("encode_push", false), ("encode_push_encrypted", true)] {
            let to = Recipient::new(UUID).encrypt(encrypt);
            let batch_len = n * (HEADER_LEN + size + if encrypt { 28 } else { 0 });
            group.throughput(Throughput::Bytes(batch_len as u64));
            group.bench_function(BenchmarkId::new(label, size), |b| {
                let mut dst = BytesMut::with_capacity(batch_len);
                b.iter(|| {
                    for _ in 0..n {
                        codec
                            .encode_shared(
                                MsgType::Push,
                                black_box(&to),
                                black_box(&shared),
                                &mut dst,
                            )
                            .unwrap();
                    }
                    black_box(&dst);
                    dst.clear();
                });
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    decode_stream,
    decode_plain,
    encode_plain,
    compress,
    encrypt,
    message_codec
);
criterion_main!(benches);
