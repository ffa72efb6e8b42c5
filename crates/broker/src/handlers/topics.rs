//! Topic lifecycle: CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};

use super::{Ctx, s, tn};
use crate::errors::topic_code;
use crate::replica::TopicError;

fn config_pairs(
    configs: &[(String, Option<String>)],
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut out = BTreeMap::new();
    for (k, v) in configs {
        match v {
            Some(v) => {
                out.insert(k.clone(), v.clone());
            }
            None => {
                return Err(TopicError::InvalidConfig(format!(
                    "null value for '{k}' is not allowed when creating a topic"
                )));
            }
        }
    }
    Ok(out)
}

/// CreateTopics, each topic carried out by the active controller (placement is its choice
/// unless the request assigns replicas).
pub(super) fn create_topics(
    ctx: &Ctx,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for ct in req.topics {
        let name = ct.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = ct.name.clone();
        let configs: Vec<(String, Option<String>)> = ct
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let assignments: BTreeMap<i32, Vec<i32>> = ct
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        let result = config_pairs(&configs).and_then(|c| {
            ctx.cluster
                .create_topic(
                    &name,
                    ct.num_partitions,
                    ct.replication_factor,
                    c.clone(),
                    assignments,
                    req.validate_only,
                )
                .map(|created| (created, c))
        });
        match result {
            Ok((created, configs)) => {
                if version >= 7 {
                    r.topic_id = created.topic_id;
                }
                if version >= 5 {
                    r.num_partitions = created.num_partitions;
                    r.replication_factor = created.replication_factor;
                    r.configs = Some(
                        crate::config::topic_setting_names()
                            .filter_map(|n| {
                                let (v, is_override) = ctx.rm.config().topic_value(&configs, n)?;
                                let mut c = CreatableTopicConfigs::default();
                                c.name = s(n);
                                c.value = Some(s(v));
                                c.config_source = if is_override { 1 } else { 5 };
                                Some(c)
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                r.error_code = topic_code(&e);
                r.error_message = Some(s(e.to_string()));
            }
        }
        resp.topics.push(r);
    }
    resp
}

/// DeleteTopics, by name or (v6+) by topic id.
pub(super) fn delete_topics(
    ctx: &Ctx,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        let name = match name {
            Some(n) => Some(n),
            None => ctx.rm.topic_by_id(id).map(|t| t.name.clone()),
        };
        r.name = name.as_ref().map(|n| tn(n));
        match name {
            None => r.error_code = ResponseError::UnknownTopicId.code(),
            Some(n) => match ctx.cluster.delete_topic(&n) {
                Ok(deleted_id) => {
                    if version >= 6 {
                        r.topic_id = deleted_id;
                    }
                }
                Err(e) => {
                    r.error_code = topic_code(&e);
                    if version >= 5 {
                        r.error_message = Some(s(e.to_string()));
                    }
                }
            },
        }
        resp.responses.push(r);
    }
    resp
}

/// CreatePartitions: raises partition counts, through the active controller.
pub(super) fn create_partitions(
    ctx: &Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let assignments = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        if let Err(e) =
            ctx.cluster
                .create_partitions(&t.name.0, t.count, assignments, req.validate_only)
        {
            r.error_code = topic_code(&e);
            r.error_message = Some(s(e.to_string()));
        }
        resp.results.push(r);
    }
    resp
}
