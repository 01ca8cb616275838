//! Mount and serve: the mount (or a connection a supervisor mounted), the
//! INIT handshake, the readiness check, and the multi-threaded request
//! loop, which returns once the mount is gone.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuser::{Session, SessionACL};
use tokio::runtime::Handle;
use weir_fs::Fs;

use crate::takeover::{self, Handshake, Resend};
use crate::{Adapter, MountOptions, mount};

/// Where the FUSE connection comes from.
#[derive(Debug)]
pub enum Connection {
    /// Mount here: the connection lives only as long as this process.
    Mount,
    /// A `/dev/fuse` descriptor that a supervisor mounted and keeps open,
    /// so the connection outlives this process.
    Held {
        /// The descriptor.
        fd: OwnedFd,
        /// Whether the connection is new or taken over.
        handshake: Handshake,
    },
}

/// statfs f_type of FUSE filesystems.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The mount point is missing or not a directory.
    #[error("mount point {path}: {reason}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Something is mounted there already.
    #[error("{0} is already a mount point; unmount it first (weir umount {0})")]
    AlreadyMounted(PathBuf),
    /// mount(2) or the FUSE handshake failed.
    #[error("cannot mount {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The request loop failed.
    #[error("FUSE session on {path} failed: {source}")]
    Session {
        /// The mount point.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Settings of the request loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Worker threads.
    pub threads: usize,
    /// Let the kernel run lookups and readdirs of one directory in parallel.
    pub parallel_dirops: bool,
    /// The kernel read-ahead for this mount, in KiB (its default is 128).
    pub read_ahead_kb: Option<u32>,
    /// Let the kernel read wholly cached files straight from the cache
    /// (FUSE passthrough, Linux 6.9 and later).
    pub passthrough: bool,
}

/// Checks that `mountpoint` can take a new mount.
pub fn check_mount_point(mountpoint: &Path) -> Result<(), ServeError> {
    let bad = |reason: String| ServeError::MountPoint {
        path: mountpoint.to_path_buf(),
        reason,
    };
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad("is not a directory".into())),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(ServeError::AlreadyMounted(mountpoint.to_path_buf()));
        }
        Err(e) => return Err(bad(e.to_string())),
    }
    if mount::is_mount_point(mountpoint).unwrap_or(false) {
        return Err(ServeError::AlreadyMounted(mountpoint.to_path_buf()));
    }
    Ok(())
}

/// Serves `fs` on `conn` at `mountpoint` until the mount goes away.
/// `on_ready` runs once the mount answers requests.
pub fn serve(
    fs: Fs,
    rt: Handle,
    mountpoint: &Path,
    opts: &MountOptions,
    settings: &LoopSettings,
    conn: Connection,
    on_ready: impl FnOnce(Result<(), String>) + Send + 'static,
) -> Result<(), ServeError> {
    let mount_err = |source| ServeError::Mount {
        path: mountpoint.to_path_buf(),
        source,
    };
    let acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let mut config = fuser::Config::default();
    config.n_threads = Some(settings.threads.max(1));
    // Requests taken from a cloned fd die with the process instead of being
    // resent after a crash, so every thread reads the one shared fd.
    config.clone_fd = false;
    let core = fs.clone();
    let adapter = Adapter::new(
        fs,
        rt,
        opts.clone(),
        settings.parallel_dirops,
        settings.passthrough,
    );
    let session = match conn {
        Connection::Mount => {
            check_mount_point(mountpoint)?;
            let fd = mount::mount(mountpoint, opts).map_err(mount_err)?;
            Session::from_fd(adapter, fd, acl, config).inspect_err(|_| {
                let _ = mount::unmount(mountpoint, true);
            })
        }
        Connection::Held { fd, handshake } => {
            let started = takeover::start(adapter, fd, &handshake, acl, config);
            started.map(|(session, resend)| {
                log_resend(resend);
                session
            })
        }
    }
    .map_err(mount_err)?;
    match crate::notify::KernelInval::start(session.notifier()) {
        Ok(k) => core.set_kernel_notifier(std::sync::Arc::new(k)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start kernel invalidations; the kernel's timeouts bound what it caches")
        }
    }
    let probe = mountpoint.to_path_buf();
    let read_ahead_kb = settings.read_ahead_kb;
    std::thread::spawn(move || {
        let ready = wait_until_answering(&probe, Duration::from_secs(30));
        if ready.is_ok()
            && let Some(kb) = read_ahead_kb
        {
            set_read_ahead(&probe, kb);
        }
        on_ready(ready)
    });
    session.run().map_err(|source| ServeError::Session {
        path: mountpoint.to_path_buf(),
        source,
    })
}

fn log_resend(resend: Resend) {
    match resend {
        Resend::NotNeeded => {}
        Resend::Sent => {
            tracing::info!("took over the FUSE connection; requests in flight are resent")
        }
        Resend::Unsupported => tracing::warn!(
            "took over the FUSE connection, but this kernel cannot resend requests in flight (FUSE_NOTIFY_RESEND needs Linux 6.9): a call the dead daemon had read stays unanswered"
        ),
    }
}

/// Raises the kernel's read-ahead for the mount: FUSE mounts start at
/// 128 KiB, which caps every sequential read request at that size.
fn set_read_ahead(mountpoint: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let bdi = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    match std::fs::write(&bdi, kb.to_string()) {
        Ok(()) => tracing::info!(read_ahead_kb = kb, "kernel read-ahead set"),
        Err(e) => tracing::warn!(path = %bdi, error = %e, "cannot set the kernel read-ahead"),
    }
}

fn wait_until_answering(path: &Path, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match nix::sys::statfs::statfs(path) {
            Ok(s) if s.filesystem_type().0 == FUSE_SUPER_MAGIC => return Ok(()),
            Ok(_) => {}
            Err(e) if start.elapsed() > timeout => {
                return Err(format!("mount does not answer: {e}"));
            }
            Err(_) => {}
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{} did not become a FUSE mount within {timeout:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
