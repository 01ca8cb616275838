//! weir's filesystem core, free of FUSE.
//!
//! [`Fs`] implements the namespace operations (lookup, readdir, create,
//! rename, ...) and the data path over a [`MountTable`], a [`MetaCache`] and
//! a [`PageCache`]. The FUSE adapter is a thin layer that turns kernel
//! requests into calls here, so every rule of the semantics table can be
//! tested without a mount.
//!
//! Module map: `inode` (node ids), `read` (paged reads and read-ahead),
//! `write` (staging and atomic upload), `dir` (listings), `meta` (stat with
//! caches), `policy` (what the semantics table allows), `journal` (node ids
//! and handles kept for a takeover), `restore` (rebuilding them), `resend`
//! (requests the kernel sends again after a takeover), `iomode` (cached
//! or passthrough I/O per open inode), `keep` (open files outliving their
//! names), `events` (changes announced to other nodes and invalidations
//! received from them), `paths` (path-based access for the admin endpoint:
//! stat, list, cached share, preload, drop).
//!
//! The mount table can be replaced while the filesystem serves
//! ([`Fs::set_table`]): each call resolves its paths in one snapshot of the
//! table, and open handles hold the mount they opened on, so they keep
//! reading and writing it even if it leaves the table.

mod dir;
mod error;
mod events;
mod handle;
mod inode;
mod iomode;
pub mod journal;
mod keep;
mod meta;
mod paths;
mod policy;
mod read;
mod resend;
mod restore;
mod types;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use weir_cache::{MetaCache, PageCache};
use weir_namespace::{Mount, MountTable, Resolved};

pub use error::{FsError, Result};
pub use events::{Change, ChangeObserver, KernelNotifier};
pub use inode::{InodeTable, ROOT_INO};
pub use iomode::IoMode;
pub use paths::{Cached, Loaded};
pub use types::{
    Attr, DirEntry, FsConfig, KernelCache, Kind, OpenFlags, Opened, Origin, RenameFlags, SetAttr,
    StatFs,
};

use handle::Handle;
use journal::Journal;
use write::PendingFiles;

/// The filesystem. Cheap to clone; clones share all state.
#[derive(Debug, Clone)]
pub struct Fs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The mount table now; replaced whole by [`Fs::set_table`].
    table: RwLock<Arc<MountTable>>,
    meta: MetaCache,
    pages: Arc<PageCache>,
    cfg: FsConfig,
    inodes: Mutex<InodeTable>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    pending: PendingFiles,
    fetches: read::Fetches,
    /// Version seen at the last open of each node, for `auto_cache`.
    open_versions: Mutex<HashMap<u64, String>>,
    /// Reported as the mtime of directories the UFS gives no time for.
    started: std::time::SystemTime,
    /// Where node ids and handles are recorded for a takeover, if anywhere.
    journal: Option<Arc<Journal>>,
    /// The I/O mode of each open inode (passthrough).
    io: iomode::IoModes,
    /// Told of every change made through this filesystem (cluster mode).
    observer: std::sync::OnceLock<Arc<dyn ChangeObserver>>,
    /// Drops the kernel's cached entries and attributes on invalidations
    /// from elsewhere.
    kernel: std::sync::OnceLock<Arc<dyn KernelNotifier>>,
}

/// Where a namespace path lives, resolved in one snapshot of the table.
#[derive(Debug)]
enum Place {
    /// In this mount, at this UFS-relative path (empty: the mount root).
    Ufs(Arc<Mount>, String),
    /// A directory that exists because mount points are below it.
    Virtual,
    /// Nowhere.
    Outside,
}

/// How a journaled filesystem starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new FUSE connection: start an empty journal.
    Fresh,
    /// A live connection whose previous daemon died: restore from its journal.
    Takeover,
}

impl Fs {
    /// A filesystem over `table`, caching data in `pages`, with no journal:
    /// its node ids and handles die with the process.
    pub fn new(table: MountTable, pages: Arc<PageCache>, cfg: FsConfig) -> Result<Fs> {
        prepare_staging(&cfg.staging_dir)?;
        write::clear_stale_staging(&cfg.staging_dir, &Default::default());
        Ok(Fs::build(table, pages, cfg, None))
    }

    /// A filesystem that journals its node ids and handles in `dir`, so a
    /// later daemon can take over its FUSE connection. With
    /// [`Start::Takeover`] it first restores what the previous daemon of
    /// this connection recorded there.
    pub fn journaled(
        table: MountTable,
        pages: Arc<PageCache>,
        cfg: FsConfig,
        dir: &std::path::Path,
        start: Start,
    ) -> Result<Fs> {
        prepare_staging(&cfg.staging_dir)?;
        let io = |what: &str, e: std::io::Error| {
            FsError::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("session journal in {}: {what}: {e}", dir.display()),
            )
        };
        match start {
            Start::Fresh => {
                write::clear_stale_staging(&cfg.staging_dir, &Default::default());
                let journal = Journal::create(dir).map_err(|e| io("cannot create", e))?;
                let fs = Fs::build(table, pages, cfg, Some(Arc::new(journal)));
                Ok(fs)
            }
            Start::Takeover => {
                let (journal, restored) =
                    Journal::reopen(dir).map_err(|e| io("cannot restore", e))?;
                let fs = Fs::build(table, pages, cfg, Some(Arc::new(journal)));
                fs.restore(&restored)?;
                Ok(fs)
            }
        }
    }

    fn build(
        table: MountTable,
        pages: Arc<PageCache>,
        cfg: FsConfig,
        journal: Option<Arc<Journal>>,
    ) -> Fs {
        let mut inodes = InodeTable::new();
        if let Some(j) = &journal {
            inodes.set_journal(j.clone());
        }
        Fs {
            inner: Arc::new(Inner {
                meta: MetaCache::new(cfg.metadata_ttl, 1_000_000),
                fetches: read::Fetches::new(cfg.ufs_concurrency),
                table: RwLock::new(Arc::new(table)),
                pages,
                cfg,
                inodes: Mutex::new(inodes),
                handles: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                pending: PendingFiles::default(),
                open_versions: Mutex::new(HashMap::new()),
                started: std::time::SystemTime::now(),
                journal,
                io: Default::default(),
                observer: Default::default(),
                kernel: Default::default(),
            }),
        }
    }

    /// The journal, when this filesystem keeps one.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.inner.journal.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &FsConfig {
        &self.inner.cfg
    }

    /// The page cache.
    pub fn pages(&self) -> &Arc<PageCache> {
        &self.inner.pages
    }

    /// The mount table now (a snapshot: a later [`Fs::set_table`] does not
    /// change it).
    pub fn table(&self) -> Arc<MountTable> {
        self.inner.table.read().clone()
    }

    /// Serves `table` from now on. Calls already running finish on the
    /// table they started with; open handles keep their mount. Every cached
    /// stat and listing is dropped, since paths may now mean other objects.
    pub fn set_table(&self, table: MountTable) {
        let mounts = table.mounts().len();
        *self.inner.table.write() = Arc::new(table);
        self.inner.meta.clear();
        self.notify_kernel_all();
        tracing::info!(mounts, "now serving a new mount table");
    }

    /// Number of open file and directory handles.
    pub fn open_handles(&self) -> usize {
        self.inner.handles.lock().len()
    }

    /// Looks up `name` in directory `parent`; the kernel now holds one more
    /// lookup on the returned node.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        let path = self.child_path(parent, name)?;
        let stat = self.stat_path(&path).await?;
        let ino = self.inner.inodes.lock().lookup(&path, stat.kind);
        Ok(self.attr(ino, &stat))
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inner.inodes.lock().forget(ino, n);
    }

    /// Attributes of node `ino`.
    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        let path = self.path_of(ino)?;
        match self.stat_path(&path).await {
            Ok(stat) => Ok(self.attr(ino, &stat)),
            Err(e) if e.errno() == libc::ENOENT => self.open_attr(ino).ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// The attributes of a node whose name is gone but which a handle still
    /// reads (fstat of an unlinked open file), from the version it pinned.
    fn open_attr(&self, ino: u64) -> Option<Attr> {
        let handles = self.inner.handles.lock();
        let src = handles
            .values()
            .filter_map(Handle::file)
            .find(|h| h.ino == ino && h.reader.is_some())
            .and_then(|h| h.reader.as_ref().map(|r| r.src.clone()))?;
        drop(handles);
        let stat = weir_ufs::Stat {
            kind: Kind::File,
            size: src.size,
            mtime: None,
            etag: src.etag,
        };
        Some(self.attr(ino, &stat))
    }

    /// Filesystem statistics: the mount is unbounded, so a large constant.
    pub fn statfs(&self) -> StatFs {
        const BLOCKS: u64 = 1 << 40; // 4 PiB of 4 KiB blocks
        StatFs {
            blocks: BLOCKS,
            bfree: BLOCKS,
            bavail: BLOCKS,
            files: 1 << 32,
            ffree: 1 << 32,
            bsize: 4096,
            namelen: 255,
        }
    }

    fn path_of(&self, ino: u64) -> Result<String> {
        self.inner
            .inodes
            .lock()
            .path(ino)
            .ok_or_else(|| FsError::new(libc::ESTALE, format!("node {ino} is not known")))
    }

    fn child_path(&self, parent: u64, name: &str) -> Result<String> {
        policy::check_name(name)?;
        let dir = self.path_of(parent)?;
        Ok(weir_namespace::child(&dir, name))
    }

    /// Where `path` lives, in the table now.
    fn place(&self, path: &str) -> Place {
        let table = self.table();
        match table.resolve(path) {
            Resolved::Ufs { mount, rel } => Place::Ufs(table.mount(mount).clone(), rel),
            Resolved::Virtual => Place::Virtual,
            Resolved::Outside => Place::Outside,
        }
    }

    /// The mount and UFS path holding `path`, which must be inside a mount
    /// and not a mount point itself.
    fn ufs_of(&self, path: &str) -> Result<(Arc<Mount>, String)> {
        match self.place(path) {
            Place::Ufs(mount, rel) if !rel.is_empty() => Ok((mount, rel)),
            Place::Ufs(..) => Err(FsError::new(
                libc::EBUSY,
                format!("{path} is a mount point"),
            )),
            Place::Virtual => Err(FsError::read_only(path)),
            Place::Outside => Err(FsError::not_found(path)),
        }
    }

    fn attr(&self, ino: u64, stat: &weir_ufs::Stat) -> Attr {
        let cfg = &self.inner.cfg;
        let perm = match stat.kind {
            Kind::Dir => 0o755,
            Kind::File => 0o644,
            Kind::Symlink => 0o777,
        };
        Attr {
            ino,
            kind: stat.kind,
            size: stat.size,
            mtime: stat.mtime.unwrap_or(self.inner.started),
            perm: if cfg.read_only { perm & 0o555 } else { perm },
            uid: cfg.uid,
            gid: cfg.gid,
        }
    }

    fn new_fh(&self) -> u64 {
        self.inner.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

fn prepare_staging(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        FsError::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("staging dir {}: {e}", dir.display()),
        )
    })
}

#[cfg(test)]
mod tests;
