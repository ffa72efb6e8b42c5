//! OffsetFetch responses flattened to one row per partition: v8 and later nest the answer in
//! a per-group entry, older versions answer at the top level, and the admin client and the
//! consumer both read either layout.

use kafka_protocol::messages::OffsetFetchResponse;
use kafka_protocol::protocol::StrBytes;

/// One partition of an OffsetFetch answer.
#[derive(Debug, Clone)]
pub(crate) struct OffsetFetchRow {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    /// -1 when nothing is committed.
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: Option<StrBytes>,
}

/// Why an OffsetFetch answer has no rows for the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetFetchFailure {
    /// A v8+ answer without an entry for the group asked about.
    MissingGroup,
    /// The group-level error code.
    Group(i16),
}

/// The rows of `group` in `r`, an answer at `version`.
pub(crate) fn offset_fetch_rows(
    r: OffsetFetchResponse,
    version: i16,
    group: &str,
) -> Result<Vec<OffsetFetchRow>, OffsetFetchFailure> {
    let mut rows = Vec::new();
    if version >= 8 {
        let g = r
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or(OffsetFetchFailure::MissingGroup)?;
        if g.error_code != 0 {
            return Err(OffsetFetchFailure::Group(g.error_code));
        }
        for t in g.topics {
            for p in t.partitions {
                rows.push(OffsetFetchRow {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    error_code: p.error_code,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.metadata,
                });
            }
        }
    } else {
        if r.error_code != 0 {
            return Err(OffsetFetchFailure::Group(r.error_code));
        }
        for t in r.topics {
            for p in t.partitions {
                rows.push(OffsetFetchRow {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    error_code: p.error_code,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.metadata,
                });
            }
        }
    }
    Ok(rows)
}
