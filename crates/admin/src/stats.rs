//! The daemon's numbers for [`Request::Stats`](crate::Request::Stats):
//! the page cache's counters, FUSE and UFS numbers read back from the
//! metrics this process records (so they are exactly what a scrape shows),
//! and CPU time from `/proc`, split into the FUSE workers and the rest.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use weir_fs::Fs;
use weir_metrics::names;

use crate::promtext::{self, Sample};
use crate::protocol::{CacheStats, CpuStats, FuseStats, OpStats, UfsStats};

/// fuser names its worker threads `fuser-N`.
const FUSE_WORKER_PREFIX: &str = "fuser-";

/// The page cache's numbers.
pub(crate) fn cache(fs: &Fs) -> CacheStats {
    let pages = fs.pages();
    let s = pages.stats();
    CacheStats {
        used: pages.used(),
        capacity: pages.capacity(),
        page_size: pages.page_size(),
        hits: s.hits.load(Ordering::Relaxed),
        misses: s.misses.load(Ordering::Relaxed),
        evictions: s.evictions.load(Ordering::Relaxed),
        corruptions: s.corruptions.load(Ordering::Relaxed),
    }
}

/// FUSE and UFS numbers out of the rendered metrics.
pub(crate) fn from_metrics(text: &str) -> (FuseStats, Vec<UfsStats>) {
    let samples = promtext::parse(text);
    let mut ops: BTreeMap<String, OpStats> = BTreeMap::new();
    let mut ufs: BTreeMap<(String, String), UfsStats> = BTreeMap::new();
    let mut in_flight = 0.0;
    let sum_of = |name: &str| format!("{name}_sum");
    for s in &samples {
        let op = || {
            let op = s.label("op").to_string();
            OpStats {
                op,
                requests: 0,
                errors: 0,
                seconds: 0.0,
            }
        };
        let call = || UfsStats {
            scheme: s.label("scheme").to_string(),
            op: s.label("op").to_string(),
            requests: 0,
            errors: 0,
            bytes: 0,
            seconds: 0.0,
        };
        let ufs_key = || (s.label("scheme").to_string(), s.label("op").to_string());
        match s.name.as_str() {
            n if n == names::FUSE_INFLIGHT => in_flight = s.value,
            n if n == names::FUSE_REQUESTS => {
                ops.entry(s.label("op").into()).or_insert_with(op).requests += count(s);
            }
            n if n == names::FUSE_ERRORS => {
                ops.entry(s.label("op").into()).or_insert_with(op).errors += count(s);
            }
            n if n == sum_of(names::FUSE_SECONDS) => {
                ops.entry(s.label("op").into()).or_insert_with(op).seconds += s.value;
            }
            n if n == names::UFS_REQUESTS => {
                ufs.entry(ufs_key()).or_insert_with(call).requests += count(s)
            }
            n if n == names::UFS_ERRORS => {
                ufs.entry(ufs_key()).or_insert_with(call).errors += count(s)
            }
            n if n == names::UFS_BYTES => {
                ufs.entry(ufs_key()).or_insert_with(call).bytes += count(s)
            }
            n if n == sum_of(names::UFS_SECONDS) => {
                ufs.entry(ufs_key()).or_insert_with(call).seconds += s.value;
            }
            _ => {}
        }
    }
    (
        FuseStats {
            in_flight,
            ops: ops.into_values().collect(),
        },
        ufs.into_values().collect(),
    )
}

fn count(s: &Sample) -> u64 {
    if s.value.is_finite() && s.value > 0.0 {
        s.value as u64
    } else {
        0
    }
}

/// CPU seconds of this process, and of its FUSE worker threads.
pub(crate) fn cpu() -> CpuStats {
    let tick = clock_tick();
    let process = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s).map(|(_, t)| t))
        .map_or(0.0, |t| t as f64 / tick);
    let mut fuse_workers = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            if let Some((comm, used)) = ticks(&stat)
                && comm.starts_with(FUSE_WORKER_PREFIX)
            {
                fuse_workers += used as f64 / tick;
            }
        }
    }
    CpuStats {
        process,
        fuse_workers,
    }
}

/// The command name and utime + stime (clock ticks) of a `stat` line.
fn ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // After the command: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_and_ufs_numbers_come_out_of_the_metrics_text() {
        let text = "weir_fuse_requests_total{op=\"read\"} 10\n\
                    weir_fuse_errors_total{op=\"read\",errno=\"EIO\"} 1\n\
                    weir_fuse_errors_total{op=\"read\",errno=\"ESTALE\"} 2\n\
                    weir_fuse_request_duration_seconds{op=\"read\",quantile=\"0.5\"} 0.1\n\
                    weir_fuse_request_duration_seconds_sum{op=\"read\"} 2.5\n\
                    weir_fuse_request_duration_seconds_count{op=\"read\"} 10\n\
                    weir_fuse_requests_in_flight 3\n\
                    weir_ufs_requests_total{op=\"read\",scheme=\"s3\"} 4\n\
                    weir_ufs_bytes_total{op=\"read\",scheme=\"s3\"} 4096\n\
                    weir_ufs_request_duration_seconds_sum{op=\"read\",scheme=\"s3\"} 0.4\n";
        let (fuse, ufs) = from_metrics(text);
        assert_eq!(fuse.in_flight, 3.0);
        assert_eq!(fuse.ops.len(), 1);
        assert_eq!(
            (
                fuse.ops[0].requests,
                fuse.ops[0].errors,
                fuse.ops[0].seconds
            ),
            (10, 3, 2.5)
        );
        assert_eq!(ufs.len(), 1);
        assert_eq!((ufs[0].requests, ufs[0].bytes), (4, 4096));
        assert_eq!(ufs[0].seconds, 0.4);
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "123 (fuser-0 (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(ticks(line), Some(("fuser-0 (x)", 300)));
    }
}
