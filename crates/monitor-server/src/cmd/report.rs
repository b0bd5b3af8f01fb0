//! Report (7 → 8, and 6 to the subscribers): the size rule, then the fan-out.

use std::sync::Arc;

use monitor_proto::message::reply::ReportAckData;
use monitor_proto::message::request::Report;
use monitor_proto::message::{reply, server_compresses};
use monitor_proto::{Header, MsgType};

use super::{Answer, Ctx};
use crate::config::Settings;
use crate::hub::Wakes;
use crate::queue::Push;
use crate::state::Shared;

pub(super) fn handle(ctx: &mut Ctx<'_>, header: &Header, report: &Report) -> Answer {
    if let Err(refusal) = super::auth::may_report(ctx, header, report.code.as_deref()) {
        return refusal;
    }
    let json = match publish(ctx.shared, ctx.settings, report, ctx.wakes) {
        Err(too_large) => reply::error(&too_large),
        Ok(published) => {
            if !ctx.session.reported {
                ctx.session.reported = true;
                ctx.entry.set_reported();
            }
            published.ack()
        }
    };
    Answer::reply(header, MsgType::ReportAck, json)
}

/// Where a report went: `delivered` subscribers of this node, and, with `[cluster]`,
/// whether it was queued for the other nodes (`None` without a cluster).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Published {
    delivered: u64,
    cluster: Option<bool>,
}

impl Published {
    /// The acknowledgement (type 8 body, `POST /api/report` envelope): `"cluster"` only
    /// on a clustered node, so that without `[cluster]` the ack is what it always was.
    pub(crate) fn ack(self) -> bytes::Bytes {
        match self.cluster {
            None => reply::report_ack(self.delivered),
            Some(queued) => {
                reply::report_ack_with(&ReportAckData::new(self.delivered).with_cluster(queued))
            }
        }
    }
}

/// Publishes a report that passed its checks of permission: the size rule, the fan-out
/// to this node's subscribers, then the offer to the cluster, if there is one. What a
/// type-7 report and `POST /api/report` both do. `Err` is the refusal's text, as the
/// reporter is told it.
pub(crate) fn publish(
    shared: &Shared,
    settings: &Settings,
    report: &Report,
    wakes: &mut Wakes,
) -> Result<Published, String> {
    let delivered = publish_here(shared, settings, report, wakes)?;
    let cluster = shared.cluster.as_ref().map(|c| c.offer(&report.raw));
    Ok(Published { delivered, cluster })
}

/// The size rule and the fan-out to this node's subscribers only: what a report that
/// came from another node of the cluster gets (offering it back would loop it). `Ok` is
/// the number of subscribers it was delivered to.
pub(crate) fn publish_here(
    shared: &Shared,
    settings: &Settings,
    report: &Report,
    wakes: &mut Wakes,
) -> Result<u64, String> {
    let prepared = push_size_check(settings, report).inspect_err(|_| {
        crate::stats::Stats::add(&shared.stats.reports_too_large, 1);
    })?;
    Ok(shared.hub.publish(report, prepared, wakes))
}

/// Refuses a report whose push frame would exceed `max_frame_len` in the form it is sent
/// in: every frame this server sends respects the limit its peers are configured with. A
/// push body over `compress_threshold` always goes out compressed, so its compressed
/// length is what counts; otherwise its plain length. Room for encryption is always
/// allowed for, so that a report is refused the same way whoever is subscribed, rather
/// than acknowledged and then dropped for an encrypting subscriber.
///
/// Compressing costs, so it is done here only when the answer depends on it: when even
/// zlib's worst-case expansion of the body would fit, the compressed form surely does.
/// When it was done, the push (with its compressed form) is returned, for the hub to
/// deliver rather than make again.
fn push_size_check(settings: &Settings, report: &Report) -> Result<Option<Arc<Push>>, String> {
    let max = settings.max_frame_len as usize;
    let overhead = monitor_proto::HEADER_LEN + monitor_proto::layer::crypto::OVERHEAD;
    let json_len = reply::push_len(report.raw.len());
    if !server_compresses(false, json_len, settings.compress_threshold) {
        return if json_len + overhead <= max {
            Ok(None)
        } else {
            Err(format!(
                "report too large: its push of {} bytes would exceed max_frame_len {max}",
                json_len + overhead
            ))
        };
    }
    let worst_deflated = json_len + json_len / 1000 + 64;
    if worst_deflated + overhead <= max {
        return Ok(None);
    }
    let push = Arc::new(Push::new(&report.raw));
    let compressed = push.compressed().len();
    if compressed + overhead <= max {
        Ok(Some(push))
    } else {
        Err(format!(
            "report too large: its compressed push of {} bytes would exceed max_frame_len \
             {max}",
            compressed + overhead
        ))
    }
}
