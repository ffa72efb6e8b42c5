//! The HTTP listener inside `vltava serve` (`http.listen`, 127.0.0.1:8092 by default): health
//! for process supervisors and orchestrators, and `/metrics` for Prometheus.
//!
//! - `GET /health/live`: 200 while the process answers.
//! - `GET /health/ready`: 200 once the logs are recovered, this broker is registered and
//!   unfenced with the committed metadata applied, and the Kafka listener serves; 503 with the
//!   reason otherwise (also while shutting down).
//! - `GET /metrics`: [`crate::metrics::BrokerMetrics`] in the Prometheus text format.
//! - `/` and the pages under it: the web console ([`crate::console`]).
//!
//! It binds before the logs are opened, so a supervisor sees the process live (and not ready)
//! through a long recovery. Everything is bounded: connections (excess ones are closed at
//! once), time to send the request head, time per request, a connection's lifetime, request
//! head and body sizes. The routes are axum's; connections are driven by hyper from our own
//! accept loop, which is what lets the connection count and lifetime be bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::groups::GroupManager;
use crate::metrics::BrokerMetrics;
use crate::replica::ReplicaManager;

/// Open HTTP connections at most; one more is closed as soon as it is accepted.
const MAX_CONNECTIONS: usize = 64;
/// Longest a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one request may take to be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection is closed (after its current request) when it is this old.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// How long a closing connection may take to finish its request before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Largest request head hyper buffers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (the endpoints take none).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configured address could not be bound.
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// How far the broker's start has come, as `/health/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Opening (and recovering) the partition logs.
    RecoveringLogs = 0,
    /// Logs open; registering with the controller and applying the committed metadata.
    JoiningCluster = 1,
    /// Registered and unfenced; the Kafka listener is not serving yet.
    StartingListener = 2,
    /// Serving clients.
    Serving = 3,
    /// Shutting down.
    ShuttingDown = 4,
}

impl Stage {
    fn from_u8(v: u8) -> Stage {
        match v {
            0 => Stage::RecoveringLogs,
            1 => Stage::JoiningCluster,
            2 => Stage::StartingListener,
            3 => Stage::Serving,
            _ => Stage::ShuttingDown,
        }
    }
}

/// What the HTTP endpoints read: the start stage, the metrics, and the broker once it runs.
#[derive(Debug)]
pub struct Observed {
    stage: AtomicU8,
    /// The broker's counters.
    pub metrics: Arc<BrokerMetrics>,
    broker: OnceLock<(Arc<ReplicaManager>, Arc<Cluster>)>,
    groups: OnceLock<Arc<GroupManager>>,
    console: OnceLock<Arc<crate::console::Console>>,
}

impl Observed {
    /// A broker that has just begun to start.
    pub fn new(metrics: Arc<BrokerMetrics>) -> Observed {
        Observed {
            stage: AtomicU8::new(Stage::RecoveringLogs as u8),
            metrics,
            broker: OnceLock::new(),
            groups: OnceLock::new(),
            console: OnceLock::new(),
        }
    }

    /// Moves the start on to `stage`.
    pub fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Release);
    }

    /// The stage the broker is in.
    pub fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Acquire))
    }

    /// Makes the running broker's state visible to `/metrics` and `/health/ready`.
    pub fn set_broker(&self, rm: Arc<ReplicaManager>, cluster: Arc<Cluster>) {
        let _ = self.broker.set((rm, cluster));
    }

    /// Makes the group coordinator's committed offsets visible to `/metrics`.
    pub fn set_groups(&self, groups: Arc<GroupManager>) {
        let _ = self.groups.set(groups);
    }

    /// Makes the web console's pages answer (before this they answer 503).
    pub fn set_console(&self, console: Arc<crate::console::Console>) {
        let _ = self.console.set(console);
    }

    /// The web console, once the broker runs.
    pub fn console(&self) -> Option<Arc<crate::console::Console>> {
        self.console.get().cloned()
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        match self.stage() {
            Stage::RecoveringLogs => Err("recovering logs"),
            Stage::JoiningCluster => {
                Err("registering with the controller and applying the committed metadata")
            }
            Stage::StartingListener => Err("starting the Kafka listener"),
            Stage::ShuttingDown => Err("shutting down"),
            Stage::Serving => match self.broker.get() {
                Some((_, cluster)) if cluster.is_fenced() => Err("fenced by the controller"),
                _ => Ok(()),
            },
        }
    }

    fn render_metrics(&self) -> Result<String, std::fmt::Error> {
        let view = self.broker.get().map(|(rm, c)| (&**rm, &**c));
        self.metrics.render(view, self.groups.get().map(|g| &**g))
    }
}

/// A running HTTP listener; dropping it stops the listener.
#[derive(Debug)]
pub struct HttpServer {
    /// The address bound.
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// Stops accepting and waits (bounded) for open requests to be answered.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // A broker that fails to start drops its listener here: nothing keeps the port.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `http.listen` and serves it. `Ok(None)`: no listener (`none`, or the default address
/// could not be bound: several brokers on one machine with default settings must still start,
/// and only the first gets the port). An address that was set and cannot be bound is an error.
pub async fn start(
    config: &BrokerConfig,
    observed: Arc<Observed>,
) -> Result<Option<HttpServer>, HttpError> {
    let Some(addr) = config.http_listen() else {
        return Ok(None);
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(source) if !config.is_explicit("http.listen") => {
            // Worded without the OS error text, which harnesses look for to retry a start
            // whose Kafka port was taken.
            let reason = if source.kind() == std::io::ErrorKind::AddrInUse {
                "the port is taken".to_string()
            } else {
                source.to_string()
            };
            tracing::warn!(
                addr,
                reason,
                "HTTP listener off: the default http.listen address cannot be bound (set --http-listen HOST:PORT, or none)"
            );
            return Ok(None);
        }
        Err(source) => {
            return Err(HttpError::Bind {
                addr: addr.to_string(),
                source,
            });
        }
    };
    let local_addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, router(observed), rx));
    tracing::info!(http = %local_addr, "HTTP listener started (/health/live, /health/ready, /metrics, console at /)");
    Ok(Some(HttpServer {
        local_addr,
        shutdown,
        task: Some(task),
    }))
}

/// The routes, with the per-request bounds.
pub fn router(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::console::routes())
        .layer(axum::middleware::from_fn(bounded))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(observed)
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(observed): State<Arc<Observed>>) -> Response {
    match observed.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(observed): State<Arc<Observed>>) -> Response {
    // A scrape takes every hosted log's lock in turn and reads /proc: off the async threads.
    let rendered = tokio::task::spawn_blocking(move || observed.render_metrics()).await;
    match rendered {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
        }
        Ok(Err(_)) | Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n",
        )
            .into_response(),
    }
}

/// Refuses a declared body over the limit before anything reads it, and bounds the time a
/// request may take.
async fn bounded(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
    }
}

/// Accepts connections until `shutdown` flips, at most [`MAX_CONNECTIONS`] at once.
async fn serve(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::debug!(%peer, "HTTP connection limit reached, closing new connection");
                    continue;
                };
                let service = TowerToHyperService::new(router.clone());
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    connection(stream, service, shutdown).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    let drain = tokio::time::timeout(CLOSE_GRACE, async {
        while tasks.join_next().await.is_some() {}
    });
    if drain.await.is_err() {
        tasks.abort_all();
    }
}

/// Serves one connection (HTTP/1.1 with keep-alive) until the client closes it, its lifetime
/// ends or the listener stops; then lets the request in progress finish within
/// [`CLOSE_GRACE`].
async fn connection(
    stream: tokio::net::TcpStream,
    service: TowerToHyperService<Router>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(CONNECTION_LIFETIME);
    tokio::pin!(deadline);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = &mut deadline => {
                if closing {
                    return;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    fn config(addr: &str) -> BrokerConfig {
        let mut c = BrokerConfig::default();
        c.set("http.listen", addr).expect("valid");
        c
    }

    #[tokio::test]
    async fn health_follows_the_start_stages_and_metrics_render() {
        let observed = Arc::new(Observed::new(Arc::new(BrokerMetrics::new())));
        let server = start(&config("127.0.0.1:0"), Arc::clone(&observed))
            .await
            .expect("bind")
            .expect("a listener");
        let addr = server.local_addr;
        assert_eq!(get(addr, "/health/live").await.0, 200);
        let (code, body) = get(addr, "/health/ready").await;
        assert_eq!((code, body.as_str()), (503, "not ready: recovering logs\n"));
        observed.set_stage(Stage::JoiningCluster);
        assert_eq!(get(addr, "/health/ready").await.0, 503);
        observed.set_stage(Stage::Serving);
        assert_eq!(get(addr, "/health/ready").await, (200, "ready\n".into()));
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("# TYPE kafka_server_brokertopicmetrics_bytesin_total counter"),
            "{body}"
        );
        assert_eq!(get(addr, "/nothing").await.0, 404);
        observed.set_stage(Stage::ShuttingDown);
        assert_eq!(get(addr, "/health/ready").await.0, 503);
        server.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_declared_body_over_the_limit_is_refused() {
        let observed = Arc::new(Observed::new(Arc::new(BrokerMetrics::new())));
        let server = start(&config("127.0.0.1:0"), observed)
            .await
            .expect("bind")
            .expect("a listener");
        let mut s = tokio::net::TcpStream::connect(server.local_addr)
            .await
            .expect("connect");
        let req = format!(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    }

    #[tokio::test]
    async fn a_taken_port_fails_only_when_it_was_configured() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let observed = Arc::new(Observed::new(Arc::new(BrokerMetrics::new())));
        let err = start(&config(&addr), Arc::clone(&observed)).await;
        assert!(matches!(err, Err(HttpError::Bind { .. })), "{err:?}");
        let none = start(&config("none"), observed).await.expect("no listener");
        assert!(none.is_none());
    }
}
