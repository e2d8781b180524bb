//! Fixed-bucket histograms for durations (every histogram whose name ends in `_seconds`).
//!
//! The Prometheus exporter's own histograms keep each sample until the next upkeep drains them:
//! an allocation per block of samples and a copy per drain. Filter callbacks are timed several
//! times per request, so these count straight into fixed buckets instead: one bucket search and
//! two relaxed atomic adds per sample, no allocation, no upkeep. The buckets and the
//! exposition are those the exporter produced before (docs/observability.md lists them).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::HistogramFn;
use parking_lot::Mutex;

/// Upper bounds (seconds) of the buckets; `+Inf` follows.
pub(crate) const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One series: per-bucket counts (not cumulative; the last is `+Inf`) and the sum in
/// nanoseconds, so that it can be added to atomically.
#[derive(Default)]
pub(crate) struct FixedHistogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl HistogramFn for FixedHistogram {
    fn record(&self, value: f64) {
        // Durations are never negative; NaN counts as zero rather than poisoning the sum.
        let value = if value > 0.0 { value } else { 0.0 };
        let bucket = BUCKETS.partition_point(|&le| le < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((value * 1e9) as u64, Ordering::Relaxed);
    }
}

type SeriesKey = (String, Vec<(&'static str, String)>);

/// The fixed histograms of one registry, by name and labels.
#[derive(Default)]
pub(crate) struct FixedHistograms {
    series: Mutex<BTreeMap<SeriesKey, Arc<FixedHistogram>>>,
    help: Mutex<BTreeMap<&'static str, &'static str>>,
}

impl FixedHistograms {
    pub fn describe(&self, name: &'static str, help: &'static str) {
        self.help.lock().insert(name, help);
    }

    /// The series for `name` and `labels`, shared by every caller that asks for the same one.
    pub fn get(&self, name: &str, labels: &[(&'static str, &str)]) -> Arc<FixedHistogram> {
        let key = (
            name.to_owned(),
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        self.series.lock().entry(key).or_default().clone()
    }

    /// Prometheus text exposition of every series.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock();
        let help = self.help.lock();
        let mut current: Option<&str> = None;
        for ((name, labels), h) in series.iter() {
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
            let mut cumulative = 0;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
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
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
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
