//! The write path: data goes to a local staging file and is uploaded as a
//! whole when the handle is flushed, fsynced or closed, so the UFS holds the
//! old object or the complete new one, never a part of it.
//!
//! While a file is being written it is "pending": lookups and listings see
//! it, with its staged size, before any byte reaches the UFS.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_namespace::Mount;
use weir_ufs::{Kind, Stat};

use crate::error::{FsError, Result};
use crate::events::Change;
use crate::read::Source;
use crate::{Fs, policy};

/// Staged size of a file being written, shared by its handles.
#[derive(Debug)]
pub(crate) struct Pending {
    size: AtomicU64,
    /// Open write handles on this path.
    writers: AtomicU64,
}

/// Files being written, by namespace path.
#[derive(Debug, Default)]
pub(crate) struct PendingFiles {
    by_path: Mutex<HashMap<String, Arc<Pending>>>,
}

impl PendingFiles {
    /// Registers one more writer of `path`, starting at `size` bytes.
    pub(crate) fn open(&self, path: &str, size: u64) -> Arc<Pending> {
        let mut m = self.by_path.lock();
        let p = m
            .entry(path.to_string())
            .or_insert_with(|| {
                Arc::new(Pending {
                    size: AtomicU64::new(size),
                    writers: AtomicU64::new(0),
                })
            })
            .clone();
        p.size.store(size, Ordering::Relaxed);
        p.writers.fetch_add(1, Ordering::Relaxed);
        p
    }

    /// One writer of `path` is done.
    pub(crate) fn close(&self, path: &str, pending: &Arc<Pending>) {
        let mut m = self.by_path.lock();
        if pending.writers.fetch_sub(1, Ordering::Relaxed) == 1
            && m.get(path).is_some_and(|p| Arc::ptr_eq(p, pending))
        {
            m.remove(path);
        }
    }

    /// The stat of a pending file.
    pub(crate) fn stat(&self, path: &str) -> Option<Stat> {
        let m = self.by_path.lock();
        let p = m.get(path)?;
        Some(Stat {
            kind: Kind::File,
            size: p.size.load(Ordering::Relaxed),
            mtime: Some(SystemTime::now()),
            etag: None,
        })
    }

    /// Names of pending files directly in directory `dir`.
    pub(crate) fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.by_path
            .lock()
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    /// Forgets `path` (it was unlinked or renamed).
    pub(crate) fn remove(&self, path: &str) -> Option<Arc<Pending>> {
        self.by_path.lock().remove(path)
    }

    /// Re-registers `pending` under a new path.
    pub(crate) fn insert(&self, path: &str, pending: Arc<Pending>) {
        self.by_path.lock().insert(path.to_string(), pending);
    }
}

/// Whether a writer starts from empty content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fresh {
    /// It starts from the file's current content.
    No,
    /// It starts empty because the file was empty: nothing to upload yet.
    Empty,
    /// It starts empty because of O_TRUNC or create: upload even if unwritten.
    Truncated,
}

/// Write state of one handle.
#[derive(Debug)]
pub(crate) struct Writer {
    /// The handle it belongs to (0: a writer of no handle, not journaled).
    pub fh: u64,
    pub path: String,
    /// The mount it writes to, kept even if the table drops it.
    pub mount: Arc<Mount>,
    pub rel: String,
    pub(crate) staging: Option<(File, PathBuf)>,
    pub(crate) size: u64,
    pub(crate) dirty: bool,
    /// The file was unlinked while open: never upload it.
    pub unlinked: bool,
    pub(crate) pending: Option<Arc<Pending>>,
    /// What to download before a random write (the file's current version).
    pub(crate) base: Option<Source>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some((_, path)) = self.staging.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Writer {
    /// Reads from the staging file, if this handle has one.
    pub(crate) fn read_staged(&mut self, offset: u64, size: u32) -> Result<Option<Bytes>> {
        let Some((file, _)) = &self.staging else {
            return Ok(None);
        };
        if offset >= self.size {
            return Ok(Some(Bytes::new()));
        }
        let len = u64::from(size).min(self.size - offset) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Some(Bytes::from(buf)))
    }

    fn set_size(&mut self, size: u64) {
        self.size = size;
        if let Some(p) = &self.pending {
            p.size.store(size, Ordering::Relaxed);
        }
    }
}

/// Removes staging files left by a previous run that died, except those in
/// `keep` (handles restored after a takeover). Their data was never
/// acknowledged as uploaded, and no handle can reach them now.
pub(crate) fn clear_stale_staging(dir: &Path, keep: &std::collections::HashSet<String>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if keep.contains(e.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            tracing::warn!(file = %e.path().display(), "removing staging file of a previous run");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Fs {
    fn new_staging(&self) -> Result<(File, PathBuf)> {
        let path = self.inner.cfg.staging_dir.join(format!(
            "{}-{}",
            std::process::id(),
            self.inner.next_fh.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((file, path))
    }

    /// A writer for `path`; unless `fresh` says it starts empty, `base` is
    /// the current content.
    pub(crate) fn new_writer(
        &self,
        fh: u64,
        path: &str,
        mount: &Arc<Mount>,
        rel: &str,
        fresh: Fresh,
        base: Option<Source>,
    ) -> Result<Writer> {
        let mut w = Writer {
            fh,
            path: path.to_string(),
            mount: mount.clone(),
            rel: rel.to_string(),
            staging: None,
            size: 0,
            dirty: false,
            unlinked: false,
            pending: None,
            base,
        };
        if fresh != Fresh::No {
            w.staging = Some(self.new_staging()?);
            w.dirty = fresh == Fresh::Truncated;
            w.pending = Some(self.inner.pending.open(path, 0));
        }
        Ok(w)
    }

    /// Makes sure `w` has a staging file, downloading the current content
    /// when random writes need it.
    async fn ensure_staging(&self, w: &mut Writer) -> Result<()> {
        if w.staging.is_some() {
            return Ok(());
        }
        let staging = self.new_staging()?;
        let mut size = 0;
        if let Some(src) = w.base.clone() {
            let page = self.inner.pages.page_size();
            for idx in 0..src.size.div_ceil(page) {
                let data = self.page(&src, idx).await?;
                staging.0.write_all_at(&data, idx * page)?;
            }
            size = src.size;
        }
        w.staging = Some(staging);
        w.pending = Some(self.inner.pending.open(&w.path, size));
        w.set_size(size);
        self.journal_writer(w);
        Ok(())
    }

    /// Records `w`'s state for a takeover; called at every change a
    /// successor needs (not at every write: the staging file holds those).
    pub(crate) fn journal_writer(&self, w: &Writer) {
        if w.fh != 0
            && let Some(j) = &self.inner.journal
        {
            j.writer(w.fh, crate::restore::writer_record(w));
        }
    }

    fn mark_dirty(&self, w: &mut Writer) {
        if !w.dirty {
            w.dirty = true;
            self.journal_writer(w);
        }
    }

    /// Writes `data` at `offset` through handle `fh`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.write_at(fh, offset, data, false).await
    }

    /// A write the kernel sent again after a daemon died. The dead daemon
    /// may already have staged it, so a sequential-only file also takes it
    /// at an offset it has passed: writing the same bytes again changes
    /// nothing.
    pub async fn write_resent(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.write_at(fh, offset, data, true).await
    }

    async fn write_at(&self, fh: u64, offset: u64, data: &[u8], resent: bool) -> Result<u32> {
        let handle = self.file_handle(fh)?;
        let Some(w) = &handle.writer else {
            return Err(FsError::new(libc::EBADF, "handle is not open for writing"));
        };
        let mut w = w.lock().await;
        let random = self.inner.cfg.random_writes;
        if w.staging.is_none() && !random {
            return Err(FsError::unsupported(format!(
                "{}: writing into an existing file without O_TRUNC (enable fuse.random_writes)",
                w.path
            )));
        }
        self.ensure_staging(&mut w).await?;
        let replay = resent && offset <= w.size;
        policy::check_write_offset(random || replay, offset, w.size)?;
        if let Some((file, _)) = &w.staging {
            file.write_all_at(data, offset)?;
        }
        let end = (offset + data.len() as u64).max(w.size);
        w.set_size(end);
        self.mark_dirty(&mut w);
        Ok(data.len() as u32)
    }

    /// Uploads what handle `fh` has staged, if anything changed (flush, fsync
    /// and close all come here).
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let handle = self.file_handle(fh)?;
        let Some(w) = &handle.writer else {
            return Ok(());
        };
        let mut w = w.lock().await;
        self.upload(&mut w).await
    }

    pub(crate) async fn upload(&self, w: &mut Writer) -> Result<()> {
        if !w.dirty || w.unlinked {
            return Ok(());
        }
        let Some((file, staging)) = &w.staging else {
            return Ok(());
        };
        file.sync_data()?;
        let result = w.mount.ufs.upload(&w.rel, staging).await;
        self.invalidate(&w.path);
        match result {
            Ok(stat) => {
                w.dirty = false;
                self.journal_writer(w);
                self.inner.meta.put_stat(&w.path, Some(stat));
                self.announce(Change::Write {
                    path: w.path.clone(),
                });
                tracing::debug!(path = %w.path, bytes = w.size, "uploaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(path = %w.path, error = %e, "upload failed; the UFS keeps its previous content");
                Err(e.into())
            }
        }
    }

    /// Truncates through an open write handle.
    pub(crate) async fn truncate_handle(&self, w: &mut Writer, size: u64) -> Result<()> {
        let random = self.inner.cfg.random_writes;
        let current = match (&w.staging, &w.base) {
            (Some(_), _) => w.size,
            (None, Some(src)) => src.size,
            (None, None) => 0,
        };
        policy::check_truncate(random, current, size)?;
        if size == current && w.staging.is_none() {
            return Ok(());
        }
        if size == 0 && w.staging.is_none() {
            w.base = None;
        }
        self.ensure_staging(w).await?;
        if let Some((file, _)) = &w.staging {
            file.set_len(size)?;
        }
        w.set_size(size);
        self.mark_dirty(w);
        Ok(())
    }

    /// Ends a writer: uploads what is left, releases its pending entry.
    pub(crate) async fn finish_writer(&self, w: &mut Writer) -> Result<()> {
        let result = self.upload(w).await;
        if let Some(p) = w.pending.take() {
            self.inner.pending.close(&w.path, &p);
        }
        result
    }

    /// Marks every open writer of `path` unlinked (their data must not
    /// resurrect the file) and forgets the pending entry.
    pub(crate) async fn unlink_writers(&self, path: &str) {
        self.inner.pending.remove(path);
        for h in self.write_handles() {
            let Some(w) = &h.writer else { continue };
            let mut w = w.lock().await;
            if w.path == path && !w.unlinked {
                w.unlinked = true;
                self.journal_writer(&w);
            }
        }
    }

    /// Uploads every writer at or below `path` and points them at `to`.
    pub(crate) async fn move_writers(&self, from: &str, to: &str) -> Result<()> {
        let prefix = format!("{}/", from.trim_end_matches('/'));
        for h in self.write_handles() {
            let Some(w) = &h.writer else { continue };
            let mut w = w.lock().await;
            if w.path != from && !w.path.starts_with(&prefix) {
                continue;
            }
            self.upload(&mut w).await?;
            let new_path = if w.path == from {
                to.to_string()
            } else {
                weir_namespace::child(to, &w.path[prefix.len()..])
            };
            if let Some(p) = self.inner.pending.remove(&w.path) {
                self.inner.pending.insert(&new_path, p);
            }
            let (mount, rel) = match self.place(&new_path) {
                crate::Place::Ufs(mount, rel) => (mount, rel),
                _ => {
                    return Err(FsError::new(
                        libc::EXDEV,
                        "rename target is outside every mount",
                    ));
                }
            };
            w.path = new_path;
            w.mount = mount;
            w.rel = rel;
            self.journal_writer(&w);
        }
        Ok(())
    }

    fn write_handles(&self) -> Vec<Arc<crate::handle::FileHandle>> {
        self.inner
            .handles
            .lock()
            .values()
            .filter_map(|h| h.file())
            .filter(|h| h.writer.is_some())
            .collect()
    }
}
