//! Changes made through this filesystem, and changes made elsewhere.
//!
//! Every successful change (an upload, mkdir, unlink, rmdir, rename,
//! symlink) is handed to the [`ChangeObserver`], if one is set; in cluster
//! mode the daemon passes it on to the other nodes. A change another node
//! made arrives through [`Fs::invalidate_remote`]: it drops the cached stat
//! of each path, the listing of its parent, and whatever is cached below a
//! directory. The kernel keeps its own copies of names and attributes for
//! `entry_timeout` / `attr_timeout`; a [`KernelNotifier`] (the FUSE adapter
//! provides one) drops those too, so a change shows at once however long
//! the timeouts are.

use std::fmt;
use std::sync::Arc;

use weir_namespace::split_name;
use weir_ufs::Kind;

use crate::Fs;

/// One change made through weir, by namespace path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `path` was created or its content changed.
    Write {
        /// The namespace path.
        path: String,
    },
    /// `path` (a file or a directory) was removed.
    Delete {
        /// The namespace path.
        path: String,
    },
    /// `from` was renamed to `to`.
    Rename {
        /// The old path.
        from: String,
        /// The new path.
        to: String,
    },
}

impl Change {
    /// The paths whose metadata the change makes stale.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Change::Write { path } | Change::Delete { path } => vec![path],
            Change::Rename { from, to } => vec![from, to],
        }
    }
}

/// Told of every change made through the filesystem, after it succeeded.
/// Called on the request's own thread: it must not block.
pub trait ChangeObserver: Send + Sync + fmt::Debug {
    /// `change` happened.
    fn changed(&self, change: &Change);
}

/// Drops what the kernel caches about names and nodes. Implementations must
/// not block the caller on the kernel (the FUSE adapter's queues the
/// notifications for a thread of its own), because a notification can wait
/// for a request in flight on the same directory.
pub trait KernelNotifier: Send + Sync + fmt::Debug {
    /// Forget the name `name` in directory `parent`.
    fn inval_entry(&self, parent: u64, name: &str);
    /// Forget the attributes and cached data of node `ino`.
    fn inval_inode(&self, ino: u64);
}

impl Fs {
    /// Sets the observer of changes; only the first call takes effect.
    pub fn set_observer(&self, observer: Arc<dyn ChangeObserver>) {
        if self.inner.observer.set(observer).is_err() {
            tracing::warn!("a change observer is already set; keeping it");
        }
    }

    /// Sets what drops the kernel's caches; only the first call takes effect.
    pub fn set_kernel_notifier(&self, notifier: Arc<dyn KernelNotifier>) {
        if self.inner.kernel.set(notifier).is_err() {
            tracing::warn!("a kernel notifier is already set; keeping it");
        }
    }

    /// Hands a successful change to the observer.
    pub(crate) fn announce(&self, change: Change) {
        if let Some(o) = self.inner.observer.get() {
            o.changed(&change);
        }
    }

    /// Another node made `change`: forget what is cached about its paths,
    /// here and in the kernel.
    pub fn invalidate_remote(&self, change: &Change) {
        for path in change.paths() {
            let meta = &self.inner.meta;
            // Only a directory can have cached descendants; checking first
            // keeps a burst of file events from queueing a scan each.
            let dir = matches!(meta.stat(path), Some(Some(s)) if s.kind == Kind::Dir)
                || meta.list(path).is_some();
            self.invalidate(path);
            if dir {
                meta.invalidate_tree(path);
            }
            self.notify_kernel(path);
        }
    }

    /// Forgets every cached stat and listing, here and (for every name the
    /// kernel holds) in the kernel: changes may have been missed.
    pub fn drop_metadata(&self) {
        self.inner.meta.clear();
        self.notify_kernel_all();
    }

    fn notify_kernel(&self, path: &str) {
        let Some(k) = self.inner.kernel.get() else {
            return;
        };
        let (parent, name) = split_name(path);
        let (parent_ino, ino) = {
            let inodes = self.inner.inodes.lock();
            (inodes.peek(parent), inodes.peek(path))
        };
        if let Some(p) = parent_ino {
            k.inval_entry(p, name);
        }
        if let Some(i) = ino {
            k.inval_inode(i);
        }
    }

    /// Tells the kernel to forget every name and node it holds of ours.
    pub(crate) fn notify_kernel_all(&self) {
        let Some(k) = self.inner.kernel.get() else {
            return;
        };
        let inodes = self.inner.inodes.lock();
        let nodes = inodes.linked();
        let count = nodes.len();
        let entries: Vec<(u64, String, u64)> = nodes
            .into_iter()
            .filter(|(path, _)| path != "/")
            .filter_map(|(path, ino)| {
                let (parent, name) = split_name(&path);
                Some((inodes.peek(parent)?, name.to_string(), ino))
            })
            .collect();
        drop(inodes);
        for (parent, name, ino) in entries {
            k.inval_entry(parent, &name);
            k.inval_inode(ino);
        }
        tracing::debug!(
            nodes = count,
            "asked the kernel to forget every cached name"
        );
    }
}
