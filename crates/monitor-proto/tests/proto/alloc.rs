//! Decoding a stream of plain frames allocates nothing per frame once the read buffer is
//! warm: the body is a slice of the read buffer, and the buffer's space is reclaimed in
//! place once the frames are dropped. Parsing a subscribe costs at most `max_topics`
//! patterns, however many topics it lists.
//!
//! `allocation_counter` installs a counting global allocator for this test binary; it
//! counts per thread, so tests running in parallel on other threads do not disturb a count.

use bytes::{Bytes, BytesMut};
use monitor_proto::message::request::Subscribe;
use monitor_proto::message::topic::TopicLimits;
use monitor_proto::{
    BodyError, Frame, FrameCodec, Header, MsgType, Recipient, ServerCodec, ServerMessage,
    SharedBody, Uuid,
};
use tokio_util::codec::{Decoder, Encoder};

const FRAMES: usize = 20_000;

/// Plain frames of mixed sizes, as a socket would deliver them.
fn wire(frames: usize) -> Vec<u8> {
    let mut codec = FrameCodec::new();
    let mut out = BytesMut::new();
    for i in 0..frames {
        let body = Bytes::from(vec![b'x'; [0, 64, 1024, 3000][i % 4]]);
        let header = Header::new(MsgType::Report, Uuid([b'a'; 33]));
        codec.encode(Frame::new(header, body), &mut out).unwrap();
    }
    out.to_vec()
}

/// Reads `wire` through a 64 KiB buffer in 8000-byte "socket reads" (so frames straddle
/// reads), decoding with `decode` and dropping each frame; returns the allocations made
/// after the first quarter of the stream, and the number of frames decoded.
fn allocations_while_decoding(
    wire: &[u8],
    mut decode: impl FnMut(&mut BytesMut) -> bool,
) -> (u64, usize) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut decoded = 0;
    let reads: Vec<&[u8]> = wire.chunks(8000).collect();
    let (warm_up, measured) = reads.split_at(reads.len() / 4);
    let mut feed = |reads: &[&[u8]]| {
        for read in reads {
            // FramedRead does this: make room, then read into the spare capacity.
            buf.reserve(read.len());
            buf.extend_from_slice(read);
            while decode(&mut buf) {
                decoded += 1;
            }
        }
    };
    feed(warm_up);
    let info = allocation_counter::measure(|| feed(measured));
    (info.count_total, decoded)
}

#[test]
fn frame_codec_decodes_without_allocating_per_frame() {
    let wire = wire(FRAMES);
    let mut codec = FrameCodec::new();
    let (allocs, decoded) = allocations_while_decoding(
        &wire,
        |buf| matches!(codec.decode(buf), Ok(Some(frame)) if frame.header.length >= 45),
    );
    assert_eq!(decoded, FRAMES);
    assert_eq!(
        allocs,
        0,
        "allocations while decoding {} warm frames",
        FRAMES * 3 / 4
    );
}

#[test]
fn message_codec_decodes_plain_frames_without_allocating_per_frame() {
    let wire = wire(FRAMES);
    let mut codec = ServerCodec::new();
    let (allocs, decoded) = allocations_while_decoding(
        &wire,
        |buf| matches!(codec.decode(buf), Ok(Some(received)) if received.body.is_ok()),
    );
    assert_eq!(decoded, FRAMES);
    assert_eq!(allocs, 0);
}

#[test]
fn the_counter_sees_allocations() {
    // The check above can fail: a decoder that copied each body would be counted.
    let wire = wire(100);
    let mut codec = FrameCodec::new();
    let (allocs, _) = allocations_while_decoding(&wire, |buf| match codec.decode(buf) {
        Ok(Some(frame)) => {
            let copy = frame.body.to_vec();
            std::hint::black_box(copy);
            true
        }
        _ => false,
    });
    assert!(allocs > 50, "{allocs}");
}

#[test]
fn encoding_into_a_warm_buffer_does_not_allocate() {
    let mut codec = ServerCodec::new();
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut buf = BytesMut::with_capacity(1 << 20);
    // The first clone of a Vec-backed `Bytes` moves it to a shared allocation, once.
    drop(body.clone());
    let info = allocation_counter::measure(|| {
        for _ in 0..500 {
            let msg = ServerMessage::new(MsgType::Push, Uuid([b'a'; 33]), body.clone());
            codec.encode(msg, &mut buf).unwrap();
        }
    });
    assert_eq!(info.count_total, 0);
    assert_eq!(buf.len(), 500 * (45 + 1024));
}

/// The fan-out path: one shared body to many recipients copies it into the write buffer
/// and nothing else, and makes its compressed form once for all of them.
#[test]
fn encoding_a_shared_body_does_not_allocate_and_compresses_once() {
    let codec = ServerCodec::new();
    let body = SharedBody::new(vec![b'x'; 1024]);
    let mut buf = BytesMut::with_capacity(1 << 20);
    let plain = Recipient::new(Uuid([b'p'; 33]));
    let info = allocation_counter::measure(|| {
        for _ in 0..500 {
            codec
                .encode_shared(MsgType::Push, &plain, &body, &mut buf)
                .unwrap();
        }
    });
    assert_eq!(info.count_total, 0);
    assert_eq!(buf.len(), 500 * (45 + 1024));

    let compressed = Recipient::new(Uuid([b'c'; 33])).compress(true);
    codec
        .encode_shared(MsgType::Push, &compressed, &body, &mut buf)
        .unwrap();
    let zlib_len = body.compressed().len();
    let info = allocation_counter::measure(|| {
        for _ in 0..500 {
            codec
                .encode_shared(MsgType::Push, &compressed, &body, &mut buf)
                .unwrap();
        }
    });
    assert_eq!(info.count_total, 0, "the zlib form is made once");
    assert_eq!(buf.len(), 500 * (45 + 1024) + 501 * (45 + zlib_len));
}

#[test]
fn compressed_and_inflated_bodies_hold_no_spare_capacity() {
    use monitor_proto::layer::compress::{deflate, inflate};
    // Compressible: 1 MiB deflates to about 1 KiB, inside an allocation sized for the
    // worst case (more than the input).
    let json = vec![b'x'; 1 << 20];
    let mut packed = None;
    let held = allocation_counter::measure(|| packed = Some(deflate(&json))).bytes_current;
    let packed = packed.unwrap();
    assert!(
        held <= packed.len() as i64 + 64,
        "{held} bytes held for {}",
        packed.len()
    );
    // Inflating grows by doubling: the result must not keep the last doubling's slack.
    let mut inflated = None;
    let held = allocation_counter::measure(|| inflated = Some(inflate(&packed, 2 << 20).unwrap()))
        .bytes_current;
    assert_eq!(inflated.unwrap().len(), json.len());
    assert!(held <= json.len() as i64 + 64, "{held} bytes held");
}

#[test]
fn a_large_key_request_is_parsed_without_a_value_tree() {
    use monitor_proto::message::request::KeyRequest;
    // 1 MiB of `0,`: as a tree of JSON values it would take about 16 bytes per element.
    let mut body = br#"{"pad":["#.to_vec();
    body.extend(std::iter::repeat_n(&b"0,"[..], 1 << 19).flatten());
    body.extend_from_slice(br#"0],"pubkey":"k"}"#);
    let mut parsed = None;
    let peak = allocation_counter::measure(|| parsed = Some(KeyRequest::parse(&body))).bytes_max;
    assert_eq!(parsed.unwrap().unwrap().pubkey.as_deref(), Some("k"));
    assert!(
        peak < 4096,
        "{peak} bytes at the peak for a {} byte body",
        body.len()
    );
}

/// The attack: a subscribe body of `count` one-letter topics (`"t",` is 4 bytes each),
/// zlib-compressed as a client would send it; returns the compressed body and the
/// allocation count and peak of parsing the inflated body with the default limits.
fn subscribe_with_topics(count: usize) -> (usize, u64, u64, Result<Subscribe, BodyError>) {
    use monitor_proto::layer::compress::{deflate, inflate};
    let mut json = br#"{"code":"c","topics":["#.to_vec();
    json.extend(std::iter::repeat_n(&br#""t","#[..], count).flatten());
    json.extend_from_slice(br#""t"]}"#);
    let packed = deflate(&json);
    let body = inflate(&packed, 8 << 20).unwrap();
    assert_eq!(body.len(), json.len());
    let limits = TopicLimits::default();
    let mut parsed = None;
    let info = allocation_counter::measure(|| parsed = Some(Subscribe::parse(body, &limits)));
    (
        packed.len(),
        info.count_total,
        info.bytes_max,
        parsed.unwrap(),
    )
}

#[test]
fn a_million_topics_cost_what_max_topics_cost() {
    let (packed, allocs, peak, parsed) = subscribe_with_topics(1_000_000);
    assert!(packed < 8 * 1024, "{packed} bytes compressed");
    let err = parsed.unwrap_err();
    assert_eq!(
        err.to_string(),
        "topics: 1000001 patterns, more than max_topics 64"
    );
    // The code, the pattern list (grown to 64 at most) and 64 patterns: O(max_topics).
    assert!(allocs <= 64 + 16, "{allocs} allocations");
    assert!(peak < 8 * 1024, "{peak} bytes at the peak");

    // Exactly what a body one over the limit costs: nothing depends on the count.
    let (_, allocs_65, peak_65, parsed) = subscribe_with_topics(64);
    assert!(matches!(
        parsed,
        Err(BodyError::TooManyTopics { count: 65, max: 64 })
    ));
    assert_eq!((allocs, peak), (allocs_65, peak_65));
}
