//! Committed offsets and group metadata as records of the internal, compacted topic
//! `__consumer_offsets`, in Kafka's key/value layouts so existing tools can read them.
//!
//! The in-memory [`OffsetStore`] is the cache; the topic is the truth: every commit is appended
//! before it is acknowledged, and the cache is rebuilt from the topic at start.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Name of the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Partition of `__consumer_offsets` that holds a group: Java's `String.hashCode` masked to a
/// non-negative value, modulo the partition count, exactly as Kafka computes it.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch of the record before `offset`, or -1.
    pub leader_epoch: i32,
    /// Client-supplied metadata.
    pub metadata: String,
    /// When the commit was made.
    pub commit_timestamp_ms: i64,
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq)]
pub enum OffsetsRecord {
    /// An offset commit (value `None` is a tombstone: the offset was deleted or expired).
    Offset {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The commit, or `None` for a tombstone.
        value: Option<OffsetEntry>,
    },
    /// Group metadata (value `None`: the group was deleted).
    Group {
        /// Group id.
        group: String,
        /// Serialized group state, or `None` for a tombstone.
        value: Option<Bytes>,
    },
}

/// A record that does not follow the layouts we know.
#[derive(Debug, thiserror::Error)]
#[error("undecodable __consumer_offsets record: {0}")]
pub struct RecordFormatError(pub &'static str);

fn put_str(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(&s.as_bytes()[..len as usize]);
}

fn get_str(buf: &mut Bytes) -> Result<String, RecordFormatError> {
    if buf.remaining() < 2 {
        return Err(RecordFormatError("truncated string length"));
    }
    let len = buf.get_i16();
    if len < 0 {
        return Ok(String::new());
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordFormatError("truncated string"));
    }
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|_| RecordFormatError("string not UTF-8"))
}

fn need(buf: &Bytes, n: usize) -> Result<(), RecordFormatError> {
    if buf.remaining() < n {
        Err(RecordFormatError("truncated field"))
    } else {
        Ok(())
    }
}

impl OffsetsRecord {
    /// Key and value bytes (value `None` for a tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        match self {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                key.put_i16(1);
                put_str(&mut key, group);
                put_str(&mut key, topic);
                key.put_i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(3);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp_ms);
                    b.freeze()
                });
                (key.freeze(), value)
            }
            OffsetsRecord::Group { group, value } => {
                key.put_i16(2);
                put_str(&mut key, group);
                (key.freeze(), value.clone())
            }
        }
    }

    /// Decodes a key and optional value.
    pub fn decode(
        mut key: Bytes,
        value: Option<Bytes>,
    ) -> Result<OffsetsRecord, RecordFormatError> {
        need(&key, 2)?;
        match key.get_i16() {
            0 | 1 => {
                let group = get_str(&mut key)?;
                let topic = get_str(&mut key)?;
                need(&key, 4)?;
                let partition = key.get_i32();
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        need(&v, 2)?;
                        let version = v.get_i16();
                        need(&v, 8)?;
                        let offset = v.get_i64();
                        let leader_epoch = if version >= 3 {
                            need(&v, 4)?;
                            v.get_i32()
                        } else {
                            -1
                        };
                        let metadata = get_str(&mut v)?;
                        need(&v, 8)?;
                        let commit_timestamp_ms = v.get_i64();
                        Some(OffsetEntry {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp_ms,
                        })
                    }
                };
                Ok(OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            2 => Ok(OffsetsRecord::Group {
                group: get_str(&mut key)?,
                value,
            }),
            _ => Err(RecordFormatError("unknown key version")),
        }
    }
}

fn put_nullable_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

fn get_nullable_str(buf: &mut Bytes) -> Result<Option<String>, RecordFormatError> {
    need(buf, 2)?;
    if i16::from_be_bytes([buf[0], buf[1]]) < 0 {
        buf.advance(2);
        return Ok(None);
    }
    get_str(buf).map(Some)
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
    buf.put_slice(b);
}

fn get_bytes(buf: &mut Bytes) -> Result<Bytes, RecordFormatError> {
    need(buf, 4)?;
    let len = buf.get_i32();
    if len < 0 {
        return Ok(Bytes::new());
    }
    need(buf, len as usize)?;
    Ok(buf.split_to(len as usize))
}

/// Kafka's GroupMetadataValue v3 layout.
pub fn encode_group_value(g: &crate::group::GroupSnapshot) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_str(&mut b, g.protocol_type.as_deref().unwrap_or(""));
    b.put_i32(g.generation_id);
    put_nullable_str(&mut b, g.protocol.as_deref());
    put_nullable_str(&mut b, g.leader.as_deref());
    b.put_i64(g.current_state_timestamp_ms);
    b.put_i32(i32::try_from(g.members.len()).unwrap_or(i32::MAX));
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Decodes a GroupMetadataValue (v0-v3).
pub fn decode_group_value(
    group: &str,
    mut v: Bytes,
) -> Result<crate::group::GroupSnapshot, RecordFormatError> {
    need(&v, 2)?;
    let version = v.get_i16();
    if !(0..=3).contains(&version) {
        return Err(RecordFormatError("unknown group metadata version"));
    }
    let protocol_type = get_str(&mut v)?;
    need(&v, 4)?;
    let generation_id = v.get_i32();
    let protocol = get_nullable_str(&mut v)?;
    let leader = get_nullable_str(&mut v)?;
    let current_state_timestamp_ms = if version >= 2 {
        need(&v, 8)?;
        v.get_i64()
    } else {
        -1
    };
    need(&v, 4)?;
    let count = v.get_i32();
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = get_str(&mut v)?;
        let group_instance_id = if version >= 3 {
            get_nullable_str(&mut v)?
        } else {
            None
        };
        let client_id = get_str(&mut v)?;
        let client_host = get_str(&mut v)?;
        let rebalance_timeout_ms = if version >= 1 {
            need(&v, 4)?;
            v.get_i32()
        } else {
            -1
        };
        need(&v, 4)?;
        let session_timeout_ms = v.get_i32();
        let subscription = get_bytes(&mut v)?;
        let assignment = get_bytes(&mut v)?;
        members.push(crate::group::MemberSnapshot {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(crate::group::GroupSnapshot {
        group_id: group.to_string(),
        protocol_type: if protocol_type.is_empty() {
            None
        } else {
            Some(protocol_type)
        },
        generation_id,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// The committed-offset cache.
#[derive(Debug, Default)]
pub struct OffsetStore {
    offsets: HashMap<String, HashMap<(String, i32), OffsetEntry>>,
}

impl OffsetStore {
    /// Applies a record read from or written to the topic.
    pub fn apply(&mut self, record: &OffsetsRecord) {
        if let OffsetsRecord::Offset {
            group,
            topic,
            partition,
            value,
        } = record
        {
            match value {
                Some(v) => {
                    self.offsets
                        .entry(group.clone())
                        .or_default()
                        .insert((topic.clone(), *partition), v.clone());
                }
                None => {
                    if let Some(g) = self.offsets.get_mut(group) {
                        g.remove(&(topic.clone(), *partition));
                        if g.is_empty() {
                            self.offsets.remove(group);
                        }
                    }
                }
            }
        }
    }

    /// The committed offset of one partition.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetEntry> {
        self.offsets
            .get(group)
            .and_then(|g| g.get(&(topic.to_string(), partition)))
    }

    /// Every committed offset of a group, sorted by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, OffsetEntry)> {
        let mut v: Vec<_> = self
            .offsets
            .get(group)
            .map(|g| {
                g.iter()
                    .map(|((t, p), e)| (t.clone(), *p, e.clone()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.offsets.keys().map(String::as_str)
    }

    /// Forgets every offset of the groups `unload` selects (their coordinator moved away).
    pub fn unload(&mut self, unload: impl Fn(&str) -> bool) {
        self.offsets.retain(|g, _| !unload(g));
    }

    /// Offsets of `group` committed before `cutoff_ms` (expiry candidates).
    pub fn expired(&self, group: &str, cutoff_ms: i64) -> Vec<(String, i32)> {
        self.offsets
            .get(group)
            .map(|g| {
                g.iter()
                    .filter(|(_, e)| e.commit_timestamp_ms < cutoff_ms)
                    .map(|((t, p), _)| (t.clone(), *p))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_hashcode() {
        // "test-group".hashCode() == 627841412 in Java → % 50 = 12.
        assert_eq!(partition_for("test-group", 50), 12);
        // Negative hash: "my-consumer-group-name".hashCode() == -306381393 → masked % 50 = 5.
        assert_eq!(partition_for("my-consumer-group-name", 50), 5);
        // "".hashCode() == 0
        assert_eq!(partition_for("", 50), 0);
        // "a".hashCode() == 97
        assert_eq!(partition_for("a", 50), 47);
    }

    #[test]
    fn records_roundtrip() {
        let r = OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetEntry {
                offset: 42,
                leader_epoch: 7,
                metadata: "m".into(),
                commit_timestamp_ms: 1000,
            }),
        };
        let (k, v) = r.encode();
        assert_eq!(OffsetsRecord::decode(k, v).expect("decode"), r);
        let g = OffsetsRecord::Group {
            group: "g".into(),
            value: None,
        };
        let (k, v) = g.encode();
        assert_eq!(OffsetsRecord::decode(k, v).expect("decode"), g);
        assert!(OffsetsRecord::decode(Bytes::from_static(&[0, 9]), None).is_err());
        assert!(OffsetsRecord::decode(Bytes::from_static(&[0]), None).is_err());
    }

    #[test]
    fn group_value_roundtrip() {
        let g = crate::group::GroupSnapshot {
            group_id: "g".into(),
            protocol_type: Some("consumer".into()),
            generation_id: 4,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 99,
            members: vec![crate::group::MemberSnapshot {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300000,
                session_timeout_ms: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let v = encode_group_value(&g);
        assert_eq!(decode_group_value("g", v.clone()).expect("decode"), g);
        for cut in 0..v.len() {
            assert!(decode_group_value("g", v.slice(..cut)).is_err());
        }
    }

    #[test]
    fn store_applies_tombstones() {
        let mut s = OffsetStore::default();
        let put = |o| OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: o,
        };
        s.apply(&put(Some(OffsetEntry {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        })));
        assert_eq!(s.get("g", "t", 0).map(|e| e.offset), Some(5));
        assert_eq!(s.expired("g", 2), vec![("t".to_string(), 0)]);
        s.apply(&put(None));
        assert!(s.get("g", "t", 0).is_none());
        assert_eq!(s.groups().count(), 0);
    }
}
