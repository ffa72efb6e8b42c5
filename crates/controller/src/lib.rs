//! Vltava's controller layer: the cluster metadata and the quorum that keeps it. Metadata is a log
//! of records under Kafka's KRaft names (`records`), folded into a plain value (`image`); the
//! controller's decisions are a pure function of that image, an event and the time
//! (`controller`, `placement`); the log itself is replicated by openraft (`raft`), stored through
//! vltava-storage. It never imports the broker.

pub mod controller;
pub mod image;
pub mod node;
pub mod placement;
pub mod raft;
pub mod records;
pub mod rpc;
