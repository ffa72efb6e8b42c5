//! The native producer, built like the Java client's.
//!
//! - [`Producer::send`] serializes the key and value ([`Serializer`]), picks the partition
//!   (explicit, else `toPositive(murmur2(key)) % partitions`, else sticky for keyless records),
//!   and appends the record to its partition's open batch in the accumulator, waiting up to
//!   `max.block.ms` for the topic's metadata and for room in `buffer.memory`. It then waits for
//!   the record's [`RecordMetadata`]. [`Producer::enqueue`] stops after the append and returns
//!   a [`DeliveryFuture`], so one task can keep many records in flight (records enqueued one
//!   after another keep their order); [`Producer::enqueue_with_callback`] calls a closure
//!   instead.
//! - A sender task (`sender.rs`) drains ready batches (`batch.size`, `linger.ms`), groups them
//!   per leader into one Produce request, pipelines up to
//!   `max.in.flight.requests.per.connection` requests per connection and retries retriable
//!   errors with backoff, refreshing metadata after NOT_LEADER_OR_FOLLOWER and
//!   UNKNOWN_TOPIC_OR_PARTITION, within `delivery.timeout.ms`.
//! - Idempotence is on by default (InitProducerId, a sequence number per partition): retries
//!   neither duplicate nor reorder records.
//! - Batches are written by our own record batch v2 writer (`batch.rs`) and compressed per
//!   batch (`compression.type`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vltava_client::producer::ProducerError> {
//! use vltava_client::producer::{Producer, ProducerConfig, ProducerRecord};
//! let producer = Producer::connect(ProducerConfig::new("127.0.0.1:9092")?).await?;
//! let md = producer
//!     .send(ProducerRecord::new("events", "hello".into()).with_key("k1".into()))
//!     .await?;
//! println!("partition {} offset {}", md.partition, md.offset);
//! producer.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Known limits: no transactions; a batch refused as MESSAGE_TOO_LARGE fails rather than being
//! split; a sequence gap after a batch fails for good is healed by bumping the producer epoch,
//! after which a batch whose earlier attempt did reach the broker may be written twice (the
//! Java client has the same limit).

mod accumulator;
mod batch;
mod config;
mod conn;
mod error;
mod metadata;
mod partitioner;
mod sender;
mod serializer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{Acks, ProducerConfig, compression_name, parse_compression};
pub use error::ProducerError;
pub use partitioner::{murmur2, partition_for_key, to_positive};
pub use serializer::{BytesSerializer, JsonSerializer, Serializer, StringSerializer};
pub use vltava_protocol::batch::Compression;

use accumulator::{Accumulator, Delivery, DeliveryResult, NewRecord};
use metadata::{ControlSettings, SharedMetadata};
use serializer::serialize_part;

/// A record header: a name and an optional value (repeated names are allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value; `None` is a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Header {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone)]
pub struct ProducerRecord<K, V> {
    /// Topic.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Key; `None` is a null key.
    pub key: Option<K>,
    /// Value; `None` is a null value (with a key: a tombstone).
    pub value: Option<V>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Create time in ms since the epoch; `None` takes the time of `send`.
    pub timestamp: Option<i64>,
}

impl<K, V> ProducerRecord<K, V> {
    /// A keyless record with `value` for `topic`.
    pub fn new(topic: impl Into<String>, value: V) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: K) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the value (`None`: null value).
    pub fn with_value(mut self, value: Option<V>) -> Self {
        self.value = value;
        self
    }

    /// Sends to this partition.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the create time (ms since the epoch).
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition.
    pub partition: i32,
    /// Offset; -1 with `acks=0`.
    pub offset: i64,
    /// The record's timestamp: its create time (or the broker's append time for topics
    /// with `message.timestamp.type=LogAppendTime`).
    pub timestamp: i64,
}

/// The outcome of one enqueued record.
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<DeliveryResult>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProducerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Err(ProducerError::Fatal("the sender task stopped".into())))
        })
    }
}

/// State shared by the producer handles, the sender and the control task.
pub(crate) struct Shared {
    pub config: ProducerConfig,
    pub idempotent: bool,
    pub acc: Mutex<Accumulator>,
    /// `buffer.memory`, in bytes.
    pub memory: Semaphore,
    /// Sends waiting for `buffer.memory`: every batch is then ready.
    pub memory_waiters: AtomicUsize,
    /// Wakes the sender (a batch opened or filled, flush, close).
    pub wake: Notify,
    /// Batches completed (for flush).
    pub flushed: Notify,
    pub metadata: Arc<SharedMetadata>,
    /// Set when the producer cannot go on (no producer id).
    pub fatal: Mutex<Option<ProducerError>>,
    /// True once `fatal` is set or closing began: lets every send check with one load.
    pub unusable: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn lock_acc(&self) -> MutexGuard<'_, Accumulator> {
        self.acc.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin_close(&self) {
        self.lock_acc().closing = true;
        self.unusable.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Records that the producer cannot go on.
    pub(crate) fn set_fatal(&self, e: ProducerError) {
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        self.unusable.store(true, Ordering::Release);
    }

    fn check_usable(&self) -> Result<(), ProducerError> {
        if !self.unusable.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(e) = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(e);
        }
        if self.lock_acc().closing {
            return Err(ProducerError::Closed);
        }
        Ok(())
    }

    /// Reserves `size` bytes of `buffer.memory`, waiting until `deadline`; true if it had to
    /// wait.
    async fn reserve(&self, size: usize, deadline: Instant) -> Result<bool, ProducerError> {
        let n = u32::try_from(size).unwrap_or(u32::MAX);
        match self.memory.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                return Ok(false);
            }
            Err(TryAcquireError::Closed) => return Err(ProducerError::Closed),
            Err(TryAcquireError::NoPermits) => {}
        }
        self.memory_waiters.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        let r = tokio::time::timeout_at(deadline.into(), self.memory.acquire_many(n)).await;
        self.memory_waiters.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok(Ok(p)) => {
                p.forget();
                Ok(true)
            }
            Ok(Err(_)) => Err(ProducerError::Closed),
            Err(_) => Err(ProducerError::Timeout(format!(
                "no room for a record of {size} bytes in buffer.memory ({} bytes) after {} ms",
                self.config.buffer_memory,
                self.config.max_block.as_millis()
            ))),
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sender finishes what was accepted in the background (while the runtime runs).
        self.shared.begin_close();
    }
}

/// An asynchronous producer; cheap to clone (handles share one sender task). Dropping the
/// last handle closes it in the background; call [`Producer::close`] to wait until every
/// accepted record has its answer.
pub struct Producer<K = Bytes, V = Bytes> {
    inner: Arc<Inner>,
    key_serializer: Arc<dyn Serializer<K>>,
    value_serializer: Arc<dyn Serializer<V>>,
}

impl<K, V> Clone for Producer<K, V> {
    fn clone(&self) -> Self {
        Producer {
            inner: Arc::clone(&self.inner),
            key_serializer: Arc::clone(&self.key_serializer),
            value_serializer: Arc::clone(&self.value_serializer),
        }
    }
}

impl<K, V> std::fmt::Debug for Producer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("idempotent", &self.inner.shared.idempotent)
            .finish_non_exhaustive()
    }
}

impl Producer<Bytes, Bytes> {
    /// A producer of raw bytes: connects to the bootstrap servers (failing if none answers)
    /// and starts the sender task on the current tokio runtime.
    pub async fn connect(config: ProducerConfig) -> Result<Producer<Bytes, Bytes>, ProducerError> {
        Producer::with_serializers(config, BytesSerializer, BytesSerializer).await
    }
}

impl<K, V> Producer<K, V> {
    /// A producer with these key and value serializers.
    pub async fn with_serializers(
        config: ProducerConfig,
        key_serializer: impl Serializer<K> + 'static,
        value_serializer: impl Serializer<V> + 'static,
    ) -> Result<Producer<K, V>, ProducerError> {
        let idempotent = config.validate()?;
        let mut client = config.client.clone();
        client.connection.request_timeout = config.request_timeout;
        let cluster = crate::cluster::Cluster::connect(client).await?;
        let memory = config.buffer_memory.min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            idempotent,
            acc: Mutex::new(Accumulator::new(config.batch_size)),
            memory: Semaphore::new(memory),
            memory_waiters: AtomicUsize::new(0),
            wake: Notify::new(),
            flushed: Notify::new(),
            metadata: Arc::new(SharedMetadata::new()),
            fatal: Mutex::new(None),
            unusable: AtomicBool::new(false),
            config,
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let settings = ControlSettings {
            max_age: shared.config.metadata_max_age,
            retry_backoff: shared.config.retry_backoff,
            retry_backoff_max: shared.config.retry_backoff_max,
            auto_create: shared.config.allow_auto_create_topics,
        };
        tokio::spawn(metadata::run_control(
            cluster,
            Arc::clone(&shared.metadata),
            cmd_rx,
            events_tx.clone(),
            settings,
        ));
        let sender = sender::Sender::new(Arc::clone(&shared), events_rx, events_tx, cmd_tx);
        let handle = tokio::spawn(sender.run());
        Ok(Producer {
            inner: Arc::new(Inner {
                shared,
                sender: Mutex::new(Some(handle)),
            }),
            key_serializer: Arc::new(key_serializer),
            value_serializer: Arc::new(value_serializer),
        })
    }

    /// Whether this producer is idempotent (`enable.idempotence` and the settings it needs).
    pub fn is_idempotent(&self) -> bool {
        self.inner.shared.idempotent
    }

    /// The settings in force.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.shared.config
    }

    /// The partition count of `topic`, waiting up to `max.block.ms` for its metadata (and
    /// letting the broker create it if allowed), like the Java client's `partitionsFor`.
    pub async fn partition_count(&self, topic: &str) -> Result<i32, ProducerError> {
        let shared = &self.inner.shared;
        let max_block = shared.config.max_block;
        let (info, _) = shared
            .metadata
            .wait_for_topic(topic, Instant::now() + max_block, max_block)
            .await?;
        Ok(info.count)
    }

    /// Sends `record` and waits for its acknowledgement: its partition, offset and timestamp.
    pub async fn send(
        &self,
        record: ProducerRecord<K, V>,
    ) -> Result<RecordMetadata, ProducerError> {
        self.enqueue(record).await?.await
    }

    /// Accepts `record` into its batch (waiting up to `max.block.ms` for metadata and buffer
    /// room) and returns a future of its acknowledgement. Records enqueued one after another
    /// reach their partition in that order.
    pub async fn enqueue(
        &self,
        record: ProducerRecord<K, V>,
    ) -> Result<DeliveryFuture, ProducerError> {
        let (tx, rx) = oneshot::channel();
        self.append(record, Delivery::Future(tx)).await?;
        Ok(DeliveryFuture(rx))
    }

    /// Like [`Producer::enqueue`], with `callback` called with the outcome instead. Callbacks
    /// run on the sender task: keep them short.
    pub async fn enqueue_with_callback(
        &self,
        record: ProducerRecord<K, V>,
        callback: impl FnOnce(Result<RecordMetadata, ProducerError>) + Send + 'static,
    ) -> Result<(), ProducerError> {
        self.append(record, Delivery::Callback(Box::new(callback)))
            .await
    }

    async fn append(
        &self,
        record: ProducerRecord<K, V>,
        delivery: Delivery,
    ) -> Result<(), ProducerError> {
        let shared = &self.inner.shared;
        shared.check_usable()?;
        let cfg = &shared.config;
        let start = Instant::now();
        let deadline = start + cfg.max_block;
        let topic = record.topic.as_str();
        let key = serialize_part(&*self.key_serializer, topic, record.key.as_ref(), "key")?;
        let value = serialize_part(
            &*self.value_serializer,
            topic,
            record.value.as_ref(),
            "value",
        )?;

        let (info, metadata_waited) = shared
            .metadata
            .wait_for_topic(topic, deadline, cfg.max_block)
            .await?;
        if let Some(p) = record.partition
            && (p < 0 || p >= info.count)
        {
            return Err(ProducerError::InvalidRecord(format!(
                "partition {p} of topic '{topic}' does not exist (it has {} partition{})",
                info.count,
                if info.count == 1 { "" } else { "s" }
            )));
        }
        let size = batch::record_size_bound(key.as_deref(), value.as_deref(), &record.headers);
        if size + vltava_protocol::batch::HEADER_LEN > cfg.max_request_size {
            return Err(ProducerError::RecordTooLarge {
                size,
                max: cfg.max_request_size,
                setting: "max.request.size",
            });
        }
        if size > cfg.buffer_memory {
            return Err(ProducerError::RecordTooLarge {
                size,
                max: cfg.buffer_memory,
                setting: "buffer.memory",
            });
        }
        let waited = shared.reserve(size, deadline).await?;
        // Reading the clock is measurable at a million records a second: reuse `start` unless
        // a wait for buffer memory made it stale.
        let now = if waited || metadata_waited {
            Instant::now()
        } else {
            start
        };
        let appended = {
            let mut acc = shared.lock_acc();
            if acc.closing {
                drop(acc);
                shared.memory.add_permits(size);
                return Err(ProducerError::Closed);
            }
            let timestamp = record.timestamp.unwrap_or_else(|| acc.wall_ms(now, now_ms));
            acc.append(
                topic,
                &info,
                NewRecord {
                    partition: record.partition,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers: &record.headers,
                    timestamp,
                    reserved: size,
                },
                delivery,
                now,
            )
        };
        if appended.new_batch || appended.full {
            shared.wake.notify_one();
        }
        Ok(())
    }

    /// Makes every batch accepted so far ready at once and waits until all of them have
    /// their answer (records accepted meanwhile are not waited for).
    pub async fn flush(&self) {
        let shared = &self.inner.shared;
        let target = {
            let mut acc = shared.lock_acc();
            let target = acc.next_batch_id();
            acc.flush_upto = acc.flush_upto.max(target);
            target
        };
        shared.wake.notify_one();
        loop {
            let notified = shared.flushed.notified();
            let done = shared
                .lock_acc()
                .incomplete
                .first()
                .is_none_or(|id| *id >= target);
            if done {
                return;
            }
            notified.await;
        }
    }

    /// Stops accepting records, sends everything accepted and waits until every record has
    /// its answer (success, or failure after `delivery.timeout.ms`). Later sends fail with
    /// [`ProducerError::Closed`].
    pub async fn close(&self) {
        self.inner.shared.begin_close();
        let handle = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match handle {
            // The task only ends by finishing; a panic in it has nothing left to wait for.
            Some(h) => {
                let _ = h.await;
            }
            None => self.flush().await,
        }
    }

    /// Waits (at most `timeout`) for the sender task to finish after [`Producer::close`];
    /// for tests and tools that want to be sure it is gone.
    pub async fn close_timeout(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.close()).await.is_ok()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
