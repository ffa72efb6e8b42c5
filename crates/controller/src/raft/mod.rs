//! The replicated metadata log on openraft: the type configuration, and the interface between
//! openraft's state machine and what the entries mean. Everything here is the thin shell the
//! design rule allows around consensus; what the entries say is decided and interpreted
//! elsewhere in this crate.

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;

/// A controller node's id: Kafka's `node.id`, widened to openraft's unsigned id.
pub type RaftNodeId = u64;

/// How other controllers reach a voter or learner: its controller listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerNode {
    /// `HOST:PORT` of the node's controller listener.
    pub addr: String,
}

impl fmt::Display for ControllerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// One entry's application payload: a batch of metadata records in their binary encoding
/// (`crate::records`), appended and applied atomically. The raft layer never looks inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataPayload(pub Bytes);

impl fmt::Display for MetadataPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes of metadata records", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata quorum.
    pub MetadataRaftConfig:
        D = MetadataPayload,
        R = u64,
        NodeId = RaftNodeId,
        Node = ControllerNode,
        Entry = openraft::Entry<MetadataRaftConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The raft handle of this crate's configuration.
pub type MetadataRaft = openraft::Raft<MetadataRaftConfig>;

/// Why a committed entry or a snapshot could not be applied. Applying is deterministic, so an
/// error means this node cannot follow the log (an unknown record type or version, a corrupt
/// snapshot): it must stop rather than skip the entry and diverge from its peers.
#[derive(Debug, thiserror::Error)]
#[error("cannot apply metadata at offset {offset}: {reason}")]
pub struct ApplyError {
    /// The log offset (raft index) of the entry or snapshot that failed.
    pub offset: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// What the replicated log is applied to. The production implementation is the metadata image;
/// tests use simpler ones (a list of everything applied, to check order and completeness).
/// Implementations are deterministic: the same entries in the same order give the same state.
pub trait ReplicatedState: Send + Sync + 'static {
    /// Applies the payload of the committed entry at `offset`. Entries arrive in log order, each
    /// exactly once after the last snapshot that was restored.
    fn apply(&mut self, offset: u64, payload: &[u8]) -> Result<(), ApplyError>;

    /// The whole state as bytes, to be restored by `restore` on this or another node.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state with one produced by `snapshot`, taken at log offset `offset`.
    fn restore(&mut self, offset: u64, snapshot: &[u8]) -> Result<(), ApplyError>;
}

pub mod election;
pub mod log_store;
pub mod network;
pub mod prevote;
#[cfg(feature = "testing")]
pub mod sim;
pub mod state_machine;
pub mod tcp;
pub mod wire;
