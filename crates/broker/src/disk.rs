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
//!
//! A full disk (ENOSPC) is the exception while this broker is the cluster's only one: the
//! failed append is rolled back and answered KAFKA_STORAGE_ERROR, reads go on, and appends
//! resume once there is space again. Stopping would help no one there, since no other
//! replica can take over; with other brokers, a full disk stops the broker like any other
//! disk failure.

use std::sync::atomic::{AtomicBool, Ordering};

use vltava_storage::StorageError;

/// The exit code of a broker stopped by a failed disk.
pub const DISK_FAILURE_EXIT_CODE: i32 = 1;

/// ENOSPC, the one I/O error that is not fatal on a lone broker.
const ENOSPC: i32 = 28;

static OTHER_BROKERS: AtomicBool = AtomicBool::new(false);

/// Tells the rule how many brokers the cluster has registered (from the metadata image).
pub fn set_registered_brokers(count: usize) {
    OTHER_BROKERS.store(count > 1, Ordering::Relaxed);
}

/// Whether `e` says the disk failed: an I/O error (EIO, EROFS, ... and ENOSPC when
/// `full_disk_is_fatal`) or a log the storage took offline after a failed fsync or undo.
pub fn is_disk_failure(e: &StorageError, full_disk_is_fatal: bool) -> bool {
    match e {
        StorageError::Io(io) => {
            full_disk_is_fatal
                || !(io.raw_os_error() == Some(ENOSPC)
                    || io.kind() == std::io::ErrorKind::StorageFull)
        }
        StorageError::Offline { .. } => true,
        _ => false,
    }
}

/// Stops the broker if `e` is a disk failure (logging what failed); otherwise hands `e` back,
/// for `map_err` on every storage call that writes.
pub fn on_error(e: StorageError) -> StorageError {
    if is_disk_failure(&e, OTHER_BROKERS.load(Ordering::Relaxed)) {
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

    fn io(code: i32) -> StorageError {
        StorageError::Io(std::io::Error::from_raw_os_error(code))
    }

    #[test]
    fn only_disk_errors_count() {
        for fatal_full in [false, true] {
            assert!(is_disk_failure(&io(5), fatal_full));
            assert!(is_disk_failure(&io(30), fatal_full)); // EROFS
            let offline = StorageError::Offline {
                dir: PathBuf::from("t-0"),
                reason: "fsync failed".into(),
            };
            assert!(is_disk_failure(&offline, fatal_full));
            let range = StorageError::OffsetOutOfRange {
                offset: 9,
                log_start: 0,
                log_end: 5,
            };
            assert!(!is_disk_failure(&range, fatal_full));
            let bad = StorageError::InvalidRecord("bad crc".into());
            assert!(!is_disk_failure(&bad, fatal_full));
            let torn = StorageError::Corrupt("torn".into());
            assert!(!is_disk_failure(&torn, fatal_full));
            let gone = StorageError::LogDeleted(PathBuf::from("t-0"));
            assert!(!is_disk_failure(&gone, fatal_full));
        }
        assert!(
            !is_disk_failure(&io(ENOSPC), false),
            "a lone broker answers a full disk"
        );
        assert!(
            is_disk_failure(&io(ENOSPC), true),
            "a broker with peers stops"
        );
    }
}
