//! The authentication step of the handlers (spec §6): a token presented in a key request
//! or a subscribe, and whether the connection may subscribe or report as it asks.

use std::sync::Arc;

use monitor_proto::message::reply;
use monitor_proto::message::request::Token;
use monitor_proto::message::topic::TopicPattern;
use monitor_proto::{Header, MsgType};
use tracing::{info, warn};

use super::{Answer, Ctx, Ending};
use crate::auth::TokenCheck;
use crate::stats::Stats;

/// Checks a presented token. `Ok` when it is known (the connection now holds its grant)
/// or when tokens mean nothing on this server; the refusal to send otherwise: a reply of
/// `reply_type` saying "unauthorized", after which the connection closes.
pub(super) fn present_token(
    ctx: &mut Ctx<'_>,
    header: &Header,
    reply_type: MsgType,
    token: &Token,
) -> Result<(), Answer> {
    match ctx.shared.auth().check_token(token.expose()) {
        TokenCheck::Granted(grant) => {
            Stats::add(&ctx.shared.stats.auth_granted, 1);
            info!(peer = %ctx.peer, token = %grant.name, "authenticated");
            ctx.entry.set_grant(Some(Arc::clone(&grant)));
            ctx.session.grant = Some(grant);
            Ok(())
        }
        TokenCheck::NotConfigured => Ok(()),
        TokenCheck::Unknown => {
            Stats::add(&ctx.shared.stats.auth_unauthorized, 1);
            // The token itself is never logged.
            warn!(peer = %ctx.peer, "unauthorized: a token that is not configured");
            let mut answer = Answer::reply(header, reply_type, reply::error("unauthorized"));
            answer.encrypt = false;
            answer.ending = Some(Ending::Unauthorized);
            Err(answer)
        }
    }
}

/// Whether the connection may subscribe to `topics`; the refusal otherwise ("forbidden:
/// …", then the connection closes). Without a grant, only a server that does not require
/// authentication allows it.
pub(super) fn may_subscribe(
    ctx: &mut Ctx<'_>,
    header: &Header,
    topics: &[TopicPattern],
) -> Result<(), Answer> {
    let refused = match &ctx.session.grant {
        Some(grant) => grant.may_subscribe(topics).err(),
        None if ctx.shared.auth().required() => {
            Some("subscribe before authenticating (send a token)".to_owned())
        }
        None => None,
    };
    let Some(what) = refused else { return Ok(()) };
    Err(forbidden(
        ctx,
        header,
        MsgType::Push,
        &what,
        Some(Ending::ForbiddenSubscribe),
    ))
}

/// Whether the connection may report under `code`; the refusal otherwise ("forbidden:
/// …"; the connection stays open).
pub(super) fn may_report(
    ctx: &mut Ctx<'_>,
    header: &Header,
    code: Option<&str>,
) -> Result<(), Answer> {
    let refused = match &ctx.session.grant {
        Some(grant) if grant.may_report(code) => None,
        Some(_) => Some(match code {
            Some(code) => format!("report under \"{code}\""),
            None => "report without a code".to_owned(),
        }),
        None if ctx.shared.auth().required() => {
            Some("report before authenticating (send a token)".to_owned())
        }
        None => None,
    };
    let Some(what) = refused else { return Ok(()) };
    Err(forbidden(ctx, header, MsgType::ReportAck, &what, None))
}

fn forbidden(
    ctx: &mut Ctx<'_>,
    header: &Header,
    reply_type: MsgType,
    what: &str,
    ending: Option<Ending>,
) -> Answer {
    Stats::add(&ctx.shared.stats.auth_forbidden, 1);
    let by = ctx
        .session
        .grant
        .as_ref()
        .map_or_else(|| "-".to_owned(), |g| g.name.to_string());
    warn!(peer = %ctx.peer, token = %by, refused = %what, "forbidden");
    let mut answer = Answer::reply(
        header,
        reply_type,
        reply::error(&format!("forbidden: {what}")),
    );
    answer.ending = ending;
    answer
}
