//! Client errors: what went wrong, said once, with the address or the object concerned.

use std::fmt;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;

/// A Kafka error code as a broker returned it, with Kafka's name for it
/// (`UNKNOWN_TOPIC_OR_PARTITION`, `GROUP_ID_NOT_FOUND`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    /// `None` for 0 (no error), the code otherwise.
    pub fn from_code(code: i16) -> Option<ErrorCode> {
        (code != 0).then_some(ErrorCode(code))
    }

    /// Kafka's name for the code in upper snake case, e.g. `NOT_COORDINATOR`; unknown codes
    /// read `UNKNOWN_ERROR_CODE_<n>`.
    pub fn name(&self) -> String {
        match ResponseError::try_from_code(self.0) {
            None => "NONE".to_string(),
            Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
            Some(e) => upper_snake(&format!("{e}")),
        }
    }

    /// Whether Kafka classes the error as retriable (a retry may succeed unchanged).
    pub fn is_retriable(&self) -> bool {
        ResponseError::try_from_code(self.0).is_some_and(|e| e.is_retriable())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`.
fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// Well-known Kafka error codes the client reacts to.
pub mod codes {
    /// OFFSET_OUT_OF_RANGE.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// LEADER_NOT_AVAILABLE.
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// NOT_LEADER_OR_FOLLOWER.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// COORDINATOR_LOAD_IN_PROGRESS.
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// COORDINATOR_NOT_AVAILABLE.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// NOT_COORDINATOR.
    pub const NOT_COORDINATOR: i16 = 16;
    /// ILLEGAL_GENERATION.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// UNKNOWN_MEMBER_ID.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// REBALANCE_IN_PROGRESS.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// TOPIC_ALREADY_EXISTS.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// NOT_CONTROLLER.
    pub const NOT_CONTROLLER: i16 = 41;
    /// NON_EMPTY_GROUP.
    pub const NON_EMPTY_GROUP: i16 = 68;
    /// GROUP_ID_NOT_FOUND.
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    /// ELECTION_NOT_NEEDED.
    pub const ELECTION_NOT_NEEDED: i16 = 84;
}

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A bootstrap list that is not `host:port[,host:port...]`.
    #[error("invalid bootstrap server list '{0}': expected HOST:PORT[,HOST:PORT...]")]
    InvalidBootstrap(String),
    /// No TCP connection could be made (refused, unreachable, name not resolved, timed out).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port` tried.
        addr: String,
        /// Why, in a few words ("connection refused").
        reason: String,
    },
    /// The connection failed while a request was on it.
    #[error("connection to {addr} failed: {}", io_reason(source))]
    Io {
        /// `host:port` of the broker.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A request got no answer within the request timeout.
    #[error("{api:?} request to {addr} timed out after {}", fmt_duration(*after))]
    Timeout {
        /// `host:port` of the broker.
        addr: String,
        /// The request's API.
        api: ApiKey,
        /// The limit that passed.
        after: Duration,
    },
    /// The broker sent something this client cannot accept (bad frame, wrong correlation id,
    /// undecodable body).
    #[error("protocol error from {addr}: {message}")]
    Protocol {
        /// `host:port` of the broker.
        addr: String,
        /// What was wrong.
        message: String,
    },
    /// A response frame declared a length above the configured maximum (checked before
    /// anything is allocated for it).
    #[error("response of {len} bytes from {addr} is outside the limit of {max} bytes")]
    FrameTooLarge {
        /// `host:port` of the broker.
        addr: String,
        /// Declared length.
        len: i64,
        /// Configured maximum.
        max: usize,
    },
    /// The broker and this client share no version of an API.
    #[error("{addr} supports no version of {api:?} this client speaks ({ours}; broker: {broker})")]
    UnsupportedApi {
        /// `host:port` of the broker.
        addr: String,
        /// The API.
        api: ApiKey,
        /// Our version range.
        ours: String,
        /// What the broker advertised, or "none".
        broker: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("{message}: {name}")]
    Broker {
        /// The Kafka error code.
        code: i16,
        /// Kafka's name for it, e.g. `GROUP_ID_NOT_FOUND`.
        name: String,
        /// What was being done, plus the broker's error message when it sent one.
        message: String,
    },
    /// Bytes inside a message (e.g. a consumer group member's assignment) that do not parse.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A topic, partition, group or broker the caller named does not exist in the metadata.
    #[error("{0}")]
    NotFound(String),
    /// An argument the client rejected before sending anything.
    #[error("{0}")]
    InvalidArgument(String),
    /// The consumer found, after a leader change, that the log it read from was truncated
    /// below its position (KIP-320), and `auto.offset.reset` is `none`: the records it read
    /// past `divergent_offset` are no longer in the log. Seek to go on.
    #[error(
        "log truncation detected for {topic}-{partition} at offset {offset} (leader epoch \
         {leader_epoch}): {}",
        match divergent_offset {
            Some((o, e)) => format!("the log diverges from offset {o} (leader epoch {e})"),
            None => "the leader knows no end offset for that epoch".to_string(),
        }
    )]
    LogTruncation {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The consumer's position.
        offset: i64,
        /// The leader epoch of the position (of the last record consumed).
        leader_epoch: i32,
        /// The first offset known to diverge and its epoch, as the leader answered; `None`
        /// when the leader knows nothing of that epoch or any earlier one.
        divergent_offset: Option<(i64, i32)>,
    },
}

impl ClientError {
    /// A broker error for `code`, described by what was being done (`context`) and the broker's
    /// own message if it sent one.
    pub fn broker(code: i16, context: impl Into<String>, broker_message: Option<&str>) -> Self {
        let mut message = context.into();
        if let Some(m) = broker_message.filter(|m| !m.is_empty()) {
            message.push_str(" (");
            message.push_str(m);
            message.push(')');
        }
        ClientError::Broker {
            code,
            name: ErrorCode(code).name(),
            message,
        }
    }

    /// The Kafka error code, for [`ClientError::Broker`].
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the connection the error happened on can no longer be used.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Io { .. }
                | ClientError::Timeout { .. }
                | ClientError::Protocol { .. }
                | ClientError::FrameTooLarge { .. }
        )
    }
}

/// Result of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// An I/O error in a few lowercase words ("connection refused"), without the "(os error 111)".
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let s = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by peer",
        K::ConnectionAborted => "connection aborted",
        K::NotConnected => "not connected",
        K::BrokenPipe => "broken pipe",
        K::UnexpectedEof => "connection closed by the broker",
        K::TimedOut => "timed out",
        K::AddrNotAvailable => "address not available",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        _ => return strip_os_error(&e.to_string()),
    };
    s.to_string()
}

fn strip_os_error(s: &str) -> String {
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// "30 s", "1.5 s", "250 ms".
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(ErrorCode(3).name(), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(ErrorCode(69).name(), "GROUP_ID_NOT_FOUND");
        assert_eq!(ErrorCode(-1).name(), "UNKNOWN_SERVER_ERROR");
        assert_eq!(ErrorCode(30000).name(), "UNKNOWN_ERROR_CODE_30000");
        assert!(ErrorCode(16).is_retriable());
        assert!(!ErrorCode(68).is_retriable());
        let e = ClientError::broker(68, "delete group 'g'", Some("has members"));
        assert_eq!(
            e.to_string(),
            "delete group 'g' (has members): NON_EMPTY_GROUP"
        );
        assert_eq!(e.code(), Some(68));
    }

    #[test]
    fn io_reasons_are_short() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_reason(&e), "connection refused");
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(io_reason(&e), "connection refused");
        assert_eq!(strip_os_error("boom (os error 5)"), "boom");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30 s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250 ms");
    }
}
