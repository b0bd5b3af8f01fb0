//! Topic patterns, matched against a report's `"code"`.

use std::fmt;

/// One pattern of a subscription's `"topics"`, or of an authentication grant.
///
/// `"*"` matches every report; a pattern ending in `*` matches codes with that prefix;
/// anything else matches that exact code. A report without a string `code` matches only
/// `"*"`.
///
/// ```
/// use monitor_proto::TopicPattern;
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
