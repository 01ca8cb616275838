//! Test support for weir.
//!
//! The main item is [`S3Server`], a real S3 protocol server (built on `s3s` and
//! `s3s-fs`) listening on loopback and backed by a local directory, so that
//! integration tests and benchmarks can exercise weir's S3 path without any
//! external service. [`Etcd`] does the same for cluster mode with a real etcd.

pub mod etcd;
pub mod s3;

pub use etcd::Etcd;

pub use s3::S3Server;

pub mod mount;

pub use mount::{MountGuard, is_mounted, run_with_timeout, timed, wait_or_kill};

pub mod process;
