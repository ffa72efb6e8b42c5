//! The throughput charts' data: a bounded ring of samples of the byte counters `metrics.rs`
//! keeps (bytes in and out, for the broker and per topic), one every [`INTERVAL`], and the
//! inline SVG charts drawn from them by the server.
//!
//! The counters are read the way a Prometheus scrape reads them, from
//! [`BrokerMetrics::render`] without the broker view (no log or group is touched: the counters
//! and the process gauges only), and the `kafka_server_brokertopicmetrics_bytesin_total`,
//! `_bytesout_total` and `_messagesin_total` families are taken from that text.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use maud::{Markup, html};

use crate::metrics::BrokerMetrics;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(3);
/// Samples kept: 10 minutes.
pub const CAPACITY: usize = 200;
/// Topics one sample keeps at most (the rest are left out of the per-topic charts).
pub const MAX_TOPICS: usize = 1000;

const BYTES_IN: &str = "kafka_server_brokertopicmetrics_bytesin_total";
const BYTES_OUT: &str = "kafka_server_brokertopicmetrics_bytesout_total";
const MESSAGES_IN: &str = "kafka_server_brokertopicmetrics_messagesin_total";

/// Cumulative byte counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// All topics: bytes in, bytes out (to consumers).
    pub broker: (u64, u64),
    /// Per topic: bytes in, bytes out.
    pub topics: BTreeMap<String, (u64, u64)>,
    /// Per topic: messages (records) in.
    pub messages_in: BTreeMap<String, u64>,
}

/// Reads the two byte counter families from Prometheus text.
pub fn parse_counters(text: &str, at_ms: i64) -> Sample {
    let mut s = Sample {
        at_ms,
        ..Sample::default()
    };
    for line in text.lines() {
        // 0: bytes in, 1: bytes out, 2: messages in.
        let (family, rest) = if let Some(r) = line.strip_prefix(BYTES_IN) {
            (0, r)
        } else if let Some(r) = line.strip_prefix(BYTES_OUT) {
            (1, r)
        } else if let Some(r) = line.strip_prefix(MESSAGES_IN) {
            (2, r)
        } else {
            continue;
        };
        let (topic, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((labels, value)) = r.split_once('}') else {
                continue;
            };
            let topic = labels
                .split(',')
                .find_map(|l| l.strip_prefix("topic=\""))
                .and_then(|v| v.strip_suffix('"'));
            match topic {
                Some(t) => (Some(t), value),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            (None, rest)
        } else {
            continue; // another family sharing the prefix
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let v = v.max(0.0) as u64;
        if family == 2 {
            if let Some(t) = topic
                && (s.messages_in.len() < MAX_TOPICS || s.messages_in.contains_key(t))
            {
                s.messages_in.insert(t.to_string(), v);
            }
            continue;
        }
        let slot = match topic {
            None => &mut s.broker,
            Some(t) => {
                if s.topics.len() >= MAX_TOPICS && !s.topics.contains_key(t) {
                    continue;
                }
                s.topics.entry(t.to_string()).or_default()
            }
        };
        if family == 0 {
            slot.0 = v;
        } else {
            slot.1 = v;
        }
    }
    s
}

/// One interval of a chart: its end and the bytes per second in and out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// End of the interval (ms since the epoch).
    pub at_ms: i64,
    /// Bytes in per second.
    pub bytes_in: f64,
    /// Bytes out per second.
    pub bytes_out: f64,
    /// Bytes in during the interval.
    pub delta_in: u64,
    /// Bytes out during the interval.
    pub delta_out: u64,
}

/// The ring of samples.
#[derive(Debug, Default)]
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// Adds a sample, dropping the oldest beyond [`CAPACITY`].
    pub fn push(&self, s: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Messages in per second of each topic over the last interval (empty before two samples).
    pub fn messages_per_sec(&self) -> BTreeMap<String, f64> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let n = ring.len();
        if n < 2 {
            return BTreeMap::new();
        }
        let (a, b) = (&ring[n - 2], &ring[n - 1]);
        let secs = ((b.at_ms - a.at_ms).max(1)) as f64 / 1000.0;
        b.messages_in
            .iter()
            .map(|(t, &y)| {
                let x = a.messages_in.get(t).copied().unwrap_or(0);
                let d = if y >= x { y - x } else { y };
                (t.clone(), d as f64 / secs)
            })
            .collect()
    }

    /// Whether two samples exist (rates can be computed).
    pub fn has_rates(&self) -> bool {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).len() >= 2
    }

    /// Rates between consecutive samples, for the broker (`None`) or one topic. A topic
    /// missing from a sample counted 0 there; a counter that went back (a deleted and
    /// recreated topic) counts from 0.
    pub fn rates(&self, topic: Option<&str>) -> Vec<Rate> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let pick = |s: &Sample| match topic {
            None => s.broker,
            Some(t) => s.topics.get(t).copied().unwrap_or_default(),
        };
        ring.iter()
            .zip(ring.iter().skip(1))
            .map(|(a, b)| {
                let (ai, ao) = pick(a);
                let (bi, bo) = pick(b);
                let delta = |x: u64, y: u64| if y >= x { y - x } else { y };
                let (di, dout) = (delta(ai, bi), delta(ao, bo));
                let secs = ((b.at_ms - a.at_ms).max(1)) as f64 / 1000.0;
                Rate {
                    at_ms: b.at_ms,
                    bytes_in: di as f64 / secs,
                    bytes_out: dout as f64 / secs,
                    delta_in: di,
                    delta_out: dout,
                }
            })
            .collect()
    }
}

fn now_ms() -> i64 {
    crate::replica::now_ms()
}

/// Takes a sample now and then every [`INTERVAL`] while `samples` is alive.
pub fn spawn_sampler(samples: Weak<Samples>, metrics: Arc<BrokerMetrics>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if samples.strong_count() == 0 {
                return;
            }
            let m = Arc::clone(&metrics);
            // The scrape lock may be held by a /metrics scrape that takes every log's lock.
            let Ok(Ok(text)) = tokio::task::spawn_blocking(move || m.render(None, None)).await
            else {
                continue;
            };
            let Some(samples) = samples.upgrade() else {
                return;
            };
            samples.push(parse_counters(&text, now_ms()));
        }
    });
}

/// Bytes per second, short.
fn rate_label(v: f64) -> String {
    format!("{}/s", super::view::size(v.round() as u64))
}

/// An inline SVG chart of bytes in and out per second.
pub fn chart(rates: &[Rate], what: &str) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 160.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 20.0;
    let max = rates
        .iter()
        .map(|r| r.bytes_in.max(r.bytes_out))
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let span_ms = CAPACITY as f64 * INTERVAL.as_millis() as f64;
    let end = rates.last().map_or(0, |r| r.at_ms);
    let x = |at: i64| LEFT + (W - LEFT) * (1.0 - ((end - at) as f64 / span_ms).min(1.0));
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / top);
    let line = |f: &dyn Fn(&Rate) -> f64| {
        rates
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.at_ms), y(f(r))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let total_in: u64 = rates.iter().map(|r| r.delta_in).sum();
    let total_out: u64 = rates.iter().map(|r| r.delta_out).sum();
    let last = rates.last().copied();
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) }
            role="img" aria-label={ "bytes in and out per second, " (what) }
            data-intervals=(rates.len()) data-total-in=(total_in) data-total-out=(total_out) {
            line x1=(LEFT) y1=(y(0.0)) x2=(W) y2=(y(0.0)) stroke="#d9dee5" {}
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(y(0.0)) stroke="#d9dee5" {}
            text x="4" y=(TOP + 8.0) { (rate_label(top)) }
            text x="4" y=(y(0.0)) { "0" }
            text x=(LEFT) y=(H - 4.0) { "−10 min" }
            text x=(W - 24.0) y=(H - 4.0) { "now" }
            @if rates.len() >= 2 {
                polyline.in points=(line(&|r| r.bytes_in)) {}
                polyline.out points=(line(&|r| r.bytes_out)) {}
            } @else {
                text x=(LEFT + 10.0) y=(H / 2.0) { "collecting samples (one every " (INTERVAL.as_secs()) " s)…" }
            }
        }
        p.legend {
            span.in { "■ in " (last.map_or_else(|| "—".to_string(), |r| rate_label(r.bytes_in))) }
            " "
            span.out { "■ out " (last.map_or_else(|| "—".to_string(), |r| rate_label(r.bytes_out))) }
            span.muted { " (" (what) "; to consumers, replication excluded; last " (INTERVAL.as_secs()) " s)" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP kafka_server_brokertopicmetrics_bytesin Bytes in.\n\
# TYPE kafka_server_brokertopicmetrics_bytesin counter\n\
kafka_server_brokertopicmetrics_bytesin_total 300\n\
kafka_server_brokertopicmetrics_bytesin_total{topic=\"a\"} 100\n\
kafka_server_brokertopicmetrics_bytesin_total{topic=\"b\"} 200\n\
kafka_server_brokertopicmetrics_bytesout_total 50\n\
kafka_server_brokertopicmetrics_bytesout_total{topic=\"a\"} 50\n\
kafka_server_brokertopicmetrics_bytesin_totalx 9\n\
kafka_server_brokertopicmetrics_messagesin_total{topic=\"a\"} 7\n\
kafka_server_brokertopicmetrics_messagesin_total 7\n";

    #[test]
    fn counters_are_read_from_the_exposition() {
        let s = parse_counters(TEXT, 5);
        assert_eq!(s.at_ms, 5);
        assert_eq!(s.broker, (300, 50));
        assert_eq!(s.topics["a"], (100, 50));
        assert_eq!(s.topics["b"], (200, 0));
        assert_eq!(s.topics.len(), 2);
        assert_eq!(s.messages_in, BTreeMap::from([("a".to_string(), 7)]));
        assert_eq!(parse_counters("garbage{\nx 1\n", 0), Sample::default());
    }

    #[test]
    fn rates_between_samples_and_a_bounded_ring() {
        let samples = Samples::default();
        let mut s = Sample {
            at_ms: 0,
            ..Sample::default()
        };
        samples.push(s.clone());
        s.at_ms = 2000;
        s.broker = (4000, 1000);
        s.topics.insert("a".into(), (4000, 1000));
        samples.push(s.clone());
        s.at_ms = 4000;
        s.broker = (4000, 3000);
        s.topics.insert("a".into(), (10, 0)); // recreated: counts from 0
        s.messages_in.insert("a".into(), 30);
        samples.push(s);
        assert_eq!(samples.messages_per_sec()["a"], 15.0);
        let r = samples.rates(None);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].bytes_in, r[0].bytes_out), (2000.0, 500.0));
        assert_eq!((r[1].bytes_in, r[1].bytes_out), (0.0, 1000.0));
        let a = samples.rates(Some("a"));
        assert_eq!(
            (a[0].delta_in, a[1].delta_in, a[1].delta_out),
            (4000, 10, 0)
        );
        assert_eq!(samples.rates(Some("none"))[0].delta_in, 0);
        for i in 0..(CAPACITY as i64 + 50) {
            samples.push(Sample {
                at_ms: 10_000 + i,
                ..Sample::default()
            });
        }
        assert_eq!(samples.rates(None).len(), CAPACITY - 1);
    }

    #[test]
    fn charts_draw_both_lines_and_escape_their_label() {
        let rates = [
            Rate {
                at_ms: 1000,
                bytes_in: 10.0,
                bytes_out: 0.0,
                delta_in: 30,
                delta_out: 0,
            },
            Rate {
                at_ms: 4000,
                bytes_in: 20.0,
                bytes_out: 5.0,
                delta_in: 60,
                delta_out: 15,
            },
        ];
        let svg = chart(&rates, "<b>").into_string();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("data-total-in=\"90\""), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
        assert!(chart(&[], "x").into_string().contains("collecting samples"));
    }
}
