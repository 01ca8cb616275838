//! Metrics of FUSE requests: one count, one latency observation and one
//! in-flight step per request, and a count by errno for each failure.
//!
//! The handles of every operation are registered once, when the adapter is
//! built, so recording costs a few atomic operations per request, not a
//! registry lookup.

use std::time::Instant;

use metrics::{Counter, Gauge, Histogram};
use weir_metrics::names;

/// The FUSE operations weir answers, as metric labels. The discriminant
/// is the index of the operation's handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Statfs,
    Xattr,
    Create,
    Ioctl,
    Fallocate,
}

impl Op {
    const ALL: [Op; 26] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Symlink,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Release,
        Op::Fsync,
        Op::Opendir,
        Op::Readdir,
        Op::Releasedir,
        Op::Statfs,
        Op::Xattr,
        Op::Create,
        Op::Ioctl,
        Op::Fallocate,
    ];

    /// The `op` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Statfs => "statfs",
            Op::Xattr => "xattr",
            Op::Create => "create",
            Op::Ioctl => "ioctl",
            Op::Fallocate => "fallocate",
        }
    }
}

#[derive(Debug)]
struct OpHandles {
    requests: Counter,
    seconds: Histogram,
}

/// The registered metric handles of every operation.
#[derive(Debug)]
pub(crate) struct FuseMetrics {
    ops: Vec<OpHandles>,
    in_flight: Gauge,
}

impl FuseMetrics {
    /// Registers the handles with the recorder installed now.
    pub(crate) fn new() -> Self {
        let ops = Op::ALL
            .iter()
            .map(|op| OpHandles {
                requests: metrics::counter!(names::FUSE_REQUESTS, "op" => op.label()),
                seconds: metrics::histogram!(names::FUSE_SECONDS, "op" => op.label()),
            })
            .collect();
        FuseMetrics {
            ops,
            in_flight: metrics::gauge!(names::FUSE_INFLIGHT),
        }
    }

    /// Marks the start of a request; [`Request::done`] records it.
    pub(crate) fn start(&self, op: Op) -> Request<'_> {
        self.in_flight.increment(1.0);
        Request {
            metrics: self,
            op,
            started: Instant::now(),
        }
    }
}

/// A request being answered.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    metrics: &'a FuseMetrics,
    op: Op,
    started: Instant,
}

impl Request<'_> {
    /// The request was answered, with `errno` if it failed.
    pub(crate) fn done(self, errno: Option<i32>) {
        let h = &self.metrics.ops[self.op as usize];
        h.requests.increment(1);
        h.seconds.record(self.started.elapsed().as_secs_f64());
        if let Some(e) = errno {
            metrics::counter!(names::FUSE_ERRORS, "op" => self.op.label(), "errno" => symbolic(e))
                .increment(1);
        }
        // The in-flight step is taken back in Drop.
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
    }
}

/// The symbolic name of an errno (`ENOENT` for 2): what operators grep for.
fn symbolic(e: i32) -> &'static str {
    match e {
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOTSUP => "ENOTSUP",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTTY => "ENOTTY",
        libc::EBUSY => "EBUSY",
        libc::EXDEV => "EXDEV",
        libc::ESTALE => "ESTALE",
        libc::EBADF => "EBADF",
        libc::ELOOP => "ELOOP",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        libc::ENOMEM => "ENOMEM",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_a_distinct_label() {
        let mut labels: Vec<&str> = Op::ALL.iter().map(|o| o.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Op::ALL.len());
    }

    #[test]
    fn discriminants_index_the_handles() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
        }
    }

    #[test]
    fn errnos_get_their_symbolic_names() {
        assert_eq!(symbolic(libc::ENOENT), "ENOENT");
        assert_eq!(symbolic(libc::ENOTSUP), "ENOTSUP");
        assert_eq!(symbolic(12345), "other");
    }
}
