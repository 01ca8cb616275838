//! Open files outlive their names. On a local disk, a file unlinked or
//! replaced while open stays readable through its descriptors; in weir the
//! object is gone from the storage, so before weir removes or replaces a
//! name it fetches what open readers of it have not cached yet and pins
//! their object versions until they close. Bounded: a version larger than
//! half the cache is not kept, and its readers fail on uncached pages
//! (ESTALE) as before.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::Fs;
use crate::handle::FileHandle;

impl Fs {
    /// Keeps the open readers of `path` (and of everything below it when
    /// `tree`) readable after their name goes away.
    pub(crate) async fn keep_open_readers(&self, path: &str, tree: bool) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let mut done = HashSet::new();
        for h in self.read_handles() {
            let Some(r) = &h.reader else { continue };
            let src = &r.src;
            let hit = src.path == path || (tree && src.path.starts_with(&prefix));
            if !hit || h.kept.load(Ordering::Relaxed) {
                continue;
            }
            if done.contains(&src.key) || self.fetch_whole(src).await {
                done.insert(src.key);
                self.inner.pages.pin(src.key);
                h.kept.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Fetches every missing page of `src`; false when it is too large to
    /// keep or a fetch fails.
    async fn fetch_whole(&self, src: &crate::read::Source) -> bool {
        let pages = &self.inner.pages;
        if src.size > pages.capacity() / 2 {
            tracing::warn!(path = %src.path, size = src.size, "too large to keep for its open readers once its name is gone");
            return false;
        }
        let count = src.size.div_ceil(pages.page_size());
        for idx in 0..count {
            if let Err(e) = self.page(src, idx).await {
                tracing::warn!(path = %src.path, error = %e, "cannot keep a file for its open readers");
                return false;
            }
        }
        pages.is_whole(src.key, src.size)
    }

    /// Undoes what [`Fs::keep_open_readers`] did for a released handle.
    pub(crate) fn release_kept(&self, h: &FileHandle) {
        if h.kept.swap(false, Ordering::Relaxed)
            && let Some(r) = &h.reader
        {
            self.inner.pages.unpin(r.src.key);
        }
    }

    fn read_handles(&self) -> Vec<Arc<FileHandle>> {
        self.inner
            .handles
            .lock()
            .values()
            .filter_map(|h| h.file())
            .filter(|h| h.reader.is_some())
            .collect()
    }
}
