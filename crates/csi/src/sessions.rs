//! The node's shared FUSE session: one per namespace, however many volumes
//! use it. It is started on the first publish (the daemon is `weir mount`
//! in daemon mode, run by `weir-session`), counted by the publications
//! that use it, and stopped once none has used it for the grace period.
//! A restarted plugin re-adopts the running session instead of starting a
//! second one, or mounts afresh when its daemon died with the old plugin.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use weir_fuse::MountOptions;
use weir_fuse::mount;
use weir_session::{DaemonCommand, Event, Probe, Session, SessionError, Spec, fusectl};

use crate::publisher;

/// The name of the node's one session (its directories are named after it).
pub const SESSION: &str = "default";
/// How long a stopping session's daemon may take to finish its uploads.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// How sessions are made.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The plugin's state dir (canonical).
    pub state_dir: PathBuf,
    /// The namespace configuration the daemon runs with (YAML).
    pub config_yaml: String,
    /// The `weir` executable.
    pub program: PathBuf,
    /// Options of the FUSE mount.
    pub options: MountOptions,
    /// The watchdog's hang probe.
    pub probe: Option<Probe>,
    /// How long an unused session stays mounted.
    pub grace: Duration,
    /// How long a daemon may take to answer on its mount.
    pub ready_timeout: Duration,
}

#[derive(Debug, Default)]
struct Slot {
    live: Option<Session>,
    /// Publications recorded plus publishes in progress.
    users: usize,
    /// Bumped whenever `users` drops to 0, so an old idle timer knows a
    /// newer one (or a new user) has come since.
    epoch: u64,
}

/// What [`Sessions::resume`] did at plugin start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// No session was running and none is needed.
    Nothing,
    /// The running session was taken over, daemon and mount unchanged.
    Adopted,
    /// The session's daemon was gone: it was mounted afresh (layer 2).
    Remounted,
    /// It could not be brought back.
    Failed(String),
}

/// The session manager.
#[derive(Debug)]
pub struct Sessions {
    settings: SessionSettings,
    slot: Mutex<Slot>,
    events: Mutex<mpsc::Sender<Event>>,
}

/// A use of the session by a publish in progress; [`Lease::keep`] turns it
/// into a lasting use (a recorded publication), dropping it gives it back.
#[derive(Debug)]
pub struct Lease {
    sessions: Arc<Sessions>,
    kept: bool,
}

impl Lease {
    /// The publication was recorded: it now counts until it is released.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.kept {
            self.sessions.release();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    /// A manager whose sessions tell their recovery events to `events`.
    pub fn new(settings: SessionSettings, events: mpsc::Sender<Event>) -> Arc<Sessions> {
        Arc::new(Sessions {
            settings,
            slot: Mutex::new(Slot::default()),
            events: Mutex::new(events),
        })
    }

    /// Where the session is mounted.
    pub fn mountpoint(&self) -> PathBuf {
        self.settings.state_dir.join("mnt").join(SESSION)
    }

    /// The session directory (daemon PID, saved INIT, journal, config, log).
    pub fn dir(&self) -> PathBuf {
        self.settings.state_dir.join("sessions").join(SESSION)
    }

    /// The device of the live session's current mount.
    pub fn device(&self) -> Option<u64> {
        let slot = lock(&self.slot);
        slot.live
            .as_ref()
            .filter(|s| !s.is_ended())
            .map(Session::device)
    }

    /// Makes sure the session is up, and counts one more user.
    pub fn acquire(self: &Arc<Self>) -> Result<Lease, SessionError> {
        let mut slot = lock(&self.slot);
        if slot.live.as_ref().is_none_or(Session::is_ended) {
            slot.live = None;
            slot.live = Some(self.start_fresh()?);
        }
        slot.users += 1;
        Ok(Lease {
            sessions: self.clone(),
            kept: false,
        })
    }

    /// One user (a publication) is gone; the last one starts the grace
    /// period after which the session stops.
    pub fn release(self: &Arc<Self>) {
        let mut slot = lock(&self.slot);
        slot.users = slot.users.saturating_sub(1);
        if slot.users == 0 {
            self.schedule_stop(&mut slot);
        }
    }

    fn schedule_stop(self: &Arc<Self>, slot: &mut Slot) {
        slot.epoch += 1;
        if slot.live.is_none() {
            return;
        }
        let epoch = slot.epoch;
        let me = self.clone();
        let grace = self.settings.grace;
        let spawned = std::thread::Builder::new()
            .name("weir-grace".into())
            .spawn(move || {
                std::thread::sleep(grace);
                me.stop_if_idle(epoch);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the session's grace timer");
        }
    }

    fn stop_if_idle(&self, epoch: u64) {
        let mut slot = lock(&self.slot);
        if slot.users != 0 || slot.epoch != epoch {
            return;
        }
        if let Some(s) = slot.live.take() {
            tracing::info!(session = SESSION, grace = ?self.settings.grace, "no volume used the session for the grace period; stopping it");
            let exit = s.stop(STOP_GRACE);
            tracing::info!(session = SESSION, %exit, "session stopped");
        }
    }

    /// At plugin start: takes charge of the session an earlier plugin left
    /// running (`users` publications are recorded for it), or mounts it
    /// afresh when its daemon is gone and publications need it.
    pub fn resume(self: &Arc<Self>, users: usize) -> Resumed {
        let mut slot = lock(&self.slot);
        slot.users = users;
        let mounted = self.stale_or_live_mount().is_some();
        let result = if mounted {
            match Session::adopt(self.spec()) {
                Ok(s) => {
                    slot.live = Some(s);
                    Resumed::Adopted
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the session's daemon is gone; mounting it afresh");
                    self.remount_into(&mut slot)
                }
            }
        } else if users > 0 {
            self.remount_into(&mut slot)
        } else {
            Resumed::Nothing
        };
        if slot.users == 0 {
            self.schedule_stop(&mut slot);
        }
        result
    }

    fn remount_into(&self, slot: &mut Slot) -> Resumed {
        match self.start_fresh() {
            Ok(s) => {
                slot.live = Some(s);
                Resumed::Remounted
            }
            Err(e) => Resumed::Failed(e.to_string()),
        }
    }

    fn stale_or_live_mount(&self) -> Option<mount::MountInfo> {
        publisher::stack(&self.mountpoint())
            .ok()?
            .pop()
            .filter(publisher::is_weir)
    }

    /// Aborts and detaches whatever weir mount is left at the mount point
    /// (a dead connection whose daemon is gone), so a new one can go there.
    fn clear_stale(&self) {
        let mp = self.mountpoint();
        for _ in 0..8 {
            let Some(m) = self.stale_or_live_mount() else {
                return;
            };
            if let Err(e) = fusectl::abort(fusectl::connection_of(m.dev)) {
                tracing::warn!(error = %e, "cannot abort the stale FUSE connection");
            }
            if let Err(e) = crate::syscalls::detach(&mp) {
                tracing::warn!(error = %e, mountpoint = %mp.display(), "cannot detach the stale mount");
                return;
            }
            tracing::info!(mountpoint = %mp.display(), "detached a stale session mount");
        }
    }

    fn start_fresh(&self) -> Result<Session, SessionError> {
        let started = Instant::now();
        self.clear_stale();
        let prepare = || -> std::io::Result<()> {
            std::fs::create_dir_all(self.mountpoint())?;
            std::fs::create_dir_all(self.dir())?;
            let cfg = self.dir().join("weir.yaml");
            let tmp = self.dir().join("weir.yaml.tmp");
            std::fs::write(&tmp, &self.settings.config_yaml)?;
            std::fs::rename(&tmp, &cfg)
        };
        prepare().map_err(|e| SessionError::Spawn(format!("session dir: {e}")))?;
        let s = Session::start(self.spec())?;
        tracing::info!(
            session = SESSION,
            daemon = s.daemon_pid(),
            took_ms = started.elapsed().as_millis() as u64,
            "FUSE session mounted"
        );
        Ok(s)
    }

    fn spec(&self) -> Spec {
        let dir = self.dir();
        let mut args: Vec<std::ffi::OsString> = vec!["mount".into(), self.mountpoint().into()];
        args.push("--config".into());
        args.push(dir.join("weir.yaml").into());
        let tx = lock(&self.events).clone();
        let tx = Mutex::new(tx);
        Spec {
            mountpoint: self.mountpoint(),
            dir: dir.clone(),
            options: self.settings.options.clone(),
            daemon: DaemonCommand {
                program: self.settings.program.clone(),
                args,
                log: Some(dir.join("daemon.log")),
            },
            probe: self.settings.probe,
            ready_timeout: self.settings.ready_timeout,
            on_event: Some(Arc::new(move |e: &Event| {
                let _ = lock(&tx).send(e.clone());
            })),
        }
    }
}
