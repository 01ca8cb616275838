//! One FUSE daemon process: started with the held `/dev/fuse` descriptor
//! as its fd 3 and a readiness pipe as its fd 4, watched through a pidfd
//! (which also works for a daemon adopted from an earlier supervisor, which
//! is not our child), and stopped by PID.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::SessionError;

/// The descriptor number the daemon finds the FUSE connection on.
pub const FUSE_FD: RawFd = 3;
/// The descriptor number the daemon reports readiness on.
pub const READY_FD: RawFd = 4;

/// How to start a daemon: the program and its arguments. The supervisor
/// appends `--fuse-fd 3 --ready-fd 4 --session-dir DIR`, and `--takeover`
/// when it replaces a dead daemon.
#[derive(Debug, Clone)]
pub struct DaemonCommand {
    /// The executable (usually `weir` itself).
    pub program: PathBuf,
    /// Its arguments, before the ones the supervisor adds.
    pub args: Vec<OsString>,
    /// Where its stdout and stderr go (inherited when `None`).
    pub log: Option<PathBuf>,
}

/// Whether a daemon starts a connection or takes one over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Fresh,
    Takeover,
}

/// A running daemon.
#[derive(Debug)]
pub(crate) struct Process {
    pub pid: i32,
    pidfd: OwnedFd,
    /// Present when we started it, so that we reap it.
    child: Option<Child>,
}

/// How a daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code (0: the mount went away and it was done).
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It was not our child, so its status is unknown.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => write!(f, "exited"),
        }
    }
}

/// Exit code a daemon uses when it cannot take over (no usable journal or
/// saved INIT): the supervisor then remounts instead of retrying.
pub const EXIT_CANNOT_TAKE_OVER: i32 = 75;

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; a valid fd on success.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A copy of descriptor `target` of the process behind `pidfd`.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, target: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; a valid fd on success.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A descriptor number of at least 10, so that moving it to 3 or 4 in the
/// child cannot overwrite the other one.
fn high_dup(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl on a descriptor we hold; a valid fd on success.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

impl Process {
    /// Starts `cmd` on the connection `dev` and waits until it answers on
    /// its mount (it says so on the readiness pipe) or fails.
    pub(crate) fn spawn(
        cmd: &DaemonCommand,
        dev: BorrowedFd<'_>,
        session_dir: &Path,
        role: Role,
        timeout: Duration,
    ) -> Result<Process, SessionError> {
        let spawn_err = |e: std::io::Error| SessionError::Spawn(e.to_string());
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
        let dev_hi = high_dup(dev).map_err(spawn_err)?;
        let ready_hi = high_dup(ready_w.as_fd()).map_err(spawn_err)?;
        drop(ready_w);
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .arg("--fuse-fd")
            .arg(FUSE_FD.to_string())
            .arg("--ready-fd")
            .arg(READY_FD.to_string())
            .arg("--session-dir")
            .arg(session_dir)
            .stdin(Stdio::null());
        if role == Role::Takeover {
            c.arg("--takeover");
        }
        if let Some(log) = &cmd.log {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| SessionError::Spawn(format!("log file {}: {e}", log.display())))?;
            c.stdout(f.try_clone().map_err(spawn_err)?).stderr(f);
        }
        let (dev_raw, ready_raw) = (dev_hi.as_raw_fd(), ready_hi.as_raw_fd());
        // SAFETY: sigemptyset only writes the set we own.
        let no_signals = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            set
        };
        // SAFETY: only async-signal-safe calls between fork and exec. The
        // daemon gets its own session, so a signal to our process group
        // (a Ctrl-C, a container stop) reaches the supervisor, which then
        // unmounts; and it starts with no signal blocked, whatever the
        // supervisor blocks for its own signal thread.
        unsafe {
            c.pre_exec(move || {
                if libc::setsid() < 0
                    || libc::dup2(dev_raw, FUSE_FD) < 0
                    || libc::dup2(ready_raw, READY_FD) < 0
                    || libc::sigprocmask(libc::SIG_SETMASK, &no_signals, std::ptr::null_mut()) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().map_err(|e| {
            SessionError::Spawn(format!("cannot start {}: {e}", cmd.program.display()))
        })?;
        drop(dev_hi);
        drop(ready_hi);
        let pid = child.id() as i32;
        let pidfd = pidfd_open(pid).map_err(spawn_err)?;
        let mut p = Process {
            pid,
            pidfd,
            child: Some(child),
        };
        match wait_ready(ready_r, timeout) {
            Ok(()) => Ok(p),
            Err(why) => {
                p.kill();
                let exit = p.wait();
                Err(SessionError::DaemonFailed {
                    reason: why,
                    exit: Some(exit),
                })
            }
        }
    }

    /// A daemon a previous supervisor started, found by PID.
    pub(crate) fn adopt(pid: i32) -> std::io::Result<Process> {
        let pidfd = pidfd_open(pid)?;
        Ok(Process {
            pid,
            pidfd,
            child: None,
        })
    }

    pub(crate) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub(crate) fn exited_within(&self, timeout: Duration) -> bool {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
    }

    /// Kills the daemon (it may be stopped: SIGKILL still works).
    pub(crate) fn kill(&self) {
        // SAFETY: pidfd_send_signal on our own pidfd; integers only.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    /// Waits for the daemon to exit and reaps it if it is our child.
    pub(crate) fn wait(&mut self) -> Exit {
        match self.child.as_mut() {
            Some(c) => c.wait().map(exit_of).unwrap_or(Exit::Unknown),
            None => {
                while !self.exited_within(Duration::from_secs(1)) {}
                Exit::Unknown
            }
        }
    }
}

fn exit_of(s: ExitStatus) -> Exit {
    match (s.code(), s.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Unknown,
    }
}

/// Reads the daemon's one line: `ok`, or `error: why`.
fn wait_ready(read_end: OwnedFd, timeout: Duration) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(std::fs::File::from(read_end)).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(timeout) {
        Ok(line) if line.trim() == "ok" => Ok(()),
        Ok(line) if line.is_empty() => Err("the daemon exited before its mount answered".into()),
        Ok(line) => Err(line.trim().trim_start_matches("error: ").to_string()),
        Err(_) => Err(format!("the daemon did not answer within {timeout:?}")),
    }
}
