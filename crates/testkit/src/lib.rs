//! Test support for weir.
//!
//! The main item is [`S3Server`], a real S3 protocol server (built on `s3s` and
//! `s3s-fs`) listening on loopback and backed by a local directory, so that
//! integration tests and benchmarks can exercise weir's S3 path without any
//! external service.

pub mod s3;

pub use s3::S3Server;

pub mod mount;

pub use mount::{MountGuard, is_mounted, run_with_timeout, timed};
