//! The FUSE control filesystem (`/sys/fs/fuse/connections`): aborting a
//! connection whose daemon is gone or wedged, so that everything waiting on
//! it fails at once instead of hanging, and the mount can be replaced.

use std::path::{Path, PathBuf};

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// The connection id of the FUSE mount whose device number is `dev`: the
/// minor of an anonymous superblock's device.
pub fn connection_of(dev: u64) -> u64 {
    nix::sys::stat::minor(dev)
}

/// Where this call reaches fusectl: the host's mount, or a mount of its own
/// in a private directory, taken down on drop. A private mount, rather than
/// one on `/sys/fs/fuse/connections`, cannot be taken away by another
/// process's abort running at the same time, and leaves the host's mount
/// table as it was.
enum Root {
    /// The host's mount on `/sys/fs/fuse/connections`.
    Host,
    /// A mount of our own in a private directory.
    Private(PathBuf),
    /// A mount of our own on `/sys/fs/fuse/connections`, where no private
    /// directory could be made (no writable temporary dir).
    Sys,
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Host | Root::Sys => Path::new(FUSECTL),
            Root::Private(dir) => dir,
        }
    }

    fn open() -> std::io::Result<Root> {
        if !Path::new(FUSECTL).is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{FUSECTL} is missing (is the fuse module loaded?)"),
            ));
        }
        let mounted = weir_fuse::mount::mounts()?
            .iter()
            .any(|m| m.mount_point == Path::new(FUSECTL));
        if mounted {
            return Ok(Root::Host);
        }
        match Root::private() {
            Ok(root) => Ok(root),
            Err(e) => {
                tracing::debug!(error = %e, "no private fusectl mount; mounting it on {FUSECTL}");
                mount_fusectl(Path::new(FUSECTL))?;
                Ok(Root::Sys)
            }
        }
    }

    fn private() -> std::io::Result<Root> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-fusectl-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        if let Err(e) = mount_fusectl(&dir) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Root::Private(dir))
    }
}

fn mount_fusectl(at: &Path) -> std::io::Result<()> {
    nix::mount::mount(
        Some("fusectl"),
        at,
        Some("fusectl"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("cannot mount fusectl on {}: {e}", at.display()),
        )
    })
}

impl Drop for Root {
    fn drop(&mut self) {
        match self {
            Root::Host => {}
            Root::Private(dir) => {
                let _ = nix::mount::umount2(dir.as_path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir(dir.as_path());
            }
            Root::Sys => {
                let _ = nix::mount::umount2(FUSECTL, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Aborts connection `conn`: pending and future requests fail with
/// ECONNABORTED or ENOTCONN. A connection that is already gone is fine.
pub fn abort(conn: u64) -> std::io::Result<()> {
    let root = Root::open()?;
    let file = root.path().join(conn.to_string()).join("abort");
    match std::fs::write(&file, "1") {
        Ok(()) => {
            tracing::info!(connection = conn, "aborted the FUSE connection");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", file.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fusectl_mounts() -> usize {
        weir_fuse::mount::mounts()
            .unwrap()
            .iter()
            .filter(|m| m.fs_type == "fusectl")
            .count()
    }

    #[test]
    fn aborting_a_connection_that_is_gone_is_fine_and_leaves_no_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting fusectl needs root");
            return;
        }
        let before = fusectl_mounts();
        // Connection ids are device minors; this one is never in use.
        abort(u64::from(u32::MAX)).unwrap();
        // Another test's abort may hold a mount of its own for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while fusectl_mounts() != before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(fusectl_mounts(), before);
        let left = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("weir-fusectl-{}-", std::process::id()))
            })
            .count();
        assert_eq!(left, 0, "the private mount point was left behind");
    }
}
