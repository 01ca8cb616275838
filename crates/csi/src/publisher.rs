//! Bind mounts of namespace directories onto kubelet targets, and their
//! removal. Binds go fd to fd (`open_tree` + `move_mount`), with the
//! read-only and other flags set on the detached mount before it appears.
//! What is mounted at a target is always read from mountinfo, never by
//! touching the target, which hangs when its FUSE daemon does.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use weir_fuse::mount::{self, FS_TYPE, MountInfo};

use crate::syscalls;

/// Most weir binds stacked on one target. A remount stacks a new bind on
/// each target (the dead one below keeps the pods' propagation link);
/// when the stack is full, the topmost stale bind is replaced instead.
pub const MAX_STACK: usize = 4;

/// Flags always set on a bind: pods get no device files and no setuid
/// programs through a volume.
pub const BASE_ATTRS: u64 = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;

/// Binds the directory `source` onto the directory `target`.
pub fn bind(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    read_only: bool,
    attrs: u64,
) -> std::io::Result<()> {
    let tree = syscalls::clone_tree(source)?;
    let mut set = BASE_ATTRS | attrs;
    if read_only {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    syscalls::set_mount_attrs(tree.as_fd(), set)?;
    syscalls::move_onto(tree.as_fd(), target)
}

/// The mounts at the canonical `path`, bottom first.
pub fn stack(path: &Path) -> std::io::Result<Vec<MountInfo>> {
    Ok(mount::mounts()?
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect())
}

/// Whether `m` is a weir FUSE mount (or a bind of one).
pub fn is_weir(m: &MountInfo) -> bool {
    m.fs_type == FS_TYPE
}

/// What [`unmount_ours`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleared {
    /// Nothing of ours or anyone's is left at the target.
    Clear,
    /// A mount that is not ours stays on top (it was left alone).
    Foreign(String),
}

/// Lazily unmounts, from the top, every weir mount at the canonical
/// `path` that `owned` accepts; stops at the first one it does not, which
/// stays, as does everything below it.
pub fn unmount_ours(path: &Path, owned: impl Fn(&MountInfo) -> bool) -> std::io::Result<Cleared> {
    // Bounded: each round removes one mount or returns.
    for _ in 0..64 {
        let Some(top) = stack(path)?.pop() else {
            return Ok(Cleared::Clear);
        };
        if !(is_weir(&top) && owned(&top)) {
            return Ok(Cleared::Foreign(format!(
                "{} mount of {} (mount id {})",
                top.fs_type, top.source, top.id
            )));
        }
        match syscalls::detach(path) {
            Ok(()) => tracing::debug!(target = %path.display(), id = top.id, "unmounted"),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Gone between the read and the unmount.
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "{} still has mounts after 64 unmounts",
        path.display()
    )))
}

/// Mount flags a volume may ask for in `mount_flags`, as `MOUNT_ATTR_*`
/// bits; `ro` is reported apart. Anything else is refused, so that a flag
/// is never silently dropped.
pub fn parse_flags(flags: &[String]) -> Result<(bool, u64), String> {
    let mut read_only = false;
    let mut attrs = 0;
    for f in flags {
        match f.as_str() {
            "ro" => read_only = true,
            "rw" | "nosuid" | "nodev" | "defaults" => {}
            "noexec" => attrs |= libc::MOUNT_ATTR_NOEXEC,
            "noatime" => attrs |= libc::MOUNT_ATTR_NOATIME,
            "nodiratime" => attrs |= libc::MOUNT_ATTR_NODIRATIME,
            "relatime" => attrs |= libc::MOUNT_ATTR_RELATIME,
            "strictatime" => attrs |= libc::MOUNT_ATTR_STRICTATIME,
            other => return Err(other.to_string()),
        }
    }
    Ok((read_only, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_flags_map_and_unknown_ones_are_refused() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_flags(&v(&[])).unwrap(), (false, 0));
        assert_eq!(
            parse_flags(&v(&["ro", "noexec"])).unwrap(),
            (true, libc::MOUNT_ATTR_NOEXEC)
        );
        assert_eq!(parse_flags(&v(&["bind", "ro"])).unwrap_err(), "bind");
        assert_eq!(parse_flags(&v(&["uid=0"])).unwrap_err(), "uid=0");
    }
}
