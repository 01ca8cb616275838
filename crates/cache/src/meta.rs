//! Metadata cache: stat results and directory listings with a TTL.
//!
//! A negative entry ("this path does not exist") is cached like a positive
//! one, so a program probing for missing files does not hit the UFS each
//! time. Changes made through weir update or invalidate entries at once;
//! changes made behind weir's back show after at most the TTL.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use weir_ufs::{Entry, Stat};

/// Stat and listing cache keyed by namespace path.
#[derive(Debug, Clone)]
pub struct MetaCache {
    stats: Option<Cache<String, Option<Stat>>>,
    lists: Option<Cache<String, Arc<Vec<Entry>>>>,
}

impl MetaCache {
    /// A cache keeping entries for `ttl`; a zero TTL disables it.
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        if ttl.is_zero() {
            return MetaCache {
                stats: None,
                lists: None,
            };
        }
        MetaCache {
            stats: Some(
                Cache::builder()
                    .time_to_live(ttl)
                    .max_capacity(max_entries)
                    .support_invalidation_closures()
                    .build(),
            ),
            lists: Some(
                Cache::builder()
                    .time_to_live(ttl)
                    .max_capacity(max_entries / 64 + 1)
                    .support_invalidation_closures()
                    .build(),
            ),
        }
    }

    /// The cached stat of `path`: `Some(None)` means "known not to exist".
    pub fn stat(&self, path: &str) -> Option<Option<Stat>> {
        self.stats.as_ref()?.get(path)
    }

    /// Remembers the stat of `path` (`None`: it does not exist).
    pub fn put_stat(&self, path: &str, stat: Option<Stat>) {
        if let Some(c) = &self.stats {
            c.insert(path.to_string(), stat);
        }
    }

    /// The cached listing of directory `path`.
    pub fn list(&self, path: &str) -> Option<Arc<Vec<Entry>>> {
        self.lists.as_ref()?.get(path)
    }

    /// Remembers a listing, and the stat of each child it names.
    pub fn put_list(&self, dir: &str, entries: Arc<Vec<Entry>>) {
        if let Some(c) = &self.lists {
            c.insert(dir.to_string(), entries);
        }
    }

    /// Forgets `path` and the listing of its parent directory.
    pub fn invalidate(&self, path: &str, parent: &str) {
        if let Some(c) = &self.stats {
            c.invalidate(path);
        }
        if let Some(c) = &self.lists {
            c.invalidate(path);
            c.invalidate(parent);
        }
    }

    /// Forgets everything (the mount table changed, or changes made
    /// elsewhere may have been missed).
    pub fn clear(&self) {
        if let Some(c) = &self.stats {
            c.invalidate_all();
        }
        if let Some(c) = &self.lists {
            c.invalidate_all();
        }
    }

    /// Forgets everything at or below `path` (after a directory rename).
    pub fn invalidate_tree(&self, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let owned = path.to_string();
        if let Some(c) = &self.stats {
            let p = prefix.clone();
            let o = owned.clone();
            let _ = c.invalidate_entries_if(move |k, _| k == &o || k.starts_with(&p));
        }
        if let Some(c) = &self.lists {
            let _ = c.invalidate_entries_if(move |k, _| k == &owned || k.starts_with(&prefix));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_ufs::Kind;

    fn file(size: u64) -> Stat {
        Stat {
            kind: Kind::File,
            size,
            mtime: None,
            etag: None,
        }
    }

    #[test]
    fn positive_and_negative_entries_expire() {
        // Long enough that a preempted test thread still sees the entries
        // before they expire.
        let c = MetaCache::new(Duration::from_secs(1), 100);
        c.put_stat("/a", Some(file(3)));
        c.put_stat("/missing", None);
        assert_eq!(c.stat("/a"), Some(Some(file(3))));
        assert_eq!(c.stat("/missing"), Some(None));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(c.stat("/a"), None);
        assert_eq!(c.stat("/missing"), None);
    }

    #[test]
    fn invalidate_drops_path_and_parent_listing() {
        let c = MetaCache::new(Duration::from_secs(60), 100);
        c.put_stat("/d/a", Some(file(1)));
        c.put_list("/d", Arc::new(vec![]));
        c.invalidate("/d/a", "/d");
        assert_eq!(c.stat("/d/a"), None);
        assert!(c.list("/d").is_none());
    }

    #[test]
    fn invalidate_tree_drops_descendants_only() {
        let c = MetaCache::new(Duration::from_secs(60), 100);
        for p in ["/d", "/d/a", "/d/a/b", "/dd"] {
            c.put_stat(p, Some(file(1)));
        }
        c.invalidate_tree("/d");
        c.stats.as_ref().unwrap().run_pending_tasks();
        assert_eq!(c.stat("/d/a/b"), None);
        assert_eq!(c.stat("/d"), None);
        assert!(c.stat("/dd").is_some());
    }

    #[test]
    fn clear_forgets_everything() {
        let c = MetaCache::new(Duration::from_secs(60), 100);
        c.put_stat("/a", Some(file(1)));
        c.put_stat("/gone", None);
        c.put_list("/", Arc::new(vec![]));
        c.clear();
        assert_eq!(c.stat("/a"), None);
        assert_eq!(c.stat("/gone"), None);
        assert!(c.list("/").is_none());
    }

    #[test]
    fn zero_ttl_disables() {
        let c = MetaCache::new(Duration::ZERO, 100);
        c.put_stat("/a", Some(file(1)));
        assert_eq!(c.stat("/a"), None);
    }
}
