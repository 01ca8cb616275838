//! NodeGetVolumeStats: usage and the volume's condition. The condition
//! comes first from mountinfo (is the target bound, and to the session's
//! current mount?), then from a `statvfs` of the target under a deadline.
//! At most one probe per target is in flight: a probe stuck on a hung
//! mount is not joined by more, and later calls report it still hanging.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::publisher;

/// Usage of a healthy volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes: total, available, used.
    pub bytes: (i64, i64, i64),
    /// Inodes: total, available, used.
    pub inodes: (i64, i64, i64),
}

/// What a stats call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The volume answers.
    Normal(Usage),
    /// It does not; why, for a person.
    Abnormal(String),
}

type Outcome = Result<Usage, String>;

#[derive(Debug)]
struct Inflight {
    since: Instant,
    rx: mpsc::Receiver<Outcome>,
}

/// The stats prober.
#[derive(Debug)]
pub struct Prober {
    timeout: Duration,
    inflight: Mutex<HashMap<PathBuf, Inflight>>,
}

impl Prober {
    /// A prober whose probes may take `timeout`.
    pub fn new(timeout: Duration) -> Prober {
        Prober {
            timeout,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The health of the target whose canonical path is `real`, given the
    /// device of the session's current mount.
    pub fn check(&self, real: &Path, device: Option<u64>) -> Health {
        match publisher::stack(real).map(|mut s| s.pop()) {
            Err(e) => return Health::Abnormal(format!("cannot read mountinfo: {e}")),
            Ok(None) => return Health::Abnormal("the volume is not mounted".into()),
            Ok(Some(top)) if !publisher::is_weir(&top) => {
                return Health::Abnormal(format!("a {} mount covers the volume", top.fs_type));
            }
            Ok(Some(top)) => match device {
                None => {
                    return Health::Abnormal("the node's FUSE session is not running".into());
                }
                Some(d) if d != top.dev => {
                    return Health::Abnormal(
                        "the volume is bound to an old FUSE mount that is gone; a re-bind is pending or failed, new opens fail until it is done".into(),
                    );
                }
                Some(_) => {}
            },
        }
        self.probe(real)
    }

    fn probe(&self, real: &Path) -> Health {
        if let Some(hung) = self.still_hung(real) {
            return hung;
        }
        let (tx, rx) = mpsc::channel();
        let path = real.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("weir-stats".into())
            .spawn(move || {
                let _ = tx.send(statvfs(&path));
            });
        if let Err(e) = spawned {
            return Health::Abnormal(format!("cannot start a probe: {e}"));
        }
        let since = Instant::now();
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(u)) => Health::Normal(u),
            Ok(Err(e)) => Health::Abnormal(e),
            Err(_) => {
                self.lock()
                    .insert(real.to_path_buf(), Inflight { since, rx });
                Health::Abnormal(format!(
                    "the mount is hung: no answer within {:?}",
                    self.timeout
                ))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Inflight>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An earlier probe of `real` that has still not returned, if any.
    fn still_hung(&self, real: &Path) -> Option<Health> {
        let mut inflight = self.lock();
        if let Some(run) = inflight.get(real) {
            match run.rx.try_recv() {
                Err(mpsc::TryRecvError::Empty) => {
                    return Some(Health::Abnormal(format!(
                        "the mount is hung: a probe has waited {:.0?} for an answer",
                        run.since.elapsed()
                    )));
                }
                _ => {
                    inflight.remove(real);
                }
            }
        }
        None
    }
}

fn statvfs(path: &Path) -> Outcome {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| format!("the volume fails: {e}"))?;
    let frsize = s.fragment_size() as i64;
    let total = s.blocks() as i64 * frsize;
    let avail = s.blocks_available() as i64 * frsize;
    let free = s.blocks_free() as i64 * frsize;
    let files = s.files() as i64;
    let ffree = s.files_free() as i64;
    Ok(Usage {
        bytes: (total, avail, (total - free).max(0)),
        inodes: (files, ffree, (files - ffree).max(0)),
    })
}
