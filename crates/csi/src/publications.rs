//! The node's publications: binding namespace directories onto kubelet
//! targets and taking them down, with a record of each in the state dir,
//! and re-binding them onto a new mount after a remount. These functions
//! block (they are called from blocking threads); every step that touches
//! the FUSE mount runs under a deadline, the bind itself never does.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use weir_metrics::names;

use crate::blocking::with_timeout;
use crate::error::CsiError;
use crate::paths::{self, Target};
use crate::publisher::{self, Cleared, MAX_STACK};
use crate::sessions::Sessions;
use crate::state::{Publication, Records};
use crate::syscalls;

/// The node plugin's view of its publications.
#[derive(Debug)]
pub struct Publications {
    /// The kubelet dir as given (targets are compared with it).
    kubelet: PathBuf,
    /// The kubelet dir resolved (mountinfo shows resolved paths).
    kubelet_real: PathBuf,
    records: Records,
    table: Mutex<BTreeMap<PathBuf, Publication>>,
    sessions: Arc<Sessions>,
    /// Deadline of each step that touches the FUSE mount.
    timeout: Duration,
}

/// What a re-bind did to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// A new bind of the current mount is on the target.
    Rebound,
    /// It was already bound to the current mount.
    Current,
    /// Nothing to repair: nothing (or something not ours) is mounted there.
    Skipped(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_error(what: &str, e: std::io::Error) -> CsiError {
    CsiError::Internal(format!("{what}: {e}"))
}

impl Publications {
    /// Loads the records in `records`. `kubelet` must exist.
    pub fn open(
        kubelet: &Path,
        records: Records,
        sessions: Arc<Sessions>,
        timeout: Duration,
    ) -> Result<Publications, CsiError> {
        let kubelet = paths::plain_dir(kubelet);
        let kubelet_real = kubelet
            .canonicalize()
            .map_err(|e| CsiError::Internal(format!("kubelet dir {}: {e}", kubelet.display())))?;
        let table = records
            .load::<Publication>()?
            .into_iter()
            .map(|p| (p.target.clone(), p))
            .collect();
        let me = Publications {
            kubelet,
            kubelet_real,
            records,
            table: Mutex::new(table),
            sessions,
            timeout,
        };
        me.update_gauge();
        Ok(me)
    }

    /// Checks a target path; returns it with its key (the path written plainly).
    pub fn target(&self, raw: &str) -> Result<(Target, PathBuf), CsiError> {
        let t = paths::target(&self.kubelet, raw)?;
        let key = self.kubelet.join(&t.rel);
        Ok((t, key))
    }

    /// Where mountinfo shows the target.
    pub fn real_path(&self, t: &Target) -> PathBuf {
        self.kubelet_real.join(&t.rel)
    }

    /// Every publication, in target order.
    pub fn all(&self) -> Vec<Publication> {
        lock(&self.table).values().cloned().collect()
    }

    /// The publication at `key`, if any.
    pub fn get(&self, key: &Path) -> Option<Publication> {
        lock(&self.table).get(key).cloned()
    }

    /// The session this node's publications use.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    fn update_gauge(&self) {
        let n = lock(&self.table).len();
        metrics::gauge!(names::PUBLICATIONS).set(n as f64);
    }

    /// Whether the topmost mount at `real` binds the session's current mount.
    fn bound_current(&self, real: &Path) -> bool {
        let device = self.sessions.device();
        publisher::stack(real)
            .ok()
            .and_then(|mut s| s.pop())
            .is_some_and(|top| publisher::is_weir(&top) && Some(top.dev) == device)
    }

    /// NodePublishVolume: records `p` and binds its directory onto `t`.
    pub fn publish(&self, p: Publication, t: &Target) -> Result<(), CsiError> {
        let real = self.real_path(t);
        if self.reserve(&p, &real)? {
            return self.republish(&p, t, &real);
        }
        let result = self.bind_new(&p, t);
        if result.is_err() {
            lock(&self.table).remove(&p.target);
        }
        self.update_gauge();
        result
    }

    /// A publish of what is already recorded: OK when it is bound to the
    /// current mount, else bound again (on top of a stale bind, as after a
    /// remount, or afresh when nothing is mounted there).
    fn republish(&self, p: &Publication, t: &Target, real: &Path) -> Result<(), CsiError> {
        if self.bound_current(real) {
            return Ok(());
        }
        // The record already counts as a user; this only makes sure the
        // session runs.
        let _running = self
            .sessions
            .acquire()
            .map_err(|e| CsiError::Unavailable(format!("cannot start the FUSE session: {e}")))?;
        let empty = publisher::stack(real)
            .map_err(|e| io_error("mountinfo", e))?
            .is_empty();
        if empty {
            let (source, target) = self.open_pair(p, t, true)?;
            return publisher::bind(source.as_fd(), target.as_fd(), p.read_only, p.attrs)
                .map_err(|e| io_error(&format!("bind onto {}", p.target.display()), e));
        }
        match self.rebind(p)? {
            Repair::Rebound | Repair::Current => Ok(()),
            Repair::Skipped(why) => Err(CsiError::AlreadyExists(format!(
                "{}: {why}",
                p.target.display()
            ))),
        }
    }

    /// Claims the target for `p` in the table. `Ok(true)`: `p` was already
    /// published there; `Ok(false)`: newly claimed.
    fn reserve(&self, p: &Publication, real: &Path) -> Result<bool, CsiError> {
        let mut table = lock(&self.table);
        if let Some(r) = table.get(&p.target) {
            if r.same_bind(p) {
                return Ok(true);
            }
            return Err(CsiError::AlreadyExists(format!(
                "{} is already published for volume {:?} (directory {}, {}); unpublish it first",
                p.target.display(),
                r.volume_id,
                r.mount_path,
                if r.read_only {
                    "read-only"
                } else {
                    "read-write"
                }
            )));
        }
        let stack = publisher::stack(real).map_err(|e| io_error("mountinfo", e))?;
        if let Some(top) = stack.last() {
            return Err(CsiError::AlreadyExists(format!(
                "{} already has a {} mount that this plugin did not record",
                p.target.display(),
                top.fs_type
            )));
        }
        table.insert(p.target.clone(), p.clone());
        Ok(false)
    }

    /// Records `p` and binds it (the record is durable before the bind).
    fn bind_new(&self, p: &Publication, t: &Target) -> Result<(), CsiError> {
        let lease = self
            .sessions
            .acquire()
            .map_err(|e| CsiError::Unavailable(format!("cannot start the FUSE session: {e}")))?;
        let (source, target) = self.open_pair(p, t, true)?;
        self.records.put(&p.target.to_string_lossy(), p)?;
        lease.keep();
        if let Err(e) = publisher::bind(source.as_fd(), target.as_fd(), p.read_only, p.attrs) {
            let _ = self.records.remove(&p.target.to_string_lossy());
            self.sessions.release();
            return Err(io_error(&format!("bind onto {}", p.target.display()), e));
        }
        tracing::info!(volume = %p.volume_id, target = %p.target.display(), dir = %p.mount_path, read_only = p.read_only, "published");
        Ok(())
    }

    /// Opens the namespace directory of `p` (creating it if the record
    /// says so and `create`) and the target directory (creating it), under
    /// the deadline.
    fn open_pair(
        &self,
        p: &Publication,
        t: &Target,
        create: bool,
    ) -> Result<(OwnedFd, OwnedFd), CsiError> {
        let device = self
            .sessions
            .device()
            .ok_or_else(|| CsiError::Unavailable("the FUSE session is not running".into()))?;
        let mountpoint = self.sessions.mountpoint();
        let mount_path = p.mount_path.clone();
        let create_dir = create && p.create_directory;
        let kubelet = self.kubelet_real.clone();
        let rel = t.rel.clone();
        let work = move || {
            let source = open_source(&mountpoint, device, &mount_path, create_dir)?;
            let target = open_target(&kubelet, &rel)?;
            Ok::<_, CsiError>((source, target))
        };
        with_timeout(self.timeout, "weir-resolve", work).unwrap_or_else(|| {
            Err(CsiError::Deadline(format!(
                "the namespace did not answer within {:?} while opening {}",
                self.timeout, p.mount_path
            )))
        })
    }

    /// NodeUnpublishVolume: takes down what this plugin bound at `t`,
    /// removes the (empty) target dir and drops the record.
    pub fn unpublish(&self, volume_id: &str, t: &Target, key: &Path) -> Result<(), CsiError> {
        let rec = self.get(key);
        if let Some(r) = &rec
            && r.volume_id != volume_id
        {
            tracing::warn!(target = %key.display(), asked = volume_id, published = %r.volume_id, "unpublish of a volume that is not the one at this target; nothing done");
            return Ok(());
        }
        let real = self.real_path(t);
        let device = self.sessions.device();
        let recorded = rec.is_some();
        let cleared = publisher::unmount_ours(&real, |m| recorded || Some(m.dev) == device)
            .map_err(|e| io_error(&format!("unmount {}", key.display()), e))?;
        if let Cleared::Foreign(what) = cleared {
            return Err(CsiError::Precondition(format!(
                "{} has a {what} on it that this plugin did not make; it was left alone",
                key.display()
            )));
        }
        self.remove_target_dir(t);
        if rec.is_some() {
            self.records.remove(&key.to_string_lossy())?;
            lock(&self.table).remove(key);
            self.sessions.release();
            self.update_gauge();
            tracing::info!(volume = volume_id, target = %key.display(), "unpublished");
        }
        Ok(())
    }

    /// Removes the target dir if it is empty; never anything in it.
    fn remove_target_dir(&self, t: &Target) {
        let parent = t.rel.parent().unwrap_or(Path::new(""));
        let Ok(kfd) = open_path_dir(&self.kubelet_real) else {
            return;
        };
        let parts = parent.iter().filter_map(|s| s.to_str());
        match syscalls::walk_dirs(kfd.as_fd(), parts, false)
            .and_then(|dir| syscalls::rmdir_at(dir.as_fd(), Path::new("mount")))
        {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                tracing::warn!(target = %t.rel.display(), error = %e, "target dir left in place (not empty?)")
            }
        }
    }

    /// After a remount: binds the session's new mount onto every recorded
    /// target still bound to an old one.
    pub fn rebind_all(&self) -> Vec<(Publication, Result<Repair, CsiError>)> {
        self.all()
            .into_iter()
            .map(|p| {
                let r = self.rebind(&p);
                (p, r)
            })
            .collect()
    }

    /// Stacks a bind of the current mount on a target whose topmost mount
    /// is a stale weir bind. The stale bind below stays: it is the one
    /// pods' mount namespaces received, and through it they receive the
    /// new one (HostToContainer). At [`MAX_STACK`] binds the topmost stale
    /// one is replaced instead, so the stack never grows without bound.
    fn rebind(&self, p: &Publication) -> Result<Repair, CsiError> {
        let (t, _) = self.target(&p.target.to_string_lossy())?;
        let real = self.real_path(&t);
        let stack = publisher::stack(&real).map_err(|e| io_error("mountinfo", e))?;
        let Some(top) = stack.last() else {
            return Ok(Repair::Skipped("nothing is mounted there".into()));
        };
        if !publisher::is_weir(top) {
            return Ok(Repair::Skipped(format!(
                "a {} mount is on top",
                top.fs_type
            )));
        }
        if Some(top.dev) == self.sessions.device() {
            return Ok(Repair::Current);
        }
        let ours = stack.iter().filter(|m| publisher::is_weir(m)).count();
        if ours >= MAX_STACK {
            syscalls::detach(&real)
                .map_err(|e| io_error("cannot drop the topmost stale bind", e))?;
        }
        let (source, target) = self.open_pair(p, &t, true)?;
        publisher::bind(source.as_fd(), target.as_fd(), p.read_only, p.attrs)
            .map_err(|e| io_error(&format!("bind onto {}", p.target.display()), e))?;
        Ok(Repair::Rebound)
    }

    /// At start: drops records whose target dir is gone (kubelet removed
    /// the pod while the plugin was down).
    pub fn forget_vanished(&self) {
        for p in self.all() {
            let Ok((t, key)) = self.target(&p.target.to_string_lossy()) else {
                continue;
            };
            let real = self.real_path(&t);
            let mounted = publisher::stack(&real).is_ok_and(|s| !s.is_empty());
            if mounted || std::fs::symlink_metadata(&real).is_ok() {
                continue;
            }
            tracing::info!(target = %key.display(), "forgetting a publication whose target is gone");
            let _ = self.records.remove(&key.to_string_lossy());
            lock(&self.table).remove(&key);
        }
        self.update_gauge();
    }
}

fn open_path_dir(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

/// Opens `mount_path` in the session mounted at `mountpoint`, checking that
/// the mount there is the session's (device), so that the node's own disk
/// below a vanished mount is never bound.
fn open_source(
    mountpoint: &Path,
    device: u64,
    mount_path: &str,
    create: bool,
) -> Result<OwnedFd, CsiError> {
    let root = open_path_dir(mountpoint).map_err(|e| io_error("session mount", e))?;
    let st = nix::sys::stat::fstat(root.as_fd())
        .map_err(|e| io_error("session mount", std::io::Error::from(e)))?;
    if st.st_dev != device {
        return Err(CsiError::Unavailable(
            "the FUSE session's mount is not in place".into(),
        ));
    }
    syscalls::walk_dirs(root.as_fd(), paths::components(mount_path), create).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ENOENT) => CsiError::NotFound(format!(
                "{mount_path} does not exist in the namespace (set createDirectory: \"true\" to create it)"
            )),
            Some(libc::ELOOP) | Some(libc::EXDEV) => CsiError::Invalid(format!(
                "{mount_path} goes through a symlink; mountPath must name a real directory"
            )),
            Some(libc::ENOTDIR) => {
                CsiError::Invalid(format!("{mount_path} is not a directory in the namespace"))
            }
            _ => io_error(&format!("open {mount_path} in the namespace"), e),
        }
    })
}

/// Opens (creating what is missing) the target dir below the kubelet dir,
/// following no symlink on the way.
fn open_target(kubelet: &Path, rel: &Path) -> Result<OwnedFd, CsiError> {
    let kfd = open_path_dir(kubelet).map_err(|e| io_error("kubelet dir", e))?;
    let parts = rel.iter().filter_map(|s| s.to_str());
    syscalls::walk_dirs(kfd.as_fd(), parts, true).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => CsiError::Invalid(format!(
            "target {} goes through a symlink or a non-directory",
            rel.display()
        )),
        _ => io_error(&format!("target {}", rel.display()), e),
    })
}
