//! The one error type of the under-storage layer. Every variant maps to an
//! errno, so the filesystem core can pass a UFS failure to the application
//! without inventing codes of its own.

use std::io;

/// Result alias for UFS operations.
pub type Result<T, E = UfsError> = std::result::Result<T, E>;

/// A failure of the under-storage, already classified for the application.
#[derive(Debug, thiserror::Error)]
pub enum UfsError {
    /// The object or directory does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The target exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A directory that should be empty is not.
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    /// The storage refused our credentials.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The storage or weir does not offer this operation here.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The object changed since the version we pinned (etag mismatch).
    #[error("object changed while being read: {0}")]
    Changed(String),
    /// The URI or its options are wrong; this is a user error.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// A path tried to leave the storage root (`..`, or a symlink pointing outside).
    #[error("path escapes the storage root: {0}")]
    Escape(String),
    /// A local I/O error (staging file, local backend).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Anything else the backend reported: network, throttling, server errors.
    #[error("storage error: {0}")]
    Backend(#[source] Box<opendal::Error>),
}

impl UfsError {
    /// The errno an application should see for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            UfsError::NotFound(_) => libc::ENOENT,
            UfsError::AlreadyExists(_) => libc::EEXIST,
            UfsError::NotEmpty(_) => libc::ENOTEMPTY,
            UfsError::PermissionDenied(_) | UfsError::Escape(_) => libc::EACCES,
            UfsError::Unsupported(_) => libc::ENOTSUP,
            UfsError::Changed(_) => libc::ESTALE,
            UfsError::Config(_) => libc::EINVAL,
            UfsError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            UfsError::Backend(e) => match e.kind() {
                opendal::ErrorKind::IsADirectory => libc::EISDIR,
                opendal::ErrorKind::NotADirectory => libc::ENOTDIR,
                opendal::ErrorKind::RateLimited => libc::EAGAIN,
                _ => libc::EIO,
            },
        }
    }

    /// Whether this error says the path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, UfsError::NotFound(_))
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            return UfsError::NotFound(context.into());
        }
        UfsError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn from_dal(path: &str, e: opendal::Error) -> Self {
        use opendal::ErrorKind as K;
        match e.kind() {
            K::NotFound => UfsError::NotFound(path.to_string()),
            K::AlreadyExists => UfsError::AlreadyExists(path.to_string()),
            K::PermissionDenied => UfsError::PermissionDenied(format!("{path}: {e}")),
            K::Unsupported => UfsError::Unsupported(format!("{path}: {e}")),
            K::ConditionNotMatch => UfsError::Changed(path.to_string()),
            K::ConfigInvalid => UfsError::Config(e.to_string()),
            _ => UfsError::Backend(Box::new(e)),
        }
    }
}
