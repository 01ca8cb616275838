//! `docs/metrics.md` and `weir_metrics::names` list the same metrics, with
//! the types `describe()` gives them.
//!
//! The names are read from the source of the `names` module, so a constant
//! added there and forgotten here or in the docs fails this test.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Metric name to type (`counter`, `gauge`, `histogram`).
type Kinds = BTreeMap<String, String>;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The string values of `pub const X: &str = "...";` in the `names` module.
fn names_in_source() -> Vec<String> {
    let src = read("src/lib.rs");
    let start = src.find("pub mod names {").expect("names module");
    let end = start + src[start..].find("\n}\n").expect("end of names module");
    src[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_string)
        .collect()
}

/// The name and type of every table row of `docs/metrics.md`.
fn documented() -> Kinds {
    read("../../docs/metrics.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            let (name, rest) = l.split_once('`').expect("closing backtick");
            let kind = rest.split('|').nth(1).expect("type column").trim();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// A recorder that only notes what `describe()` declares.
#[derive(Default)]
struct Descriptions(Mutex<Kinds>);

impl Descriptions {
    fn note(&self, name: KeyName, kind: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(name.as_str().to_string(), kind.to_string());
    }
}

impl Recorder for Descriptions {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.note(key, "counter");
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.note(key, "gauge");
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.note(key, "histogram");
    }
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn described() -> Kinds {
    let rec = Descriptions::default();
    metrics::with_local_recorder(&rec, weir_metrics::describe);
    rec.0.into_inner().unwrap()
}

#[test]
fn every_name_is_documented_and_every_documented_name_exists() {
    let names = names_in_source();
    assert!(names.len() >= 20, "parsed too few names: {names:?}");
    let docs = documented();
    let missing: Vec<_> = names.iter().filter(|n| !docs.contains_key(*n)).collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
    let unknown: Vec<_> = docs.keys().filter(|n| !names.contains(n)).collect();
    assert!(
        unknown.is_empty(),
        "in docs/metrics.md but not in weir_metrics::names: {unknown:?}"
    );
}

#[test]
fn every_name_is_described_with_its_documented_type() {
    let described = described();
    let docs = documented();
    for name in names_in_source() {
        assert_eq!(
            described.get(&name),
            docs.get(&name),
            "{name}: type in describe() vs docs/metrics.md"
        );
    }
    assert_eq!(described.len(), docs.len(), "describe() covers extra names");
}

#[test]
fn metric_names_follow_prometheus_conventions() {
    let docs = documented();
    for (name, kind) in &docs {
        assert!(name.starts_with("weir_"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}"
        );
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: counters, and only counters, end in _total"
        );
    }
}
