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

/// Mounts fusectl if it is not; returns whether this call mounted it.
fn ensure_mounted() -> std::io::Result<bool> {
    let root = Path::new(FUSECTL);
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{FUSECTL} is missing (is the fuse module loaded?)"),
        ));
    }
    let mounted = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(FUSECTL));
    if !mounted {
        nix::mount::mount(
            Some("fusectl"),
            root,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(std::io::Error::from)?;
        return Ok(true);
    }
    Ok(false)
}

fn abort_file(conn: u64) -> PathBuf {
    Path::new(FUSECTL).join(conn.to_string()).join("abort")
}

/// Aborts connection `conn`: pending and future requests fail with
/// ECONNABORTED or ENOTCONN. A connection that is already gone is fine.
/// A fusectl mount made here is taken down again, so nothing is left
/// mounted that the host did not have.
pub fn abort(conn: u64) -> std::io::Result<()> {
    let mounted_here = ensure_mounted()?;
    let written = std::fs::write(abort_file(conn), "1");
    if mounted_here {
        let _ = nix::mount::umount2(FUSECTL, nix::mount::MntFlags::MNT_DETACH);
    }
    let file = abort_file(conn);
    match written {
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
