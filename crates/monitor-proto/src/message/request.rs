//! Client request bodies (types 1, 3, 5, 7): parsing, as a server does, and building, as
//! a client does.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::codec::BodyLen;
use crate::error::BodyError;
use crate::header::MsgType;
use crate::message::topic::{TopicLimits, TopicPattern};

/// An authentication token (protocol §6). Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into())
    }

    /// The token's text, for a constant-time comparison by the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A parsed client request.
#[derive(Debug, Clone)]
pub enum Request {
    /// Type 1.
    Key(KeyRequest),
    /// Type 3; any body is ignored.
    Heartbeat,
    /// Type 5.
    Subscribe(Subscribe),
    /// Type 7.
    Report(Report),
}

impl Request {
    /// Parses the plaintext body of a request of type `msg_type`; a subscribe's
    /// `"topics"` is held to `topic_limits`.
    ///
    /// # Errors
    /// [`BodyError::Malformed`], [`BodyError::InvalidJson`] or [`BodyError::InvalidUtf8`]
    /// for a body its type does not allow; [`BodyError::TooManyTopics`] or
    /// [`BodyError::TopicTooLong`] for a subscribe over `topic_limits`;
    /// [`BodyError::NotARequest`] for a server → client type.
    pub fn parse(
        msg_type: MsgType,
        body: Bytes,
        topic_limits: &TopicLimits,
    ) -> Result<Request, BodyError> {
        match msg_type {
            MsgType::KeyRequest => KeyRequest::parse(&body).map(Request::Key),
            MsgType::Heartbeat => Ok(Request::Heartbeat),
            MsgType::Subscribe => Subscribe::parse(body, topic_limits).map(Request::Subscribe),
            MsgType::Report => Report::parse(body).map(Request::Report),
            other => Err(BodyError::NotARequest { msg_type: other }),
        }
    }
}

/// What a key request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRequest {
    /// A string `pubkey`: the X25519 exchange. Absent: the legacy exchange (unless the
    /// request only carries a token).
    pub pubkey: Option<String>,
    /// A string `token`: authentication.
    pub token: Option<Token>,
}

impl KeyRequest {
    /// Parses a key request body. An empty body, `{}`, or a JSON value with neither a
    /// string `pubkey` nor a string `token` asks for the legacy exchange.
    ///
    /// Parsing borrows from the body: a large body costs no more than its own bytes, not
    /// a tree of values several times its size.
    ///
    /// # Errors
    /// [`BodyError::InvalidUtf8`] or [`BodyError::InvalidJson`] if a non-empty body is not
    /// UTF-8 JSON, or names `pubkey` or `token` twice (as a duplicate `code` is refused in
    /// a subscribe).
    pub fn parse(body: &[u8]) -> Result<KeyRequest, BodyError> {
        let mut request = KeyRequest {
            pubkey: None,
            token: None,
        };
        let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Ok(request);
        };
        let text = std::str::from_utf8(body).map_err(|source| BodyError::InvalidUtf8 { source })?;
        if *first != b'{' {
            // Any other JSON value asks for the legacy exchange; it only has to be JSON.
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(BodyError::invalid_json)?;
            return Ok(request);
        }
        let fields: KeyRequestFields<'_> =
            serde_json::from_str(text).map_err(BodyError::invalid_json)?;
        request.pubkey = fields.pubkey.and_then(as_string);
        request.token = fields.token.and_then(as_string).map(Token);
        Ok(request)
    }

    /// Whether this asks for the legacy exchange.
    pub fn is_legacy(&self) -> bool {
        self.pubkey.is_none() && self.token.is_none()
    }

    /// The body of a key request: `{"pubkey":…,"token":…}` with the members given, `{}`
    /// for none (the legacy exchange).
    pub fn body(pubkey: Option<&str>, token: Option<&str>) -> Bytes {
        let mut map = serde_json::Map::new();
        if let Some(p) = pubkey {
            map.insert("pubkey".into(), p.into());
        }
        if let Some(t) = token {
            map.insert("token".into(), t.into());
        }
        serde_json::Value::Object(map).to_string().into()
    }
}

#[derive(Deserialize)]
struct KeyRequestFields<'a> {
    #[serde(borrow, default)]
    pubkey: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
}

/// A subscription (type 5). `Debug` shows the body's length, not its bytes.
#[derive(Clone)]
#[non_exhaustive]
pub struct Subscribe {
    /// The non-empty `code`.
    pub code: String,
    /// The `topics` patterns; empty means every report.
    pub topics: Vec<TopicPattern>,
    /// A `token`, if the subscribe authenticates too.
    pub token: Option<Token>,
    /// The body as sent: the acknowledgement's `data`.
    pub raw: Bytes,
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribe")
            .field("code", &self.code)
            .field("topics", &self.topics)
            .field("token", &self.token)
            .field("raw", &BodyLen(self.raw.len()))
            .finish()
    }
}

#[derive(Deserialize)]
struct SubscribeFields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    code: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    topics: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
}

/// A member that is present, even as `null` (which `Option` alone would read as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The body as JSON text of one object. UTF-8 is checked over the whole body because the
/// parser skips unknown members without looking inside their strings, and the text is
/// forwarded to subscribers as it is.
fn object_text(body: &[u8]) -> Result<&str, BodyError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(BodyError::malformed("empty body, expected a JSON object")),
        Some(_) => return Err(BodyError::malformed("not a JSON object")),
    }
    std::str::from_utf8(body).map_err(|source| BodyError::InvalidUtf8 { source })
}

fn as_string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<Cow<'_, str>>(raw.get())
        .ok()
        .map(Cow::into_owned)
}

impl Subscribe {
    /// Parses a subscribe body: a JSON object with a non-empty string `code`, and if
    /// present, `topics` as an array of at most `limits.max_topics` strings of at most
    /// `limits.max_topic_len` bytes each.
    ///
    /// Past `max_topics` the parser only counts: however many topics a body lists (a
    /// small zlib body can inflate to a million), parsing allocates no more than
    /// `max_topics` patterns. Each pattern's length is checked before it is made.
    ///
    /// # Errors
    /// [`BodyError::Malformed`], [`BodyError::InvalidJson`] or [`BodyError::InvalidUtf8`],
    /// whose messages start with `"malformed body: "`; [`BodyError::TooManyTopics`] (with
    /// the count) or [`BodyError::TopicTooLong`] (with the index and length of the first
    /// pattern too long) for a subscribe over `limits`, whose messages read well after
    /// that prefix.
    pub fn parse(raw: Bytes, limits: &TopicLimits) -> Result<Subscribe, BodyError> {
        let text = object_text(&raw)?;
        let fields: SubscribeFields<'_> =
            serde_json::from_str(text).map_err(BodyError::invalid_json)?;
        let code = match fields.code {
            None => return Err(BodyError::malformed("missing code")),
            Some(c) => match as_string(c) {
                Some(code) if !code.is_empty() => code,
                _ => return Err(BodyError::malformed("code must be a non-empty string")),
            },
        };
        let topics = match fields.topics {
            None => Vec::new(),
            Some(t) => parse_topics(t.get(), *limits)?,
        };
        let token = fields.token.and_then(as_string).map(Token);
        Ok(Subscribe {
            code,
            topics,
            token,
            raw,
        })
    }

    /// A subscribe body: `{"code":…}`, plus `"topics"` when there are any.
    pub fn body(code: &str, topics: &[&str]) -> Bytes {
        let mut map = serde_json::Map::new();
        map.insert("code".into(), code.into());
        if !topics.is_empty() {
            map.insert("topics".into(), topics.to_vec().into());
        }
        serde_json::Value::Object(map).to_string().into()
    }

    /// Whether this subscription receives a report with this code.
    pub fn wants(&self, code: Option<&str>) -> bool {
        TopicPattern::any_matches(&self.topics, code)
    }
}

/// Reads the JSON text of `"topics"` (one JSON value, as the outer parse found it) under
/// `limits`.
///
/// Memory: at most `max_topics` patterns of at most `max_topic_len` bytes, plus serde_json's
/// one scratch buffer, used only for strings with escapes, reused for each of them, and
/// never longer than the body (which `max_frame_len` or `max_inflated_len` bounds).
fn parse_topics(text: &str, limits: TopicLimits) -> Result<Vec<TopicPattern>, BodyError> {
    let not_strings = |_| BodyError::malformed("topics must be an array of strings");
    let mut de = serde_json::Deserializer::from_str(text);
    let topics = serde::Deserializer::deserialize_seq(&mut de, TopicsVisitor { limits })
        .map_err(not_strings)?;
    de.end().map_err(not_strings)?;
    topics
}

/// Visits the `"topics"` array. A broken limit is not a serde error but the visitor's
/// value (`Ok(Err(..))`), so it keeps its structured [`BodyError`]; a serde error means
/// the value is not an array of strings.
struct TopicsVisitor {
    limits: TopicLimits,
}

impl<'de> Visitor<'de> for TopicsVisitor {
    type Value = Result<Vec<TopicPattern>, BodyError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let TopicLimits {
            max_topics,
            max_topic_len,
        } = self.limits;
        let mut topics: Vec<TopicPattern> = Vec::new();
        while topics.len() < max_topics {
            let index = topics.len();
            match seq.next_element_seed(PatternSeed { max_topic_len })? {
                None => return Ok(Ok(topics)),
                Some(Ok(pattern)) => {
                    if topics.len() == topics.capacity() {
                        // Grow by doubling as `push` would, but never past the limit:
                        // `max_topics` patterns is the memory this body may cost.
                        let room = topics.capacity().max(4).min(max_topics - index);
                        topics.reserve_exact(room);
                    }
                    topics.push(pattern);
                }
                Some(Err(len)) => {
                    // serde_json refuses an array that is not read to its end; the rest
                    // is skipped without being looked at.
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(Err(BodyError::TopicTooLong {
                        index,
                        len,
                        max: max_topic_len,
                    }));
                }
            }
        }
        // At the limit: any further element is checked to be a string and counted, never
        // kept, so the error can give the count at no cost in memory.
        let mut count = max_topics;
        while seq.next_element_seed(SkipString)?.is_some() {
            count = count.saturating_add(1);
        }
        if count > max_topics {
            return Ok(Err(BodyError::TooManyTopics {
                count,
                max: max_topics,
            }));
        }
        Ok(Ok(topics))
    }
}

/// One pattern: its length is checked before the pattern is made, so a long string costs
/// no allocation of ours. `Ok(Err(len))` is a pattern of `len` bytes, over the limit.
struct PatternSeed {
    max_topic_len: usize,
}

impl<'de> DeserializeSeed<'de> for PatternSeed {
    type Value = Result<TopicPattern, usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for PatternSeed {
    type Value = Result<TopicPattern, usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    // serde_json hands over a string without escapes as a slice of the body, and one with
    // escapes decoded into its scratch buffer; both come here.
    fn visit_str<E: serde::de::Error>(self, pattern: &str) -> Result<Self::Value, E> {
        if pattern.len() > self.max_topic_len {
            return Ok(Err(pattern.len()));
        }
        Ok(Ok(TopicPattern::parse(pattern)))
    }
}

/// A string, read and dropped.
struct SkipString;

impl<'de> DeserializeSeed<'de> for SkipString {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for SkipString {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// A report (type 7): one JSON object, forwarded as sent. `Debug` shows the body's length,
/// not its bytes.
#[derive(Clone)]
#[non_exhaustive]
pub struct Report {
    /// The report's string `code`, if it has one.
    pub code: Option<String>,
    /// The body as sent, byte for byte.
    pub raw: Bytes,
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("code", &self.code)
            .field("raw", &BodyLen(self.raw.len()))
            .finish()
    }
}

#[derive(Deserialize)]
struct ReportFields<'a> {
    #[serde(borrow)]
    code: Option<&'a RawValue>,
}

impl Report {
    /// Checks that `raw` is exactly one JSON object and reads its `code`.
    ///
    /// # Errors
    /// [`BodyError::Malformed`], [`BodyError::InvalidJson`] or [`BodyError::InvalidUtf8`]
    /// otherwise.
    pub fn parse(raw: Bytes) -> Result<Report, BodyError> {
        let text = object_text(&raw)?;
        let fields: ReportFields<'_> =
            serde_json::from_str(text).map_err(BodyError::invalid_json)?;
        let code = fields.code.and_then(as_string);
        Ok(Report { code, raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes after `"malformed body: "`: the reason, and the parser's word if any.
    fn reason(err: BodyError) -> String {
        match err {
            BodyError::Malformed { reason } => reason.to_owned(),
            BodyError::InvalidJson { source } => format!("invalid JSON: {source}"),
            BodyError::InvalidUtf8 { source } => format!("invalid UTF-8: {source}"),
            other => panic!("not malformed: {other}"),
        }
    }

    #[test]
    fn key_requests() {
        for legacy in [
            &b""[..],
            b"  ",
            b"{}",
            b"[1,2]",
            br#"{"pubkey":5}"#,
            b"null",
        ] {
            assert!(KeyRequest::parse(legacy).unwrap().is_legacy(), "{legacy:?}");
        }
        let r = KeyRequest::parse(br#"{"pubkey":"abc","token":"s3cret"}"#).unwrap();
        assert_eq!(r.pubkey.as_deref(), Some("abc"));
        assert_eq!(r.token.as_ref().map(Token::expose), Some("s3cret"));
        assert!(!format!("{r:?}").contains("s3cret"));
        assert!(KeyRequest::parse(b"{").is_err());
        assert!(KeyRequest::parse(b"[1,").is_err());
        assert!(KeyRequest::parse(b"{} x").is_err());
        assert!(KeyRequest::parse(b"\"\xff\"").is_err(), "not UTF-8");
        assert!(KeyRequest::parse(br#"{"pubkey":"a","pubkey":"b"}"#).is_err());
        let r = KeyRequest::parse(br#"{"pad":[{"pubkey":"no"}],"token":null,"pubkey":"k\u0031"}"#)
            .unwrap();
        assert_eq!((r.pubkey.as_deref(), r.token), (Some("k1"), None));
        assert_eq!(
            KeyRequest::parse(&KeyRequest::body(Some("k"), None))
                .unwrap()
                .pubkey
                .as_deref(),
            Some("k")
        );
        assert!(KeyRequest::parse(&KeyRequest::body(None, None))
            .unwrap()
            .is_legacy());
    }

    #[test]
    fn subscribe_rules() {
        let s = Subscribe::parse(
            Bytes::from_static(br#"{"code":"demo","status":"1"}"#),
            &TopicLimits::default(),
        )
        .unwrap();
        assert_eq!(s.code, "demo");
        assert!(s.topics.is_empty() && s.wants(None));
        assert_eq!(&s.raw[..], br#"{"code":"demo","status":"1"}"#);

        let s = Subscribe::parse(
            Bytes::from_static(br#"{"code":"c","topics":["host.*","db"]}"#),
            &TopicLimits::default(),
        )
        .unwrap();
        assert!(s.wants(Some("host.cpu")) && s.wants(Some("db")) && !s.wants(Some("dbx")));
        assert!(!s.wants(None));

        let bad: [(&[u8], &str); 8] = [
            (b"{}", "missing code"),
            (br#"{"code":""}"#, "code must be a non-empty string"),
            (br#"{"code":7}"#, "code must be a non-empty string"),
            (
                br#"{"code":"c","topics":"host.*"}"#,
                "topics must be an array of strings",
            ),
            (
                br#"{"code":"c","topics":[1]}"#,
                "topics must be an array of strings",
            ),
            (
                br#"{"code":"c","topics":null}"#,
                "topics must be an array of strings",
            ),
            (b"[]", "not a JSON object"),
            (b"", "empty body, expected a JSON object"),
        ];
        for (body, want) in bad {
            let got = reason(
                Subscribe::parse(Bytes::copy_from_slice(body), &TopicLimits::default())
                    .unwrap_err(),
            );
            assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
        }
        let got = reason(
            Subscribe::parse(Bytes::from_static(b"{\"code\":"), &TopicLimits::default())
                .unwrap_err(),
        );
        assert!(got.starts_with("invalid JSON"), "{got}");
    }

    /// A subscribe body with `n` topics, each `pattern(i)`.
    fn with_topics(n: usize, pattern: impl Fn(usize) -> String) -> Bytes {
        let topics: Vec<String> = (0..n).map(pattern).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        Subscribe::body("c", &topics)
    }

    #[test]
    fn topic_count_limit_is_inclusive() {
        let limits = TopicLimits::default();
        assert_eq!((limits.max_topics, limits.max_topic_len), (64, 256));
        let s = Subscribe::parse(with_topics(64, |i| format!("t{i}")), &limits).unwrap();
        assert_eq!(s.topics.len(), 64);
        assert_eq!(s.topics[63], TopicPattern::parse("t63"));
        assert!(s.topics.capacity() <= 64, "{}", s.topics.capacity());

        let err = Subscribe::parse(with_topics(65, |i| format!("t{i}")), &limits).unwrap_err();
        assert!(matches!(
            err,
            BodyError::TooManyTopics { count: 65, max: 64 }
        ));
        assert_eq!(
            err.to_string(),
            "topics: 65 patterns, more than max_topics 64"
        );
        assert_eq!(err.fault(), crate::Fault::Peer);
        assert!(!crate::Error::from(err).is_fatal());

        let err = Subscribe::parse(with_topics(1000, |_| "*".into()), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topics: 1000 patterns, more than max_topics 64"
        );

        // Other limits, and none at all.
        let two = limits.with_max_topics(2);
        let s = Subscribe::parse(with_topics(2, |_| "a".into()), &two).unwrap();
        assert_eq!(s.topics.len(), 2);
        assert!(Subscribe::parse(with_topics(3, |_| "a".into()), &two).is_err());
        let zero = limits.with_max_topics(0);
        let s = Subscribe::parse(with_topics(0, |_| "a".into()), &zero).unwrap();
        assert!(s.topics.is_empty());
        let s = Subscribe::parse(Bytes::from_static(br#"{"code":"c","topics":[]}"#), &zero);
        assert!(s.unwrap().topics.is_empty());
        let err = Subscribe::parse(with_topics(1, |_| "a".into()), &zero).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topics: 1 patterns, more than max_topics 0"
        );
    }

    #[test]
    fn topic_length_limit_is_inclusive() {
        let limits = TopicLimits::default();
        let at = "x".repeat(256);
        let s = Subscribe::parse(with_topics(4, |_| at.clone()), &limits).unwrap();
        assert_eq!(s.topics[3].to_string(), at);

        let body = with_topics(5, |i| if i == 3 { "y".repeat(300) } else { "a".into() });
        let err = Subscribe::parse(body, &limits).unwrap_err();
        assert!(matches!(
            err,
            BodyError::TopicTooLong {
                index: 3,
                len: 300,
                max: 256
            }
        ));
        assert_eq!(
            err.to_string(),
            "topics[3]: 300 bytes, more than max_topic_len 256"
        );
        assert_eq!(err.fault(), crate::Fault::Peer);
        assert!(!crate::Error::from(err).is_fatal());
        let one_over = with_topics(1, |_| "z".repeat(257));
        assert_eq!(
            Subscribe::parse(one_over, &limits).unwrap_err().to_string(),
            "topics[0]: 257 bytes, more than max_topic_len 256"
        );
    }

    #[test]
    fn topic_length_is_decoded_utf8_bytes() {
        let four = TopicLimits::new().with_max_topic_len(4);
        let parse = |body: &'static [u8]| Subscribe::parse(Bytes::from_static(body), &four);
        // 4 bytes once decoded, though its JSON text is 19.
        let s = parse(br#"{"code":"c","topics":["\u0061\u0062\u0063*"]}"#).unwrap();
        assert_eq!(s.topics, [TopicPattern::parse("abc*")]);
        // 2 characters of 2 bytes each fit; 3 characters (6 bytes) do not.
        let s = parse("{\"code\":\"c\",\"topics\":[\"\u{e9}\u{e9}\"]}".as_bytes()).unwrap();
        assert_eq!(s.topics[0].to_string(), "\u{e9}\u{e9}");
        let err = parse(br#"{"code":"c","topics":["\u00e9\u00e9\u00e9"]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topics[0]: 6 bytes, more than max_topic_len 4"
        );
    }

    #[test]
    fn topic_limits_and_types_together() {
        let limits = TopicLimits::new().with_max_topics(2).with_max_topic_len(3);
        let parse = |body: &'static [u8]| Subscribe::parse(Bytes::from_static(body), &limits);
        // The first pattern too long is reported, even when there are also too many.
        let err = parse(br#"{"code":"c","topics":["a","long",7,"b","c"]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topics[1]: 4 bytes, more than max_topic_len 3"
        );
        // Past the limit elements are counted, and must still be strings.
        let err = parse(br#"{"code":"c","topics":["a","b","c","d"]}"#).unwrap_err();
        assert!(matches!(err, BodyError::TooManyTopics { count: 4, max: 2 }));
        let err = parse(br#"{"code":"c","topics":["a","b",{"x":1}]}"#).unwrap_err();
        assert_eq!(reason(err), "topics must be an array of strings");
        let err = parse(br#"{"code":"c","topics":["a",1]}"#).unwrap_err();
        assert_eq!(reason(err), "topics must be an array of strings");
        // A pattern past the limit is not judged on its length (it is not kept).
        let err = parse(br#"{"code":"c","topics":["a","b","much too long"]}"#).unwrap_err();
        assert!(matches!(err, BodyError::TooManyTopics { count: 3, max: 2 }));
        // The code is checked first.
        let err = parse(br#"{"topics":["a","b","c"]}"#).unwrap_err();
        assert_eq!(reason(err), "missing code");
        // Through Request::parse.
        let request = Request::parse(
            MsgType::Subscribe,
            Bytes::from_static(br#"{"code":"c","topics":["a","b","c"]}"#),
            &limits,
        );
        assert!(matches!(
            request,
            Err(BodyError::TooManyTopics { count: 3, max: 2 })
        ));
    }

    #[test]
    fn subscribe_body_builder() {
        let b = Subscribe::body("demo", &["host.*"]);
        assert_eq!(&b[..], br#"{"code":"demo","topics":["host.*"]}"#);
        assert_eq!(&Subscribe::body("demo", &[])[..], br#"{"code":"demo"}"#);
    }

    #[test]
    fn reports() {
        let r = Report::parse(Bytes::from_static(
            br#" {"code":"a\u0062","x":[1,{"y":2}]} "#,
        ))
        .unwrap();
        assert_eq!(r.code.as_deref(), Some("ab"));
        let r = Report::parse(Bytes::from_static(br#"{"code":{"nested":1}}"#)).unwrap();
        assert_eq!(r.code, None);
        for bad in [
            &b"[1]"[..],
            b"\"s\"",
            b"{} {}",
            b"{\"a\":}",
            b"",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(
                Report::parse(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn request_dispatch() {
        assert!(matches!(
            Request::parse(
                MsgType::Heartbeat,
                Bytes::from_static(b"junk"),
                &TopicLimits::default()
            ),
            Ok(Request::Heartbeat)
        ));
        assert!(matches!(
            Request::parse(MsgType::Push, Bytes::new(), &TopicLimits::default()),
            Err(BodyError::NotARequest {
                msg_type: MsgType::Push
            })
        ));
    }
}
