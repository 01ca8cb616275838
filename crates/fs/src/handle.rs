//! Open files: the handle table, open/create/release, and setattr, which
//! needs a handle's staging file when it truncates.

use std::sync::Arc;

use weir_cache::ObjectKey;
use weir_namespace::Mount;
use weir_ufs::Stat;

use crate::error::{FsError, Result};
use crate::iomode::{Held, IoMode};
use crate::read::{Reader, Source};
use crate::types::{Attr, KernelCache, Kind, OpenFlags, Opened, Origin, SetAttr};
use crate::write::{Fresh, Writer};
use crate::{Fs, policy};

/// An open file.
#[derive(Debug)]
pub(crate) struct FileHandle {
    /// Read state, when the file existed at open.
    pub reader: Option<Reader>,
    /// Write state, when opened for writing.
    pub writer: Option<tokio::sync::Mutex<Writer>>,
    /// The process that opened the file (0: unknown).
    pub opener: std::sync::atomic::AtomicU32,
    /// Why this handle, restored after a takeover, cannot serve (EIO).
    pub broken: Option<String>,
    /// The request that opened it.
    pub unique: u64,
    /// The node it is open on.
    pub ino: u64,
    /// The I/O mode it holds on that node.
    pub io: parking_lot::Mutex<Held>,
    /// Its version is pinned in the cache because its name went away.
    pub kept: std::sync::atomic::AtomicBool,
}

/// An open directory: a snapshot of its entries, taken at opendir, or at
/// the first readdir for a handle restored after a takeover.
#[derive(Debug)]
pub(crate) struct DirHandle {
    pub path: String,
    /// The request that opened it.
    pub unique: u64,
    pub entries: tokio::sync::OnceCell<Vec<crate::types::DirEntry>>,
}

/// Any open handle.
#[derive(Debug, Clone)]
pub(crate) enum Handle {
    File(Arc<FileHandle>),
    Dir(Arc<DirHandle>),
}

impl FileHandle {
    /// A handle opened now by `origin` on node `ino`, holding I/O mode `held`.
    pub(crate) fn new(
        ino: u64,
        reader: Option<Reader>,
        writer: Option<Writer>,
        origin: Origin,
        held: Held,
    ) -> Self {
        FileHandle {
            reader,
            writer: writer.map(tokio::sync::Mutex::new),
            opener: origin.pid.into(),
            broken: None,
            unique: origin.unique,
            ino,
            io: parking_lot::Mutex::new(held),
            kept: Default::default(),
        }
    }
}

impl Handle {
    pub(crate) fn file(&self) -> Option<Arc<FileHandle>> {
        match self {
            Handle::File(f) => Some(f.clone()),
            Handle::Dir(_) => None,
        }
    }
}

impl Fs {
    pub(crate) fn file_handle(&self, fh: u64) -> Result<Arc<FileHandle>> {
        let h = self
            .inner
            .handles
            .lock()
            .get(&fh)
            .and_then(Handle::file)
            .ok_or_else(|| FsError::new(libc::EBADF, format!("no open file handle {fh}")))?;
        if let Some(why) = &h.broken {
            return Err(FsError::new(
                libc::EIO,
                format!("file handle {fh} was lost in a daemon crash: {why}"),
            ));
        }
        Ok(h)
    }

    pub(crate) fn dir_handle(&self, fh: u64) -> Result<Arc<DirHandle>> {
        match self.inner.handles.lock().get(&fh) {
            Some(Handle::Dir(d)) => Ok(d.clone()),
            _ => Err(FsError::new(
                libc::EBADF,
                format!("no open directory handle {fh}"),
            )),
        }
    }

    /// Registers handle `fh`, journaled before the kernel hears of it.
    pub(crate) fn add_handle(&self, fh: u64, h: Handle) {
        if let Some(j) = &self.inner.journal {
            j.handle(crate::restore::handle_record(fh, &h));
        }
        self.inner.handles.lock().insert(fh, h);
    }

    /// The handle a request with this id already made, if any: only a
    /// request resent after a takeover can find one.
    pub(crate) fn handle_of_request(&self, unique: u64) -> Option<u64> {
        if unique == 0 {
            return None;
        }
        let handles = self.inner.handles.lock();
        handles.iter().find_map(|(fh, h)| {
            let u = match h {
                Handle::File(f) => f.unique,
                Handle::Dir(d) => d.unique,
            };
            (u == unique).then_some(*fh)
        })
    }

    /// Forgets handle `fh`.
    pub(crate) fn remove_handle(&self, fh: u64) -> Option<Handle> {
        let h = self.inner.handles.lock().remove(&fh);
        if h.is_some()
            && let Some(j) = &self.inner.journal
        {
            j.closed(fh);
        }
        h
    }

    pub(crate) fn source(&self, path: &str, mount: &Arc<Mount>, rel: &str, stat: &Stat) -> Source {
        let version = stat.version();
        let ufs = &mount.ufs;
        Source {
            path: path.to_string(),
            mount: mount.clone(),
            rel: rel.to_string(),
            size: stat.size,
            key: ObjectKey::new(ufs.uri(), rel, &version),
            etag: stat.etag.clone(),
            version,
        }
    }

    /// Opens node `ino`.
    pub async fn open(&self, ino: u64, flags: OpenFlags) -> Result<Opened> {
        self.open_from(ino, flags, Origin::default()).await
    }

    /// Opens node `ino` for the request `origin`.
    pub async fn open_from(&self, ino: u64, flags: OpenFlags, origin: Origin) -> Result<Opened> {
        if let Some(fh) = self.handle_of_request(origin.unique) {
            return Ok(self.reopened(fh));
        }
        let path = self.path_of(ino)?;
        let stat = self.stat_path(&path).await?;
        match stat.kind {
            Kind::Dir => return Err(FsError::new(libc::EISDIR, format!("{path} is a directory"))),
            Kind::Symlink => return Err(FsError::new(libc::ELOOP, format!("{path} is a symlink"))),
            Kind::File => {}
        }
        let (mount, rel) = self.ufs_of(&path)?;
        // While another handle writes the file, this one reads (and bases
        // random writes on) what the UFS holds, if anything yet. That other
        // handle's close may still be on its way even after its flush.
        let backing = if self.inner.pending.stat(&path).is_some() {
            self.stat_backing(&path)
                .await
                .ok()
                .filter(|s| s.kind == Kind::File)
        } else {
            Some(stat.clone())
        };
        let backing = match backing {
            Some(b) => Some(self.pinned(&path, &mount, &rel, b).await?),
            None => None,
        };
        let src = backing
            .as_ref()
            .map(|b| self.source(&path, &mount, &rel, b));
        if flags.write {
            policy::check_writable(self.inner.cfg.read_only, &path)?;
            self.settle_passthrough(ino).await;
        }
        let (mode, held) = self.choose_mode(ino, flags.write, src.as_ref())?;
        let fh = self.new_fh();
        let writer = match self.open_writer(fh, &path, &mount, &rel, flags, &backing, &src) {
            Ok(w) => w,
            Err(e) => {
                self.give_back(ino, held);
                return Err(e);
            }
        };
        let keep_cache = !flags.write && self.keep_cache(ino, &stat);
        let handle = FileHandle::new(ino, src.map(Reader::new), writer, origin, held);
        self.add_handle(fh, Handle::File(Arc::new(handle)));
        Ok(Opened {
            fh,
            keep_cache,
            mode,
        })
    }

    /// The writer of an open for writing, if it is one.
    #[allow(clippy::too_many_arguments)]
    fn open_writer(
        &self,
        fh: u64,
        path: &str,
        mount: &Arc<Mount>,
        rel: &str,
        flags: OpenFlags,
        backing: &Option<Stat>,
        src: &Option<Source>,
    ) -> Result<Option<Writer>> {
        let writer = if flags.write {
            if flags.append {
                policy::check_append(self.inner.cfg.random_writes)?;
            }
            let fresh = if flags.truncate {
                Fresh::Truncated
            } else if backing.as_ref().is_none_or(|b| b.size == 0) {
                Fresh::Empty
            } else {
                Fresh::No
            };
            let base = if fresh == Fresh::No {
                src.clone()
            } else {
                None
            };
            Some(self.new_writer(fh, path, mount, rel, fresh, base)?)
        } else {
            None
        };
        Ok(writer)
    }

    /// What a resent open gets back: the handle the dead daemon made, in
    /// the mode it holds.
    fn reopened(&self, fh: u64) -> Opened {
        let mode = match self.file_handle(fh).map(|h| *h.io.lock()) {
            Ok(Held::Passthrough(key)) => IoMode::Passthrough {
                file: self.inner.pages.data_path(key),
                id: self.backing_of(fh),
            },
            _ => IoMode::Cached,
        };
        Opened {
            fh,
            keep_cache: false,
            mode,
        }
    }

    /// The stat to pin a read to. A listing may have given attributes
    /// without a version tag while a HEAD gives one; the version must not
    /// depend on which of them filled the cache, or one object would be
    /// cached twice, so a remote file without an etag is stat'ed afresh.
    pub(crate) async fn pinned(
        &self,
        path: &str,
        mount: &Mount,
        rel: &str,
        stat: Stat,
    ) -> Result<Stat> {
        let ufs = &mount.ufs;
        if stat.etag.is_some() || ufs.is_local() {
            return Ok(stat);
        }
        let fresh = ufs.stat(rel).await?;
        self.inner.meta.put_stat(path, Some(fresh.clone()));
        Ok(fresh)
    }

    fn keep_cache(&self, ino: u64, stat: &Stat) -> bool {
        match self.inner.cfg.kernel_cache {
            KernelCache::Off => false,
            KernelCache::Keep => true,
            KernelCache::Auto => {
                let version = stat.version();
                let mut seen = self.inner.open_versions.lock();
                let same = seen.get(&ino) == Some(&version);
                seen.insert(ino, version);
                same
            }
        }
    }

    /// Creates and opens `name` in `parent`. The file exists for lookups at
    /// once, and in the UFS from its first flush or close.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        flags: OpenFlags,
    ) -> Result<(Attr, Opened)> {
        self.create_from(parent, name, flags, Origin::default())
            .await
    }

    /// Creates and opens `name` in `parent` for the request `origin`.
    pub async fn create_from(
        &self,
        parent: u64,
        name: &str,
        flags: OpenFlags,
        origin: Origin,
    ) -> Result<(Attr, Opened)> {
        let path = self.child_path(parent, name)?;
        if let Some(fh) = self.handle_of_request(origin.unique) {
            // The dead daemon made this file and its handle; the kernel
            // never heard, and asks again.
            let ino = self.inner.inodes.lock().lookup(&path, Kind::File);
            let stat = self.stat_path(&path).await?;
            return Ok((self.attr(ino, &stat), self.reopened(fh)));
        }
        policy::check_writable(self.inner.cfg.read_only, &path)?;
        match self.stat_path(&path).await {
            Ok(stat) if stat.kind == Kind::Dir => {
                return Err(FsError::new(libc::EISDIR, format!("{path} is a directory")));
            }
            Ok(_) if flags.exclusive => {
                return Err(FsError::new(libc::EEXIST, format!("{path} exists")));
            }
            Ok(_) => {
                // It appeared since the kernel's lookup: open it as it is.
                let attr = self.lookup(parent, name).await?;
                let opened = self.open_from(attr.ino, flags, origin).await?;
                return Ok((attr, opened));
            }
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
        let (mount, rel) = self.ufs_of(&path)?;
        let fh = self.new_fh();
        let ino = self.inner.inodes.lock().lookup(&path, Kind::File);
        let (mode, held) = self.choose_mode(ino, true, None)?;
        let writer = match self.new_writer(fh, &path, &mount, &rel, Fresh::Truncated, None) {
            Ok(w) => w,
            Err(e) => {
                self.give_back(ino, held);
                return Err(e);
            }
        };
        let handle = FileHandle::new(ino, None, Some(writer), origin, held);
        self.add_handle(fh, Handle::File(Arc::new(handle)));
        self.invalidate(&path);
        let stat = self.inner.pending.stat(&path).unwrap_or_else(Stat::dir);
        Ok((
            self.attr(ino, &stat),
            Opened {
                fh,
                keep_cache: false,
                mode,
            },
        ))
    }

    /// Records which process opened `fh`, for [`Fs::flush_from`].
    pub fn set_opener(&self, fh: u64, pid: u32) {
        if let Ok(h) = self.file_handle(fh) {
            h.opener.store(pid, std::sync::atomic::Ordering::Relaxed);
            if let Some(j) = &self.inner.journal {
                j.opener(fh, pid);
            }
        }
    }

    /// A flush sent because process `pid` closed a descriptor of `fh`.
    /// Only the opener's own close publishes the file: a child that
    /// inherited the descriptor (fork, then exec or exit) closes it while
    /// the opener may still be writing, and uploading then would publish a
    /// part of the file. The last close (release) uploads in every case.
    pub async fn flush_from(&self, fh: u64, pid: Option<u32>) -> Result<()> {
        let h = self.file_handle(fh)?;
        let opener = h.opener.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(pid) = pid
            && opener != 0
            && pid != opener
        {
            tracing::debug!(
                fh,
                pid,
                opener,
                "flush from another process; upload waits for the opener"
            );
            return Ok(());
        }
        self.flush(fh).await
    }

    /// Closes handle `fh`, uploading what it staged. An upload error here
    /// can only be logged; applications that care see it from close(2),
    /// which flushes first.
    pub async fn release(&self, fh: u64) -> Result<()> {
        self.release_io(fh).await.0
    }

    /// [`Fs::release`], also giving the backing id to close when this was
    /// the last passthrough open of its node.
    pub async fn release_io(&self, fh: u64) -> (Result<()>, Option<u32>) {
        let handle = self.inner.handles.lock().get(&fh).cloned();
        let Some(Handle::File(h)) = handle else {
            self.remove_handle(fh);
            return (Ok(()), None);
        };
        let close = self.give_back(h.ino, *h.io.lock());
        self.release_kept(&h);
        // The handle leaves the journal only once its upload is done: a
        // daemon that dies mid-upload leaves the staged file to its
        // successor, which gets the RELEASE again and uploads it.
        let result = match &h.writer {
            Some(w) => {
                let mut w = w.lock().await;
                self.finish_writer(&mut w).await
            }
            None => Ok(()),
        };
        self.remove_handle(fh);
        (result, close)
    }

    /// Changes attributes of `ino`. Only the size can change (within the
    /// semantics table's rules); mode, owner and times are refused.
    pub async fn setattr(&self, ino: u64, set: &SetAttr, fh: Option<u64>) -> Result<Attr> {
        if set.mode.is_some() || set.uid.is_some() || set.gid.is_some() || set.times {
            return Err(FsError::unsupported("chmod, chown and utimens"));
        }
        if let Some(size) = set.size {
            let path = self.path_of(ino)?;
            policy::check_writable(self.inner.cfg.read_only, &path)?;
            let handle = fh.and_then(|fh| self.file_handle(fh).ok());
            match handle.as_ref().and_then(|h| h.writer.as_ref()) {
                Some(w) => {
                    let mut w = w.lock().await;
                    self.truncate_handle(&mut w, size).await?;
                }
                None => self.truncate_path(&path, size).await?,
            }
        }
        self.getattr(ino).await
    }

    async fn truncate_path(&self, path: &str, size: u64) -> Result<()> {
        let stat = self.stat_path(path).await?;
        if stat.kind != Kind::File {
            return Err(FsError::new(libc::EISDIR, format!("{path} is not a file")));
        }
        if self.inner.pending.stat(path).is_some() {
            return Err(FsError::new(
                libc::EBUSY,
                format!("{path} is being written; truncate through its handle"),
            ));
        }
        policy::check_truncate(self.inner.cfg.random_writes, stat.size, size)?;
        if size == stat.size {
            return Ok(());
        }
        let (mount, rel) = self.ufs_of(path)?;
        let base = (size != 0).then(|| self.source(path, &mount, &rel, &stat));
        let fresh = if size == 0 {
            Fresh::Truncated
        } else {
            Fresh::No
        };
        // A writer of no handle (0): a crash mid-way lets the resent SETATTR
        // do it all again.
        let mut w = self.new_writer(0, path, &mount, &rel, fresh, base)?;
        let result = self.truncate_handle(&mut w, size).await;
        let finished = self.finish_writer(&mut w).await;
        result.and(finished)
    }
}
