//! Producer-id allocation for idempotent producers, in blocks reserved in the catalogue.

use super::{ReplicaManager, TopicError};
use crate::meta::PRODUCER_ID_BLOCK;

impl ReplicaManager {
    /// Hands out a fresh producer id, persisting a new block when one runs out.
    pub fn next_producer_id(&self) -> Result<i64, TopicError> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            let start = self.lock_catalogue().reserve_producer_ids()?;
            *ids = (start, start + PRODUCER_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }
}
