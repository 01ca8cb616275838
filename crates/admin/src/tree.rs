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
    walk_seeing(fs, path, recursive, |_| {}).await
}

/// [`walk`], calling `found` with the size of each regular file as it is
/// found, so that a long walk can show how far it got.
pub(crate) async fn walk_seeing(
    fs: &Fs,
    path: &str,
    recursive: bool,
    found: impl Fn(u64),
) -> Result<Walk, FsError> {
    let path = weir_namespace::normalize(path)
        .map_err(|e| FsError::new(libc::EINVAL, format!("{path}: {e}")))?;
    let stat = fs.stat_at(&path).await?;
    let mut walk = Walk::default();
    let is_dir = stat.kind == Kind::Dir;
    if stat.kind == Kind::File {
        found(stat.size);
    }
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
            if e.stat.kind == Kind::File {
                found(e.stat.size);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use weir_cache::{PageCache, PageCacheConfig};
    use weir_fs::FsConfig;
    use weir_namespace::{MountSpec, MountTable};

    use super::*;

    #[test]
    fn each_file_is_seen_once_as_it_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("d/e")).unwrap();
        std::fs::write(data.join("d/a"), vec![0u8; 10]).unwrap();
        std::fs::write(data.join("d/e/b"), vec![0u8; 200]).unwrap();
        std::fs::write(data.join("d/e/c"), b"").unwrap();
        let spec = MountSpec {
            path: "/".into(),
            ufs: format!("file://{}", data.display()),
            options: BTreeMap::new(),
        };
        let table = MountTable::open(&[spec], &Default::default()).unwrap();
        let pages = PageCache::open(PageCacheConfig {
            dir: dir.path().join("pages"),
            capacity: 1 << 20,
            page_size: 4096,
            memory: 0,
        })
        .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (files, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
        let walk = rt.block_on(async {
            let fs = Fs::new(table, Arc::new(pages), FsConfig::new(dir.path().join("st"))).unwrap();
            walk_seeing(&fs, "/d", true, |size| {
                files.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(size, Ordering::Relaxed);
            })
            .await
            .unwrap()
        });
        assert_eq!(files.load(Ordering::Relaxed), 3);
        assert_eq!(bytes.load(Ordering::Relaxed), 210);
        assert_eq!(walk.files().count(), 3);
    }
}
