//! Fetch responses encoded in pieces, so that record sets can go from the log files to the
//! socket without passing through user space (sendfile). Everything but the record bytes is
//! encoded with kafka-protocol's field encoders, in the order its `FetchResponse` encoder
//! uses; a property test checks the pieces reassemble to exactly what kafka-protocol encodes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::fetch_response::{FetchResponse, PartitionData};
use kafka_protocol::protocol::Encodable;

use crate::frame::FrameError;

/// Lowest and highest Fetch versions this encoder writes.
pub const VERSIONS: (i16, i16) = (4, 16);

/// One piece of a response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramePart {
    /// Bytes encoded here.
    Encoded(Bytes),
    /// The `k`-th external record set (counting partitions in response order) goes here.
    Records(usize),
}

/// A response frame as pieces, the 4-byte length prefix included in the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplicedFrame {
    /// In wire order.
    pub parts: Vec<FramePart>,
    /// Bytes of the whole frame, length prefix included.
    pub frame_len: usize,
}

fn enc<E: std::fmt::Display>(r: Result<(), E>) -> Result<(), FrameError> {
    r.map_err(|e| FrameError::Encode(e.to_string()))
}

fn unsupported(what: &str) -> FrameError {
    FrameError::Encode(format!("spliced fetch response: {what} not supported"))
}

/// Encodes `resp` as a Fetch response frame of `version`. Partitions are numbered in response
/// order across topics; for partition `k`, `external[k] == Some(len)` means its record set of
/// `len` bytes is supplied by the caller in place of [`FramePart::Records`]`(k)` (the
/// partition's own `records` field is ignored); `None` (or a short `external`) encodes the
/// partition's `records` here. Unknown tagged fields are refused.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    resp: &FetchResponse,
    external: &[Option<usize>],
) -> Result<SplicedFrame, FrameError> {
    if version < VERSIONS.0 || version > VERSIONS.1 {
        return Err(unsupported(&format!("version {version}")));
    }
    if !resp.unknown_tagged_fields.is_empty() {
        return Err(unsupported("unknown tagged fields"));
    }
    let flexible = version >= 12;
    let mut w = Writer {
        parts: Vec::new(),
        cur: BytesMut::with_capacity(256),
        external_bytes: 0,
    };
    let buf = &mut w.cur;
    // Response header: v1 (tagged fields) for flexible versions.
    buf.put_i32(correlation_id);
    if ApiKey::Fetch.response_header_version(version) >= 1 {
        put_uvarint(buf, 0);
    }
    buf.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(resp.error_code);
        buf.put_i32(resp.session_id);
    } else if resp.session_id != 0 {
        return Err(unsupported("session id before v7"));
    }
    w.array_len(resp.responses.len(), flexible)?;
    let mut k = 0usize;
    for topic in &resp.responses {
        if !topic.unknown_tagged_fields.is_empty() {
            return Err(unsupported("unknown tagged fields"));
        }
        if version <= 12 {
            put_string(&mut w.cur, topic.topic.0.as_bytes(), flexible)?;
        }
        if version >= 13 {
            w.cur.put_slice(topic.topic_id.as_bytes());
        }
        w.array_len(topic.partitions.len(), flexible)?;
        for p in &topic.partitions {
            w.partition(version, p, external.get(k).copied().flatten(), k)?;
            k += 1;
        }
        if flexible {
            put_uvarint(&mut w.cur, 0);
        }
    }
    if flexible {
        let endpoints = version >= 16 && !resp.node_endpoints.is_empty();
        put_uvarint(&mut w.cur, u32::from(endpoints));
        if endpoints {
            let mut field = BytesMut::new();
            put_structs(&mut field, Some(&resp.node_endpoints), version, true)?;
            put_uvarint(&mut w.cur, 0);
            put_uvarint(&mut w.cur, len_u32(field.len())?);
            w.cur.put_slice(&field);
        }
    }
    w.finish()
}

fn len_u32(n: usize) -> Result<u32, FrameError> {
    u32::try_from(n).map_err(|_| FrameError::Encode("field too large".into()))
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_string(buf: &mut BytesMut, s: &[u8], flexible: bool) -> Result<(), FrameError> {
    if flexible {
        put_uvarint(buf, len_u32(s.len() + 1)?);
    } else {
        let n = i16::try_from(s.len()).map_err(|_| FrameError::Encode("string too long".into()))?;
        buf.put_i16(n);
    }
    buf.put_slice(s);
    Ok(())
}

fn put_nullable_bytes(
    buf: &mut BytesMut,
    b: Option<&[u8]>,
    flexible: bool,
) -> Result<(), FrameError> {
    match (b, flexible) {
        (None, true) => put_uvarint(buf, 0),
        (None, false) => buf.put_i32(-1),
        (Some(b), true) => put_uvarint(buf, len_u32(b.len() + 1)?),
        (Some(b), false) => buf.put_i32(
            i32::try_from(b.len()).map_err(|_| FrameError::Encode("bytes too long".into()))?,
        ),
    }
    if let Some(b) = b {
        buf.put_slice(b);
    }
    Ok(())
}

/// A (nullable) array of structures, each encoded by kafka-protocol.
fn put_structs<T: Encodable>(
    buf: &mut BytesMut,
    items: Option<&[T]>,
    version: i16,
    flexible: bool,
) -> Result<(), FrameError> {
    match (items, flexible) {
        (None, true) => put_uvarint(buf, 0),
        (None, false) => buf.put_i32(-1),
        (Some(v), true) => put_uvarint(buf, len_u32(v.len() + 1)?),
        (Some(v), false) => buf.put_i32(
            i32::try_from(v.len()).map_err(|_| FrameError::Encode("array too long".into()))?,
        ),
    }
    for item in items.unwrap_or_default() {
        enc(item.encode(buf, version))?;
    }
    Ok(())
}

/// A tagged field holding one structure.
fn put_tagged<T: Encodable>(
    buf: &mut BytesMut,
    tag: u32,
    item: &T,
    version: i16,
) -> Result<(), FrameError> {
    let mut field = BytesMut::new();
    enc(item.encode(&mut field, version))?;
    put_uvarint(buf, tag);
    put_uvarint(buf, len_u32(field.len())?);
    buf.put_slice(&field);
    Ok(())
}

struct Writer {
    parts: Vec<FramePart>,
    cur: BytesMut,
    external_bytes: usize,
}

impl Writer {
    fn array_len(&mut self, n: usize, flexible: bool) -> Result<(), FrameError> {
        let too_many = || FrameError::Encode("array too long".into());
        if flexible {
            let n = u32::try_from(n + 1).map_err(|_| too_many())?;
            put_uvarint(&mut self.cur, n);
        } else {
            let n = i32::try_from(n).map_err(|_| too_many())?;
            self.cur.put_i32(n);
        }
        Ok(())
    }

    fn partition(
        &mut self,
        version: i16,
        p: &PartitionData,
        external: Option<usize>,
        k: usize,
    ) -> Result<(), FrameError> {
        if !p.unknown_tagged_fields.is_empty() {
            return Err(unsupported("unknown tagged fields"));
        }
        let flexible = version >= 12;
        let buf = &mut self.cur;
        buf.put_i32(p.partition_index);
        buf.put_i16(p.error_code);
        buf.put_i64(p.high_watermark);
        buf.put_i64(p.last_stable_offset);
        if version >= 5 {
            buf.put_i64(p.log_start_offset);
        }
        put_structs(buf, p.aborted_transactions.as_deref(), version, flexible)?;
        if version >= 11 {
            buf.put_i32(p.preferred_read_replica.0);
        } else if p.preferred_read_replica.0 != -1 {
            return Err(unsupported("preferred read replica before v11"));
        }
        match external {
            Some(len) => {
                let too_big = || FrameError::Encode("record set too large".into());
                if flexible {
                    let n = u32::try_from(len + 1).map_err(|_| too_big())?;
                    put_uvarint(&mut self.cur, n);
                } else {
                    let n = i32::try_from(len).map_err(|_| too_big())?;
                    self.cur.put_i32(n);
                }
                let done = self.cur.split().freeze();
                self.parts.push(FramePart::Encoded(done));
                self.parts.push(FramePart::Records(k));
                self.external_bytes += len;
            }
            None => put_nullable_bytes(&mut self.cur, p.records.as_deref(), flexible)?,
        }
        if flexible {
            let diverging = p.diverging_epoch != Default::default();
            let leader = p.current_leader != Default::default();
            let snapshot = p.snapshot_id != Default::default();
            let n = u32::from(diverging) + u32::from(leader) + u32::from(snapshot);
            put_uvarint(&mut self.cur, n);
            if diverging {
                put_tagged(&mut self.cur, 0, &p.diverging_epoch, version)?;
            }
            if leader {
                put_tagged(&mut self.cur, 1, &p.current_leader, version)?;
            }
            if snapshot {
                put_tagged(&mut self.cur, 2, &p.snapshot_id, version)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<SplicedFrame, FrameError> {
        if !self.cur.is_empty() {
            let rest = self.cur.split().freeze();
            self.parts.push(FramePart::Encoded(rest));
        }
        let encoded: usize = self
            .parts
            .iter()
            .map(|p| match p {
                FramePart::Encoded(b) => b.len(),
                FramePart::Records(_) => 0,
            })
            .sum();
        let body = encoded + self.external_bytes;
        let len =
            i32::try_from(body).map_err(|_| FrameError::Encode("response too large".into()))?;
        let mut prefix = BytesMut::with_capacity(4);
        prefix.put_i32(len);
        // The prefix joins the first piece, so a small response is still one write.
        match self.parts.first_mut() {
            Some(FramePart::Encoded(first)) => {
                prefix.extend_from_slice(first);
                *first = prefix.freeze();
            }
            _ => self.parts.insert(0, FramePart::Encoded(prefix.freeze())),
        }
        Ok(SplicedFrame {
            parts: self.parts,
            frame_len: 4 + body,
        })
    }
}

/// Reassembles a spliced frame with `records(k)` for each external record set (for tests and
/// for writers without zero-copy transfer).
pub fn assemble(frame: &SplicedFrame, mut records: impl FnMut(usize) -> Bytes) -> BytesMut {
    let mut out = BytesMut::with_capacity(frame.frame_len);
    for part in &frame.parts {
        match part {
            FramePart::Encoded(b) => out.extend_from_slice(b),
            FramePart::Records(k) => out.extend_from_slice(&records(*k)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_response;
    use kafka_protocol::messages::ResponseKind;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct PSpec {
        index: i32,
        error: i16,
        hw: i64,
        aborted: Option<Vec<(i64, i64)>>,
        records: Option<Vec<u8>>,
        external: bool,
        leader: Option<(i32, i32)>,
        diverging: Option<(i32, i64)>,
    }

    fn pspec() -> impl Strategy<Value = PSpec> {
        (
            any::<i32>(),
            any::<i16>(),
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<(i64, i64)>(), 0..3)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            any::<bool>(),
            proptest::option::of(any::<(i32, i32)>()),
            proptest::option::of(any::<(i32, i64)>()),
        )
            .prop_map(
                |(index, error, hw, aborted, records, external, leader, diverging)| PSpec {
                    index,
                    error,
                    hw,
                    aborted,
                    records,
                    external,
                    leader,
                    diverging,
                },
            )
    }

    fn build(
        version: i16,
        topics: &[(String, Vec<PSpec>)],
        throttle: i32,
        endpoints: bool,
    ) -> FetchResponse {
        let mut resp = FetchResponse::default();
        resp.throttle_time_ms = throttle;
        if version >= 7 {
            resp.error_code = 3;
            resp.session_id = 77;
        }
        if version >= 16 && endpoints {
            let mut e = NodeEndpoint::default();
            e.node_id = BrokerId(1);
            e.host = StrBytes::from_static_str("localhost");
            e.port = 9092;
            resp.node_endpoints.push(e);
        }
        for (name, parts) in topics {
            let mut t = FetchableTopicResponse::default();
            if version >= 13 {
                t.topic_id = uuid::Uuid::from_u128(name.len() as u128 + 1);
            } else {
                t.topic = TopicName(StrBytes::from_string(name.clone()));
            }
            for s in parts {
                let mut p = PartitionData::default();
                p.partition_index = s.index;
                p.error_code = s.error;
                p.high_watermark = s.hw;
                p.last_stable_offset = s.hw;
                if version >= 5 {
                    p.log_start_offset = s.hw / 2;
                }
                p.aborted_transactions = s.aborted.as_ref().map(|v| {
                    v.iter()
                        .map(|&(pid, first)| {
                            let mut a = AbortedTransaction::default();
                            a.producer_id = pid.into();
                            a.first_offset = first;
                            a
                        })
                        .collect()
                });
                if version >= 11 {
                    p.preferred_read_replica = BrokerId(s.index % 5);
                }
                if version >= 12 {
                    if let Some((id, epoch)) = s.leader {
                        let mut l = LeaderIdAndEpoch::default();
                        l.leader_id = BrokerId(id);
                        l.leader_epoch = epoch;
                        p.current_leader = l;
                    }
                    if let Some((epoch, end)) = s.diverging {
                        let mut d = EpochEndOffset::default();
                        d.epoch = epoch;
                        d.end_offset = end;
                        p.diverging_epoch = d;
                    }
                }
                p.records = s.records.clone().map(Bytes::from);
                t.partitions.push(p);
            }
            resp.responses.push(t);
        }
        resp
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

        /// Spliced frames reassemble to kafka-protocol's own encoding, byte for byte.
        #[test]
        fn reassembles_to_the_codecs_encoding(
            version in VERSIONS.0..=VERSIONS.1,
            topics in proptest::collection::vec(
                ("[a-z]{1,12}", proptest::collection::vec(pspec(), 0..4)), 0..4),
            throttle in any::<i32>(),
            correlation_id in any::<i32>(),
            endpoints in any::<bool>(),
        ) {
            let resp = build(version, &topics, throttle, endpoints);
            let expected = encode_response(
                ApiKey::Fetch, version, correlation_id, &ResponseKind::Fetch(resp.clone()),
            ).expect("codec encodes");
            let specs: Vec<&PSpec> = topics.iter().flat_map(|(_, p)| p).collect();
            let external: Vec<Option<usize>> = specs
                .iter()
                .map(|s| match (&s.records, s.external) {
                    (Some(r), true) => Some(r.len()),
                    _ => None,
                })
                .collect();
            // The encoder must not look at the records it was told are external.
            let mut blanked = resp.clone();
            let mut k = 0;
            for t in &mut blanked.responses {
                for p in &mut t.partitions {
                    if external[k].is_some() {
                        p.records = None;
                    }
                    k += 1;
                }
            }
            let frame = encode_fetch_response(version, correlation_id, &blanked, &external)
                .expect("spliced encode");
            let got = assemble(&frame, |k| Bytes::from(specs[k].records.clone().unwrap_or_default()));
            prop_assert_eq!(frame.frame_len, got.len());
            prop_assert_eq!(&got[..], &expected[..]);
            let spliced = frame.parts.iter().filter(|p| matches!(p, FramePart::Records(_))).count();
            prop_assert_eq!(spliced, external.iter().flatten().count());
        }
    }

    #[test]
    fn refuses_versions_and_fields_it_cannot_write() {
        let resp = FetchResponse::default();
        assert!(encode_fetch_response(3, 1, &resp, &[]).is_err());
        assert!(encode_fetch_response(17, 1, &resp, &[]).is_err());
        let mut resp = FetchResponse::default();
        resp.session_id = 5;
        assert!(encode_fetch_response(6, 1, &resp, &[]).is_err());
    }
}
