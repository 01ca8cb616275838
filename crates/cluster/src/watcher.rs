//! The background task that follows etcd: it loads the cluster's state,
//! watches the cluster prefix from that revision on, and turns what it sees
//! into new table snapshots, invalidation notices and status changes. When
//! the watch breaks it keeps the last table, backs off, and resumes from the
//! last revision it saw; if etcd compacted that away, it reloads in full.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use backon::{BackoffBuilder, ExponentialBackoff};
use etcd_client::{EventType, WatchOptions, WatchResponse};
use weir_metrics::names;

use crate::events::{self, EventBatch, MissedReason, Notice};
use crate::keys::KeyKind;
use crate::table::{self, Specs, TableSource};
use crate::{ClusterError, Shared};

/// Where the watcher is.
struct Follow {
    specs: Specs,
    members: BTreeSet<String>,
    /// Everything up to here has been applied.
    revision: i64,
    /// The state must be read in full before watching (start, compaction).
    reload: bool,
    /// When the link went down, while it is down.
    offline_since: Option<SystemTime>,
}

/// How one watch session ended.
enum End {
    /// The stream broke or etcd could not be reached.
    Broken(ClusterError),
    /// etcd no longer has the history to resume from.
    Compacted(i64),
}

/// Follows etcd until the task is aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut follow = Follow {
        specs: Specs::new(),
        members: BTreeSet::new(),
        revision: 0,
        reload: true,
        offline_since: None,
    };
    let mut backoff = shared.backoff().build();
    loop {
        let end = session(&shared, &mut follow, &mut backoff).await;
        match end {
            End::Compacted(compact_revision) => {
                tracing::warn!(
                    compact_revision,
                    seen = follow.revision,
                    "etcd compacted past our revision; reloading the cluster state"
                );
                follow.reload = true;
                missed(&shared, MissedReason::Compacted { compact_revision });
            }
            End::Broken(e) => {
                let since = shared.status.disconnected(&e.to_string());
                follow.offline_since.get_or_insert(since);
                if shared.table.borrow().is_none() {
                    fall_back_to_cache_file(&shared).await;
                }
                let wait = backoff.next().unwrap_or(shared.cfg.reconnect_max);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One load-and-watch session, until the watch ends.
async fn session(shared: &Shared, follow: &mut Follow, backoff: &mut ExponentialBackoff) -> End {
    if !follow.reload && follow.offline_since.is_some() {
        match rewound(shared, follow.revision).await {
            Ok(rewound) => follow.reload = rewound,
            Err(e) => return End::Broken(e),
        }
    }
    if follow.reload {
        match shared.admin.load_state().await {
            Ok(state) => {
                follow.specs = state.specs;
                follow.members = state.members;
                follow.revision = state.revision;
                follow.reload = false;
                publish_table(shared, follow).await;
                members_gauge(follow);
                shared.status.revision(follow.revision);
            }
            Err(e) => return End::Broken(e),
        }
    }
    let options = WatchOptions::new()
        .with_prefix()
        .with_progress_notify()
        .with_start_revision(follow.revision + 1);
    let mut watch_client = shared.admin.client().watch_client();
    let mut stream = match shared
        .admin
        .call(
            "watch",
            watch_client.watch(shared.admin.keys().root(), Some(options)),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return End::Broken(e),
    };
    loop {
        let msg = match stream.message().await {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                return End::Broken(ClusterError::Unavailable {
                    op: "watch",
                    reason: "etcd closed the watch".into(),
                });
            }
            Err(e) => return End::Broken(ClusterError::from_etcd("watch", e)),
        };
        if msg.canceled() {
            if msg.compact_revision() > 0 {
                return End::Compacted(msg.compact_revision());
            }
            // Asking again from the same revision would be refused again (it
            // may be ahead of an etcd restored from an older backup): start
            // over from a full read.
            follow.reload = true;
            return End::Broken(ClusterError::Unavailable {
                op: "watch",
                reason: format!("etcd cancelled the watch: {}", msg.cancel_reason()),
            });
        }
        if msg.created() {
            // The watch is live from the revision we asked for: whatever
            // etcd holds after it will arrive in order.
            *backoff = shared.backoff().build();
            on_connected(shared, follow);
        }
        apply(shared, follow, &msg).await;
    }
}

/// Whether etcd is now behind the revision we saw: it was restored from a
/// backup or wiped. etcd would hold a watch from our revision until its
/// revisions caught up, silently, so the state must be read afresh.
async fn rewound(shared: &Shared, seen: i64) -> Result<bool, ClusterError> {
    let now = shared.admin.current_revision().await?;
    if now < seen {
        tracing::warn!(
            seen,
            now,
            "etcd's revision went back (restored or wiped?); reloading the cluster state"
        );
    }
    Ok(now < seen)
}

/// The link is up again; tell subscribers what they may have missed.
fn on_connected(shared: &Shared, follow: &mut Follow) {
    shared.status.connected();
    if let Some(offline_since) = follow.offline_since.take() {
        missed(shared, MissedReason::Reconnected { offline_since });
    }
}

/// Applies one watch response.
async fn apply(shared: &Shared, follow: &mut Follow, msg: &WatchResponse) {
    let mut table_changed = false;
    let mut members_changed = false;
    for ev in msg.events() {
        let Some(kv) = ev.kv() else { continue };
        let Ok(key) = kv.key_str() else { continue };
        let put = ev.event_type() == EventType::Put;
        match shared.admin.keys().classify(key) {
            KeyKind::Mount(path) => {
                table_changed |= apply_mount(&mut follow.specs, path, put.then(|| kv.value()));
            }
            KeyKind::Member(node) => {
                members_changed |= if put {
                    follow.members.insert(node.to_string())
                } else {
                    follow.members.remove(node)
                };
            }
            KeyKind::Events(instance) if put && instance != shared.me.instance => {
                receive_batch(shared, key, kv.value(), kv.mod_revision());
            }
            KeyKind::Events(_) | KeyKind::Other => {}
        }
        follow.revision = follow.revision.max(kv.mod_revision());
    }
    if msg.events().is_empty()
        && !msg.created()
        && let Some(h) = msg.header()
    {
        // A progress notification: nothing happened up to this revision.
        follow.revision = follow.revision.max(h.revision());
    }
    if table_changed {
        publish_table(shared, follow).await;
    }
    if members_changed {
        members_gauge(follow);
    }
    shared.status.revision(follow.revision);
}

/// Applies one mount key change; `value` is `None` for a delete. Returns
/// whether the table changed.
fn apply_mount(specs: &mut Specs, path: &str, value: Option<&[u8]>) -> bool {
    let Some(value) = value else {
        return specs.remove(path).is_some();
    };
    match table::decode(path, value) {
        Ok(spec) => specs.insert(spec.path.clone(), spec.clone()) != Some(spec),
        Err(e) => {
            tracing::warn!(path, error = %e, "ignoring a bad mount entry in etcd");
            false
        }
    }
}

/// Hands another daemon's batch to the subscribers.
fn receive_batch(shared: &Shared, key: &str, value: &[u8], revision: i64) {
    let batch: EventBatch = match serde_json::from_slice(value) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring an unreadable event batch");
            return;
        }
    };
    let notices = events::notices_of(batch, revision);
    for notice in notices {
        match &notice {
            Notice::Invalidate(_) => {
                metrics::counter!(names::CLUSTER_EVENTS_RECEIVED).increment(1);
            }
            Notice::MissedEvents(reason) => {
                metrics::counter!(names::CLUSTER_MISSED_EVENTS, "reason" => reason.label())
                    .increment(1);
            }
        }
        // No subscriber is not an error: nobody caches yet.
        let _ = shared.notices.send(notice);
    }
}

/// Sends the missed-events signal to every subscriber.
fn missed(shared: &Shared, reason: MissedReason) {
    tracing::info!(
        reason = reason.label(),
        "changes may have been missed; metadata caches should be dropped"
    );
    metrics::counter!(names::CLUSTER_MISSED_EVENTS, "reason" => reason.label()).increment(1);
    let _ = shared.notices.send(Notice::MissedEvents(reason));
}

/// Makes the current specs the served table, and keeps the cache file.
async fn publish_table(shared: &Shared, follow: &Follow) {
    let snap = Arc::new(table::snapshot(
        &follow.specs,
        follow.revision,
        TableSource::Etcd,
    ));
    metrics::gauge!(names::CLUSTER_MOUNTS).set(snap.specs.len() as f64);
    let unchanged = shared
        .table
        .borrow()
        .as_ref()
        .is_some_and(|t| t.specs == snap.specs && t.source == TableSource::Etcd);
    if unchanged {
        // Same table at a newer revision (a reload after an outage): keep the
        // old snapshot so watchers do not rebuild for nothing.
        return;
    }
    tracing::info!(
        mounts = snap.specs.len(),
        revision = snap.revision,
        "mount table updated"
    );
    shared.table.send_replace(Some(snap.clone()));
    if let Some(path) = &shared.cfg.table_cache
        && let Err(e) = table::save_cache(path, &snap).await
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the mount table cache file");
    }
}

/// With no table yet and etcd out of reach, serve the table cache file.
async fn fall_back_to_cache_file(shared: &Shared) {
    let Some(path) = &shared.cfg.table_cache else {
        return;
    };
    match table::load_cache(path).await {
        Ok(snap) => {
            tracing::warn!(
                path = %path.display(),
                revision = snap.revision,
                "etcd unreachable at start; serving the mount table cache file"
            );
            metrics::gauge!(names::CLUSTER_MOUNTS).set(snap.specs.len() as f64);
            shared.table.send_replace(Some(Arc::new(snap)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the mount table cache file");
        }
    }
}

fn members_gauge(follow: &Follow) {
    metrics::gauge!(names::CLUSTER_MEMBERS).set(follow.members.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_namespace::MountSpec;

    #[test]
    fn mount_changes_report_whether_the_table_changed() {
        let mut specs = Specs::new();
        let spec = MountSpec {
            path: "/a".into(),
            ufs: "s3://b".into(),
            options: Default::default(),
        };
        let json = table::encode(&spec);
        assert!(apply_mount(&mut specs, "/a", Some(json.as_bytes())));
        assert!(
            !apply_mount(&mut specs, "/a", Some(json.as_bytes())),
            "same value again"
        );
        assert!(!apply_mount(&mut specs, "/b", Some(b"junk")));
        assert!(apply_mount(&mut specs, "/a", None));
        assert!(!apply_mount(&mut specs, "/a", None));
    }
}
