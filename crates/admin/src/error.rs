//! Errors of the admin endpoint: the daemon's typed refusals
//! ([`ErrorReply`], sent over the wire) and a client's failures to reach
//! or understand a daemon ([`AdminError`]).

use std::path::PathBuf;

use weir_cluster::ClusterError;
use weir_fs::FsError;

use crate::protocol::{ErrorKind, ErrorReply};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The daemon refused the request.
    #[error("{}", .0.message)]
    Reply(ErrorReply),
    /// No daemon could be found for the request.
    #[error("{0}")]
    NoDaemon(String),
    /// The socket is there but nobody answers on it.
    #[error("no weir daemon answers on {socket}: {source}")]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon's answer was cut short or not understood.
    #[error("the weir daemon on {socket} {reason}")]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A request straight to etcd failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl AdminError {
    /// The kind of the daemon's refusal, if that is what this is.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            AdminError::Reply(r) => Some(r.kind),
            _ => None,
        }
    }
}

impl ErrorReply {
    /// A reply of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

impl From<FsError> for ErrorReply {
    fn from(e: FsError) -> Self {
        let kind = match e.errno() {
            libc::ENOENT => ErrorKind::NotFound,
            libc::ENOTDIR => ErrorKind::NotADirectory,
            libc::EISDIR => ErrorKind::IsADirectory,
            libc::EINVAL => ErrorKind::Invalid,
            libc::EBUSY => ErrorKind::Busy,
            libc::ETIMEDOUT | libc::ECONNREFUSED | libc::EHOSTUNREACH => ErrorKind::Unavailable,
            _ => ErrorKind::Failed,
        };
        // The core's messages end in "(errno N)": keep that out of one-line
        // user output, the kind says it.
        let message = e.to_string();
        let message = match message.rfind(" (errno ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        ErrorReply::new(kind, message)
    }
}

impl From<ClusterError> for ErrorReply {
    fn from(e: ClusterError) -> Self {
        let kind = match &e {
            ClusterError::InvalidMount { .. } | ClusterError::InvalidPath { .. } => {
                ErrorKind::Invalid
            }
            ClusterError::AlreadyMounted { .. } => ErrorKind::AlreadyMounted,
            ClusterError::NotMounted(_) => ErrorKind::NotMounted,
            e if e.is_transient() => ErrorKind::Unavailable,
            _ => ErrorKind::Failed,
        };
        ErrorReply::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_keep_their_kind_and_lose_the_errno_suffix() {
        let r = ErrorReply::from(FsError::not_found("/x"));
        assert_eq!(r.kind, ErrorKind::NotFound);
        assert_eq!(r.message, "/x: not found");
        let r = ErrorReply::from(ClusterError::NotMounted("/m".into()));
        assert_eq!(r.kind, ErrorKind::NotMounted);
    }
}
