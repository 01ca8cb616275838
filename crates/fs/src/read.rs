//! The read path: fixed-size pages from the page cache or the UFS, one fetch
//! per page however many readers want it, and a read-ahead window that
//! doubles while a reader stays sequential. Read-ahead fetches runs of
//! consecutive missing pages with one ranged read each (`fetch_pages`
//! pages at most): object stores charge a fixed cost per request, so a few
//! large GETs move far more bytes than many small ones.
//!
//! A handle pins the object version it opened. S3 reads carry `If-Match`
//! with the pinned etag; local reads re-check the version after fetching.
//! Either way a file replaced during a read fails with ESTALE instead of
//! returning a mix of old and new bytes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use weir_cache::ObjectKey;
use weir_namespace::Mount;

use crate::Fs;
use crate::error::{FsError, Result};

/// One page being fetched: a future every reader of the page can await.
type Slot = Shared<BoxFuture<'static, Result<Bytes>>>;

/// Page fetches in flight, shared so that two readers of one page wait for
/// one UFS request, plus the limit on concurrent UFS reads.
#[derive(Debug)]
pub(crate) struct Fetches {
    inflight: Mutex<HashMap<(ObjectKey, u64), Slot>>,
    limit: Arc<Semaphore>,
}

impl Fetches {
    pub(crate) fn new(concurrency: usize) -> Self {
        Fetches {
            inflight: Mutex::new(HashMap::new()),
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }
}

/// Which object version a reader reads.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub path: String,
    /// The mount it was opened on, kept even if the table drops it.
    pub mount: Arc<Mount>,
    pub rel: String,
    pub size: u64,
    pub key: ObjectKey,
    pub etag: Option<String>,
    pub version: String,
}

/// Read state of one open file.
#[derive(Debug)]
pub(crate) struct Reader {
    pub src: Source,
    seq: Mutex<Sequence>,
    /// The last pages this handle read. The kernel asks in pieces smaller
    /// than a page, so without this every piece would re-read and re-verify
    /// the whole page from disk.
    recent: Mutex<Vec<(u64, Bytes)>>,
}

/// Pages a handle keeps at hand (parallel kernel reads arrive slightly out
/// of order, so one is not enough).
const RECENT_PAGES: usize = 4;

#[derive(Debug, Default)]
struct Sequence {
    /// Offset right after the previous read.
    next: u64,
    /// Current read-ahead window, in pages.
    window: u64,
    /// First page not yet handed to read-ahead.
    ahead: u64,
}

impl Reader {
    pub(crate) fn new(src: Source) -> Self {
        Reader {
            src,
            seq: Mutex::new(Sequence::default()),
            recent: Mutex::new(Vec::with_capacity(RECENT_PAGES)),
        }
    }

    fn recent_page(&self, idx: u64) -> Option<Bytes> {
        let recent = self.recent.lock();
        recent
            .iter()
            .find(|(i, _)| *i == idx)
            .map(|(_, b)| b.clone())
    }

    fn remember(&self, idx: u64, data: &Bytes) {
        let mut recent = self.recent.lock();
        if recent.iter().any(|(i, _)| *i == idx) {
            return;
        }
        if recent.len() == RECENT_PAGES {
            recent.remove(0);
        }
        recent.push((idx, data.clone()));
    }

    /// Records a read and returns the page range to read ahead, if any.
    /// Once the window is open, it is topped up in runs of at least
    /// `min_run` pages (or up to the end of the file), so each UFS request
    /// is a large one.
    fn advance(
        &self,
        offset: u64,
        len: u64,
        page: u64,
        max_window: u64,
        min_run: u64,
    ) -> Option<(u64, u64)> {
        let mut s = self.seq.lock();
        let sequential =
            offset == s.next || (offset < s.next + page && offset >= s.next.saturating_sub(page));
        s.next = offset + len;
        if !sequential || max_window == 0 {
            s.window = 0;
            return None;
        }
        s.window = (s.window * 2).clamp(1, max_window);
        let last_page = (offset + len).saturating_sub(1) / page;
        let total_pages = self.src.size.div_ceil(page);
        let from = s.ahead.max(last_page + 1);
        let to = (last_page + 1 + s.window).min(total_pages);
        if from >= to || (to - from < min_run.min(s.window) && to < total_pages) {
            return None;
        }
        s.ahead = to;
        Some((from, to))
    }
}

impl Fs {
    /// Reads up to `size` bytes at `offset` through handle `fh`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let handle = self.file_handle(fh)?;
        if let Some(w) = &handle.writer {
            let mut w = w.lock().await;
            if let Some(data) = w.read_staged(offset, size)? {
                return Ok(data);
            }
        }
        // A read-only open made while another handle writes a new file:
        // nothing of it is published yet, so there is nothing to read.
        let Some(reader) = handle.reader.as_ref() else {
            return Ok(Bytes::new());
        };
        let src = &reader.src;
        if offset >= src.size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + u64::from(size)).min(src.size);
        let page = self.inner.pages.page_size();
        let cfg = &self.inner.cfg;
        if let Some((from, to)) = reader.advance(
            offset,
            end - offset,
            page,
            cfg.readahead_pages,
            cfg.fetch_pages,
        ) {
            self.read_ahead(src.clone(), from, to);
        }
        let first = offset / page;
        let last = (end - 1) / page;
        let pages = futures::future::try_join_all((first..=last).map(|i| async move {
            if let Some(b) = reader.recent_page(i) {
                return Ok(b);
            }
            let b = self.page(src, i).await?;
            reader.remember(i, &b);
            Ok::<_, FsError>(b)
        }))
        .await?;
        if pages.len() == 1 {
            let start = (offset - first * page) as usize;
            let stop = (end - first * page) as usize;
            return Ok(pages[0].slice(start..stop.min(pages[0].len())));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (i, data) in (first..=last).zip(pages) {
            let page_start = i * page;
            let lo = offset.saturating_sub(page_start) as usize;
            let hi = ((end - page_start) as usize).min(data.len());
            out.extend_from_slice(&data[lo..hi]);
        }
        Ok(out.freeze())
    }

    fn read_ahead(&self, src: Source, from: u64, to: u64) {
        // Cached pages are read ahead by the kernel, from the cache file.
        self.inner.pages.will_need(src.key, from, to);
        let most = self.inner.cfg.fetch_pages.max(1);
        let mut idx = from;
        while idx < to {
            let n = (to - idx).min(most);
            match self.claim_run(&src, idx, n) {
                Some((run, claimed)) => {
                    tokio::spawn(run);
                    idx += claimed;
                }
                None => idx += 1,
            }
        }
    }

    /// Page `idx` of `src`, from the cache or fetched once from the UFS.
    pub(crate) async fn page(&self, src: &Source, idx: u64) -> Result<Bytes> {
        if let Some(data) = self.inner.pages.get(src.key, idx) {
            return Ok(data);
        }
        if let Some(slot) = self.inflight_slot(src, idx) {
            return slot.await;
        }
        match self.claim_run(src, idx, 1) {
            Some((run, _)) => run.await.map(|pages| pages[0].clone()),
            // Claimed by another reader just now, or stored meanwhile.
            None => match self.inflight_slot(src, idx) {
                Some(slot) => slot.await,
                None => self.page_uncached(src, idx).await,
            },
        }
    }

    /// The fetch of page `idx` in flight, if any (the lock is released
    /// before the caller awaits it).
    fn inflight_slot(&self, src: &Source, idx: u64) -> Option<Slot> {
        self.inner
            .fetches
            .inflight
            .lock()
            .get(&(src.key, idx))
            .cloned()
    }

    /// The page once more from the cache, else by a fetch of its own.
    async fn page_uncached(&self, src: &Source, idx: u64) -> Result<Bytes> {
        if let Some(data) = self.inner.pages.get(src.key, idx) {
            return Ok(data);
        }
        let pages = self.fetch_run(src, idx, 1).await?;
        Ok(pages[0].clone())
    }

    /// Claims up to `most` consecutive pages from `first` that are neither
    /// cached nor being fetched, as one fetch: returns the run's future
    /// (to await or spawn) and how many pages it covers. `None` when
    /// `first` itself is taken.
    fn claim_run(&self, src: &Source, first: u64, most: u64) -> Option<(RunFuture, u64)> {
        let total = src.size.div_ceil(self.inner.pages.page_size());
        let mut inflight = self.inner.fetches.inflight.lock();
        let free = |i: u64| {
            i < total
                && !inflight.contains_key(&(src.key, i))
                && !self.inner.pages.contains(src.key, i)
        };
        let n = (first..first + most).take_while(|i| free(*i)).count() as u64;
        if n == 0 {
            return None;
        }
        let fs = self.clone();
        let owned = src.clone();
        let run: RunFuture = async move {
            let r = fs.fetch_run(&owned, first, n).await;
            let mut inflight = fs.inner.fetches.inflight.lock();
            for i in first..first + n {
                inflight.remove(&(owned.key, i));
            }
            r
        }
        .boxed()
        .shared();
        for (k, i) in (first..first + n).enumerate() {
            let page: Slot = run
                .clone()
                .map(move |r| r.map(|pages| pages[k].clone()))
                .boxed()
                .shared();
            inflight.insert((src.key, i), page);
        }
        Some((run, n))
    }

    /// Reads pages `first..first + n` of `src` with one UFS request and
    /// stores them.
    async fn fetch_run(&self, src: &Source, first: u64, n: u64) -> Result<Arc<Vec<Bytes>>> {
        let _permit = self
            .inner
            .fetches
            .limit
            .acquire()
            .await
            .map_err(|_| FsError::new(libc::EIO, "shutting down"))?;
        let page = self.inner.pages.page_size();
        let offset = first * page;
        let len = (n * page).min(src.size.saturating_sub(offset));
        let ufs = &src.mount.ufs;
        let data = match ufs.read(&src.rel, offset, len, src.etag.as_deref()).await {
            Ok(d) => d,
            Err(e) => {
                if e.errno() == libc::ESTALE || e.is_not_found() {
                    self.invalidate(&src.path);
                }
                return Err(e.into());
            }
        };
        if data.len() as u64 != len {
            self.invalidate(&src.path);
            return Err(FsError::new(
                libc::ESTALE,
                format!("{}: object changed size while open", src.path),
            ));
        }
        if ufs.is_local() {
            // Local files cannot pin a version in the read itself: check it
            // did not move under us. (Object stores whose listings lack etags
            // only get the length check above: their HEAD and LIST report
            // mtimes at different precisions.)
            let now = ufs.stat(&src.rel).await?;
            if now.version() != src.version {
                self.invalidate(&src.path);
                return Err(FsError::new(
                    libc::ESTALE,
                    format!("{}: changed while open", src.path),
                ));
            }
        }
        let pages: Vec<Bytes> = (0..n)
            .map(|k| {
                let lo = (k * page) as usize;
                let hi = (((k + 1) * page) as usize).min(data.len());
                data.slice(lo..hi)
            })
            .collect();
        for (k, p) in pages.iter().enumerate() {
            match self.inner.pages.put(src.key, first + k as u64, p) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(path = %src.path, page = first + k as u64, error = %e, "cannot cache page");
                }
            }
        }
        self.verify_when_whole(src.key, src.size);
        Ok(Arc::new(pages))
    }
}

/// A run of pages being fetched with one UFS request.
type RunFuture = Shared<BoxFuture<'static, Result<Arc<Vec<Bytes>>>>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(size: u64) -> Reader {
        let dir = tempfile::tempdir().unwrap();
        let spec = weir_namespace::MountSpec {
            path: "/".into(),
            ufs: format!("file://{}", dir.path().display()),
            options: Default::default(),
        };
        let table = weir_namespace::MountTable::open(&[spec], &Default::default()).unwrap();
        Reader::new(Source {
            path: "/f".into(),
            mount: table.mount(0).clone(),
            rel: "f".into(),
            size,
            key: ObjectKey::new("u", "f", "v"),
            etag: None,
            version: "v".into(),
        })
    }

    #[test]
    fn window_grows_while_sequential_and_resets_on_seek() {
        let r = reader(100 * 10);
        assert_eq!(r.advance(0, 10, 10, 8, 1), Some((1, 2)));
        assert_eq!(r.advance(10, 10, 10, 8, 1), Some((2, 4)));
        assert_eq!(r.advance(20, 10, 10, 8, 1), Some((4, 7)));
        assert_eq!(
            r.advance(500, 10, 10, 8, 1),
            None,
            "a seek stops read-ahead"
        );
        assert_eq!(r.advance(510, 10, 10, 8, 1), Some((52, 53)));
    }

    #[test]
    fn an_open_window_is_topped_up_in_runs() {
        let r = reader(100 * 10);
        assert_eq!(r.advance(0, 10, 10, 8, 4), Some((1, 2)));
        assert_eq!(r.advance(10, 10, 10, 8, 4), Some((2, 4)));
        assert_eq!(r.advance(20, 10, 10, 8, 4), None, "3 pages: short of a run");
        assert_eq!(r.advance(30, 10, 10, 8, 4), Some((4, 12)));
        assert_eq!(r.advance(40, 10, 10, 8, 4), None);
        assert_eq!(r.advance(50, 10, 10, 8, 4), None);
        assert_eq!(r.advance(60, 10, 10, 8, 4), None);
        assert_eq!(r.advance(70, 10, 10, 8, 4), Some((12, 16)));
        let r = reader(10 * 10);
        r.advance(0, 10, 10, 8, 4);
        r.advance(10, 10, 10, 8, 4);
        r.advance(20, 10, 10, 8, 4);
        assert_eq!(
            r.advance(30, 10, 10, 8, 4),
            Some((4, 10)),
            "the tail of the file"
        );
    }

    #[test]
    fn window_stops_at_end_of_file() {
        let r = reader(25);
        assert_eq!(r.advance(0, 10, 10, 8, 1), Some((1, 2)));
        assert_eq!(r.advance(10, 10, 10, 8, 1), Some((2, 3)));
        assert_eq!(r.advance(20, 5, 10, 8, 1), None);
    }

    #[test]
    fn zero_window_disables_read_ahead() {
        let r = reader(1000);
        assert_eq!(r.advance(0, 10, 10, 0, 1), None);
    }
}
