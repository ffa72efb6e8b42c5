//! A one-node openraft cluster on the metadata stores: entries are applied, snapshots taken,
//! the log trimmed below them, and a restart resumes from the files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{Config, ServerState, SnapshotPolicy};
use vltava_controller::raft::log_store::{
    MetadataLogStore, metadata_log_config, metadata_partition_dir,
};
use vltava_controller::raft::state_machine::MetadataStateMachine;
use vltava_controller::raft::{ControllerNode, MetadataPayload, MetadataRaft, MetadataRaftConfig};

mod common;
use common::Applied;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A network with no peers: a one-node cluster never sends anything.
struct NoNetwork;
struct NoPeer;

fn unreachable<E: std::error::Error>() -> RPCError<u64, ControllerNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no peers")))
}

impl RaftNetworkFactory<MetadataRaftConfig> for NoNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: u64, _node: &ControllerNode) -> NoPeer {
        NoPeer
    }
}

impl RaftNetwork<MetadataRaftConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<MetadataRaftConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ControllerNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<MetadataRaftConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ControllerNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ControllerNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

fn raft_config() -> Result<Arc<Config>, Box<dyn std::error::Error>> {
    let config = Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1_000_000),
        // Trim everything a snapshot holds, so the test sees the purge at once.
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Config::default()
    };
    Ok(Arc::new(config.validate()?))
}

fn log_config() -> vltava_storage::LogConfig {
    vltava_storage::LogConfig {
        segment_bytes: 1024,
        ..metadata_log_config()
    }
}

async fn start(
    dir: &std::path::Path,
) -> Result<(MetadataRaft, MetadataStateMachineHandles), Box<dyn std::error::Error>> {
    let log = MetadataLogStore::open_with_config(dir, log_config()).await?;
    let sm = MetadataStateMachine::open(dir, Applied::default()).await?;
    let handles = MetadataStateMachineHandles {
        applied: sm.subscribe_applied(),
        state: sm.state(),
    };
    let raft = openraft::Raft::new(1, raft_config()?, NoNetwork, log, sm).await?;
    Ok((raft, handles))
}

struct MetadataStateMachineHandles {
    applied: tokio::sync::watch::Receiver<Option<u64>>,
    state: vltava_controller::raft::state_machine::StateReader<Applied>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_cluster_snapshots_trims_and_restarts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let wait = Some(Duration::from_secs(10));
    let (raft, mut handles) = start(dir.path()).await?;
    let node = ControllerNode {
        addr: "controller-1:9093".into(),
    };
    raft.initialize(BTreeMap::from([(1, node)])).await?;
    raft.wait(wait).state(ServerState::Leader, "leader").await?;
    let mut last = None;
    for i in 0..40u32 {
        let payload = MetadataPayload(Bytes::from(format!("record {i}")));
        let resp = raft.client_write(payload).await?;
        assert_eq!(
            resp.data, resp.log_id.index,
            "the response is the entry's index"
        );
        last = Some(resp.log_id);
    }
    let last = last.ok_or("nothing written")?;
    handles
        .applied
        .wait_for(|a| a.is_some_and(|a| a >= last.index))
        .await?;
    raft.trigger().snapshot().await?;
    raft.wait(wait).snapshot(last, "snapshot").await?;
    raft.wait(wait).purged(Some(last), "purged").await?;
    let applied = handles.state.read(|s, _| s.clone())?;
    assert_eq!(applied.0.len(), 40);
    raft.shutdown().await?;
    drop(raft);

    let part = metadata_partition_dir(dir.path());
    let names: Vec<String> = std::fs::read_dir(&part)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let checkpoints: Vec<_> = names
        .iter()
        .filter(|n| n.ends_with(".checkpoint"))
        .collect();
    assert_eq!(checkpoints.len(), 1, "{names:?}");
    let segments = names.iter().filter(|n| n.ends_with(".log")).count();
    assert!(
        segments <= 1,
        "segments below the snapshot deleted: {names:?}"
    );

    {
        let mut log = MetadataLogStore::open_with_config(dir.path(), log_config()).await?;
        let state = log.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(last));
        assert_eq!(log.offsets().await?.0, last.index + 1);
        let mut sm = MetadataStateMachine::open(dir.path(), Applied::default()).await?;
        assert_eq!(sm.applied_state().await?.0, Some(last));
        assert_eq!(sm.state().read(|s, _| s.clone())?, applied);
    }

    // Restarted from the files, the node leads again and goes on where it was.
    let (raft, handles) = start(dir.path()).await?;
    raft.wait(wait)
        .state(ServerState::Leader, "leader again")
        .await?;
    let resp = raft
        .client_write(MetadataPayload(Bytes::from_static(b"after restart")))
        .await?;
    assert!(resp.log_id.index > last.index);
    let mut applied_rx = handles.applied.clone();
    applied_rx
        .wait_for(|a| a.is_some_and(|a| a >= resp.log_id.index))
        .await?;
    let after = handles.state.read(|s, _| s.0.last().cloned())?;
    assert_eq!(after, Some((resp.log_id.index, b"after restart".to_vec())));
    raft.shutdown().await?;
    Ok(())
}
