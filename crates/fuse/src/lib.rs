//! weir's FUSE adapter.
//!
//! - `options`: the `-o` mount options users know (`kernel_cache`,
//!   `attr_timeout=N`, `allow_other`, ...), parsed and checked.
//! - `mount`: the `mount(2)` of a `/dev/fuse` descriptor, unmounting, and
//!   reading `/proc/self/mountinfo`.
//! - `adapter`: fuser's `Filesystem` trait over [`weir_fs::Fs`], mapping each
//!   request to a core call and each [`weir_fs::FsError`] to its errno.
//! - `serve`: mounts (or takes a held connection), runs the INIT handshake
//!   and the multi-threaded loop.
//! - `takeover`: the INIT handshake over a socketpair, so that fuser starts
//!   on a connection an earlier daemon initialised, and FUSE_NOTIFY_RESEND.
//! - `stats`: request counts, errors and latencies as metrics.
//! - `notify`: kernel cache invalidations for changes made on other nodes.
//! - `prefault`: the global allocator that keeps request buffers mapped, so
//!   a daemon killed mid-request does not fail a write with EIO.

mod adapter;
pub mod mount;
mod notify;
mod options;
pub mod prefault;
mod serve;
mod stats;
mod takeover;

pub use adapter::Adapter;
pub use options::{MountOptions, OptionError};
pub use serve::{Connection, LoopSettings, ServeError, check_mount_point, serve};
pub use takeover::{Handshake, Resend};
