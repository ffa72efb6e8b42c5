//! The "consumer" embedded protocol: the subscription bytes each member sends in JoinGroup (the
//! leader receives everyone's) and the assignment bytes a group leader hands each member in
//! SyncGroup, which DescribeGroups returns as `member_assignment`.
//!
//! Subscription layout (Kafka's ConsumerProtocolSubscription, never flexible): a 2-byte version,
//! `topics: array (i32 count) of string (i16 length)`, `user_data: nullable bytes`, from v1
//! `owned_partitions: array of {topic, partitions: array of i32}`, from v2 `generation_id: i32`,
//! from v3 `rack_id: nullable string`. Parsed by hand with the same bounds checks as
//! assignments: these bytes come from other clients of the group.
//!
//! Layout (Kafka's ConsumerProtocolAssignment, never flexible): a 2-byte version, then an array
//! (i32 count) of `{topic: string (i16 length), partitions: array (i32 count) of i32}`, then
//! `user_data` as nullable bytes (i32 length, -1 for null). The `kafka-protocol` crate's struct
//! leaves out the version prefix and sizes its allocations from declared counts, and these
//! bytes come from whichever client led the group, so they are parsed here by hand: every
//! count and length is checked against the bytes left before anything is allocated. Versions
//! above 3 are read with the v3 layout and whatever follows is ignored, as Kafka does.

use bytes::{BufMut, Bytes};

use crate::error::{ClientError, Result};

/// Highest ConsumerProtocolAssignment version with a known layout.
pub const ASSIGNMENT_MAX_VERSION: i16 = 3;

/// A decoded consumer assignment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerAssignment {
    /// Version from the 2-byte prefix (0 for empty input).
    pub version: i16,
    /// Assigned partitions per topic, as sent.
    pub partitions: Vec<(String, Vec<i32>)>,
    /// Opaque user data of the assignor, if any.
    pub user_data: Option<Bytes>,
}

impl ConsumerAssignment {
    /// Total number of partitions assigned.
    pub fn partition_count(&self) -> usize {
        self.partitions.iter().map(|(_, p)| p.len()).sum()
    }

    /// Encodes with the version prefix (versions 0-3 share this layout).
    pub fn encode(&self) -> Result<Bytes> {
        let too_big =
            |what: &str| ClientError::InvalidArgument(format!("assignment {what} too large"));
        let mut out = Vec::new();
        out.put_i16(self.version);
        out.put_i32(i32::try_from(self.partitions.len()).map_err(|_| too_big("topic count"))?);
        for (topic, parts) in &self.partitions {
            out.put_i16(i16::try_from(topic.len()).map_err(|_| too_big("topic name"))?);
            out.put_slice(topic.as_bytes());
            out.put_i32(i32::try_from(parts.len()).map_err(|_| too_big("partition count"))?);
            for p in parts {
                out.put_i32(*p);
            }
        }
        match &self.user_data {
            None => out.put_i32(-1),
            Some(d) => {
                out.put_i32(i32::try_from(d.len()).map_err(|_| too_big("user data"))?);
                out.put_slice(d);
            }
        }
        Ok(Bytes::from(out))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: String) -> ClientError {
        ClientError::Malformed {
            what: self.what,
            reason,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.err(format!(
                "{field} at byte {} needs {n} bytes, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i16(&mut self, field: &str) -> Result<i16> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &str) -> Result<i32> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string with an i16 length (not nullable).
    fn string(&mut self, field: &str) -> Result<String> {
        let len = self.i16(field)?;
        let len = usize::try_from(len).map_err(|_| self.err(format!("{field} length {len}")))?;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| self.err(format!("{field} is not UTF-8")))
    }

    /// A nullable string with an i16 length (-1 for null).
    fn nullable_string(&mut self, field: &str) -> Result<Option<String>> {
        let at = self.pos;
        let len = self.i16(field)?;
        if len == -1 {
            return Ok(None);
        }
        self.pos = at;
        self.string(field).map(Some)
    }

    /// Nullable bytes with an i32 length (-1 for null).
    fn nullable_bytes(&mut self, field: &str) -> Result<Option<Bytes>> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.err(format!("{field} length {len}")))?;
        Ok(Some(Bytes::copy_from_slice(self.take(len, field)?)))
    }

    /// An array of `{topic: string, partitions: array of i32}`.
    fn topic_partitions(&mut self, field: &str) -> Result<Vec<(String, Vec<i32>)>> {
        let topics = self.count(field, 6)?;
        let mut out = Vec::with_capacity(topics);
        for _ in 0..topics {
            let name = self.string("topic")?;
            let n = self.count("partitions", 4)?;
            let mut ps = Vec::with_capacity(n);
            for _ in 0..n {
                ps.push(self.i32("partition")?);
            }
            out.push((name, ps));
        }
        Ok(out)
    }

    /// An array count whose elements take at least `min_size` bytes each.
    fn count(&mut self, field: &str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.i32(field)?;
        let n =
            usize::try_from(n).map_err(|_| self.err(format!("{field} count {n} at byte {at}")))?;
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(self.err(format!(
                "{field} count {n} at byte {at} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }
}

/// Decodes member assignment bytes (with their version prefix). Empty input, which a member
/// has before its first SyncGroup, is an empty assignment.
pub fn decode_assignment(data: &[u8]) -> Result<ConsumerAssignment> {
    if data.is_empty() {
        return Ok(ConsumerAssignment::default());
    }
    let mut r = Reader {
        buf: data,
        pos: 0,
        what: "consumer assignment",
    };
    let version = r.i16("version")?;
    if version < 0 {
        return Err(r.err(format!("negative version {version}")));
    }
    let partitions = r.topic_partitions("assigned_partitions")?;
    let user_data = if r.remaining() == 0 {
        // Tolerate a writer that stopped after the partitions.
        None
    } else {
        r.nullable_bytes("user_data")?
    };
    // Anything after is a newer version's fields (or padding): ignored, as Kafka does.
    Ok(ConsumerAssignment {
        version,
        partitions,
        user_data,
    })
}

/// Highest ConsumerProtocolSubscription version with a known layout.
pub const SUBSCRIPTION_MAX_VERSION: i16 = 3;

/// A decoded consumer subscription: what a member sends in JoinGroup as its protocol metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSubscription {
    /// Version from the 2-byte prefix; decides which fields [`ConsumerSubscription::encode`]
    /// writes (versions above 3 are written with the v3 layout).
    pub version: i16,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Opaque user data of the assignor, if any.
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (v1+; cooperative and sticky assignors use them).
    pub owned_partitions: Vec<(String, Vec<i32>)>,
    /// Generation in which the member last got an assignment (v2+), -1 if none.
    pub generation_id: i32,
    /// The member's rack (v3+).
    pub rack_id: Option<String>,
}

impl Default for ConsumerSubscription {
    fn default() -> Self {
        ConsumerSubscription {
            version: SUBSCRIPTION_MAX_VERSION,
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: -1,
            rack_id: None,
        }
    }
}

fn too_big(what: &str) -> ClientError {
    ClientError::InvalidArgument(format!("consumer protocol {what} too large"))
}

fn put_string(out: &mut Vec<u8>, s: &str) -> Result<()> {
    out.put_i16(i16::try_from(s.len()).map_err(|_| too_big("string"))?);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_topic_partitions(out: &mut Vec<u8>, tps: &[(String, Vec<i32>)]) -> Result<()> {
    out.put_i32(i32::try_from(tps.len()).map_err(|_| too_big("topic count"))?);
    for (topic, parts) in tps {
        put_string(out, topic)?;
        out.put_i32(i32::try_from(parts.len()).map_err(|_| too_big("partition count"))?);
        for p in parts {
            out.put_i32(*p);
        }
    }
    Ok(())
}

impl ConsumerSubscription {
    /// Encodes with the version prefix and the fields of that version.
    pub fn encode(&self) -> Result<Bytes> {
        let mut out = Vec::new();
        out.put_i16(self.version);
        out.put_i32(i32::try_from(self.topics.len()).map_err(|_| too_big("topic count"))?);
        for t in &self.topics {
            put_string(&mut out, t)?;
        }
        match &self.user_data {
            None => out.put_i32(-1),
            Some(d) => {
                out.put_i32(i32::try_from(d.len()).map_err(|_| too_big("user data"))?);
                out.put_slice(d);
            }
        }
        if self.version >= 1 {
            put_topic_partitions(&mut out, &self.owned_partitions)?;
        }
        if self.version >= 2 {
            out.put_i32(self.generation_id);
        }
        if self.version >= 3 {
            match &self.rack_id {
                None => out.put_i16(-1),
                Some(r) => put_string(&mut out, r)?,
            }
        }
        Ok(Bytes::from(out))
    }
}

/// Decodes a member's subscription (with its version prefix). Fields a writer left off at the
/// end are taken as absent (some clients stop after the topics); what follows the known fields
/// of a newer version is ignored, as Kafka does.
pub fn decode_subscription(data: &[u8]) -> Result<ConsumerSubscription> {
    let mut r = Reader {
        buf: data,
        pos: 0,
        what: "consumer subscription",
    };
    let version = r.i16("version")?;
    if version < 0 {
        return Err(r.err(format!("negative version {version}")));
    }
    let n = r.count("topics", 2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        topics.push(r.string("topic")?);
    }
    let mut sub = ConsumerSubscription {
        version,
        topics,
        ..ConsumerSubscription::default()
    };
    if r.remaining() == 0 {
        return Ok(sub);
    }
    sub.user_data = r.nullable_bytes("user_data")?;
    if version >= 1 && r.remaining() > 0 {
        sub.owned_partitions = r.topic_partitions("owned_partitions")?;
    }
    if version >= 2 && r.remaining() > 0 {
        sub.generation_id = r.i32("generation_id")?;
    }
    if version >= 3 && r.remaining() > 0 {
        sub.rack_id = r.nullable_string("rack_id")?;
    }
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::consumer_protocol_assignment::{
        ConsumerProtocolAssignment, TopicPartition,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn sample() -> ConsumerAssignment {
        ConsumerAssignment {
            version: 3,
            partitions: vec![("orders".into(), vec![0, 2]), ("t2".into(), vec![])],
            user_data: Some(Bytes::from_static(b"ud")),
        }
    }

    #[test]
    fn round_trip() -> Result<()> {
        let a = sample();
        assert_eq!(decode_assignment(&a.encode()?)?, a);
        assert_eq!(a.partition_count(), 2);
        let none = ConsumerAssignment {
            user_data: None,
            ..sample()
        };
        assert_eq!(decode_assignment(&none.encode()?)?, none);
        assert_eq!(decode_assignment(&[])?, ConsumerAssignment::default());
        Ok(())
    }

    #[test]
    fn reads_what_the_kafka_protocol_crate_writes_after_the_prefix() -> Result<()> {
        for version in 0..=3i16 {
            let mut tp = TopicPartition::default();
            tp.topic = TopicName(StrBytes::from_static_str("orders"));
            tp.partitions = vec![1, 4, 7];
            let mut cpa = ConsumerProtocolAssignment::default();
            cpa.assigned_partitions = vec![tp];
            cpa.user_data = Some(Bytes::from_static(b"x"));
            let mut buf = Vec::new();
            buf.put_i16(version);
            cpa.encode(&mut buf, version)
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
            let a = decode_assignment(&buf)?;
            assert_eq!(a.version, version);
            assert_eq!(a.partitions, vec![("orders".to_string(), vec![1, 4, 7])]);
            assert_eq!(a.user_data.as_deref(), Some(&b"x"[..]));
        }
        Ok(())
    }

    #[test]
    fn newer_versions_are_read_with_the_v3_layout() -> Result<()> {
        let mut bytes = ConsumerAssignment {
            version: 9,
            ..sample()
        }
        .encode()?
        .to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5]);
        let a = decode_assignment(&bytes)?;
        assert_eq!(a.version, 9);
        assert_eq!(a.partitions, sample().partitions);
        Ok(())
    }

    #[test]
    fn huge_counts_and_truncation_are_refused_without_allocating() -> Result<()> {
        // Version 1, then 2^31-1 topics in 4 bytes.
        let huge = [0u8, 1, 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_assignment(&huge),
            Err(ClientError::Malformed { .. })
        ));
        // One topic "a" claiming 2^31-1 partitions.
        let huge_parts = [0u8, 1, 0, 0, 0, 1, 0, 1, b'a', 0x7f, 0xff, 0xff, 0xff];
        assert!(decode_assignment(&huge_parts).is_err());
        // Negative counts and lengths.
        assert!(decode_assignment(&[0, 1, 0xff, 0xff, 0xff, 0xfe]).is_err());
        assert!(decode_assignment(&[0, 1, 0, 0, 0, 1, 0xff, 0xff]).is_err());
        assert!(
            decode_assignment(&[0xff, 0xff]).is_err(),
            "negative version"
        );
        assert!(decode_assignment(&[0]).is_err(), "half a version");
        // Every truncation of a valid assignment fails cleanly (or parses a prefix that is
        // itself complete), never panics.
        let full = sample().encode()?;
        for n in 0..full.len() {
            let _ = decode_assignment(&full[..n]);
        }
        Ok(())
    }

    #[test]
    fn bad_utf8_topic_is_refused() {
        let bytes = [
            0u8, 0, 0, 0, 0, 1, 0, 1, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(decode_assignment(&bytes).is_err());
    }

    #[test]
    fn subscriptions_round_trip_at_every_version() -> Result<()> {
        for version in 0..=4i16 {
            let mut sub = ConsumerSubscription {
                version,
                topics: vec!["a".into(), "bb".into()],
                user_data: Some(Bytes::from_static(b"u")),
                ..ConsumerSubscription::default()
            };
            if version >= 1 {
                sub.owned_partitions = vec![("a".into(), vec![0, 3])];
            }
            if version >= 2 {
                sub.generation_id = 7;
            }
            if version >= 3 {
                sub.rack_id = Some("r1".into());
            }
            assert_eq!(decode_subscription(&sub.encode()?)?, sub, "v{version}");
        }
        Ok(())
    }

    #[test]
    fn reads_subscriptions_the_kafka_protocol_crate_writes() -> Result<()> {
        use kafka_protocol::messages::consumer_protocol_subscription::{
            ConsumerProtocolSubscription, TopicPartition as SubTp,
        };
        for version in 0..=3i16 {
            let mut cps = ConsumerProtocolSubscription::default();
            cps.topics = vec![StrBytes::from_static_str("orders")];
            if version >= 1 {
                let mut tp = SubTp::default();
                tp.topic = TopicName(StrBytes::from_static_str("orders"));
                tp.partitions = vec![2];
                cps.owned_partitions = vec![tp];
            }
            if version >= 2 {
                cps.generation_id = 4;
            }
            let mut buf = Vec::new();
            buf.put_i16(version);
            cps.encode(&mut buf, version)
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
            let s = decode_subscription(&buf)?;
            assert_eq!(s.topics, vec!["orders".to_string()]);
            if version >= 1 {
                assert_eq!(s.owned_partitions, vec![("orders".to_string(), vec![2])]);
            }
            assert_eq!(s.generation_id, if version >= 2 { 4 } else { -1 });
        }
        Ok(())
    }

    #[test]
    fn truncated_and_hostile_subscriptions_fail_cleanly() -> Result<()> {
        // Topics only (writers that stop early) is accepted.
        let short = [0u8, 0, 0, 0, 0, 1, 0, 1, b't'];
        assert_eq!(decode_subscription(&short)?.topics, vec!["t".to_string()]);
        // 2^31-1 topics in a few bytes.
        assert!(decode_subscription(&[0, 1, 0x7f, 0xff, 0xff, 0xff, 0, 0]).is_err());
        assert!(decode_subscription(&[0xff, 0xff]).is_err());
        let full = ConsumerSubscription {
            topics: vec!["abc".into()],
            owned_partitions: vec![("abc".into(), vec![1, 2])],
            rack_id: Some("rack".into()),
            ..ConsumerSubscription::default()
        }
        .encode()?;
        for n in 0..full.len() {
            let _ = decode_subscription(&full[..n]);
        }
        Ok(())
    }
}
