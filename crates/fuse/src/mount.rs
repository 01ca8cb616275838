//! The mount itself: open `/dev/fuse`, `mount(2)` it with `fd=N`, and the
//! reverse. weir does its own mount instead of letting fuser do it, so the
//! descriptor is ours to keep (the supervisor holds it across a daemon
//! crash).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::MountOptions;

/// The filesystem type weir mounts as (`fuse.weir`).
pub const FS_TYPE: &str = "fuse.weir";

/// Opens `/dev/fuse` and mounts it at `mountpoint`.
pub fn mount(mountpoint: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot open /dev/fuse: {e} (is the fuse module loaded, and are we privileged?)"
                ),
            )
        })?;
    let meta = std::fs::metadata(mountpoint)?;
    let root_mode = meta.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        dev.as_raw_fd(),
        root_mode,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if opts.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some("weir"),
        mountpoint,
        Some(FS_TYPE),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(OwnedFd::from(dev))
}

/// Unmounts `mountpoint`; `lazy` detaches it even while files are open.
pub fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    nix::mount::umount2(mountpoint, flags).map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount id.
    pub id: u32,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`fuse.weir`).
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Device number of the mounted filesystem (`major:minor`), as
    /// `stat(2)` would give it, read without touching the mount (which may
    /// hang when its daemon does).
    pub dev: u64,
    /// Peer group of a shared mount (`shared:N`), if any.
    pub shared: Option<u32>,
    /// Peer group this mount receives propagation from (`master:N`), if any.
    pub master: Option<u32>,
}

/// The mounts of this process's mount namespace.
pub fn mounts() -> io::Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let id = fields.first()?.parse().ok()?;
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let dev = nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?);
    let mount_point = unescape(fields.get(4)?);
    let tag = |name: &str| {
        fields
            .iter()
            .skip(6)
            .find_map(|f| f.strip_prefix(name)?.parse().ok())
    };
    let mut r = right.split(' ');
    let fs_type = r.next()?.to_string();
    let source = unescape(r.next()?);
    Some(MountInfo {
        id,
        mount_point: PathBuf::from(mount_point),
        fs_type,
        source,
        dev,
        shared: tag("shared:"),
        master: tag("master:"),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether anything is mounted exactly at `path`.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(mounts()?.iter().any(|m| m.mount_point == canon))
}

/// The topmost mount at `path`, if any.
pub fn mount_at(path: &Path) -> io::Result<Option<MountInfo>> {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mount_at_exact(&canon)
}

/// The topmost mount at the canonical `path`, found without touching the
/// path itself: on a hung FUSE mount even `stat` would block.
pub fn mount_at_exact(path: &Path) -> io::Result<Option<MountInfo>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let line = r"36 35 98:0 / /mnt/my\040dir rw,noatime master:1 - fuse.weir weir rw,user_id=0";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.id, 36);
        assert_eq!(m.mount_point, PathBuf::from("/mnt/my dir"));
        assert_eq!(m.fs_type, "fuse.weir");
        assert_eq!(m.source, "weir");
        assert_eq!(m.dev, nix::sys::stat::makedev(98, 0));
        assert_eq!((m.shared, m.master), (None, Some(1)));
        let shared =
            parse_mountinfo_line("40 1 0:52 / /k rw shared:7 master:3 - tmpfs tmpfs rw").unwrap();
        assert_eq!((shared.shared, shared.master), (Some(7), Some(3)));
    }

    #[test]
    fn root_is_a_mount_point() {
        assert!(is_mount_point(Path::new("/")).unwrap());
    }
}
