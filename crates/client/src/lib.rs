//! Native async Kafka client: connections, metadata, admin (producer and consumer come in later
//! work).
//!
//! Layers, bottom up:
//! - [`Connection`]: one TCP connection to one broker. Requests are encoded with the
//!   `kafka-protocol` crate at the version negotiated through ApiVersions when the connection
//!   opens; every call is bounded by the request timeout, and every response frame's declared
//!   length is checked before anything is allocated for it.
//! - [`Cluster`]: the bootstrap list, brokers and topics from Metadata, a connection per
//!   broker, group coordinators from FindCoordinator.
//! - [`Admin`]: topics, partitions, consumer groups and their offsets.
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
pub mod cluster;
pub mod connection;
pub mod consumer_protocol;
pub mod error;
pub mod versions;

#[cfg(test)]
mod testing;

pub use admin::{
    Admin, CommittedOffset, GroupDescription, GroupListing, ListedOffset, MemberDescription,
    NewTopic, OffsetSpec, PartitionOffset, PerItem, TopicPartition,
};
pub use cluster::{BrokerInfo, ClientConfig, Cluster, Metadata, PartitionMetadata, TopicMetadata};
pub use connection::{Connection, ConnectionConfig};
pub use consumer_protocol::{ConsumerAssignment, decode_assignment};
pub use error::{ClientError, ErrorCode, Result};
pub use kafka_protocol;
