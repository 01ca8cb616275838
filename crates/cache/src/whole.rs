//! Whole cached objects, for FUSE passthrough: the kernel can read a file
//! straight from its sparse data file once every page is there and has been
//! read back against its checksum. While it does, the object is pinned:
//! its pages are never evicted, because the kernel would read the holes
//! eviction punches as zeros.

use std::os::unix::fs::MetadataExt;

use crate::pages::{Index, ObjectKey, PageCache};

impl PageCache {
    fn page_count(&self, size: u64) -> u64 {
        size.div_ceil(self.cfg.page_size)
    }

    /// Whether every page of `key`, an object of `size` bytes, is cached.
    pub fn is_whole(&self, key: ObjectKey, size: u64) -> bool {
        size > 0 && self.cached_pages(key) == self.page_count(size)
    }

    /// The data file's change time and length, which any write to it moves.
    fn stamp(&self, key: ObjectKey) -> Option<(i64, i64, u64)> {
        let m = std::fs::metadata(self.data_path(key)).ok()?;
        Some((m.ctime(), m.ctime_nsec(), m.len()))
    }

    /// Whether `key` is whole and its pages were checked since its data
    /// file last changed.
    pub fn is_verified(&self, key: ObjectKey, size: u64) -> bool {
        if !self.is_whole(key, size) {
            return false;
        }
        let Some(at) = self.index.lock().verified.get(&key).copied() else {
            return false;
        };
        if self.stamp(key) == Some(at) {
            return true;
        }
        tracing::warn!(object = ?key, "a cached data file changed after it was checked; checking again");
        self.index.lock().verified.remove(&key);
        false
    }

    /// Reads every page of `key` back and checks it, dropping any that
    /// fails (it is fetched again on the next read). True when the whole
    /// object is present and intact.
    pub fn verify(&self, key: ObjectKey, size: u64) -> bool {
        if !self.is_whole(key, size) {
            return false;
        }
        let Some(before) = self.stamp(key) else {
            return false;
        };
        for idx in 0..self.page_count(size) {
            let Some(len) = self.index.lock().lru.peek(&(key, idx)).copied() else {
                return false;
            };
            if !matches!(self.read_verified(key, idx, len), Ok(Some(_))) {
                tracing::warn!(page = idx, "cached page failed its checksum; refetching");
                let mut ix = self.index.lock();
                self.remove_locked(&mut ix, key, idx);
                return false;
            }
        }
        let after = self.stamp(key);
        let mut ix = self.index.lock();
        // A page may have gone, or the file changed, while we read: only a
        // whole object whose file stayed the same counts.
        let whole = ix.pages_per_object.get(&key).copied() == Some(self.page_count(size));
        if whole && after == Some(before) {
            ix.verified.insert(key, before);
            return true;
        }
        false
    }

    /// Keeps `key`'s pages from eviction (once per user reading it directly).
    pub fn pin(&self, key: ObjectKey) {
        *self.index.lock().pinned.entry(key).or_insert(0) += 1;
    }

    /// Undoes one [`PageCache::pin`].
    pub fn unpin(&self, key: ObjectKey) {
        let mut ix = self.index.lock();
        unpin_locked(&mut ix, key);
    }

    /// How many opens pin `key`.
    pub fn pins(&self, key: ObjectKey) -> u32 {
        self.index.lock().pinned.get(&key).copied().unwrap_or(0)
    }
}

fn unpin_locked(ix: &mut Index, key: ObjectKey) {
    if let Some(n) = ix.pinned.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            ix.pinned.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::PageCacheConfig;

    const PAGE: u64 = 4096;

    fn cache(dir: &std::path::Path, pages: u64) -> PageCache {
        PageCache::open(PageCacheConfig {
            dir: dir.to_path_buf(),
            capacity: pages * PAGE,
            page_size: PAGE,
            memory: 0,
        })
        .unwrap()
    }

    #[test]
    fn an_object_is_whole_once_every_page_is_there_and_verified_once_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 8);
        let k = ObjectKey::new("u", "f", "v");
        let size = 2 * PAGE + 10;
        c.put(k, 0, &[1; PAGE as usize]).unwrap();
        c.put(k, 2, &[3; 10]).unwrap();
        assert!(!c.is_whole(k, size));
        assert!(!c.verify(k, size));
        c.put(k, 1, &[2; PAGE as usize]).unwrap();
        assert!(c.is_whole(k, size));
        assert!(!c.is_verified(k, size), "not read back yet");
        assert!(c.verify(k, size));
        assert!(c.is_verified(k, size));
        assert_eq!(std::fs::metadata(c.data_path(k)).unwrap().len(), size);
        assert!(
            !c.is_whole(ObjectKey::new("u", "e", "v"), 0),
            "empty files have no data file"
        );
    }

    #[test]
    fn a_corrupt_page_fails_verification_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 8);
        let k = ObjectKey::new("u", "f", "v");
        c.put(k, 0, &[1; PAGE as usize]).unwrap();
        c.put(k, 1, &[2; PAGE as usize]).unwrap();
        assert!(c.verify(k, 2 * PAGE));
        std::thread::sleep(std::time::Duration::from_millis(10));
        let f = OpenOptions::new().write(true).open(c.data_path(k)).unwrap();
        f.write_all_at(b"rot", PAGE + 5).unwrap();
        assert!(
            !c.is_verified(k, 2 * PAGE),
            "a write to the data file undoes the check"
        );
        assert!(!c.verify(k, 2 * PAGE));
        assert!(!c.contains(k, 1));
        assert!(c.contains(k, 0));
    }

    #[test]
    fn pinned_objects_are_never_evicted_and_a_full_cache_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 2);
        let pinned = ObjectKey::new("u", "p", "v");
        let other = ObjectKey::new("u", "o", "v");
        c.put(pinned, 0, &[1; PAGE as usize]).unwrap();
        c.pin(pinned);
        c.put(other, 0, &[2; PAGE as usize]).unwrap();
        c.put(other, 1, &[3; PAGE as usize]).unwrap();
        assert!(c.contains(pinned, 0), "the pinned page stayed");
        assert!(!c.contains(other, 0), "the other object made room");
        assert!(!c.remove_object(pinned), "a pinned object is not dropped");
        c.pin(pinned);
        c.unpin(pinned);
        assert_eq!(c.pins(pinned), 1);
        c.put(pinned, 1, &[5; PAGE as usize]).unwrap();
        let third = ObjectKey::new("u", "t", "v");
        assert!(
            matches!(
                c.put(third, 0, &[4; PAGE as usize]),
                Err(crate::CacheError::Full)
            ),
            "nothing can make room"
        );
        c.unpin(pinned);
        c.put(third, 0, &[6; PAGE as usize]).unwrap();
        assert!(
            !c.contains(pinned, 0),
            "unpinned, it is evicted like any other"
        );
        assert!(c.used() <= c.capacity());
    }
}
