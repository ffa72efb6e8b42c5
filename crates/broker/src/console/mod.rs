//! The web console at `/` on the HTTP listener (issue 14 item 5): pages rendered by the
//! server from templates compiled into the binary, a small embedded stylesheet and script,
//! nothing fetched from another host.
//!
//! - `GET /`: brokers and the controller quorum (DescribeCluster, DescribeQuorum).
//! - `GET /topics`: topics with partitions, log start and end offsets (Metadata,
//!   ListOffsets) and the size of the replicas hosted here.
//! - `GET /topics/{topic}`: partitions (leader, replicas, ISR, offsets, size), configs
//!   (DescribeConfigs) and the message browser's form.
//! - `GET /topics/{topic}/messages?partition=&from=offset|timestamp|earliest|latest&offset=
//!   &timestamp=&limit=&max_bytes=&format=auto|text|json|hex`: at most 100 records of one
//!   partition from one Fetch of at most 1 MiB, compressed batches inflated.
//! - `GET /groups`, `GET /groups/{group}`: groups (ListGroups, DescribeGroups), a group's
//!   members and assignment, committed offsets (OffsetFetch) and lag against the log end.
//!
//! - `GET /charts/throughput[?topic=]`: the throughput chart (inline SVG) of the broker or a
//!   topic from [`samples`], which the cluster and topic pages embed and their script redraws.
//! - `POST /topics`, `POST /topics/{topic}/delete`, `POST /topics/{topic}/partitions`,
//!   `POST /groups/{group}/reset`: the actions ([`actions`]), absent with `http.read.only`.
//!
//! Every read is a Kafka request answered by the dispatcher the Kafka listener uses
//! ([`api`]), so the console sees what a client sees, with the same limits. Every value a page
//! shows is escaped by the templates; every parameter is validated first ([`params`]), a bad
//! one is a 400 with a one-line reason.

pub mod actions;
pub mod api;
pub mod params;
pub mod records;
pub mod samples;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use maud::{Markup, html};

use crate::handlers::Ctx;
use crate::http::Observed;
use params::{BadParam, Browse, Params};

/// Most topics or groups one list page shows.
pub const MAX_LISTED: usize = 1000;

/// The console's state: the broker's handler context and whether actions are allowed.
#[derive(Debug)]
pub struct Console {
    ctx: Arc<Ctx>,
    read_only: bool,
    /// This process's form token: every action's form carries it (a cross-site form cannot
    /// know it).
    token: String,
    /// Recent samples of the byte counters, for the charts.
    samples: Arc<samples::Samples>,
}

impl Console {
    /// A console over the broker's handlers; `read_only` (`http.read.only`) removes actions.
    /// Starts the sampler task (on the current tokio runtime), which ends with the console.
    pub fn new(ctx: Arc<Ctx>, read_only: bool) -> Console {
        let samples = Arc::new(samples::Samples::default());
        samples::spawn_sampler(Arc::downgrade(&samples), Arc::clone(&ctx.metrics));
        Console {
            ctx,
            read_only,
            token: format!("{:032x}", rand::random::<u128>()),
            samples,
        }
    }

    fn chart(&self, topic: Option<&str>) -> Markup {
        let what = topic.map_or_else(|| "all topics".to_string(), |t| format!("topic {t}"));
        let src = match topic {
            None => "/charts/throughput".to_string(),
            Some(t) => format!("/charts/throughput?topic={}", params::percent_encode(t)),
        };
        html! {
            div.chart-box data-refresh=(src) { (samples::chart(&self.samples.rates(topic), &what)) }
        }
    }

    fn node_id(&self) -> i32 {
        self.ctx.meta.node_id
    }

    fn page(&self, title: &str, body: Markup) -> Response {
        html_response(view::page(self.node_id(), self.read_only, title, body))
    }
}

/// Why a page could not be shown: a status and a one-line reason.
#[derive(Debug)]
pub enum PageError {
    /// A parameter is wrong (400).
    Bad(String),
    /// No such topic or group (404).
    NotFound(String),
    /// The broker cannot answer now (503).
    Unavailable(String),
    /// An action that read-only mode or the cross-site check refuses (403).
    Forbidden(String),
    /// Another status, with its reason.
    Status(StatusCode, String),
}

impl From<BadParam> for PageError {
    fn from(e: BadParam) -> PageError {
        PageError::Bad(e.0)
    }
}

impl From<api::ApiError> for PageError {
    fn from(e: api::ApiError) -> PageError {
        PageError::Unavailable(e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (code, msg) = match self {
            PageError::Bad(m) => (StatusCode::BAD_REQUEST, m),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            PageError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            PageError::Status(code, m) => (code, m),
        };
        // One line, whatever the reason held.
        let line: String = msg.replace(['\r', '\n'], " ");
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{line}\n"),
        )
            .into_response()
    }
}

type PageResult = Result<Response, PageError>;

fn html_response(markup: Markup) -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(view::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn console(o: &Observed) -> Result<Arc<Console>, PageError> {
    o.console()
        .ok_or_else(|| PageError::Unavailable("the broker is still starting".into()))
}

/// The console's routes, merged into the HTTP listener's router.
pub fn routes() -> Router<Arc<Observed>> {
    Router::new()
        .route("/", get(cluster_page))
        .route("/topics", get(topics_page).post(actions::create_topic))
        .route("/topics/{topic}", get(topic_page))
        .route("/topics/{topic}/messages", get(messages_page))
        .route("/topics/{topic}/delete", post(actions::delete_topic))
        .route("/topics/{topic}/partitions", post(actions::add_partitions))
        .route("/groups", get(groups_page))
        .route("/groups/{group}", get(group_page))
        .route("/groups/{group}/reset", post(actions::reset_offsets))
        .route("/charts/throughput", get(throughput_chart))
        .route("/console/style.css", get(css))
        .route("/console/app.js", get(js))
        .route("/favicon.svg", get(icon))
        // What a browser asks for on its own (the chart fragment names no icon).
        .route("/favicon.ico", get(icon))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", view::CSS)
}

async fn icon() -> Response {
    asset("image/svg+xml", view::ICON)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", view::JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn throughput_chart(State(o): State<Arc<Observed>>, uri: Uri) -> PageResult {
    let p = Params::parse(uri.query(), &["topic"])?;
    let topic = p.get("topic").map(params::topic_name).transpose()?;
    let c = console(&o)?;
    let what = topic.map_or_else(|| "all topics".to_string(), |t| format!("topic {t}"));
    let mut r = html_response(samples::chart(&c.samples.rates(topic), &what));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn no_params(uri: &Uri) -> Result<(), PageError> {
    Params::parse(uri.query(), &[])?;
    Ok(())
}

// ------------------------------------------------------------------------- cluster

async fn cluster_page(State(o): State<Arc<Observed>>, uri: Uri) -> PageResult {
    no_params(&uri)?;
    let c = console(&o)?;
    let cluster = api::describe_cluster(&c.ctx).await?;
    let quorum = api::describe_quorum(&c.ctx).await?;
    let body = html! {
        h2 { "Throughput of this broker" }
        (c.chart(None))
        h2 { "Brokers" }
        @if cluster.error_code != 0 {
            p.error { "DescribeCluster: " (api::error_name(cluster.error_code)) }
        } @else {
            p { "Cluster id " code { (cluster.cluster_id.as_str()) } ", controller (as Kafka clients see it) broker " (cluster.controller_id.0) "." }
            table #brokers {
                tr { th.n { "id" } th { "host" } th.n { "port" } th { "rack" } th { "state" } }
                @for b in &cluster.brokers {
                    tr data-broker=(b.broker_id.0) {
                        td.n { (b.broker_id.0) }
                        td { (b.host.as_str()) }
                        td.n { (b.port) }
                        td { (b.rack.as_ref().map_or("—", |r| r.as_str())) }
                        td { @if b.is_fenced { span.error { "fenced" } } @else { "active" } }
                    }
                }
            }
        }
        h2 { "Controller quorum" }
        @if quorum.error_code != 0 {
            p.error { "DescribeQuorum: " (api::error_name(quorum.error_code)) }
        }
        @for t in &quorum.topics {
            @for p in &t.partitions {
                @if p.error_code != 0 {
                    p.error { "DescribeQuorum: " (api::error_name(p.error_code)) }
                } @else {
                    p #quorum { "Metadata log " code { (t.topic_name.0.as_str()) "-" (p.partition_index) } ": leader " (p.leader_id.0) ", epoch " (p.leader_epoch) ", high watermark " (p.high_watermark) "." }
                    table #voters {
                        tr { th { "role" } th.n { "node" } th.n { "log end offset" } th { "last fetch" } th { "last caught up" } }
                        @for (role, list) in [("voter", &p.current_voters), ("observer", &p.observers)] {
                            @for r in list {
                                tr {
                                    td { (role) @if r.replica_id == p.leader_id { " (leader)" } }
                                    td.n { (r.replica_id.0) }
                                    td.n { (r.log_end_offset) }
                                    td { (view::utc(r.last_fetch_timestamp)) }
                                    td { (view::utc(r.last_caught_up_timestamp)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(c.page("Cluster", body))
}

// -------------------------------------------------------------------------- topics

/// One partition as the topic pages show it.
#[derive(Debug)]
struct PartitionRow {
    index: i32,
    error: i16,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
    start: Result<i64, i16>,
    end: Result<i64, i16>,
    /// Bytes of this partition's log when a replica is hosted here.
    size: Option<u64>,
}

/// One topic as the topic pages show it.
#[derive(Debug)]
struct TopicRow {
    name: String,
    error: i16,
    internal: bool,
    partitions: Vec<PartitionRow>,
}

/// Metadata, ListOffsets (earliest and latest) and the local log sizes of `topics` (all when
/// `None`).
async fn topic_rows(c: &Console, topics: Option<&[&str]>) -> Result<Vec<TopicRow>, PageError> {
    let md = api::metadata(&c.ctx, topics).await?;
    let mut rows: Vec<TopicRow> = md
        .topics
        .iter()
        .take(MAX_LISTED)
        .map(|t| TopicRow {
            name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
            error: t.error_code,
            internal: t.is_internal,
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionRow {
                    index: p.partition_index,
                    error: p.error_code,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                    start: Err(-1),
                    end: Err(-1),
                    size: None,
                })
                .collect(),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    for r in &mut rows {
        r.partitions.sort_by_key(|p| p.index);
    }
    let wanted: Vec<(String, Vec<i32>)> = rows
        .iter()
        .filter(|t| t.error == 0)
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.index).collect(),
            )
        })
        .collect();
    let starts = api::list_offsets(&c.ctx, &wanted, api::EARLIEST).await?;
    let ends = api::list_offsets(&c.ctx, &wanted, api::LATEST).await?;
    // Log sizes have no Kafka request (DescribeLogDirs is not served): they are read as
    // /metrics reads them, each hosted log's lock taken briefly, off the async workers.
    let rm = Arc::clone(&c.ctx.rm);
    let names: Vec<String> = wanted.iter().map(|(t, _)| t.clone()).collect();
    let sizes = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for n in names {
            if let Some(t) = rm.topic(&n) {
                for p in t.local_partitions() {
                    out.insert((n.clone(), p.index), p.log().size_bytes());
                }
            }
        }
        out
    })
    .await
    .map_err(|_| PageError::Unavailable("the broker is shutting down".into()))?;
    for t in &mut rows {
        for p in &mut t.partitions {
            let key = (t.name.clone(), p.index);
            if let Some(v) = starts.get(&key) {
                p.start = v.map(|x| x.0);
            }
            if let Some(v) = ends.get(&key) {
                p.end = v.map(|x| x.0);
            }
            p.size = sizes.get(&key).copied();
        }
    }
    Ok(rows)
}

fn offset_cell(v: &Result<i64, i16>) -> Markup {
    match v {
        Ok(o) => html! { (o) },
        Err(code) => html! { span.error title=(api::error_name(*code)) { "n/a" } },
    }
}

async fn topics_page(State(o): State<Arc<Observed>>, uri: Uri) -> PageResult {
    no_params(&uri)?;
    let c = console(&o)?;
    let rows = topic_rows(&c, None).await?;
    let msg_rates = c.samples.messages_per_sec();
    let rated = c.samples.has_rates();
    let body = html! {
        p.muted { "Log end offsets are each partition's high watermark (ListOffsets latest), as consumers see it; sizes are of the replicas hosted on this broker; messages in per second are this broker's, over the last " (samples::INTERVAL.as_secs()) " s." }
        table #topics {
            tr { th { "topic" } th.n { "partitions" } th.n { "records" } th.n { "size here" } th.n { "messages in/s" } th { "end offsets (partition: offset)" } }
            @for t in &rows {
                @let records: i64 = t.partitions.iter().map(|p| match (p.start, p.end) { (Ok(s), Ok(e)) => (e - s).max(0), _ => 0 }).sum();
                @let sized: Vec<u64> = t.partitions.iter().filter_map(|p| p.size).collect();
                tr data-topic=(t.name) data-partitions=(t.partitions.len()) {
                    td { a href={ "/topics/" (params::percent_encode(&t.name)) } { (t.name) } @if t.internal { " (internal)" } }
                    @if t.error != 0 {
                        td.error colspan="5" { (api::error_name(t.error)) }
                    } @else {
                        td.n { (t.partitions.len()) }
                        td.n { (records) }
                        td.n { @if sized.is_empty() { "—" } @else { (view::size(sized.iter().sum())) } }
                        td.n.rate { @if rated { (format!("{:.1}", msg_rates.get(&t.name).copied().unwrap_or(0.0))) } @else { "—" } }
                        td.ends {
                            @for p in &t.partitions {
                                span.end data-partition=(p.index) { (p.index) ": " (offset_cell(&p.end)) } " "
                            }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p { "No topics." } }
        @if !c.read_only { (actions::create_topic_form(&c)) }
        @if rows.len() >= MAX_LISTED { p.muted { "The first " (MAX_LISTED) " topics are shown." } }
    };
    Ok(c.page("Topics", body))
}

async fn topic_page(
    State(o): State<Arc<Observed>>,
    Path(topic): Path<String>,
    uri: Uri,
) -> PageResult {
    no_params(&uri)?;
    let topic = params::topic_name(&topic)?.to_string();
    let c = console(&o)?;
    let rows = topic_rows(&c, Some(&[topic.as_str()])).await?;
    let Some(t) = rows.into_iter().next().filter(|t| t.error != 3) else {
        return Err(PageError::NotFound(format!("no topic '{topic}'")));
    };
    if t.error != 0 {
        return Err(PageError::Unavailable(format!(
            "topic '{topic}': {}",
            api::error_name(t.error)
        )));
    }
    let configs = api::topic_configs(&c.ctx, &topic).await?;
    let browse = Browse::parse(&Params::default())?;
    let body = html! {
        h2 { "Partitions" }
        (partition_table(&t))
        h2 { "Throughput on this broker" }
        (c.chart(Some(&topic)))
        @if !c.read_only { (actions::topic_forms(&c, &topic, t.partitions.len())) }
        h2 { "Messages" }
        (browse_form(&t, &browse))
        h2 { "Configs" }
        @for r in &configs.results {
            @if r.error_code != 0 {
                p.error { "DescribeConfigs: " (api::error_name(r.error_code)) @if let Some(m) = &r.error_message { " " (m.as_str()) } }
            } @else {
                table #configs {
                    tr { th { "name" } th { "value" } th { "source" } }
                    @for e in &r.configs {
                        tr data-config=(e.name.as_str()) {
                            td { code { (e.name.as_str()) } }
                            td { @if e.is_sensitive { span.muted { "(sensitive)" } } @else { (e.value.as_ref().map_or("", |v| v.as_str())) } }
                            td.muted { (config_source(e.config_source)) }
                        }
                    }
                }
            }
        }
    };
    Ok(c.page(&format!("Topic {topic}"), body))
}

fn config_source(s: i8) -> &'static str {
    match s {
        1 => "topic",
        2 => "dynamic broker",
        3 => "dynamic default broker",
        4 => "static broker",
        5 => "default",
        6 => "dynamic broker logger",
        _ => "unknown",
    }
}

fn partition_table(t: &TopicRow) -> Markup {
    html! {
        table #partitions {
            tr { th.n { "partition" } th.n { "leader" } th.n { "epoch" } th { "replicas" } th { "ISR" } th { "offline" } th.n { "log start" } th.n { "log end" } th.n { "size here" } }
            @for p in &t.partitions {
                tr data-partition=(p.index) {
                    td.n { (p.index) }
                    td.n { @if p.leader < 0 { span.error { "none" } } @else { (p.leader) } }
                    td.n { (p.leader_epoch) }
                    td { (view::ids(&p.replicas)) }
                    td { (view::ids(&p.isr)) }
                    td { (view::ids(&p.offline)) }
                    td.n.start { (offset_cell(&p.start)) }
                    td.n.end { (offset_cell(&p.end)) }
                    td.n { (p.size.map_or_else(|| "—".to_string(), view::size)) }
                }
                @if p.error != 0 {
                    tr { td.error colspan="9" { (api::error_name(p.error)) } }
                }
            }
        }
    }
}

fn browse_form(t: &TopicRow, b: &Browse) -> Markup {
    let (from, offset, timestamp) = match b.from {
        params::From::Offset(o) => ("offset", o.to_string(), String::new()),
        params::From::Timestamp(ts) => ("timestamp", String::new(), ts.to_string()),
        params::From::Earliest => ("earliest", String::new(), String::new()),
        params::From::Latest => ("latest", String::new(), String::new()),
    };
    html! {
        form.panel method="get" action={ "/topics/" (params::percent_encode(&t.name)) "/messages" } {
            label { "partition"
                select name="partition" {
                    @for p in &t.partitions {
                        option value=(p.index) selected[p.index == b.partition] { (p.index) }
                    }
                }
            }
            label { "from"
                select #from name="from" {
                    @for f in ["earliest", "latest", "offset", "timestamp"] {
                        option value=(f) selected[f == from] { (f) }
                    }
                }
            }
            label data-from="offset" { "offset" input type="number" name="offset" min="0" value=(offset); }
            label data-from="timestamp" { "timestamp (ms, UTC)" input #timestamp type="number" name="timestamp" min="0" value=(timestamp); }
            label data-from="timestamp" { "or pick (UTC)" input #when type="datetime-local" step="1"; }
            label { "records (max " (params::MAX_RECORDS) ")" input type="number" name="limit" min="1" max=(params::MAX_RECORDS) value=(b.limit); }
            label { "max bytes" input type="number" name="max_bytes" min=(params::MIN_FETCH_BYTES) max=(params::MAX_FETCH_BYTES) value=(b.max_bytes); }
            label { "show as"
                select name="format" {
                    @for f in ["auto", "text", "json", "hex"] {
                        option value=(f) selected[f == b.format_name()] { (f) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

async fn messages_page(
    State(o): State<Arc<Observed>>,
    Path(topic): Path<String>,
    uri: Uri,
) -> PageResult {
    let topic = params::topic_name(&topic)?.to_string();
    let browse = Browse::parse(&Params::parse(uri.query(), params::BROWSE_PARAMS)?)?;
    let c = console(&o)?;
    let rows = topic_rows(&c, Some(&[topic.as_str()])).await?;
    let Some(t) = rows.into_iter().next().filter(|t| t.error == 0) else {
        return Err(PageError::NotFound(format!("no topic '{topic}'")));
    };
    let Some(part) = t.partitions.iter().find(|p| p.index == browse.partition) else {
        return Err(PageError::Bad(format!(
            "topic '{topic}' has no partition {}",
            browse.partition
        )));
    };
    // Where to start, as a consumer would find it: ListOffsets.
    let start = match browse.from {
        params::From::Offset(o) => Ok(o),
        params::From::Earliest => part.start,
        params::From::Latest => part
            .end
            .map(|e| (e - browse.limit as i64).max(part.start.unwrap_or(0))),
        params::From::Timestamp(ts) => {
            let found = api::list_offsets(&c.ctx, &[(topic.clone(), vec![part.index])], ts).await?;
            match found.get(&(topic.clone(), part.index)) {
                // No record at or after the timestamp: the log end (nothing to show).
                Some(Ok((o, _))) if *o >= 0 => Ok(*o),
                Some(Ok(_)) => part.end,
                Some(Err(code)) => Err(*code),
                None => Err(-1),
            }
        }
    };
    let outcome: Result<(Vec<records::Shown>, i64, i64), String> = match start {
        Err(code) => Err(format!("ListOffsets: {}", api::error_name(code))),
        Ok(start) => {
            let resp = api::fetch(&c.ctx, &topic, part.index, start, browse.max_bytes).await?;
            let pd = resp.responses.first().and_then(|t| t.partitions.first());
            match pd {
                None => Err("Fetch: empty answer".into()),
                Some(pd) if pd.error_code != 0 => Err(format!(
                    "Fetch from offset {start}: {}{}",
                    api::error_name(pd.error_code),
                    if pd.current_leader.leader_id.0 >= 0 && pd.error_code == 6 {
                        format!(" (the leader is broker {})", pd.current_leader.leader_id.0)
                    } else {
                        String::new()
                    }
                )),
                Some(pd) => {
                    let set = pd.records.clone().unwrap_or_default();
                    records::decode(&set, start, browse.limit)
                        .map(|rs| (rs, start, pd.high_watermark))
                }
            }
        }
    };
    let base = format!("/topics/{}/messages", params::percent_encode(&topic));
    let body = html! {
        p { a href={ "/topics/" (params::percent_encode(&topic)) } { "← topic " (topic) } }
        (browse_form(&t, &browse))
        @match &outcome {
            Err(e) => { p.error #browse-error { (e) } }
            Ok((recs, start, hw)) => {
                p #browse-summary {
                    "Partition " (part.index) ", from offset " (start) ": " (recs.len()) " record(s); high watermark " (hw) "."
                }
                @if !recs.is_empty() {
                    table #records {
                        tr { th.n { "offset" } th { "timestamp (UTC)" } th { "key" } th { "value" } th { "headers" } th { "batch codec" } }
                        @for r in recs {
                            tr.record data-offset=(r.offset) {
                                td.n { (r.offset) }
                                td { (view::utc(r.timestamp)) }
                                td.key { (bytes_cell(r.key.as_deref(), browse.format)) }
                                td.value { (bytes_cell(r.value.as_deref(), browse.format)) }
                                td.headers {
                                    @for (k, v) in &r.headers {
                                        div.header {
                                            (bytes_cell(Some(k), params::Format::Text)) " = " (bytes_cell(v.as_deref(), browse.format))
                                        }
                                    }
                                }
                                td.muted { (r.codec) }
                            }
                        }
                    }
                }
                @if let Some(last) = recs.last() {
                    @if last.offset + 1 < *hw {
                        p { a #next href={ (base) "?partition=" (part.index) "&from=offset&offset=" (last.offset + 1) "&limit=" (browse.limit) "&max_bytes=" (browse.max_bytes) "&format=" (browse.format_name()) } { "next records →" } }
                    }
                }
            }
        }
    };
    Ok(c.page(&format!("Messages of {topic}"), body))
}

fn bytes_cell(b: Option<&[u8]>, format: params::Format) -> Markup {
    match b {
        None => html! { span.muted { "null" } },
        Some(b) => {
            let (kind, text) = records::show_bytes(b, format);
            html! { pre data-kind=(kind) { (text) } }
        }
    }
}

// -------------------------------------------------------------------------- groups

async fn groups_page(State(o): State<Arc<Observed>>, uri: Uri) -> PageResult {
    no_params(&uri)?;
    let c = console(&o)?;
    let listed = api::list_groups(&c.ctx).await?;
    let mut ids: Vec<String> = listed
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    ids.sort();
    ids.truncate(MAX_LISTED);
    let described = api::describe_groups(&c.ctx, &ids).await?;
    let body = html! {
        @if listed.error_code != 0 {
            p.error { "ListGroups: " (api::error_name(listed.error_code)) }
        }
        p.muted { "Groups coordinated by this broker (a group's coordinator is the leader of its __consumer_offsets partition)." }
        table #groups {
            tr { th { "group" } th { "state" } th { "protocol type" } th { "protocol" } th.n { "members" } }
            @for g in &described.groups {
                tr data-group=(g.group_id.0.as_str()) {
                    td { a href={ "/groups/" (params::percent_encode(g.group_id.0.as_str())) } { (g.group_id.0.as_str()) } }
                    @if g.error_code != 0 {
                        td.error colspan="4" { (api::error_name(g.error_code)) }
                    } @else {
                        td { (g.group_state.as_str()) }
                        td { (g.protocol_type.as_str()) }
                        td { (g.protocol_data.as_str()) }
                        td.n { (g.members.len()) }
                    }
                }
            }
        }
        @if described.groups.is_empty() { p { "No groups." } }
    };
    Ok(c.page("Consumer groups", body))
}

/// A consumer member's assignment (ConsumerProtocolAssignment, its version first).
fn assignment(protocol_type: &str, raw: &bytes::Bytes) -> Result<Vec<(String, Vec<i32>)>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if protocol_type != "consumer" {
        return Err(format!("{} bytes ({protocol_type} protocol)", raw.len()));
    }
    let mut buf = raw.clone();
    if buf.remaining() < 2 {
        return Err("malformed assignment".into());
    }
    // A newer version keeps the older fields first (Kafka's rule for the consumer protocol).
    let version = buf.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version)
        .map_err(|_| "malformed assignment".to_string())?;
    Ok(a.assigned_partitions
        .into_iter()
        .map(|tp| (tp.topic.0.to_string(), tp.partitions))
        .collect())
}

/// One committed partition with its lag.
#[derive(Debug)]
struct Committed {
    topic: String,
    partition: i32,
    offset: i64,
    end: Result<i64, i16>,
}

impl Committed {
    fn lag(&self) -> Option<i64> {
        match self.end {
            Ok(e) if self.offset >= 0 => Some((e - self.offset).max(0)),
            _ => None,
        }
    }
}

async fn group_page(
    State(o): State<Arc<Observed>>,
    Path(group): Path<String>,
    uri: Uri,
) -> PageResult {
    no_params(&uri)?;
    let group = params::group_id(&group)?.to_string();
    let c = console(&o)?;
    let described = api::describe_groups(&c.ctx, std::slice::from_ref(&group)).await?;
    let Some(g) = described.groups.into_iter().next() else {
        return Err(PageError::Unavailable(
            "DescribeGroups: empty answer".into(),
        ));
    };
    if g.error_code != 0 {
        return Err(PageError::Unavailable(format!(
            "group '{group}': {}",
            api::error_name(g.error_code)
        )));
    }
    let fetched = api::offset_fetch(&c.ctx, &group).await?;
    if g.group_state.as_str() == "Dead" && fetched.topics.is_empty() {
        return Err(PageError::NotFound(format!("no group '{group}'")));
    }
    let mut committed: Vec<Committed> = Vec::new();
    for t in &fetched.topics {
        for p in &t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                committed.push(Committed {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    end: Err(-1),
                });
            }
        }
    }
    committed.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for x in &committed {
        wanted.entry(x.topic.clone()).or_default().push(x.partition);
    }
    let wanted: Vec<(String, Vec<i32>)> = wanted.into_iter().collect();
    let ends = api::list_offsets(&c.ctx, &wanted, api::LATEST).await?;
    for x in &mut committed {
        if let Some(v) = ends.get(&(x.topic.clone(), x.partition)) {
            x.end = v.map(|e| e.0);
        }
    }
    let total: i64 = committed.iter().filter_map(Committed::lag).sum();
    let committed_topics: Vec<String> = wanted.iter().map(|(t, _)| t.clone()).collect();
    let body = html! {
        p #group-state { "State " strong { (g.group_state.as_str()) } ", protocol type " (g.protocol_type.as_str()) ", protocol " (g.protocol_data.as_str()) ", " (g.members.len()) " member(s)." }
        @if fetched.error_code != 0 {
            p.error { "OffsetFetch: " (api::error_name(fetched.error_code)) }
        }
        h2 { "Members" }
        @if g.members.is_empty() { p { "No members." } } @else {
            table #members {
                tr { th { "member" } th { "instance" } th { "client id" } th { "host" } th { "assignment" } }
                @for m in &g.members {
                    tr {
                        td { code { (m.member_id.as_str()) } }
                        td { (m.group_instance_id.as_ref().map_or("—", |i| i.as_str())) }
                        td { (m.client_id.as_str()) }
                        td { (m.client_host.as_str()) }
                        td {
                            @match assignment(g.protocol_type.as_str(), &m.member_assignment) {
                                Ok(a) if a.is_empty() => { span.muted { "none" } }
                                Ok(a) => { @for (t, ps) in &a { div { (t) ": " (view::ids(ps)) } } }
                                Err(e) => { span.muted { (e) } }
                            }
                        }
                    }
                }
            }
        }
        @if !c.read_only {
            @if g.members.is_empty() {
                h2 { "Reset offsets" }
                (actions::reset_form(&c, &group, &committed_topics))
            } @else {
                p.muted #reset-unavailable { "Offsets can be reset once the group has no members." }
            }
        }
        h2 { "Committed offsets and lag" }
        p #total-lag data-lag=(total) { "Total lag " strong { (total) } "." }
        table #offsets {
            tr { th { "topic" } th.n { "partition" } th.n { "committed" } th.n { "log end" } th.n { "lag" } }
            @for x in &committed {
                tr data-topic=(x.topic) data-partition=(x.partition) {
                    td { a href={ "/topics/" (params::percent_encode(&x.topic)) } { (x.topic) } }
                    td.n { (x.partition) }
                    td.n.committed { (x.offset) }
                    td.n { (offset_cell(&x.end)) }
                    td.n.lag { @match x.lag() { Some(l) => { (l) }, None => { "—" } } }
                }
            }
        }
    };
    Ok(c.page(&format!("Group {group}"), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_errors_are_one_line_with_their_status() {
        let r = PageError::Bad("limit must be\nbetween 1 and 100".into()).into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = PageError::NotFound("x".into()).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn assignments_decode_and_garbage_is_reported() {
        use kafka_protocol::protocol::Encodable;
        let mut a = ConsumerProtocolAssignment::default();
        let mut tp =
            kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default();
        tp.topic = api::tn("t");
        tp.partitions = vec![0, 2];
        a.assigned_partitions = vec![tp];
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        a.encode(&mut buf, 1).expect("encode");
        let got = assignment("consumer", &buf.freeze()).expect("decodes");
        assert_eq!(got, vec![("t".to_string(), vec![0, 2])]);
        assert!(assignment("consumer", &bytes::Bytes::from_static(b"\x00\x01\xff")).is_err());
        assert!(assignment("connect", &bytes::Bytes::from_static(b"abc")).is_err());
        assert_eq!(
            assignment("consumer", &bytes::Bytes::new()).expect("empty"),
            vec![]
        );
    }
}
