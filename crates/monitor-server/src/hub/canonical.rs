//! Canonical subscriptions: a subscriber's topic patterns without those covered by
//! another of its own, so that at most one of them matches any code. The index relies on
//! it to reach each subscriber at most once per report, with no check for duplicates.

use std::sync::Arc;

use monitor_proto::message::topic::TopicPattern;

/// A subscriber's patterns without those covered by another of its own, so that for any
/// code at most one of them matches, and the index can deliver a report to each
/// subscriber in it without checking for duplicates:
/// - any list with `*` becomes `[*]` (an empty list stays empty: both mean everything);
/// - duplicates go;
/// - a prefix goes if another of its prefixes is a prefix of it (`a*` covers `ab*`), so
///   the prefixes left are such that none starts with another, and a code has at most
///   one of them as its prefix;
/// - an exact code goes if one of the prefixes left matches it (`host.*` covers
///   `host.cpu`).
///
/// O(n log n) for n patterns: sorted, each prefix is compared with the last one kept,
/// and each code with the one prefix before it in order (the only one left that can be
/// its prefix).
pub(super) fn canonical(mut topics: Vec<TopicPattern>) -> Arc<[TopicPattern]> {
    if topics.iter().any(|p| matches!(p, TopicPattern::Any)) {
        return Arc::new([TopicPattern::Any]);
    }
    // Prefixes first, then exact codes; each part in byte order.
    topics.sort_unstable_by(|a, b| order(a).cmp(&order(b)));
    topics.dedup();
    let prefixes = topics.partition_point(|p| matches!(p, TopicPattern::Prefix(_)));
    // In order, a prefix's prefixes come before it, and whatever lies between them starts
    // with them too: a prefix is covered if and only if it starts with the last one kept.
    let mut kept = 0;
    for i in 0..prefixes {
        if kept == 0 || !text(&topics[i]).starts_with(text(&topics[kept - 1])) {
            topics.swap(kept, i);
            kept += 1;
        }
    }
    let prefixes = kept;
    for i in prefixes..topics.len() {
        let code = text(&topics[i]);
        // Of prefixes none of which starts with another, only the last one not after
        // `code` can be a prefix of it.
        let before = topics[..prefixes].partition_point(|p| text(p) <= code);
        if before == 0 || !code.starts_with(text(&topics[before - 1])) {
            topics.swap(kept, i);
            kept += 1;
        }
    }
    topics.truncate(kept);
    topics.into()
}

/// Sort key for [`canonical`]: prefixes before exact codes, then the text.
fn order(pattern: &TopicPattern) -> (u8, &str) {
    match pattern {
        TopicPattern::Prefix(prefix) => (0, prefix),
        TopicPattern::Exact(code) => (1, code),
        TopicPattern::Any => (2, ""),
    }
}

/// A prefix's or an exact code's text.
fn text(pattern: &TopicPattern) -> &str {
    order(pattern).1
}
