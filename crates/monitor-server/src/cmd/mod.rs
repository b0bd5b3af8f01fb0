//! The request handlers: each takes one decoded request and the connection's state, does
//! what it asks (a key exchange, a subscription, a publication), and returns what to send
//! back. They know nothing of sockets or frames, so any transport's connection loop
//! (the binary protocol today, a WebSocket later) dispatches to the same handlers, and a
//! new check (authentication, say) is a step in a handler, not a branch in a loop.

mod auth;
mod key;
mod report;
mod subscribe;

pub(crate) use report::{publish, publish_here};

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use monitor_proto::message::reply;
use monitor_proto::{BodyError, Header, MsgType, Request, SessionKey};

use crate::config::Settings;
use crate::hub::Wakes;
use crate::registry::ConnEntry;
use crate::session::Session;
use crate::state::Shared;

/// What a handler works with besides the request.
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) settings: &'a Settings,
    pub(crate) session: &'a mut Session,
    /// The connection in the server's registry (what it authenticated as).
    pub(crate) entry: &'a ConnEntry,
    /// Subscribers to wake once the reports of this read are all published.
    pub(crate) wakes: &'a mut Wakes,
    /// The peer, for the logs.
    pub(crate) peer: &'a str,
}

/// Why a handler ends the connection after its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// A malformed subscribe: answered, then closed (spec §3).
    MalformedSubscribe,
    /// A wrong token: answered "unauthorized", then closed (spec §6).
    Unauthorized,
    /// A subscribe outside the grants, or before authenticating (spec §6).
    ForbiddenSubscribe,
}

/// What to send back for one request, and what follows.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The reply's type (the request's reply type).
    pub(crate) msg_type: MsgType,
    /// The reply body (a reply envelope).
    pub(crate) json: Bytes,
    /// Encrypt the reply (when the request asked and the reply type allows it).
    pub(crate) encrypt: bool,
    /// A session key to install once the reply is encoded (a key exchange).
    pub(crate) key: Option<SessionKey>,
    /// Close the connection once the reply is written.
    pub(crate) ending: Option<Ending>,
}

impl Answer {
    fn reply(header: &Header, msg_type: MsgType, json: Bytes) -> Answer {
        Answer {
            msg_type,
            json,
            encrypt: header.cipher,
            key: None,
            ending: None,
        }
    }
}

/// Handles one request whose body passed the layers (`body`), or answers why it did not.
/// `header.msg_type` is a client-to-server type: the codec refuses the others.
pub(crate) fn handle(ctx: &mut Ctx<'_>, header: &Header, body: Result<Bytes, BodyError>) -> Answer {
    let msg_type = header.msg_type;
    let reply_type = msg_type.reply_type().unwrap_or(MsgType::ReportAck);
    if msg_type == MsgType::Heartbeat {
        // Its body, if any, is ignored, even one that fails its layers.
        return heartbeat(header);
    }
    let limits = ctx.settings.topic_limits();
    match body.and_then(|b| Request::parse(msg_type, b, &limits)) {
        Ok(Request::Key(request)) => key::handle(ctx, header, &request),
        Ok(Request::Subscribe(subscribe)) => subscribe::handle(ctx, header, subscribe),
        Ok(Request::Report(report)) => report::handle(ctx, header, &report),
        Ok(Request::Heartbeat) => heartbeat(header),
        Err(e) => malformed_request(ctx, header, reply_type, &e),
    }
}

/// The reply to a request that asked for encryption before any key exchange: plaintext,
/// and the request is not carried out.
pub(crate) fn no_session_key(header: &Header) -> Option<Answer> {
    let reply_type = header.msg_type.reply_type()?;
    if !header.cipher || reply_type.never_encrypted() {
        return None;
    }
    let mut answer = Answer::reply(
        header,
        reply_type,
        reply::error(&BodyError::NoSessionKey.to_string()),
    );
    answer.encrypt = false;
    Some(answer)
}

fn heartbeat(header: &Header) -> Answer {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut answer = Answer::reply(header, MsgType::HeartbeatReply, reply::heartbeat(now));
    answer.encrypt = false;
    answer
}

/// A body that failed its layers or its parse, answered by its type's rule (spec §3): a
/// subscribe is refused and closed, a report or a key request refused.
fn malformed_request(
    ctx: &mut Ctx<'_>,
    header: &Header,
    reply_type: MsgType,
    e: &BodyError,
) -> Answer {
    let msg = malformed(e);
    ctx.shared
        .stats
        .protocol_error(crate::stats::ProtocolErrorKind::of_body(e));
    let mut answer = Answer::reply(header, reply_type, reply::error(&msg));
    match header.msg_type {
        MsgType::Subscribe => {
            tracing::debug!(peer = %ctx.peer, reason = %msg, "subscribe refused");
            answer.ending = Some(Ending::MalformedSubscribe);
        }
        MsgType::KeyRequest => answer.encrypt = false,
        _ => {}
    }
    answer
}

/// The reply text for a body that failed its layers or its parse: `malformed body: ` and
/// the error with its causes. The body-format errors say `malformed body: ` themselves.
pub(crate) fn malformed(e: &BodyError) -> String {
    match e {
        BodyError::Malformed { .. }
        | BodyError::InvalidJson { .. }
        | BodyError::InvalidUtf8 { .. } => with_causes(e),
        other => format!("malformed body: {}", with_causes(other)),
    }
}

/// [`monitor_proto::error::with_causes`]: an error and its causes, as one line.
pub(crate) use monitor_proto::error::with_causes;

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use monitor_proto::layer::compress::{deflate, inflate};
    use monitor_proto::layer::kex::ServerHandshake;
    use monitor_proto::message::topic::TopicLimits;
    use monitor_proto::{BodyError, MsgType, Request, SessionKey, Uuid};

    use super::{malformed, with_causes};

    fn parse(msg_type: MsgType, body: &[u8]) -> BodyError {
        Request::parse(
            msg_type,
            Bytes::copy_from_slice(body),
            &TopicLimits::new().with_max_topics(2),
        )
        .unwrap_err()
    }

    /// The texts a client is told are those monitor-proto's single error type used to
    /// give (`malformed body: <reason>: <parser's word>`), byte for byte: the expected
    /// strings below are built the way they were built then.
    #[test]
    fn reply_texts_are_unchanged() {
        let json_err = serde_json::from_str::<serde::de::IgnoredAny>("{\"code\":").unwrap_err();
        assert_eq!(
            malformed(&parse(MsgType::Subscribe, b"{\"code\":")),
            format!("malformed body: invalid JSON: {json_err}")
        );
        let not_utf8 = b"{\"a\":\"\xff\"}".to_vec();
        let utf8_err = std::str::from_utf8(&not_utf8).unwrap_err();
        assert_eq!(
            malformed(&parse(MsgType::Report, &not_utf8)),
            format!("malformed body: invalid UTF-8: {utf8_err}")
        );
        assert_eq!(
            malformed(&parse(MsgType::Subscribe, b"{}")),
            "malformed body: missing code"
        );
        assert_eq!(
            malformed(&parse(
                MsgType::Subscribe,
                br#"{"code":"c","topics":["a","b","c"]}"#
            )),
            "malformed body: topics: 3 patterns, more than max_topics 2"
        );
        let zlib_err = flate2::Decompress::new(true)
            .decompress_vec(
                b"not zlib",
                &mut Vec::with_capacity(64),
                flate2::FlushDecompress::None,
            )
            .unwrap_err();
        assert_eq!(
            malformed(&inflate(b"not zlib", 100).unwrap_err()),
            format!("malformed body: bad compressed body: {zlib_err}")
        );
        let mut trailing = deflate(b"{}").to_vec();
        trailing.push(b'x');
        assert_eq!(
            malformed(&inflate(&trailing, 100).unwrap_err()),
            "malformed body: bad compressed body: 1 trailing bytes after the zlib stream"
        );
        assert_eq!(
            malformed(&inflate(&deflate(&[b' '; 200]), 100).unwrap_err()),
            "malformed body: compressed body inflates beyond max_inflated_len 100"
        );
        assert_eq!(
            malformed(&BodyError::NoSessionKey),
            "malformed body: no session key: send a key request first"
        );

        // Key requests are answered with the error itself.
        let uuid = Uuid([b'k'; 33]);
        let b64_err = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode("not base64!")
                .unwrap_err()
        };
        let e = ServerHandshake::new()
            .respond("not base64!", &uuid)
            .unwrap_err();
        assert_eq!(
            with_causes(&e),
            format!("bad public key: not base64: {b64_err}")
        );
        let e = ServerHandshake::new().respond("AAAA", &uuid).unwrap_err();
        assert_eq!(with_causes(&e), "bad public key: 3 bytes, expected 32");
        let e = SessionKey::from_legacy("abc").unwrap_err();
        assert_eq!(with_causes(&e), "bad legacy key: 3 characters, expected 32");
    }
}
