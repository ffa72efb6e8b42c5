//! How long the real file system's fsyncs take: a process-wide histogram of atomics, one
//! observation per fsync (of a file's data, a file's data and metadata, or a directory), for the
//! broker's `/metrics`. Storage depends on no metrics library: the broker reads a
//! [`FsyncSnapshot`] when it is scraped. Only [`crate::RealFs`] counts (the simulated file system
//! does no real fsync).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds (ms) of the fsync time buckets: from a page-cache-only fsync on tmpfs to a
/// stalled disk.
pub const FSYNC_BUCKETS_MS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0,
];

/// Counts per bucket (not cumulative; the last is +Inf) and the sum in microseconds.
struct Cells {
    buckets: [AtomicU64; FSYNC_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
}

static FSYNCS: Cells = Cells {
    buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64::new(0),
};

/// The fsync histogram as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct FsyncSnapshot {
    /// Per bucket of [`FSYNC_BUCKETS_MS`] (not cumulative), then the +Inf bucket.
    pub buckets: [u64; FSYNC_BUCKETS_MS.len() + 1],
    /// Sum of the fsyncs' times in microseconds.
    pub sum_us: u64,
}

impl FsyncSnapshot {
    /// Fsyncs counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Every fsync the real file system has done in this process (failed ones included: they took
/// the time too).
pub fn fsync_stats() -> FsyncSnapshot {
    FsyncSnapshot {
        buckets: std::array::from_fn(|i| FSYNCS.buckets[i].load(Ordering::Relaxed)),
        sum_us: FSYNCS.sum_us.load(Ordering::Relaxed),
    }
}

pub(crate) fn observe(elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let ms = us as f64 / 1000.0;
    let i = FSYNC_BUCKETS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(FSYNC_BUCKETS_MS.len());
    FSYNCS.buckets[i].fetch_add(1, Ordering::Relaxed);
    FSYNCS.sum_us.fetch_add(us, Ordering::Relaxed);
}

/// Runs one fsync and counts it.
pub(crate) fn timed<T>(fsync: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let r = fsync();
    observe(started.elapsed());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fs, RealFs};

    #[test]
    fn real_fsyncs_are_counted_in_their_bucket() {
        // Other tests of this process fsync too: compare at least, per bucket.
        let before = fsync_stats();
        observe(Duration::from_micros(30));
        observe(Duration::from_millis(3));
        observe(Duration::from_secs(10));
        let after = fsync_stats();
        assert!(after.buckets[0] > before.buckets[0]);
        assert!(
            after.buckets[6] > before.buckets[6],
            "3 ms is in the 5 ms bucket"
        );
        assert!(after.buckets[FSYNC_BUCKETS_MS.len()] > before.buckets[FSYNC_BUCKETS_MS.len()]);
        assert!(after.sum_us >= before.sum_us + 10_003_030);

        let dir = tempfile::tempdir().expect("tempdir");
        let fs = RealFs;
        let f = fs.open(&dir.path().join("f"), false).expect("open");
        let before = fsync_stats().count();
        f.sync_data().expect("fsync");
        f.sync_all().expect("fsync");
        fs.sync_dir(dir.path()).expect("fsync dir");
        assert!(fsync_stats().count() >= before + 3);
    }
}
