//! The semantics policy: the checks that decide what the semantics table
//! allows, in one place, so the rules are easy to audit against the docs.

use crate::error::{FsError, Result};

/// Longest file name accepted, in bytes.
pub const NAME_MAX: usize = 255;

/// A name must be one plain path component.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::new(
            libc::EINVAL,
            format!("{name:?} is not a valid file name"),
        ));
    }
    if name.len() > NAME_MAX {
        return Err(FsError::new(
            libc::ENAMETOOLONG,
            format!("name of {} bytes", name.len()),
        ));
    }
    Ok(())
}

/// Refuses every change on a read-only mount.
pub fn check_writable(read_only: bool, path: &str) -> Result<()> {
    if read_only {
        return Err(FsError::read_only(path));
    }
    Ok(())
}

/// A write at `offset` into a file whose staged length is `len`. Without
/// random writes, only appending at the current end is allowed.
pub fn check_write_offset(random_writes: bool, offset: u64, len: u64) -> Result<()> {
    if !random_writes && offset != len {
        return Err(FsError::unsupported(format!(
            "write at offset {offset} of a file of {len} bytes (random writes; enable fuse.random_writes)"
        )));
    }
    Ok(())
}

/// A truncate from `current` to `size`. Without random writes, only
/// truncation to 0 (and the no-op to the current size) is allowed.
pub fn check_truncate(random_writes: bool, current: u64, size: u64) -> Result<()> {
    if !random_writes && size != 0 && size != current {
        return Err(FsError::unsupported(format!(
            "truncate from {current} to {size} bytes (enable fuse.random_writes)"
        )));
    }
    Ok(())
}

/// Opening with O_APPEND.
pub fn check_append(random_writes: bool) -> Result<()> {
    if !random_writes {
        return Err(FsError::unsupported("O_APPEND (enable fuse.random_writes)"));
    }
    Ok(())
}

/// symlink/readlink.
pub fn check_symlinks(enabled: bool) -> Result<()> {
    if !enabled {
        return Err(FsError::unsupported("symlinks (enable fuse.symlinks)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("a.txt").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert_eq!(
                check_name(bad).unwrap_err().errno(),
                libc::EINVAL,
                "{bad:?}"
            );
        }
        assert_eq!(
            check_name(&"x".repeat(256)).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
    }

    #[test]
    fn write_rules_follow_the_switch() {
        assert!(check_write_offset(false, 10, 10).is_ok());
        assert_eq!(
            check_write_offset(false, 0, 10).unwrap_err().errno(),
            libc::ENOTSUP
        );
        assert!(check_write_offset(true, 0, 10).is_ok());
        assert!(check_truncate(false, 10, 0).is_ok());
        assert!(check_truncate(false, 10, 10).is_ok());
        assert_eq!(
            check_truncate(false, 10, 5).unwrap_err().errno(),
            libc::ENOTSUP
        );
        assert!(check_truncate(true, 10, 5).is_ok());
        assert_eq!(check_append(false).unwrap_err().errno(), libc::ENOTSUP);
        assert_eq!(check_symlinks(false).unwrap_err().errno(), libc::ENOTSUP);
        assert_eq!(check_writable(true, "/x").unwrap_err().errno(), libc::EROFS);
    }
}
