//! Node identity and the single-node topic catalogue kept in the data directory.
//!
//! Until the controller quorum exists, this node is its own controller: topic names, ids,
//! partition counts and config overrides live in `vltava-topics.json`, written atomically.

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

/// Reads `meta.properties`, creating it on first start.
pub fn load_or_create_meta(dir: &Path, node_id: i32) -> Result<NodeMeta, MetaError> {
    let path = dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
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
                .ok_or_else(|| corrupt("missing cluster.id"))?
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
            Ok(NodeMeta {
                cluster_id,
                node_id,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let cluster_id = base64_url_uuid(Uuid::new_v4());
            let text = format!(
                "#Written by vltava on first start\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
            );
            vltava_storage::atomic_write(&path, text.as_bytes()).map_err(io_err(&path))?;
            Ok(NodeMeta {
                cluster_id,
                node_id,
            })
        }
        Err(e) => Err(io_err(&path)(e)),
    }
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
        let a = load_or_create_meta(dir.path(), 1).expect("create");
        let b = load_or_create_meta(dir.path(), 1).expect("load");
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.cluster_id.len(), 22);
        assert!(load_or_create_meta(dir.path(), 2).is_err());
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
