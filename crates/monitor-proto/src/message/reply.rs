//! The reply envelope `{"errCode","msg","data"}` that every server → client body is, in
//! that key order.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codec::BodyLen;
use crate::error::BodyError;

/// What every successful body starts with; `data` follows, then `}`.
pub const SUCCESS_PREFIX: &[u8] = br#"{"errCode":0,"msg":"success","data":"#;

/// `errCode` of a successful reply.
pub const ERR_CODE_OK: i64 = 0;
/// `errCode` of a refusal.
pub const ERR_CODE_FAILED: i64 = -1;

/// A success envelope around raw JSON `data`, copied in unchanged (a report is forwarded
/// byte for byte, never re-serialised). `data` must be valid JSON; the caller checked it.
pub fn success_raw(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(success_raw_len(data.len()));
    out.put_slice(SUCCESS_PREFIX);
    out.put_slice(data);
    out.put_u8(b'}');
    out.freeze()
}

/// A success envelope around `data` serialised by serde.
pub fn success<T: Serialize + ?Sized>(data: &T) -> Bytes {
    let mut out = SUCCESS_PREFIX.to_vec();
    // Serialising plain data types into a Vec cannot fail; `null` is a safe fallback.
    if serde_json::to_writer(&mut out, data).is_err() {
        out.extend_from_slice(b"null");
    }
    out.push(b'}');
    out.into()
}

/// The length of [`success_raw`] around `data_len` bytes of data.
const fn success_raw_len(data_len: usize) -> usize {
    SUCCESS_PREFIX.len() + data_len + 1
}

/// The push body of a report: a success envelope with the report's JSON text as `data`.
pub fn push(report_json: &[u8]) -> Bytes {
    success_raw(report_json)
}

/// The length of [`push`] for a report of `report_len` bytes, without building it.
pub const fn push_len(report_len: usize) -> usize {
    success_raw_len(report_len)
}

/// A refusal: `{"errCode":-1,"msg":<msg>,"data":null}`.
pub fn error(msg: &str) -> Bytes {
    #[derive(Serialize)]
    struct Failed<'a> {
        #[serde(rename = "errCode")]
        err_code: i64,
        msg: &'a str,
        data: (),
    }
    serde_json::to_vec(&Failed {
        err_code: ERR_CODE_FAILED,
        msg,
        data: (),
    })
    .map(Bytes::from)
    .unwrap_or_else(|_| Bytes::from_static(br#"{"errCode":-1,"msg":"error","data":null}"#))
}

/// The heartbeat reply: `data = {"heartbeat": <unix seconds>}`.
pub fn heartbeat(unix_secs: u64) -> Bytes {
    success(&HeartbeatData {
        heartbeat: unix_secs,
    })
}

/// The report acknowledgement: `data = {"delivered": <subscribers reached>}`.
pub fn report_ack(delivered: u64) -> Bytes {
    report_ack_with(&ReportAckData::new(delivered))
}

/// A report acknowledgement with every member of `data`: `{"delivered":N}`, and
/// `"cluster":true` only when it is set (a clustered server's ack).
///
/// ```
/// use monitor_proto::message::reply::{self, ReportAckData};
/// assert_eq!(
///     &reply::report_ack_with(&ReportAckData::new(2).with_cluster(true))[..],
///     br#"{"errCode":0,"msg":"success","data":{"delivered":2,"cluster":true}}"#
/// );
/// assert_eq!(reply::report_ack_with(&ReportAckData::new(2)), reply::report_ack(2));
/// ```
pub fn report_ack_with(data: &ReportAckData) -> Bytes {
    success(data)
}

/// The X25519 key reply: `data = {"pubkey": <base64>}`.
pub fn key_pubkey(pubkey_b64: &str) -> Bytes {
    success(&KeyReplyData {
        pubkey: Some(pubkey_b64.to_owned()),
        ..KeyReplyData::default()
    })
}

/// The legacy key reply: `data = {"cipher_key": <32 characters>}`.
pub fn key_legacy(cipher_key: &str) -> Bytes {
    success(&KeyReplyData {
        cipher_key: Some(cipher_key.to_owned()),
        ..KeyReplyData::default()
    })
}

/// The reply to a key request that only authenticated: `data = {"authenticated": true}`.
pub fn authenticated() -> Bytes {
    success(&KeyReplyData {
        authenticated: Some(true),
        ..KeyReplyData::default()
    })
}

/// `data` of a heartbeat reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeartbeatData {
    /// Server time, unix seconds.
    pub heartbeat: u64,
}

/// `data` of a report acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReportAckData {
    /// Number of subscribers the report was queued for (on the server that took it).
    pub delivered: u64,
    /// A clustered server also published the report to the other nodes (an extension:
    /// absent, and `false`, everywhere else).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cluster: bool,
}

impl ReportAckData {
    /// An acknowledgement of `delivered` subscribers, not published to a cluster.
    pub const fn new(delivered: u64) -> ReportAckData {
        ReportAckData {
            delivered,
            cluster: false,
        }
    }

    /// The same, saying whether the report was also published to the cluster.
    #[must_use]
    pub const fn with_cluster(mut self, cluster: bool) -> ReportAckData {
        self.cluster = cluster;
        self
    }
}

// Serde's `skip_serializing_if` takes a function of a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// `data` of a key reply; exactly one member is present. `Debug` never shows a
/// `cipher_key`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyReplyData {
    /// X25519 exchange: the server's public key, base64.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pubkey: Option<String>,
    /// Legacy exchange: the key itself.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cipher_key: Option<String>,
    /// Token-only key request: the connection is authenticated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub authenticated: Option<bool>,
}

impl std::fmt::Debug for KeyReplyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyReplyData")
            .field("pubkey", &self.pubkey)
            .field("cipher_key", &self.cipher_key.as_ref().map(|_| ".."))
            .field("authenticated", &self.authenticated)
            .finish()
    }
}

/// A parsed reply envelope, as a client receives it. `Debug` shows the length of `data`,
/// not its bytes.
#[derive(Clone, Deserialize)]
#[non_exhaustive]
pub struct Reply {
    /// `0` success, `-1` failure.
    #[serde(rename = "errCode")]
    pub err_code: i64,
    /// `"success"` or the reason for a failure.
    pub msg: String,
    /// The payload, as raw JSON (`null` on failure).
    pub data: Box<RawValue>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("err_code", &self.err_code)
            .field("msg", &self.msg)
            .field("data", &BodyLen(self.data.get().len()))
            .finish()
    }
}

impl Reply {
    /// Parses an envelope.
    ///
    /// # Errors
    /// [`BodyError::InvalidJson`] unless `body` is a JSON object with `errCode`, `msg` and
    /// `data`.
    ///
    /// # Example
    /// ```
    /// use monitor_proto::message::reply::{self, Reply, ReportAckData};
    /// let ack = Reply::parse(&reply::report_ack(3)).unwrap();
    /// assert!(ack.is_success());
    /// assert_eq!(ack.data_as::<ReportAckData>().unwrap().delivered, 3);
    /// ```
    pub fn parse(body: &[u8]) -> Result<Reply, BodyError> {
        serde_json::from_slice(body).map_err(BodyError::invalid_json)
    }

    /// Whether `errCode` is 0.
    pub fn is_success(&self) -> bool {
        self.err_code == ERR_CODE_OK
    }

    /// Parses `data` as `T`.
    ///
    /// # Errors
    /// [`BodyError::InvalidJson`] if `data` does not fit `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        serde_json::from_str(self.data.get()).map_err(BodyError::invalid_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes() {
        assert_eq!(
            &heartbeat(1_700_000_000)[..],
            br#"{"errCode":0,"msg":"success","data":{"heartbeat":1700000000}}"#
        );
        assert_eq!(
            &report_ack(3)[..],
            br#"{"errCode":0,"msg":"success","data":{"delivered":3}}"#
        );
        assert_eq!(
            &error("malformed body: missing code")[..],
            br#"{"errCode":-1,"msg":"malformed body: missing code","data":null}"#
        );
        assert_eq!(
            &push(br#"{"code":"demo"}"#)[..],
            br#"{"errCode":0,"msg":"success","data":{"code":"demo"}}"#
        );
        assert_eq!(
            &key_pubkey("a/b+")[..],
            br#"{"errCode":0,"msg":"success","data":{"pubkey":"a/b+"}}"#
        );
        assert_eq!(
            &authenticated()[..],
            br#"{"errCode":0,"msg":"success","data":{"authenticated":true}}"#
        );
        assert_eq!(
            &error("say \"hi\"")[..],
            br#"{"errCode":-1,"msg":"say \"hi\"","data":null}"#
        );
    }

    #[test]
    fn report_acks_say_cluster_only_when_clustered() {
        let plain: ReportAckData = Reply::parse(&report_ack(4)).unwrap().data_as().unwrap();
        assert_eq!(plain, ReportAckData::new(4));
        assert!(!plain.cluster, "an ack without the member is not clustered");
        let clustered = report_ack_with(&ReportAckData::new(4).with_cluster(true));
        let parsed: ReportAckData = Reply::parse(&clustered).unwrap().data_as().unwrap();
        assert_eq!(parsed, ReportAckData::new(4).with_cluster(true));
    }

    #[test]
    fn parse_replies() {
        let r = Reply::parse(&error("nope")).unwrap();
        assert!(!r.is_success());
        assert_eq!(r.msg, "nope");
        assert_eq!(r.data.get(), "null");
        let r = Reply::parse(&key_legacy("Ab3dEf6hIj9kLmN0pQrStUvWxYz12345")).unwrap();
        let data: KeyReplyData = r.data_as().unwrap();
        assert_eq!(
            data.cipher_key.as_deref(),
            Some("Ab3dEf6hIj9kLmN0pQrStUvWxYz12345")
        );
        assert!(
            !format!("{data:?}").contains("Ab3d"),
            "keys stay out of Debug"
        );
        assert!(Reply::parse(b"[]").is_err());
        assert!(Reply::parse(b"{\"errCode\":0}").is_err());
        assert!(r.data_as::<ReportAckData>().is_err());
    }
}
