//! Subscribe (5 → 6): a new queue and a (re)registration in the hub.

use std::sync::Arc;

use monitor_proto::message::reply;
use monitor_proto::message::request::Subscribe;
use monitor_proto::{Header, MsgType, Recipient};

use super::{Answer, Ctx};
use crate::queue::{Batch, PushQueue};
use crate::session::Subscription;

pub(super) fn handle(ctx: &mut Ctx<'_>, header: &Header, subscribe: Subscribe) -> Answer {
    if let Some(token) = &subscribe.token {
        if let Err(refusal) = super::auth::present_token(ctx, header, MsgType::Push, token) {
            return refusal;
        }
    }
    // Allowed as a whole or refused: never silently narrowed.
    if let Err(refusal) = super::auth::may_subscribe(ctx, header, &subscribe.topics) {
        return refusal;
    }
    let settings = ctx.settings;
    // A new queue for the new subscription: the pushes the old one matched, queued or
    // taken and not yet encoded, are dropped here (and the hub discards the old queue
    // when it replaces it), so none of them follows this acknowledgement. Pushes already
    // encoded come before it. This is what makes a re-subscribe a barrier.
    let session = &mut *ctx.session;
    session.batch = Batch::default();
    let queue = PushQueue::bounded(settings.subscriber_queue, settings.subscriber_queue_bytes);
    session.subscription = Some(Subscription {
        to: Recipient::new(header.uuid)
            .compress(header.compress)
            .encrypt(header.cipher),
        queue: Arc::clone(&queue),
    });
    // The caller encodes the acknowledgement before it takes any push from the queue.
    ctx.shared
        .hub
        .subscribe(ctx.entry.id, subscribe.topics, queue);
    Answer::reply(header, MsgType::Push, reply::success_raw(&subscribe.raw))
}
