//! An in-process fake broker for unit tests: a tokio listener that answers each request with
//! the next canned reply of a script and records what it was sent.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BufMut;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// What the fake does with the next request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Answer with this body at the request's version.
    Response(ResponseKind),
    /// Answer with this body encoded at the given version (e.g. v0 for a KIP-511 refusal).
    ResponseAt(ResponseKind, i16),
    /// Answer with a correlation id that does not match the request.
    WrongCorrelation(ResponseKind),
    /// Write only a 4-byte length prefix of this value and keep the connection open.
    RawFrameLen(i32),
    /// Answer with the right correlation id followed by these bytes as the body.
    RawBody(Vec<u8>),
    /// Never answer (keep the connection open).
    Silence,
    /// Close the connection.
    Close,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

pub(crate) struct FakeBroker {
    pub addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeBroker {
    /// Starts listening on 127.0.0.1:0; every accepted connection takes replies from the
    /// same script, in order.
    pub async fn start(script: Vec<Reply>) -> FakeBroker {
        Self::start_with(|_| script).await
    }

    /// Like [`FakeBroker::start`], with a script that may name the fake's own port.
    pub async fn start_with(script: impl FnOnce(u16) -> Vec<Reply>) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake broker");
        let local = listener.local_addr().expect("fake addr");
        let addr = local.to_string();
        let script = script(local.port());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen2 = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&script), Arc::clone(&seen2)));
            }
        });
        FakeBroker { addr, seen }
    }

    /// Every request received so far.
    pub async fn requests(&self) -> Vec<Seen> {
        self.seen.lock().await.clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    loop {
        let Ok(len) = stream.read_i32().await else {
            return;
        };
        let mut buf = vec![0u8; len.max(0) as usize];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(req) = vltava_protocol::frame::decode_header(bytes::Bytes::from(buf)) else {
            return;
        };
        let h = &req.header;
        seen.lock().await.push(Seen {
            api_key: h.request_api_key,
            api_version: h.request_api_version,
            correlation_id: h.correlation_id,
            client_id: h.client_id.as_ref().map(|c| c.to_string()),
        });
        let api = req.api_key;
        let version = h.request_api_version;
        let cid = h.correlation_id;
        let next = script.lock().await.pop_front();
        let out = match next {
            None | Some(Reply::Close) => return,
            Some(Reply::Silence) => {
                std::future::pending::<()>().await;
                return;
            }
            Some(Reply::Response(body)) => encode(api, version, cid, &body),
            Some(Reply::ResponseAt(body, v)) => encode(api, v, cid, &body),
            Some(Reply::WrongCorrelation(body)) => encode(api, version, cid + 1000, &body),
            Some(Reply::RawFrameLen(n)) => n.to_be_bytes().to_vec(),
            Some(Reply::RawBody(b)) => {
                let mut f = Vec::new();
                f.put_i32(4 + b.len() as i32);
                f.put_i32(cid);
                f.extend_from_slice(&b);
                f
            }
        };
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn encode(api: ApiKey, version: i16, cid: i32, body: &ResponseKind) -> Vec<u8> {
    vltava_protocol::frame::encode_response(api, version, cid, body)
        .expect("encode fake response")
        .to_vec()
}
