//! Plain data types the filesystem core exchanges with its adapter: file
//! attributes, open flags, attribute changes, directory entries, settings.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use weir_ufs::Kind;

/// Attributes of one node, as the kernel will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Node id.
    pub ino: u64,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (also used for atime and ctime).
    pub mtime: SystemTime,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What an `open` or `create` asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub write: bool,
    /// O_TRUNC.
    pub truncate: bool,
    /// O_APPEND.
    pub append: bool,
    /// O_EXCL (with create).
    pub exclusive: bool,
}

impl OpenFlags {
    /// Decodes the flags of open(2).
    pub fn from_raw(flags: i32) -> Self {
        let acc = flags & libc::O_ACCMODE;
        OpenFlags {
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            truncate: flags & libc::O_TRUNC != 0,
            append: flags & libc::O_APPEND != 0,
            exclusive: flags & libc::O_EXCL != 0,
        }
    }
}

/// Who asked for an open, create or opendir: the kernel's request id (so
/// that a request resent after a daemon crash finds the handle the dead
/// daemon had already made for it) and the calling process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// The FUSE request's unique id, without the resend bit (0: unknown).
    pub unique: u64,
    /// The process that opened (0: unknown).
    pub pid: u32,
}

/// What `open` decided about the kernel's caching of this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The file handle.
    pub fh: u64,
    /// Keep the kernel's cached pages of this file (FOPEN_KEEP_CACHE).
    pub keep_cache: bool,
    /// How the kernel does I/O on it.
    pub mode: crate::IoMode,
}

/// A setattr request; `None` fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New size (truncate).
    pub size: Option<u64>,
    /// New mode (chmod).
    pub mode: Option<u32>,
    /// New owner (chown).
    pub uid: Option<u32>,
    /// New group (chown).
    pub gid: Option<u32>,
    /// New access or modification time (utimens).
    pub times: bool,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Node id (or a stable stand-in for nodes the kernel has not looked up).
    pub ino: u64,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
}

/// renameat2 flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// RENAME_NOREPLACE.
    pub no_replace: bool,
    /// RENAME_EXCHANGE.
    pub exchange: bool,
}

/// Filesystem statistics for statfs(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Maximum name length.
    pub namelen: u32,
}

/// How the kernel page cache is kept across opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelCache {
    /// Drop the kernel's pages at every open (the default).
    #[default]
    Off,
    /// Always keep them (`kernel_cache`).
    Keep,
    /// Keep them while mtime and size are unchanged (`auto_cache`).
    Auto,
}

/// Settings of the filesystem core.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Allow append, random writes and truncate to any size.
    pub random_writes: bool,
    /// Allow symlink and readlink.
    pub symlinks: bool,
    /// Refuse every change.
    pub read_only: bool,
    /// Kernel page cache policy.
    pub kernel_cache: KernelCache,
    /// How long stat results and listings are trusted.
    pub metadata_ttl: Duration,
    /// Most pages read ahead of a sequential reader.
    pub readahead_pages: u64,
    /// Most pages one UFS request fetches for read-ahead.
    pub fetch_pages: u64,
    /// Most UFS reads in flight at once.
    pub ufs_concurrency: usize,
    /// Where writes are staged before upload.
    pub staging_dir: PathBuf,
    /// Owner reported for every node.
    pub uid: u32,
    /// Group reported for every node.
    pub gid: u32,
}

impl FsConfig {
    /// Defaults, staging under `staging_dir`.
    pub fn new(staging_dir: PathBuf) -> Self {
        FsConfig {
            random_writes: false,
            symlinks: false,
            read_only: false,
            kernel_cache: KernelCache::Off,
            metadata_ttl: Duration::from_secs(60),
            readahead_pages: 16,
            fetch_pages: 8,
            ufs_concurrency: 16,
            staging_dir,
            uid: 0,
            gid: 0,
        }
    }
}
