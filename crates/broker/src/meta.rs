//! Node identity and the single-node topic catalogue kept in the data directory.
//!
//! `meta.properties` names the cluster and node a data directory belongs to. The single-node
//! release's catalogue (`vltava-topics.json`) is only read, to migrate it into the metadata log.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Failure to set up or persist node metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Filesystem failure, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// A metadata file exists but cannot be understood.
    #[error("{path}: {reason}")]
    Corrupt {
        /// Path involved.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Identity of this node, from `meta.properties` (Kafka's format).
#[derive(Debug, Clone)]
pub struct NodeMeta {
    /// Cluster id (22-character base64 of a UUID, as Kafka generates).
    pub cluster_id: String,
    /// Node id.
    pub node_id: i32,
}

/// Reads `meta.properties`: `None` on a node's first start.
pub fn load_meta(dir: &Path, node_id: i32) -> Result<Option<NodeMeta>, MetaError> {
    let path = dir.join("meta.properties");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let props: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let corrupt = |reason: &str| MetaError::Corrupt {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let cluster_id = props
        .get("cluster.id")
        .filter(|id| valid_cluster_id(id))
        .ok_or_else(|| corrupt("missing or invalid cluster.id"))?
        .to_string();
    let stored: i32 = props
        .get("node.id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt("missing or invalid node.id"))?;
    if stored != node_id {
        return Err(corrupt(&format!(
            "data directory belongs to node {stored}, not node {node_id}"
        )));
    }
    Ok(Some(NodeMeta {
        cluster_id,
        node_id,
    }))
}

/// Writes `meta.properties` for a node's first start.
pub fn create_meta(dir: &Path, node_id: i32, cluster_id: &str) -> Result<NodeMeta, MetaError> {
    let path = dir.join("meta.properties");
    let text = format!(
        "#Written by vltava on first start\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
    );
    vltava_storage::atomic_write(&path, text.as_bytes()).map_err(io_err(&path))?;
    Ok(NodeMeta {
        cluster_id: cluster_id.to_string(),
        node_id,
    })
}

/// A new cluster id, as Kafka's `kafka-storage random-uuid` makes them.
pub fn random_cluster_id() -> String {
    base64_url_uuid(Uuid::new_v4())
}

/// The cluster id every node of a statically configured quorum derives from the same
/// `controller.quorum.voters`, so that N nodes started with the same flags agree on it
/// without a separate formatting step. The voters are taken sorted by id, so the order
/// they were written in does not matter.
pub fn derived_cluster_id(voters: &BTreeMap<i32, String>) -> String {
    let mut name = String::from("vltava-cluster:");
    for (id, addr) in voters {
        name.push_str(&format!("{id}@{addr},"));
    }
    base64_url_uuid(Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()))
}

/// A cluster id is 1 to 64 characters of URL-safe base64's alphabet (Kafka's are 22).
pub fn valid_cluster_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Kafka prints UUIDs as URL-safe base64 without padding (22 characters).
pub fn base64_url_uuid(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize] as char);
    }
    out
}

/// One topic in the catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: i32,
    /// Config overrides.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogueFile {
    topics: Vec<TopicRecord>,
    #[serde(default)]
    next_producer_id: i64,
}

/// The single-node release's catalogue (`vltava-topics.json`): topics and the producer id
/// high-water mark. Read once, to migrate it into the metadata log.
#[derive(Debug)]
pub struct Catalogue {
    file: CatalogueFile,
}

impl Catalogue {
    /// Loads `vltava-topics.json`, or starts empty.
    pub fn load(dir: &Path) -> Result<Catalogue, MetaError> {
        let path = dir.join("vltava-topics.json");
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => CatalogueFile::default(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(Catalogue { file })
    }

    /// All topics.
    pub fn topics(&self) -> &[TopicRecord] {
        &self.file.topics
    }

    /// The first producer id not yet handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.file.next_producer_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_properties_created_once() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(load_meta(dir.path(), 1).expect("none yet").is_none());
        let a = create_meta(dir.path(), 1, &random_cluster_id()).expect("create");
        let b = load_meta(dir.path(), 1).expect("load").expect("written");
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.cluster_id.len(), 22);
        assert!(load_meta(dir.path(), 2).is_err());
    }

    #[test]
    fn derived_cluster_id_ignores_voter_order_only() {
        let a: BTreeMap<i32, String> = [(2, "h:2".to_string()), (1, "h:1".to_string())].into();
        let b: BTreeMap<i32, String> = [(1, "h:1".to_string()), (2, "h:2".to_string())].into();
        let c: BTreeMap<i32, String> = [(1, "h:1".to_string()), (2, "h:3".to_string())].into();
        assert_eq!(derived_cluster_id(&a), derived_cluster_id(&b));
        assert_ne!(derived_cluster_id(&a), derived_cluster_id(&c));
        assert_eq!(derived_cluster_id(&a).len(), 22);
        assert!(valid_cluster_id(&derived_cluster_id(&a)));
        assert!(!valid_cluster_id(""));
        assert!(!valid_cluster_id("a b"));
    }

    #[test]
    fn catalogue_reads_the_single_node_format() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("vltava-topics.json"),
            r#"{"topics":[{"name":"t","id":"5a3e9f8e-6a43-4b7e-9d8c-0a1b2c3d4e5f","partitions":2,"configs":{"retention.ms":"1000"}}],"next_producer_id":2000}"#,
        )
        .expect("write");
        let c = Catalogue::load(dir.path()).expect("load");
        assert_eq!(c.topics().len(), 1);
        assert_eq!(c.topics()[0].partitions, 2);
        assert_eq!(
            c.topics()[0]
                .configs
                .get("retention.ms")
                .map(String::as_str),
            Some("1000")
        );
        assert_eq!(c.next_producer_id(), 2000);
    }
}
