//! Wire handlers of the consumer-group APIs: translate each request version to the version-free
//! types of [`crate::group`] and back. Fields absent at a version stay at their defaults.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors::NONE;
use crate::group::{
    HeartbeatArgs, JoinGroupArgs, LeaveMember, OffsetCommitArgs, Protocol, SyncGroupArgs,
};
use crate::groups::GroupManager;
use crate::offsets::OffsetEntry;
use crate::replica::now_ms;

/// Who sent a request, for JoinGroup's member bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// `client.id` from the request header.
    pub client_id: String,
    /// Peer address as Kafka shows it (`/127.0.0.1`).
    pub client_host: String,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

/// JoinGroup 0-9.
pub async fn join_group(
    g: &Arc<GroupManager>,
    client: &Client,
    version: i16,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let args = JoinGroupArgs {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 5 {
            opt(&req.group_instance_id)
        } else {
            None
        },
        client_id: client.client_id.clone(),
        client_host: client.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| Protocol::new(p.name.to_string(), p.metadata.clone()))
            .collect(),
    };
    let group = args.group_id.clone();
    let asked = args.member_id.clone();
    let r = g.join_group(args, version).await;
    tracing::debug!(group, asked, member = %r.member_id, error = r.error_code, generation = r.generation_id, leader = %r.leader, members = r.members.len(), "JoinGroup");
    let mut resp = JoinGroupResponse::default();
    resp.error_code = r.error_code;
    resp.generation_id = r.generation_id;
    if version >= 7 {
        resp.protocol_type = r.protocol_type.map(s);
        resp.protocol_name = r.protocol_name.map(s);
    } else {
        resp.protocol_name = Some(s(r.protocol_name.unwrap_or_default()));
    }
    resp.leader = s(r.leader);
    if version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    resp.member_id = s(r.member_id);
    resp.members = r
        .members
        .into_iter()
        .map(|m| {
            let mut jm = JoinGroupResponseMember::default();
            jm.member_id = s(m.member_id);
            if version >= 5 {
                jm.group_instance_id = m.group_instance_id.map(s);
            }
            jm.metadata = m.metadata;
            jm
        })
        .collect();
    resp
}

/// SyncGroup 0-5.
pub async fn sync_group(
    g: &Arc<GroupManager>,
    version: i16,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let args = SyncGroupArgs {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 3 {
            opt(&req.group_instance_id)
        } else {
            None
        },
        protocol_type: if version >= 5 {
            opt(&req.protocol_type)
        } else {
            None
        },
        protocol_name: if version >= 5 {
            opt(&req.protocol_name)
        } else {
            None
        },
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let (group, member, generation) = (
        args.group_id.clone(),
        args.member_id.clone(),
        args.generation_id,
    );
    let r = g.sync_group(args).await;
    tracing::debug!(
        group,
        member,
        generation,
        error = r.error_code,
        assignment = r.assignment.len(),
        "SyncGroup"
    );
    let mut resp = SyncGroupResponse::default();
    resp.error_code = r.error_code;
    if version >= 5 {
        resp.protocol_type = r.protocol_type.map(s);
        resp.protocol_name = r.protocol_name.map(s);
    }
    resp.assignment = r.assignment;
    resp
}

/// Heartbeat 0-4.
pub fn heartbeat(g: &GroupManager, version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    resp.error_code = g.heartbeat(HeartbeatArgs {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 3 {
            opt(&req.group_instance_id)
        } else {
            None
        },
        generation_id: req.generation_id,
    });
    resp
}

/// LeaveGroup 0-5.
pub fn leave_group(g: &GroupManager, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: opt(&m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let r = g.leave_group(&req.group_id.0, members);
    let mut resp = LeaveGroupResponse::default();
    if version >= 3 {
        resp.error_code = r.error_code;
        resp.members = r
            .members
            .into_iter()
            .map(|m| {
                let mut mr = MemberResponse::default();
                mr.member_id = s(m.member_id);
                mr.group_instance_id = m.group_instance_id.map(s);
                mr.error_code = m.error_code;
                mr
            })
            .collect();
    } else {
        resp.error_code = if r.error_code != NONE {
            r.error_code
        } else {
            r.members.first().map_or(NONE, |m| m.error_code)
        };
    }
    resp
}

/// OffsetCommit 2-9.
pub fn offset_commit(
    g: &GroupManager,
    version: i16,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let args = OffsetCommitArgs {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 7 {
            opt(&req.group_instance_id)
        } else {
            None
        },
    };
    let now = now_ms();
    let mut flat = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            flat.push((
                t.name.0.to_string(),
                p.partition_index,
                OffsetEntry {
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: opt(&p.committed_metadata).unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let codes = g.commit_offsets(&args, version, flat);
    let mut resp = OffsetCommitResponse::default();
    let mut i = 0;
    for t in req.topics {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = match &codes {
                Ok(c) => c.get(i).copied().unwrap_or(NONE),
                Err(code) => *code,
            };
            i += 1;
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// A topic and, per partition asked for, its committed offset if any.
type TopicOffsets = (TopicName, Vec<(i32, Option<OffsetEntry>)>);

fn fetch_group_offsets(
    g: &GroupManager,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<TopicOffsets> {
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(name, parts)| {
                let entries = parts
                    .into_iter()
                    .map(|p| (p, g.committed(group, &name.0, p)))
                    .collect();
                (name, entries)
            })
            .collect(),
        None => {
            let mut out: Vec<TopicOffsets> = Vec::new();
            for (topic, p, e) in g.group_offsets(group) {
                match out.last_mut() {
                    Some((name, v)) if name.0.as_str() == topic => v.push((p, Some(e))),
                    _ => out.push((TopicName(s(topic)), vec![(p, Some(e))])),
                }
            }
            out
        }
    }
}

/// OffsetFetch 1-9 (one group before v8, several from v8).
pub fn offset_fetch(
    g: &GroupManager,
    version: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        for rg in req.groups {
            let topics = rg.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let mut gr = OffsetFetchResponseGroup::default();
            gr.group_id = rg.group_id.clone();
            gr.error_code = g.coordinator_error(&rg.group_id.0);
            if gr.error_code != NONE {
                resp.groups.push(gr);
                continue;
            }
            for (name, entries) in fetch_group_offsets(g, &rg.group_id.0, topics) {
                let mut tr = OffsetFetchResponseTopics::default();
                tr.name = name;
                for (p, e) in entries {
                    let mut pr = OffsetFetchResponsePartitions::default();
                    pr.partition_index = p;
                    pr.committed_offset = e.as_ref().map_or(-1, |e| e.offset);
                    pr.committed_leader_epoch = e.as_ref().map_or(-1, |e| e.leader_epoch);
                    pr.metadata = Some(s(e.map(|e| e.metadata).unwrap_or_default()));
                    tr.partitions.push(pr);
                }
                gr.topics.push(tr);
            }
            resp.groups.push(gr);
        }
        return resp;
    }
    let code = g.coordinator_error(&req.group_id.0);
    if code != NONE {
        if version >= 2 {
            resp.error_code = code;
        } else {
            // v1 has no top-level error: every partition asked for carries it.
            for t in req.topics.unwrap_or_default() {
                let mut tr = OffsetFetchResponseTopic::default();
                tr.name = t.name;
                for p in t.partition_indexes {
                    let mut pr = OffsetFetchResponsePartition::default();
                    pr.partition_index = p;
                    pr.committed_offset = -1;
                    pr.error_code = code;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
        return resp;
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    for (name, entries) in fetch_group_offsets(g, &req.group_id.0, topics) {
        let mut tr = OffsetFetchResponseTopic::default();
        tr.name = name;
        for (p, e) in entries {
            let mut pr = OffsetFetchResponsePartition::default();
            pr.partition_index = p;
            pr.committed_offset = e.as_ref().map_or(-1, |e| e.offset);
            if version >= 5 {
                pr.committed_leader_epoch = e.as_ref().map_or(-1, |e| e.leader_epoch);
            }
            pr.metadata = Some(s(e.map(|e| e.metadata).unwrap_or_default()));
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// DescribeGroups 0-5.
pub fn describe_groups(
    g: &GroupManager,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for id in req.groups {
        let mut dg = DescribedGroup::default();
        dg.error_code = g.coordinator_error(&id.0);
        if dg.error_code != NONE {
            dg.group_id = id;
            resp.groups.push(dg);
            continue;
        }
        let d = g.describe(&id.0);
        dg.group_id = id.clone();
        dg.group_state = s(d.state.as_str());
        dg.protocol_type = s(d.protocol_type);
        dg.protocol_data = s(d.protocol);
        dg.members = d
            .members
            .into_iter()
            .map(|m| {
                let mut dm = DescribedGroupMember::default();
                dm.member_id = s(m.member_id);
                if version >= 4 {
                    dm.group_instance_id = m.group_instance_id.map(s);
                }
                dm.client_id = s(m.client_id);
                dm.client_host = s(m.client_host);
                dm.member_metadata = m.metadata;
                dm.member_assignment = m.assignment;
                dm
            })
            .collect();
        resp.groups.push(dg);
    }
    resp
}

/// ListGroups 0-4 (state filter from v4).
pub fn list_groups(g: &GroupManager, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let filter: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(|x| x.to_string()).collect()
    } else {
        Vec::new()
    };
    let mut resp = ListGroupsResponse::default();
    if g.loading() {
        // The groups listed so far, and a sign that more may come (as Kafka answers).
        resp.error_code = ResponseError::CoordinatorLoadInProgress.code();
    }
    resp.groups = g
        .list(&filter)
        .into_iter()
        .map(|l| {
            let mut lg = ListedGroup::default();
            lg.group_id = GroupId(s(l.group_id));
            lg.protocol_type = s(l.protocol_type);
            if version >= 4 {
                lg.group_state = s(l.state.as_str());
            }
            lg
        })
        .collect();
    resp
}

/// DeleteGroups 0-2.
pub fn delete_groups(g: &GroupManager, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in req.groups_names {
        let mut r = DeletableGroupResult::default();
        r.error_code = g.delete_group(&id.0);
        r.group_id = id;
        resp.results.push(r);
    }
    resp
}

/// OffsetDelete 0.
pub fn offset_delete(g: &GroupManager, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut resp = OffsetDeleteResponse::default();
    match g.delete_offsets(&req.group_id.0, &wanted) {
        Err(code) => resp.error_code = code,
        Ok(codes) => {
            let mut i = 0;
            for t in req.topics {
                let mut tr = OffsetDeleteResponseTopic::default();
                tr.name = t.name.clone();
                for p in t.partitions {
                    let mut pr = OffsetDeleteResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = codes.get(i).copied().unwrap_or(NONE);
                    i += 1;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
    }
    resp
}
