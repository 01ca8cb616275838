//! The filesystem's one error type: an errno plus a message for the logs.
//! Every failure of the core reaches the FUSE adapter as an [`FsError`], so
//! the errno an application sees is decided here and nowhere else.

use std::fmt;

/// Result alias for filesystem operations.
pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// A failed filesystem operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    errno: i32,
    message: String,
}

impl FsError {
    /// An error with `errno` and a message for the logs.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
        }
    }

    /// The errno to return to the kernel.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Path not found.
    pub fn not_found(path: &str) -> Self {
        Self::new(libc::ENOENT, format!("{path}: not found"))
    }

    /// A refusal by the semantics policy (see the semantics table).
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::new(libc::ENOTSUP, format!("{what}: not supported"))
    }

    /// A write on a read-only mount or directory.
    pub fn read_only(path: &str) -> Self {
        Self::new(libc::EROFS, format!("{path}: read-only"))
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl std::error::Error for FsError {}

impl From<weir_ufs::UfsError> for FsError {
    fn from(e: weir_ufs::UfsError) -> Self {
        FsError::new(e.errno(), e.to_string())
    }
}

impl From<weir_cache::CacheError> for FsError {
    fn from(e: weir_cache::CacheError) -> Self {
        FsError::new(e.errno(), e.to_string())
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string())
    }
}
