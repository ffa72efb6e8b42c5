//! `vltava produce TOPIC`: one record per input line, from stdin or a file, through the native
//! producer.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use vltava_client::ClientConfig;
use vltava_client::producer::{
    Acks, Header, Producer, ProducerConfig, ProducerError, ProducerRecord, RecordMetadata,
    parse_compression,
};

use crate::group::ClientArgs;

/// `vltava produce ...`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to (created on first use if the broker allows it).
    topic: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Read lines from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of S into key and value; a line without S is
    /// an error.
    #[arg(long, value_name = "S", value_parser = non_empty)]
    key_separator: Option<String>,
    /// Add a header to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Write every record to this partition (default: by key, sticky for keyless records).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Compression codec per batch.
    #[arg(long, value_name = "CODEC", default_value = "none", value_parser = parse_codec)]
    compression: String,
    /// Acknowledgements to wait for: 0, 1 or all.
    #[arg(long, value_name = "ACKS", default_value = "all", value_parser = parse_acks)]
    acks: String,
    /// Any producer setting by its Kafka name, e.g. --set linger.ms=20 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Print one line per record on stdout as its outcome arrives, tab-separated:
    /// `LINE ok PARTITION OFFSET`, `LINE unsent ERROR` (refused before it reached a broker) or
    /// `LINE unknown ERROR` (it may have been written: a timeout, an error after retries).
    #[arg(long)]
    print_deliveries: bool,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}': expected KEY=VALUE")),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    parse_key_value(s)
}

pub(crate) fn parse_codec(s: &str) -> Result<String, String> {
    parse_compression(s)
        .map(|_| s.to_ascii_lowercase())
        .ok_or_else(|| format!("'{s}': expected none, gzip, snappy, lz4 or zstd"))
}

pub(crate) fn parse_acks(s: &str) -> Result<String, String> {
    Acks::parse(s)
        .map(|_| s.to_ascii_lowercase())
        .ok_or_else(|| format!("'{s}': expected 0, 1 or all"))
}

/// Producer settings from the shared client flags and the command's own; an invalid setting
/// is a usage error.
pub(crate) fn producer_config(
    client: &ClientArgs,
    compression: &str,
    acks: &str,
    set: &[(String, String)],
) -> Result<ProducerConfig, String> {
    let mut cc = ClientConfig::new(&client.bootstrap_server).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(client.timeout);
    cc.connection.connect_timeout = timeout;
    cc.connection.client_id = "vltava-cli".to_string();
    let mut c = ProducerConfig::from_client(cc);
    c.request_timeout = timeout;
    c.max_block = timeout;
    c.delivery_timeout = c.delivery_timeout.max(timeout * 2 + c.linger);
    let apply = |c: &mut ProducerConfig, k: &str, v: &str| c.set(k, v).map_err(|e| e.to_string());
    apply(&mut c, "compression.type", compression)?;
    apply(&mut c, "acks", acks)?;
    for (k, v) in set {
        apply(&mut c, k, v)?;
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// Runs `vltava produce`: exit 0, 1 (one `error:` line) or 2 (bad settings).
pub fn main(args: ProduceArgs) -> ExitCode {
    let config = match producer_config(&args.client, &args.compression, &args.acks, &args.set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A line read from the input, or why reading stopped.
enum Input {
    Line(Vec<u8>),
    Failed(String),
}

/// Reads lines (any bytes; `\n` or `\r\n` ends a line) on a thread of its own.
fn spawn_reader(file: Option<PathBuf>) -> Result<tokio::sync::mpsc::Receiver<Input>, String> {
    let reader: Box<dyn BufRead + Send> = match &file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {}", path.display(), short_io(&e)))?;
            Box::new(std::io::BufReader::with_capacity(256 * 1024, f))
        }
        None => Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            std::io::stdin(),
        )),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    std::thread::spawn(move || {
        let mut reader = reader;
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Input::Line(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Input::Failed(format!(
                        "cannot read input: {}",
                        short_io(&e)
                    )));
                    return;
                }
            }
        }
    });
    Ok(rx)
}

fn short_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}

/// What the delivery callbacks found.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<ProducerError>>,
}

/// Outcomes waiting for the `--print-deliveries` writer thread. Bounded, so that a reader that
/// stops reading our stdout stalls the producer rather than growing memory; callbacks run on
/// the producer's sender task, which must not wait on a pipe itself.
const DELIVERY_LINES_MAX: usize = 65_536;

/// Starts the thread that prints delivery lines; it ends when every sender is dropped.
fn spawn_delivery_printer() -> (
    std::sync::mpsc::SyncSender<String>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(DELIVERY_LINES_MAX);
    let handle = std::thread::spawn(move || {
        use std::io::Write;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        while let Ok(line) = rx.recv() {
            // Write what is already waiting, then flush: whoever reads the lines times the
            // acknowledgements by them. A closed stdout only ends the printing.
            let mut ok = writeln!(out, "{line}").is_ok();
            while let (true, Ok(more)) = (ok, rx.try_recv()) {
                ok = writeln!(out, "{more}").is_ok();
            }
            if !ok || out.flush().is_err() {
                return;
            }
        }
    });
    (tx, handle)
}

/// The delivery line of record `line_no` (see `--print-deliveries`).
fn delivery_line(line_no: u64, outcome: &Result<RecordMetadata, ProducerError>) -> String {
    match outcome {
        Ok(md) => format!("{line_no}\tok\t{}\t{}", md.partition, md.offset),
        Err(e) => {
            let kind = if never_sent(e) { "unsent" } else { "unknown" };
            format!("{line_no}\t{kind}\t{}", one_line(e))
        }
    }
}

fn one_line(e: &ProducerError) -> String {
    e.to_string().replace(['\t', '\n'], " ")
}

/// Errors the producer raises before any broker saw the record: it was certainly not written.
/// Everything else (a timeout, a broker error after retries, a lost connection) may follow an
/// attempt that was appended.
fn never_sent(e: &ProducerError) -> bool {
    matches!(
        e,
        ProducerError::Config(_)
            | ProducerError::InvalidRecord(_)
            | ProducerError::RecordTooLarge { .. }
            | ProducerError::Serialize { .. }
    )
}

async fn run(args: ProduceArgs, config: ProducerConfig) -> Result<(), String> {
    let mut input = spawn_reader(args.file.clone())?;
    let producer = Producer::connect(config).await.map_err(|e| e.to_string())?;
    let headers: Vec<Header> = args
        .headers
        .iter()
        .map(|(k, v)| Header::new(k.clone(), Bytes::from(v.clone().into_bytes())))
        .collect();
    let tally = Arc::new(Tally::default());
    let printer = args.print_deliveries.then(spawn_delivery_printer);
    let mut line_no: u64 = 0;
    let mut stop: Option<String> = None;
    while let Some(item) = input.recv().await {
        let line = match item {
            Input::Line(l) => l,
            Input::Failed(e) => {
                stop = Some(e);
                break;
            }
        };
        line_no += 1;
        let (key, value) = match &args.key_separator {
            None => (None, Bytes::from(line)),
            Some(sep) => match find(&line, sep.as_bytes()) {
                Some(i) => (
                    Some(Bytes::copy_from_slice(&line[..i])),
                    Bytes::copy_from_slice(&line[i + sep.len()..]),
                ),
                None => {
                    stop = Some(format!("line {line_no} has no key separator '{sep}'"));
                    break;
                }
            },
        };
        let mut record = ProducerRecord::new(args.topic.as_str(), value);
        record.key = key;
        record.partition = args.partition;
        record.headers = headers.clone();
        let t = Arc::clone(&tally);
        let print = printer.as_ref().map(|(tx, _)| tx.clone());
        let sent = producer
            .enqueue_with_callback(record, move |r| {
                if let Some(tx) = print {
                    // Fails only once the printer stopped on a closed stdout.
                    let _ = tx.send(delivery_line(line_no, &r));
                }
                match r {
                    Ok(_) => {
                        t.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        t.failed.fetch_add(1, Ordering::Relaxed);
                        let mut first = t.first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(e);
                    }
                }
            })
            .await;
        if let Err(e) = sent {
            if let Some((tx, _)) = &printer {
                // Refused before it was queued, whatever the error: never sent.
                let _ = tx.send(format!("{line_no}\tunsent\t{}", one_line(&e)));
            }
            stop = Some(e.to_string());
            break;
        }
    }
    // Everything accepted is delivered (or fails) before we report.
    producer.close().await;
    if let Some((tx, handle)) = printer {
        drop(tx);
        // The callbacks' senders went with the delivered records; the thread ends on a
        // closed channel or a closed stdout.
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    let failed = tally.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let total = failed + tally.ok.load(Ordering::Relaxed);
        let first = tally
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(format!("{failed} of {total} records failed: {first}"));
    }
    match stop {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_flags_parse() {
        assert_eq!(find(b"k1:v:1", b":"), Some(2));
        assert_eq!(find(b"k1::v", b"::"), Some(2));
        assert_eq!(find(b"novalue", b":"), None);
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_header("=b").is_err());
        assert!(parse_codec("LZ4").is_ok());
        assert!(parse_codec("brotli").is_err());
        assert!(parse_acks("all").is_ok() && parse_acks("-1").is_ok() && parse_acks("2").is_err());
    }

    #[test]
    fn delivery_lines_say_whether_a_failed_record_may_be_in_the_log() {
        let md = RecordMetadata {
            partition: 3,
            offset: 41,
            timestamp: 0,
        };
        assert_eq!(delivery_line(7, &Ok(md)), "7\tok\t3\t41");
        let refused = ProducerError::InvalidRecord("partition 9 of\ta topic with 4".into());
        assert_eq!(
            delivery_line(8, &Err(refused)),
            "8\tunsent\tpartition 9 of a topic with 4"
        );
        let after_retries = ProducerError::Timeout("delivery.timeout.ms passed".into());
        assert_eq!(
            delivery_line(9, &Err(after_retries)),
            "9\tunknown\tdelivery.timeout.ms passed"
        );
    }
}
