//! The cluster as the client sees it: the bootstrap list, the brokers and topics from Metadata,
//! one connection per broker (opened on first use, reopened after a failure), and group
//! coordinators found with FindCoordinator.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName, metadata_request,
};
use kafka_protocol::protocol::StrBytes;

use crate::connection::{Connection, ConnectionConfig};
use crate::error::{ClientError, ErrorCode, Result, codes};

/// Client settings: where to start and how each connection behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` addresses tried in order to get the first Metadata.
    pub bootstrap: Vec<String>,
    /// Settings of every connection.
    pub connection: ConnectionConfig,
}

impl ClientConfig {
    /// Settings with default connection settings for a `host:port[,host:port...]` list.
    pub fn new(bootstrap: &str) -> Result<ClientConfig> {
        Ok(ClientConfig {
            bootstrap: parse_bootstrap(bootstrap)?,
            connection: ConnectionConfig::default(),
        })
    }
}

/// Splits and checks a `host:port[,host:port...]` list (IPv6 hosts in brackets).
pub fn parse_bootstrap(list: &str) -> Result<Vec<String>> {
    let bad = || ClientError::InvalidBootstrap(list.to_string());
    let mut out = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (host, port) = part.rsplit_once(':').ok_or_else(bad)?;
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner.strip_suffix(']').is_some_and(|h| !h.is_empty())
        } else {
            !host.is_empty() && !host.contains(':')
        };
        let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
        if !host_ok || !port_ok {
            return Err(bad());
        }
        out.push(part.to_string());
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// `host:port`, with brackets around an IPv6 host.
pub(crate) fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A broker from Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port` to connect to.
    pub fn addr(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// One partition of a topic, from Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// Node id of the leader, -1 when there is none.
    pub leader: i32,
    /// Leader epoch (-1 when the broker does not say).
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Offline replica node ids.
    pub offline_replicas: Vec<i32>,
    /// The partition's error, if any (e.g. LEADER_NOT_AVAILABLE).
    pub error: Option<ErrorCode>,
}

/// A topic from Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Topic id (nil before Metadata v10).
    pub topic_id: uuid::Uuid,
    /// Whether the topic is internal (`__consumer_offsets`).
    pub internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
    /// The topic's error, if any (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    pub error: Option<ErrorCode>,
}

/// A Metadata answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Node id of the controller, -1 if unknown.
    pub controller_id: i32,
    /// Brokers, sorted by node id.
    pub brokers: Vec<BrokerInfo>,
    /// Topics asked for (or all), sorted by name.
    pub topics: Vec<TopicMetadata>,
}

impl Metadata {
    /// The topic named `name`, if the answer has it.
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The broker with node id `node_id`.
    pub fn broker(&self, node_id: i32) -> Option<&BrokerInfo> {
        self.brokers.iter().find(|b| b.node_id == node_id)
    }

    fn from_response(r: MetadataResponse) -> Metadata {
        let mut brokers: Vec<BrokerInfo> = r
            .brokers
            .into_iter()
            .map(|b| BrokerInfo {
                node_id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
            })
            .collect();
        brokers.sort_by_key(|b| b.node_id);
        let mut topics: Vec<TopicMetadata> = r
            .topics
            .into_iter()
            .map(|t| {
                let mut partitions: Vec<PartitionMetadata> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.into_iter().map(|n| n.0).collect(),
                        isr: p.isr_nodes.into_iter().map(|n| n.0).collect(),
                        offline_replicas: p.offline_replicas.into_iter().map(|n| n.0).collect(),
                        error: ErrorCode::from_code(p.error_code),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                TopicMetadata {
                    name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    topic_id: t.topic_id,
                    internal: t.is_internal,
                    partitions,
                    error: ErrorCode::from_code(t.error_code),
                }
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Metadata {
            cluster_id: r.cluster_id.map(|c| c.to_string()),
            controller_id: r.controller_id.0,
            brokers,
            topics,
        }
    }
}

/// Connections to the brokers of one cluster.
#[derive(Debug)]
pub struct Cluster {
    config: ClientConfig,
    /// Open connections by `host:port`.
    conns: HashMap<String, Connection>,
    /// Brokers from the latest Metadata.
    brokers: Vec<BrokerInfo>,
    controller_id: i32,
    cluster_id: Option<String>,
    /// Coordinator address per group, from FindCoordinator.
    coordinators: HashMap<String, String>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap server and reads the broker list.
    pub async fn connect(config: ClientConfig) -> Result<Cluster> {
        if config.bootstrap.is_empty() {
            return Err(ClientError::InvalidBootstrap(String::new()));
        }
        let mut cluster = Cluster {
            config,
            conns: HashMap::new(),
            brokers: Vec::new(),
            controller_id: -1,
            cluster_id: None,
            coordinators: HashMap::new(),
        };
        cluster.metadata(Some(&[])).await?;
        Ok(cluster)
    }

    /// The settings this cluster was opened with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Brokers from the latest Metadata, sorted by node id.
    pub fn brokers(&self) -> &[BrokerInfo] {
        &self.brokers
    }

    /// Node id of the controller from the latest Metadata (-1 if unknown).
    pub fn controller_id(&self) -> i32 {
        self.controller_id
    }

    /// Cluster id from the latest Metadata.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Fetches Metadata for `topics` (`None`: every topic; `Some(&[])`: brokers only) without
    /// creating topics, from any reachable broker, and remembers the broker list.
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> Result<Metadata> {
        let mut req = MetadataRequest::default();
        req.allow_auto_topic_creation = false;
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut rt = metadata_request::MetadataRequestTopic::default();
                    rt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    rt
                })
                .collect()
        });
        let r = self.call_any(&req).await?;
        let md = Metadata::from_response(r);
        self.brokers = md.brokers.clone();
        self.controller_id = md.controller_id;
        self.cluster_id = md.cluster_id.clone();
        Ok(md)
    }

    /// Sends `req` to any broker: an open connection first, then the known brokers and the
    /// bootstrap servers in turn, until one answers. Only connection-level failures move on
    /// to the next address.
    pub async fn call_any<R: kafka_protocol::protocol::Request>(
        &mut self,
        req: &R,
    ) -> Result<R::Response> {
        let mut candidates: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.is_broken())
            .map(|(a, _)| a.clone())
            .collect();
        candidates.sort();
        for b in &self.brokers {
            let a = b.addr();
            if !candidates.contains(&a) {
                candidates.push(a);
            }
        }
        for a in &self.config.bootstrap {
            if !candidates.contains(a) {
                candidates.push(a.clone());
            }
        }
        let mut errors: Vec<ClientError> = Vec::new();
        for addr in candidates {
            // Any failure to open a connection (refused, not a Kafka broker, no common
            // versions) moves on to the next address, as does a connection lost mid-call.
            let conn = match self.connection(&addr).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match conn.call(req).await {
                Ok(r) => return Ok(r),
                Err(e @ (ClientError::Io { .. } | ClientError::Timeout { .. })) => {
                    self.conns.remove(&addr);
                    errors.push(e);
                }
                Err(e) => {
                    if e.breaks_connection() {
                        self.conns.remove(&addr);
                    }
                    return Err(e);
                }
            }
        }
        Err(combine_connect_errors(errors))
    }

    /// Sends the request `build` makes for the negotiated version of its API to the broker at
    /// `addr`; a connection the call broke is dropped.
    pub async fn call_at_addr<R, F>(&mut self, addr: &str, build: F) -> Result<R::Response>
    where
        R: kafka_protocol::protocol::Request,
        F: FnOnce(i16) -> R,
    {
        let conn = self.connection(addr).await?;
        let api = kafka_protocol::messages::ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::InvalidArgument(format!("unknown api key {}", R::KEY)))?;
        let version = conn.version(api)?;
        let req = build(version);
        let result = conn.call_at(&req, version).await;
        if let Err(e) = &result
            && e.breaks_connection()
        {
            self.forget_connection(addr);
        }
        result
    }

    /// The open connection to `addr`, opening it (again) if needed.
    pub async fn connection(&mut self, addr: &str) -> Result<&mut Connection> {
        let usable = self.conns.get(addr).is_some_and(|c| !c.is_broken());
        if !usable {
            self.conns.remove(addr);
            let conn = Connection::connect(addr, &self.config.connection).await?;
            self.conns.insert(addr.to_string(), conn);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| ClientError::NotFound(format!("no connection to {addr}")))
    }

    /// The connection to broker `node_id` (refreshing the broker list once if it is unknown).
    pub async fn broker_connection(&mut self, node_id: i32) -> Result<&mut Connection> {
        let addr = match self.broker_addr(node_id) {
            Some(a) => a,
            None => {
                self.metadata(Some(&[])).await?;
                self.broker_addr(node_id).ok_or_else(|| {
                    ClientError::NotFound(format!(
                        "broker {node_id} is not in the cluster metadata"
                    ))
                })?
            }
        };
        self.connection(&addr).await
    }

    fn broker_addr(&self, node_id: i32) -> Option<String> {
        self.brokers
            .iter()
            .find(|b| b.node_id == node_id)
            .map(BrokerInfo::addr)
    }

    /// Drops the connection to `addr` (after a failure that left it unusable).
    pub fn forget_connection(&mut self, addr: &str) {
        self.conns.remove(addr);
    }

    /// Finds the coordinator of `group` with FindCoordinator (retrying while the coordinator
    /// is loading or unavailable, up to the request timeout) and returns its `host:port`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<String> {
        if let Some(a) = self.coordinators.get(group) {
            return Ok(a.clone());
        }
        let deadline = Instant::now() + self.config.connection.request_timeout;
        loop {
            let result = self.find_coordinator_once(group).await;
            match result {
                Ok(addr) => {
                    self.coordinators.insert(group.to_string(), addr.clone());
                    return Ok(addr);
                }
                Err(e) if is_coordinator_retriable(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn find_coordinator_once(&mut self, group: &str) -> Result<String> {
        let addr = self.any_connection().await?;
        let conn = self.connection(&addr).await?;
        let version = conn.version(kafka_protocol::messages::ApiKey::FindCoordinator)?;
        let mut req = FindCoordinatorRequest::default();
        // v4 moved the key into a batch; each field is set only where the version has it.
        if version >= 4 {
            req.coordinator_keys = vec![StrBytes::from_string(group.to_string())];
        } else {
            req.key = StrBytes::from_string(group.to_string());
        }
        let r = match conn.call_at(&req, version).await {
            Ok(r) => r,
            Err(e) => {
                if e.breaks_connection() {
                    self.forget_connection(&addr);
                }
                return Err(e);
            }
        };
        let context = format!("find coordinator of group '{group}'");
        let (code, msg, host, port) = if version >= 4 {
            let c = r
                .coordinators
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::Protocol {
                    addr: addr.clone(),
                    message: "FindCoordinator response names no coordinator".into(),
                })?;
            (c.error_code, c.error_message, c.host, c.port)
        } else {
            (r.error_code, r.error_message, r.host, r.port)
        };
        if code != 0 {
            return Err(ClientError::broker(code, context, msg.as_deref()));
        }
        Ok(join_host_port(&host, port))
    }

    /// The address of a usable connection: an open one, else the first known broker or
    /// bootstrap server that accepts one.
    pub async fn any_connection(&mut self) -> Result<String> {
        let open = self
            .conns
            .iter()
            .filter(|(_, c)| !c.is_broken())
            .map(|(a, _)| a.clone())
            .min();
        if let Some(a) = open {
            return Ok(a);
        }
        let mut candidates: Vec<String> = self.brokers.iter().map(BrokerInfo::addr).collect();
        for a in &self.config.bootstrap {
            if !candidates.contains(a) {
                candidates.push(a.clone());
            }
        }
        let mut errors = Vec::new();
        for addr in candidates {
            match self.connection(&addr).await {
                Ok(_) => return Ok(addr),
                Err(e) => errors.push(e),
            }
        }
        Err(combine_connect_errors(errors))
    }

    /// Forgets the coordinator of `group` (after NOT_COORDINATOR and the like).
    pub fn forget_coordinator(&mut self, group: &str) {
        self.coordinators.remove(group);
    }

    /// The connection to the coordinator of `group`.
    pub async fn coordinator_connection(&mut self, group: &str) -> Result<&mut Connection> {
        let addr = self.find_coordinator(group).await?;
        if let Err(e) = self.connection(&addr).await {
            self.forget_coordinator(group);
            return Err(e);
        }
        self.connection(&addr).await
    }
}

/// Errors after which asking again (after finding the coordinator anew) may succeed.
pub(crate) fn is_coordinator_retriable(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            codes::COORDINATOR_NOT_AVAILABLE
                | codes::COORDINATOR_LOAD_IN_PROGRESS
                | codes::NOT_COORDINATOR
        )
    )
}

fn combine_connect_errors(mut errors: Vec<ClientError>) -> ClientError {
    match errors.len() {
        0 => return ClientError::InvalidBootstrap(String::new()),
        1 => return errors.remove(0),
        _ => {}
    }
    if !errors
        .iter()
        .all(|e| matches!(e, ClientError::Connect { .. }))
    {
        // Mixed failures: say each one.
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return ClientError::Connect {
            addr: "any broker".into(),
            reason: all.join("; "),
        };
    }
    let addrs: Vec<String> = errors
        .iter()
        .filter_map(|e| match e {
            ClientError::Connect { addr, .. } => Some(addr.clone()),
            _ => None,
        })
        .collect();
    let reasons: Vec<String> = errors
        .iter()
        .map(|e| match e {
            ClientError::Connect { reason, .. } => reason.clone(),
            other => other.to_string(),
        })
        .collect();
    let mut uniq = reasons.clone();
    uniq.dedup();
    ClientError::Connect {
        addr: addrs.join(","),
        reason: if uniq.len() == 1 {
            uniq.remove(0)
        } else {
            reasons.join("; ")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_are_checked() {
        assert_eq!(
            parse_bootstrap("a:1, b:2,,").ok(),
            Some(vec!["a:1".to_string(), "b:2".to_string()])
        );
        assert_eq!(
            parse_bootstrap("[::1]:9092").ok(),
            Some(vec!["[::1]:9092".to_string()])
        );
        for bad in [
            "", ",", "a", "a:", ":1", "a:0", "a:70000", "a:x", "::1:9092", "[]:1",
        ] {
            assert!(parse_bootstrap(bad).is_err(), "{bad}");
        }
        let e = parse_bootstrap("nope").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("invalid bootstrap server list 'nope': expected HOST:PORT[,HOST:PORT...]")
        );
        assert_eq!(join_host_port("::1", 9), "[::1]:9");
        assert_eq!(join_host_port("h", 9), "h:9");
    }

    #[tokio::test]
    async fn a_server_that_is_not_kafka_is_skipped() -> Result<()> {
        use crate::testing::{FakeBroker, Reply};
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};
        let junk = FakeBroker::start(vec![Reply::RawBody(vec![1, 2, 3])]).await;
        let mut av = ApiVersionsResponse::default();
        av.api_keys = [(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)]
            .iter()
            .map(|&(k, min, max)| {
                let mut v = ApiVersion::default();
                v.api_key = k as i16;
                v.min_version = min;
                v.max_version = max;
                v
            })
            .collect();
        let mut md = MetadataResponse::default();
        md.cluster_id = Some(StrBytes::from_static_str("real"));
        let real = FakeBroker::start(vec![
            Reply::Response(ResponseKind::ApiVersions(av)),
            Reply::Response(ResponseKind::Metadata(md)),
        ])
        .await;
        let c =
            Cluster::connect(ClientConfig::new(&format!("{},{}", junk.addr, real.addr))?).await?;
        assert_eq!(c.cluster_id(), Some("real"));
        Ok(())
    }

    #[test]
    fn connect_errors_of_several_servers_are_summarised() {
        let e = combine_connect_errors(vec![
            ClientError::Connect {
                addr: "a:1".into(),
                reason: "connection refused".into(),
            },
            ClientError::Connect {
                addr: "b:2".into(),
                reason: "connection refused".into(),
            },
        ]);
        assert_eq!(
            e.to_string(),
            "cannot connect to a:1,b:2: connection refused"
        );
    }
}
