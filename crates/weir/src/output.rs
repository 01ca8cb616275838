//! How `weir fs` prints what a daemon answers: sizes, times, percentages
//! and the per-command layouts. Plain text for people on stdout; `--json`
//! prints the daemon's answer as JSON instead.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use bytesize::ByteSize;
use weir_admin::protocol::{
    CachedReport, DropReport, EntryInfo, EntryKind, JobProgress, MountsReport,
};

/// `n` bytes for people: `10.0 MiB`.
pub fn size(n: u64) -> String {
    ByteSize::b(n).display().iec().to_string()
}

/// A share as a percentage; an empty whole counts as all there.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn mtime(t: Option<i64>) -> String {
    match t {
        Some(s) if s >= 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

fn kind(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Dir => "dir",
        EntryKind::File => "file",
        EntryKind::Symlink => "link",
    }
}

/// `ls`: one line per entry, directories with a trailing `/`.
pub fn list(entries: &[EntryInfo]) -> String {
    let width = entries
        .iter()
        .map(|e| e.size.to_string().len())
        .max()
        .unwrap_or(1);
    let mut out = String::new();
    for e in entries {
        let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
        let _ = writeln!(
            out,
            "{:<4}  {:>width$}  {}  {}{slash}",
            kind(e.kind),
            e.size,
            mtime(e.mtime),
            e.path
        );
    }
    out
}

/// `stat`: one field per line, with the cached share of a file.
pub fn stat(e: &EntryInfo, cached: Option<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "path:   {}", e.path);
    let _ = writeln!(out, "kind:   {}", kind(e.kind));
    let _ = writeln!(out, "size:   {} ({})", e.size, size(e.size));
    let _ = writeln!(out, "mtime:  {}", mtime(e.mtime));
    if let Some(u) = &e.ufs {
        let _ = writeln!(out, "ufs:    {u}");
    }
    if let Some(c) = cached {
        let _ = writeln!(
            out,
            "cached: {:.1}% ({} of {})",
            percent(c, e.size),
            size(c),
            size(e.size)
        );
    }
    out
}

/// `mounts`: the mode and cluster link, then the table.
pub fn mounts(r: &MountsReport) -> String {
    let mut out = String::new();
    match &r.cluster {
        None => {
            let _ = writeln!(
                out,
                "mode: standalone (the table of this daemon's config file)"
            );
        }
        Some(c) => {
            let _ = writeln!(
                out,
                "mode: cluster {:?}, node {}: {}",
                c.cluster, c.node_id, c.state
            );
            let _ = writeln!(out, "etcd: {}", c.status);
            if let Some(src) = &c.table_source {
                let what = if src == "cache_file" {
                    "the copy kept in the cache dir (etcd was down at start)"
                } else {
                    "etcd"
                };
                let _ = writeln!(out, "table from: {what}");
            }
            match &r.members {
                Some(m) => {
                    let _ = writeln!(out, "members ({}): {}", m.len(), m.join(", "));
                }
                None => {
                    let _ = writeln!(out, "members: unknown (etcd does not answer)");
                }
            }
        }
    }
    let width = r
        .mounts
        .iter()
        .map(|m| m.path.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "{:<width$}  UFS", "PATH");
    if r.mounts.is_empty() {
        let _ = writeln!(out, "(no mounts)");
    }
    for m in &r.mounts {
        let opts: Vec<String> = m.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let opts = if opts.is_empty() {
            String::new()
        } else {
            format!("  ({})", opts.join(", "))
        };
        let _ = writeln!(out, "{:<width$}  {}{opts}", m.path, m.ufs);
    }
    for e in &r.errors {
        let _ = writeln!(out, "not served: {e}");
    }
    out
}

/// `check-cached`: each file's share, then the total.
pub fn cached(r: &CachedReport) -> String {
    let mut out = String::new();
    for f in &r.files {
        let _ = writeln!(
            out,
            "{:>6.1}%  {:>10} / {:<10}  {}",
            percent(f.cached, f.size),
            size(f.cached),
            size(f.size),
            f.path
        );
    }
    let _ = writeln!(
        out,
        "total: {:.1}% cached ({} of {} in {} files)",
        percent(r.total_cached, r.total_size),
        size(r.total_cached),
        size(r.total_size),
        r.files.len()
    );
    out
}

/// `drop-cache`: what was freed, and what was kept.
pub fn dropped(r: &DropReport) -> String {
    let mut out = format!("dropped {} from {} files\n", size(r.bytes), r.files);
    if !r.busy.is_empty() {
        let _ = writeln!(
            out,
            "kept {} files the kernel reads from the cache right now (passthrough): {}",
            r.busy.len(),
            r.busy.join(", ")
        );
    }
    out
}

/// The bytes a load job has in the cache now: found there, or fetched.
pub fn load_done_bytes(p: &JobProgress) -> u64 {
    p.bytes_already + p.bytes_fetched
}

/// One progress line of a load, for logs (no terminal).
pub fn load_line(p: &JobProgress) -> String {
    if p.state == weir_admin::protocol::JobState::Scanning {
        return format!(
            "load {}: scanning, {} files ({}) found so far",
            p.path,
            p.files_total,
            size(p.bytes_total)
        );
    }
    let rate = p.bytes_fetched as f64 / p.elapsed.max(0.001);
    let left = p.bytes_total.saturating_sub(load_done_bytes(p));
    let eta = if rate > 0.0 && p.files_total > 0 && !p.state.is_final() {
        humantime::format_duration(Duration::from_secs((left as f64 / rate).ceil() as u64))
            .to_string()
    } else {
        "-".into()
    };
    format!(
        "load {}: {}, {}/{} files, {}/{} ({:.1}%), {}/s, ETA {eta}",
        p.path,
        state(p.state),
        p.files_done,
        p.files_total,
        size(load_done_bytes(p)),
        size(p.bytes_total),
        percent(load_done_bytes(p), p.bytes_total),
        size(rate as u64),
    )
}

/// A load job's state in one word.
pub fn state(s: weir_admin::protocol::JobState) -> &'static str {
    use weir_admin::protocol::JobState::*;
    match s {
        Scanning => "scanning",
        Running => "running",
        Done => "done",
        Cancelled => "cancelled",
    }
}

/// The summary of a finished (or cancelled) load.
pub fn load_summary(p: &JobProgress) -> String {
    let loaded = p.files_done - p.files_skipped - p.files_failed;
    let rate = p.bytes_fetched as f64 / p.elapsed.max(0.001);
    format!(
        "{} {}: {} files ({} loaded, {} already cached, {} failed), {} fetched, {} already cached, in {:.1}s ({}/s); {:.1}% of {} cached",
        if p.state == weir_admin::protocol::JobState::Cancelled {
            "cancelled loading"
        } else {
            "loaded"
        },
        p.path,
        p.files_done,
        loaded,
        p.files_skipped,
        p.files_failed,
        size(p.bytes_fetched),
        size(p.bytes_already),
        p.elapsed,
        size(rate as u64),
        percent(load_done_bytes(p), p.bytes_total),
        size(p.bytes_total),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_sizes() {
        assert_eq!(percent(0, 0), 100.0);
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(size(1 << 20), "1.0 MiB");
    }
}
