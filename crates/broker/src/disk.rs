//! What the broker does when its disk fails: Kafka's rule for a failed log directory, on a
//! broker that has one. An I/O error while writing, syncing, truncating or deleting log data
//! means the broker can no longer say what its replicas hold, so it stops (exit code 1), as
//! Kafka's broker halts when its last online log dir fails. The controller then fences it
//! after `broker.session.timeout.ms`, its partitions get leaders among the other in-sync
//! replicas, and it leaves the ISRs rather than hold every high watermark back while it
//! cannot append; on restart, recovery truncates whatever the disk left torn.
//!
//! Staying up instead would keep a leader that cannot take writes and a follower that cannot
//! follow, each counted in sync until `replica.lag.time.max.ms` passes. Errors that are not
//! about the disk (a bad batch, an out-of-range offset, a deleted log) are answered as before.

use vltava_storage::StorageError;

/// The exit code of a broker stopped by a failed disk.
pub const DISK_FAILURE_EXIT_CODE: i32 = 1;

/// Whether `e` says the disk failed: an I/O error (EIO, ENOSPC, EROFS, ...) or a log the
/// storage took offline after a failed fsync or a failed undo.
pub fn is_disk_failure(e: &StorageError) -> bool {
    matches!(e, StorageError::Io(_) | StorageError::Offline { .. })
}

/// Stops the broker if `e` is a disk failure (logging what failed); otherwise hands `e` back,
/// for `map_err` on every storage call that writes.
pub fn on_error(e: StorageError) -> StorageError {
    if is_disk_failure(&e) {
        halt(&e);
    }
    e
}

/// Stops the broker once its metadata log fails (`QuorumNode::failed`): without it the node
/// can neither follow the cluster's metadata nor take part in the quorum.
pub fn halt_when_metadata_log_fails(
    failed: impl std::future::Future<Output = String> + Send + 'static,
) {
    tokio::spawn(async move {
        let why = failed.await;
        halt(&StorageError::Offline {
            dir: std::path::PathBuf::from("__cluster_metadata-0"),
            reason: why,
        });
    });
}

/// Logs the failure and ends the process at once: no shutdown, no further writes.
fn halt(e: &StorageError) -> ! {
    tracing::error!(
        error = %e,
        "log directory failed; stopping the broker, as Kafka's does when its only log dir fails \
         (its partitions move to the other in-sync replicas; restart it once the disk is fixed)"
    );
    eprintln!("vltava: log directory failed: {e}; the broker stops");
    std::process::exit(DISK_FAILURE_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn only_disk_errors_count() {
        assert!(is_disk_failure(&StorageError::Io(
            std::io::Error::from_raw_os_error(5)
        )));
        assert!(is_disk_failure(&StorageError::Io(
            std::io::Error::from_raw_os_error(28)
        )));
        assert!(is_disk_failure(&StorageError::Offline {
            dir: PathBuf::from("t-0"),
            reason: "fsync failed".into(),
        }));
        assert!(!is_disk_failure(&StorageError::OffsetOutOfRange {
            offset: 9,
            log_start: 0,
            log_end: 5,
        }));
        assert!(!is_disk_failure(&StorageError::InvalidRecord(
            "bad crc".into()
        )));
        assert!(!is_disk_failure(&StorageError::Corrupt("torn".into())));
        assert!(!is_disk_failure(&StorageError::LogDeleted(PathBuf::from(
            "t-0"
        ))));
    }
}
