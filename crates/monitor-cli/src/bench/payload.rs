//! The report every reporter writes, `{"code":"bench","seq":<n>,"ts":<ns>,"pad":"x…"}`
//! padded to its size, and reading its `seq` and `ts` back where a subscriber finds it:
//! without a JSON parser, since the server forwards the report byte for byte.

use monitor_proto::message::reply::SUCCESS_PREFIX;
use monitor_proto::HEADER_LEN;

/// The `code` of every bench report, and the subscribers' only topic.
pub const BENCH_CODE: &str = "bench";
/// Below this size a payload comes out larger than asked: its keys and numbers alone
/// take up to 64 bytes.
pub const MIN_SIZE: usize = 64;

/// The length of a report frame of a `size`-byte report: the header and the body, which is
/// never shorter than its keys and numbers ([`MIN_SIZE`]).
pub fn report_frame_len(size: usize) -> usize {
    HEADER_LEN + size.max(MIN_SIZE)
}

/// Appends the decimal form of `v`.
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

const PAYLOAD_HEAD: &[u8] = b"{\"code\":\"bench\",\"seq\":";
/// How a report with a topic of its own begins: `{"code":"bench.<topic>","seq":…`.
const TOPIC_HEAD: &[u8] = b"{\"code\":\"bench.";
const TOPIC_TAIL: &[u8] = b"\",\"seq\":";

/// Appends one report of exactly `size` bytes (or the minimum its numbers need).
pub fn write_payload(out: &mut Vec<u8>, size: usize, seq: u64, ts_ns: u64) {
    let start = out.len();
    out.extend_from_slice(PAYLOAD_HEAD);
    finish_payload(out, start, size, seq, ts_ns);
}

/// [`write_payload`] with code `bench.<topic>` (distinct topics).
pub fn write_topic_payload(out: &mut Vec<u8>, size: usize, topic: u64, seq: u64, ts_ns: u64) {
    let start = out.len();
    out.extend_from_slice(TOPIC_HEAD);
    push_u64(out, topic);
    out.extend_from_slice(TOPIC_TAIL);
    finish_payload(out, start, size, seq, ts_ns);
}

/// The rest of a payload that began at `start`: seq, timestamp, padding.
#[inline]
fn finish_payload(out: &mut Vec<u8>, start: usize, size: usize, seq: u64, ts_ns: u64) {
    push_u64(out, seq);
    out.extend_from_slice(b",\"ts\":");
    push_u64(out, ts_ns);
    out.extend_from_slice(b",\"pad\":\"");
    let used = out.len() - start + 2; // + the closing `"}`
    if size > used {
        out.resize(out.len() + (size - used), b'x');
    }
    out.extend_from_slice(b"\"}");
}

pub(super) fn parse_digits(p: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut i = 0;
    while i < p.len() && p[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(p[i] - b'0'))?;
        i += 1;
    }
    (i > 0).then_some((v, i))
}

/// `(seq, ts)` of a push body that wraps a bench report (code `bench` or `bench.<topic>`).
/// The server forwards the report byte for byte, so both numbers sit at known places.
#[inline]
pub fn parse_push(body: &[u8]) -> Option<(u64, u64)> {
    parse_report(body.strip_prefix(SUCCESS_PREFIX)?)
}

/// `(seq, ts)` of a bench report as the reporter sent it: a push's `data`, or a
/// WebSocket subscriber's message, which is the report itself.
#[inline]
pub fn parse_report(report: &[u8]) -> Option<(u64, u64)> {
    let rest = match report.strip_prefix(PAYLOAD_HEAD) {
        Some(rest) => rest,
        None => {
            let rest = report.strip_prefix(TOPIC_HEAD)?;
            let (_, n) = parse_digits(rest)?;
            rest[n..].strip_prefix(TOPIC_TAIL)?
        }
    };
    let (seq, n) = parse_digits(rest)?;
    let rest = rest[n..].strip_prefix(b",\"ts\":")?;
    let (ts, _) = parse_digits(rest)?;
    Some((seq, ts))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use monitor_proto::message::reply;

    #[test]
    fn payload_is_exact_and_parses_back_through_a_push() {
        for size in [MIN_SIZE + 20, 200, 1000, 64 * 1024] {
            let mut v = Vec::new();
            write_payload(&mut v, size, 123_456, 9_876_543_210);
            assert_eq!(v.len(), size);
            let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
            assert_eq!(j["seq"], 123_456);
            assert_eq!(j["ts"], 9_876_543_210u64);
            assert_eq!(j["code"], BENCH_CODE);
            let push = reply::push(&v);
            assert_eq!(parse_push(&push), Some((123_456, 9_876_543_210)));
        }
        let mut v = Vec::new();
        write_payload(&mut v, 1, 0, 0);
        assert!(v.len() <= MIN_SIZE);
        assert_eq!(parse_push(&reply::push(&v)), Some((0, 0)));
        assert_eq!(parse_push(b"{}"), None);
        assert_eq!(
            parse_push(&reply::push(br#"{"code":"bench","seq":x}"#)),
            None
        );
    }

    #[test]
    fn topic_payload_is_exact_and_parses_back_through_a_push() {
        for (size, topic) in [(100, 0), (200, 9_999), (1000, 999_999)] {
            let mut v = Vec::new();
            write_topic_payload(&mut v, size, topic, 123_456, 9_876_543_210);
            assert_eq!(v.len(), size);
            let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
            assert_eq!(j["code"], format!("bench.{topic}"));
            assert_eq!(j["seq"], 123_456);
            assert_eq!(parse_push(&reply::push(&v)), Some((123_456, 9_876_543_210)));
        }
        for bad in [
            &br#"{"code":"bench.","seq":1,"ts":2}"#[..],
            br#"{"code":"bench.1x","seq":1,"ts":2}"#,
        ] {
            assert_eq!(parse_push(&reply::push(bad)), None);
        }
    }
}
