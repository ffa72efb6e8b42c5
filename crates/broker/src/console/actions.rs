//! The console's actions: create topic, delete topic, add partitions, reset a group's offsets.
//! Each is an HTML form POST that becomes the Kafka request a client would send
//! (CreateTopics, DeleteTopics, CreatePartitions, OffsetCommit) answered by the same
//! dispatcher, so a cluster forwards it to the active controller or refuses it at the group
//! coordinator exactly as for the Kafka API.
//!
//! Every POST is refused (403) when `http.read.only` is set, and otherwise must come from a
//! page of this console: its Origin (or, without one, its Referer) must name the Host it was
//! sent to, and it must carry this process's form token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, GroupId,
    OffsetCommitRequest, RequestKind, ResponseKind,
};
use maud::{Markup, html};

use super::api::{self, ApiError, s, tn};
use super::params::{self, BadParam, Params};
use super::{Console, PageError, PageResult, console};
use crate::http::Observed;

const CREATE_TOPICS_VERSION: i16 = 7;
const DELETE_TOPICS_VERSION: i16 = 6;
const CREATE_PARTITIONS_VERSION: i16 = 3;
const OFFSET_COMMIT_VERSION: i16 = 7;
/// The `timeout_ms` the admin requests carry, as a client's would. The handlers do not read it
/// today; what bounds an action is the HTTP listener's 10 s per request, after which the page
/// answers 503 "request timed out" while the change, already on its way to the controller,
/// may still be applied.
const ADMIN_TIMEOUT_MS: i32 = 8_000;
/// Most partitions a topic may be given from the console.
pub const MAX_PARTITIONS: i64 = 10_000;
/// Most partitions one offset reset may name.
const MAX_RESET_PARTITIONS: usize = 10_000;

/// The authority (`host[:port]`) of an absolute http(s) URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Refuses a cross-site POST: Origin (else Referer) must name the Host the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let text = |name| {
        headers
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().map_err(|_| ()))
    };
    let host = match text(header::HOST) {
        Some(Ok(h)) if !h.is_empty() => h,
        _ => return Err("cross-site check: the request has no Host".into()),
    };
    let (what, source) = match (text(header::ORIGIN), text(header::REFERER)) {
        (Some(Ok(o)), _) => ("Origin", o),
        (Some(Err(())), _) => return Err("cross-site check: unreadable Origin".into()),
        (None, Some(Ok(r))) => ("Referer", r),
        _ => {
            return Err("cross-site check: the request has neither Origin nor Referer".into());
        }
    };
    match authority(source) {
        Some(a) if a.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(format!(
            "cross-site check: {what} is not this console ({host})"
        )),
    }
}

/// The checks every action passes first: not read-only, same origin, this process's token.
fn admit(c: &Console, headers: &HeaderMap, form: &Params) -> Result<(), PageError> {
    if c.read_only {
        return Err(PageError::Forbidden(
            "the console is read-only (http.read.only)".into(),
        ));
    }
    same_origin(headers).map_err(PageError::Forbidden)?;
    match form.get("token") {
        Some(t) if t == c.token => Ok(()),
        _ => Err(PageError::Forbidden(
            "cross-site check: the form token is missing or not this process's".into(),
        )),
    }
}

fn form(headers: &HeaderMap, body: &str, allowed: &[&str]) -> Result<Params, PageError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(PageError::Bad(
            "expected a form (application/x-www-form-urlencoded)".into(),
        ));
    }
    Ok(Params::parse(Some(body), allowed)?)
}

/// The first failed item of an admin answer (its code and message), as [`kafka_error`].
fn first_error<'a>(
    what: &str,
    items: impl IntoIterator<Item = (i16, Option<&'a str>)>,
) -> Result<(), PageError> {
    match items.into_iter().find(|(code, _)| *code != 0) {
        Some((code, message)) => Err(kafka_error(what, code, message)),
        None => Ok(()),
    }
}

/// A Kafka error code as the console answers it.
fn kafka_error(what: &str, code: i16, message: Option<&str>) -> PageError {
    let status = match code {
        36 => StatusCode::CONFLICT,  // TOPIC_ALREADY_EXISTS
        3 => StatusCode::NOT_FOUND,  // UNKNOWN_TOPIC_OR_PARTITION
        73 => StatusCode::FORBIDDEN, // TOPIC_DELETION_DISABLED
        17 | 37 | 38 | 39 | 40 | 42 | 44 => StatusCode::BAD_REQUEST,
        25 | 22 | 27 => StatusCode::CONFLICT, // UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut line = format!("{what}: {}", api::error_name(code));
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        line.push_str(": ");
        line.push_str(m);
    }
    PageError::Status(status, line)
}

async fn call(c: &Console, version: i16, req: RequestKind) -> Result<ResponseKind, ApiError> {
    api::call(&c.ctx, version, req).await
}

fn topic_url(topic: &str) -> String {
    format!("/topics/{}", params::percent_encode(topic))
}

// ----------------------------------------------------------------------------- topics

/// `POST /topics`: name, partitions, replication_factor (empty: the broker's default).
pub async fn create_topic(
    State(o): State<Arc<Observed>>,
    headers: HeaderMap,
    body: String,
) -> PageResult {
    let c = console(&o)?;
    let f = form(
        &headers,
        &body,
        &["token", "name", "partitions", "replication_factor"],
    )?;
    admit(&c, &headers, &f)?;
    let name = params::topic_name(f.get("name").unwrap_or(""))?.to_string();
    let partitions = f.int("partitions", 1, MAX_PARTITIONS, 1)? as i32;
    let rf = f.int("replication_factor", 1, i64::from(i16::MAX), -1)? as i16;
    let mut t = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    t.name = tn(&name);
    t.num_partitions = partitions;
    t.replication_factor = rf;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = ADMIN_TIMEOUT_MS;
    let ResponseKind::CreateTopics(resp) =
        call(&c, CREATE_TOPICS_VERSION, RequestKind::CreateTopics(req)).await?
    else {
        return Err(ApiError::Unexpected.into());
    };
    first_error(
        &format!("create topic '{name}'"),
        resp.topics
            .iter()
            .map(|r| (r.error_code, r.error_message.as_deref())),
    )?;
    Ok(Redirect::to(&topic_url(&name)).into_response())
}

/// `POST /topics/{topic}/delete`: `confirm` must repeat the topic's name.
pub async fn delete_topic(
    State(o): State<Arc<Observed>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: String,
) -> PageResult {
    let c = console(&o)?;
    let topic = params::topic_name(&topic)?.to_string();
    let f = form(&headers, &body, &["token", "confirm"])?;
    admit(&c, &headers, &f)?;
    if f.get("confirm") != Some(topic.as_str()) {
        return Err(PageError::Bad(
            "confirm must repeat the name of the topic to delete".into(),
        ));
    }
    let mut d = kafka_protocol::messages::delete_topics_request::DeleteTopicState::default();
    d.name = Some(tn(&topic));
    let mut req = DeleteTopicsRequest::default();
    req.topics = vec![d];
    req.timeout_ms = ADMIN_TIMEOUT_MS;
    let ResponseKind::DeleteTopics(resp) =
        call(&c, DELETE_TOPICS_VERSION, RequestKind::DeleteTopics(req)).await?
    else {
        return Err(ApiError::Unexpected.into());
    };
    first_error(
        &format!("delete topic '{topic}'"),
        resp.responses
            .iter()
            .map(|r| (r.error_code, r.error_message.as_deref())),
    )?;
    Ok(Redirect::to("/topics").into_response())
}

/// `POST /topics/{topic}/partitions`: `count`, the new total.
pub async fn add_partitions(
    State(o): State<Arc<Observed>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: String,
) -> PageResult {
    let c = console(&o)?;
    let topic = params::topic_name(&topic)?.to_string();
    let f = form(&headers, &body, &["token", "count"])?;
    admit(&c, &headers, &f)?;
    let count = f.required_int("count", 1, MAX_PARTITIONS)? as i32;
    let mut t =
        kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default();
    t.name = tn(&topic);
    t.count = count;
    t.assignments = None;
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = ADMIN_TIMEOUT_MS;
    let ResponseKind::CreatePartitions(resp) = call(
        &c,
        CREATE_PARTITIONS_VERSION,
        RequestKind::CreatePartitions(req),
    )
    .await?
    else {
        return Err(ApiError::Unexpected.into());
    };
    first_error(
        &format!("add partitions to '{topic}'"),
        resp.results
            .iter()
            .map(|r| (r.error_code, r.error_message.as_deref())),
    )?;
    Ok(Redirect::to(&topic_url(&topic)).into_response())
}

// ----------------------------------------------------------------------- offset reset

/// Parses a confirmed reset's `offsets`: `PARTITION:OFFSET` pairs separated by commas.
pub fn parse_offsets(v: &str) -> Result<BTreeMap<i32, i64>, BadParam> {
    let mut out = BTreeMap::new();
    for pair in v.split(',').filter(|p| !p.is_empty()) {
        let parsed = pair
            .split_once(':')
            .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)));
        match parsed {
            Some((p, o)) if p >= 0 && o >= 0 => {
                if out.insert(p, o).is_some() {
                    return Err(BadParam(format!("offsets names partition {p} twice")));
                }
            }
            _ => return Err(BadParam("offsets must be PARTITION:OFFSET,...".into())),
        }
        if out.len() > MAX_RESET_PARTITIONS {
            return Err(BadParam(format!(
                "offsets names more than {MAX_RESET_PARTITIONS} partitions"
            )));
        }
    }
    if out.is_empty() {
        return Err(BadParam("offsets names no partition".into()));
    }
    Ok(out)
}

/// The group's member count, refusing a group that does not exist here.
async fn members(c: &Console, group: &str) -> Result<usize, PageError> {
    let d = api::describe_groups(&c.ctx, &[group.to_string()]).await?;
    let Some(g) = d.groups.into_iter().next() else {
        return Err(ApiError::Unexpected.into());
    };
    if g.error_code != 0 {
        return Err(kafka_error(&format!("group '{group}'"), g.error_code, None));
    }
    if g.group_state.as_str() == "Dead" {
        return Err(PageError::NotFound(format!("no group '{group}'")));
    }
    Ok(g.members.len())
}

/// `POST /groups/{group}/reset`: `topic`, optional `partition`, `to` = earliest | latest |
/// offset | timestamp (with `offset` / `timestamp`). Without `confirm` it answers a page that
/// shows the committed and the new offset of each partition and asks; with `confirm=yes` and
/// the `offsets` that page showed it commits them, once more only if the group has no members.
pub async fn reset_offsets(
    State(o): State<Arc<Observed>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: String,
) -> PageResult {
    let c = console(&o)?;
    let group = params::group_id(&group)?.to_string();
    let f = form(
        &headers,
        &body,
        &[
            "token",
            "topic",
            "partition",
            "to",
            "offset",
            "timestamp",
            "confirm",
            "offsets",
        ],
    )?;
    admit(&c, &headers, &f)?;
    let topic = params::topic_name(f.get("topic").unwrap_or(""))?.to_string();
    let busy = |n: usize| {
        PageError::Status(
            StatusCode::CONFLICT,
            format!(
                "group '{group}' has {n} active member(s): offsets are reset only while it has none"
            ),
        )
    };
    let n = members(&c, &group).await?;
    if n > 0 {
        return Err(busy(n));
    }
    if f.get("confirm").is_some() {
        if f.get("confirm") != Some("yes") {
            return Err(PageError::Bad("confirm must be yes".into()));
        }
        let offsets = parse_offsets(f.get("offsets").unwrap_or(""))?;
        return commit(&c, &group, &topic, &offsets).await;
    }
    // Which partitions: one, or all of the topic's.
    let md = api::metadata(&c.ctx, Some(&[topic.as_str()])).await?;
    let Some(t) = md.topics.first().filter(|t| t.error_code == 0) else {
        return Err(PageError::NotFound(format!("no topic '{topic}'")));
    };
    let mut parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    parts.sort_unstable();
    if f.get("partition").is_some() {
        let p = f.int("partition", 0, i64::from(i32::MAX), 0)? as i32;
        if !parts.contains(&p) {
            return Err(PageError::Bad(format!(
                "topic '{topic}' has no partition {p}"
            )));
        }
        parts = vec![p];
    }
    let wanted = vec![(topic.clone(), parts.clone())];
    let starts = api::list_offsets(&c.ctx, &wanted, api::EARLIEST).await?;
    let ends = api::list_offsets(&c.ctx, &wanted, api::LATEST).await?;
    let to = f.choice(
        "to",
        &["earliest", "latest", "offset", "timestamp"],
        "earliest",
    )?;
    let at_time = match to {
        "timestamp" => Some(
            api::list_offsets(&c.ctx, &wanted, f.required_int("timestamp", 0, i64::MAX)?).await?,
        ),
        _ => None,
    };
    let fixed = match to {
        "offset" => Some(f.required_int("offset", 0, i64::MAX)?),
        _ => None,
    };
    let fetched = api::offset_fetch(&c.ctx, &group).await?;
    let mut current: BTreeMap<i32, i64> = BTreeMap::new();
    for ft in fetched.topics.iter().filter(|x| x.name.0.as_str() == topic) {
        for p in &ft.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                current.insert(p.partition_index, p.committed_offset);
            }
        }
    }
    let mut plan: Vec<(i32, Option<i64>, i64)> = Vec::new();
    for p in &parts {
        let key = (topic.clone(), *p);
        let (Some(Ok((start, _))), Some(Ok((end, _)))) = (starts.get(&key), ends.get(&key)) else {
            return Err(PageError::Unavailable(format!(
                "ListOffsets of {topic}-{p} failed"
            )));
        };
        let target = match to {
            "latest" => *end,
            "offset" => fixed.unwrap_or(0).clamp(*start, *end),
            "timestamp" => match at_time.as_ref().and_then(|m| m.get(&key)) {
                Some(Ok((o, _))) if *o >= 0 => *o,
                Some(Ok(_)) => *end,
                _ => {
                    return Err(PageError::Unavailable(format!(
                        "ListOffsets by timestamp of {topic}-{p} failed"
                    )));
                }
            },
            _ => *start,
        };
        plan.push((*p, current.get(p).copied(), target));
    }
    let offsets: String = plan
        .iter()
        .map(|(p, _, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",");
    let action = format!("/groups/{}/reset", params::percent_encode(&group));
    let body = html! {
        p #reset-question { "Reset the committed offsets of group " strong { (group) } " on topic " strong { (topic) } " as below?" }
        table #reset-plan {
            tr { th.n { "partition" } th.n { "committed now" } th.n { "new offset" } }
            @for (p, cur, new) in &plan {
                tr data-partition=(p) {
                    td.n { (p) }
                    td.n { @match cur { Some(o) => { (o) }, None => { "—" } } }
                    td.n.new { (new) }
                }
            }
        }
        form.inline method="post" action=(action) {
            input type="hidden" name="token" value=(c.token);
            input type="hidden" name="topic" value=(topic);
            input type="hidden" name="offsets" value=(offsets);
            input type="hidden" name="confirm" value="yes";
            button.danger type="submit" { "Yes, reset" }
        }
        " "
        a href={ "/groups/" (params::percent_encode(&group)) } { "Cancel" }
    };
    Ok(c.page(&format!("Reset offsets of {group}"), body))
}

/// Commits `offsets` for `group` as an admin client does (generation -1, no member id): the
/// coordinator accepts it only for a group without members.
async fn commit(c: &Console, group: &str, topic: &str, offsets: &BTreeMap<i32, i64>) -> PageResult {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let mut t = OffsetCommitRequestTopic::default();
    t.name = tn(topic);
    t.partitions = offsets
        .iter()
        .map(|(p, o)| {
            let mut x = OffsetCommitRequestPartition::default();
            x.partition_index = *p;
            x.committed_offset = *o;
            x.committed_leader_epoch = -1;
            x.committed_metadata = Some(s(""));
            x
        })
        .collect();
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = -1;
    req.member_id = s("");
    req.topics = vec![t];
    let ResponseKind::OffsetCommit(resp) =
        call(c, OFFSET_COMMIT_VERSION, RequestKind::OffsetCommit(req)).await?
    else {
        return Err(ApiError::Unexpected.into());
    };
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(kafka_error(
                    &format!("commit {topic}-{}", p.partition_index),
                    p.error_code,
                    None,
                ));
            }
        }
    }
    Ok(Redirect::to(&format!("/groups/{}", params::percent_encode(group))).into_response())
}

// ------------------------------------------------------------------------------ forms

/// The create-topic form of the topics page.
pub fn create_topic_form(c: &Console) -> Markup {
    html! {
        form.panel #create-topic method="post" action="/topics" {
            input type="hidden" name="token" value=(c.token);
            label { "new topic" input type="text" name="name" required maxlength="249" pattern="[a-zA-Z0-9._\\-]+"; }
            label { "partitions" input type="number" name="partitions" min="1" max=(MAX_PARTITIONS) value="1"; }
            label { "replication factor (empty: default)" input type="number" name="replication_factor" min="1"; }
            button type="submit" { "Create topic" }
        }
    }
}

/// The add-partitions and delete forms of a topic's page.
pub fn topic_forms(c: &Console, topic: &str, partitions: usize) -> Markup {
    let base = topic_url(topic);
    html! {
        form.panel #add-partitions method="post" action={ (base) "/partitions" } {
            input type="hidden" name="token" value=(c.token);
            label { "partitions (new total)" input type="number" name="count" min=(partitions + 1) max=(MAX_PARTITIONS) value=(partitions + 1); }
            button type="submit" { "Add partitions" }
        }
        form.panel #delete-topic method="post" action={ (base) "/delete" } data-confirm={ "Delete topic " (topic) " and all its records?" } {
            input type="hidden" name="token" value=(c.token);
            label { "type the topic's name to delete it" input type="text" name="confirm" required; }
            button.danger type="submit" { "Delete topic" }
        }
    }
}

/// The reset form of a group's page (shown only while the group has no members).
pub fn reset_form(c: &Console, group: &str, topics: &[String]) -> Markup {
    html! {
        form.panel #reset-offsets method="post" action={ "/groups/" (params::percent_encode(group)) "/reset" } {
            input type="hidden" name="token" value=(c.token);
            label { "topic"
                input type="text" name="topic" required list="group-topics" value=(topics.first().map_or("", String::as_str));
                datalist #group-topics { @for t in topics { option value=(t) {} } }
            }
            label { "partition (empty: all)" input type="number" name="partition" min="0"; }
            label { "to"
                select name="to" {
                    @for t in ["earliest", "latest", "offset", "timestamp"] { option value=(t) { (t) } }
                }
            }
            label { "offset" input type="number" name="offset" min="0"; }
            label { "timestamp (ms)" input type="number" name="timestamp" min="0"; }
            button type="submit" { "Reset offsets…" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn same_origin_compares_origin_or_referer_with_host() {
        let ok = headers(&[
            ("host", "127.0.0.1:8092"),
            ("origin", "http://127.0.0.1:8092"),
        ]);
        assert_eq!(same_origin(&ok), Ok(()));
        let ok = headers(&[
            ("host", "127.0.0.1:8092"),
            ("referer", "http://127.0.0.1:8092/topics/x?y=1"),
        ]);
        assert_eq!(same_origin(&ok), Ok(()));
        for bad in [
            headers(&[
                ("host", "127.0.0.1:8092"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8092"),
                ("origin", "http://127.0.0.1:8093"),
            ]),
            headers(&[("host", "127.0.0.1:8092"), ("origin", "null")]),
            headers(&[
                ("host", "127.0.0.1:8092"),
                ("origin", "http://127.0.0.1:8092.evil.example"),
            ]),
            // An Origin that differs wins over a Referer that matches.
            headers(&[
                ("host", "127.0.0.1:8092"),
                ("origin", "http://evil.example"),
                ("referer", "http://127.0.0.1:8092/"),
            ]),
            headers(&[("host", "127.0.0.1:8092")]),
            headers(&[("origin", "http://127.0.0.1:8092")]),
        ] {
            assert!(same_origin(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reset_offsets_are_parsed_strictly() {
        assert_eq!(
            parse_offsets("0:5,2:0").expect("ok"),
            BTreeMap::from([(0, 5), (2, 0)])
        );
        for bad in ["", "0", "0:-1", "-1:3", "0:1,0:2", "a:b", "0:1;1:2"] {
            assert!(parse_offsets(bad).is_err(), "{bad}");
        }
    }
}
