//! weir's cluster mode, on etcd.
//!
//! Daemons that name the same cluster share three things through etcd
//! (`docs/cluster.md` has the key layout):
//!
//! - **The mount table.** [`Admin::mount`] and [`Admin::umount`] change it;
//!   every [`Cluster`] follows it with a watch and hands out the new full
//!   table ([`Cluster::watch_table`]) within moments.
//! - **Membership.** Each [`Cluster`] registers a [`Member`] record under a
//!   lease that it renews; when the daemon dies the lease runs out and the
//!   record disappears.
//! - **Invalidation events.** [`Cluster::publish`] announces a change made
//!   through weir; every other daemon receives it from
//!   [`Cluster::subscribe`], together with an explicit
//!   [`Notice::MissedEvents`] whenever it may have missed some.
//!
//! If etcd cannot be reached, the last known table keeps being served,
//! [`Cluster::status`] says since when, and the client reconnects with
//! backoff and resumes its watch where it stopped.
//!
//! ```no_run
//! # async fn daemon() -> Result<(), weir_cluster::ClusterError> {
//! use std::time::Duration;
//! use weir_cluster::{Change, Cluster, ClusterConfig, Notice};
//!
//! let cluster = Cluster::start(ClusterConfig::new(["http://127.0.0.1:2379"], "prod", "node-1")).await?;
//! let table = cluster.wait_for_table(Duration::from_secs(10)).await?;
//! println!("{} mounts at revision {}", table.specs.len(), table.revision);
//! cluster.publish(Change::Write { path: "/data/new.bin".into() })?;
//! let mut notices = cluster.subscribe();
//! while let Some(notice) = notices.next().await {
//!     match notice {
//!         Notice::Invalidate(i) => println!("{} changed {:?}", i.origin, i.change.paths()),
//!         Notice::MissedEvents(why) => println!("drop every cached stat: {why:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```

mod admin;
mod config;
mod error;
mod events;
mod keys;
mod member;
mod session;
mod status;
mod table;
mod watcher;

use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBuilder;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

pub use admin::Admin;
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use events::{Change, Invalidation, MissedReason, Notice, Subscription};
pub use member::Member;
pub use status::{LinkState, Status};
pub use table::{ClusterStore, TableSnapshot, TableSource};

use events::Outbox;
use status::StatusCell;
use table::TableCell;

/// Notices kept for a slow subscriber before it is told it lagged.
const NOTICE_BUFFER: usize = 4096;

/// What the background tasks and the handle share.
struct Shared {
    cfg: ClusterConfig,
    admin: Admin,
    me: Member,
    status: Arc<StatusCell>,
    table: TableCell,
    notices: broadcast::Sender<Notice>,
    outbox: Mutex<Outbox>,
    /// A change was queued.
    outbox_ready: Notify,
    /// A batch reached etcd.
    published: Notify,
    /// The lease this daemon holds, once it has one.
    lease: Mutex<Option<i64>>,
}

impl Shared {
    /// Reconnect delays: doubling from `reconnect_min` to `reconnect_max`,
    /// with jitter so a fleet does not reconnect in lockstep, forever.
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.cfg.reconnect_min)
            .with_max_delay(self.cfg.reconnect_max)
            .with_jitter()
            .without_max_times()
    }
}

/// One daemon's membership in a cluster, with its background tasks: the
/// watcher that follows the table and the events, and the session that
/// holds the lease and publishes. Dropping it stops both (the lease then
/// runs out); [`Cluster::shutdown`] or [`Cluster::leave`] also leaves the
/// cluster at once.
pub struct Cluster {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster", &self.shared.cfg.cluster)
            .field("node", &self.shared.me.node_id)
            .field("status", &self.shared.status.get())
            .finish()
    }
}

impl Cluster {
    /// Joins the cluster: starts following etcd and registering this node in
    /// the background, and returns at once. Fails only on bad settings; an
    /// unreachable etcd shows in [`Cluster::status`] and is retried.
    /// Must be called inside a tokio runtime.
    pub async fn start(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let admin = Admin::connect(&cfg).await?;
        let me = Member::this_process(&cfg.node_id, &cfg.version);
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(cfg.max_pending_changes)),
            cfg,
            admin,
            me,
            status: Arc::new(StatusCell::new()),
            table: TableCell::new(None),
            notices: broadcast::channel(NOTICE_BUFFER).0,
            outbox_ready: Notify::new(),
            published: Notify::new(),
            lease: Mutex::new(None),
        });
        let tasks = vec![
            tokio::spawn(watcher::run(shared.clone())),
            tokio::spawn(session::run(shared.clone())),
        ];
        Ok(Cluster {
            shared,
            tasks: Mutex::new(tasks),
        })
    }

    /// The settings it was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.cfg
    }

    /// This daemon's member record.
    pub fn me(&self) -> &Member {
        &self.shared.me
    }

    /// The one-shot request handle (mount, umount, members, ...).
    pub fn admin(&self) -> &Admin {
        &self.shared.admin
    }

    /// The link's health now.
    pub fn status(&self) -> Status {
        self.shared.status.get()
    }

    /// The link's health, to await changes of.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// The last known mount table, if any has been seen yet.
    pub fn table(&self) -> Option<Arc<TableSnapshot>> {
        self.shared.table.borrow().clone()
    }

    /// The table, to await changes of: each change is a new full table.
    /// A slow reader skips to the newest.
    pub fn watch_table(&self) -> watch::Receiver<Option<Arc<TableSnapshot>>> {
        self.shared.table.subscribe()
    }

    /// A [`weir_namespace::MountStore`] serving the last known table.
    pub fn store(&self) -> ClusterStore {
        ClusterStore::new(&self.shared.table, self.shared.status.clone())
    }

    /// Waits until a table is known (from etcd, or from the table cache file
    /// if etcd is down), for at most `limit`.
    pub async fn wait_for_table(
        &self,
        limit: Duration,
    ) -> Result<Arc<TableSnapshot>, ClusterError> {
        let mut rx = self.shared.table.subscribe();
        let wait = rx.wait_for(Option::is_some);
        match tokio::time::timeout(limit, wait).await {
            // `wait_for` only returns once the table is `Some`.
            Ok(Ok(table)) => table.clone().ok_or(ClusterError::Closed),
            Ok(Err(_)) => Err(ClusterError::Closed),
            Err(_) => Err(ClusterError::NoTable {
                waited: limit,
                reason: self
                    .status()
                    .last_error
                    .unwrap_or_else(|| "etcd did not answer".into()),
            }),
        }
    }

    /// Queues an announcement of a change made through weir; it is sent to
    /// etcd in the background, batched with others, and kept while etcd is
    /// unreachable. Fails only on a path that is not a clean namespace path.
    pub fn publish(&self, change: Change) -> Result<(), ClusterError> {
        let change = change.normalised()?;
        self.shared.outbox.lock().push(change);
        self.shared.outbox_ready.notify_one();
        Ok(())
    }

    /// Waits until every change published so far has reached etcd, for at
    /// most `limit`.
    pub async fn flush(&self, limit: Duration) -> Result<(), ClusterError> {
        let drained = async {
            loop {
                let sent = self.shared.published.notified();
                if self.shared.outbox.lock().is_idle() {
                    return;
                }
                sent.await;
            }
        };
        tokio::time::timeout(limit, drained)
            .await
            .map_err(|_| ClusterError::Unavailable {
                op: "publish events",
                reason: format!("changes still unsent after {limit:?}"),
            })
    }

    /// Notices of changes made by other nodes, and of missed ones. Only
    /// notices after this call are delivered.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.shared.notices.subscribe())
    }

    /// Leaves the cluster: sends what is still queued (briefly), revokes the
    /// lease so this node disappears from the members at once, and stops the
    /// background tasks.
    pub async fn shutdown(self) {
        self.leave().await;
    }

    /// [`Cluster::shutdown`] for a cluster that is shared (an `Arc`): after
    /// it, publishing queues changes nobody sends and the table no longer
    /// follows etcd.
    pub async fn leave(&self) {
        let limit = self.shared.cfg.request_timeout;
        if let Err(e) = self.flush(limit).await {
            tracing::warn!(error = %e, "leaving the cluster with unsent changes");
        }
        self.stop_tasks();
        let lease = self.shared.lease.lock().take();
        if let Some(id) = lease {
            let mut leases = self.shared.admin.client().lease_client();
            if let Err(e) = self
                .shared
                .admin
                .call("revoke the lease", leases.revoke(id))
                .await
            {
                tracing::warn!(error = %e, "could not revoke our lease; it will expire");
            }
        }
    }

    fn stop_tasks(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}
