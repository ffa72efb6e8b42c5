//! Test helpers shared by the raft storage tests.

use vltava_controller::raft::{ApplyError, ReplicatedState};

/// Everything applied, in order; a payload `b"fail"` is refused.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied(pub Vec<(u64, Vec<u8>)>);

impl ReplicatedState for Applied {
    fn apply(&mut self, offset: u64, payload: &[u8]) -> Result<(), ApplyError> {
        if payload == b"fail" {
            return Err(ApplyError {
                offset,
                reason: "refused".into(),
            });
        }
        self.0.push((offset, payload.to_vec()));
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (offset, payload) in &self.0 {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    fn restore(&mut self, offset: u64, mut snapshot: &[u8]) -> Result<(), ApplyError> {
        let bad = || ApplyError {
            offset,
            reason: "bad test snapshot".into(),
        };
        self.0.clear();
        while !snapshot.is_empty() {
            if snapshot.len() < 12 {
                return Err(bad());
            }
            let (head, rest) = snapshot.split_at(12);
            let off = u64::from_be_bytes(head[..8].try_into().map_err(|_| bad())?);
            let len = u32::from_be_bytes(head[8..].try_into().map_err(|_| bad())?) as usize;
            if rest.len() < len {
                return Err(bad());
            }
            self.0.push((off, rest[..len].to_vec()));
            snapshot = &rest[len..];
        }
        Ok(())
    }
}
