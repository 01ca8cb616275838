//! Walking the namespace below a path, for the commands that act on whole
//! trees (`ls -R`, `check-cached`, `load`, `drop-cache`).

use std::time::UNIX_EPOCH;

use weir_fs::{Fs, FsError, Kind};
use weir_ufs::Stat;

use crate::protocol::{EntryInfo, EntryKind};

/// What a walk found: every entry (the start first), and the directories
/// that could not be listed, with why.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub entries: Vec<(String, Stat)>,
    pub errors: Vec<String>,
}

impl Walk {
    /// The regular files found, with their sizes.
    pub fn files(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries
            .iter()
            .filter(|(_, s)| s.kind == Kind::File)
            .map(|(p, s)| (p.as_str(), s.size))
    }
}

/// `path` and, if it is a directory and `recursive`, everything below it
/// (otherwise its own entries). Fails only if `path` itself cannot be
/// read; failures below are collected.
pub(crate) async fn walk(fs: &Fs, path: &str, recursive: bool) -> Result<Walk, FsError> {
    let path = weir_namespace::normalize(path)
        .map_err(|e| FsError::new(libc::EINVAL, format!("{path}: {e}")))?;
    let stat = fs.stat_at(&path).await?;
    let mut walk = Walk::default();
    let is_dir = stat.kind == Kind::Dir;
    walk.entries.push((path.clone(), stat));
    if !is_dir {
        return Ok(walk);
    }
    let mut dirs = vec![path];
    let mut first = true;
    while let Some(dir) = dirs.pop() {
        let listed = fs.list_at(&dir).await;
        let entries = match listed {
            Ok(e) => e,
            Err(e) if first => return Err(e),
            Err(e) => {
                walk.errors
                    .push(crate::protocol::ErrorReply::from(e).message);
                continue;
            }
        };
        first = false;
        for e in entries {
            let child = weir_namespace::child(&dir, &e.name);
            if recursive && e.stat.kind == Kind::Dir {
                dirs.push(child.clone());
            }
            walk.entries.push((child, e.stat));
        }
    }
    walk.entries[1..].sort_by(|a, b| a.0.cmp(&b.0));
    Ok(walk)
}

/// The protocol's view of an entry.
pub(crate) fn info(fs: &Fs, path: &str, stat: &Stat) -> EntryInfo {
    let table = fs.table();
    let ufs = match table.resolve(path) {
        weir_namespace::Resolved::Ufs { mount, .. } => {
            Some(weir_ufs::uri::redact(&table.mount(mount).spec.ufs))
        }
        _ => None,
    };
    EntryInfo {
        path: path.to_string(),
        kind: match stat.kind {
            Kind::File => EntryKind::File,
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink => EntryKind::Symlink,
        },
        size: if stat.kind == Kind::Dir { 0 } else { stat.size },
        mtime: stat
            .mtime
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok()),
        ufs,
    }
}
