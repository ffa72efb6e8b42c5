//! Admin operations on topic settings and records: DescribeConfigs, IncrementalAlterConfigs and
//! DeleteRecords.
//!
//! These APIs are negotiated here, per call, against the range the broker advertises
//! ([`CONFIG_VERSIONS`]), rather than through the connection's negotiated table.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    ApiKey, DeleteRecordsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    delete_records_request, describe_configs_request, incremental_alter_configs_request,
};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::admin::{Admin, TopicPartition, topic_name};
use crate::error::{ClientError, ErrorCode, Result, codes};

/// Versions this client speaks of the APIs in this module. DescribeConfigs v0 has no
/// per-entry source, so it starts at v1.
pub const CONFIG_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
];

/// Resource type of a topic in the config APIs.
const RESOURCE_TOPIC: i8 = 2;

/// Where a setting's value comes from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic itself.
    Topic,
    /// Set on the broker (static or dynamic broker setting).
    Broker,
    /// The built-in default.
    Default,
    /// Any other source the broker reports (its wire value).
    Other(i8),
}

impl ConfigSource {
    fn from_wire(v: i8) -> ConfigSource {
        match v {
            1 => ConfigSource::Topic,
            2..=4 => ConfigSource::Broker,
            5 => ConfigSource::Default,
            v => ConfigSource::Other(v),
        }
    }

    /// Kafka's name of the source.
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::Topic => "DYNAMIC_TOPIC_CONFIG",
            ConfigSource::Broker => "BROKER_CONFIG",
            ConfigSource::Default => "DEFAULT_CONFIG",
            ConfigSource::Other(_) => "UNKNOWN",
        }
    }
}

/// One setting from DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Setting name (Kafka's, e.g. `retention.ms`).
    pub name: String,
    /// Value; `None` for sensitive settings.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether the value is a default (not set on the topic).
    pub is_default: bool,
    /// Whether the setting cannot be altered.
    pub read_only: bool,
}

impl Admin {
    /// Sends the request `build` makes to `addr` at the highest version of its API both sides
    /// speak (ours from `ours`, a table like [`CONFIG_VERSIONS`]).
    pub(crate) async fn call_negotiated<R, F>(
        &mut self,
        ours: &[(ApiKey, i16, i16)],
        addr: &str,
        build: F,
    ) -> Result<R::Response>
    where
        R: Request,
        F: FnOnce(i16) -> R,
    {
        let api = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::InvalidArgument(format!("unknown api key {}", R::KEY)))?;
        let (ours_min, ours_max) = ours
            .iter()
            .find(|(k, _, _)| *k == api)
            .map(|&(_, a, b)| (a, b))
            .ok_or_else(|| ClientError::InvalidArgument(format!("{api:?} is not spoken here")))?;
        let conn = self.cluster.connection(addr).await?;
        let advertised = conn.versions().advertised(api);
        let version = advertised.and_then(|(b_min, b_max)| {
            let v = ours_max.min(b_max);
            (v >= ours_min.max(b_min)).then_some(v)
        });
        let Some(version) = version else {
            return Err(ClientError::UnsupportedApi {
                addr: addr.to_string(),
                api,
                ours: format!("v{ours_min}-v{ours_max}"),
                broker: advertised.map_or_else(|| "none".into(), |(a, b)| format!("v{a}-v{b}")),
            });
        };
        let req = build(version);
        let result = conn.call_at(&req, version).await;
        if let Err(e) = &result
            && e.breaks_connection()
        {
            self.cluster.forget_connection(addr);
        }
        result
    }

    /// Every setting of `topic` with its value and source, sorted by name.
    pub async fn describe_configs(&mut self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(CONFIG_VERSIONS, &addr, |_| {
                let mut res = describe_configs_request::DescribeConfigsResource::default();
                res.resource_type = RESOURCE_TOPIC;
                res.resource_name = StrBytes::from_string(topic.to_string());
                res.configuration_keys = None;
                let mut req = DescribeConfigsRequest::default();
                req.resources = vec![res];
                req
            })
            .await?;
        let res = r
            .results
            .into_iter()
            .find(|res| res.resource_name.as_str() == topic)
            .ok_or_else(|| ClientError::Protocol {
                addr: addr.clone(),
                message: format!("DescribeConfigs response lacks topic '{topic}'"),
            })?;
        match res.error_code {
            0 => {}
            codes::UNKNOWN_TOPIC_OR_PARTITION => {
                return Err(ClientError::NotFound(format!(
                    "topic '{topic}' does not exist"
                )));
            }
            c => {
                return Err(ClientError::broker(
                    c,
                    format!("describe configs of topic '{topic}'"),
                    res.error_message.as_deref(),
                ));
            }
        }
        let mut out: Vec<ConfigEntry> = res
            .configs
            .into_iter()
            .map(|c| {
                let source = ConfigSource::from_wire(c.config_source);
                ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    is_default: source != ConfigSource::Topic,
                    source,
                    read_only: c.read_only,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Sets (`set`) and removes (`delete`, back to the default) settings of `topic`, leaving
    /// its other settings as they are (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &mut self,
        topic: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        if set.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let addr = self.cluster.any_connection().await?;
        let r = self
            .call_negotiated(CONFIG_VERSIONS, &addr, |_| {
                let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
                res.resource_type = RESOURCE_TOPIC;
                res.resource_name = StrBytes::from_string(topic.to_string());
                let entry = |name: &str, op: i8, value: Option<&str>| {
                    let mut c = incremental_alter_configs_request::AlterableConfig::default();
                    c.name = StrBytes::from_string(name.to_string());
                    c.config_operation = op;
                    c.value = value.map(|v| StrBytes::from_string(v.to_string()));
                    c
                };
                res.configs = set
                    .iter()
                    .map(|(k, v)| entry(k, 0, Some(v)))
                    .chain(delete.iter().map(|k| entry(k, 1, None)))
                    .collect();
                let mut req = IncrementalAlterConfigsRequest::default();
                req.resources = vec![res];
                req
            })
            .await?;
        let res = r
            .responses
            .into_iter()
            .find(|res| res.resource_name.as_str() == topic)
            .ok_or_else(|| ClientError::Protocol {
                addr: addr.clone(),
                message: format!("IncrementalAlterConfigs response lacks topic '{topic}'"),
            })?;
        match res.error_code {
            0 => Ok(()),
            codes::UNKNOWN_TOPIC_OR_PARTITION => Err(ClientError::NotFound(format!(
                "topic '{topic}' does not exist"
            ))),
            c => Err(ClientError::broker(
                c,
                format!("alter configs of topic '{topic}'"),
                res.error_message.as_deref(),
            )),
        }
    }

    /// Deletes the records of each partition below the given offset (-1: the high
    /// watermark), at the partitions' leaders. Returns, per partition in the order asked,
    /// its new log start offset.
    pub async fn delete_records(
        &mut self,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, Result<i64>)>> {
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let mut topics: Vec<String> = offsets.iter().map(|(tp, _)| tp.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        let md = self.cluster.metadata(Some(&topics)).await?;
        let mut results: BTreeMap<TopicPartition, Result<i64>> = BTreeMap::new();
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, offset) in offsets {
            let t = md
                .topic(&tp.topic)
                .filter(|t| t.error != Some(ErrorCode(codes::UNKNOWN_TOPIC_OR_PARTITION)));
            let leader = match t {
                None => Err(ClientError::NotFound(format!(
                    "topic '{}' does not exist",
                    tp.topic
                ))),
                Some(t) => match t.partitions.iter().find(|p| p.partition == tp.partition) {
                    None => Err(ClientError::NotFound(format!(
                        "topic '{}' has no partition {}",
                        tp.topic, tp.partition
                    ))),
                    Some(p) if p.leader < 0 => Err(ClientError::broker(
                        codes::LEADER_NOT_AVAILABLE,
                        format!("delete records of {}-{}", tp.topic, tp.partition),
                        None,
                    )),
                    Some(p) => Ok(p.leader),
                },
            };
            match leader {
                Ok(l) => by_leader.entry(l).or_default().push((tp.clone(), *offset)),
                Err(e) => {
                    results.insert(tp.clone(), Err(e));
                }
            }
        }
        let timeout_ms = self.timeout_ms();
        for (leader, parts) in by_leader {
            let addr = self
                .cluster
                .broker_connection(leader)
                .await?
                .addr()
                .to_string();
            let r = self
                .call_negotiated(CONFIG_VERSIONS, &addr, |_| {
                    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
                    for (tp, o) in &parts {
                        by_topic
                            .entry(tp.topic.as_str())
                            .or_default()
                            .push((tp.partition, *o));
                    }
                    let mut req = DeleteRecordsRequest::default();
                    req.timeout_ms = timeout_ms;
                    req.topics = by_topic
                        .into_iter()
                        .map(|(topic, ps)| {
                            let mut t = delete_records_request::DeleteRecordsTopic::default();
                            t.name = topic_name(topic);
                            t.partitions = ps
                                .into_iter()
                                .map(|(p, o)| {
                                    let mut dp =
                                        delete_records_request::DeleteRecordsPartition::default();
                                    dp.partition_index = p;
                                    dp.offset = o;
                                    dp
                                })
                                .collect();
                            t
                        })
                        .collect();
                    req
                })
                .await?;
            for t in r.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    let res = match p.error_code {
                        0 => Ok(p.low_watermark),
                        c => Err(ClientError::broker(
                            c,
                            format!("delete records of {}-{}", tp.topic, tp.partition),
                            None,
                        )),
                    };
                    results.insert(tp, res);
                }
            }
        }
        Ok(offsets
            .iter()
            .map(|(tp, _)| {
                let r = results.remove(tp).unwrap_or_else(|| {
                    Err(ClientError::Protocol {
                        addr: "leader".into(),
                        message: format!(
                            "DeleteRecords response lacks {}-{}",
                            tp.topic, tp.partition
                        ),
                    })
                });
                (tp.clone(), r)
            })
            .collect())
    }
}
