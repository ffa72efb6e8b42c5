//! Group commit for `flush.on.append`: appenders wait until an fsync covers their records, and
//! one fsync covers every batch appended while the previous one ran.
//!
//! The broker appends under the partition's lock with [`Log::append_deferred`], releases the
//! lock, and then (on a blocking thread) calls [`GroupCommit::sync_through`] with the end of
//! what it appended. At most one caller per log (the leader) fsyncs at a time, through a
//! [`crate::FlushHandle`] taken under the lock and synced without it; the others wait. When the
//! leader is done, waiters whose records it covered return at once, and one of the rest
//! leads the next fsync, which covers everything appended meanwhile. Under load a log thus
//! does about one fsync per fsync duration, however many appenders there are.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::StorageError;
use crate::log::Log;

#[derive(Debug)]
struct State {
    /// Every offset below this is durable (the log's recovery point, as last reported).
    durable: u64,
    /// A leader is between taking its flush handle and recording it.
    syncing: bool,
    /// fsync rounds led so far.
    rounds: u64,
}

/// Serialises the fsyncs of one log and lets appenders share them (see the module docs).
/// Every [`Log`] has one, from [`Log::group_commit`].
#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    changed: Condvar,
}

fn lock_log(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ends a leader's turn, even if it unwinds: waiters must not wait for it forever.
struct Turn<'a>(&'a GroupCommit);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.lock().syncing = false;
        self.0.changed.notify_all();
    }
}

impl GroupCommit {
    /// A group commit for a log whose offsets below `durable` are durable.
    pub(crate) fn new(durable: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                durable,
                syncing: false,
                rounds: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every offset below this is known to be durable.
    pub fn durable_offset(&self) -> u64 {
        self.lock().durable
    }

    /// fsync rounds led through [`GroupCommit::sync_through`] so far.
    pub fn rounds(&self) -> u64 {
        self.lock().rounds
    }

    /// The log's recovery point moved up to `recovery_point`. Called under the log's lock.
    pub(crate) fn advance(&self, recovery_point: u64) {
        let mut st = self.lock();
        if recovery_point > st.durable {
            st.durable = recovery_point;
            drop(st);
            self.changed.notify_all();
        }
    }

    /// The log was truncated and its recovery point is now `recovery_point`: offsets above
    /// it will name new records. Called under the log's lock.
    pub(crate) fn truncated_to(&self, recovery_point: u64) {
        let mut st = self.lock();
        st.durable = st.durable.min(recovery_point);
    }

    /// Blocks until every offset below `end_offset` (the `last_offset + 1` of an append) is
    /// durable, leading an fsync of `log` or waiting for the one in progress; returns the
    /// durable offset. Returns at once if it already is. Takes `log`'s lock only briefly,
    /// never during an fsync. Runs on a blocking thread (`spawn_blocking` from async code).
    ///
    /// Errors: the log's (offline, deleted), an fsync failure (which takes the log offline:
    /// the records may or may not be on disk, so the append must not be acknowledged), or
    /// [`StorageError::TruncatedBeforeDurable`] if the records were truncated away first.
    pub fn sync_through(&self, log: &Mutex<Log>, end_offset: u64) -> Result<u64, StorageError> {
        loop {
            {
                let mut st = self.lock();
                loop {
                    if st.durable >= end_offset {
                        return Ok(st.durable);
                    }
                    if !st.syncing {
                        break;
                    }
                    st = self
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                st.syncing = true;
            }
            let _turn = Turn(self);
            self.lead(log, end_offset)?;
        }
    }

    /// One fsync round: everything appended so far becomes durable.
    fn lead(&self, log: &Mutex<Log>, end_offset: u64) -> Result<(), StorageError> {
        let handle = {
            let mut log = lock_log(log);
            let recovery_point = log.recovery_point();
            if recovery_point >= end_offset {
                self.advance(recovery_point);
                return Ok(());
            }
            let log_end = log.log_end_offset();
            if end_offset > log_end {
                return Err(StorageError::TruncatedBeforeDurable {
                    offset: end_offset,
                    log_end,
                });
            }
            log.flush_handle()?
        };
        let synced = handle.sync();
        self.lock().rounds += 1;
        let mut log = lock_log(log);
        match synced {
            Ok(()) => {
                log.complete_flush(handle);
                Ok(())
            }
            Err(e) => Err(log.flush_failed(handle, e)),
        }
    }
}
