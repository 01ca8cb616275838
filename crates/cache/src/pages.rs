//! The on-disk page cache.
//!
//! Layout: each cached object version is one sparse file `<hex>.data` that
//! holds its pages at their own offsets, and a `<hex>.meta` beside it with a
//! header and one record per page (CRC32C and length; length 0 = absent).
//! Keeping an object in one file is what later lets a fully cached file be
//! handed to the kernel for FUSE passthrough.
//!
//! Writes put the data first and the record second, without fsync: after a
//! crash, a record may describe data that never reached the disk, and the
//! checksum catches that on the next read, which refetches the page.
//!
//! Capacity is counted in page bytes. Before a page is stored, least recently
//! used pages are evicted (hole punched, record cleared) until it fits, so
//! the cache never holds more than its capacity of page data.
//!
//! Activity is counted twice: in [`CacheStats`], for callers that ask this
//! cache directly, and as `weir_cache_*` metrics for the Prometheus endpoint.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use weir_metrics::names;

const MAGIC: &[u8; 8] = b"WEIRPG01";
const HEADER_LEN: u64 = 32;
const RECORD_LEN: u64 = 8;

/// Errors of the page cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The configuration cannot work.
    #[error("cache configuration: {0}")]
    Config(String),
    /// Every page that could make room is pinned by an open file.
    #[error("the cache is full of pages of files being read directly")]
    Full,
    /// A local I/O error.
    #[error("cache {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl CacheError {
    fn io(path: &Path, source: io::Error) -> Self {
        CacheError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The errno for an application.
    pub fn errno(&self) -> i32 {
        match self {
            CacheError::Config(_) => libc::EINVAL,
            CacheError::Full => libc::ENOSPC,
            CacheError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// How the page cache is set up.
#[derive(Debug, Clone)]
pub struct PageCacheConfig {
    /// Directory holding the cache files.
    pub dir: PathBuf,
    /// Maximum bytes of page data kept on disk.
    pub capacity: u64,
    /// Page size in bytes.
    pub page_size: u64,
    /// Bytes of hot pages also kept in memory (0: no memory tier).
    pub memory: u64,
}

/// Identity of one version of one object: a hash of the UFS, the path and
/// the version string, so a changed object never meets its old pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(u128);

impl ObjectKey {
    /// The key for `path` in `ufs` at `version`.
    pub fn new(ufs: &str, path: &str, version: &str) -> Self {
        let mut buf = Vec::with_capacity(ufs.len() + path.len() + version.len() + 2);
        buf.extend_from_slice(ufs.as_bytes());
        buf.push(0);
        buf.extend_from_slice(path.as_bytes());
        buf.push(0);
        buf.extend_from_slice(version.as_bytes());
        ObjectKey(xxhash_rust::xxh3::xxh3_128(&buf))
    }

    fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }

    fn from_hex(s: &str) -> Option<Self> {
        u128::from_str_radix(s, 16).ok().map(ObjectKey)
    }
}

/// Counters of cache activity since start.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Pages served from the cache.
    pub hits: AtomicU64,
    /// Pages asked for and not present.
    pub misses: AtomicU64,
    /// Pages stored.
    pub inserts: AtomicU64,
    /// Pages evicted to make room.
    pub evictions: AtomicU64,
    /// Pages whose checksum did not match (dropped and refetched).
    pub corruptions: AtomicU64,
}

type PageId = (ObjectKey, u64);

/// A present page found in a meta file: its index and length.
type PageRecord = (u64, u32);

#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) lru: LruCache<PageId, u32>,
    pub(crate) pages_per_object: HashMap<ObjectKey, u64>,
    pub(crate) used: u64,
    /// Objects the kernel reads straight from their data file (FUSE
    /// passthrough): never evicted while pinned, by how many opens.
    pub(crate) pinned: HashMap<ObjectKey, u32>,
    /// Objects whose every page was read back and matched its checksum,
    /// with the change time and length their data file had then: a data
    /// file written to since (by anyone) must be checked again.
    pub(crate) verified: HashMap<ObjectKey, (i64, i64, u64)>,
}

/// The disk page cache. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PageCache {
    pub(crate) cfg: PageCacheConfig,
    root: PathBuf,
    pub(crate) index: Mutex<Index>,
    memory: Option<moka::sync::Cache<PageId, Bytes>>,
    stats: CacheStats,
}

impl PageCache {
    /// Opens (or creates) the cache in `cfg.dir`, re-adopting the pages a
    /// previous run left there.
    pub fn open(cfg: PageCacheConfig) -> Result<PageCache, CacheError> {
        if cfg.page_size < 4096 || !cfg.page_size.is_power_of_two() {
            return Err(CacheError::Config(format!(
                "page_size {} must be a power of two of at least 4 KiB",
                cfg.page_size
            )));
        }
        if cfg.capacity < cfg.page_size {
            return Err(CacheError::Config(format!(
                "capacity {} is smaller than one page ({})",
                cfg.capacity, cfg.page_size
            )));
        }
        let root = cfg.dir.join("pages-v1");
        std::fs::create_dir_all(&root).map_err(|e| CacheError::io(&root, e))?;
        let memory = (cfg.memory > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cfg.memory)
                .weigher(|_: &PageId, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .build()
        });
        let cache = PageCache {
            index: Mutex::new(Index {
                lru: LruCache::unbounded(),
                pages_per_object: HashMap::new(),
                used: 0,
                pinned: HashMap::new(),
                verified: Default::default(),
            }),
            cfg,
            root,
            memory,
            stats: CacheStats::default(),
        };
        metrics::gauge!(names::CACHE_CAPACITY_BYTES).set(cache.cfg.capacity as f64);
        cache.adopt_existing()?;
        Ok(cache)
    }

    /// The page size.
    pub fn page_size(&self) -> u64 {
        self.cfg.page_size
    }

    /// Bytes of page data held on disk now.
    pub fn used(&self) -> u64 {
        self.index.lock().used
    }

    /// The configured capacity.
    pub fn capacity(&self) -> u64 {
        self.cfg.capacity
    }

    /// Activity counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The sparse data file of an object version.
    pub fn data_path(&self, key: ObjectKey) -> PathBuf {
        let hex = key.hex();
        self.root.join(&hex[..2]).join(format!("{hex}.data"))
    }

    fn meta_path(&self, key: ObjectKey) -> PathBuf {
        let hex = key.hex();
        self.root.join(&hex[..2]).join(format!("{hex}.meta"))
    }

    /// Whether page `idx` of `key` is present (without touching LRU order).
    pub fn contains(&self, key: ObjectKey, idx: u64) -> bool {
        self.index.lock().lru.contains(&(key, idx))
    }

    /// How many of the object's pages are cached.
    pub fn cached_pages(&self, key: ObjectKey) -> u64 {
        self.index
            .lock()
            .pages_per_object
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// Page `idx` of `key`, if cached and intact.
    pub fn get(&self, key: ObjectKey, idx: u64) -> Option<Bytes> {
        if let Some(mem) = &self.memory
            && let Some(b) = mem.get(&(key, idx))
        {
            self.index.lock().lru.promote(&(key, idx));
            self.record_hit(b.len());
            return Some(b);
        }
        let len = self.index.lock().lru.get(&(key, idx)).copied();
        let Some(len) = len else {
            self.record_miss();
            return None;
        };
        match self.read_verified(key, idx, len) {
            Ok(Some(data)) => {
                self.record_hit(data.len());
                if let Some(mem) = &self.memory {
                    mem.insert((key, idx), data.clone());
                }
                Some(data)
            }
            Ok(None) => {
                // Checksum mismatch: drop the page unless an eviction raced us.
                let mut ix = self.index.lock();
                if ix.lru.contains(&(key, idx)) {
                    self.stats.corruptions.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(names::CACHE_CORRUPTIONS).increment(1);
                    tracing::warn!(object = %key.hex(), page = idx, "cached page failed its checksum; refetching");
                    self.remove_locked(&mut ix, key, idx);
                }
                self.record_miss();
                None
            }
            Err(e) => {
                tracing::warn!(object = %key.hex(), page = idx, error = %e, "cannot read cached page; refetching");
                let mut ix = self.index.lock();
                self.remove_locked(&mut ix, key, idx);
                self.record_miss();
                None
            }
        }
    }

    fn record_hit(&self, bytes: usize) {
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::CACHE_HITS).increment(1);
        metrics::counter!(names::CACHE_HIT_BYTES).increment(bytes as u64);
    }

    fn record_miss(&self) {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::CACHE_MISSES).increment(1);
    }

    pub(crate) fn read_verified(
        &self,
        key: ObjectKey,
        idx: u64,
        len: u32,
    ) -> io::Result<Option<Bytes>> {
        let meta = File::open(self.meta_path(key))?;
        let mut rec = [0u8; RECORD_LEN as usize];
        meta.read_exact_at(&mut rec, HEADER_LEN + idx * RECORD_LEN)?;
        let (crc, rec_len) = parse_record(&rec);
        if rec_len != len {
            return Ok(None);
        }
        let data = File::open(self.data_path(key))?;
        let mut buf = vec![0u8; len as usize];
        data.read_exact_at(&mut buf, idx * self.cfg.page_size)?;
        if crc32c::crc32c(&buf) != crc {
            return Ok(None);
        }
        Ok(Some(Bytes::from(buf)))
    }

    /// Tells the kernel that pages `from..to` of `key` will be read soon, so
    /// it reads the cache file ahead. Each [`PageCache::get`] opens the file
    /// afresh, which would otherwise start every read with no read-ahead.
    pub fn will_need(&self, key: ObjectKey, from: u64, to: u64) {
        if to <= from {
            return;
        }
        let Ok(file) = File::open(self.data_path(key)) else {
            return;
        };
        let offset = from * self.cfg.page_size;
        let len = (to - from) * self.cfg.page_size;
        // SAFETY: posix_fadvise on a descriptor we own; integers only.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Stores page `idx` of `key`, evicting older pages to stay in capacity.
    pub fn put(&self, key: ObjectKey, idx: u64, data: &[u8]) -> Result<(), CacheError> {
        if data.is_empty() || data.len() as u64 > self.cfg.page_size {
            return Err(CacheError::Config(format!(
                "page of {} bytes does not fit page size {}",
                data.len(),
                self.cfg.page_size
            )));
        }
        let len = data.len() as u64;
        let mut ix = self.index.lock();
        if ix.lru.contains(&(key, idx)) {
            ix.lru.promote(&(key, idx));
            return Ok(());
        }
        while ix.used + len > self.cfg.capacity {
            let Some((k, i)) = Self::victim(&mut ix) else {
                return Err(CacheError::Full);
            };
            self.remove_locked(&mut ix, k, i);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::CACHE_EVICTIONS).increment(1);
        }
        self.write_page(key, idx, data)?;
        ix.lru.put((key, idx), len as u32);
        *ix.pages_per_object.entry(key).or_insert(0) += 1;
        ix.used += len;
        used_gauge(ix.used);
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        if let Some(mem) = &self.memory {
            mem.insert((key, idx), Bytes::copy_from_slice(data));
        }
        Ok(())
    }

    fn write_page(&self, key: ObjectKey, idx: u64, data: &[u8]) -> Result<(), CacheError> {
        let data_path = self.data_path(key);
        let meta_path = self.meta_path(key);
        if let Some(dir) = data_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        }
        let meta = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&meta_path)
            .map_err(|e| CacheError::io(&meta_path, e))?;
        if meta
            .metadata()
            .map_err(|e| CacheError::io(&meta_path, e))?
            .len()
            < HEADER_LEN
        {
            let mut header = [0u8; HEADER_LEN as usize];
            header[..8].copy_from_slice(MAGIC);
            header[8..16].copy_from_slice(&self.cfg.page_size.to_le_bytes());
            meta.write_all_at(&header, 0)
                .map_err(|e| CacheError::io(&meta_path, e))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(|e| CacheError::io(&data_path, e))?;
        file.write_all_at(data, idx * self.cfg.page_size)
            .map_err(|e| CacheError::io(&data_path, e))?;
        let mut rec = [0u8; RECORD_LEN as usize];
        rec[..4].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
        rec[4..].copy_from_slice(&(data.len() as u32).to_le_bytes());
        meta.write_all_at(&rec, HEADER_LEN + idx * RECORD_LEN)
            .map_err(|e| CacheError::io(&meta_path, e))?;
        Ok(())
    }

    /// The least recently used page of an object that is not pinned.
    /// Pinned pages met on the way are moved to the recent end, so that
    /// later evictions do not walk past them again.
    fn victim(ix: &mut Index) -> Option<PageId> {
        for _ in 0..ix.lru.len() {
            let (id, _) = ix.lru.peek_lru().map(|(k, v)| (*k, *v))?;
            if !ix.pinned.contains_key(&id.0) {
                return Some(id);
            }
            ix.lru.promote(&id);
        }
        None
    }

    /// Drops one page: clears its record, punches its hole, and removes the
    /// object's files when it was the last page.
    pub(crate) fn remove_locked(&self, ix: &mut Index, key: ObjectKey, idx: u64) {
        let Some(len) = ix.lru.pop(&(key, idx)) else {
            return;
        };
        ix.verified.remove(&key);
        ix.used -= u64::from(len);
        used_gauge(ix.used);
        if let Some(mem) = &self.memory {
            mem.invalidate(&(key, idx));
        }
        let remaining = match ix.pages_per_object.get_mut(&key) {
            Some(n) => {
                *n -= 1;
                *n
            }
            None => 0,
        };
        if remaining == 0 {
            ix.pages_per_object.remove(&key);
            let _ = std::fs::remove_file(self.meta_path(key));
            let _ = std::fs::remove_file(self.data_path(key));
            return;
        }
        if let Ok(meta) = OpenOptions::new().write(true).open(self.meta_path(key)) {
            let _ = meta.write_all_at(&[0u8; RECORD_LEN as usize], HEADER_LEN + idx * RECORD_LEN);
        }
        if let Ok(data) = OpenOptions::new().write(true).open(self.data_path(key)) {
            punch_hole(&data, idx * self.cfg.page_size, u64::from(len));
        }
    }

    /// Drops every cached page of `key`, unless the kernel is reading its
    /// data file directly (pinned); says whether it did.
    pub fn remove_object(&self, key: ObjectKey) -> bool {
        let mut ix = self.index.lock();
        if ix.pinned.contains_key(&key) {
            return false;
        }
        let pages: Vec<u64> = ix
            .lru
            .iter()
            .filter(|((k, _), _)| *k == key)
            .map(|((_, i), _)| *i)
            .collect();
        for i in pages {
            self.remove_locked(&mut ix, key, i);
        }
        true
    }

    /// Rebuilds the index from the files a previous run left, oldest first,
    /// then evicts down to capacity (which may have shrunk).
    fn adopt_existing(&self) -> Result<(), CacheError> {
        let mut objects: Vec<(std::time::SystemTime, ObjectKey, Vec<PageRecord>)> = Vec::new();
        let shards = std::fs::read_dir(&self.root).map_err(|e| CacheError::io(&self.root, e))?;
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                if path.extension().and_then(|e| e.to_str()) != Some("meta") {
                    continue;
                }
                let key = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(ObjectKey::from_hex);
                match (key, self.read_meta(&path)) {
                    (Some(key), Some(pages)) if !pages.is_empty() => {
                        let mtime = f
                            .metadata()
                            .and_then(|m| m.modified())
                            .unwrap_or(std::time::UNIX_EPOCH);
                        objects.push((mtime, key, pages));
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                        let _ = std::fs::remove_file(path.with_extension("data"));
                    }
                }
            }
        }
        objects.sort_by_key(|(t, k, _)| (*t, *k));
        let mut ix = self.index.lock();
        for (_, key, pages) in objects {
            for (idx, len) in pages {
                ix.lru.put((key, idx), len);
                *ix.pages_per_object.entry(key).or_insert(0) += 1;
                ix.used += u64::from(len);
            }
        }
        while ix.used > self.cfg.capacity {
            let Some((k, i)) = Self::victim(&mut ix) else {
                break;
            };
            self.remove_locked(&mut ix, k, i);
        }
        used_gauge(ix.used);
        tracing::info!(pages = ix.lru.len(), bytes = ix.used, "page cache adopted");
        Ok(())
    }

    fn read_meta(&self, path: &Path) -> Option<Vec<PageRecord>> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() < HEADER_LEN as usize || &bytes[..8] != MAGIC {
            return None;
        }
        let page_size = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        if page_size != self.cfg.page_size {
            return None; // page size changed: these pages are unusable
        }
        let pages = bytes[HEADER_LEN as usize..]
            .chunks_exact(RECORD_LEN as usize)
            .enumerate()
            .filter_map(|(i, rec)| {
                let (_, len) = parse_record(rec);
                (len > 0 && u64::from(len) <= page_size).then_some((i as u64, len))
            })
            .collect();
        Some(pages)
    }
}

/// Mirrors the bytes of page data on disk into the `weir_cache_used_bytes` gauge.
fn used_gauge(used: u64) {
    metrics::gauge!(names::CACHE_USED_BYTES).set(used as f64);
}

fn parse_record(rec: &[u8]) -> (u32, u32) {
    let crc = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
    let len = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
    (crc, len)
}

fn punch_hole(file: &File, offset: u64, len: u64) {
    // SAFETY: fallocate on an fd we own; the arguments are plain integers.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        // Not fatal: the record is cleared, so the bytes are only wasted space.
        tracing::debug!(error = %io::Error::last_os_error(), "punch hole failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn cache(dir: &Path, pages: u64) -> PageCache {
        PageCache::open(PageCacheConfig {
            dir: dir.to_path_buf(),
            capacity: pages * PAGE,
            page_size: PAGE,
            memory: 0,
        })
        .unwrap()
    }

    fn page(b: u8) -> Vec<u8> {
        vec![b; PAGE as usize]
    }

    #[test]
    fn put_get_roundtrip_and_partial_last_page() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 8);
        let k = ObjectKey::new("u", "/f", "v1");
        c.put(k, 0, &page(1)).unwrap();
        c.put(k, 1, &[2u8; 100]).unwrap();
        assert_eq!(c.get(k, 0).unwrap(), page(1));
        assert_eq!(c.get(k, 1).unwrap().as_ref(), &[2u8; 100]);
        assert!(c.get(k, 2).is_none());
        assert!(
            c.get(ObjectKey::new("u", "/f", "v2"), 0).is_none(),
            "version is part of the key"
        );
        assert_eq!(c.used(), PAGE + 100);
    }

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 3);
        let k = ObjectKey::new("u", "/f", "v");
        for i in 0..3 {
            c.put(k, i, &page(i as u8)).unwrap();
        }
        assert!(c.get(k, 0).is_some()); // 0 is now most recent
        c.put(k, 3, &page(3)).unwrap();
        assert!(c.get(k, 1).is_none(), "page 1 was least recently used");
        assert!(c.get(k, 0).is_some());
        assert!(c.used() <= c.capacity());
        assert_eq!(c.stats().evictions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn corrupted_page_is_detected_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 4);
        let k = ObjectKey::new("u", "/f", "v");
        c.put(k, 0, &page(7)).unwrap();
        c.put(k, 1, &page(8)).unwrap();
        let f = OpenOptions::new().write(true).open(c.data_path(k)).unwrap();
        f.write_all_at(b"garbage", 10).unwrap();
        assert!(c.get(k, 0).is_none());
        assert_eq!(c.stats().corruptions.load(Ordering::Relaxed), 1);
        assert!(!c.contains(k, 0));
        assert_eq!(c.get(k, 1).unwrap(), page(8));
    }

    #[test]
    fn survives_restart_and_shrinks_to_new_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let k = ObjectKey::new("u", "/f", "v");
        {
            let c = cache(dir.path(), 4);
            for i in 0..4 {
                c.put(k, i, &page(i as u8 + 1)).unwrap();
            }
        }
        let c = cache(dir.path(), 4);
        for i in 0..4 {
            assert_eq!(c.get(k, i).unwrap(), page(i as u8 + 1));
        }
        drop(c);
        let c = cache(dir.path(), 2);
        assert_eq!(c.used(), 2 * PAGE);
        assert_eq!(c.cached_pages(k), 2);
    }

    #[test]
    fn last_page_eviction_removes_files() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 1);
        let a = ObjectKey::new("u", "/a", "v");
        let b = ObjectKey::new("u", "/b", "v");
        c.put(a, 0, &page(1)).unwrap();
        c.put(b, 0, &page(2)).unwrap();
        assert!(!c.data_path(a).exists());
        assert!(c.data_path(b).exists());
    }

    #[test]
    fn memory_tier_serves_hot_pages_and_follows_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let c = PageCache::open(PageCacheConfig {
            dir: dir.path().to_path_buf(),
            capacity: 2 * PAGE,
            page_size: PAGE,
            memory: 2 * PAGE,
        })
        .unwrap();
        let k = ObjectKey::new("u", "/f", "v");
        c.put(k, 0, &page(1)).unwrap();
        // Break the disk copy: a hit can now only come from memory.
        std::fs::remove_file(c.data_path(k)).unwrap();
        assert_eq!(c.get(k, 0).unwrap(), page(1));
        c.put(k, 1, &page(2)).unwrap();
        c.put(k, 2, &page(3)).unwrap();
        assert!(
            c.get(k, 0).is_none(),
            "evicted from disk means gone from memory too"
        );
    }

    #[test]
    fn bad_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad = |capacity, page_size| {
            PageCache::open(PageCacheConfig {
                dir: dir.path().to_path_buf(),
                capacity,
                page_size,
                memory: 0,
            })
            .is_err()
        };
        assert!(bad(1 << 20, 3000));
        assert!(bad(100, 4096));
    }

    #[test]
    fn activity_is_also_recorded_as_metrics() {
        use weir_metrics::testing::capture;
        let dir = tempfile::tempdir().unwrap();
        let k = ObjectKey::new("u", "/f", "v");
        let (c, rec) = capture(|| {
            let c = cache(dir.path(), 2);
            c.put(k, 0, &page(1)).unwrap();
            c.put(k, 1, &[2u8; 100]).unwrap();
            assert!(c.get(k, 0).is_some());
            assert!(c.get(k, 1).is_some());
            assert!(c.get(k, 5).is_none());
            c.put(k, 2, &page(3)).unwrap(); // evicts page 0
            c
        });
        assert_eq!(rec.counter(names::CACHE_HITS, &[]), 2);
        assert_eq!(rec.counter(names::CACHE_HIT_BYTES, &[]), PAGE + 100);
        assert_eq!(rec.counter(names::CACHE_MISSES, &[]), 1);
        assert_eq!(rec.counter(names::CACHE_EVICTIONS, &[]), 1);
        assert_eq!(
            rec.gauge(names::CACHE_CAPACITY_BYTES, &[]),
            Some(2.0 * PAGE as f64)
        );
        assert_eq!(
            rec.gauge(names::CACHE_USED_BYTES, &[]),
            Some(c.used() as f64)
        );
        assert_eq!(c.used(), PAGE + 100);

        let f = OpenOptions::new().write(true).open(c.data_path(k)).unwrap();
        f.write_all_at(b"garbage", 2 * PAGE + 1).unwrap();
        let (_, rec) = capture(|| assert!(c.get(k, 2).is_none()));
        assert_eq!(rec.counter(names::CACHE_CORRUPTIONS, &[]), 1);
        assert_eq!(rec.counter(names::CACHE_MISSES, &[]), 1);
        assert_eq!(rec.gauge(names::CACHE_USED_BYTES, &[]), Some(100.0));
        assert_eq!(
            c.stats().corruptions.load(Ordering::Relaxed),
            1,
            "the stats still count"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_exceeds_capacity(ops in proptest::collection::vec((0u8..4, 0u64..16, 1usize..4096), 1..200)) {
            let dir = tempfile::tempdir().unwrap();
            let c = cache(dir.path(), 5);
            for (obj, idx, len) in ops {
                let k = ObjectKey::new("u", &format!("/{obj}"), "v");
                c.put(k, idx, &vec![obj; len]).unwrap();
                proptest::prop_assert!(c.used() <= c.capacity());
                let got = c.get(k, idx);
                proptest::prop_assert!(got.is_some(), "a page just stored is readable");
                proptest::prop_assert!(got.unwrap().iter().all(|b| *b == obj), "and holds its own object's bytes");
            }
        }
    }
}
