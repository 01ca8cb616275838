//! How the kernel does I/O on each open file, and FUSE passthrough.
//!
//! A file whose object version is whole in the page cache, and verified, is
//! opened in passthrough mode: the kernel reads the cache's sparse data file
//! itself, at local-disk speed, and never asks the daemon. The kernel holds
//! every open of an inode that has a backing file to that one backing file
//! (any other open fails with EIO), so per inode:
//!
//! - while cached-mode opens exist, new opens are cached too;
//! - while passthrough opens exist, new read-only opens share their backing
//!   file, and so read the version those opens pinned, even if the storage
//!   holds a newer one; an open for writing is refused with ETXTBSY, as
//!   Linux refuses to write a running executable;
//! - the first open of a whole, verified object starts passthrough and pins
//!   the object in the cache, so eviction never punches holes the kernel
//!   would read as zeros.
//!
//! A whole object is verified (every page read back against its checksum)
//! in the background when its last page arrives, or at the first open
//! after a restart; later opens use it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use weir_cache::ObjectKey;

use crate::Fs;
use crate::error::{FsError, Result};
use crate::read::Source;

/// How the kernel does I/O on an open file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoMode {
    /// Through the kernel's page cache and the daemon.
    Cached,
    /// The kernel reads `file` itself (FOPEN_PASSTHROUGH).
    Passthrough {
        /// The cache's data file of the object version.
        file: PathBuf,
        /// A backing id already registered for this inode, which every
        /// passthrough open of it must share.
        id: Option<u32>,
    },
}

/// The mode an open handle holds, to give back at release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Cached,
    Passthrough(ObjectKey),
}

#[derive(Debug)]
struct Through {
    key: ObjectKey,
    opens: u32,
    id: Option<u32>,
}

#[derive(Debug, Default)]
struct NodeIo {
    cached: u32,
    through: Option<Through>,
}

impl NodeIo {
    fn is_idle(&self) -> bool {
        self.cached == 0 && self.through.is_none()
    }
}

/// Per-inode modes and the passthrough switch.
#[derive(Debug, Default)]
pub(crate) struct IoModes {
    enabled: AtomicBool,
    nodes: Mutex<HashMap<u64, NodeIo>>,
    verifying: Mutex<HashSet<ObjectKey>>,
}

impl Fs {
    /// Turns passthrough on or off (on only once the kernel agreed to it).
    pub fn enable_passthrough(&self, on: bool) {
        self.inner.io.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether opens may use passthrough.
    pub fn passthrough_enabled(&self) -> bool {
        self.inner.io.enabled.load(Ordering::Relaxed)
    }

    /// Before an open for writing: the kernel sends RELEASE after close(2)
    /// has returned, so a writer that follows a reader's close can arrive
    /// before the close does. Give passthrough opens of `ino` a moment to
    /// go before the writer is refused.
    pub(crate) async fn settle_passthrough(&self, ino: u64) {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
        let start = std::time::Instant::now();
        while self.is_passed_through(ino) && start.elapsed() < PATIENCE {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn is_passed_through(&self, ino: u64) -> bool {
        self.inner
            .io
            .nodes
            .lock()
            .get(&ino)
            .is_some_and(|n| n.through.is_some())
    }

    /// Decides the mode of a new open of `ino` reading `src`.
    pub(crate) fn choose_mode(
        &self,
        ino: u64,
        write: bool,
        src: Option<&Source>,
    ) -> Result<(IoMode, Held)> {
        let mut nodes = self.inner.io.nodes.lock();
        let node = nodes.entry(ino).or_default();
        if let Some(t) = node.through.as_mut() {
            if write {
                return Err(FsError::new(
                    libc::ETXTBSY,
                    "the file is open for reading straight from the cache (passthrough); \
                     close its readers first, or set fuse.passthrough: false",
                ));
            }
            // The kernel already reads this version from its data file for
            // other opens (perhaps a dead daemon's): share it.
            t.opens += 1;
            let file = self.inner.pages.data_path(t.key);
            return Ok((
                IoMode::Passthrough { file, id: t.id },
                Held::Passthrough(t.key),
            ));
        }
        drop(nodes);
        let reader = if write { None } else { src };
        let whole = reader.filter(|s| self.ready_for_passthrough(s));
        let mut nodes = self.inner.io.nodes.lock();
        let node = nodes.entry(ino).or_default();
        if node.through.is_some() {
            // Another open started passthrough meanwhile: decide again.
            drop(nodes);
            return self.choose_mode(ino, write, src);
        }
        Ok(match whole {
            Some(s) if node.cached == 0 => {
                node.through = Some(Through {
                    key: s.key,
                    opens: 1,
                    id: None,
                });
                self.inner.pages.pin(s.key);
                let file = self.inner.pages.data_path(s.key);
                (
                    IoMode::Passthrough { file, id: None },
                    Held::Passthrough(s.key),
                )
            }
            _ => {
                node.cached += 1;
                (IoMode::Cached, Held::Cached)
            }
        })
    }

    /// Whether `src` can be read through its data file now; starts the
    /// check of a whole object that was never verified.
    fn ready_for_passthrough(&self, src: &Source) -> bool {
        if !self.passthrough_enabled() {
            return false;
        }
        let pages = &self.inner.pages;
        if pages.is_verified(src.key, src.size) {
            return true;
        }
        self.verify_when_whole(src.key, src.size);
        false
    }

    /// Starts, in the background, the check that lets a whole object be
    /// read by passthrough (called when its last page arrives, and at an
    /// open of a whole object that was never checked, as after a restart).
    pub(crate) fn verify_when_whole(&self, key: ObjectKey, size: u64) {
        if !self.passthrough_enabled()
            || !self.inner.pages.is_whole(key, size)
            || self.inner.pages.is_verified(key, size)
            || !self.inner.io.verifying.lock().insert(key)
        {
            return;
        }
        let fs = self.clone();
        tokio::task::spawn_blocking(move || {
            let ok = fs.inner.pages.verify(key, size);
            tracing::debug!(ok, "checked a whole cached object for passthrough");
            fs.inner.io.verifying.lock().remove(&key);
        });
    }

    /// The backing id registered for the node handle `fh` is open on.
    pub(crate) fn backing_of(&self, fh: u64) -> Option<u32> {
        let ino = self.file_handle(fh).ok()?.ino;
        self.inner.io.nodes.lock().get(&ino)?.through.as_ref()?.id
    }

    /// The adapter registered backing `id` for `ino`'s passthrough opens.
    pub fn set_backing(&self, ino: u64, id: u32) {
        if let Some(t) = self
            .inner
            .io
            .nodes
            .lock()
            .get_mut(&ino)
            .and_then(|n| n.through.as_mut())
        {
            t.id = Some(id);
        }
        if let Some(j) = &self.inner.journal {
            j.backing(ino, Some(id));
        }
    }

    /// The kernel refused the backing file of handle `fh` (a cache on a
    /// filesystem it cannot pass through to): the handle becomes a cached
    /// one and passthrough is off from now on.
    pub fn passthrough_refused(&self, fh: u64) {
        self.enable_passthrough(false);
        let Ok(h) = self.file_handle(fh) else { return };
        let mut held = h.io.lock();
        if let Held::Passthrough(_) = *held {
            self.give_back(h.ino, *held);
            self.inner.io.nodes.lock().entry(h.ino).or_default().cached += 1;
            *held = Held::Cached;
        }
    }

    /// Gives back the mode of a released open of `ino`. Returns the backing
    /// id to close when it was the inode's last passthrough open.
    pub(crate) fn give_back(&self, ino: u64, held: Held) -> Option<u32> {
        let mut nodes = self.inner.io.nodes.lock();
        let node = nodes.get_mut(&ino)?;
        let mut closed = None;
        match held {
            Held::Cached => node.cached = node.cached.saturating_sub(1),
            Held::Passthrough(key) => {
                if let Some(t) = node.through.as_mut() {
                    t.opens -= 1;
                    if t.opens == 0 {
                        closed = Some(t.id);
                        node.through = None;
                        self.inner.pages.unpin(key);
                    }
                }
            }
        }
        if node.is_idle() {
            nodes.remove(&ino);
        }
        drop(nodes);
        let id = closed?;
        if let Some(j) = &self.inner.journal {
            j.backing(ino, None);
        }
        id
    }

    /// Background checks of whole objects still running.
    #[cfg(test)]
    pub(crate) fn checks_running(&self) -> usize {
        self.inner.io.verifying.lock().len()
    }

    /// Rebuilds the modes of handles restored after a takeover.
    pub(crate) fn restore_mode(&self, ino: u64, held: Held, backing: Option<u32>) {
        let mut nodes = self.inner.io.nodes.lock();
        let node = nodes.entry(ino).or_default();
        match held {
            Held::Cached => node.cached += 1,
            Held::Passthrough(key) => {
                let t = node.through.get_or_insert_with(|| {
                    self.inner.pages.pin(key);
                    Through {
                        key,
                        opens: 0,
                        id: backing,
                    }
                });
                t.opens += 1;
            }
        }
    }
}
