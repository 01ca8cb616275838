//! Path-based access for the admin endpoint (`weir fs`): the stat and the
//! listing of a namespace path, how much of a file's current version is in
//! the page cache, fetching the pages that are not, and dropping them.
//!
//! These go through the same caches and the same single-flight page
//! fetches as reads through the mount, so a preload and a reader of the
//! same file never fetch a page twice.

use futures::StreamExt;
use weir_ufs::{Entry, Kind, Stat};

use crate::Fs;
use crate::error::{FsError, Result};
use crate::read::Source;

/// Pages of one file fetched at once by [`Fs::load_at`]; the UFS-wide
/// limit (`ufs_concurrency`) still applies on top.
const LOAD_PAGES_AT_ONCE: usize = 4;

/// How much of a file's current version is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached {
    /// The file's size in bytes.
    pub size: u64,
    /// Bytes of it in the page cache.
    pub cached: u64,
}

/// What [`Fs::load_at`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// The file's size in bytes.
    pub size: u64,
    /// Bytes that were cached already.
    pub already: u64,
    /// Bytes fetched from the UFS now.
    pub fetched: u64,
}

fn clean(path: &str) -> Result<String> {
    weir_namespace::normalize(path).map_err(|e| FsError::new(libc::EINVAL, format!("{path}: {e}")))
}

impl Fs {
    /// The attributes of namespace path `path`.
    pub async fn stat_at(&self, path: &str) -> Result<Stat> {
        self.stat_path(&clean(path)?).await
    }

    /// The entries of directory `path`, sorted by name.
    pub async fn list_at(&self, path: &str) -> Result<Vec<Entry>> {
        let path = clean(path)?;
        if self.stat_path(&path).await?.kind != Kind::Dir {
            return Err(FsError::new(
                libc::ENOTDIR,
                format!("{path} is not a directory"),
            ));
        }
        self.listing(&path).await
    }

    /// How much of file `path` (the version the UFS holds now) is cached.
    pub async fn cached_at(&self, path: &str) -> Result<Cached> {
        let src = self.file_source(path).await?;
        let page = self.inner.pages.page_size();
        let cached = (0..src.size.div_ceil(page))
            .filter(|&i| self.inner.pages.contains(src.key, i))
            .map(|i| page_len(&src, i, page))
            .sum();
        Ok(Cached {
            size: src.size,
            cached,
        })
    }

    /// Fetches every page of file `path` that is not cached yet, calling
    /// `progress` with the bytes of each page as it lands. Dropping the
    /// future stops it; pages already fetched stay cached.
    pub async fn load_at(&self, path: &str, progress: &(dyn Fn(u64) + Sync)) -> Result<Loaded> {
        let src = self.file_source(path).await?;
        let page = self.inner.pages.page_size();
        let (present, missing): (Vec<u64>, Vec<u64>) =
            (0..src.size.div_ceil(page)).partition(|&i| self.inner.pages.contains(src.key, i));
        let already = present.iter().map(|&i| page_len(&src, i, page)).sum();
        let src = &src;
        let mut fetches = futures::stream::iter(missing)
            .map(|i| async move { self.page(src, i).await.map(|data| data.len() as u64) })
            .buffer_unordered(LOAD_PAGES_AT_ONCE);
        let mut fetched = 0;
        while let Some(r) = fetches.next().await {
            let n = r?;
            fetched += n;
            progress(n);
        }
        Ok(Loaded {
            size: src.size,
            already,
            fetched,
        })
    }

    /// Drops the cached pages of file `path` (its current version) and
    /// returns how many bytes they held. A file the kernel reads straight
    /// from the cache (passthrough) is in use and is kept: EBUSY.
    pub async fn drop_cached_at(&self, path: &str) -> Result<u64> {
        let cached = self.cached_at(path).await?;
        let src = self.file_source(path).await?;
        if !self.inner.pages.remove_object(src.key) {
            return Err(FsError::new(
                libc::EBUSY,
                format!(
                    "{}: open and read straight from the cache; close it first",
                    src.path
                ),
            ));
        }
        Ok(cached.cached)
    }

    /// What a read of file `path` would read now: the object version the
    /// UFS holds, pinned as an open would pin it.
    async fn file_source(&self, path: &str) -> Result<Source> {
        let path = clean(path)?;
        let stat = self.stat_backing(&path).await?;
        if stat.kind != Kind::File {
            return Err(FsError::new(libc::EISDIR, format!("{path} is not a file")));
        }
        let (mount, rel) = self.ufs_of(&path)?;
        let stat = self.pinned(&path, &mount, &rel, stat).await?;
        Ok(self.source(&path, &mount, &rel, &stat))
    }
}

/// Bytes in page `idx` of `src`: a full page but for the last.
fn page_len(src: &Source, idx: u64, page: u64) -> u64 {
    page.min(src.size.saturating_sub(idx * page))
}
