//! Writing responses to a socket: plain frames with one write, Fetch responses as encoded
//! pieces interleaved with record sets sent from the log files by sendfile(2), so record bytes
//! never enter user space. Small record sets are read and coalesced with the pieces around
//! them instead: below a few pages a pread and a shared write cost fewer syscalls than a
//! separate sendfile, and that is the one user-space copy allowed.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use vltava_protocol::fetch::{FramePart, SplicedFrame};
use vltava_storage::FileRegion;

/// Record sets at least this large go out by sendfile; smaller ones are copied.
const SENDFILE_MIN_BYTES: usize = 16 * 1024;
/// Coalesced bytes are written once they reach this much.
const COALESCE_MAX_BYTES: usize = 256 * 1024;

/// One response on its way to the writer task.
pub(crate) enum Outgoing {
    /// A fully encoded frame.
    Frame(BytesMut),
    /// A Fetch response: pieces, and the file ranges of each external record set.
    Spliced {
        frame: SplicedFrame,
        records: Vec<Vec<FileRegion>>,
    },
    /// A response still being completed (a Produce waiting for its fsync); `None`: nothing
    /// to send.
    Deferred(Pin<Box<dyn Future<Output = io::Result<Option<Outgoing>>> + Send>>),
}

/// Writes one response, waiting first for a deferred one to complete.
pub(crate) async fn write(wr: &mut OwnedWriteHalf, mut out: Outgoing) -> io::Result<()> {
    loop {
        return match out {
            Outgoing::Frame(buf) => wr.write_all(&buf).await,
            Outgoing::Spliced { frame, records } => write_spliced(wr, &frame, &records).await,
            Outgoing::Deferred(rest) => match rest.await? {
                Some(next) => {
                    out = next;
                    continue;
                }
                None => Ok(()),
            },
        };
    }
}

async fn write_spliced(
    wr: &mut OwnedWriteHalf,
    frame: &SplicedFrame,
    records: &[Vec<FileRegion>],
) -> io::Result<()> {
    // Encoded pieces and small record sets gather here for one write; record sets are read
    // straight into it (their one user-space copy).
    let mut pending: Vec<u8> = Vec::new();
    for part in &frame.parts {
        match part {
            FramePart::Encoded(b) => pending.extend_from_slice(b),
            FramePart::Records(k) => {
                let regions = records.get(*k).map(Vec::as_slice).unwrap_or_default();
                for r in regions {
                    match r.fd() {
                        Some(_) if r.len() >= SENDFILE_MIN_BYTES => {
                            if !pending.is_empty() {
                                wr.write_all(&pending).await?;
                                pending.clear();
                            }
                            send_region(wr.as_ref(), r).await?;
                        }
                        _ => r.read_into(&mut pending)?,
                    }
                }
            }
        }
        if pending.len() >= COALESCE_MAX_BYTES {
            wr.write_all(&pending).await?;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        wr.write_all(&pending).await?;
    }
    Ok(())
}

/// Sends a file range with sendfile(2), waiting for socket writability in between.
async fn send_region(stream: &TcpStream, region: &FileRegion) -> io::Result<()> {
    let Some(fd) = region.fd() else {
        return Err(io::Error::other("file region without a descriptor"));
    };
    let mut offset = i64::try_from(region.position()).map_err(io::Error::other)?;
    let mut left = region.len();
    while left > 0 {
        stream.writable().await?;
        let res = stream.try_io(Interest::WRITABLE, || {
            sendfile(stream.as_fd(), fd, &mut offset, left)
        });
        match res {
            // The file is shorter than the range: the log lost data under us; the frame
            // cannot be completed, so the connection must end.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "log file shorter than the fetched range",
                ));
            }
            Ok(n) => left -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sendfile(
    out: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut i64,
    count: usize,
) -> io::Result<usize> {
    nix::sys::sendfile::sendfile64(out, file, Some(offset), count).map_err(io::Error::from)
}
