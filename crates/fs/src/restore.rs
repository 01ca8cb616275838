//! Taking over from a dead daemon: the journal records of node ids and open
//! handles turned back into the inode table and the handle table, and the
//! handles' state turned into journal records.
//!
//! A read handle gets back the object version it had pinned, so it keeps
//! reading the same bytes. A write handle gets back its staging file, which
//! holds every write the kernel saw acknowledged (the kernel resends the
//! ones in flight), so the application's close still uploads the whole
//! file. A handle whose state cannot be rebuilt fails every later call with
//! EIO rather than pretend.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Fs;
use crate::error::{FsError, Result};
use crate::handle::{DirHandle, FileHandle, Handle};
use crate::inode::InodeTable;
use crate::iomode::Held;
use crate::journal::{HandleRecord, Restored, SourceRecord, WriterRecord};
use crate::read::{Reader, Source};
use crate::write::Writer;

/// The journal record of a handle, as it is when opened.
pub(crate) fn handle_record(fh: u64, h: &Handle) -> HandleRecord {
    match h {
        Handle::Dir(d) => HandleRecord::Dir {
            fh,
            path: d.path.clone(),
            unique: d.unique,
        },
        Handle::File(f) => HandleRecord::File {
            fh,
            read: f.reader.as_ref().map(|r| source_record(&r.src)),
            // A handle is journaled before anyone else can reach it, so its
            // writer is never locked here.
            write: f
                .writer
                .as_ref()
                .and_then(|w| w.try_lock().ok().map(|w| Box::new(writer_record(&w)))),
            opener: f.opener.load(Ordering::Relaxed),
            unique: f.unique,
            ino: f.ino,
            io: held_name(*f.io.lock()).into(),
        },
    }
}

fn held_name(h: Held) -> &'static str {
    match h {
        Held::Cached => "cached",
        Held::Passthrough(_) => "passthrough",
    }
}

/// The mode a restored handle holds; a passthrough handle names the object
/// version it reads.
fn held_of(name: &str, src: Option<&Source>) -> Held {
    match (name, src) {
        ("passthrough", Some(s)) => Held::Passthrough(s.key),
        _ => Held::Cached,
    }
}

pub(crate) fn source_record(src: &Source) -> SourceRecord {
    SourceRecord {
        path: src.path.clone(),
        size: src.size,
        etag: src.etag.clone(),
        version: src.version.clone(),
    }
}

pub(crate) fn writer_record(w: &Writer) -> WriterRecord {
    WriterRecord {
        path: w.path.clone(),
        staging: w
            .staging
            .as_ref()
            .and_then(|(_, p)| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        dirty: w.dirty,
        unlinked: w.unlinked,
        base: w.base.as_ref().map(source_record),
    }
}

impl Fs {
    /// Rebuilds the inode and handle tables from `r`, and clears staging
    /// files no restored handle owns.
    pub(crate) fn restore(&self, r: &Restored) -> Result<()> {
        let mut inodes = InodeTable::restore(&r.nodes, r.max_ino);
        if let Some(j) = &self.inner.journal {
            inodes.set_journal(j.clone());
        }
        *self.inner.inodes.lock() = inodes;
        self.inner.next_fh.store(r.max_fh + 1, Ordering::Relaxed);
        let mut keep = HashSet::new();
        let mut broken = 0;
        for rec in &r.handles {
            let (fh, handle) = self.restored_handle(rec, &mut keep);
            if let Handle::File(f) = &handle {
                if f.broken.is_some() {
                    broken += 1;
                }
                let held = *f.io.lock();
                self.restore_mode(f.ino, held, r.backings.get(&f.ino).copied());
            }
            self.inner.handles.lock().insert(fh, handle);
        }
        crate::write::clear_stale_staging(&self.inner.cfg.staging_dir, &keep);
        tracing::info!(
            nodes = r.nodes.len(),
            handles = r.handles.len(),
            broken,
            "restored the session from its journal"
        );
        Ok(())
    }

    fn restored_handle(&self, rec: &HandleRecord, keep: &mut HashSet<String>) -> (u64, Handle) {
        match rec {
            HandleRecord::Dir { fh, path, unique } => (
                *fh,
                Handle::Dir(Arc::new(DirHandle {
                    path: path.clone(),
                    unique: *unique,
                    entries: tokio::sync::OnceCell::new(),
                })),
            ),
            HandleRecord::File {
                fh,
                read,
                write,
                opener,
                unique,
                ino,
                io,
            } => {
                if let Some(name) = write.as_ref().and_then(|w| w.staging.clone()) {
                    keep.insert(name);
                }
                let mut broken = None;
                let mut held = held_of(io, None);
                let reader = read.as_ref().and_then(|s| match self.restored_source(s) {
                    Ok(src) => {
                        held = held_of(io, Some(&src));
                        Some(Reader::new(src))
                    }
                    Err(e) => {
                        broken = Some(e.to_string());
                        None
                    }
                });
                let writer = write
                    .as_ref()
                    .and_then(|w| match self.restored_writer(*fh, w) {
                        Ok(w) => Some(tokio::sync::Mutex::new(w)),
                        Err(e) => {
                            broken = Some(e.to_string());
                            None
                        }
                    });
                if let Some(why) = &broken {
                    tracing::error!(fh, reason = %why, "cannot restore an open file; its calls will fail with EIO");
                }
                let handle = FileHandle {
                    reader,
                    writer,
                    opener: AtomicU32::new(*opener),
                    broken,
                    unique: *unique,
                    ino: *ino,
                    io: parking_lot::Mutex::new(held),
                    kept: Default::default(),
                };
                (*fh, Handle::File(Arc::new(handle)))
            }
        }
    }

    fn restored_source(&self, s: &SourceRecord) -> Result<Source> {
        let (mount, rel) = self.ufs_of(&s.path)?;
        Ok(Source {
            path: s.path.clone(),
            key: weir_cache::ObjectKey::new(mount.ufs.uri(), &rel, &s.version),
            mount,
            rel,
            size: s.size,
            etag: s.etag.clone(),
            version: s.version.clone(),
        })
    }

    fn restored_writer(&self, fh: u64, rec: &WriterRecord) -> Result<Writer> {
        let (mount, rel) = self.ufs_of(&rec.path)?;
        let staging = match &rec.staging {
            Some(name) => {
                let path = self.inner.cfg.staging_dir.join(name);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| {
                        FsError::new(
                            libc::EIO,
                            format!("staging file {} of {}: {e}", path.display(), rec.path),
                        )
                    })?;
                Some((file, path))
            }
            None => None,
        };
        let size = match &staging {
            Some((f, _)) => f.metadata()?.len(),
            None => 0,
        };
        let pending =
            (staging.is_some() && !rec.unlinked).then(|| self.inner.pending.open(&rec.path, size));
        let base = rec
            .base
            .as_ref()
            .map(|b| self.restored_source(b))
            .transpose()?;
        Ok(Writer {
            fh,
            path: rec.path.clone(),
            mount,
            rel,
            staging,
            size,
            dirty: rec.dirty,
            unlinked: rec.unlinked,
            pending,
            base,
        })
    }
}
