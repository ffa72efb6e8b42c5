//! Fetch from the closest replica (KIP-392), the consumer's half: the consumer sends its
//! `client.rack` in every Fetch (v11+); a leader with a replica selector may answer a
//! partition with no records and a `preferred_read_replica`. The consumer then fetches that
//! partition from that broker, as the Java client does, until
//! - `metadata.max.age.ms` has passed since the leader named it (then the leader is asked
//!   again, and may name another),
//! - the replica answers an error that sends the consumer back to the leader: one that calls
//!   for fresh metadata (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, REPLICA_NOT_AVAILABLE,
//!   OFFSET_NOT_AVAILABLE, an unknown topic, ...) except UNKNOWN_LEADER_EPOCH (the replica's
//!   metadata is behind: try it again), or OFFSET_OUT_OF_RANGE (the replica may lag: the
//!   leader decides whether the position is really out of range, so no reset happens),
//! - a fetch to it fails (a connection failure), or the metadata no longer lists the broker.

use std::time::{Duration, Instant};

use crate::error::codes;

use super::UNKNOWN_LEADER_EPOCH;

/// The replica a leader named for one partition, and until when it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PreferredReadReplica {
    chosen: Option<(i32, Instant)>,
}

impl PreferredReadReplica {
    /// The leader named `node` at `now`; it holds for `max_age` (`metadata.max.age.ms`).
    pub(crate) fn set(&mut self, node: i32, now: Instant, max_age: Duration) {
        self.chosen = (node >= 0).then(|| (node, now + max_age));
    }

    /// The replica to fetch from at `now`, if one is named and has not expired (an expired
    /// one is forgotten).
    pub(crate) fn get(&mut self, now: Instant) -> Option<i32> {
        match self.chosen {
            Some((node, until)) if now < until => Some(node),
            Some(_) => {
                self.chosen = None;
                None
            }
            None => None,
        }
    }

    /// Back to the leader; the replica that was named, if any.
    pub(crate) fn clear(&mut self) -> Option<i32> {
        self.chosen.take().map(|(node, _)| node)
    }

    /// Back to the leader if `node` is the replica named (its fetch failed).
    pub(crate) fn clear_if(&mut self, node: i32) -> bool {
        let named = self.chosen.is_some_and(|(n, _)| n == node);
        if named {
            self.chosen = None;
        }
        named
    }
}

/// Where to send a partition's next fetch: the named replica while it holds and the metadata
/// lists it (`known`), else the leader. The flag is true when a named replica was dropped
/// because the metadata does not list it (the metadata is then worth refreshing).
pub(crate) fn fetch_node(
    preferred: &mut PreferredReadReplica,
    leader: i32,
    now: Instant,
    known: impl Fn(i32) -> bool,
) -> (i32, bool) {
    match preferred.get(now) {
        Some(node) if known(node) => (node, false),
        Some(_) => {
            preferred.clear();
            (leader, true)
        }
        None => (leader, false),
    }
}

/// What a partition's fetch error from broker `node` means for its named replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterError {
    /// Nothing changes (no replica named, or one to try again).
    Keep,
    /// Back to the leader; the error itself was the replica's view, not the log's
    /// (OFFSET_OUT_OF_RANGE from the replica: no offset reset).
    BackToLeader,
    /// Back to the leader; the error is handled as usual too.
    BackToLeaderAndHandle,
}

/// Decides on error `code`, for a fetch that went to `node`. `refresh_metadata` says whether
/// the code is one that calls for fresh metadata.
pub(crate) fn after_error(
    preferred: &mut PreferredReadReplica,
    node: i32,
    code: i16,
    refresh_metadata: bool,
) -> AfterError {
    if code == codes::OFFSET_OUT_OF_RANGE {
        // Java's clearPreferredReadReplica: a named replica answered, so the leader decides.
        return if preferred.clear_if(node) {
            AfterError::BackToLeader
        } else {
            preferred.clear();
            AfterError::Keep
        };
    }
    if code == UNKNOWN_LEADER_EPOCH || !refresh_metadata {
        return AfterError::Keep;
    }
    if preferred.clear().is_some() {
        AfterError::BackToLeaderAndHandle
    } else {
        AfterError::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::FENCED_LEADER_EPOCH;

    const AGE: Duration = Duration::from_secs(300);
    const CORRUPT_MESSAGE: i16 = 2;

    #[test]
    fn a_named_replica_holds_for_metadata_max_age() {
        let t0 = Instant::now();
        let mut p = PreferredReadReplica::default();
        assert_eq!(p.get(t0), None);
        p.set(2, t0, AGE);
        assert_eq!(p.get(t0), Some(2));
        assert_eq!(p.get(t0 + AGE - Duration::from_millis(1)), Some(2));
        // Expired: forgotten, the leader is asked again.
        assert_eq!(p.get(t0 + AGE), None);
        assert_eq!(p.clear(), None);
        // A negative id names nothing.
        p.set(-1, t0, AGE);
        assert_eq!(p.get(t0), None);
    }

    #[test]
    fn fetches_go_to_the_named_replica_while_the_metadata_lists_it() {
        let t0 = Instant::now();
        let mut p = PreferredReadReplica::default();
        assert_eq!(fetch_node(&mut p, 1, t0, |_| true), (1, false));
        p.set(2, t0, AGE);
        assert_eq!(fetch_node(&mut p, 1, t0, |_| true), (2, false));
        assert_eq!(fetch_node(&mut p, 1, t0, |n| n != 3), (2, false));
        // Gone from the metadata: the leader, and a metadata refresh.
        assert_eq!(fetch_node(&mut p, 1, t0, |n| n != 2), (1, true));
        assert_eq!(fetch_node(&mut p, 1, t0, |_| true), (1, false));
        p.set(2, t0, AGE);
        assert_eq!(fetch_node(&mut p, 1, t0 + AGE, |_| true), (1, false));
    }

    #[test]
    fn errors_send_the_consumer_back_to_the_leader() {
        let t0 = Instant::now();
        for code in [
            codes::NOT_LEADER_OR_FOLLOWER,
            FENCED_LEADER_EPOCH,
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            78, // OFFSET_NOT_AVAILABLE
        ] {
            let mut p = PreferredReadReplica::default();
            p.set(2, t0, AGE);
            assert_eq!(
                after_error(&mut p, 2, code, true),
                AfterError::BackToLeaderAndHandle,
                "{code}"
            );
            assert_eq!(p.get(t0), None, "{code}");
            // Without a named replica the error is only handled.
            assert_eq!(after_error(&mut p, 1, code, true), AfterError::Keep);
        }
    }

    #[test]
    fn unknown_leader_epoch_tries_the_replica_again() {
        let t0 = Instant::now();
        let mut p = PreferredReadReplica::default();
        p.set(2, t0, AGE);
        assert_eq!(
            after_error(&mut p, 2, UNKNOWN_LEADER_EPOCH, true),
            AfterError::Keep
        );
        assert_eq!(p.get(t0), Some(2));
        // Errors that are not about where to fetch keep it too.
        assert_eq!(
            after_error(&mut p, 2, CORRUPT_MESSAGE, false),
            AfterError::Keep
        );
        assert_eq!(p.get(t0), Some(2));
    }

    #[test]
    fn out_of_range_at_the_replica_asks_the_leader_instead_of_resetting() {
        let t0 = Instant::now();
        let mut p = PreferredReadReplica::default();
        p.set(2, t0, AGE);
        assert_eq!(
            after_error(&mut p, 2, codes::OFFSET_OUT_OF_RANGE, false),
            AfterError::BackToLeader
        );
        assert_eq!(p.get(t0), None);
        // At the leader it is a real out of range: handled (reset or error).
        assert_eq!(
            after_error(&mut p, 1, codes::OFFSET_OUT_OF_RANGE, false),
            AfterError::Keep
        );
    }

    #[test]
    fn a_failed_fetch_forgets_only_the_replica_it_went_to() {
        let t0 = Instant::now();
        let mut p = PreferredReadReplica::default();
        p.set(2, t0, AGE);
        assert!(!p.clear_if(3));
        assert_eq!(p.get(t0), Some(2));
        assert!(p.clear_if(2));
        assert_eq!(p.get(t0), None);
    }

    mod fake_cluster {
        //! Two fake brokers: node 0 leads `t-0` and names node 1 (rack r2) as the read replica
        //! to a consumer in rack r2; node 1 serves offsets 0..6 in two batches, but refuses its
        //! first fetch at offset 3 with OFFSET_OUT_OF_RANGE and its second with
        //! NOT_LEADER_OR_FOLLOWER.

        use std::sync::{Arc, Mutex};
        use std::time::{Duration, Instant};

        use bytes::Bytes;
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        };
        use kafka_protocol::messages::{
            ApiKey, ApiVersionsResponse, FetchResponse, MetadataResponse, RequestKind, ResponseKind,
        };
        use kafka_protocol::protocol::StrBytes;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use crate::admin::TopicPartition;
        use crate::consumer::{Consumer, ConsumerConfig};
        use crate::error::{ClientError, Result, codes};

        /// Every Fetch either broker saw: (node, fetch offset, rack id, what it answered).
        type Seen = Vec<(i32, i64, String, &'static str)>;

        fn batch(base: i64, values: &[u8]) -> Bytes {
            let mut recs = Vec::new();
            for (i, v) in values.iter().enumerate() {
                vltava_protocol::records::RecordView {
                    attributes: 0,
                    timestamp_delta: 0,
                    offset_delta: i as i32,
                    key: None,
                    value: Some(std::slice::from_ref(v)),
                    headers: &[0],
                }
                .encode(&mut recs);
            }
            let header = vltava_protocol::batch::BatchHeader {
                base_offset: base,
                batch_length: 0,
                partition_leader_epoch: 1,
                magic: 2,
                crc: 0,
                attributes: 0,
                last_offset_delta: values.len() as i32 - 1,
                base_timestamp: 1,
                max_timestamp: 1,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                record_count: values.len() as i32,
            };
            Bytes::from(vltava_protocol::batch::build_batch(&header, &recs))
        }

        fn answer(
            node: i32,
            ports: [u16; 2],
            seen: &Mutex<Seen>,
            req: RequestKind,
        ) -> Option<ResponseKind> {
            let mut seen = seen.lock().ok()?;
            Some(match req {
                RequestKind::ApiVersions(_) => {
                    let mut r = ApiVersionsResponse::default();
                    for (k, min, max) in [
                        (ApiKey::ApiVersions, 0, 4),
                        (ApiKey::Metadata, 4, 12),
                        (ApiKey::Fetch, 4, 12),
                    ] {
                        let mut v = ApiVersion::default();
                        v.api_key = k as i16;
                        v.min_version = min;
                        v.max_version = max;
                        r.api_keys.push(v);
                    }
                    ResponseKind::ApiVersions(r)
                }
                RequestKind::Metadata(m) => {
                    let mut r = MetadataResponse::default();
                    for (id, port) in ports.iter().enumerate() {
                        let mut b = MetadataResponseBroker::default();
                        b.node_id = (id as i32).into();
                        b.host = StrBytes::from_static_str("127.0.0.1");
                        b.port = i32::from(*port);
                        b.rack = Some(StrBytes::from_string(format!("r{}", id + 1)));
                        r.brokers.push(b);
                    }
                    for t in m.topics.unwrap_or_default() {
                        let mut rt = MetadataResponseTopic::default();
                        rt.name = t.name;
                        let mut p = MetadataResponsePartition::default();
                        p.leader_id = 0.into();
                        p.leader_epoch = 1;
                        p.replica_nodes = vec![0.into(), 1.into()];
                        p.isr_nodes = vec![0.into(), 1.into()];
                        rt.partitions.push(p);
                        r.topics.push(rt);
                    }
                    ResponseKind::Metadata(r)
                }
                RequestKind::Fetch(f) => {
                    let rack = f.rack_id.to_string();
                    let mut r = FetchResponse::default();
                    for t in f.topics {
                        let mut rt = FetchableTopicResponse::default();
                        rt.topic = t.topic;
                        for p in t.partitions {
                            let mut d = PartitionData::default();
                            d.partition_index = p.partition;
                            d.high_watermark = 6;
                            let offset = p.fetch_offset;
                            let refusals = seen
                                .iter()
                                .filter(|s| s.0 == 1 && s.1 == 3 && s.3 != "records")
                                .count();
                            let what = match (node, offset) {
                                (0, o) if o < 6 && rack == "r2" => {
                                    d.preferred_read_replica = 1.into();
                                    d.records = Some(Bytes::new());
                                    "redirect"
                                }
                                (0, _) => "leader",
                                (_, 0) => {
                                    d.records = Some(batch(0, b"abc"));
                                    "records"
                                }
                                (_, 3) if refusals == 0 => {
                                    d.error_code = codes::OFFSET_OUT_OF_RANGE;
                                    "out of range"
                                }
                                (_, 3) if refusals == 1 => {
                                    d.error_code = codes::NOT_LEADER_OR_FOLLOWER;
                                    "not leader or follower"
                                }
                                (_, 3) => {
                                    d.records = Some(batch(3, b"def"));
                                    "records"
                                }
                                _ => "empty",
                            };
                            seen.push((node, offset, rack.clone(), what));
                            rt.partitions.push(d);
                        }
                        r.responses.push(rt);
                    }
                    ResponseKind::Fetch(r)
                }
                _ => return None,
            })
        }

        async fn serve(
            mut stream: tokio::net::TcpStream,
            node: i32,
            ports: [u16; 2],
            seen: Arc<Mutex<Seen>>,
        ) {
            loop {
                let Ok(len) = stream.read_i32().await else {
                    return;
                };
                let mut buf = vec![0u8; len.max(0) as usize];
                if stream.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let Ok(raw) = vltava_protocol::frame::decode_header(Bytes::from(buf)) else {
                    return;
                };
                let (api, version, cid) = (
                    raw.api_key,
                    raw.header.request_api_version,
                    raw.header.correlation_id,
                );
                let Ok(req) = vltava_protocol::frame::decode_body(api, version, raw.body) else {
                    return;
                };
                let Some(body) = answer(node, ports, &seen, req) else {
                    return;
                };
                let Ok(out) = vltava_protocol::frame::encode_response(api, version, cid, &body)
                else {
                    return;
                };
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        }

        fn io(e: std::io::Error) -> ClientError {
            ClientError::InvalidArgument(e.to_string())
        }

        /// The consumer reads everything once, from the replica the leader named, and goes
        /// back to the leader (no offset reset) when that replica refuses.
        #[tokio::test]
        async fn the_consumer_reads_from_the_named_replica_and_returns_to_the_leader_on_errors()
        -> Result<()> {
            let l0 = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(io)?;
            let l1 = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(io)?;
            let ports = [
                l0.local_addr().map_err(io)?.port(),
                l1.local_addr().map_err(io)?.port(),
            ];
            let seen: Arc<Mutex<Seen>> = Arc::default();
            for (node, l) in [(0, l0), (1, l1)] {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    while let Ok((stream, _)) = l.accept().await {
                        tokio::spawn(serve(stream, node, ports, Arc::clone(&seen)));
                    }
                });
            }
            let mut config = ConsumerConfig::new(&format!("127.0.0.1:{}", ports[0]))?;
            config
                .set("client.rack", "r2")?
                .set("auto.offset.reset", "none")?
                .set("retry.backoff.ms", "10")?
                .set("fetch.max.wait.ms", "10")?;
            let mut c = Consumer::new(config).await?;
            let tp = TopicPartition::new("t", 0);
            c.assign(std::slice::from_ref(&tp))?;
            c.seek(&tp, 0)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut got = Vec::new();
            while got.len() < 6 && Instant::now() < deadline {
                got.extend(c.poll(Duration::from_millis(100)).await?);
            }
            let values: Vec<u8> = got
                .iter()
                .filter_map(|r| r.value.as_ref().map(|v| v[0]))
                .collect();
            assert_eq!(values, b"abcdef".to_vec());
            let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5]);
            let seen = seen
                .lock()
                .map_err(|_| ClientError::NotFound("lock".into()))?
                .clone();
            // Every fetch carried the rack; the leader served no records.
            assert!(seen.iter().all(|s| s.2 == "r2"), "{seen:?}");
            let trail: Vec<(i32, i64, &str)> = seen
                .iter()
                .filter(|s| s.3 != "empty")
                .map(|s| (s.0, s.1, s.3))
                .collect();
            assert_eq!(
                trail,
                vec![
                    (0, 0, "redirect"),
                    (1, 0, "records"),
                    (1, 3, "out of range"),
                    (0, 3, "redirect"),
                    (1, 3, "not leader or follower"),
                    (0, 3, "redirect"),
                    (1, 3, "records"),
                ],
                "{seen:?}"
            );
            Ok(())
        }
    }
}
