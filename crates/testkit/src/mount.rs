//! Real weir mounts for tests: a guard that mounts with the `weir` binary
//! and, when dropped (also on panic), stops the supervisor it started,
//! lazily unmounts, and waits for the daemon (killing it by PID if it
//! lingers), plus timeouts so a hung FUSE daemon fails a test instead of
//! hanging CI.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `cmd` with a timeout, killing it if it overruns. Its output is read
/// while it runs, so a command that prints more than a pipe holds finishes.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_or_kill(&mut child, timeout)?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{cmd:?} did not finish within {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&stderr)
            ),
        )),
    }
}

/// Waits for `child` to exit, for at most `timeout`; past that kills it,
/// reaps it and returns `None`.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: Duration,
) -> io::Result<Option<std::process::ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(pipe: Option<impl io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
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

/// A mounted weir. Dropping it unmounts and stops the supervisor and the
/// daemon.
#[derive(Debug)]
pub struct MountGuard {
    mountpoint: PathBuf,
    cache_dir: PathBuf,
    pid: Option<i32>,
    supervisor: Option<i32>,
    /// Unmounted already: a later unmount (or the drop) must leave alone
    /// whatever was mounted at the same place since.
    unmounted: bool,
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
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
        let guard = MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            pid: read_pid(&cache_dir.join("weir.pid")),
            supervisor: read_pid(&cache_dir.join("supervisor.pid")),
            unmounted: false,
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

    /// The PID of the daemon serving now (it changes after a takeover).
    pub fn pid(&self) -> Option<i32> {
        read_pid(&self.cache_dir.join("session/daemon.pid"))
            .or_else(|| read_pid(&self.cache_dir.join("weir.pid")))
            .or(self.pid)
    }

    /// The supervisor's PID.
    pub fn supervisor_pid(&self) -> Option<i32> {
        self.supervisor
    }

    /// Unmounts now and waits (at most `timeout`) for the supervisor and
    /// the daemon to exit.
    pub fn unmount(&mut self, timeout: Duration) -> bool {
        if self.unmounted {
            return true;
        }
        self.unmounted = true;
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        let daemon = self.pid();
        self.pid = None;
        let supervisor = self.supervisor.take();
        let start = Instant::now();
        let daemon_done = daemon.is_none_or(|pid| exited_within(pid, timeout));
        if !daemon_done {
            // The supervisor first, or it would replace the daemon we kill.
            supervisor.into_iter().chain(daemon).for_each(kill);
        }
        let left = timeout.saturating_sub(start.elapsed());
        let supervisor_done = supervisor.is_none_or(|pid| exited_within(pid, left));
        if !supervisor_done {
            supervisor.into_iter().for_each(kill);
        }
        daemon_done && supervisor_done
    }
}

fn exited_within(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while crate::process::alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Kills a process this guard started, and gives it a moment to go.
fn kill(pid: i32) {
    // SAFETY: plain kill(2) of a process this guard started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    exited_within(pid, Duration::from_secs(2));
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
