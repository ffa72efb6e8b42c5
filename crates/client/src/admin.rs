//! Admin operations: topics, partitions, consumer groups and their offsets.
//!
//! Operations on several objects at once (create three topics, delete two groups) return one
//! result per object ([`PerItem`]); the outer `Result` fails only when the request itself
//! could not be made. Group operations go to the group's coordinator, found with
//! FindCoordinator and found again after NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE; offset
//! lookups go to each partition's leader.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest,
    DescribeGroupsRequest, GroupId, ListGroupsRequest, ListOffsetsRequest, OffsetCommitRequest,
    OffsetFetchRequest, TopicName, create_partitions_request, create_topics_request,
    delete_topics_request, list_offsets_request, offset_commit_request, offset_fetch_request,
};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::cluster::{ClientConfig, Cluster, TopicMetadata, is_coordinator_retriable};
use crate::consumer_protocol::{ConsumerAssignment, decode_assignment};
use crate::error::{ClientError, ErrorCode, Result, codes};
use crate::offset_fetch::{OffsetFetchFailure, offset_fetch_rows};

/// One result per named object (topic, group), in the order asked.
pub type PerItem<T> = Vec<(String, Result<T>)>;

/// Pause between retries of retriable errors.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count; -1 for the broker's `num.partitions`.
    pub partitions: i32,
    /// Replication factor; -1 for the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic settings under Kafka's names (`retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions, the default replication factor and no settings.
    pub fn new(name: impl Into<String>, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
}

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// An offset to commit for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The offset of the next record the group will read.
    pub offset: i64,
}

/// Which offset [`Admin::list_offsets`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (high watermark).
    Latest,
    /// The first offset whose record timestamp is at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// An offset found by ListOffsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The offset; `None` for a timestamp later than every record.
    pub offset: Option<i64>,
    /// Timestamp of the record found (timestamp lookups), when the broker gives one.
    pub timestamp: Option<i64>,
    /// Leader epoch of the record found, when the broker gives one.
    pub leader_epoch: Option<i32>,
}

/// A group from ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`consumer` for consumer groups, empty for offsets-only groups).
    pub protocol_type: String,
    /// State (`Empty`, `Stable`, ...), when known.
    pub state: Option<String>,
}

/// A member of a group, from DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Client id the member connected with.
    pub client_id: String,
    /// Host the member connected from.
    pub client_host: String,
    /// The member's protocol metadata (for consumers: its subscription).
    pub metadata: Bytes,
    /// The member's assignment (for consumers: ConsumerProtocolAssignment with version prefix).
    pub assignment: Bytes,
}

impl MemberDescription {
    /// The member's assignment decoded as the `consumer` protocol's.
    pub fn consumer_assignment(&self) -> Result<ConsumerAssignment> {
        decode_assignment(&self.assignment)
    }
}

/// A group from DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`
    /// (`Dead` also for a group the coordinator does not know).
    pub state: String,
    /// Protocol type (`consumer`, ...).
    pub protocol_type: String,
    /// The chosen protocol (for consumers: the assignor, e.g. `range`).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

impl GroupDescription {
    /// Whether the group has no active members (state `Empty` or `Dead`), so its offsets may be
    /// changed from outside.
    pub fn is_inactive(&self) -> bool {
        self.members.is_empty() && matches!(self.state.as_str(), "Empty" | "Dead")
    }
}

/// A committed offset, from OffsetFetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The committed offset.
    pub offset: i64,
    /// Leader epoch committed with it, if any.
    pub leader_epoch: Option<i32>,
    /// Metadata string committed with it.
    pub metadata: String,
}

/// Admin client.
#[derive(Debug)]
pub struct Admin {
    pub(crate) cluster: Cluster,
}

impl Admin {
    /// Connects to the cluster.
    pub async fn connect(config: ClientConfig) -> Result<Admin> {
        Ok(Admin {
            cluster: Cluster::connect(config).await?,
        })
    }

    /// An admin client over an open cluster.
    pub fn new(cluster: Cluster) -> Admin {
        Admin { cluster }
    }

    /// The underlying cluster connections.
    pub fn cluster(&mut self) -> &mut Cluster {
        &mut self.cluster
    }

    pub(crate) fn timeout_ms(&self) -> i32 {
        i32::try_from(self.cluster.config().connection.request_timeout.as_millis())
            .unwrap_or(i32::MAX)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.cluster.config().connection.request_timeout
    }

    // ------------------------------------------------------------------ topics

    /// Every topic (internal ones included, `internal` set), sorted by name.
    pub async fn list_topics(&mut self) -> Result<Vec<TopicMetadata>> {
        let md = self.cluster.metadata(None).await?;
        Ok(md
            .topics
            .into_iter()
            .filter(|t| t.error.is_none())
            .collect())
    }

    /// Partitions, leaders and replicas of the named topics (never creating them).
    pub async fn describe_topics(&mut self, names: &[String]) -> Result<PerItem<TopicMetadata>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let md = self.cluster.metadata(Some(names)).await?;
        Ok(names
            .iter()
            .map(|n| {
                let r = match md.topic(n) {
                    None => Err(ClientError::NotFound(format!("topic '{n}' does not exist"))),
                    Some(t) => match t.error {
                        None => Ok(t.clone()),
                        Some(ErrorCode(codes::UNKNOWN_TOPIC_OR_PARTITION)) => {
                            Err(ClientError::NotFound(format!("topic '{n}' does not exist")))
                        }
                        Some(ErrorCode(c)) => Err(ClientError::broker(
                            c,
                            format!("describe topic '{n}'"),
                            None,
                        )),
                    },
                };
                (n.clone(), r)
            })
            .collect())
    }

    /// Address of the controller, or of any broker when the controller is unknown.
    async fn controller_addr(&mut self) -> Result<String> {
        let id = self.cluster.controller_id();
        if let Some(b) = self.cluster.brokers().iter().find(|b| b.node_id == id) {
            return Ok(b.addr());
        }
        self.cluster.any_connection().await
    }

    /// Creates topics (`validate_only`: only check that they could be).
    pub async fn create_topics(
        &mut self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<PerItem<()>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let timeout_ms = self.timeout_ms();
        let addr = self.controller_addr().await?;
        let r = self
            .cluster
            .call_at_addr(&addr, |_| {
                let mut req = CreateTopicsRequest::default();
                req.timeout_ms = timeout_ms;
                req.validate_only = validate_only;
                req.topics = topics
                    .iter()
                    .map(|t| {
                        let mut ct = create_topics_request::CreatableTopic::default();
                        ct.name = topic_name(&t.name);
                        ct.num_partitions = t.partitions;
                        ct.replication_factor = t.replication_factor;
                        ct.configs = t
                            .configs
                            .iter()
                            .map(|(k, v)| {
                                let mut c = create_topics_request::CreatableTopicConfig::default();
                                c.name = StrBytes::from_string(k.clone());
                                c.value = Some(StrBytes::from_string(v.clone()));
                                c
                            })
                            .collect();
                        ct
                    })
                    .collect();
                req
            })
            .await?;
        let by_name: HashMap<String, (i16, Option<String>)> = r
            .topics
            .into_iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    (t.error_code, t.error_message.map(|m| m.to_string())),
                )
            })
            .collect();
        Ok(topics
            .iter()
            .map(|t| {
                let res = item_result(by_name.get(&t.name), || {
                    format!("create topic '{}'", t.name)
                });
                (t.name.clone(), res)
            })
            .collect())
    }

    /// Deletes topics by name.
    pub async fn delete_topics(&mut self, names: &[String]) -> Result<PerItem<()>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let timeout_ms = self.timeout_ms();
        let addr = self.controller_addr().await?;
        let r = self
            .cluster
            .call_at_addr(&addr, |version| {
                let mut req = DeleteTopicsRequest::default();
                req.timeout_ms = timeout_ms;
                if version >= 6 {
                    req.topics = names
                        .iter()
                        .map(|n| {
                            let mut s = delete_topics_request::DeleteTopicState::default();
                            s.name = Some(topic_name(n));
                            s
                        })
                        .collect();
                } else {
                    req.topic_names = names.iter().map(|n| topic_name(n)).collect();
                }
                req
            })
            .await?;
        let by_name: HashMap<String, (i16, Option<String>)> = r
            .responses
            .into_iter()
            .filter_map(|t| {
                let name = t.name?.0.to_string();
                Some((name, (t.error_code, t.error_message.map(|m| m.to_string()))))
            })
            .collect();
        Ok(names
            .iter()
            .map(|n| {
                let res = item_result(by_name.get(n), || format!("delete topic '{n}'"));
                (n.clone(), res)
            })
            .collect())
    }

    /// Raises the partition count of topics to the given totals.
    pub async fn create_partitions(&mut self, totals: &[(String, i32)]) -> Result<PerItem<()>> {
        if totals.is_empty() {
            return Ok(Vec::new());
        }
        let timeout_ms = self.timeout_ms();
        let addr = self.controller_addr().await?;
        let r = self
            .cluster
            .call_at_addr(&addr, |_| {
                let mut req = CreatePartitionsRequest::default();
                req.timeout_ms = timeout_ms;
                req.topics = totals
                    .iter()
                    .map(|(n, count)| {
                        let mut t = create_partitions_request::CreatePartitionsTopic::default();
                        t.name = topic_name(n);
                        t.count = *count;
                        t.assignments = None;
                        t
                    })
                    .collect();
                req
            })
            .await?;
        let by_name: HashMap<String, (i16, Option<String>)> = r
            .results
            .into_iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    (t.error_code, t.error_message.map(|m| m.to_string())),
                )
            })
            .collect();
        Ok(totals
            .iter()
            .map(|(n, count)| {
                let res = item_result(by_name.get(n), || {
                    format!("create partitions of topic '{n}' (to {count})")
                });
                (n.clone(), res)
            })
            .collect())
    }

    // ------------------------------------------------------------------ offsets

    /// Looks up offsets of partitions at their leaders. Fails if a topic or partition does not
    /// exist; retries while leadership is moving, up to the request timeout.
    pub async fn list_offsets(
        &mut self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut topics: Vec<String> = partitions.iter().map(|p| p.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        let deadline = self.deadline();
        let mut found: HashMap<TopicPartition, ListedOffset> = HashMap::new();
        loop {
            let md = self.cluster.metadata(Some(&topics)).await?;
            // Leader per pending partition; a missing topic or partition is final.
            let mut by_leader: BTreeMap<i32, Vec<&TopicPartition>> = BTreeMap::new();
            let mut waiting = false;
            for tp in partitions {
                if found.contains_key(tp) {
                    continue;
                }
                let t = md
                    .topic(&tp.topic)
                    .filter(|t| t.error != Some(ErrorCode(codes::UNKNOWN_TOPIC_OR_PARTITION)));
                let Some(t) = t else {
                    return Err(ClientError::NotFound(format!(
                        "topic '{}' does not exist",
                        tp.topic
                    )));
                };
                if let Some(ErrorCode(c)) = t.error {
                    if ErrorCode(c).is_retriable() && Instant::now() < deadline {
                        waiting = true;
                        continue;
                    }
                    return Err(ClientError::broker(
                        c,
                        format!("metadata of topic '{}'", tp.topic),
                        None,
                    ));
                }
                let Some(p) = t.partitions.iter().find(|p| p.partition == tp.partition) else {
                    return Err(ClientError::NotFound(format!(
                        "topic '{}' has no partition {}",
                        tp.topic, tp.partition
                    )));
                };
                if p.leader < 0 {
                    waiting = true;
                    continue;
                }
                by_leader.entry(p.leader).or_default().push(tp);
            }
            for (leader, tps) in by_leader {
                let addr = match self.cluster.broker_connection(leader).await {
                    Ok(c) => c.addr().to_string(),
                    Err(e) => return Err(e),
                };
                let r = self
                    .cluster
                    .call_at_addr(&addr, |_| list_offsets_request_for(&tps, spec))
                    .await?;
                for t in r.topics {
                    for p in t.partitions {
                        let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                        match p.error_code {
                            0 => {
                                found.insert(
                                    tp.clone(),
                                    ListedOffset {
                                        topic: tp.topic,
                                        partition: tp.partition,
                                        offset: (p.offset >= 0).then_some(p.offset),
                                        timestamp: (p.timestamp >= 0).then_some(p.timestamp),
                                        leader_epoch: (p.leader_epoch >= 0)
                                            .then_some(p.leader_epoch),
                                    },
                                );
                            }
                            c if ErrorCode(c).is_retriable() && Instant::now() < deadline => {
                                waiting = true;
                            }
                            c => {
                                return Err(ClientError::broker(
                                    c,
                                    format!("list offsets of {}-{}", tp.topic, tp.partition),
                                    None,
                                ));
                            }
                        }
                    }
                }
            }
            if partitions.iter().all(|tp| found.contains_key(tp)) {
                break;
            }
            if !waiting || Instant::now() >= deadline {
                let missing: Vec<String> = partitions
                    .iter()
                    .filter(|tp| !found.contains_key(tp))
                    .map(|tp| format!("{}-{}", tp.topic, tp.partition))
                    .collect();
                return Err(ClientError::NotFound(format!(
                    "no offsets for {} (no leader, or the broker left them out)",
                    missing.join(", ")
                )));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
        Ok(partitions
            .iter()
            .filter_map(|tp| found.get(tp).cloned())
            .collect())
    }

    // ------------------------------------------------------------------ groups

    /// Sends a request to the coordinator of `group`, finding the coordinator again and
    /// retrying while `error_of` reports a coordinator error, up to the request timeout.
    async fn coordinator_call<R, B, E>(
        &mut self,
        group: &str,
        build: B,
        error_of: E,
    ) -> Result<R::Response>
    where
        R: Request,
        B: Fn(i16) -> R,
        E: Fn(&R::Response) -> i16,
    {
        let deadline = self.deadline();
        loop {
            let addr = self.cluster.find_coordinator(group).await?;
            let r = match self.cluster.call_at_addr(&addr, &build).await {
                Ok(r) => r,
                Err(e) => {
                    self.cluster.forget_coordinator(group);
                    return Err(e);
                }
            };
            let code = error_of(&r);
            let retriable = is_coordinator_retriable(&ClientError::broker(code, "", None));
            if retriable && Instant::now() < deadline {
                self.cluster.forget_coordinator(group);
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
            return Ok(r);
        }
    }

    /// Groups of every broker, sorted by id; `states` (e.g. `["Empty"]`) keeps only groups in
    /// those states (case-insensitive). States are filled in even from brokers older than
    /// ListGroups v4 (by describing the groups).
    pub async fn list_groups(&mut self, states: &[String]) -> Result<Vec<GroupListing>> {
        self.cluster.metadata(Some(&[])).await?;
        let nodes: Vec<i32> = self.cluster.brokers().iter().map(|b| b.node_id).collect();
        let mut all: BTreeMap<String, GroupListing> = BTreeMap::new();
        let mut stateless = Vec::new();
        let targets: Vec<Option<i32>> = if nodes.is_empty() {
            vec![None]
        } else {
            nodes.into_iter().map(Some).collect()
        };
        for node in targets {
            let addr = match node {
                Some(id) => self.cluster.broker_connection(id).await?.addr().to_string(),
                None => self.cluster.any_connection().await?,
            };
            let r = self
                .cluster
                .call_at_addr(&addr, |version| {
                    let mut req = ListGroupsRequest::default();
                    if version >= 4 {
                        req.states_filter = states
                            .iter()
                            .map(|s| StrBytes::from_string(s.clone()))
                            .collect();
                    }
                    req
                })
                .await?;
            if r.error_code != 0 {
                return Err(ClientError::broker(
                    r.error_code,
                    format!("list groups on {addr}"),
                    None,
                ));
            }
            for g in r.groups {
                let state = Some(g.group_state.to_string()).filter(|s| !s.is_empty());
                let id = g.group_id.0.to_string();
                if state.is_none() {
                    stateless.push(id.clone());
                }
                all.insert(
                    id.clone(),
                    GroupListing {
                        group_id: id,
                        protocol_type: g.protocol_type.to_string(),
                        state,
                    },
                );
            }
        }
        if !stateless.is_empty() {
            for d in self.describe_groups(&stateless).await? {
                if let (id, Ok(d)) = d
                    && let Some(g) = all.get_mut(&id)
                {
                    g.state = Some(d.state);
                }
            }
        }
        Ok(all
            .into_values()
            .filter(|g| {
                states.is_empty()
                    || g.state
                        .as_deref()
                        .is_some_and(|s| states.iter().any(|w| w.eq_ignore_ascii_case(s)))
            })
            .collect())
    }

    /// Describes groups at their coordinators. A group the coordinator does not know comes
    /// back in state `Dead` with no members, as in Kafka.
    pub async fn describe_groups(
        &mut self,
        groups: &[String],
    ) -> Result<PerItem<GroupDescription>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let gid = group.clone();
            let r = self
                .coordinator_call(
                    group,
                    |_| {
                        let mut req = DescribeGroupsRequest::default();
                        req.groups = vec![GroupId(StrBytes::from_string(gid.clone()))];
                        req
                    },
                    |r| r.groups.first().map_or(0, |g| g.error_code),
                )
                .await;
            let item = match r {
                Err(e) => Err(e),
                Ok(r) => match r
                    .groups
                    .into_iter()
                    .find(|g| g.group_id.0.as_str() == group)
                {
                    None => Err(ClientError::Protocol {
                        addr: "coordinator".into(),
                        message: format!("DescribeGroups response lacks group '{group}'"),
                    }),
                    Some(g) if g.error_code != 0 => Err(ClientError::broker(
                        g.error_code,
                        format!("describe group '{group}'"),
                        g.error_message.as_deref(),
                    )),
                    Some(g) => Ok(GroupDescription {
                        group_id: group.clone(),
                        state: g.group_state.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        protocol: g.protocol_data.to_string(),
                        members: g
                            .members
                            .into_iter()
                            .map(|m| MemberDescription {
                                member_id: m.member_id.to_string(),
                                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                                client_id: m.client_id.to_string(),
                                client_host: m.client_host.to_string(),
                                metadata: m.member_metadata,
                                assignment: m.member_assignment,
                            })
                            .collect(),
                    }),
                },
            };
            out.push((group.clone(), item));
        }
        Ok(out)
    }

    /// Every offset `group` has committed, sorted by topic and partition.
    pub async fn list_group_offsets(&mut self, group: &str) -> Result<Vec<CommittedOffset>> {
        let gid = group.to_string();
        let version_used = std::cell::Cell::new(0i16);
        let r = self
            .coordinator_call(
                group,
                |version| {
                    version_used.set(version);
                    let mut req = OffsetFetchRequest::default();
                    if version >= 8 {
                        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                        g.group_id = GroupId(StrBytes::from_string(gid.clone()));
                        g.topics = None; // every topic
                        req.groups = vec![g];
                    } else {
                        req.group_id = GroupId(StrBytes::from_string(gid.clone()));
                        req.topics = None; // every topic
                    }
                    req
                },
                |r| r.groups.first().map_or(r.error_code, |g| g.error_code),
            )
            .await?;
        let context = || format!("fetch committed offsets of group '{group}'");
        let rows = offset_fetch_rows(r, version_used.get(), group).map_err(|f| match f {
            OffsetFetchFailure::MissingGroup => ClientError::Protocol {
                addr: "coordinator".into(),
                message: format!("OffsetFetch response lacks group '{group}'"),
            },
            OffsetFetchFailure::Group(code) => ClientError::broker(code, context(), None),
        })?;
        let mut out = Vec::new();
        for row in rows {
            if row.error_code != 0 {
                return Err(ClientError::broker(
                    row.error_code,
                    format!("{} ({}-{})", context(), row.topic, row.partition),
                    None,
                ));
            }
            push_committed(
                &mut out,
                &row.topic,
                row.partition,
                row.offset,
                row.leader_epoch,
                row.metadata,
            );
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Commits offsets for `group` from outside the group (generation -1, no member id): Kafka
    /// accepts this only while the group has no members (state `Empty`, or unknown).
    pub async fn commit_group_offsets(
        &mut self,
        group: &str,
        offsets: &[PartitionOffset],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<&PartitionOffset>> = BTreeMap::new();
        for o in offsets {
            by_topic.entry(o.topic.as_str()).or_default().push(o);
        }
        let gid = group.to_string();
        let r = self
            .coordinator_call(
                group,
                |_| {
                    let mut req = OffsetCommitRequest::default();
                    req.group_id = GroupId(StrBytes::from_string(gid.clone()));
                    req.generation_id_or_member_epoch = -1;
                    req.member_id = StrBytes::default();
                    req.topics = by_topic
                        .iter()
                        .map(|(topic, parts)| {
                            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
                            t.name = topic_name(topic);
                            t.partitions = parts
                                .iter()
                                .map(|o| {
                                    let mut p =
                                        offset_commit_request::OffsetCommitRequestPartition::default();
                                    p.partition_index = o.partition;
                                    p.committed_offset = o.offset;
                                    p
                                })
                                .collect();
                            t
                        })
                        .collect();
                    req
                },
                |r| {
                    r.topics
                        .iter()
                        .flat_map(|t| t.partitions.iter())
                        .map(|p| p.error_code)
                        .find(|c| *c != 0)
                        .unwrap_or(0)
                },
            )
            .await?;
        for t in &r.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::broker(
                        p.error_code,
                        format!(
                            "commit offsets of group '{group}' ({}-{})",
                            t.name.0, p.partition_index
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Deletes groups (and their committed offsets); only groups without members can be.
    pub async fn delete_groups(&mut self, groups: &[String]) -> Result<PerItem<()>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let gid = group.clone();
            let r = self
                .coordinator_call(
                    group,
                    |_| {
                        let mut req = DeleteGroupsRequest::default();
                        req.groups_names = vec![GroupId(StrBytes::from_string(gid.clone()))];
                        req
                    },
                    |r| r.results.first().map_or(0, |g| g.error_code),
                )
                .await;
            let item = match r {
                Err(e) => Err(e),
                Ok(r) => match r.results.iter().find(|g| g.group_id.0.as_str() == group) {
                    None => Err(ClientError::Protocol {
                        addr: "coordinator".into(),
                        message: format!("DeleteGroups response lacks group '{group}'"),
                    }),
                    Some(g) if g.error_code != 0 => Err(ClientError::broker(
                        g.error_code,
                        format!("delete group '{group}'"),
                        None,
                    )),
                    Some(_) => Ok(()),
                },
            };
            out.push((group.clone(), item));
        }
        Ok(out)
    }

    /// The negotiated version of `api` on the connection to `addr` (for diagnostics).
    pub async fn api_version(&mut self, addr: &str, api: ApiKey) -> Result<i16> {
        self.cluster.connection(addr).await?.version(api)
    }
}

pub(crate) fn topic_name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

fn item_result(found: Option<&(i16, Option<String>)>, context: impl Fn() -> String) -> Result<()> {
    match found {
        None => Err(ClientError::Protocol {
            addr: "controller".into(),
            message: format!("response has no result for: {}", context()),
        }),
        Some((0, _)) => Ok(()),
        Some((code, msg)) => Err(ClientError::broker(*code, context(), msg.as_deref())),
    }
}

fn push_committed(
    out: &mut Vec<CommittedOffset>,
    topic: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<StrBytes>,
) {
    // -1: nothing committed for this partition.
    if offset < 0 {
        return;
    }
    out.push(CommittedOffset {
        topic: topic.to_string(),
        partition,
        offset,
        leader_epoch: (leader_epoch >= 0).then_some(leader_epoch),
        metadata: metadata.map(|m| m.to_string()).unwrap_or_default(),
    });
}

fn list_offsets_request_for(tps: &[&TopicPartition], spec: OffsetSpec) -> ListOffsetsRequest {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    let mut req = ListOffsetsRequest::default();
    req.replica_id = (-1).into(); // a consumer, not a follower
    req.topics = by_topic
        .into_iter()
        .map(|(topic, parts)| {
            let mut t = list_offsets_request::ListOffsetsTopic::default();
            t.name = topic_name(topic);
            t.partitions = parts
                .into_iter()
                .map(|p| {
                    let mut lp = list_offsets_request::ListOffsetsPartition::default();
                    lp.partition_index = p;
                    lp.timestamp = spec.wire();
                    lp
                })
                .collect();
            t
        })
        .collect();
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClientConfig;
    use crate::testing::{FakeBroker, Reply};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::describe_groups_response::DescribedGroup;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::{
        ApiVersionsResponse, DescribeGroupsResponse, FindCoordinatorResponse, MetadataResponse,
        ResponseKind,
    };

    fn versions(find_coordinator_max: i16) -> Reply {
        let mut r = ApiVersionsResponse::default();
        r.api_keys = [
            (ApiKey::ApiVersions, 0, 4),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::FindCoordinator, 0, find_coordinator_max),
            (ApiKey::DescribeGroups, 0, 5),
        ]
        .iter()
        .map(|&(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
        Reply::Response(ResponseKind::ApiVersions(r))
    }

    fn coordinator(v4: bool, code: i16, port: u16) -> Reply {
        let mut r = FindCoordinatorResponse::default();
        if v4 {
            let mut c = Coordinator::default();
            c.key = StrBytes::from_static_str("g");
            c.error_code = code;
            c.node_id = 1.into();
            c.host = StrBytes::from_static_str("127.0.0.1");
            c.port = i32::from(port);
            r.coordinators = vec![c];
        } else {
            r.error_code = code;
            r.node_id = 1.into();
            r.host = StrBytes::from_static_str("127.0.0.1");
            r.port = i32::from(port);
        }
        Reply::Response(ResponseKind::FindCoordinator(r))
    }

    fn described(code: i16, state: &'static str) -> Reply {
        let mut g = DescribedGroup::default();
        g.group_id = GroupId(StrBytes::from_static_str("g"));
        g.error_code = code;
        g.group_state = StrBytes::from_static_str(state);
        let mut r = DescribeGroupsResponse::default();
        r.groups = vec![g];
        Reply::Response(ResponseKind::DescribeGroups(r))
    }

    /// FindCoordinator is retried while the coordinator loads, and the coordinator is looked up
    /// again after NOT_COORDINATOR; both the v0-3 and the v4 layouts are read.
    #[tokio::test]
    async fn coordinator_errors_are_retried() -> Result<()> {
        for max in [3i16, 4] {
            let v4 = max >= 4;
            let fake = FakeBroker::start_with(|port| {
                vec![
                    versions(max),
                    Reply::Response(ResponseKind::Metadata(MetadataResponse::default())),
                    coordinator(v4, codes::COORDINATOR_LOAD_IN_PROGRESS, port),
                    coordinator(v4, 0, port),
                    described(codes::NOT_COORDINATOR, ""),
                    coordinator(v4, 0, port),
                    described(0, "Stable"),
                ]
            })
            .await;
            let mut admin = Admin::connect(ClientConfig::new(&fake.addr)?).await?;
            let d = admin.describe_groups(&["g".to_string()]).await?;
            let g = d[0]
                .1
                .as_ref()
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
            assert_eq!(g.state, "Stable");
            let seen = fake.requests().await;
            let keys: Vec<i16> = seen.iter().map(|r| r.api_key).collect();
            assert_eq!(
                keys,
                [18, 3, 10, 10, 15, 10, 15],
                "max FindCoordinator v{max}"
            );
            assert!(
                seen.iter()
                    .filter(|r| r.api_key == 10)
                    .all(|r| r.api_version == max)
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn non_retriable_group_errors_are_reported() -> Result<()> {
        let fake = FakeBroker::start_with(|port| {
            vec![
                versions(4),
                Reply::Response(ResponseKind::Metadata(MetadataResponse::default())),
                coordinator(true, 0, port),
                described(30, ""),
            ]
        })
        .await;
        let mut admin = Admin::connect(ClientConfig::new(&fake.addr)?).await?;
        let d = admin.describe_groups(&["g".to_string()]).await?;
        let e = d[0].1.as_ref().err().map(ToString::to_string);
        assert_eq!(
            e.as_deref(),
            Some("describe group 'g': GROUP_AUTHORIZATION_FAILED")
        );
        Ok(())
    }
}
