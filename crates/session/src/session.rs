//! The supervisor of one FUSE connection and its watchdog.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use weir_fuse::MountOptions;
use weir_fuse::mount::{self, MountInfo};
use weir_metrics::names;

use crate::daemon::{DaemonCommand, EXIT_CANNOT_TAKE_OVER, Exit, FUSE_FD, Process, Role};
use crate::{SessionError, fusectl};

/// File in the session directory holding the serving daemon's PID.
const DAEMON_PID_FILE: &str = "daemon.pid";
/// Takeovers allowed within [`CRASH_WINDOW`] before the watchdog concludes
/// that the daemons die of something a takeover replays (a request that
/// crashes every daemon it reaches), and remounts instead.
const MAX_TAKEOVERS_IN_WINDOW: usize = 20;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Attempts to start a replacement daemon before remounting.
const TAKEOVER_ATTEMPTS: usize = 5;

/// The health probe: a `statfs` of the mount every `interval`, failing
/// (the daemon counts as hung) when it takes longer than `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Time between probes.
    pub interval: Duration,
    /// Longest a probe may take.
    pub timeout: Duration,
}

/// Where recovery events are told.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// Everything a session needs.
#[derive(Clone)]
pub struct Spec {
    /// Where the namespace is mounted: a canonical path (no symlinks, no
    /// `..`), because it is compared with mountinfo and never resolved
    /// through the mount.
    pub mountpoint: PathBuf,
    /// The session directory: the daemon's saved INIT and journal, and the
    /// daemon's PID.
    pub dir: PathBuf,
    /// Mount options (those that go to mount(2)).
    pub options: MountOptions,
    /// How to start a daemon.
    pub daemon: DaemonCommand,
    /// The hang probe, if any.
    pub probe: Option<Probe>,
    /// How long a new daemon may take to answer on its mount.
    pub ready_timeout: Duration,
    /// Told of every recovery and of the end of the session.
    pub on_event: Option<EventSink>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("mountpoint", &self.mountpoint)
            .field("dir", &self.dir)
            .field("daemon", &self.daemon)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

/// Why a daemon was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// It exited or was killed.
    Exited(Exit),
    /// It stopped answering the probe, so the watchdog killed it.
    Hung,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Exited(e) => write!(f, "daemon {e}"),
            Cause::Hung => write!(f, "daemon hung"),
        }
    }
}

/// What the watchdog did.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new daemon took over the live connection (layer 1).
    Replaced {
        /// The dead daemon.
        old_pid: i32,
        /// Its replacement.
        new_pid: i32,
        /// Why.
        cause: Cause,
        /// From noticing the death to the replacement answering.
        pause: Duration,
    },
    /// No daemon could take over; a remount follows.
    TakeoverFailed {
        /// Why the last attempt failed.
        reason: String,
    },
    /// The connection was replaced by a fresh mount (layer 2).
    Remounted {
        /// The new daemon.
        new_pid: i32,
        /// How long the remount took.
        took: Duration,
    },
    /// The remount failed too: the session is over.
    RemountFailed {
        /// Why.
        reason: String,
    },
    /// The session ended: unmounted, stopped, or beyond recovery.
    Ended {
        /// How the last daemon ended.
        exit: Exit,
    },
}

#[derive(Debug)]
struct State {
    /// The held `/dev/fuse` descriptor.
    dev: OwnedFd,
    /// The mount's device number, as mountinfo shows it.
    device: u64,
    daemon: Option<Process>,
    /// Start times of recent takeovers.
    takeovers: Vec<Instant>,
}

#[derive(Debug)]
struct Shared {
    spec: Spec,
    state: Mutex<State>,
    stopping: AtomicBool,
    ended: (Mutex<Option<Exit>>, Condvar),
}

/// A supervised FUSE session. Dropping it does not unmount: call
/// [`Session::stop`].
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    /// Mounts `spec.mountpoint`, starts the first daemon, and returns once
    /// the mount answers.
    pub fn start(mut spec: Spec) -> Result<Session, SessionError> {
        weir_fuse::check_mount_point(&spec.mountpoint)?;
        // Later checks read mountinfo, which shows canonical paths, and must
        // never resolve a path through a mount that may hang.
        if let Ok(canon) = spec.mountpoint.canonicalize() {
            spec.mountpoint = canon;
        }
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| SessionError::Spawn(format!("session dir {}: {e}", spec.dir.display())))?;
        let (dev, device) = mount_fresh(&spec)?;
        let daemon = match start_daemon(&spec, dev.as_fd(), Role::Fresh) {
            Ok(d) => d,
            Err(e) => {
                let _ = mount::unmount(&spec.mountpoint, true);
                return Err(e);
            }
        };
        Ok(Session::watch(spec, dev, device, daemon))
    }

    /// Takes charge of a session an earlier supervisor started: finds its
    /// daemon by the PID it recorded and copies the FUSE descriptor out of
    /// it, so there is never a second daemon or a second mount.
    pub fn adopt(spec: Spec) -> Result<Session, SessionError> {
        let fail = |reason: String| SessionError::Adopt {
            dir: spec.dir.clone(),
            reason,
        };
        let pid_file = spec.dir.join(DAEMON_PID_FILE);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| fail(format!("{}: {e}", pid_file.display())))?
            .trim()
            .parse()
            .map_err(|_| fail(format!("{} holds no PID", pid_file.display())))?;
        let mount = our_mount(&spec.mountpoint)
            .ok_or_else(|| fail(format!("{} is not mounted", spec.mountpoint.display())))?;
        let daemon = Process::adopt(pid).map_err(|e| fail(format!("daemon {pid}: {e}")))?;
        let fd = fuse_fd_of(pid)
            .ok_or_else(|| fail(format!("daemon {pid} holds no /dev/fuse descriptor")))?;
        let dev = crate::daemon::pidfd_getfd(daemon.pidfd(), fd).map_err(|e| {
            fail(format!(
                "cannot copy the FUSE descriptor of daemon {pid}: {e}"
            ))
        })?;
        if !is_fuse_device(&dev) {
            return Err(fail(format!("fd {fd} of process {pid} is not /dev/fuse")));
        }
        tracing::info!(pid, mountpoint = %spec.mountpoint.display(), "adopted a running FUSE session");
        Ok(Session::watch(spec, dev, mount.dev, daemon))
    }

    fn watch(spec: Spec, dev: OwnedFd, device: u64, daemon: Process) -> Session {
        record_pid(&spec.dir, daemon.pid);
        metrics::gauge!(names::SESSIONS).increment(1.0);
        let shared = Arc::new(Shared {
            spec,
            state: Mutex::new(State {
                dev,
                device,
                daemon: Some(daemon),
                takeovers: Vec::new(),
            }),
            stopping: AtomicBool::new(false),
            ended: (Mutex::new(None), Condvar::new()),
        });
        let s = shared.clone();
        let watchdog = std::thread::Builder::new()
            .name("weir-watchdog".into())
            .spawn(move || s.watch())
            .expect("cannot start the watchdog thread");
        Session {
            shared,
            watchdog: Some(watchdog),
        }
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.shared.spec.mountpoint
    }

    /// The PID of the daemon serving now, if one is.
    pub fn daemon_pid(&self) -> Option<i32> {
        lock(&self.shared.state).daemon.as_ref().map(|d| d.pid)
    }

    /// The device number of the current mount (it changes on a remount).
    pub fn device(&self) -> u64 {
        lock(&self.shared.state).device
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        lock(&self.shared.ended.0).is_some()
    }

    /// Blocks until the session ends, and says how its last daemon ended.
    pub fn wait(&self) -> Exit {
        let (m, cv) = &self.shared.ended;
        let mut ended = lock(m);
        loop {
            if let Some(e) = *ended {
                return e;
            }
            ended = cv.wait(ended).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Unmounts (lazily: open files keep working until closed) and waits
    /// up to `grace` for the daemon to finish; then aborts the connection
    /// and kills the daemon.
    pub fn stop(mut self, grace: Duration) -> Exit {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let device = self.device();
        if our_mount(&self.shared.spec.mountpoint).is_some_and(|m| m.dev == device) {
            let _ = mount::unmount(&self.shared.spec.mountpoint, true);
        }
        if !self.wait_ended(grace) {
            tracing::warn!(mountpoint = %self.mountpoint().display(), "the daemon did not finish in time; aborting the connection");
            let _ = fusectl::abort(fusectl::connection_of(device));
            if let Some(d) = &lock(&self.shared.state).daemon {
                d.kill();
            }
        }
        let exit = self.wait();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        exit
    }

    fn wait_ended(&self, timeout: Duration) -> bool {
        let (m, cv) = &self.shared.ended;
        let guard = lock(m);
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |e| e.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn emit(&self, e: Event) {
        match &e {
            Event::Replaced {
                old_pid,
                new_pid,
                cause,
                pause,
            } => {
                tracing::warn!(old_pid, new_pid, %cause, pause_ms = pause.as_millis() as u64, "FUSE daemon replaced; the mount stayed up")
            }
            Event::TakeoverFailed { reason } => {
                tracing::error!(%reason, "no daemon could take over the FUSE connection; remounting")
            }
            Event::Remounted { new_pid, took } => tracing::warn!(
                new_pid,
                took_ms = took.as_millis() as u64,
                "FUSE mount replaced by a fresh one"
            ),
            Event::RemountFailed { reason } => {
                tracing::error!(%reason, "remount failed; the session is over")
            }
            Event::Ended { exit } => tracing::info!(%exit, "FUSE session ended"),
        }
        if let Some(sink) = &self.spec.on_event {
            sink(&e);
        }
    }

    /// The watchdog: waits for the daemon to exit or for a probe to fail,
    /// and recovers, until the session ends.
    fn watch(self: Arc<Self>) {
        let mut probe = ProbeState::default();
        loop {
            let tick = self.spec.probe.map_or(Duration::from_secs(1), |p| {
                p.interval.min(Duration::from_secs(1))
            });
            let Some(pidfd) = self.daemon_pidfd() else {
                break;
            };
            let exited = wait_exit(&pidfd, tick);
            let cause = if exited {
                let exit = self.reap();
                Cause::Exited(exit)
            } else if self.stopping.load(Ordering::SeqCst) {
                continue;
            } else if probe.hung(&self.spec) {
                tracing::error!(mountpoint = %self.spec.mountpoint.display(), "the mount stopped answering; killing its daemon");
                self.kill_daemon();
                let _ = self.reap();
                probe = ProbeState::default();
                Cause::Hung
            } else {
                continue;
            };
            if let Some(exit) = self.recover(cause) {
                self.finish(exit);
                break;
            }
        }
    }

    fn daemon_pidfd(&self) -> Option<OwnedFd> {
        let st = lock(&self.state);
        st.daemon
            .as_ref()
            .and_then(|d| d.pidfd().try_clone_to_owned().ok())
    }

    fn reap(&self) -> Exit {
        let daemon = lock(&self.state).daemon.take();
        match daemon {
            Some(mut d) => d.wait(),
            None => Exit::Unknown,
        }
    }

    fn kill_daemon(&self) {
        if let Some(d) = &lock(&self.state).daemon {
            d.kill();
        }
    }

    fn finish(&self, exit: Exit) {
        metrics::gauge!(names::SESSIONS).decrement(1.0);
        self.emit(Event::Ended { exit });
        let (m, cv) = &self.ended;
        *lock(m) = Some(exit);
        cv.notify_all();
    }

    /// Brings the session back after its daemon went away. Returns how the
    /// session ended, or `None` while it goes on.
    fn recover(&self, cause: Cause) -> Option<Exit> {
        let exit = match cause {
            Cause::Exited(e) => e,
            Cause::Hung => Exit::Signal(libc::SIGKILL),
        };
        if self.stopping.load(Ordering::SeqCst) || exit == Exit::Code(0) {
            // A daemon exits 0 once its mount is gone: nothing to keep.
            return Some(exit);
        }
        let old_pid = std::fs::read_to_string(self.spec.dir.join(DAEMON_PID_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if exit != Exit::Code(EXIT_CANNOT_TAKE_OVER) && !self.crash_looping() {
            match self.take_over(old_pid, cause) {
                Ok(()) => return None,
                Err(Some(end)) => return Some(end),
                Err(None) => {}
            }
        }
        self.remount(exit)
    }

    fn crash_looping(&self) -> bool {
        let mut st = lock(&self.state);
        let now = Instant::now();
        st.takeovers
            .retain(|t| now.duration_since(*t) < CRASH_WINDOW);
        st.takeovers.push(now);
        st.takeovers.len() > MAX_TAKEOVERS_IN_WINDOW
    }

    /// Layer 1. `Err(Some(exit))`: the connection turned out to be gone,
    /// the session is over; `Err(None)`: no daemon could take over.
    fn take_over(&self, old_pid: i32, cause: Cause) -> Result<(), Option<Exit>> {
        let started = Instant::now();
        let delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(TAKEOVER_ATTEMPTS - 1)
            .build();
        let mut last = String::new();
        for delay in std::iter::once(Duration::ZERO).chain(delays) {
            std::thread::sleep(delay);
            if self.stopping.load(Ordering::SeqCst) {
                return Err(Some(Exit::Code(0)));
            }
            let st = lock(&self.state);
            let attempt = start_daemon(&self.spec, st.dev.as_fd(), Role::Takeover);
            drop(st);
            match attempt {
                Ok(d) => {
                    let new_pid = d.pid;
                    lock(&self.state).daemon = Some(d);
                    record_pid(&self.spec.dir, new_pid);
                    let pause = started.elapsed();
                    count_recovery("takeover", "ok");
                    metrics::histogram!(names::RECOVERY_PAUSE_SECONDS).record(pause.as_secs_f64());
                    self.emit(Event::Replaced {
                        old_pid,
                        new_pid,
                        cause,
                        pause,
                    });
                    return Ok(());
                }
                Err(SessionError::DaemonFailed {
                    exit: Some(Exit::Code(0)),
                    ..
                }) => return Err(Some(Exit::Code(0))),
                Err(SessionError::DaemonFailed {
                    reason,
                    exit: Some(Exit::Code(EXIT_CANNOT_TAKE_OVER)),
                }) => {
                    last = reason;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a replacement daemon failed; retrying");
                    last = e.to_string();
                }
            }
        }
        count_recovery("takeover", "failed");
        self.emit(Event::TakeoverFailed { reason: last });
        Err(None)
    }

    /// Layer 2: abort the old connection, lazily unmount it, mount afresh.
    fn remount(&self, exit: Exit) -> Option<Exit> {
        let started = Instant::now();
        let mp = &self.spec.mountpoint;
        let old_device = lock(&self.state).device;
        if let Err(e) = fusectl::abort(fusectl::connection_of(old_device)) {
            tracing::warn!(error = %e, "cannot abort the old FUSE connection");
        }
        if our_mount(mp).is_some_and(|m| m.dev == old_device) {
            let _ = mount::unmount(mp, true);
        }
        let result = mount_fresh(&self.spec).and_then(|(dev, device)| {
            let d = start_daemon(&self.spec, dev.as_fd(), Role::Fresh).inspect_err(|_| {
                let _ = mount::unmount(mp, true);
            })?;
            Ok((dev, device, d))
        });
        match result {
            Ok((dev, device, d)) => {
                let new_pid = d.pid;
                let mut st = lock(&self.state);
                st.dev = dev;
                st.device = device;
                st.daemon = Some(d);
                drop(st);
                record_pid(&self.spec.dir, new_pid);
                count_recovery("remount", "ok");
                self.emit(Event::Remounted {
                    new_pid,
                    took: started.elapsed(),
                });
                None
            }
            Err(e) => {
                count_recovery("remount", "failed");
                self.emit(Event::RemountFailed {
                    reason: e.to_string(),
                });
                Some(exit)
            }
        }
    }
}

fn count_recovery(layer: &'static str, outcome: &'static str) {
    metrics::counter!(names::RECOVERIES, "layer" => layer, "outcome" => outcome).increment(1);
}

/// Waits up to `timeout` for the process behind `pidfd` to exit.
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// The `statfs` probe in flight, if any. A probe on a hung mount blocks
/// its thread until the mount answers again (a replacement daemon gets
/// the request resent), so at most one runs at a time.
#[derive(Debug, Default)]
struct ProbeState {
    inflight: Option<(Instant, mpsc::Receiver<()>)>,
    last: Option<Instant>,
}

impl ProbeState {
    /// Starts a probe when one is due and says whether the running one has
    /// overrun its timeout.
    fn hung(&mut self, spec: &Spec) -> bool {
        let Some(p) = spec.probe else { return false };
        if let Some((since, rx)) = &self.inflight {
            match rx.try_recv() {
                Ok(()) | Err(mpsc::TryRecvError::Disconnected) => self.inflight = None,
                Err(mpsc::TryRecvError::Empty) => return since.elapsed() > p.timeout,
            }
        }
        if self.last.is_some_and(|l| l.elapsed() < p.interval) {
            return false;
        }
        let (tx, rx) = mpsc::channel();
        let mp = spec.mountpoint.clone();
        let spawned = std::thread::Builder::new()
            .name("weir-probe".into())
            .spawn(move || {
                let _ = nix::sys::statfs::statfs(&mp);
                let _ = tx.send(());
            });
        if spawned.is_ok() {
            let now = Instant::now();
            self.inflight = Some((now, rx));
            self.last = Some(now);
        }
        false
    }
}

fn mount_fresh(spec: &Spec) -> Result<(OwnedFd, u64), SessionError> {
    let dev =
        mount::mount(&spec.mountpoint, &spec.options).map_err(|source| SessionError::Mount {
            path: spec.mountpoint.clone(),
            source,
        })?;
    let device = our_mount(&spec.mountpoint).map(|m| m.dev).unwrap_or(0);
    Ok((dev, device))
}

fn start_daemon(
    spec: &Spec,
    dev: std::os::fd::BorrowedFd<'_>,
    role: Role,
) -> Result<Process, SessionError> {
    Process::spawn(&spec.daemon, dev, &spec.dir, role, spec.ready_timeout)
}

/// The topmost weir mount at the canonical `path`, from mountinfo (never
/// stats the mount, which hangs with its daemon).
fn our_mount(path: &Path) -> Option<MountInfo> {
    let m = mount::mount_at_exact(path).ok()??;
    (m.fs_type == mount::FS_TYPE).then_some(m)
}

/// The descriptor number on which process `pid` holds `/dev/fuse`. The
/// daemon gets it as fd 3 but moves it over fuser's own descriptor during
/// the INIT handshake, so fd 3 is closed by the time anyone adopts it.
fn fuse_fd_of(pid: i32) -> Option<std::os::fd::RawFd> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut fds: Vec<std::os::fd::RawFd> = dir
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new("/dev/fuse")))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.iter()
        .copied()
        .find(|&fd| fd == FUSE_FD)
        .or(fds.first().copied())
}

fn is_fuse_device(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| {
        (st.st_mode & libc::S_IFMT) == libc::S_IFCHR
            && nix::sys::stat::major(st.st_rdev) == 10
            && nix::sys::stat::minor(st.st_rdev) == 229
    })
}

fn record_pid(dir: &Path, pid: i32) {
    let path = dir.join(DAEMON_PID_FILE);
    let tmp = dir.join(format!("{DAEMON_PID_FILE}.tmp"));
    if let Err(e) =
        std::fs::write(&tmp, format!("{pid}\n")).and_then(|()| std::fs::rename(&tmp, &path))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot record the daemon's PID");
    }
}
