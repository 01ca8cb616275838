//! Reading what code recorded, for tests (feature `testing`): run code under
//! a capturing recorder, then ask for a counter, gauge or histogram by name
//! and labels.
//!
//! Each [`Recorded::take`] returns what was recorded since the previous one
//! (the recorder resets counters and gauges as it reads them), so a test can
//! check that a counter moved by exactly what one step should add.

use std::sync::OnceLock;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// One recorded metric: kind, name, labels and value.
#[derive(Debug)]
struct Row {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

/// What was recorded in one window.
#[derive(Debug)]
pub struct Recorded {
    rows: Vec<Row>,
}

/// Runs `f` with a recorder for this thread only (so parallel tests do not
/// see each other's metrics) and returns what it recorded. Code that records
/// on other threads (spawned tasks of a multi-threaded runtime) needs
/// [`global`] instead.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Recorded) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = metrics::with_local_recorder(&recorder, f);
    (out, Recorded::take(&snapshotter))
}

/// A process-wide capturing recorder, installed on first use. Use it in a
/// test binary of its own: it sees every thread's metrics.
pub fn global() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Fails only if another recorder is installed, which a test binary
        // using this one does not do.
        let _ = recorder.install();
        snapshotter
    })
}

impl Recorded {
    /// What `snapshotter`'s recorder got since the last take.
    pub fn take(snapshotter: &Snapshotter) -> Recorded {
        let rows = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| Row {
                kind: key.kind(),
                name: key.key().name().to_string(),
                labels: key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect(),
                value,
            })
            .collect();
        Recorded { rows }
    }

    fn matching<'a>(
        &'a self,
        kind: MetricKind,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.rows
            .iter()
            .filter(move |r| r.kind == kind && r.name == name)
            .filter(move |r| {
                labels
                    .iter()
                    .all(|(k, v)| r.labels.iter().any(|(rk, rv)| rk == k && rv == v))
            })
            .map(|r| &r.value)
    }

    /// The sum of counter `name` over every label set that includes `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(MetricKind::Counter, name, labels)
            .map(|v| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// The value of gauge `name` with `labels`, if it was set in this window.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(MetricKind::Gauge, name, labels)
            .filter_map(|v| match v {
                DebugValue::Gauge(g) => Some(g.into_inner()),
                _ => None,
            })
            .last()
    }

    /// Every value recorded into histogram `name` with `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(MetricKind::Histogram, name, labels)
            .flat_map(|v| match v {
                DebugValue::Histogram(xs) => xs.iter().map(|x| x.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_by_name_and_labels() {
        let ((), rec) = capture(|| {
            metrics::counter!("c", "op" => "read", "scheme" => "s3").increment(2);
            metrics::counter!("c", "op" => "read", "scheme" => "file").increment(3);
            metrics::counter!("c", "op" => "list", "scheme" => "s3").increment(5);
            metrics::gauge!("g").set(7.0);
            metrics::histogram!("h", "op" => "read").record(0.5);
        });
        assert_eq!(rec.counter("c", &[("op", "read")]), 5);
        assert_eq!(rec.counter("c", &[("op", "read"), ("scheme", "s3")]), 2);
        assert_eq!(rec.counter("c", &[]), 10);
        assert_eq!(rec.counter("other", &[]), 0);
        assert_eq!(rec.gauge("g", &[]), Some(7.0));
        assert_eq!(rec.histogram("h", &[("op", "read")]), vec![0.5]);
        assert!(rec.histogram("h", &[("op", "list")]).is_empty());
    }
}
