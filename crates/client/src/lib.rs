//! Native async Kafka client: connections, metadata, admin, an idempotent producer and a group
//! consumer.
//!
//! Layers, bottom up:
//! - [`Connection`]: one TCP connection to one broker. Requests are encoded with the
//!   `kafka-protocol` crate at the version negotiated through ApiVersions when the connection
//!   opens; every call is bounded by the request timeout, and every response frame's declared
//!   length is checked before anything is allocated for it.
//! - [`Cluster`]: the bootstrap list, brokers and topics from Metadata, a connection per
//!   broker, group coordinators from FindCoordinator.
//! - [`Admin`]: topics, partitions, consumer groups and their offsets.
//! - [`Producer`]: serializers, murmur2/sticky partitioner, a record accumulator with one open
//!   batch per partition, a pipelined sender, compression, idempotence on by default.
//! - [`Consumer`]: assign or subscribe (range, roundrobin, cooperative-sticky), prefetching
//!   fetchers per broker, heartbeats, auto and manual commits, seek/pause/resume.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vltava_client::ClientError> {
//! use vltava_client::{Admin, ClientConfig};
//! let mut admin = Admin::connect(ClientConfig::new("127.0.0.1:9092")?).await?;
//! for g in admin.list_groups(&[]).await? {
//!     println!("{} {:?}", g.group_id, g.state);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Known limit: responses are decoded by `kafka-protocol`, which reserves memory from the
//! array counts a response declares. The frame length is bounded (`max_response_bytes`), but a
//! broker that declares absurd counts inside a small frame could still make a decoder reserve
//! far more; the client trusts the brokers it is pointed at. Member assignment bytes, which
//! come from other clients, are parsed by hand with bounds checks ([`consumer_protocol`]).

pub mod admin;
pub mod admin_cluster;
pub mod admin_configs;
pub mod admin_moves;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod consumer_protocol;
pub mod error;
mod offset_fetch;
pub mod producer;
pub mod versions;

#[cfg(test)]
mod testing;

pub use admin::{
    Admin, CommittedOffset, GroupDescription, GroupListing, ListedOffset, MemberDescription,
    NewTopic, OffsetSpec, PartitionOffset, PerItem, TopicPartition,
};
pub use admin_cluster::{
    BrokerDescription, BrokerState, ClusterDescription, QuorumDescription, QuorumMember,
};
pub use admin_configs::{ConfigEntry, ConfigSource};
pub use admin_moves::{Election, PartitionOutcome, Reassignment};
pub use cluster::{BrokerInfo, ClientConfig, Cluster, Metadata, PartitionMetadata, TopicMetadata};
pub use connection::{Connection, ConnectionConfig};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceListener};
pub use consumer_protocol::{
    ConsumerAssignment, ConsumerSubscription, decode_assignment, decode_subscription,
};
pub use error::{ClientError, ErrorCode, Result};
pub use kafka_protocol;
pub use producer::{Producer, ProducerConfig, ProducerError, ProducerRecord, RecordMetadata};
