//! Client request bodies (types 1, 3, 5, 7): parsing, as a server does, and building, as
//! a client does.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::header::MsgType;
use crate::message::topic::TopicPattern;

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
    /// Parses the plaintext body of a request of type `msg_type`.
    ///
    /// # Errors
    /// [`Error::MalformedBody`] for a body its type does not allow;
    /// [`Error::WrongDirection`] for a server → client type.
    pub fn parse(msg_type: MsgType, body: Bytes) -> Result<Request, Error> {
        match msg_type {
            MsgType::KeyRequest => KeyRequest::parse(&body).map(Request::Key),
            MsgType::Heartbeat => Ok(Request::Heartbeat),
            MsgType::Subscribe => Subscribe::parse(body).map(Request::Subscribe),
            MsgType::Report => Report::parse(body).map(Request::Report),
            other => Err(Error::WrongDirection {
                msg_type: other,
                accept: crate::Direction::ClientToServer,
            }),
        }
    }
}

/// What a key request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// [`Error::MalformedBody`] if a non-empty body is not UTF-8 JSON, or names `pubkey`
    /// or `token` twice (as a duplicate `code` is refused in a subscribe).
    pub fn parse(body: &[u8]) -> Result<KeyRequest, Error> {
        let mut request = KeyRequest {
            pubkey: None,
            token: None,
        };
        let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Ok(request);
        };
        let text = std::str::from_utf8(body)
            .map_err(|e| Error::malformed(format!("invalid UTF-8: {e}")))?;
        let invalid = |e: serde_json::Error| Error::malformed(format!("invalid JSON: {e}"));
        if *first != b'{' {
            // Any other JSON value asks for the legacy exchange; it only has to be JSON.
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(invalid)?;
            return Ok(request);
        }
        let fields: KeyRequestFields<'_> = serde_json::from_str(text).map_err(invalid)?;
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

/// A subscription (type 5).
#[derive(Debug, Clone)]
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
fn object_text(body: &[u8]) -> Result<&str, Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(Error::malformed("empty body, expected a JSON object")),
        Some(_) => return Err(Error::malformed("not a JSON object")),
    }
    std::str::from_utf8(body).map_err(|e| Error::malformed(format!("invalid UTF-8: {e}")))
}

fn as_string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<Cow<'_, str>>(raw.get())
        .ok()
        .map(Cow::into_owned)
}

impl Subscribe {
    /// Parses a subscribe body: a JSON object with a non-empty string `code`, and if
    /// present, `topics` as an array of strings.
    ///
    /// # Errors
    /// [`Error::MalformedBody`], whose reason goes after `"malformed body: "` in the reply.
    pub fn parse(raw: Bytes) -> Result<Subscribe, Error> {
        let text = object_text(&raw)?;
        let fields: SubscribeFields<'_> = serde_json::from_str(text)
            .map_err(|e| Error::malformed(format!("invalid JSON: {e}")))?;
        let code = match fields.code {
            None => return Err(Error::malformed("missing code")),
            Some(c) => match as_string(c) {
                Some(code) if !code.is_empty() => code,
                _ => return Err(Error::malformed("code must be a non-empty string")),
            },
        };
        let topics = match fields.topics {
            None => Vec::new(),
            Some(t) => serde_json::from_str::<Vec<Cow<'_, str>>>(t.get())
                .map_err(|_| Error::malformed("topics must be an array of strings"))?
                .iter()
                .map(|p| TopicPattern::parse(p))
                .collect(),
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

/// A report (type 7): one JSON object, forwarded as sent.
#[derive(Debug, Clone)]
pub struct Report {
    /// The report's string `code`, if it has one.
    pub code: Option<String>,
    /// The body as sent, byte for byte.
    pub raw: Bytes,
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
    /// [`Error::MalformedBody`] otherwise.
    pub fn parse(raw: Bytes) -> Result<Report, Error> {
        let text = object_text(&raw)?;
        let fields: ReportFields<'_> = serde_json::from_str(text)
            .map_err(|e| Error::malformed(format!("invalid JSON: {e}")))?;
        let code = fields.code.and_then(as_string);
        Ok(Report { code, raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(err: Error) -> String {
        match err {
            Error::MalformedBody { reason } => reason,
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
        let s = Subscribe::parse(Bytes::from_static(br#"{"code":"demo","status":"1"}"#)).unwrap();
        assert_eq!(s.code, "demo");
        assert!(s.topics.is_empty() && s.wants(None));
        assert_eq!(&s.raw[..], br#"{"code":"demo","status":"1"}"#);

        let s = Subscribe::parse(Bytes::from_static(
            br#"{"code":"c","topics":["host.*","db"]}"#,
        ))
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
            let got = reason(Subscribe::parse(Bytes::copy_from_slice(body)).unwrap_err());
            assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
        }
        let got = reason(Subscribe::parse(Bytes::from_static(b"{\"code\":")).unwrap_err());
        assert!(got.starts_with("invalid JSON"), "{got}");
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
            Request::parse(MsgType::Heartbeat, Bytes::from_static(b"junk")),
            Ok(Request::Heartbeat)
        ));
        assert!(matches!(
            Request::parse(MsgType::Push, Bytes::new()),
            Err(Error::WrongDirection { .. })
        ));
    }
}
