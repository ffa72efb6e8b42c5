//! Configuration APIs: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics
//! (broker settings are static and only described).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, alter_configs_response,
    incremental_alter_configs_response,
};

use super::{Ctx, s};
use crate::errors::{NONE, topic_code};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn config_type(name: &str) -> i8 {
    // 1 BOOLEAN, 2 STRING, 3 INT, 5 LONG, 7 LIST.
    match name {
        "cleanup.policy" | "log.cleanup.policy" => 7,
        n if n.ends_with("ratio") => 6,
        n if n.ends_with(".enable") => 1,
        n if n.ends_with(".ms") || n.ends_with("retention.bytes") || n.ends_with(".messages") => 5,
        n if n.ends_with(".bytes")
            || n.ends_with("replicas")
            || n.ends_with("partitions")
            || n.ends_with(".factor")
            || n == "node.id" =>
        {
            3
        }
        _ => 2,
    }
}

/// DescribeConfigs for topics (overrides and defaults) and this broker.
pub(super) fn describe_configs(
    ctx: &Ctx,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let wanted = |n: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == n))
        };
        let entry = |name: &str, value: &str, source: i8| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = s(name);
            c.value = Some(s(value));
            c.config_source = source;
            c.read_only = res.resource_type == RESOURCE_BROKER;
            if version >= 3 {
                c.config_type = config_type(name);
            }
            c
        };
        match res.resource_type {
            RESOURCE_TOPIC => match ctx.rm.topic(&res.resource_name) {
                Some(t) => {
                    for n in crate::config::topic_setting_names().filter(|n| wanted(n)) {
                        if let Some((v, is_override)) = ctx.rm.config().topic_value(&t.configs, n) {
                            r.configs
                                .push(entry(n, &v, if is_override { 1 } else { 5 }));
                        }
                    }
                }
                None => {
                    r.error_code = ResponseError::UnknownTopicOrPartition.code();
                    r.error_message = Some(s(format!(
                        "topic '{}' does not exist",
                        res.resource_name.as_str()
                    )));
                }
            },
            RESOURCE_BROKER => {
                if res.resource_name.is_empty()
                    || res.resource_name.as_str() == ctx.meta.node_id.to_string()
                {
                    for (n, v, explicit) in ctx.rm.config().entries() {
                        if wanted(n) {
                            r.configs.push(entry(n, v, if explicit { 4 } else { 5 }));
                        }
                    }
                } else {
                    r.error_code = ResponseError::InvalidRequest.code();
                    r.error_message = Some(s("unknown broker id"));
                }
            }
            _ => {
                r.error_code = ResponseError::InvalidRequest.code();
                r.error_message = Some(s("unsupported resource type"));
            }
        }
        resp.results.push(r);
    }
    resp
}

fn alter_resource(
    ctx: &Ctx,
    resource_type: i8,
    name: &str,
    changes: Result<Vec<(String, Option<String>)>, String>,
    incremental: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    match resource_type {
        RESOURCE_TOPIC => {
            let changes = match changes {
                Ok(c) => c,
                Err(msg) => return (ResponseError::InvalidConfig.code(), Some(msg)),
            };
            match ctx
                .cluster
                .alter_topic_configs(name, &changes, incremental, validate_only)
            {
                Ok(()) => (NONE, None),
                Err(e) => (topic_code(&e), Some(e.to_string())),
            }
        }
        RESOURCE_BROKER => (
            ResponseError::InvalidConfig.code(),
            Some(
                "broker settings are static: set them at start (--set, config file, VLTAVA_*)"
                    .into(),
            ),
        ),
        _ => (
            ResponseError::InvalidRequest.code(),
            Some("unsupported resource type".into()),
        ),
    }
}

/// AlterConfigs: replaces a topic's overrides.
pub(super) fn alter_configs(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        let changes = Ok(res
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect());
        let (code, msg) = alter_resource(
            ctx,
            res.resource_type,
            &res.resource_name,
            changes,
            false,
            req.validate_only,
        );
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        r.error_code = code;
        r.error_message = msg.map(s);
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        resp.responses.push(r);
    }
    resp
}

/// IncrementalAlterConfigs: sets or deletes single topic overrides.
pub(super) fn incremental_alter_configs(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let changes: Result<Vec<_>, String> = res
            .configs
            .iter()
            .map(|c| match c.config_operation {
                0 => Ok((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                1 => Ok((c.name.to_string(), None)),
                op => Err(format!(
                    "operation {op} (APPEND/SUBTRACT) is not supported for '{}': no list-valued topic setting is supported yet",
                    c.name.as_str()
                )),
            })
            .collect();
        let (code, msg) = alter_resource(
            ctx,
            res.resource_type,
            &res.resource_name,
            changes,
            true,
            req.validate_only,
        );
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        r.error_code = code;
        r.error_message = msg.map(s);
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        resp.responses.push(r);
    }
    resp
}
