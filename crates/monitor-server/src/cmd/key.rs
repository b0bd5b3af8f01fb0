//! Key request (1 → 2): the X25519 exchange, the legacy exchange when allowed, or a
//! token-only authentication.

use monitor_proto::layer::kex::{generate_legacy_key, ServerHandshake};
use monitor_proto::message::reply;
use monitor_proto::message::request::KeyRequest;
use monitor_proto::{Header, MsgType, SessionKey};

use super::{with_causes, Answer, Ctx};

/// Why the legacy exchange is refused, and what to do instead.
const LEGACY_DISABLED: &str = "legacy key exchange is disabled (the key would travel in the \
     clear): send {\"pubkey\": \"<base64 X25519 public key>\"}, or set legacy_key_exchange = \
     true in the server's [server] config";

pub(super) fn handle(ctx: &mut Ctx<'_>, header: &Header, request: &KeyRequest) -> Answer {
    if let Some(token) = &request.token {
        if let Err(refusal) = super::auth::present_token(ctx, header, MsgType::KeyReply, token) {
            return refusal;
        }
    }
    let (json, key) = if let Some(pubkey) = &request.pubkey {
        match ServerHandshake::new().respond(pubkey, &header.uuid) {
            Ok((server_pubkey, key)) => (reply::key_pubkey(&server_pubkey), Some(key)),
            Err(e) => {
                let reason = with_causes(&e);
                tracing::debug!(peer = %ctx.peer, error = %reason, "key request refused");
                (reply::error(&reason), None)
            }
        }
    } else if request.token.is_some() {
        // A token alone only authenticates (spec §6).
        (reply::authenticated(), None)
    } else if ctx.settings.legacy_key_exchange {
        let cipher_key = generate_legacy_key();
        match SessionKey::from_legacy(&cipher_key) {
            Ok(key) => (reply::key_legacy(&cipher_key), Some(key)),
            Err(e) => (reply::error(&with_causes(&e)), None),
        }
    } else {
        (reply::error(LEGACY_DISABLED), None)
    };
    let mut answer = Answer::reply(header, MsgType::KeyReply, json);
    // Key replies are never encrypted; the new key applies to what follows.
    answer.encrypt = false;
    answer.key = key;
    answer
}
