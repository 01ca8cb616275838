//! fuser's `Filesystem` over the FUSE-free core. Each callback runs its core
//! call on the tokio runtime and turns the result into a reply; an
//! [`FsError`] becomes its errno. Nothing here decides semantics. The one
//! piece of state here is the kernel's backing files for passthrough opens,
//! which only fuser can register and close. Every request is counted and
//! timed in one place ([`Adapter::call`] and [`Adapter::measure`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags as FuseOpenFlags, RenameFlags as FuseRenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use weir_fs::{Attr, Fs, FsError, IoMode, Kind, OpenFlags, Opened, Origin, RenameFlags, SetAttr};

use crate::MountOptions;
use crate::stats::{FuseMetrics, Op};

/// Largest read or write request we ask the kernel for.
const MAX_REQUEST: u32 = 1 << 20;

/// The FUSE face of a [`Fs`].
#[derive(Debug)]
pub struct Adapter {
    fs: Fs,
    rt: Handle,
    opts: MountOptions,
    parallel_dirops: bool,
    passthrough: bool,
    /// The registered backing file of each inode open in passthrough mode.
    backings: parking_lot::Mutex<HashMap<u64, BackingId>>,
    metrics: FuseMetrics,
}

impl Adapter {
    /// An adapter running `fs` calls on `rt`; `passthrough` asks the kernel
    /// for FUSE passthrough of wholly cached files.
    pub fn new(
        fs: Fs,
        rt: Handle,
        opts: MountOptions,
        parallel_dirops: bool,
        passthrough: bool,
    ) -> Self {
        Adapter {
            fs,
            rt,
            opts,
            parallel_dirops,
            passthrough,
            backings: Default::default(),
            metrics: FuseMetrics::new(),
        }
    }

    /// Runs the core call of request `op` on the runtime, counted and timed.
    fn call<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, FsError>>,
    ) -> Result<T, FsError> {
        self.measure(op, || self.rt.block_on(call))
    }

    /// Runs the answer to request `op`, counted and timed.
    fn measure<T>(&self, op: Op, f: impl FnOnce() -> Result<T, FsError>) -> Result<T, FsError> {
        let request = self.metrics.start(op);
        let r = f();
        request.done(r.as_ref().err().map(FsError::errno));
        r
    }

    /// A request weir refuses outright, counted like any other.
    fn refuse(&self, op: Op, what: &str) -> Errno {
        let r: Result<(), FsError> = self.measure(op, || Err(FsError::unsupported(what)));
        tracing::debug!("{what}: not supported");
        Errno::from_i32(r.err().map_or(libc::ENOTSUP, |e| e.errno()))
    }

    /// Answers an open in the mode the core chose, registering the backing
    /// file of a first passthrough open of the inode.
    fn reply_open(&self, ino: u64, o: Opened, reply: ReplyOpen) {
        let flags = fopen_flags(o.keep_cache);
        tracing::debug!(ino, fh = o.fh, mode = ?o.mode, "open");
        match &o.mode {
            IoMode::Cached => reply.opened(FileHandle(o.fh), flags),
            IoMode::Passthrough { file, id } => {
                let mut backings = self.backings.lock();
                let backing = match backings.entry(ino) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        match self.register_backing(&reply, ino, file, *id) {
                            Ok(b) => slot.insert(b),
                            Err(e) => {
                                tracing::warn!(error = %e, file = %file.display(), "the kernel refused passthrough; reading through the daemon from now on");
                                drop(backings);
                                self.fs.passthrough_refused(o.fh);
                                return reply.opened(FileHandle(o.fh), flags);
                            }
                        }
                    }
                };
                reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), backing);
            }
        }
    }

    /// A backing id for `file`: the one a dead daemon registered for this
    /// inode (`id`, kept in the journal, still open in the kernel), or a new one.
    fn register_backing(
        &self,
        reply: &ReplyOpen,
        ino: u64,
        file: &Path,
        id: Option<u32>,
    ) -> std::io::Result<BackingId> {
        if let Some(id) = id {
            // SAFETY: `id` was registered on this connection by an earlier
            // daemon, whose passthrough opens of the inode still hold it,
            // and nobody closed it (its close is journaled).
            return Ok(unsafe { reply.wrap_backing(id) });
        }
        let f = std::fs::File::open(file)?;
        let raw = reply.open_backing(&f)?.into_raw();
        // SAFETY: we just registered `raw`, and hand its ownership back.
        let b = unsafe { reply.wrap_backing(raw) };
        self.fs.set_backing(ino, raw);
        Ok(b)
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        let kind = match a.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind,
            perm: a.perm,
            nlink: if a.kind == Kind::Dir { 2 } else { 1 },
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            // cp and friends size their buffers from st_blksize.
            blksize: MAX_REQUEST,
            flags: 0,
        }
    }

    fn entry(&self, reply: ReplyEntry, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => reply.entry_with_ttls(
                &self.opts.attr_timeout,
                &self.opts.entry_timeout,
                &self.file_attr(&a),
                Generation(0),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn empty(&self, reply: ReplyEmpty, r: Result<(), FsError>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn errno(e: &FsError) -> Errno {
    match e.errno() {
        libc::ENOENT => tracing::trace!("{e}"),
        libc::ENOTSUP | libc::EEXIST | libc::ENOTEMPTY | libc::ETXTBSY => tracing::debug!("{e}"),
        _ => tracing::warn!("{e}"),
    }
    Errno::from_i32(e.errno())
}

fn name_str(name: &OsStr) -> Result<&str, FsError> {
    name.to_str()
        .ok_or_else(|| FsError::new(libc::EINVAL, format!("{name:?}: names must be UTF-8")))
}

/// The process (thread group) of the thread `tid` that sent a request; the
/// kernel reports thread ids.
fn process_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The kernel sets this bit in `unique` on requests it sends again after
/// FUSE_NOTIFY_RESEND: a dead daemon had read them and never answered.
const RESENT: u64 = 1 << 63;

fn resent(req: &Request) -> bool {
    req.unique().0 & RESENT != 0
}

/// The request's id and process, as the core records them with a handle.
fn origin(req: &Request) -> Origin {
    Origin {
        unique: req.unique().0 & !RESENT,
        pid: process_of(req.pid()).unwrap_or(0),
    }
}

impl fuser::Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with open, so truncation and the new content are
        // uploaded together instead of as an empty object first.
        let mut wanted = InitFlags::FUSE_ATOMIC_O_TRUNC;
        if self.parallel_dirops {
            wanted |= InitFlags::FUSE_PARALLEL_DIROPS;
        }
        if let Err(missing) = config.add_capabilities(wanted) {
            tracing::warn!(?missing, "kernel lacks FUSE capabilities");
            let _ = config.add_capabilities(wanted & !missing);
        }
        let passthrough = self.passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.fs.enable_passthrough(passthrough);
        let _ = config.set_max_write(MAX_REQUEST);
        let _ = config.set_max_background(self.opts.max_background);
        if let Err(max) = config.set_max_readahead(MAX_REQUEST) {
            let _ = config.set_max_readahead(max);
        }
        tracing::info!(
            parallel_dirops = self.parallel_dirops,
            passthrough,
            atomic_o_trunc = config
                .capabilities()
                .contains(InitFlags::FUSE_ATOMIC_O_TRUNC),
            "FUSE session initialised"
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.call(Op::Lookup, async {
            self.fs.lookup(parent.0, name_str(name)?).await
        });
        self.entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = self.measure(Op::Forget, || {
            self.fs.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.call(Op::Getattr, self.fs.getattr(ino.0)) {
            Ok(a) => reply.attr(&self.opts.attr_timeout, &self.file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            size,
            mode,
            uid,
            gid,
            times: atime.is_some() || mtime.is_some(),
        };
        match self.call(Op::Setattr, self.fs.setattr(ino.0, &set, fh.map(|f| f.0))) {
            Ok(a) => reply.attr(&self.opts.attr_timeout, &self.file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.call(Op::Readlink, self.fs.readlink(ino.0)) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse(Op::Mknod, "mknod"));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.call(Op::Mkdir, async {
            let n = name_str(name)?;
            if resent(req) {
                self.fs.mkdir_resent(parent.0, n).await
            } else {
                self.fs.mkdir(parent.0, n).await
            }
        });
        self.entry(reply, r);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.call(Op::Unlink, async {
            let n = name_str(name)?;
            if resent(req) {
                self.fs.unlink_resent(parent.0, n).await
            } else {
                self.fs.unlink(parent.0, n).await
            }
        });
        self.empty(reply, r);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.call(Op::Rmdir, async {
            let n = name_str(name)?;
            if resent(req) {
                self.fs.rmdir_resent(parent.0, n).await
            } else {
                self.fs.rmdir(parent.0, n).await
            }
        });
        self.empty(reply, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.call(Op::Symlink, async {
            let n = name_str(link_name)?;
            let t = target
                .to_str()
                .ok_or_else(|| FsError::new(libc::EINVAL, "symlink targets must be UTF-8"))?;
            if resent(req) {
                self.fs.symlink_resent(parent.0, n, t).await
            } else {
                self.fs.symlink(parent.0, n, t).await
            }
        });
        self.entry(reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: FuseRenameFlags,
        reply: ReplyEmpty,
    ) {
        let f = RenameFlags {
            no_replace: flags.contains(FuseRenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(FuseRenameFlags::RENAME_EXCHANGE)
                || flags.contains(FuseRenameFlags::RENAME_WHITEOUT),
        };
        let r = self.call(Op::Rename, async {
            let (n, nn) = (name_str(name)?, name_str(newname)?);
            if resent(req) {
                self.fs.rename_resent(parent.0, n, newparent.0, nn, f).await
            } else {
                self.fs.rename(parent.0, n, newparent.0, nn, f).await
            }
        });
        self.empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse(Op::Link, "hard links"));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: FuseOpenFlags, reply: ReplyOpen) {
        let flags = OpenFlags::from_raw(flags.0);
        match self.call(Op::Open, self.fs.open_from(ino.0, flags, origin(req))) {
            Ok(o) => self.reply_open(ino.0, o, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: FuseOpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.call(Op::Read, self.fs.read(fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: FuseOpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = self.call(Op::Write, async {
            if resent(req) {
                self.fs.write_resent(fh.0, offset, data).await
            } else {
                self.fs.write(fh.0, offset, data).await
            }
        });
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let pid = process_of(req.pid());
        let r = self.call(Op::Flush, self.fs.flush_from(fh.0, pid));
        self.empty(reply, r);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: FuseOpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.call(Op::Release, async {
            let (r, closed) = self.fs.release_io(fh.0).await;
            if closed.is_some() {
                // The inode's last passthrough open: dropping closes the backing.
                self.backings.lock().remove(&ino.0);
            }
            r
        });
        self.empty(reply, r);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.call(Op::Fsync, self.fs.flush(fh.0));
        self.empty(reply, r);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: FuseOpenFlags, reply: ReplyOpen) {
        match self.call(Op::Opendir, self.fs.opendir_from(ino.0, origin(req))) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.call(Op::Readdir, self.fs.readdir(fh.0, offset)) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    let kind = match e.kind {
                        Kind::File => FileType::RegularFile,
                        Kind::Dir => FileType::Directory,
                        Kind::Symlink => FileType::Symlink,
                    };
                    if reply.add(INodeNo(e.ino), offset + i as u64 + 1, kind, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: FuseOpenFlags,
        reply: ReplyEmpty,
    ) {
        let _ = self.measure(Op::Releasedir, || {
            self.fs.releasedir(fh.0);
            Ok(())
        });
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        let _ = self.measure(Op::Statfs, || Ok(()));
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse(Op::Xattr, "xattr"));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(self.refuse(Op::Xattr, "xattr"));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(self.refuse(Op::Xattr, "xattr"));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse(Op::Xattr, "xattr"));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.call(Op::Create, async {
            let flags = OpenFlags::from_raw(flags);
            self.fs
                .create_from(parent.0, name_str(name)?, flags, origin(req))
                .await
        });
        match r {
            Ok((a, o)) => reply.created(
                &self.opts.entry_timeout,
                &self.file_attr(&a),
                Generation(0),
                FileHandle(o.fh),
                fopen_flags(o.keep_cache),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // What a regular file answers to terminal and device ioctls (Python
        // asks TCGETS on every buffered open).
        let r: Result<(), FsError> =
            self.measure(Op::Ioctl, || Err(FsError::new(libc::ENOTTY, "ioctl")));
        reply.error(Errno::from_i32(r.err().map_or(libc::ENOTTY, |e| e.errno())));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse(Op::Fallocate, "fallocate"));
    }
}

fn fopen_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}
