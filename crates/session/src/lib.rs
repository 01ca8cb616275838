//! weir's FUSE session supervisor, shared by `weir mount` and `weir csi`.
//!
//! A [`Session`] mounts `/dev/fuse` itself and keeps the descriptor, so the
//! kernel connection outlives the daemon that serves it. The daemon is a
//! child process (`weir` in daemon mode) that gets the descriptor as its
//! fd 3. A watchdog thread notices at once when the daemon exits (through a
//! pidfd) and, with a periodic `statfs` probe under a timeout, when it hangs.
//! It then recovers in one of two layers:
//!
//! 1. **Takeover**: a new daemon starts on the same descriptor, restores
//!    the node ids and handles from the session journal, and asks the
//!    kernel to resend the requests in flight. Applications see a pause.
//! 2. **Remount**: when no daemon can take over, the dead connection is
//!    aborted, the stale mount lazily unmounted, and a fresh one mounted in
//!    its place. Descriptors opened before fail; new opens work. The CSI
//!    plugin re-binds its targets when it hears of it.
//!
//! Modules: `daemon` (starting and watching one daemon process), `fusectl`
//! (aborting a connection), `session` (the supervisor and its watchdog).

mod daemon;
pub mod fusectl;
mod session;

pub use daemon::{DaemonCommand, EXIT_CANNOT_TAKE_OVER, Exit, FUSE_FD, READY_FD};
pub use session::{Cause, Event, EventSink, Probe, Session, Spec};

/// Why a session could not start or recover.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The mount point cannot take a mount.
    #[error(transparent)]
    MountPoint(#[from] weir_fuse::ServeError),
    /// mount(2) of `/dev/fuse` failed.
    #[error("cannot mount {path}: {source}")]
    Mount {
        /// The mount point.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon could not be started.
    #[error("cannot start the FUSE daemon: {0}")]
    Spawn(String),
    /// The daemon started but failed before its mount answered.
    #[error("{reason}")]
    DaemonFailed {
        /// What the daemon said, or why we gave up on it.
        reason: String,
        /// How it ended.
        exit: Option<Exit>,
    },
    /// An earlier supervisor's daemon could not be adopted.
    #[error("cannot adopt the running session in {dir}: {reason}")]
    Adopt {
        /// The session directory.
        dir: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}
