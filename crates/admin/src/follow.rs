//! Cluster mode in a daemon: the filesystem follows the cluster.
//!
//! - Each new table from etcd is opened (unchanged mounts keep their
//!   storage, bad entries are skipped and reported) and swapped in.
//! - Each change made through this filesystem is published.
//! - Each change another node made drops the stale metadata here and in
//!   the kernel; a missed-events signal drops all of it.
//!
//! None of it needs etcd to be up: while it is down the last table keeps
//! being served, changes wait in the cluster client's outbox, and the
//! client's reconnect brings a missed-events signal.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_cluster::{Cluster, Notice, Subscription, TableSnapshot};
use weir_fs::{Change, ChangeObserver, Fs};
use weir_namespace::MountTable;
use weir_ufs::Tuning;

/// The background work of following a cluster, stopped on drop.
#[derive(Debug)]
pub struct Follower {
    applied: watch::Receiver<i64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Follower {
    /// The etcd revision of the table this daemon serves.
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.clone()
    }

    /// Entries of the served table that could not be opened, with why.
    pub fn errors(&self) -> Arc<Mutex<Vec<String>>> {
        self.errors.clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Builds the table of `snapshot`, reusing `previous`'s unchanged mounts.
/// Entries that cannot be opened are left out, and described.
pub fn open_table(
    snapshot: &TableSnapshot,
    tuning: &Tuning,
    previous: Option<&MountTable>,
) -> (MountTable, Vec<String>) {
    let (table, errors) = MountTable::open_lenient(&snapshot.specs, tuning, previous);
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for e in &errors {
        tracing::error!(error = %e, "cannot serve a mount of the cluster table; skipping it");
    }
    (table, errors)
}

/// Makes `fs` follow `cluster`. `served` is the snapshot `fs` was built
/// from (with `errors`, what could not be opened of it). Call inside the
/// daemon's runtime.
pub fn follow(
    fs: &Fs,
    cluster: Arc<Cluster>,
    tuning: Tuning,
    served: &TableSnapshot,
    errors: Vec<String>,
) -> Follower {
    fs.set_observer(Arc::new(Publisher(cluster.clone())));
    let (applied_tx, applied) = watch::channel(served.revision);
    let errors = Arc::new(Mutex::new(errors));
    // Subscribed before returning, so nothing published from now on is missed.
    let notices = tokio::spawn(apply_notices(fs.clone(), cluster.subscribe()));
    let tables = tokio::spawn(apply_tables(
        fs.clone(),
        cluster,
        tuning,
        served.clone(),
        applied_tx,
        errors.clone(),
    ));
    Follower {
        applied,
        errors,
        tasks: vec![notices, tables],
    }
}

async fn apply_tables(
    fs: Fs,
    cluster: Arc<Cluster>,
    tuning: Tuning,
    mut served: TableSnapshot,
    applied: watch::Sender<i64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut tables = cluster.watch_table();
    loop {
        let next = tables.borrow_and_update().clone();
        if let Some(next) = next {
            if next.specs != served.specs {
                let current = fs.table();
                let (table, errs) = open_table(&next, &tuning, Some(&current));
                fs.set_table(table);
                *errors.lock() = errs;
            }
            // Read first: a borrow guard alive inside send_replace's
            // arguments would deadlock against its write lock.
            let revision = next.revision.max(*applied.borrow());
            applied.send_replace(revision);
            served = (*next).clone();
        }
        if tables.changed().await.is_err() {
            return;
        }
    }
}

async fn apply_notices(fs: Fs, mut notices: Subscription) {
    while let Some(notice) = notices.next().await {
        match notice {
            Notice::Invalidate(i) => {
                tracing::debug!(origin = %i.origin, change = ?i.change, "invalidating a change made elsewhere");
                fs.invalidate_remote(&from_cluster(i.change));
            }
            Notice::MissedEvents(why) => {
                tracing::info!(reason = ?why, "dropping every cached stat and listing");
                fs.drop_metadata();
            }
        }
    }
}

/// Publishes each change made through the filesystem.
#[derive(Debug)]
struct Publisher(Arc<Cluster>);

impl ChangeObserver for Publisher {
    fn changed(&self, change: &Change) {
        if let Err(e) = self.0.publish(to_cluster(change)) {
            tracing::warn!(error = %e, "cannot announce a change to the cluster");
        }
    }
}

fn to_cluster(c: &Change) -> weir_cluster::Change {
    match c {
        Change::Write { path } => weir_cluster::Change::Write { path: path.clone() },
        Change::Delete { path } => weir_cluster::Change::Delete { path: path.clone() },
        Change::Rename { from, to } => weir_cluster::Change::Rename {
            from: from.clone(),
            to: to.clone(),
        },
    }
}

fn from_cluster(c: weir_cluster::Change) -> Change {
    match c {
        weir_cluster::Change::Write { path } => Change::Write { path },
        weir_cluster::Change::Delete { path } => Change::Delete { path },
        weir_cluster::Change::Rename { from, to } => Change::Rename { from, to },
    }
}
