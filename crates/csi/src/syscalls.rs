//! The system calls the publisher needs and std does not wrap: `openat2`
//! with resolve flags (walks that cannot leave a directory or follow a
//! symlink), and the new mount API (`open_tree`, `mount_setattr`,
//! `move_mount`), which binds one open directory onto another with no
//! path lookup in between, so nothing can be swapped under the bind.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Resolution that stays below the starting directory and follows no
/// symlink at all (nor a `/proc` magic link).
const STRICT: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

fn unit_result(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens the directory `rel` below `dir` as an `O_PATH` descriptor,
/// refusing symlinks (ELOOP: no `O_NOFOLLOW`, which would hand back the
/// link itself) and escapes (EXDEV) anywhere on the way, the last
/// component included.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let path = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    let mut how: libc::open_how = unsafe_zeroed();
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = STRICT;
    // SAFETY: valid descriptor, NUL-terminated path, and a properly sized open_how.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    fd_result(rc)
}

fn unsafe_zeroed<T: Copy>() -> T {
    // SAFETY: only used for plain C structs of integers, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Opens `dir`/`a/b/c` component by component, creating each missing one
/// with `mkdirat` when `create` is set; every step uses [`open_dir_beneath`],
/// so a symlink anywhere on the way is refused rather than followed.
pub fn walk_dirs<'a>(
    dir: BorrowedFd<'_>,
    parts: impl Iterator<Item = &'a str>,
    create: bool,
) -> io::Result<OwnedFd> {
    let mut cur = open_dir_beneath(dir, Path::new(""))?;
    for part in parts {
        let name = Path::new(part);
        let next = match open_dir_beneath(cur_fd(&cur), name) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                mkdir_at(cur_fd(&cur), name)?;
                open_dir_beneath(cur_fd(&cur), name)?
            }
            r => r?,
        };
        cur = next;
    }
    Ok(cur)
}

fn cur_fd(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// `mkdirat(dir, name, 0755)`; an existing entry is fine.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
    match unit_result(rc as libc::c_long) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// `unlinkat(dir, name, AT_REMOVEDIR)`: removes an empty directory only.
pub fn rmdir_at(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) };
    unit_result(rc as libc::c_long)
}

/// A detached bind mount of the directory `src` (not recursive: only the
/// mount it is on, never mounts below it).
pub fn clone_tree(src: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    // SAFETY: valid descriptor, empty NUL-terminated path, integer flags.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, src.as_raw_fd(), c"".as_ptr(), flags) };
    fd_result(rc)
}

/// Sets `MOUNT_ATTR_*` flags on the detached mount `tree`, before it is
/// attached, so it never appears with weaker flags.
pub fn set_mount_attrs(tree: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    let mut attr: libc::mount_attr = unsafe_zeroed();
    attr.attr_set = set;
    // SAFETY: valid descriptor, empty path, a mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    unit_result(rc)
}

/// Attaches the detached mount `tree` on top of the directory `target`.
pub fn move_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: valid descriptors, empty paths, integer flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    unit_result(rc)
}

/// Lazily unmounts the topmost mount at the canonical `path`, without
/// following a symlink in its last component and without asking the
/// filesystem mounted there anything (works on dead and hung mounts).
pub fn detach(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: NUL-terminated path, integer flags.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    unit_result(rc as libc::c_long)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn walks_refuse_symlinks_and_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("up")).unwrap();
        std::os::unix::fs::symlink("a", root.join("inner")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("abs")).unwrap();
        let dir = std::fs::File::open(&root).unwrap();
        assert!(walk_dirs(dir.as_fd(), ["a", "b"].into_iter(), false).is_ok());
        for link in ["up", "inner", "abs"] {
            let e = walk_dirs(dir.as_fd(), [link].into_iter(), false).unwrap_err();
            assert!(
                matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV)),
                "{link}: {e}"
            );
        }
        let e = walk_dirs(dir.as_fd(), ["missing"].into_iter(), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        walk_dirs(dir.as_fd(), ["new", "deep"].into_iter(), true).unwrap();
        assert!(root.join("new/deep").is_dir());
        rmdir_at(dir.as_fd(), Path::new("new/deep")).unwrap();
        assert!(!root.join("new/deep").exists());
    }
}
