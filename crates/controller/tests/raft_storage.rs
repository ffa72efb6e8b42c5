//! The openraft storage glue against openraft's conformance suite, plus crash, reopen and
//! corruption cases of our own.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use proptest::prelude::*;

mod common;
use common::Applied;
use tempfile::TempDir;
use vltava_controller::raft::log_store::{
    MetadataEntry, MetadataLogStore, decode_entry, decode_entry_value, encode_entry,
    encode_entry_value, metadata_log_config, metadata_partition_dir,
};
use vltava_controller::raft::state_machine::{MetadataStateMachine, decode_snapshot_file};
use vltava_controller::raft::{ControllerNode, MetadataPayload, MetadataRaftConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn blank(term: u64, index: u64) -> MetadataEntry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

fn normal(term: u64, index: u64, payload: &[u8]) -> MetadataEntry {
    Entry {
        log_id: log_id(term, 2, index),
        payload: EntryPayload::Normal(MetadataPayload(Bytes::copy_from_slice(payload))),
    }
}

fn membership(term: u64, index: u64) -> MetadataEntry {
    let nodes: BTreeMap<u64, ControllerNode> = [1, 2, 3, 9]
        .into_iter()
        .map(|id| {
            (
                id,
                ControllerNode {
                    addr: format!("controller-{id}:9093"),
                },
            )
        })
        .collect();
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let joint: BTreeSet<u64> = [2, 3].into_iter().collect();
    Entry {
        log_id: log_id(term, 3, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters, joint], nodes)),
    }
}

struct Builder;

impl StoreBuilder<MetadataRaftConfig, MetadataLogStore, MetadataStateMachine<Applied>, TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, MetadataLogStore, MetadataStateMachine<Applied>), StorageError<u64>> {
        let io = |e: &dyn std::fmt::Display| {
            StorageError::from(openraft::StorageIOError::write(openraft::AnyError::error(
                e,
            )))
        };
        let dir = tempfile::tempdir().map_err(|e| io(&e))?;
        let log = MetadataLogStore::open(dir.path())
            .await
            .map_err(|e| io(&e))?;
        let sm = MetadataStateMachine::open(dir.path(), Applied::default())
            .await
            .map_err(|e| io(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> TestResult {
    Suite::test_all(Builder)?;
    Ok(())
}

async fn all_entries(
    store: &mut MetadataLogStore,
) -> Result<Vec<MetadataEntry>, StorageError<u64>> {
    store.try_get_log_entries(..).await
}

fn segment_path(data_dir: &Path, base: u64) -> PathBuf {
    metadata_partition_dir(data_dir).join(format!("{base:020}.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_gives_back_entries_vote_and_purged_id() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Tiny segments, so that purging deletes files and reopening crosses segments.
    let config = vltava_storage::LogConfig {
        segment_bytes: 400,
        ..metadata_log_config()
    };
    let (want_entries, want_state, want_vote) = {
        let mut store = MetadataLogStore::open_with_config(dir.path(), config.clone()).await?;
        store.save_vote(&Vote::new(3, 2)).await?;
        store
            .blocking_append([blank(1, 0), membership(1, 1), normal(1, 2, b"a")])
            .await?;
        store
            .blocking_append((3..20).map(|i| normal(2, i, format!("entry {i}").as_bytes())))
            .await?;
        store.truncate(log_id(2, 2, 15)).await?;
        store
            .blocking_append([blank(3, 15), normal(3, 16, b"after truncation")])
            .await?;
        store.purge(log_id(2, 2, 6)).await?;
        let mut vote = Vote::new(3, 2);
        vote.commit();
        store.save_vote(&vote).await?;
        let entries = all_entries(&mut store).await?;
        assert_eq!(entries.first().map(|e| e.log_id.index), Some(7));
        assert_eq!(entries.last().map(|e| e.log_id), Some(log_id(3, 2, 16)));
        assert_eq!(entries.len(), 10);
        let (start, _) = store.offsets().await?;
        assert!(start >= 7, "purge moved the log start");
        (entries, store.get_log_state().await?, vote)
    };
    assert_eq!(want_state.last_purged_log_id, Some(log_id(2, 2, 6)));
    let mut store = MetadataLogStore::open_with_config(dir.path(), config).await?;
    assert_eq!(all_entries(&mut store).await?, want_entries);
    assert_eq!(store.get_log_state().await?, want_state);
    assert_eq!(store.read_vote().await?, Some(want_vote));
    // Every entry reads back as it was written, one range at a time too.
    let mut reader = store.get_log_reader().await;
    let some = reader.limited_get_log_entries(8, 11).await?;
    assert_eq!(some, want_entries[1..4].to_vec());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_past_the_end_restarts_the_log_there() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut store = MetadataLogStore::open(dir.path()).await?;
        store.blocking_append((0..10).map(|i| blank(1, i))).await?;
        // A follower that installed a snapshot ahead of its log.
        store.purge(log_id(4, 1, 20)).await?;
        assert!(all_entries(&mut store).await?.is_empty());
        assert_eq!(store.offsets().await?, (21, 21));
    }
    let mut store = MetadataLogStore::open(dir.path()).await?;
    let state = store.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(4, 1, 20)));
    assert_eq!(state.last_log_id, Some(log_id(4, 1, 20)));
    store.blocking_append([blank(5, 21), blank(5, 22)]).await?;
    drop(store);
    let mut store = MetadataLogStore::open(dir.path()).await?;
    assert_eq!(
        all_entries(&mut store).await?,
        vec![blank(5, 21), blank(5, 22)]
    );
    // A copy of entries the purge covers is ignored: the snapshot holds them.
    store.blocking_append([blank(4, 19), blank(4, 20)]).await?;
    store.blocking_append([blank(5, 23)]).await?;
    assert_eq!(all_entries(&mut store).await?.len(), 3);
    // Entries that would leave a hole are refused.
    assert!(store.blocking_append([blank(5, 30)]).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_cut_at_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let entries: Vec<_> = (0..5).map(|i| normal(1, i, &[i as u8; 40])).collect();
    {
        let mut store = MetadataLogStore::open(dir.path()).await?;
        store.blocking_append(entries.clone()).await?;
    }
    // Half of the next batch, as a crash mid-write leaves it.
    let next = encode_entry(&normal(1, 5, &[5; 40]), 0)?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(segment_path(dir.path(), 0))?;
    file.write_all(&next[..next.len() / 2])?;
    file.sync_all()?;
    drop(file);

    let mut store = MetadataLogStore::open(dir.path()).await?;
    assert_eq!(all_entries(&mut store).await?, entries);
    assert_eq!(
        store.get_log_state().await?.last_log_id,
        Some(log_id(1, 2, 4))
    );
    store.blocking_append([normal(2, 5, b"fresh")]).await?;
    drop(store);
    let mut store = MetadataLogStore::open(dir.path()).await?;
    let got = all_entries(&mut store).await?;
    assert_eq!(got.len(), 6);
    assert_eq!(got.last(), Some(&normal(2, 5, b"fresh")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshot_falls_back_to_the_previous_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let part = metadata_partition_dir(dir.path());
    let (older_name, older_bytes, newer_name) = {
        let mut sm = MetadataStateMachine::open(dir.path(), Applied::default()).await?;
        sm.apply([membership(1, 0), normal(1, 1, b"one"), normal(1, 2, b"two")])
            .await?;
        let older = sm.get_snapshot_builder().await.build_snapshot().await?;
        let older_name = "00000000000000000003-00000000000000000001.checkpoint";
        let older_bytes = std::fs::read(part.join(older_name))?;
        assert_eq!(older_bytes, older.snapshot.into_inner());
        sm.apply([normal(2, 3, b"three"), blank(2, 4)]).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        let newer_name = "00000000000000000005-00000000000000000002.checkpoint";
        assert!(part.join(newer_name).exists());
        assert!(!part.join(older_name).exists(), "older snapshot removed");
        (older_name, older_bytes, newer_name)
    };

    // Both valid (a crash before the older one was removed): the newest wins.
    std::fs::write(part.join(older_name), &older_bytes)?;
    {
        let mut sm = MetadataStateMachine::open(dir.path(), Applied::default()).await?;
        assert_eq!(sm.applied_state().await?.0, Some(log_id(2, 1, 4)));
        let state = sm.state().read(|s, _| s.clone())?;
        assert_eq!(state.0.len(), 3);
    }

    // The newest corrupt: rejected, the older one restored.
    let mut bytes = std::fs::read(part.join(newer_name))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(part.join(newer_name), &bytes)?;
    let mut sm = MetadataStateMachine::open(dir.path(), Applied::default()).await?;
    let (applied, stored) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(1, 2, 2)));
    assert_eq!(stored.log_id(), &Some(log_id(1, 3, 0)));
    assert_eq!(
        sm.state().read(|s, last| (s.clone(), last))?,
        (
            Applied(vec![(1, b"one".to_vec()), (2, b"two".to_vec())]),
            Some(2)
        )
    );
    let current = sm
        .get_current_snapshot()
        .await?
        .ok_or("no current snapshot")?;
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 2, 2)));
    assert_eq!(*sm.subscribe_applied().borrow(), Some(2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_snapshot_survives_reopen_and_bad_data_is_refused() -> TestResult {
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let mut leader = MetadataStateMachine::open(leader_dir.path(), Applied::default()).await?;
    leader
        .apply([membership(1, 0), normal(1, 1, b"x"), normal(1, 2, b"y")])
        .await?;
    let snap = leader.get_snapshot_builder().await.build_snapshot().await?;
    let data = snap.snapshot.into_inner();

    let mut follower = MetadataStateMachine::open(follower_dir.path(), Applied::default()).await?;
    let mut applied = follower.subscribe_applied();
    // Corrupt data never reaches the state.
    let mut bad = data.clone();
    bad[10] ^= 1;
    let result = follower
        .install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(bad)))
        .await;
    assert!(result.is_err());
    assert_eq!(follower.applied_state().await?.0, None);

    follower
        .install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(data)))
        .await?;
    applied.wait_for(|a| *a == Some(2)).await?;
    drop(follower);
    let mut follower = MetadataStateMachine::open(follower_dir.path(), Applied::default()).await?;
    assert_eq!(follower.applied_state().await?.0, Some(log_id(1, 2, 2)));
    assert_eq!(
        follower.get_current_snapshot().await?.map(|s| s.meta),
        Some(snap.meta)
    );
    assert_eq!(follower.state().read(|s, _| s.0.len())?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_error_stops_instead_of_skipping() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sm = MetadataStateMachine::open(dir.path(), Applied::default()).await?;
    let result = sm
        .apply([
            normal(1, 0, b"ok"),
            normal(1, 1, b"fail"),
            normal(1, 2, b"never"),
        ])
        .await;
    let err = result.err().ok_or("apply should fail")?;
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(sm.applied_state().await?.0, Some(log_id(1, 2, 0)));
    assert_eq!(sm.state().read(|s, _| s.0.len())?, 1);
    assert_eq!(*sm.subscribe_applied().borrow(), Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_returns_indexes_and_publishes_progress() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sm = MetadataStateMachine::open(dir.path(), Applied::default()).await?;
    let mut rx = sm.subscribe_applied();
    assert_eq!(*rx.borrow(), None);
    let waiter =
        tokio::spawn(async move { rx.wait_for(|a| a.is_some_and(|a| a >= 2)).await.map(|a| *a) });
    let out = sm
        .apply([blank(1, 0), normal(1, 1, b"p"), membership(1, 2)])
        .await?;
    assert_eq!(out, vec![0, 1, 2]);
    assert_eq!(waiter.await??, Some(2));
    Ok(())
}

/// The stores on a current-thread runtime with a paused clock, as other tests of this crate
/// run: the blocking I/O must neither panic there nor let the clock jump past a timeout.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn works_on_a_paused_current_thread_runtime() -> TestResult {
    let dir = tempfile::tempdir()?;
    let timeout = std::time::Duration::from_secs(1);
    let mut store = tokio::time::timeout(timeout, MetadataLogStore::open(dir.path())).await??;
    tokio::time::timeout(
        timeout,
        store.blocking_append((0..50).map(|i| normal(1, i, b"x"))),
    )
    .await??;
    tokio::time::timeout(timeout, store.save_vote(&Vote::new(1, 1))).await??;
    let mut sm = MetadataStateMachine::open(dir.path(), Applied::default()).await?;
    sm.apply(all_entries(&mut store).await?).await?;
    let snap = tokio::time::timeout(timeout, async {
        sm.get_snapshot_builder().await.build_snapshot().await
    })
    .await??;
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2, 49)));
    Ok(())
}

fn arb_entry() -> impl Strategy<Value = MetadataEntry> {
    let id = (0u64..i32::MAX as u64, any::<u64>(), 0u64..i64::MAX as u64)
        .prop_map(|(t, n, i)| log_id(t, n, i));
    let membership = (
        prop::collection::vec(prop::collection::btree_set(any::<u64>(), 0..5), 1..3),
        prop::collection::btree_map(any::<u64>(), "[a-z0-9.:-]{0,20}", 0..5),
    )
        .prop_map(|(configs, nodes)| {
            let nodes: BTreeMap<u64, ControllerNode> = nodes
                .into_iter()
                .map(|(id, addr)| (id, ControllerNode { addr }))
                .collect();
            EntryPayload::Membership(Membership::new(configs, nodes))
        });
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| EntryPayload::Normal(MetadataPayload(Bytes::from(b)))),
        membership,
    ];
    (id, payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
}

proptest! {
    #[test]
    fn entries_round_trip(entry in arb_entry(), ts in any::<i64>()) {
        let batch = encode_entry(&entry, ts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode_entry(&batch), Ok(entry));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_entry_value(&bytes);
        let _ = decode_entry(&bytes);
        let _ = decode_snapshot_file(&bytes);
    }

    #[test]
    fn damaged_values_are_errors_not_panics(
        entry in arb_entry(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let batch = encode_entry(&entry, 0).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Past the CRC check: the value is what must hold up on its own.
        let value = &encode_entry_value(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let truncated = &value[..cut.index(value.len().max(1)).min(value.len())];
        if truncated.len() < value.len() {
            prop_assert!(decode_entry_value(truncated).is_err());
        }
        let mut flipped = value.to_vec();
        if !flipped.is_empty() {
            let at = flip.index(flipped.len());
            flipped[at] ^= xor;
            let _ = decode_entry_value(&flipped);
        }
        let mut damaged_batch = batch.clone();
        let at = flip.index(damaged_batch.len());
        damaged_batch[at] ^= xor;
        // Only the offset and epoch (bytes 0..8, 12..16) lie outside the CRC and the length check.
        if at >= 16 {
            prop_assert!(decode_entry(&damaged_batch).is_err());
        }
    }
}
