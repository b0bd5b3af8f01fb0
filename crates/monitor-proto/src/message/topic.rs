//! Topic patterns, matched against a report's `"code"`.

use std::fmt;

/// One pattern of a subscription's `"topics"`, or of an authentication grant.
///
/// `"*"` matches every report; a pattern ending in `*` matches codes with that prefix;
/// anything else matches that exact code. A report without a string `code` matches only
/// `"*"`.
///
/// ```
/// use monitor_proto::message::topic::TopicPattern;
/// let p = TopicPattern::parse("host.*");
/// assert!(p.matches(Some("host.health")));
/// assert!(!p.matches(Some("db.health")));
/// assert!(!p.matches(None));
/// assert!(TopicPattern::parse("*").matches(None));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicPattern {
    /// `"*"`.
    Any,
    /// `"prefix*"`: codes starting with the prefix.
    Prefix(Box<str>),
    /// Any other string: that code exactly.
    Exact(Box<str>),
}

impl TopicPattern {
    /// Reads one pattern.
    pub fn parse(pattern: &str) -> TopicPattern {
        match pattern.strip_suffix('*') {
            Some("") => TopicPattern::Any,
            Some(prefix) => TopicPattern::Prefix(prefix.into()),
            None => TopicPattern::Exact(pattern.into()),
        }
    }

    /// Whether a report whose `code` is `code` (`None`: absent or not a string) matches.
    pub fn matches(&self, code: Option<&str>) -> bool {
        match (self, code) {
            (TopicPattern::Any, _) => true,
            (TopicPattern::Prefix(p), Some(code)) => code.starts_with(&**p),
            (TopicPattern::Exact(e), Some(code)) => code == &**e,
            (_, None) => false,
        }
    }

    /// Whether a subscription with these patterns receives a report with this code: an
    /// empty list receives everything.
    pub fn any_matches(patterns: &[TopicPattern], code: Option<&str>) -> bool {
        patterns.is_empty() || patterns.iter().any(|p| p.matches(code))
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicPattern::Any => f.write_str("*"),
            TopicPattern::Prefix(p) => write!(f, "{p}*"),
            TopicPattern::Exact(e) => f.write_str(e),
        }
    }
}

/// Default [`TopicLimits::max_topics`]: patterns in one subscription.
pub const DEFAULT_MAX_TOPICS: usize = 64;
/// Default [`TopicLimits::max_topic_len`]: bytes in one pattern.
pub const DEFAULT_MAX_TOPIC_LEN: usize = 256;

/// How many `"topics"` patterns a subscribe may list, and how long each may be (protocol
/// §6). A subscribe over either limit is malformed; the parser stops keeping patterns at
/// the limit, so a body listing a million topics costs no more memory than `max_topics`
/// patterns.
///
/// `Copy`, so a server can hand its configured limits to every connection. Both limits
/// are inclusive. Start from [`TopicLimits::new`] (the struct is `#[non_exhaustive]`), then
/// use the `with_*` methods or set the fields.
///
/// # Example
/// ```
/// use bytes::Bytes;
/// use monitor_proto::message::request::Subscribe;
/// use monitor_proto::message::topic::TopicLimits;
/// use monitor_proto::BodyError;
///
/// let limits = TopicLimits::new().with_max_topics(2);
/// let body = Bytes::from_static(br#"{"code":"c","topics":["a","b","c"]}"#);
/// let err = Subscribe::parse(body, &limits).unwrap_err();
/// assert!(matches!(err, BodyError::TooManyTopics { count: 3, max: 2 }));
/// assert_eq!(err.to_string(), "topics: 3 patterns, more than max_topics 2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TopicLimits {
    /// Most patterns in one subscription's `"topics"` (default 64).
    pub max_topics: usize,
    /// Most bytes in one pattern (default 256): the UTF-8 length of the string after its
    /// JSON escapes are decoded, a trailing `*` included.
    pub max_topic_len: usize,
}

impl TopicLimits {
    /// The protocol's defaults: 64 patterns of at most 256 bytes each.
    pub const fn new() -> TopicLimits {
        TopicLimits {
            max_topics: DEFAULT_MAX_TOPICS,
            max_topic_len: DEFAULT_MAX_TOPIC_LEN,
        }
    }

    /// Sets [`TopicLimits::max_topics`].
    #[must_use]
    pub const fn with_max_topics(mut self, patterns: usize) -> TopicLimits {
        self.max_topics = patterns;
        self
    }

    /// Sets [`TopicLimits::max_topic_len`].
    #[must_use]
    pub const fn with_max_topic_len(mut self, bytes: usize) -> TopicLimits {
        self.max_topic_len = bytes;
        self
    }
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        let cases = [
            ("*", Some("anything"), true),
            ("*", None, true),
            ("host.*", Some("host."), true),
            ("host.*", Some("host"), false),
            ("host.health", Some("host.health"), true),
            ("host.health", Some("host.healthy"), false),
            ("host.health", None, false),
            ("a*b", Some("a*b"), true),
            ("a*b", Some("axb"), false),
        ];
        for (pattern, code, want) in cases {
            assert_eq!(
                TopicPattern::parse(pattern).matches(code),
                want,
                "{pattern} vs {code:?}"
            );
        }
    }

    #[test]
    fn empty_list_matches_everything() {
        assert!(TopicPattern::any_matches(&[], None));
        let only = [TopicPattern::parse("db.*")];
        assert!(!TopicPattern::any_matches(&only, Some("host.x")));
        assert!(!TopicPattern::any_matches(&only, None));
    }

    #[test]
    fn display_round_trips() {
        for p in ["*", "host.*", "exact", ""] {
            assert_eq!(TopicPattern::parse(p).to_string(), p);
        }
    }
}
