//! `weir fs doctor`: where the time goes, from two [`Stats`] samples taken
//! while a workload runs, and which knob to turn.
//!
//! It walks the same questions as Alluxio's guide to diagnosing where a
//! FUSE workload is bottlenecked, in order: is the FUSE daemon short of
//! CPU, are its workers all busy (requests queue in the kernel), is the
//! storage slow, does the cache hold the working set, does metadata go to
//! the storage each time. Each answer names the setting that helps.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::protocol::{OpStats, Stats, UfsStats};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Healthy.
    Ok,
    /// Worth knowing.
    Note,
    /// Limits throughput now.
    Bottleneck,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// What was looked at.
    pub area: &'static str,
    /// How bad.
    pub level: Level,
    /// What was measured.
    pub observed: String,
    /// What to change, if anything.
    pub advice: Option<String>,
}

/// Where the FUSE workers' time went for one operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTime {
    /// The operation (`read`, `lookup`, ...).
    pub op: String,
    /// Busy seconds during the sample.
    pub seconds: f64,
    /// Its share of all busy seconds, 0 to 1.
    pub share: f64,
}

/// The whole report. As JSON (`weir fs doctor --json`) the interval is in
/// seconds (`interval_secs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    /// The sample's length.
    #[serde(rename = "interval_secs", serialize_with = "secs")]
    pub interval: Duration,
    /// FUSE requests answered during it.
    pub requests: u64,
    /// FUSE busy seconds by operation, largest first.
    pub time_by_op: Vec<OpTime>,
    /// The answers, in the order asked.
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// The first bottleneck found, if any: where to start.
    pub fn bottleneck(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.level == Level::Bottleneck)
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Thresholds: past these, a resource counts as saturated or slow.
const SATURATED: f64 = 0.8;
const SLOW_READ_SECS: f64 = 0.1;
const SLOW_META_SECS: f64 = 0.05;
const LOW_HIT_RATIO: f64 = 0.5;
const GOOD_HIT_RATIO: f64 = 0.9;

/// Compares `before` and `after`, taken `interval` apart.
pub fn diagnose(before: &Stats, after: &Stats, interval: Duration) -> Diagnosis {
    let dt = interval.as_secs_f64().max(0.001);
    let ops = op_deltas(&before.fuse.ops, &after.fuse.ops);
    let requests: u64 = ops.iter().map(|o| o.requests).sum();
    let busy: f64 = ops.iter().map(|o| o.seconds).sum();
    let mut time_by_op: Vec<OpTime> = ops
        .iter()
        .filter(|o| o.seconds > 0.0)
        .map(|o| OpTime {
            op: o.op.clone(),
            seconds: o.seconds,
            share: o.seconds / busy.max(f64::MIN_POSITIVE),
        })
        .collect();
    time_by_op.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let ufs = ufs_deltas(&before.ufs, &after.ufs);
    let mut findings = Vec::new();
    if requests == 0 {
        findings.push(Finding {
            area: "workload",
            level: Level::Note,
            observed: format!("no FUSE requests during the {dt:.0} s sample"),
            advice: Some("run doctor while the workload runs (--interval samples longer)".into()),
        });
    }
    findings.push(cpu(before, after, dt));
    findings.push(queue(after, busy / dt));
    findings.push(storage(after, &ufs, dt));
    findings.push(cache(before, after));
    if let Some(f) = metadata(after, &ops, &ufs) {
        findings.push(f);
    }
    if let Some(c) = &after.cluster
        && c.state != "connected"
    {
        findings.push(Finding {
            area: "cluster",
            level: Level::Note,
            observed: c.status.clone(),
            advice: Some(
                "reads go on from the last table; changes on other nodes show only after metadata.ttl until etcd is back".into(),
            ),
        });
    }
    Diagnosis {
        interval,
        requests,
        time_by_op,
        findings,
    }
}

fn cpu(before: &Stats, after: &Stats, dt: f64) -> Finding {
    let cores = after.daemon.cores.max(1) as f64;
    let threads = after.daemon.fuse_threads.max(1) as f64;
    let fuse = (after.cpu.fuse_workers - before.cpu.fuse_workers).max(0.0) / dt;
    let process = (after.cpu.process - before.cpu.process).max(0.0) / dt;
    let observed = format!(
        "FUSE workers use {fuse:.2} of {cores:.0} cores ({process:.2} for the whole daemon)"
    );
    if process >= SATURATED * cores {
        let passthrough = if after.daemon.passthrough {
            "passthrough is on: wholly cached files already bypass the daemon"
        } else {
            "turn on fuse.passthrough (Linux 6.9+) so wholly cached files bypass the daemon"
        };
        Finding {
            area: "FUSE CPU",
            level: Level::Bottleneck,
            observed: format!("{observed}: the daemon is CPU-bound"),
            advice: Some(format!(
                "give the daemon more CPU (its pod's limit); {passthrough}; cache.memory keeps hot pages in RAM"
            )),
        }
    } else if fuse >= SATURATED * threads {
        Finding {
            area: "FUSE CPU",
            level: Level::Bottleneck,
            observed: format!("{observed}: every worker thread is computing"),
            advice: Some(format!(
                "raise fuse.threads (now {threads:.0}); cores are left"
            )),
        }
    } else {
        Finding {
            area: "FUSE CPU",
            level: Level::Ok,
            observed,
            advice: None,
        }
    }
}

fn queue(after: &Stats, busy_workers: f64) -> Finding {
    let threads = after.daemon.fuse_threads.max(1) as f64;
    let observed = format!(
        "{busy_workers:.1} of {threads:.0} FUSE workers busy on average, {:.0} requests in flight now",
        after.fuse.in_flight
    );
    if busy_workers >= SATURATED * threads {
        Finding {
            area: "FUSE queue depth",
            level: Level::Bottleneck,
            observed: format!("{observed}: requests wait in the kernel's queue"),
            advice: Some(format!(
                "raise fuse.threads (now {threads:.0}) so more requests wait on storage at once; and see the storage line below"
            )),
        }
    } else {
        Finding {
            area: "FUSE queue depth",
            level: Level::Ok,
            observed,
            advice: None,
        }
    }
}

fn storage(after: &Stats, ufs: &[UfsStats], dt: f64) -> Finding {
    let reads: Vec<&UfsStats> = ufs.iter().filter(|u| u.op == "read").collect();
    let n: u64 = reads.iter().map(|u| u.requests).sum();
    let errors: u64 = ufs.iter().map(|u| u.errors).sum();
    if n == 0 && errors == 0 {
        return Finding {
            area: "storage (UFS)",
            level: Level::Ok,
            observed: "no reads from storage during the sample".into(),
            advice: None,
        };
    }
    let secs: f64 = reads.iter().map(|u| u.seconds).sum();
    let bytes: u64 = reads.iter().map(|u| u.bytes).sum();
    let mean = secs / n.max(1) as f64;
    let observed = format!(
        "{n} reads from storage, {:.0} ms each on average, {:.1} MiB/s, {errors} failed calls",
        mean * 1000.0,
        bytes as f64 / dt / (1 << 20) as f64
    );
    if errors > 0 {
        return Finding {
            area: "storage (UFS)",
            level: Level::Bottleneck,
            observed,
            advice: Some(
                "calls to storage fail: see the daemon's log (weir.log) for the storage's answer"
                    .into(),
            ),
        };
    }
    if mean >= SLOW_READ_SECS {
        return Finding {
            area: "storage (UFS)",
            level: Level::Bottleneck,
            observed: format!("{observed}: the storage is slow"),
            advice: Some(format!(
                "preload the data with `weir fs load PATH` before the job; raise cache.readahead (now {} MiB) for sequential readers",
                after.daemon.readahead >> 20
            )),
        };
    }
    Finding {
        area: "storage (UFS)",
        level: Level::Ok,
        observed,
        advice: None,
    }
}

fn cache(before: &Stats, after: &Stats) -> Finding {
    let hits = after.cache.hits.saturating_sub(before.cache.hits);
    let misses = after.cache.misses.saturating_sub(before.cache.misses);
    let evictions = after.cache.evictions.saturating_sub(before.cache.evictions);
    let used = after.cache.used as f64 / after.cache.capacity.max(1) as f64;
    let total = hits + misses;
    if total == 0 {
        return Finding {
            area: "cache hit ratio",
            level: Level::Ok,
            observed: format!(
                "no page reads by the daemon during the sample (passthrough reads skip it); cache {:.0}% full",
                used * 100.0
            ),
            advice: None,
        };
    }
    let ratio = hits as f64 / total as f64;
    let observed = format!(
        "{:.0}% of {total} page reads hit the cache, {evictions} pages evicted, cache {:.0}% full of {} MiB",
        ratio * 100.0,
        used * 100.0,
        after.cache.capacity >> 20
    );
    if ratio >= GOOD_HIT_RATIO {
        return Finding {
            area: "cache hit ratio",
            level: Level::Ok,
            observed,
            advice: None,
        };
    }
    let thrashing = evictions > 0 || used >= SATURATED;
    let level = if ratio < LOW_HIT_RATIO {
        Level::Bottleneck
    } else {
        Level::Note
    };
    let advice = if thrashing {
        format!(
            "the working set does not fit: raise cache.capacity (now {} MiB)",
            after.cache.capacity >> 20
        )
    } else {
        "the cache is cold: warm it with `weir fs load PATH` before the job".to_string()
    };
    Finding {
        area: "cache hit ratio",
        level,
        observed,
        advice: Some(advice),
    }
}

fn metadata(after: &Stats, ops: &[OpStats], ufs: &[UfsStats]) -> Option<Finding> {
    let lookups: u64 = ops
        .iter()
        .filter(|o| o.op == "lookup" || o.op == "getattr")
        .map(|o| o.requests)
        .sum();
    let meta: Vec<&UfsStats> = ufs
        .iter()
        .filter(|u| u.op == "stat" || u.op == "list")
        .collect();
    let calls: u64 = meta.iter().map(|u| u.requests).sum();
    if lookups < 100 || calls == 0 {
        return None;
    }
    let mean = meta.iter().map(|u| u.seconds).sum::<f64>() / calls as f64;
    let share = calls as f64 / lookups as f64;
    let observed = format!(
        "{calls} stat/list calls to storage for {lookups} lookups, {:.0} ms each",
        mean * 1000.0
    );
    Some(if share >= 0.5 && mean >= SLOW_META_SECS {
        Finding {
            area: "metadata",
            level: Level::Bottleneck,
            observed: format!("{observed}: most lookups wait for the storage"),
            advice: Some(format!(
                "if the data changes rarely, raise metadata.ttl (now {:.0} s) and the attr_timeout / entry_timeout mount options",
                after.daemon.metadata_ttl
            )),
        }
    } else {
        Finding {
            area: "metadata",
            level: Level::Ok,
            observed,
            advice: None,
        }
    })
}

fn op_deltas(before: &[OpStats], after: &[OpStats]) -> Vec<OpStats> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.op == a.op);
            OpStats {
                op: a.op.clone(),
                requests: a.requests.saturating_sub(b.map_or(0, |b| b.requests)),
                errors: a.errors.saturating_sub(b.map_or(0, |b| b.errors)),
                seconds: (a.seconds - b.map_or(0.0, |b| b.seconds)).max(0.0),
            }
        })
        .collect()
}

fn ufs_deltas(before: &[UfsStats], after: &[UfsStats]) -> Vec<UfsStats> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.op == a.op && b.scheme == a.scheme);
            UfsStats {
                scheme: a.scheme.clone(),
                op: a.op.clone(),
                requests: a.requests.saturating_sub(b.map_or(0, |b| b.requests)),
                errors: a.errors.saturating_sub(b.map_or(0, |b| b.errors)),
                bytes: a.bytes.saturating_sub(b.map_or(0, |b| b.bytes)),
                seconds: (a.seconds - b.map_or(0.0, |b| b.seconds)).max(0.0),
            }
        })
        .collect()
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sampled {:.1} s: {} FUSE requests",
            self.interval.as_secs_f64(),
            self.requests
        )?;
        if !self.time_by_op.is_empty() {
            let top: Vec<String> = self
                .time_by_op
                .iter()
                .take(4)
                .map(|t| format!("{} {:.0}% ({:.2} s)", t.op, t.share * 100.0, t.seconds))
                .collect();
            writeln!(f, "FUSE time by operation: {}", top.join(", "))?;
        }
        for x in &self.findings {
            let tag = match x.level {
                Level::Ok => "ok        ",
                Level::Note => "note      ",
                Level::Bottleneck => "BOTTLENECK",
            };
            writeln!(f, "[{tag}] {}: {}", x.area, x.observed)?;
            if let Some(a) = &x.advice {
                writeln!(f, "             -> {a}")?;
            }
        }
        match self.bottleneck() {
            Some(b) => write!(f, "verdict: start with {}", b.area),
            None => write!(f, "verdict: no bottleneck found in this sample"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;

    fn stats(threads: usize) -> Stats {
        Stats {
            protocol: PROTOCOL_VERSION,
            daemon: DaemonInfo {
                pid: 1,
                version: "0".into(),
                mode: Mode::Standalone,
                mountpoint: "/m".into(),
                cache_dir: "/c".into(),
                started_at: 0,
                fuse_threads: threads,
                ufs_concurrency: 16,
                readahead: 32 << 20,
                metadata_ttl: 60.0,
                passthrough: true,
                cores: 2,
            },
            cache: CacheStats {
                used: 0,
                capacity: 1 << 30,
                page_size: 1 << 20,
                hits: 0,
                misses: 0,
                evictions: 0,
                corruptions: 0,
            },
            fuse: FuseStats {
                in_flight: 0.0,
                ops: vec![],
            },
            ufs: vec![],
            cpu: CpuStats {
                process: 0.0,
                fuse_workers: 0.0,
            },
            cluster: None,
            mounts: 1,
        }
    }

    fn op(op: &str, requests: u64, seconds: f64) -> OpStats {
        OpStats {
            op: op.into(),
            requests,
            errors: 0,
            seconds,
        }
    }

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn an_idle_sample_says_so_and_finds_nothing() {
        let d = diagnose(&stats(16), &stats(16), TEN);
        assert_eq!(d.findings[0].area, "workload");
        assert!(d.bottleneck().is_none(), "{d}");
    }

    #[test]
    fn slow_storage_with_busy_workers_points_at_threads_and_the_storage() {
        let before = stats(4);
        let mut after = stats(4);
        after.fuse.ops = vec![op("read", 400, 38.0)];
        after.ufs = vec![UfsStats {
            scheme: "s3".into(),
            op: "read".into(),
            requests: 100,
            errors: 0,
            bytes: 100 << 20,
            seconds: 30.0,
        }];
        after.cache.misses = 100;
        after.cache.hits = 10;
        let d = diagnose(&before, &after, TEN);
        let text = d.to_string();
        assert_eq!(d.bottleneck().unwrap().area, "FUSE queue depth", "{text}");
        assert!(text.contains("raise fuse.threads (now 4)"), "{text}");
        assert!(text.contains("weir fs load"), "{text}");
        assert!(text.contains("the cache is cold"), "{text}");
    }

    #[test]
    fn a_cpu_bound_daemon_and_a_thrashing_cache_are_named() {
        let before = stats(16);
        let mut after = stats(16);
        after.cpu.process = 19.0;
        after.cpu.fuse_workers = 17.0;
        after.fuse.ops = vec![op("read", 10_000, 5.0)];
        after.cache.hits = 100;
        after.cache.misses = 400;
        after.cache.evictions = 300;
        after.cache.used = 1 << 30;
        let d = diagnose(&before, &after, TEN);
        let text = d.to_string();
        assert_eq!(d.bottleneck().unwrap().area, "FUSE CPU", "{text}");
        assert!(
            text.contains("raise cache.capacity (now 1024 MiB)"),
            "{text}"
        );
    }
}
