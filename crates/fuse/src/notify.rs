//! The kernel side of cross-node invalidation: a [`KernelNotifier`] that
//! tells the kernel to forget names and node attributes through fuser's
//! `Notifier`, so a change made on another node shows at once even with
//! long `attr_timeout` / `entry_timeout` settings.
//!
//! A notification can wait in the kernel for a request in flight on the
//! same directory, which waits for our worker threads; so the filesystem
//! never writes them itself but queues them for one thread of their own.

use std::ffi::OsStr;
use std::sync::mpsc::{self, SyncSender, TrySendError};

use fuser::{INodeNo, Notifier};
use weir_fs::KernelNotifier;

/// Notifications queued before new ones are dropped: past that, the
/// kernel's own timeouts bound how long its copies stay.
const QUEUE: usize = 65_536;

#[derive(Debug)]
enum Inval {
    Entry(u64, String),
    Inode(u64),
}

/// Queues invalidations for the notifier thread.
#[derive(Debug)]
pub(crate) struct KernelInval {
    tx: SyncSender<Inval>,
}

impl KernelInval {
    /// Starts the thread that writes the notifications on `notifier`; it
    /// ends when the last handle is dropped.
    pub(crate) fn start(notifier: Notifier) -> std::io::Result<KernelInval> {
        let (tx, rx) = mpsc::sync_channel::<Inval>(QUEUE);
        std::thread::Builder::new()
            .name("weir-notify".into())
            .spawn(move || {
                for inval in rx {
                    let r = match &inval {
                        Inval::Entry(parent, name) => {
                            notifier.inval_entry(INodeNo(*parent), OsStr::new(name))
                        }
                        // Offset 0, length 0: the attributes and every cached page.
                        Inval::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
                    };
                    if let Err(e) = r {
                        tracing::debug!(?inval, error = %e, "kernel invalidation refused");
                    }
                }
            })?;
        Ok(KernelInval { tx })
    }

    fn queue(&self, inval: Inval) {
        match self.tx.try_send(inval) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => tracing::debug!(
                "kernel invalidation queue full; the kernel's timeouts bound what it keeps"
            ),
        }
    }
}

impl KernelNotifier for KernelInval {
    fn inval_entry(&self, parent: u64, name: &str) {
        self.queue(Inval::Entry(parent, name.to_string()));
    }

    fn inval_inode(&self, ino: u64) {
        self.queue(Inval::Inode(ino));
    }
}
