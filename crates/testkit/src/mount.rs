//! Real weir mounts for tests: a guard that mounts with the `weir` binary
//! and, when dropped (also on panic), lazily unmounts and stops the daemon
//! it started by PID, plus timeouts so a hung FUSE daemon fails a test
//! instead of hanging CI.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `cmd` with a timeout, killing it if it overruns.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{cmd:?} did not finish within {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on its own thread and panics if it does not finish in time. The
/// caller's guards live outside `f`, so they still unmount after the panic,
/// which also unblocks a thread stuck on the dead mount.
pub fn timed<T: Send + 'static>(timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("test body did not finish within {timeout:?} (hung mount?)"),
    }
}

/// A mounted weir. Dropping it unmounts and stops the daemon.
#[derive(Debug)]
pub struct MountGuard {
    mountpoint: PathBuf,
    cache_dir: PathBuf,
    pid: Option<i32>,
}

impl MountGuard {
    /// Runs `weir mount MOUNTPOINT --cache-dir CACHE ARGS...` and waits for it.
    /// On failure returns the command's stderr.
    pub fn mount(
        bin: &Path,
        mountpoint: &Path,
        cache_dir: &Path,
        args: &[&str],
    ) -> Result<MountGuard, String> {
        std::fs::create_dir_all(mountpoint).map_err(|e| e.to_string())?;
        let out = run_with_timeout(
            Command::new(bin)
                .arg("mount")
                .arg(mountpoint)
                .arg("--cache-dir")
                .arg(cache_dir)
                .args(args),
            Duration::from_secs(90),
        )
        .map_err(|e| e.to_string())?;
        let pid = std::fs::read_to_string(cache_dir.join("weir.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let guard = MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            pid,
        };
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(guard)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// A path inside the mount.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cache_dir.join("weir.log")).unwrap_or_default()
    }

    /// The daemon's PID.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Unmounts now and waits for the daemon to exit (at most `timeout`).
    pub fn unmount(&mut self, timeout: Duration) -> bool {
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        let Some(pid) = self.pid.take() else {
            return true;
        };
        wait_for_exit(pid, timeout)
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_for_exit(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > timeout {
            // SAFETY: plain kill(2) of the daemon this guard started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(100));
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.unmount(Duration::from_secs(10));
    }
}

/// True if something is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == canon))
        })
        .unwrap_or(false)
}
