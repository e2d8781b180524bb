//! Fixed-bucket histograms for durations (every histogram whose name ends in `_seconds`).
//!
//! The Prometheus exporter's own histograms keep each sample until the next upkeep drains them:
//! an allocation per block of samples and a copy per drain. Filter callbacks are timed several
//! times per request, so these count straight into fixed buckets instead, in integer
//! nanoseconds, with no allocation and no upkeep. The buckets and the exposition are those the
//! exporter produced before (docs/observability.md lists them).
//!
//! A series has one shared set of counters, which any thread may add to (atomic adds), and
//! any number of [`LocalDurations`] shards: each is written by one handle only, so a sample is
//! a plain load and store per counter. An atomic add is a locked instruction that drains the
//! store buffer; the request path records up to a score of samples per request, and the
//! worker that records them is the only writer of its shards. The exposition sums them all.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::HistogramFn;
use parking_lot::Mutex;

/// Upper bounds (seconds) of the buckets; `+Inf` follows.
pub(crate) const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// [`BUCKETS`] in nanoseconds (written out: `0.001 * 1e9` need not land on the integer).
const BOUNDS_NANOS: [u64; 15] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// The counters of one series or shard: per-bucket counts (not cumulative; the last is
/// `+Inf`) and the sum in nanoseconds.
#[derive(Default)]
pub(crate) struct Cells {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Cells {
    /// The bucket of a sample: the first whose bound it does not exceed. A linear scan, as
    /// most samples (filter callbacks, fast requests) fall in the first bucket or two.
    fn bucket(nanos: u64) -> usize {
        BOUNDS_NANOS
            .iter()
            .position(|&le| nanos <= le)
            .unwrap_or(BOUNDS_NANOS.len())
    }

    fn add(&self, nanos: u64) {
        self.counts[Self::bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// [`Cells::add`] for cells that only the caller writes: readers see each counter move
    /// by whole samples, and no sample is lost because no other writer can interleave.
    fn add_single_writer(&self, nanos: u64) {
        let count = &self.counts[Self::bucket(nanos)];
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = &self.sum_nanos;
        sum.store(
            sum.load(Ordering::Relaxed).wrapping_add(nanos),
            Ordering::Relaxed,
        );
    }
}

/// Durations are never negative; NaN counts as zero rather than poisoning the sum.
fn seconds_to_nanos(value: f64) -> u64 {
    if value > 0.0 { (value * 1e9) as u64 } else { 0 }
}

impl HistogramFn for Cells {
    fn record(&self, value: f64) {
        self.add(seconds_to_nanos(value));
    }
}

/// One series' counters: the shared ones and every shard handed out.
#[derive(Default)]
struct Series {
    shared: Arc<Cells>,
    shards: Vec<Arc<Cells>>,
}

/// A shard of one duration series for a single writer (a worker's request path). Neither
/// `Clone` nor `Sync`, so only its holder records into it. Dropped, it goes back to its
/// series with its counts, for the next handle of that series to reuse: configuration
/// reloads hand out new handles without the series growing.
pub struct LocalDurations {
    cells: Arc<Cells>,
    _single_writer: PhantomData<Cell<()>>,
}

impl LocalDurations {
    /// Counts one sample.
    pub fn record(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.cells.add_single_writer(nanos);
    }
}

impl std::fmt::Debug for LocalDurations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalDurations")
    }
}

type SeriesKey = (String, Vec<(&'static str, String)>);

/// The fixed histograms of one registry, by name and labels.
#[derive(Default)]
pub(crate) struct FixedHistograms {
    series: Mutex<BTreeMap<SeriesKey, Series>>,
    help: Mutex<BTreeMap<&'static str, &'static str>>,
}

fn series_key(name: &str, labels: &[(&'static str, &str)]) -> SeriesKey {
    (
        name.to_owned(),
        labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
    )
}

impl FixedHistograms {
    pub fn describe(&self, name: &'static str, help: &'static str) {
        self.help.lock().insert(name, help);
    }

    /// The shared counters of `name` and `labels`, for any thread to add to.
    pub fn get(&self, name: &str, labels: &[(&'static str, &str)]) -> Arc<Cells> {
        let mut series = self.series.lock();
        series
            .entry(series_key(name, labels))
            .or_default()
            .shared
            .clone()
    }

    /// A shard of `name` and `labels` for one writer: one no handle holds now, else a new one.
    pub fn local(&self, name: &str, labels: &[(&'static str, &str)]) -> LocalDurations {
        let mut series = self.series.lock();
        let s = series.entry(series_key(name, labels)).or_default();
        // A count of one is the series' own reference: no handle holds that shard. Handles
        // are only made here, under the lock, so none can take it meanwhile.
        let cells = match s.shards.iter().find(|c| Arc::strong_count(c) == 1) {
            Some(free) => free.clone(),
            None => {
                let fresh = Arc::new(Cells::default());
                s.shards.push(fresh.clone());
                fresh
            }
        };
        LocalDurations {
            cells,
            _single_writer: PhantomData,
        }
    }

    /// Prometheus text exposition of every series.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock();
        let help = self.help.lock();
        let mut current: Option<&str> = None;
        for ((name, labels), s) in series.iter() {
            if current != Some(name.as_str()) {
                if let Some(text) = help.get(name.as_str()) {
                    let _ = writeln!(out, "# HELP {name} {text}");
                }
                let _ = writeln!(out, "# TYPE {name} histogram");
                current = Some(name);
            }
            let mut prefix = String::new();
            for (k, v) in labels {
                let _ = write!(prefix, "{k}=\"{}\",", escape(v));
            }
            let all = || std::iter::once(&s.shared).chain(&s.shards);
            let mut cumulative = 0;
            for i in 0..=BUCKETS.len() {
                cumulative += all()
                    .map(|c| c.counts[i].load(Ordering::Relaxed))
                    .sum::<u64>();
                let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"{le}\"}} {cumulative}");
            }
            let labels = prefix.trim_end_matches(',');
            let braces = |s: &str| {
                if s.is_empty() {
                    String::new()
                } else {
                    format!("{{{s}}}")
                }
            };
            let sum_nanos = all()
                .map(|c| c.sum_nanos.load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add);
            let sum = sum_nanos as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
            let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
        }
    }
}

/// A label value as the exposition format writes it.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cumulatively_with_sum_and_escaped_labels() {
        let hs = FixedHistograms::default();
        hs.describe("x_seconds", "What x takes.");
        let h = hs.get("x_seconds", &[("route", "a\"b")]);
        h.record(0.0002);
        h.record(0.003);
        h.record(100.0);
        // The same series again: shared, not a second one.
        hs.get("x_seconds", &[("route", "a\"b")]).record(f64::NAN);
        let mut text = String::new();
        hs.render(&mut text);
        for line in [
            "# HELP x_seconds What x takes.",
            "# TYPE x_seconds histogram",
            r#"x_seconds_bucket{route="a\"b",le="0.0005"} 2"#,
            r#"x_seconds_bucket{route="a\"b",le="0.0025"} 2"#,
            r#"x_seconds_bucket{route="a\"b",le="0.005"} 3"#,
            r#"x_seconds_bucket{route="a\"b",le="30"} 3"#,
            r#"x_seconds_bucket{route="a\"b",le="+Inf"} 4"#,
            r#"x_seconds_sum{route="a\"b"} 100.0032"#,
            r#"x_seconds_count{route="a\"b"} 4"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(text.matches("# TYPE").count(), 1, "{text}");
    }

    #[test]
    fn shards_add_up_and_a_dropped_one_is_reused_with_its_counts() {
        let hs = FixedHistograms::default();
        let a = hs.local("z_seconds", &[("w", "1")]);
        let b = hs.local("z_seconds", &[("w", "1")]);
        a.record(Duration::from_micros(20));
        b.record(Duration::from_millis(3));
        hs.get("z_seconds", &[("w", "1")]).record(0.0001);
        drop(a);
        // Takes over a's shard: its sample stays counted, and the series does not grow.
        let c = hs.local("z_seconds", &[("w", "1")]);
        c.record(Duration::from_secs(100));
        assert_eq!(hs.series.lock().values().next().unwrap().shards.len(), 2);
        let mut text = String::new();
        hs.render(&mut text);
        for line in [
            r#"z_seconds_bucket{w="1",le="0.0005"} 2"#,
            r#"z_seconds_bucket{w="1",le="0.005"} 3"#,
            r#"z_seconds_bucket{w="1",le="30"} 3"#,
            r#"z_seconds_bucket{w="1",le="+Inf"} 4"#,
            r#"z_seconds_sum{w="1"} 100.00312"#,
            r#"z_seconds_count{w="1"} 4"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn bounds_in_nanoseconds_match_the_buckets() {
        for (nanos, secs) in BOUNDS_NANOS.iter().zip(BUCKETS) {
            assert_eq!(*nanos as f64 / 1e9, secs);
            assert_eq!(Cells::bucket(*nanos), Cells::bucket(seconds_to_nanos(secs)));
        }
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket() {
        let hs = FixedHistograms::default();
        hs.get("y_seconds", &[]).record(0.001);
        let mut text = String::new();
        hs.render(&mut text);
        assert!(
            text.contains("y_seconds_bucket{le=\"0.0005\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("y_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("y_seconds_count 1\n"), "{text}");
    }
}
