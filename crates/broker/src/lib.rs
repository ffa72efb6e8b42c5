//! The Vltava broker: binds the listener, opens the partition logs, serves the Kafka protocol,
//! and runs the background work (retention, checkpoints) until shutdown.

pub mod cluster;
pub mod config;
pub mod console;
pub mod disk;
pub mod errors;
pub mod group;
pub mod group_handlers;
pub mod groups;
pub mod handlers;
pub mod http;
pub mod meta;
pub mod metrics;
pub mod offsets;
pub mod replica;
mod sendout;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cluster::ControllerNode;
pub use config::BrokerConfig;

/// Failure to start the broker.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Data directory, lock or node metadata problem.
    #[error("{0}")]
    Meta(#[from] meta::MetaError),
    /// Logs could not be opened.
    #[error("{0}")]
    Topic(#[from] replica::TopicError),
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Group state could not be loaded.
    #[error("consumer group state: {0}")]
    Groups(groups::GroupStoreError),
    /// The data directory exists but cannot be written.
    #[error("data directory {path} is not writable: {source}")]
    DataDirNotWritable {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The advertised listener is not HOST:PORT.
    #[error("advertised listener '{0}' is not HOST:PORT")]
    Advertised(String),
    /// Joining the metadata quorum failed.
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
    /// The HTTP listener could not start.
    #[error("{0}")]
    Http(#[from] http::HttpError),
}

/// A started broker.
#[derive(Debug)]
pub struct Broker {
    /// Address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// The HTTP listener's address, when it runs.
    pub http_addr: Option<SocketAddr>,
    http: Option<http::HttpServer>,
    observed: Arc<http::Observed>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    background: tokio::task::JoinHandle<()>,
    timers: tokio::task::JoinHandle<()>,
    ownership: tokio::task::JoinHandle<()>,
    heartbeats: tokio::task::JoinHandle<()>,
    publisher: tokio::task::JoinHandle<()>,
    fetchers: tokio::task::JoinHandle<()>,
    isr_changes: tokio::task::JoinHandle<()>,
    rm: Arc<replica::ReplicaManager>,
    cluster: Arc<cluster::Cluster>,
}

fn split_host_port(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), i32::from(port)))
}

impl Broker {
    /// Opens the data directory (recovering every log) and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        let dir = config.data_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        // A read-only or otherwise unwritable directory is reported here, with its path, rather
        // than as the first failing file operation deep inside recovery.
        let probe = dir.join(".vltava-write-probe");
        std::fs::write(&probe, b"probe")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|source| StartError::DataDirNotWritable {
                path: dir.display().to_string(),
                source,
            })?;
        let started = std::time::Instant::now();
        let metrics = Arc::new(metrics::BrokerMetrics::new());
        let observed = Arc::new(http::Observed::new(Arc::clone(&metrics)));
        // Before recovery, so that a supervisor sees the process live (not ready) meanwhile.
        let http = http::start(&config, Arc::clone(&observed)).await?;
        let http_addr = http.as_ref().map(|h| h.local_addr);
        // Opening the logs takes the data directory lock and runs recovery.
        let rm = Arc::new(tokio::task::block_in_place(|| {
            replica::ReplicaManager::open(config.clone())
        })?);
        observed.set_stage(http::Stage::JoiningCluster);
        let node = cluster::resolve_node_meta(&config).await?;
        let listener =
            TcpListener::bind(config.listen())
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen().to_string(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen().to_string(),
            source,
        })?;
        // With port 0 and no explicit advertised listener, advertise the bound port.
        let advertised = if config
            .get("advertised.listener")
            .is_some_and(|a| !a.is_empty())
        {
            config.advertised_listener().to_string()
        } else {
            local_addr.to_string()
        };
        let (host, port) = split_host_port(&advertised)
            .ok_or_else(|| StartError::Advertised(advertised.clone()))?;
        let controller_listener = match config.controller_listen() {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| StartError::Bind {
                            addr: addr.to_string(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let cluster = cluster::Cluster::start(
            &config,
            &node,
            Arc::clone(&rm),
            (host.clone(), port as u16),
            controller_listener,
        )
        .await?;
        observed.set_broker(Arc::clone(&rm), Arc::clone(&cluster));
        observed.set_stage(http::Stage::StartingListener);
        tracing::info!(
            topics = rm.all_topics().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "logs opened and metadata applied"
        );
        let c = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || c.ensure_offsets_topic(true))
            .await
            .map_err(|e| StartError::Groups(groups::GroupStoreError::Encode(e.to_string())))?
            .map_err(|e| StartError::Groups(e.into()))?;
        let groups = Arc::new(
            tokio::task::block_in_place(|| groups::GroupManager::open(Arc::clone(&rm)))
                .map_err(StartError::Groups)?,
        );
        observed.set_groups(Arc::clone(&groups));
        let ctx = Arc::new(handlers::Ctx {
            rm: Arc::clone(&rm),
            meta: node.clone(),
            host,
            port,
            groups: Arc::clone(&groups),
            cluster: Arc::clone(&cluster),
            metrics,
        });
        observed.set_console(Arc::new(console::Console::new(
            Arc::clone(&ctx),
            config.http_read_only(),
        )));
        let (shutdown, rx) = watch::channel(false);
        let heartbeats = tokio::spawn(Arc::clone(&cluster).run_heartbeats(rx.clone()));
        let publisher = tokio::spawn(Arc::clone(&cluster).run_publisher(rx.clone()));
        let server = tokio::spawn(server::serve(listener, ctx, rx.clone()));
        let background = tokio::spawn(background(Arc::clone(&rm), Arc::clone(&groups), rx.clone()));
        let c = Arc::clone(&cluster);
        let fetchers = tokio::spawn(replica::run_replica_fetchers(
            Arc::clone(&rm),
            Arc::new(move || c.broker_epoch()),
            rx.clone(),
        ));
        let isr_changes = tokio::spawn(Arc::clone(&cluster).run_isr_changes(rx.clone()));
        let ownership = tokio::spawn(Arc::clone(&groups).run_ownership(rx.clone()));
        let timers = tokio::spawn(Arc::clone(&groups).run_timers(rx));
        observed.set_stage(http::Stage::Serving);
        let http_shown = http_addr.map_or_else(|| "none".to_string(), |a| a.to_string());
        tracing::info!(
            listen = %local_addr,
            advertised = %advertised,
            http = %http_shown,
            node_id = node.node_id,
            cluster_id = %node.cluster_id,
            data_dir = %dir.display(),
            "vltava broker started"
        );
        Ok(Broker {
            local_addr,
            http_addr,
            http,
            observed,
            shutdown,
            server,
            background,
            timers,
            ownership,
            heartbeats,
            publisher,
            fetchers,
            isr_changes,
            rm,
            cluster,
        })
    }

    /// Stops accepting, lets in-flight requests finish, flushes every log and writes the
    /// checkpoints.
    pub async fn shutdown(mut self) -> Result<(), vltava_storage::StorageError> {
        // Orchestrators stop sending clients here first; /health/live answers until the end.
        self.observed.set_stage(http::Stage::ShuttingDown);
        let _ = self.shutdown.send(true);
        self.cluster.stop_requests();
        let _ = self.server.await;
        let _ = self.background.await;
        let _ = self.timers.await;
        let _ = self.ownership.await;
        let _ = self.heartbeats.await;
        // Leaderships move away in the controlled shutdown; until then this node's followers
        // keep copying and its leaders keep proposing ISR changes.
        self.cluster.shutdown().await;
        let _ = self.publisher.await;
        let _ = self.fetchers.await;
        let _ = self.isr_changes.await;
        let rm = Arc::clone(&self.rm);
        tokio::task::spawn_blocking(move || rm.shutdown())
            .await
            .unwrap_or_else(|e| Err(vltava_storage::StorageError::Io(std::io::Error::other(e))))?;
        if let Some(http) = self.http.take() {
            http.stop().await;
        }
        tracing::info!("vltava broker stopped cleanly");
        Ok(())
    }
}

async fn background(
    rm: Arc<replica::ReplicaManager>,
    groups: Arc<groups::GroupManager>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut expiry_tick = tokio::time::interval(Duration::from_millis(
        rm.config().offsets_retention_check_interval_ms(),
    ));
    expiry_tick.tick().await;
    let mut cleaner_tick =
        tokio::time::interval(Duration::from_millis(rm.config().cleaner_backoff_ms()));
    cleaner_tick.tick().await;
    let retention = Duration::from_millis(rm.config().retention_check_interval_ms());
    let checkpoint = Duration::from_millis(rm.config().checkpoint_interval_ms());
    let mut retention_tick = tokio::time::interval(retention);
    let mut checkpoint_tick = tokio::time::interval(checkpoint);
    // flush.ms is checked once a second; appends check it too.
    let mut flush_tick = tokio::time::interval(Duration::from_secs(1));
    retention_tick.tick().await;
    checkpoint_tick.tick().await;
    flush_tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = retention_tick.tick() => {
                let rm = Arc::clone(&rm);
                let _ = tokio::task::spawn_blocking(move || rm.apply_retention()).await;
            }
            _ = cleaner_tick.tick() => {
                let rm = Arc::clone(&rm);
                let _ = tokio::task::spawn_blocking(move || rm.clean_all()).await;
            }
            _ = expiry_tick.tick() => {
                let groups = Arc::clone(&groups);
                let _ = tokio::task::spawn_blocking(move || groups.expire_offsets()).await;
            }
            _ = flush_tick.tick() => {
                let rm = Arc::clone(&rm);
                let _ = tokio::task::spawn_blocking(move || rm.maybe_flush_all()).await;
            }
            _ = checkpoint_tick.tick() => {
                let rm = Arc::clone(&rm);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || rm.checkpoint()).await {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
            }
        }
    }
}
