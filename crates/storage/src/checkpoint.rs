//! Broker-wide offset checkpoint files in Kafka's text format: a version line (`0`), a count
//! line, then one `topic partition offset` line per partition.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::fileio::{self, Fs};
use crate::manager::TopicPartition;

/// Parses a checkpoint; `None` if anything about it is off (a partial or foreign file).
pub(crate) fn parse(bytes: &[u8]) -> Option<HashMap<TopicPartition, u64>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut out = HashMap::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let topic = fields.next()?;
        let partition: i32 = fields.next()?.parse().ok()?;
        let offset: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() || offset < 0 {
            return None;
        }
        let tp = TopicPartition::new(topic, partition);
        tp.validate().ok()?;
        out.insert(tp, offset as u64);
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(out)
}

/// Renders entries in Kafka's format, sorted so that files are stable.
pub(crate) fn render(entries: &[(TopicPartition, u64)]) -> String {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort();
    let mut out = format!("0\n{}\n", sorted.len());
    for (tp, offset) in sorted {
        out.push_str(&format!("{} {} {offset}\n", tp.topic, tp.partition));
    }
    out
}

/// Reads a checkpoint file. A missing file is empty; a corrupt one is treated as missing (the
/// logs then recover fully), because refusing to start would be worse.
pub(crate) fn read(fs: &dyn Fs, path: &Path) -> io::Result<HashMap<TopicPartition, u64>> {
    let Some(bytes) = fileio::read_optional(fs, path)? else {
        return Ok(HashMap::new());
    };
    Ok(parse(&bytes).unwrap_or_else(|| {
        tracing::warn!(path = %path.display(), "ignoring corrupt checkpoint file");
        HashMap::new()
    }))
}

/// Writes a checkpoint file atomically.
pub(crate) fn write(fs: &dyn Fs, path: &Path, entries: &[(TopicPartition, u64)]) -> io::Result<()> {
    fileio::atomic_write_with(fs, path, render(entries).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let entries = vec![
            (TopicPartition::new("my-topic.v2", 3), 42),
            (TopicPartition::new("a", 0), 0),
        ];
        let text = render(&entries);
        assert_eq!(text, "0\n2\na 0 0\nmy-topic.v2 3 42\n");
        let parsed = parse(text.as_bytes());
        assert_eq!(parsed, Some(entries.into_iter().collect()));
    }

    #[test]
    fn corrupt_files_are_rejected() {
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n2\na 0 1\n",
            b"0\n1\na x 1\n",
            b"0\n1\na 0 -5\n",
            b"0\n1\na 0 1 extra\n",
            b"0\n1\na/../b 0 1\n",
            b"0\n1\na 0 1\nb 0 2\n",
            b"\xff\xfe",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unreadable_file_reads_as_empty() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("recovery-point-offset-checkpoint");
        let fs = crate::fileio::RealFs;
        assert!(read(&fs, &p)?.is_empty());
        std::fs::write(&p, b"0\n5\ngarbage")?;
        assert!(read(&fs, &p)?.is_empty());
        Ok(())
    }
}
