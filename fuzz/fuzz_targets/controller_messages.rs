//! The controller's decoders of bytes from peers and from disk: the first byte picks one
//! (modulo 8), the rest is its input.
//!
//! | selector | decoder | bytes from |
//! |---|---|---|
//! | 0 | `records::decode_batch` | entry payloads and snapshot states (the metadata records) |
//! | 1 | `rpc::decode_request` | a broker, on the controller listener |
//! | 2 | `rpc::decode_reply` | the active controller |
//! | 3 | `raft::wire::decode_request` | a peer controller (a whole frame, length prefix included) |
//! | 4 | `raft::wire::decode_reply` | a peer controller |
//! | 5 | `raft::log_store::decode_entry` | a metadata log segment (one record batch) |
//! | 6 | `raft::state_machine::decode_snapshot_file` | a `.checkpoint` file, or a received snapshot |
//! | 7 | `raft::log_store::decode_entry_value` | the record value inside a log entry |
//!
//! Each must return `Ok` or `Err`: no panic, no hang, no allocation above `-malloc_limit_mb`.
//! What decodes is encoded again with the module's encoder and must decode to the same value
//! (not the same bytes: varints written longer than needed, duplicate voter ids or map keys
//! decode but re-encode shorter). Bytes a decoded message carries for another layer go to that
//! layer's decoder too, as the node would hand them on: entry payloads and snapshot states to
//! `decode_batch`, the bodies of controller frames to `rpc`.
//!
//! Checksums and length prefixes would stop almost every mutation at the first check, so the
//! selectors that have one (3 and 4: the frame's length prefix; 5: the batch CRC; 6: the file's
//! trailing CRC) run twice: as given, and with it recomputed.
//!
//! Seeds (corpus/controller_messages): valid encodings of every decoder's messages, each behind
//! its selector byte (examples/gen_seeds.rs).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use vltava_controller::raft::log_store::{
    decode_entry, decode_entry_value, encode_entry, encode_entry_value,
};
use vltava_controller::raft::state_machine::{decode_snapshot_file, encode_snapshot_file};
use vltava_controller::raft::wire::{self, RaftReply, RaftRequest, RemoteFailure, WireLimits};
use vltava_controller::raft::{MetadataPayload, MetadataRaftConfig};
use vltava_controller::{records, rpc};
use vltava_protocol::batch::{self, HEADER_LEN};

const DECODERS: u8 = 8;

/// Where the CRC-covered region of a record batch starts (attributes) and where the CRC sits.
const BATCH_CRC_START: usize = 21;
const BATCH_OFF_CRC: usize = 17;
/// `raft::wire` cuts error messages and snapshot segment ids to this many bytes when encoding
/// (its private `MAX_MESSAGE_LEN`); a decoded reply with a longer one re-encodes cut.
const WIRE_MAX_MESSAGE_LEN: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % DECODERS {
        0 => metadata_batch(input),
        1 => controller_request(input),
        2 => controller_reply(input),
        3 => with_fixed(input, fix_frame_len, raft_request),
        4 => with_fixed(input, fix_frame_len, raft_reply),
        5 => with_fixed(input, fix_batch_crc, log_entry),
        6 => with_fixed(input, fix_trailing_crc, snapshot_file),
        _ => entry_value(input),
    }
});

/// Runs `check` on `input`, then on `input` with its checksum or length prefix recomputed by
/// `fix` if that changed anything.
fn with_fixed(input: &[u8], fix: fn(&mut [u8]) -> bool, check: fn(&[u8])) {
    check(input);
    let mut fixed = input.to_vec();
    if fix(&mut fixed) && fixed != input {
        check(&fixed);
    }
}

/// Decodes `input`; whatever decodes must re-encode to bytes that decode to the same value.
fn round_trip<T: PartialEq + std::fmt::Debug, E: PartialEq + std::fmt::Debug>(
    input: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
    what: &str,
) {
    let Ok(decoded) = decode(input) else {
        return;
    };
    let again = encode(&decoded);
    assert_eq!(decode(&again).as_ref(), Ok(&decoded), "{what} round trip");
}

/// 0: a batch of metadata records (an entry's payload, a snapshot's state).
fn metadata_batch(input: &[u8]) {
    round_trip(
        input,
        records::decode_batch,
        |d| records::encode_batch(d),
        "metadata records",
    );
}

/// 1: a controller RPC request body.
fn controller_request(input: &[u8]) {
    round_trip(
        input,
        rpc::decode_request,
        rpc::encode_request,
        "controller request",
    );
}

/// 2: a controller RPC reply body.
fn controller_reply(input: &[u8]) {
    round_trip(
        input,
        rpc::decode_reply,
        rpc::encode_reply,
        "controller reply",
    );
}

/// The limits to re-encode under: a decoded message re-encodes at most as long as its input,
/// except that a membership gains an entry for each voter without a node, so the default limit
/// could refuse what the input's decoding accepted.
const REENCODE_LIMITS: WireLimits = WireLimits {
    max_frame_len: u32::MAX,
};

/// 3: a raft request frame.
fn raft_request(input: &[u8]) {
    let Ok((header, request)) =
        wire::decode_request(Bytes::copy_from_slice(input), WireLimits::default())
    else {
        return;
    };
    assert_eq!(
        wire::peek_request_id(input),
        Some(header.request_id),
        "peek_request_id reads the decoded request id"
    );
    match &request {
        RaftRequest::AppendEntries(r) => {
            for e in &r.entries {
                if let EntryPayload::Normal(MetadataPayload(payload)) = &e.payload {
                    metadata_batch(payload);
                }
            }
        }
        RaftRequest::InstallSnapshot(r) => snapshot_file(&r.data),
        RaftRequest::Controller(body) => controller_request(body),
        RaftRequest::Vote(_) | RaftRequest::PreVote(_) => {}
    }
    let again = wire::encode_request(&header, &request, REENCODE_LIMITS)
        .expect("a decoded request encodes");
    let (header2, request2) =
        wire::decode_request(again, REENCODE_LIMITS).expect("an encoded request decodes");
    assert_eq!(header2, header, "raft request header round trip");
    assert!(
        request2 == request,
        "raft request round trip: {request:?} became {request2:?}"
    );
}

/// 4: a raft reply frame.
fn raft_reply(input: &[u8]) {
    let Ok((request_id, reply)) =
        wire::decode_reply(Bytes::copy_from_slice(input), WireLimits::default())
    else {
        return;
    };
    if let RaftReply::Controller(body) = &reply {
        controller_reply(body);
    }
    let again = wire::encode_reply(request_id, &reply);
    let (id2, reply2) =
        wire::decode_reply(again.clone(), REENCODE_LIMITS).expect("an encoded reply decodes");
    assert_eq!(id2, request_id, "raft reply id round trip");
    if cut_on_encode(&reply) {
        // The first encoding cut the text; from there on the reply must be stable.
        assert_eq!(
            wire::encode_reply(id2, &reply2),
            again,
            "a cut raft reply re-encodes the same"
        );
    } else {
        assert_eq!(reply2, reply, "raft reply round trip");
    }
}

/// Whether `encode_reply` shortens a text of this reply.
fn cut_on_encode(reply: &RaftReply) -> bool {
    match reply {
        RaftReply::Error(RemoteFailure::Fatal { message, .. })
        | RaftReply::Error(RemoteFailure::Rejected { message, .. }) => {
            message.len() > WIRE_MAX_MESSAGE_LEN
        }
        RaftReply::Error(RemoteFailure::SnapshotMismatch(m)) => {
            m.expect.id.len() > WIRE_MAX_MESSAGE_LEN || m.got.id.len() > WIRE_MAX_MESSAGE_LEN
        }
        _ => false,
    }
}

/// 5: a metadata log entry (one record batch).
fn log_entry(input: &[u8]) {
    let Ok(entry) = decode_entry(input) else {
        return;
    };
    if let EntryPayload::Normal(MetadataPayload(payload)) = &entry.payload {
        metadata_batch(payload);
    }
    let timestamp = batch::parse_header(input).map_or(0, |h| h.base_timestamp);
    let again = encode_entry(&entry, timestamp).expect("a decoded entry encodes");
    assert_eq!(
        decode_entry(&again).as_ref(),
        Ok(&entry),
        "log entry round trip"
    );
}

/// 6: a snapshot file.
fn snapshot_file(input: &[u8]) {
    let Ok((meta, state)) = decode_snapshot_file(input) else {
        return;
    };
    metadata_batch(state);
    let again = encode_snapshot_file(&meta, state).expect("a decoded snapshot encodes");
    let (meta2, state2) = decode_snapshot_file(&again).expect("an encoded snapshot decodes");
    assert_eq!(meta2, meta, "snapshot meta round trip");
    assert_eq!(state2, state, "snapshot state round trip");
}

/// 7: a log entry's record value (behind the batch CRC in a segment).
fn entry_value(input: &[u8]) {
    let Ok((leader, payload)) = decode_entry_value(input) else {
        return;
    };
    if let EntryPayload::Normal(MetadataPayload(p)) = &payload {
        metadata_batch(p);
    }
    let entry: Entry<MetadataRaftConfig> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(0, leader), 0),
        payload,
    };
    let again = encode_entry_value(&entry).expect("a decoded entry value encodes");
    let (leader2, payload2) = decode_entry_value(&again).expect("an encoded entry value decodes");
    assert_eq!(leader2, leader, "entry value leader round trip");
    assert_eq!(payload2, entry.payload, "entry value payload round trip");
}

/// Sets a raft frame's length prefix to the bytes that follow it.
fn fix_frame_len(frame: &mut [u8]) -> bool {
    if frame.len() < wire::FRAME_PREFIX_LEN {
        return false;
    }
    let Ok(len) = u32::try_from(frame.len() - wire::FRAME_PREFIX_LEN) else {
        return false;
    };
    frame[..wire::FRAME_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    true
}

/// Recomputes the CRC32C of the record batch at the start of `buf`, if a whole one is there.
fn fix_batch_crc(buf: &mut [u8]) -> bool {
    let Some(Ok(total)) = batch::peek_total_len(buf) else {
        return false;
    };
    if total < HEADER_LEN || total > buf.len() {
        return false;
    }
    let crc = crc32c::crc32c(&buf[BATCH_CRC_START..total]);
    buf[BATCH_OFF_CRC..BATCH_OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    true
}

/// Recomputes a snapshot file's trailing CRC32C (big-endian) over the bytes before it.
fn fix_trailing_crc(buf: &mut [u8]) -> bool {
    let Some(body_len) = buf.len().checked_sub(4) else {
        return false;
    };
    let crc = crc32c::crc32c(&buf[..body_len]);
    buf[body_len..].copy_from_slice(&crc.to_be_bytes());
    true
}
