//! Topics: what one is, which are the broker's own, valid names, and the catalogue changes
//! (create, delete, grow, reconfigure) that ReplicaManager applies to them.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use vltava_storage::StorageError;

use super::{Partition, ReplicaManager, lock_log};
use crate::meta::{MetaError, TopicRecord};

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Partitions in index order.
    pub partitions: Vec<Arc<Partition>>,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// Topics the broker owns: hidden from topic listings, not writable or deletable by clients.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

impl Topic {
    /// True for the broker's own topics.
    pub fn is_internal(&self) -> bool {
        INTERNAL_TOPICS.contains(&self.name.as_str())
    }
}

/// Why a topic operation failed, in terms the handlers map to error codes.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Name already taken.
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    /// No such topic.
    #[error("topic '{0}' does not exist")]
    Unknown(String),
    /// Illegal topic name.
    #[error("{0}")]
    InvalidName(String),
    /// Bad partition count.
    #[error("{0}")]
    InvalidPartitions(String),
    /// Bad replication factor.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// Bad config.
    #[error("{0}")]
    InvalidConfig(String),
    /// Users may not touch this topic this way.
    #[error("{0}")]
    NotAllowed(String),
    /// Internal topics cannot be deleted by clients.
    #[error("topic '{0}' is internal and cannot be deleted")]
    Internal(String),
    /// Storage failure.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Catalogue failure.
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::InvalidName("topic name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(TopicError::InvalidName(format!(
            "topic name '{name}' is not allowed"
        )));
    }
    if name.len() > 249 {
        return Err(TopicError::InvalidName(
            "topic name is longer than 249 characters".into(),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(TopicError::InvalidName(format!(
            "topic name '{name}' contains characters other than [a-zA-Z0-9._-]"
        )));
    }
    Ok(())
}

impl ReplicaManager {
    /// Creates a topic. `validate_only` checks everything without creating.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.num_partitions()
        } else {
            partitions
        };
        if partitions <= 0 {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions must be positive, got {partitions}"
            )));
        }
        let replication_factor = if replication_factor == -1 {
            self.config.default_replication_factor()
        } else {
            replication_factor
        };
        if replication_factor != 1 {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is larger than the 1 available broker"
            )));
        }
        for (k, v) in &configs {
            crate::config::validate_topic_setting(k, v)
                .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        }
        // Serialise creations through the catalogue lock so two creators cannot race.
        let mut catalogue = self.lock_catalogue();
        if self.topic(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        let collides = self
            .all_topics()
            .iter()
            .any(|t| t.name.replace('.', "_") == name.replace('.', "_"));
        if collides {
            return Err(TopicError::InvalidName(format!(
                "topic '{name}' collides with an existing topic ('.' and '_' are equivalent in metric names)"
            )));
        }
        let id = Uuid::new_v4();
        let topic = self.build_topic(name, id, partitions, configs, 0, &[])?;
        if validate_only {
            return Ok(topic);
        }
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id,
            partitions,
            configs: topic.configs.clone(),
        })?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    fn build_topic(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        existing: i32,
        keep: &[Arc<Partition>],
    ) -> Result<Arc<Topic>, TopicError> {
        let log_config = self.config.log_config(&configs);
        let mut parts: Vec<Arc<Partition>> = keep.to_vec();
        let logs = self.lock_logs();
        for p in existing..partitions {
            let log = logs.create_log(name, p, log_config.clone())?;
            lock_log(&log).set_topic_id(&id.to_string())?;
            parts.push(Arc::new(Partition::new(p, 0, log)));
        }
        Ok(Arc::new(Topic {
            name: name.to_string(),
            id,
            partitions: parts,
            configs,
        }))
    }

    /// Creates one of the broker's internal topics if it does not exist yet. Its settings are
    /// the broker's choice, so they skip the validation applied to clients' settings.
    pub fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let mut catalogue = self.lock_catalogue();
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let id = Uuid::new_v4();
        let topic = self.build_topic(name, id, partitions, configs, 0, &[])?;
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id,
            partitions,
            configs: topic.configs.clone(),
        })?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created internal topic");
        Ok(topic)
    }

    /// Creates a topic on first use if the broker allows it.
    pub fn auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(t) = self.topic(name) {
            return Ok(Some(t));
        }
        if !self.config.auto_create_topics() {
            return Ok(None);
        }
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Ok(t) => Ok(Some(t)),
            Err(TopicError::AlreadyExists(_)) => Ok(self.topic(name)),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic and its files.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        if !self.config.delete_topic_enable() {
            return Err(TopicError::NotAllowed(
                "topic deletion is disabled (delete.topic.enable=false)".into(),
            ));
        }
        let mut catalogue = self.lock_catalogue();
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        if topic.is_internal() {
            return Err(TopicError::Internal(name.to_string()));
        }
        catalogue.remove(name)?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        for p in &topic.partitions {
            p.wake_waiters();
        }
        self.lock_logs().delete_topic(name)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Raises a topic's partition count.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut catalogue = self.lock_catalogue();
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic currently has {current} partitions, {count} would not be an increase"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let new = self.build_topic(
            name,
            topic.id,
            count,
            topic.configs.clone(),
            current,
            &topic.partitions,
        )?;
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id: topic.id,
            partitions: count,
            configs: topic.configs.clone(),
        })?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), new);
        Ok(())
    }

    /// Replaces (or, with `incremental`, merges into) a topic's config overrides.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        incremental: bool,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut catalogue = self.lock_catalogue();
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut configs = if incremental {
            topic.configs.clone()
        } else {
            BTreeMap::new()
        };
        for (k, v) in changes {
            match v {
                Some(v) => {
                    crate::config::validate_topic_setting(k, v)
                        .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
                    configs.insert(k.clone(), v.clone());
                }
                None => {
                    if !crate::config::topic_setting_names().any(|n| n == k) {
                        return Err(TopicError::InvalidConfig(format!("unknown setting '{k}'")));
                    }
                    configs.remove(k);
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        catalogue.put(TopicRecord {
            name: name.to_string(),
            id: topic.id,
            partitions: topic.partitions.len() as i32,
            configs: configs.clone(),
        })?;
        let log_config = self.config.log_config(&configs);
        for p in &topic.partitions {
            p.log().set_config(log_config.clone());
        }
        let new = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            configs,
        });
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
