//! The "consumer" embedded protocol: the assignment bytes a group leader hands each member in
//! SyncGroup, which DescribeGroups returns as `member_assignment`.
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
}

impl<'a> Reader<'a> {
    fn err(&self, reason: String) -> ClientError {
        ClientError::Malformed {
            what: "consumer assignment",
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
    let mut r = Reader { buf: data, pos: 0 };
    let version = r.i16("version")?;
    if version < 0 {
        return Err(r.err(format!("negative version {version}")));
    }
    let topics = r.count("assigned_partitions", 6)?;
    let mut partitions = Vec::with_capacity(topics);
    for _ in 0..topics {
        let len = r.i16("topic length")?;
        let len = usize::try_from(len).map_err(|_| r.err(format!("topic length {len}")))?;
        let name = r.take(len, "topic")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| r.err("topic name is not UTF-8".into()))?
            .to_string();
        let n = r.count("partitions", 4)?;
        let mut ps = Vec::with_capacity(n);
        for _ in 0..n {
            ps.push(r.i32("partition")?);
        }
        partitions.push((name, ps));
    }
    let user_data = if r.remaining() == 0 {
        // Tolerate a writer that stopped after the partitions.
        None
    } else {
        let len = r.i32("user_data length")?;
        if len < 0 {
            None
        } else {
            Some(Bytes::copy_from_slice(r.take(len as usize, "user_data")?))
        }
    };
    // Anything after is a newer version's fields (or padding): ignored, as Kafka does.
    Ok(ConsumerAssignment {
        version,
        partitions,
        user_data,
    })
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
}
