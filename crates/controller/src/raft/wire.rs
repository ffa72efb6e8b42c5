//! The binary codec of the controllers' raft RPCs. openraft runs without its `serde` feature, so
//! its messages are encoded here, by hand, in a format this crate owns and versions.
//!
//! A frame is a big-endian `u32` body length followed by the body. Every body starts with the
//! same fixed prefix in every version, so that a node can answer a request it cannot otherwise
//! read (an unknown version) with an error the sender can route:
//!
//! ```text
//! version: u8 | kind: u8 | request_id: u64 (big-endian) | kind-specific fields
//! ```
//!
//! A request continues with the sender's cluster id and the node id it meant to reach, then the
//! message. Integers after the prefix (terms, node ids, indexes, counts, lengths) are unsigned
//! LEB128 varints: a metadata log is mostly small numbers, and entries are sent in the hundreds.
//!
//! Decoding treats the input as hostile: the frame length is checked against [`WireLimits`]
//! before anything is allocated, every count and length is checked against the bytes that are
//! left, and malformed input is an error, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use openraft::error::{InstallSnapshotError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LeaderId, LogId, Membership, SnapshotMeta,
    SnapshotSegmentId, StoredMembership, Vote,
};

use super::prevote::{PreVoteRequest, PreVoteResponse};
use super::{ControllerNode, MetadataPayload, MetadataRaftConfig, RaftNodeId};

/// The version of the body format this build writes and the only one it reads.
pub const WIRE_VERSION: u8 = 1;

/// Bytes before the body: its `u32` length.
pub const FRAME_PREFIX_LEN: usize = 4;

/// Bytes of the prefix every body starts with: version, kind, request id.
const BODY_PREFIX_LEN: usize = 1 + 1 + 8;

/// The default largest body accepted: room for openraft's default 3 MiB snapshot chunks and a
/// few hundred entries of metadata, while bounding what one peer can make another allocate.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Longest error message put on the wire; longer ones are cut, since they are only read by people.
const MAX_MESSAGE_LEN: usize = 1024;

const KIND_APPEND_ENTRIES: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_INSTALL_SNAPSHOT: u8 = 3;
const KIND_CONTROLLER: u8 = 4;
const KIND_PRE_VOTE: u8 = 5;
const KIND_APPEND_ENTRIES_REPLY: u8 = 0x81;
const KIND_VOTE_REPLY: u8 = 0x82;
const KIND_INSTALL_SNAPSHOT_REPLY: u8 = 0x83;
const KIND_CONTROLLER_REPLY: u8 = 0x84;
const KIND_PRE_VOTE_REPLY: u8 = 0x85;
const KIND_ERROR_REPLY: u8 = 0xff;

/// Size limits of the codec, shared by both ends of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest frame body, in bytes, that is encoded or accepted.
    pub max_frame_len: u32,
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// Why bytes could not be decoded, or a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame body is longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The declared or encoded body length.
        len: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The frame's length prefix disagrees with the bytes given.
    #[error("frame declares {declared} body bytes but has {actual}")]
    LengthMismatch {
        /// The length in the prefix.
        declared: u64,
        /// The bytes actually present after the prefix.
        actual: u64,
    },
    /// The input ended inside a field.
    #[error("truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A count or length claims more than the bytes that are left could hold.
    #[error("{what} of {count} does not fit in the {remaining} bytes left")]
    CountTooLarge {
        /// The field being read.
        what: &'static str,
        /// The count or length read.
        count: u64,
        /// The bytes left in the frame.
        remaining: usize,
    },
    /// A varint is longer than ten bytes or overflows a `u64`.
    #[error("malformed varint in {what}")]
    BadVarint {
        /// The field being read.
        what: &'static str,
    },
    /// A tag byte has no meaning in this version.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// The field being read.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A string is not UTF-8.
    #[error("{what} is not UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// The body was written in a version this build does not read.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// The body is a reply where a request was expected, or the other way round.
    #[error("unexpected message kind {0:#04x}")]
    UnexpectedKind(u8),
    /// Bytes are left after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// What every request carries besides its message: enough for the receiver to refuse a request
/// that reached the wrong node or the wrong cluster, and for the sender to match the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Chosen by the sender, echoed in the reply.
    pub request_id: u64,
    /// The sender's cluster id; a node of another cluster refuses the request.
    pub cluster_id: String,
    /// The node id the sender meant to reach, so a reused address is noticed.
    pub target: RaftNodeId,
}

/// One of openraft's RPCs.
#[derive(Debug, Clone)]
pub enum RaftRequest {
    /// Log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<MetadataRaftConfig>),
    /// A candidate's request for a vote.
    Vote(VoteRequest<RaftNodeId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<MetadataRaftConfig>),
    /// A controller RPC (`crate::rpc`), carried as its encoded body. Its header may name
    /// [`ANY_NODE`] as target: a node that joins by a bootstrap address knows no node id yet.
    Controller(Bytes),
    /// A voter's question before it stands for election (`super::prevote`). A node of a
    /// release without pre-vote refuses it as malformed.
    PreVote(PreVoteRequest),
}

/// The target of a controller RPC sent to an address whose node id the sender does not know.
pub const ANY_NODE: RaftNodeId = u64::MAX;

// openraft's AppendEntriesRequest has no PartialEq; comparing requests is for the round-trip tests
// and for the simulator's bookkeeping.
impl PartialEq for RaftRequest {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::AppendEntries(a), Self::AppendEntries(b)) => {
                a.vote == b.vote
                    && a.prev_log_id == b.prev_log_id
                    && a.leader_commit == b.leader_commit
                    && a.entries == b.entries
            }
            (Self::Vote(a), Self::Vote(b)) => a == b,
            (Self::InstallSnapshot(a), Self::InstallSnapshot(b)) => a == b,
            (Self::Controller(a), Self::Controller(b)) => a == b,
            (Self::PreVote(a), Self::PreVote(b)) => a == b,
            _ => false,
        }
    }
}

/// A node's answer to a [`RaftRequest`].
#[derive(Debug, PartialEq, Eq)]
pub enum RaftReply {
    /// openraft's answer to an append; a higher vote ("not the leader any more") is one of them.
    AppendEntries(AppendEntriesResponse<RaftNodeId>),
    /// openraft's answer to a vote request.
    Vote(VoteResponse<RaftNodeId>),
    /// openraft's answer to a snapshot chunk.
    InstallSnapshot(InstallSnapshotResponse<RaftNodeId>),
    /// A controller RPC's reply body (`crate::rpc`).
    Controller(Bytes),
    /// The answer to a pre-vote.
    PreVote(PreVoteResponse),
    /// The request failed on the remote node.
    Error(RemoteFailure),
}

/// How a request failed on the node that received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The remote raft cannot serve anything any more (`openraft::error::Fatal`).
    Fatal {
        /// Which fatal error.
        kind: FatalKind,
        /// Its description on the remote node.
        message: String,
    },
    /// A snapshot chunk did not continue the stream the remote is receiving.
    SnapshotMismatch(SnapshotMismatch),
    /// The remote refused the request before handing it to raft.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// Details for the operator.
        message: String,
    },
}

/// The kinds of `openraft::error::Fatal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalKind {
    /// The remote raft was shut down.
    Stopped,
    /// The remote raft's core task panicked.
    Panicked,
    /// The remote's log or state machine failed.
    Storage,
}

/// Why a node refused a request without handing it to raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The request is in a wire version this node does not read.
    UnsupportedVersion,
    /// The request is for another cluster.
    ClusterMismatch,
    /// The request is for another node id than this one.
    WrongNode,
    /// The request could not be decoded.
    Malformed,
    /// The node has too many requests in progress.
    Overloaded,
}

impl RejectReason {
    fn code(self) -> u8 {
        match self {
            Self::UnsupportedVersion => 1,
            Self::ClusterMismatch => 2,
            Self::WrongNode => 3,
            Self::Malformed => 4,
            Self::Overloaded => 5,
        }
    }

    fn from_code(code: u8) -> Result<Self, WireError> {
        Ok(match code {
            1 => Self::UnsupportedVersion,
            2 => Self::ClusterMismatch,
            3 => Self::WrongNode,
            4 => Self::Malformed,
            5 => Self::Overloaded,
            tag => {
                return Err(WireError::UnknownTag {
                    what: "reject reason",
                    tag,
                });
            }
        })
    }
}

impl std::fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fatal { kind, message } => write!(f, "fatal ({kind:?}): {message}"),
            Self::SnapshotMismatch(m) => write!(f, "{m}"),
            Self::Rejected { reason, message } => write!(f, "rejected ({reason:?}): {message}"),
        }
    }
}

/// Checks a frame's length prefix against the limit, before the body is read or allocated.
/// Returns the body length.
pub fn body_len(prefix: [u8; FRAME_PREFIX_LEN], limits: WireLimits) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix);
    if len > limits.max_frame_len {
        return Err(WireError::FrameTooLarge {
            len: u64::from(len),
            max: limits.max_frame_len,
        });
    }
    // u32 always fits in usize on the 32- and 64-bit targets this crate builds for.
    Ok(len as usize)
}

/// The request id of a frame, if it is long enough to have one; used to route a reply, and to
/// address an error reply to a request that could not be decoded.
pub fn peek_request_id(frame: &[u8]) -> Option<u64> {
    let id = frame.get(FRAME_PREFIX_LEN + 2..FRAME_PREFIX_LEN + BODY_PREFIX_LEN)?;
    let id: [u8; 8] = id.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// Encodes a request frame (length prefix included).
pub fn encode_request(
    header: &RequestHeader,
    request: &RaftRequest,
    limits: WireLimits,
) -> Result<Bytes, WireError> {
    let kind = match request {
        RaftRequest::AppendEntries(_) => KIND_APPEND_ENTRIES,
        RaftRequest::Vote(_) => KIND_VOTE,
        RaftRequest::InstallSnapshot(_) => KIND_INSTALL_SNAPSHOT,
        RaftRequest::Controller(_) => KIND_CONTROLLER,
        RaftRequest::PreVote(_) => KIND_PRE_VOTE,
    };
    let mut w = Writer::start(kind, header.request_id);
    w.str(&header.cluster_id);
    w.varint(header.target);
    match request {
        RaftRequest::AppendEntries(r) => {
            w.vote(&r.vote);
            w.opt_log_id(&r.prev_log_id);
            w.opt_log_id(&r.leader_commit);
            w.varint(r.entries.len() as u64);
            for e in &r.entries {
                w.entry(e);
            }
        }
        RaftRequest::Vote(r) => {
            w.vote(&r.vote);
            w.opt_log_id(&r.last_log_id);
        }
        RaftRequest::InstallSnapshot(r) => {
            w.vote(&r.vote);
            w.snapshot_meta(&r.meta);
            w.varint(r.offset);
            w.bytes(&r.data);
            w.bool(r.done);
        }
        RaftRequest::Controller(body) => w.bytes(body),
        RaftRequest::PreVote(r) => {
            w.varint(r.candidate);
            w.varint(r.term);
            w.opt_log_id(&r.last_log_id);
        }
    }
    w.finish(limits)
}

/// Decodes a request frame (length prefix included).
pub fn decode_request(
    frame: Bytes,
    limits: WireLimits,
) -> Result<(RequestHeader, RaftRequest), WireError> {
    let (kind, request_id, mut r) = Reader::start(frame, limits)?;
    let cluster_id = r.string("cluster id")?;
    let target = r.varint("target")?;
    let request = match kind {
        KIND_APPEND_ENTRIES => {
            let vote = r.vote()?;
            let prev_log_id = r.opt_log_id()?;
            let leader_commit = r.opt_log_id()?;
            let n = r.count("entries", MIN_ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(r.entry()?);
            }
            RaftRequest::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id,
                entries,
                leader_commit,
            })
        }
        KIND_VOTE => {
            let vote = r.vote()?;
            let last_log_id = r.opt_log_id()?;
            RaftRequest::Vote(VoteRequest { vote, last_log_id })
        }
        KIND_INSTALL_SNAPSHOT => {
            let vote = r.vote()?;
            let meta = r.snapshot_meta()?;
            let offset = r.varint("snapshot offset")?;
            let data = r.bytes("snapshot data")?.to_vec();
            let done = r.bool("done")?;
            RaftRequest::InstallSnapshot(InstallSnapshotRequest {
                vote,
                meta,
                offset,
                data,
                done,
            })
        }
        KIND_CONTROLLER => RaftRequest::Controller(r.bytes("controller request")?),
        KIND_PRE_VOTE => {
            let candidate = r.varint("candidate")?;
            let term = r.varint("pre-vote term")?;
            let last_log_id = r.opt_log_id()?;
            RaftRequest::PreVote(PreVoteRequest {
                candidate,
                term,
                last_log_id,
            })
        }
        other => return Err(WireError::UnexpectedKind(other)),
    };
    r.end()?;
    Ok((
        RequestHeader {
            request_id,
            cluster_id,
            target,
        },
        request,
    ))
}

/// Encodes a reply frame (length prefix included). Replies are small by construction (error
/// messages are cut to a bound), so this cannot fail.
pub fn encode_reply(request_id: u64, reply: &RaftReply) -> Bytes {
    let kind = match reply {
        RaftReply::AppendEntries(_) => KIND_APPEND_ENTRIES_REPLY,
        RaftReply::Vote(_) => KIND_VOTE_REPLY,
        RaftReply::InstallSnapshot(_) => KIND_INSTALL_SNAPSHOT_REPLY,
        RaftReply::Controller(_) => KIND_CONTROLLER_REPLY,
        RaftReply::PreVote(_) => KIND_PRE_VOTE_REPLY,
        RaftReply::Error(_) => KIND_ERROR_REPLY,
    };
    let mut w = Writer::start(kind, request_id);
    match reply {
        RaftReply::AppendEntries(r) => match r {
            AppendEntriesResponse::Success => w.u8(0),
            AppendEntriesResponse::PartialSuccess(matching) => {
                w.u8(1);
                w.opt_log_id(matching);
            }
            AppendEntriesResponse::Conflict => w.u8(2),
            AppendEntriesResponse::HigherVote(v) => {
                w.u8(3);
                w.vote(v);
            }
        },
        RaftReply::Vote(r) => {
            w.vote(&r.vote);
            w.bool(r.vote_granted);
            w.opt_log_id(&r.last_log_id);
        }
        RaftReply::InstallSnapshot(r) => w.vote(&r.vote),
        RaftReply::Controller(body) => w.bytes(body),
        RaftReply::PreVote(r) => {
            w.bool(r.granted);
            w.varint(r.term);
        }
        RaftReply::Error(e) => match e {
            RemoteFailure::Fatal { kind, message } => {
                w.u8(1);
                w.u8(match kind {
                    FatalKind::Stopped => 1,
                    FatalKind::Panicked => 2,
                    FatalKind::Storage => 3,
                });
                w.str(cut(message));
            }
            RemoteFailure::SnapshotMismatch(m) => {
                w.u8(2);
                w.segment_id(&m.expect);
                w.segment_id(&m.got);
            }
            RemoteFailure::Rejected { reason, message } => {
                w.u8(3);
                w.u8(reason.code());
                w.str(cut(message));
            }
        },
    }
    w.finish_unbounded()
}

/// Decodes a reply frame (length prefix included); returns the request id it answers.
pub fn decode_reply(frame: Bytes, limits: WireLimits) -> Result<(u64, RaftReply), WireError> {
    let (kind, request_id, mut r) = Reader::start(frame, limits)?;
    let reply = match kind {
        KIND_APPEND_ENTRIES_REPLY => RaftReply::AppendEntries(match r.u8("append reply")? {
            0 => AppendEntriesResponse::Success,
            1 => AppendEntriesResponse::PartialSuccess(r.opt_log_id()?),
            2 => AppendEntriesResponse::Conflict,
            3 => AppendEntriesResponse::HigherVote(r.vote()?),
            tag => {
                return Err(WireError::UnknownTag {
                    what: "append reply",
                    tag,
                });
            }
        }),
        KIND_VOTE_REPLY => {
            let vote = r.vote()?;
            let vote_granted = r.bool("vote granted")?;
            let last_log_id = r.opt_log_id()?;
            RaftReply::Vote(VoteResponse {
                vote,
                vote_granted,
                last_log_id,
            })
        }
        KIND_INSTALL_SNAPSHOT_REPLY => {
            RaftReply::InstallSnapshot(InstallSnapshotResponse { vote: r.vote()? })
        }
        KIND_CONTROLLER_REPLY => RaftReply::Controller(r.bytes("controller reply")?),
        KIND_PRE_VOTE_REPLY => {
            let granted = r.bool("pre-vote granted")?;
            let term = r.varint("pre-vote term")?;
            RaftReply::PreVote(PreVoteResponse { granted, term })
        }
        KIND_ERROR_REPLY => RaftReply::Error(match r.u8("error reply")? {
            1 => {
                let kind = match r.u8("fatal kind")? {
                    1 => FatalKind::Stopped,
                    2 => FatalKind::Panicked,
                    3 => FatalKind::Storage,
                    tag => {
                        return Err(WireError::UnknownTag {
                            what: "fatal kind",
                            tag,
                        });
                    }
                };
                RemoteFailure::Fatal {
                    kind,
                    message: r.string("message")?,
                }
            }
            2 => {
                let expect = r.segment_id()?;
                let got = r.segment_id()?;
                RemoteFailure::SnapshotMismatch(SnapshotMismatch { expect, got })
            }
            3 => {
                let reason = RejectReason::from_code(r.u8("reject reason")?)?;
                RemoteFailure::Rejected {
                    reason,
                    message: r.string("message")?,
                }
            }
            tag => {
                return Err(WireError::UnknownTag {
                    what: "error reply",
                    tag,
                });
            }
        }),
        other => return Err(WireError::UnexpectedKind(other)),
    };
    r.end()?;
    Ok((request_id, reply))
}

/// Converts openraft's snapshot-install error into its wire form.
pub fn snapshot_failure(e: &InstallSnapshotError) -> RemoteFailure {
    match e {
        InstallSnapshotError::SnapshotMismatch(m) => RemoteFailure::SnapshotMismatch(m.clone()),
    }
}

fn cut(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE_LEN {
        return message;
    }
    let mut end = MAX_MESSAGE_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Smallest encoding of an entry: three one-byte varints of the log id and the payload tag.
const MIN_ENTRY_LEN: usize = 4;
/// Smallest encoding of a node id in a set.
const MIN_ID_LEN: usize = 1;
/// Smallest encoding of a node: a one-byte id and an empty address.
const MIN_NODE_LEN: usize = 2;

struct Writer {
    buf: BytesMut,
}

impl Writer {
    fn start(kind: u8, request_id: u64) -> Self {
        let mut buf = BytesMut::with_capacity(128);
        // Length placeholder, filled in by finish.
        buf.put_u32(0);
        buf.put_u8(WIRE_VERSION);
        buf.put_u8(kind);
        buf.put_u64(request_id);
        Self { buf }
    }

    fn finish(self, limits: WireLimits) -> Result<Bytes, WireError> {
        let len = self.buf.len() - FRAME_PREFIX_LEN;
        if len > limits.max_frame_len as usize {
            return Err(WireError::FrameTooLarge {
                len: len as u64,
                max: limits.max_frame_len,
            });
        }
        Ok(self.finish_unbounded())
    }

    fn finish_unbounded(mut self) -> Bytes {
        let len = self.buf.len() - FRAME_PREFIX_LEN;
        // Replies are bounded far below 4 GiB; saturating keeps a bug from wrapping silently.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.buf[..FRAME_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
        self.buf.freeze()
    }

    fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.put_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn vote(&mut self, v: &Vote<RaftNodeId>) {
        self.varint(v.leader_id.term);
        self.varint(v.leader_id.node_id);
        self.bool(v.committed);
    }

    fn log_id(&mut self, id: &LogId<RaftNodeId>) {
        self.varint(id.leader_id.term);
        self.varint(id.leader_id.node_id);
        self.varint(id.index);
    }

    fn opt_log_id(&mut self, id: &Option<LogId<RaftNodeId>>) {
        match id {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.log_id(id);
            }
        }
    }

    fn membership(&mut self, m: &Membership<RaftNodeId, ControllerNode>) {
        let configs = m.get_joint_config();
        self.varint(configs.len() as u64);
        for config in configs {
            self.varint(config.len() as u64);
            for id in config {
                self.varint(*id);
            }
        }
        let nodes: Vec<_> = m.nodes().collect();
        self.varint(nodes.len() as u64);
        for (id, node) in nodes {
            self.varint(*id);
            self.str(&node.addr);
        }
    }

    fn entry(&mut self, e: &Entry<MetadataRaftConfig>) {
        self.log_id(&e.log_id);
        match &e.payload {
            EntryPayload::Blank => self.u8(0),
            EntryPayload::Normal(MetadataPayload(data)) => {
                self.u8(1);
                self.bytes(data);
            }
            EntryPayload::Membership(m) => {
                self.u8(2);
                self.membership(m);
            }
        }
    }

    fn snapshot_meta(&mut self, meta: &SnapshotMeta<RaftNodeId, ControllerNode>) {
        self.opt_log_id(&meta.last_log_id);
        self.opt_log_id(meta.last_membership.log_id());
        self.membership(meta.last_membership.membership());
        self.str(&meta.snapshot_id);
    }

    fn segment_id(&mut self, s: &SnapshotSegmentId) {
        self.str(cut(&s.id));
        self.varint(s.offset);
    }
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Checks the length prefix and the fixed body prefix; returns the kind and request id.
    fn start(mut frame: Bytes, limits: WireLimits) -> Result<(u8, u64, Self), WireError> {
        if frame.len() < FRAME_PREFIX_LEN {
            return Err(WireError::Truncated {
                what: "frame length",
            });
        }
        let prefix = frame.split_to(FRAME_PREFIX_LEN);
        let mut len = [0u8; FRAME_PREFIX_LEN];
        len.copy_from_slice(&prefix);
        let declared = body_len(len, limits)?;
        if declared != frame.len() {
            return Err(WireError::LengthMismatch {
                declared: declared as u64,
                actual: frame.len() as u64,
            });
        }
        let mut r = Self { buf: frame };
        let version = r.u8("version")?;
        // The kind and id are read before the version is judged, so that the caller's error
        // names the right request; their layout is the same in every version.
        let kind = r.u8("kind")?;
        let request_id = r.u64_fixed("request id")?;
        if version != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        Ok((kind, request_id, r))
    }

    fn end(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes(self.buf.len()))
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let b = *self.buf.first().ok_or(WireError::Truncated { what })?;
        self.buf.advance(1);
        Ok(b)
    }

    fn u64_fixed(&mut self, what: &'static str) -> Result<u64, WireError> {
        let bytes: [u8; 8] = self
            .buf
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or(WireError::Truncated { what })?;
        self.buf.advance(8);
        Ok(u64::from_be_bytes(bytes))
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(WireError::UnknownTag { what, tag }),
        }
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && bits > 1 {
                return Err(WireError::BadVarint { what });
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::BadVarint { what })
    }

    /// Reads a count of items, each at least `min_len` bytes, and checks they can fit in what is
    /// left, so that a forged count cannot make the decoder reserve memory for items that are not
    /// there.
    fn count(&mut self, what: &'static str, min_len: usize) -> Result<usize, WireError> {
        let count = self.varint(what)?;
        let remaining = self.buf.len();
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(min_len))
            .is_some_and(|need| need <= remaining);
        if !fits {
            return Err(WireError::CountTooLarge {
                what,
                count,
                remaining,
            });
        }
        // Checked above: count * min_len fits in usize.
        Ok(count as usize)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let len = self.count(what, 1)?;
        Ok(self.buf.split_to(len))
    }

    fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::InvalidUtf8 { what })
    }

    fn vote(&mut self) -> Result<Vote<RaftNodeId>, WireError> {
        let term = self.varint("vote term")?;
        let node_id = self.varint("vote node")?;
        let committed = self.bool("vote committed")?;
        Ok(Vote {
            leader_id: LeaderId { term, node_id },
            committed,
        })
    }

    fn log_id(&mut self) -> Result<LogId<RaftNodeId>, WireError> {
        let term = self.varint("log id term")?;
        let node_id = self.varint("log id node")?;
        let index = self.varint("log index")?;
        Ok(LogId::new(CommittedLeaderId::new(term, node_id), index))
    }

    fn opt_log_id(&mut self) -> Result<Option<LogId<RaftNodeId>>, WireError> {
        match self.u8("log id option")? {
            0 => Ok(None),
            1 => Ok(Some(self.log_id()?)),
            tag => Err(WireError::UnknownTag {
                what: "log id option",
                tag,
            }),
        }
    }

    fn membership(&mut self) -> Result<Membership<RaftNodeId, ControllerNode>, WireError> {
        let n_configs = self.count("membership configs", 1)?;
        let mut configs = Vec::with_capacity(n_configs);
        for _ in 0..n_configs {
            let n_ids = self.count("voter ids", MIN_ID_LEN)?;
            let mut config = BTreeSet::new();
            for _ in 0..n_ids {
                config.insert(self.varint("voter id")?);
            }
            configs.push(config);
        }
        let n_nodes = self.count("nodes", MIN_NODE_LEN)?;
        let mut nodes = BTreeMap::new();
        for _ in 0..n_nodes {
            let id = self.varint("node id")?;
            let addr = self.string("node address")?;
            nodes.insert(id, ControllerNode { addr });
        }
        Ok(Membership::new(configs, nodes))
    }

    fn entry(&mut self) -> Result<Entry<MetadataRaftConfig>, WireError> {
        let log_id = self.log_id()?;
        let payload = match self.u8("entry payload")? {
            0 => EntryPayload::Blank,
            1 => EntryPayload::Normal(MetadataPayload(self.bytes("entry data")?)),
            2 => EntryPayload::Membership(self.membership()?),
            tag => {
                return Err(WireError::UnknownTag {
                    what: "entry payload",
                    tag,
                });
            }
        };
        Ok(Entry { log_id, payload })
    }

    fn snapshot_meta(&mut self) -> Result<SnapshotMeta<RaftNodeId, ControllerNode>, WireError> {
        let last_log_id = self.opt_log_id()?;
        let membership_log_id = self.opt_log_id()?;
        let membership = self.membership()?;
        let snapshot_id = self.string("snapshot id")?;
        Ok(SnapshotMeta {
            last_log_id,
            last_membership: StoredMembership::new(membership_log_id, membership),
            snapshot_id,
        })
    }

    fn segment_id(&mut self) -> Result<SnapshotSegmentId, WireError> {
        let id = self.string("snapshot segment id")?;
        let offset = self.varint("snapshot segment offset")?;
        Ok(SnapshotSegmentId { id, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::{btree_map, btree_set, vec};
    use proptest::prelude::*;

    fn vote() -> impl Strategy<Value = Vote<RaftNodeId>> {
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(term, node_id, committed)| Vote {
            leader_id: LeaderId { term, node_id },
            committed,
        })
    }

    fn log_id() -> impl Strategy<Value = LogId<RaftNodeId>> {
        (any::<u64>(), 0u64..8, any::<u64>())
            .prop_map(|(t, n, i)| LogId::new(CommittedLeaderId::new(t, n), i))
    }

    fn opt_log_id() -> impl Strategy<Value = Option<LogId<RaftNodeId>>> {
        proptest::option::of(log_id())
    }

    fn membership() -> impl Strategy<Value = Membership<RaftNodeId, ControllerNode>> {
        (
            vec(btree_set(0u64..16, 0..5), 0..3),
            btree_map(0u64..16, "[a-z0-9.:]{0,12}", 0..6),
        )
            .prop_map(|(configs, addrs)| {
                let nodes: BTreeMap<_, _> = addrs
                    .into_iter()
                    .map(|(id, addr)| (id, ControllerNode { addr }))
                    .collect();
                // Membership::new fills in missing voters, which gives the canonical value the
                // decoder also builds.
                Membership::new(configs, nodes)
            })
    }

    fn entry() -> impl Strategy<Value = Entry<MetadataRaftConfig>> {
        let payload = prop_oneof![
            Just(EntryPayload::Blank),
            vec(any::<u8>(), 0..64)
                .prop_map(|b| EntryPayload::Normal(MetadataPayload(Bytes::from(b)))),
            membership().prop_map(EntryPayload::Membership),
        ];
        (log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
    }

    fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta<RaftNodeId, ControllerNode>> {
        (opt_log_id(), opt_log_id(), membership(), "\\PC{0,16}").prop_map(
            |(last_log_id, mlog, m, snapshot_id)| SnapshotMeta {
                last_log_id,
                last_membership: StoredMembership::new(mlog, m),
                snapshot_id,
            },
        )
    }

    fn request() -> impl Strategy<Value = RaftRequest> {
        prop_oneof![
            (vote(), opt_log_id(), opt_log_id(), vec(entry(), 0..8)).prop_map(
                |(vote, prev_log_id, leader_commit, entries)| {
                    RaftRequest::AppendEntries(AppendEntriesRequest {
                        vote,
                        prev_log_id,
                        entries,
                        leader_commit,
                    })
                }
            ),
            (vote(), opt_log_id()).prop_map(|(vote, last_log_id)| RaftRequest::Vote(VoteRequest {
                vote,
                last_log_id
            })),
            (
                vote(),
                snapshot_meta(),
                any::<u64>(),
                vec(any::<u8>(), 0..128),
                any::<bool>()
            )
                .prop_map(|(vote, meta, offset, data, done)| {
                    RaftRequest::InstallSnapshot(InstallSnapshotRequest {
                        vote,
                        meta,
                        offset,
                        data,
                        done,
                    })
                }),
            vec(any::<u8>(), 0..64).prop_map(|b| RaftRequest::Controller(Bytes::from(b))),
            (any::<u64>(), any::<u64>(), opt_log_id()).prop_map(
                |(candidate, term, last_log_id)| RaftRequest::PreVote(PreVoteRequest {
                    candidate,
                    term,
                    last_log_id,
                })
            ),
        ]
    }

    fn segment() -> impl Strategy<Value = SnapshotSegmentId> {
        ("\\PC{0,16}", any::<u64>()).prop_map(|(id, offset)| SnapshotSegmentId { id, offset })
    }

    fn reply() -> impl Strategy<Value = RaftReply> {
        // AppendEntriesResponse is not Clone, which Just needs.
        let append = (0u8..4, opt_log_id(), vote()).prop_map(|(tag, matching, vote)| match tag {
            0 => AppendEntriesResponse::Success,
            1 => AppendEntriesResponse::PartialSuccess(matching),
            2 => AppendEntriesResponse::Conflict,
            _ => AppendEntriesResponse::HigherVote(vote),
        });
        let fatal = prop_oneof![
            Just(FatalKind::Stopped),
            Just(FatalKind::Panicked),
            Just(FatalKind::Storage)
        ];
        let reason = prop_oneof![
            Just(RejectReason::UnsupportedVersion),
            Just(RejectReason::ClusterMismatch),
            Just(RejectReason::WrongNode),
            Just(RejectReason::Malformed),
            Just(RejectReason::Overloaded),
        ];
        prop_oneof![
            append.prop_map(RaftReply::AppendEntries),
            (vote(), any::<bool>(), opt_log_id()).prop_map(|(vote, vote_granted, last_log_id)| {
                RaftReply::Vote(VoteResponse {
                    vote,
                    vote_granted,
                    last_log_id,
                })
            }),
            vote().prop_map(|vote| RaftReply::InstallSnapshot(InstallSnapshotResponse { vote })),
            (fatal, "\\PC{0,32}").prop_map(|(kind, message)| RaftReply::Error(
                RemoteFailure::Fatal { kind, message }
            )),
            (segment(), segment()).prop_map(|(expect, got)| RaftReply::Error(
                RemoteFailure::SnapshotMismatch(SnapshotMismatch { expect, got })
            )),
            (reason, "\\PC{0,32}").prop_map(|(reason, message)| RaftReply::Error(
                RemoteFailure::Rejected { reason, message }
            )),
            vec(any::<u8>(), 0..64).prop_map(|b| RaftReply::Controller(Bytes::from(b))),
            (any::<bool>(), any::<u64>())
                .prop_map(|(granted, term)| RaftReply::PreVote(PreVoteResponse { granted, term })),
        ]
    }

    fn header() -> impl Strategy<Value = RequestHeader> {
        (any::<u64>(), "[a-zA-Z0-9_-]{0,22}", any::<u64>()).prop_map(
            |(request_id, cluster_id, target)| RequestHeader {
                request_id,
                cluster_id,
                target,
            },
        )
    }

    proptest! {
        #[test]
        fn requests_round_trip(h in header(), req in request()) {
            let frame = encode_request(&h, &req, WireLimits::default()).expect("fits");
            prop_assert_eq!(peek_request_id(&frame), Some(h.request_id));
            let (h2, req2) = decode_request(frame, WireLimits::default()).expect("decodes");
            prop_assert_eq!(h2, h);
            prop_assert_eq!(req2, req);
        }

        #[test]
        fn replies_round_trip(id in any::<u64>(), reply in reply()) {
            let frame = encode_reply(id, &reply);
            let (id2, reply2) = decode_reply(frame, WireLimits::default()).expect("decodes");
            prop_assert_eq!(id2, id);
            prop_assert_eq!(reply2, reply);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..512), fix_len in any::<bool>()) {
            let mut frame = body.clone();
            if fix_len {
                // Most random inputs fail the length check at once; give the decoder a valid
                // prefix so the fields behind it are exercised too.
                let mut f = (body.len() as u32).to_be_bytes().to_vec();
                f.extend_from_slice(&body);
                if f.len() > 4 { f[4] = WIRE_VERSION; }
                frame = f;
            }
            let _ = decode_request(Bytes::from(frame.clone()), WireLimits::default());
            let _ = decode_reply(Bytes::from(frame), WireLimits::default());
        }

        #[test]
        fn mutated_frames_never_panic(h in header(), req in request(), pos in any::<usize>(), byte in any::<u8>(), cut_at in any::<usize>()) {
            let frame = encode_request(&h, &req, WireLimits::default()).expect("fits");
            let mut f = frame.to_vec();
            let i = pos % f.len();
            f[i] = byte;
            let _ = decode_request(Bytes::from(f.clone()), WireLimits::default());
            // A truncated body with a corrected prefix reaches every field's bounds check.
            let end = FRAME_PREFIX_LEN + cut_at % (f.len() - FRAME_PREFIX_LEN + 1);
            let mut t = f[..end].to_vec();
            let body = (end - FRAME_PREFIX_LEN) as u32;
            t[..FRAME_PREFIX_LEN].copy_from_slice(&body.to_be_bytes());
            let _ = decode_request(Bytes::from(t), WireLimits::default());
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let limits = WireLimits { max_frame_len: 64 };
        assert_eq!(
            body_len(65u32.to_be_bytes(), limits),
            Err(WireError::FrameTooLarge { len: 65, max: 64 })
        );
        let req = RaftRequest::InstallSnapshot(InstallSnapshotRequest {
            vote: Vote::new(1, 1),
            meta: SnapshotMeta::default(),
            offset: 0,
            data: vec![0; 100],
            done: true,
        });
        let h = RequestHeader {
            request_id: 1,
            cluster_id: "c".into(),
            target: 2,
        };
        assert!(matches!(
            encode_request(&h, &req, limits),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn forged_counts_are_refused() {
        let h = RequestHeader {
            request_id: 7,
            cluster_id: "c".into(),
            target: 2,
        };
        let req = RaftRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        let frame = encode_request(&h, &req, WireLimits::default()).expect("fits");
        let mut f = frame.to_vec();
        // The entry count is the last byte; claim u64::MAX entries.
        f.pop();
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let body = (f.len() - FRAME_PREFIX_LEN) as u32;
        f[..4].copy_from_slice(&body.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(f), WireLimits::default()),
            Err(WireError::CountTooLarge { .. })
        ));
    }

    #[test]
    fn other_versions_are_named_with_their_request_id() {
        let h = RequestHeader {
            request_id: 99,
            cluster_id: "c".into(),
            target: 2,
        };
        let req = RaftRequest::Vote(VoteRequest::new(Vote::new(3, 1), None));
        let mut f = encode_request(&h, &req, WireLimits::default())
            .expect("fits")
            .to_vec();
        f[FRAME_PREFIX_LEN] = 2;
        assert_eq!(peek_request_id(&f), Some(99));
        assert_eq!(
            decode_request(Bytes::from(f), WireLimits::default()).map(|_| ()),
            Err(WireError::UnsupportedVersion(2))
        );
    }
}
