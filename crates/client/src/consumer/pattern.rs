//! Pattern subscriptions ([`Consumer::subscribe_pattern`](super::Consumer::subscribe_pattern)):
//! a regular expression matched against whole topic names, as the Java client's
//! `subscribe(Pattern)` does.
//!
//! The consumer re-evaluates the pattern on every metadata refresh (which, while a pattern is
//! subscribed, asks for all topics); when the set of matching topics changes, it rejoins the
//! group so that new topics get assigned and deleted ones dropped. Internal topics (names
//! starting with `__`, such as `__consumer_offsets`, or flagged internal by the broker) never
//! match, as with the Java client's default `exclude.internal.topics=true`.

use regex::Regex;

use crate::cluster::TopicMetadata;
use crate::error::{ClientError, Result};

/// A compiled topic pattern: matches a topic when the whole name matches the expression.
///
/// The syntax is the `regex` crate's, which agrees with Java's `Pattern` for the usual
/// topic patterns (classes, alternation, repetition, anchors) but has no look-around or
/// back-references; matching takes linear time whatever the pattern.
#[derive(Debug, Clone)]
pub struct TopicPattern {
    source: String,
    anchored: Regex,
}

impl TopicPattern {
    /// Compiles `pattern`; an empty or invalid expression is [`ClientError::InvalidArgument`]
    /// with the reason on one line.
    pub fn new(pattern: &str) -> Result<TopicPattern> {
        let bad = |why: String| {
            ClientError::InvalidArgument(format!("invalid topic pattern '{pattern}': {why}"))
        };
        if pattern.is_empty() {
            return Err(bad("empty pattern (no topic name is empty)".into()));
        }
        // Compiled alone first: wrapped in a group straight away, an unbalanced pattern such as
        // `a)|(b` would compile into something that is no longer anchored at both ends.
        Regex::new(pattern).map_err(|e| bad(one_line(&e)))?;
        let anchored = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| bad(one_line(&e)))?;
        Ok(TopicPattern {
            source: pattern.to_string(),
            anchored,
        })
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `topic` is matched: the whole name matches and it is not internal (`__...`).
    pub fn matches(&self, topic: &str) -> bool {
        !is_internal_name(topic) && self.anchored.is_match(topic)
    }

    /// The matching topics of a metadata answer, sorted (topics flagged internal, and those
    /// the broker reported only as an error, are left out).
    pub(crate) fn matching(&self, topics: &[TopicMetadata]) -> Vec<String> {
        let mut out: Vec<String> = topics
            .iter()
            .filter(|t| !t.internal && (t.error.is_none() || !t.partitions.is_empty()))
            .filter(|t| self.matches(&t.name))
            .map(|t| t.name.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Kafka's internal topics (`__consumer_offsets`, `__transaction_state`) and anything else
/// named like them.
fn is_internal_name(topic: &str) -> bool {
    topic.starts_with("__")
}

/// The regex crate's syntax errors span several lines (the pattern, a caret, the reason): keep
/// the reason, so CLI errors stay one line.
fn one_line(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_string())
            .unwrap_or_else(|| "syntax error".to_string()),
        other => other.to_string().replace('\n', " "),
    }
}

/// How the set of matching topics changed at a metadata refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TopicChange {
    /// Topics that match now and did not before (all of them at the first evaluation).
    pub added: Vec<String>,
    /// Topics that matched before and are gone (deleted, or no longer listed).
    pub removed: Vec<String>,
}

/// A pattern and the topics it matched at the last metadata refresh.
#[derive(Debug, Clone)]
pub(crate) struct PatternSubscription {
    pub pattern: TopicPattern,
    /// Sorted; `None` until a metadata answer has been seen.
    matched: Option<Vec<String>>,
}

impl PatternSubscription {
    pub(crate) fn new(pattern: TopicPattern) -> PatternSubscription {
        PatternSubscription {
            pattern,
            matched: None,
        }
    }

    /// The topics matched at the last refresh (`None` before the first).
    pub(crate) fn topics(&self) -> Option<&[String]> {
        self.matched.as_deref()
    }

    /// Re-evaluates the pattern against a metadata answer listing all topics; `Some` when the
    /// matching set changed (always at the first evaluation, even to an empty set, since
    /// that is when the subscription becomes known).
    pub(crate) fn update(&mut self, topics: &[TopicMetadata]) -> Option<TopicChange> {
        let now = self.pattern.matching(topics);
        let change = match &self.matched {
            None => Some(TopicChange {
                added: now.clone(),
                removed: Vec::new(),
            }),
            Some(before) if *before == now => None,
            Some(before) => Some(TopicChange {
                added: now
                    .iter()
                    .filter(|t| before.binary_search(t).is_err())
                    .cloned()
                    .collect(),
                removed: before
                    .iter()
                    .filter(|t| now.binary_search(t).is_err())
                    .cloned()
                    .collect(),
            }),
        };
        self.matched = Some(now);
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PartitionMetadata;
    use crate::error::ErrorCode;

    fn topic(name: &str, partitions: i32) -> TopicMetadata {
        TopicMetadata {
            name: name.to_string(),
            topic_id: uuid::Uuid::nil(),
            internal: false,
            partitions: (0..partitions)
                .map(|p| PartitionMetadata {
                    partition: p,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    offline_replicas: Vec::new(),
                    error: None,
                })
                .collect(),
            error: None,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_whole_name_must_match() -> Result<()> {
        let p = TopicPattern::new("orders-.*")?;
        assert!(p.matches("orders-eu"));
        assert!(p.matches("orders-"));
        assert!(!p.matches("old-orders-eu"), "anchored at the start");
        assert!(!p.matches("orders"));
        let p = TopicPattern::new("a|ab")?;
        // Java's matches(): an alternative that covers the whole name counts, even when an
        // earlier alternative matches a prefix.
        assert!(p.matches("ab") && p.matches("a"));
        assert!(!p.matches("abc"), "anchored at the end");
        let p = TopicPattern::new("logs\\.(eu|us)-[0-9]+")?;
        assert!(p.matches("logs.eu-12"));
        assert!(!p.matches("logsXeu-12"));
        assert!(!p.matches("logs.eu-12x"));
        assert_eq!(p.as_str(), "logs\\.(eu|us)-[0-9]+");
        Ok(())
    }

    #[test]
    fn internal_topics_never_match() -> Result<()> {
        let p = TopicPattern::new(".*")?;
        assert!(!p.matches("__consumer_offsets"));
        assert!(!p.matches("__transaction_state"));
        assert!(p.matches("_single_underscore"));
        let mut flagged = topic("offsets-internal", 1);
        flagged.internal = true;
        let mut failed = topic("broken", 0);
        failed.error = Some(ErrorCode(3));
        let listed = [
            topic("b", 2),
            topic("__consumer_offsets", 50),
            flagged,
            failed,
            topic("a", 1),
        ];
        assert_eq!(
            p.matching(&listed),
            names(&["a", "b"]),
            "sorted, internal left out"
        );
        Ok(())
    }

    #[test]
    fn invalid_patterns_are_refused_on_one_line() {
        for bad in ["", "orders-(", "a)|(b", "[z-a]", "x{2,1}"] {
            match TopicPattern::new(bad) {
                Err(ClientError::InvalidArgument(m)) => {
                    assert!(
                        m.starts_with(&format!("invalid topic pattern '{bad}': ")),
                        "{m}"
                    );
                    assert!(!m.contains('\n'), "{m:?}");
                }
                other => panic!("pattern {bad:?}: {other:?}"),
            }
        }
        match TopicPattern::new("orders-(") {
            Err(ClientError::InvalidArgument(m)) => assert!(m.ends_with("unclosed group"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changes_are_detected_and_reported_once() -> Result<()> {
        let mut s = PatternSubscription::new(TopicPattern::new("t-.*")?);
        assert_eq!(s.topics(), None);
        // The first answer always counts as a change, even when nothing matches.
        let first = s.update(&[topic("other", 1)]);
        assert_eq!(first, Some(TopicChange::default()));
        assert_eq!(s.topics(), Some(&[][..]));
        let c = s.update(&[topic("t-1", 1), topic("other", 1)]);
        assert_eq!(
            c,
            Some(TopicChange {
                added: names(&["t-1"]),
                removed: Vec::new()
            })
        );
        // Same set again (a partition count change is the leader's business, not this one's).
        assert_eq!(s.update(&[topic("other", 1), topic("t-1", 4)]), None);
        // A topic created and another deleted in the same interval.
        let c = s.update(&[topic("t-2", 1), topic("other", 1)]);
        assert_eq!(
            c,
            Some(TopicChange {
                added: names(&["t-2"]),
                removed: names(&["t-1"])
            })
        );
        assert_eq!(s.topics(), Some(&names(&["t-2"])[..]));
        Ok(())
    }
}
