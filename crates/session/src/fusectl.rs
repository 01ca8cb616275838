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
    Host,
    Private(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Host => Path::new(FUSECTL),
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
        let mounted = std::fs::read_to_string("/proc/self/mounts")?
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(FUSECTL));
        if mounted {
            return Ok(Root::Host);
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-fusectl-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        if let Err(e) = nix::mount::mount(
            Some("fusectl"),
            &dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ) {
            let _ = std::fs::remove_dir(&dir);
            return Err(std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("cannot mount fusectl on {}: {e}", dir.display()),
            ));
        }
        Ok(Root::Private(dir))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Root::Private(dir) = self {
            let _ = nix::mount::umount2(dir.as_path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(dir.as_path());
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
