//! Admin operations on the cluster itself: its brokers (DescribeCluster) and its metadata quorum
//! (DescribeQuorum; AddRaftVoter and RemoveRaftVoter, which Vltava's brokers carry to the active
//! controller), as `vltava cluster` shows and changes them.

use kafka_protocol::messages::add_raft_voter_request::Listener;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    AddRaftVoterRequest, ApiKey, DescribeClusterRequest, DescribeQuorumRequest,
    RemoveRaftVoterRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::{Admin, topic_name};
use crate::error::{ClientError, Result};

/// Versions this client speaks of the APIs in this module.
pub const CLUSTER_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
];

/// Vltava's DescribeCluster tags (see the broker's handler): broker epoch and state.
const TAG_BROKER_EPOCH: i32 = 10_000;
const TAG_BROKER_STATE: i32 = 10_001;

/// What a broker is doing, as far as the controller is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Registered, unfenced: it may lead partitions.
    Active,
    /// Fenced: its session ran out or it has not caught up with the metadata yet.
    Fenced,
    /// In controlled shutdown: its leaderships are being moved away.
    ShuttingDown,
}

impl BrokerState {
    /// The state's name in `vltava cluster describe`.
    pub fn name(self) -> &'static str {
        match self {
            BrokerState::Active => "active",
            BrokerState::Fenced => "fenced",
            BrokerState::ShuttingDown => "shutting-down",
        }
    }
}

/// One registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    /// `node.id`.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Its state; `None` from a broker that does not say (not Vltava, or DescribeCluster < v2
    /// where only unfenced brokers are listed).
    pub state: Option<BrokerState>,
    /// The broker epoch of its registration, when the broker says.
    pub broker_epoch: Option<i64>,
}

/// DescribeCluster's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// The controller id the broker reports.
    pub controller_id: i32,
    /// Registered brokers, fenced ones included where the broker supports it, sorted by id.
    pub brokers: Vec<BrokerDescription>,
}

/// One member of the metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumMember {
    /// Node id.
    pub node_id: i32,
    /// The offset after the last metadata record the leader knows it has (-1 unknown).
    pub log_end_offset: i64,
    /// How far behind the leader's log end it is, in records (`None` when unknown).
    pub lag: Option<i64>,
}

/// DescribeQuorum's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    /// The active controller.
    pub leader_id: i32,
    /// Its epoch (term).
    pub leader_epoch: i32,
    /// The metadata log's high watermark.
    pub high_watermark: i64,
    /// Voters, sorted by id.
    pub voters: Vec<QuorumMember>,
    /// Observers (brokers that follow the log without voting), sorted by id.
    pub observers: Vec<QuorumMember>,
}

impl Admin {
    /// DescribeCluster, with fenced brokers where the broker speaks v2.
    pub async fn describe_cluster(&mut self) -> Result<ClusterDescription> {
        let addr = self.cluster.any_connection().await?;
        let mut version_used = 0;
        let r = self
            .call_negotiated(CLUSTER_VERSIONS, &addr, |version| {
                version_used = version;
                let mut req = DescribeClusterRequest::default();
                req.endpoint_type = 1;
                req.include_fenced_brokers = version >= 2;
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                r.error_code,
                format!("describe cluster at {addr}"),
                r.error_message.as_deref(),
            ));
        }
        let mut brokers: Vec<BrokerDescription> = r
            .brokers
            .into_iter()
            .map(|b| {
                let tag = |t: i32| b.unknown_tagged_fields.get(&t);
                let broker_epoch = tag(TAG_BROKER_EPOCH)
                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                    .map(i64::from_be_bytes);
                let state = match tag(TAG_BROKER_STATE).map(|v| v.as_ref()) {
                    Some([0]) => Some(BrokerState::Active),
                    Some([1]) => Some(BrokerState::Fenced),
                    Some([2]) => Some(BrokerState::ShuttingDown),
                    _ if version_used >= 2 => Some(if b.is_fenced {
                        BrokerState::Fenced
                    } else {
                        BrokerState::Active
                    }),
                    _ => None,
                };
                BrokerDescription {
                    node_id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.map(|r| r.to_string()),
                    state,
                    broker_epoch,
                }
            })
            .collect();
        brokers.sort_by_key(|b| b.node_id);
        Ok(ClusterDescription {
            cluster_id: r.cluster_id.to_string(),
            controller_id: r.controller_id.0,
            brokers,
        })
    }

    /// DescribeQuorum of the metadata log (`__cluster_metadata-0`), carried by the broker to
    /// the active controller.
    pub async fn describe_quorum(&mut self) -> Result<QuorumDescription> {
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(CLUSTER_VERSIONS, &addr, |_| {
                let mut p = PartitionData::default();
                p.partition_index = 0;
                let mut t = TopicData::default();
                t.topic_name = topic_name("__cluster_metadata");
                t.partitions.push(p);
                let mut req = DescribeQuorumRequest::default();
                req.topics.push(t);
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                r.error_code,
                format!("describe quorum at {addr}"),
                r.error_message.as_deref(),
            ));
        }
        let p = r
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
            .ok_or_else(|| ClientError::Protocol {
                addr: addr.clone(),
                message: "DescribeQuorum response has no partition".into(),
            })?;
        if p.error_code != 0 {
            return Err(ClientError::broker(
                p.error_code,
                format!("describe quorum at {addr}"),
                p.error_message.as_deref(),
            ));
        }
        // A leader that has just removed itself from the voters is listed as an observer.
        let leader_end = p
            .current_voters
            .iter()
            .chain(&p.observers)
            .find(|v| v.replica_id == p.leader_id)
            .map(|v| v.log_end_offset);
        let member =
            |v: &kafka_protocol::messages::describe_quorum_response::ReplicaState| QuorumMember {
                node_id: v.replica_id.0,
                log_end_offset: v.log_end_offset,
                lag: leader_end
                    .filter(|_| v.log_end_offset >= 0)
                    .map(|end| (end - v.log_end_offset).max(0)),
            };
        let mut voters: Vec<QuorumMember> = p.current_voters.iter().map(member).collect();
        let mut observers: Vec<QuorumMember> = p.observers.iter().map(member).collect();
        voters.sort_by_key(|m| m.node_id);
        observers.sort_by_key(|m| m.node_id);
        Ok(QuorumDescription {
            leader_id: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            high_watermark: p.high_watermark,
            voters,
            observers,
        })
    }

    /// Makes `node_id`, whose controller listener is `host:port`, a voter of the metadata
    /// quorum. The node must be running and following the log (started with
    /// `controller.quorum.bootstrap.servers`); it is caught up before it counts. Waits up to
    /// `timeout_ms` on the controller's side.
    pub async fn add_raft_voter(
        &mut self,
        node_id: i32,
        host: &str,
        port: u16,
        timeout_ms: i32,
    ) -> Result<()> {
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(CLUSTER_VERSIONS, &addr, |_| {
                let mut l = Listener::default();
                l.name = StrBytes::from_static_str("CONTROLLER");
                l.host = StrBytes::from_string(host.to_string());
                l.port = port;
                let mut req = AddRaftVoterRequest::default();
                req.cluster_id = None;
                req.timeout_ms = timeout_ms;
                req.voter_id = node_id;
                req.listeners.push(l);
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                r.error_code,
                format!("add voter {node_id}"),
                r.error_message.as_deref(),
            ));
        }
        Ok(())
    }

    /// Removes `node_id` from the voters of the metadata quorum; it goes on following the
    /// log as an observer.
    pub async fn remove_raft_voter(&mut self, node_id: i32) -> Result<()> {
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(CLUSTER_VERSIONS, &addr, |_| {
                let mut req = RemoveRaftVoterRequest::default();
                req.cluster_id = None;
                req.voter_id = node_id;
                req
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                r.error_code,
                format!("remove voter {node_id}"),
                r.error_message.as_deref(),
            ));
        }
        Ok(())
    }
}
