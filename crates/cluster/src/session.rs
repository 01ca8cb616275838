//! The background task that keeps this daemon alive in the cluster: it holds
//! a lease, registers the member record under it, renews it, and publishes
//! queued invalidation events under it. When the daemon dies the lease runs
//! out and etcd deletes its keys, so nothing it wrote outlives it.
//!
//! On any failure it backs off and starts over, reusing the lease if etcd
//! still has it (after an etcd restart, etcd restores leases) and granting a
//! new one if not (this node was cut off longer than the TTL).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff};
use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use weir_metrics::names;

use crate::events::EventBatch;
use crate::{ClusterError, Shared};

/// Keeps the lease and publishes until the task is aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = shared.backoff().build();
    loop {
        let e = match hold_lease(&shared, &mut backoff).await {
            Ok(never) => match never {},
            Err(e) => e,
        };
        tracing::warn!(error = %e, "cluster membership interrupted; retrying");
        shared.status.error(&e.to_string());
        let wait = backoff.next().unwrap_or(shared.cfg.reconnect_max);
        tokio::time::sleep(wait).await;
    }
}

/// Gets a lease, registers, then renews and publishes until something fails.
async fn hold_lease(
    shared: &Shared,
    backoff: &mut ExponentialBackoff,
) -> Result<std::convert::Infallible, ClusterError> {
    let lease = current_or_new_lease(shared).await?;
    register(shared, lease).await?;
    let mut lease_client = shared.admin.client().lease_client();
    let (mut keeper, mut responses) = shared
        .admin
        .call("keep the lease alive", lease_client.keep_alive(lease))
        .await?;
    *backoff = shared.backoff().build();
    let mut renew = tokio::time::interval(renew_interval(shared.cfg.lease_ttl));
    loop {
        tokio::select! {
            _ = renew.tick() => renew_once(shared, &mut keeper, &mut responses).await?,
            _ = shared.outbox_ready.notified() => publish_pending(shared, lease).await?,
        }
        // Publish what waits even if the notification came while busy.
        if !shared.outbox.lock().is_empty() {
            publish_pending(shared, lease).await?;
        }
    }
}

/// A third of the TTL: two renewals may fail before the lease runs out.
fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(500))
}

/// The lease from before if etcd still has it, else a new one.
async fn current_or_new_lease(shared: &Shared) -> Result<i64, ClusterError> {
    let mut lease_client = shared.admin.client().lease_client();
    let previous = *shared.lease.lock();
    if let Some(id) = previous {
        let ttl = shared
            .admin
            .call("check the lease", lease_client.time_to_live(id, None))
            .await?
            .ttl();
        if ttl > 0 {
            return Ok(id);
        }
        tracing::warn!(
            lease = id,
            "our etcd lease expired while we were cut off; registering again"
        );
    }
    let granted = shared
        .admin
        .call(
            "grant a lease",
            lease_client.grant(shared.cfg.lease_ttl_secs(), None),
        )
        .await?;
    *shared.lease.lock() = Some(granted.id());
    Ok(granted.id())
}

/// Writes the member record under the lease. The last daemon to register a
/// node id owns it; a different holder is named in the log.
async fn register(shared: &Shared, lease: i64) -> Result<(), ClusterError> {
    let key = shared.admin.keys().member(&shared.me.node_id);
    let value = serde_json::to_string(&shared.me).unwrap_or_default();
    let mut kv = shared.admin.client().kv_client();
    let resp = shared
        .admin
        .call(
            "register this node",
            kv.put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease).with_prev_key()),
            ),
        )
        .await?;
    if let Some(prev) = resp.prev_key()
        && let Ok(prev) = serde_json::from_slice::<crate::Member>(prev.value())
        && prev.instance != shared.me.instance
    {
        tracing::warn!(
            node = %shared.me.node_id,
            previous_host = %prev.hostname,
            previous_pid = prev.pid,
            "node id was registered by another daemon; it is ours now"
        );
    }
    tracing::info!(node = %shared.me.node_id, lease, "registered in the cluster");
    Ok(())
}

/// Sends one renewal and checks that etcd still has the lease.
async fn renew_once(
    shared: &Shared,
    keeper: &mut LeaseKeeper,
    responses: &mut LeaseKeepAliveStream,
) -> Result<(), ClusterError> {
    shared
        .admin
        .call("renew the lease", async {
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await?
        .filter(|r| r.ttl() > 0)
        .map(|_| ())
        .ok_or_else(|| ClusterError::Unavailable {
            op: "renew the lease",
            reason: "etcd no longer has our lease".into(),
        })
}

/// Sends every waiting change, batch by batch. A batch that fails goes back
/// to the front of the queue.
async fn publish_pending(shared: &Shared, lease: i64) -> Result<(), ClusterError> {
    loop {
        let Some((changes, overflow)) = shared.outbox.lock().take() else {
            return Ok(());
        };
        let count = changes.len();
        let batch = EventBatch {
            origin: shared.me.node_id.clone(),
            instance: shared.me.instance.clone(),
            changes,
            overflow,
        };
        let value = serde_json::to_string(&batch).unwrap_or_default();
        let key = shared.admin.keys().events(&shared.me.instance);
        let mut kv = shared.admin.client().kv_client();
        let sent = shared
            .admin
            .call(
                "publish events",
                kv.put(key, value, Some(PutOptions::new().with_lease(lease))),
            )
            .await;
        if let Err(e) = sent {
            shared.outbox.lock().put_back(batch.changes, batch.overflow);
            return Err(e);
        }
        shared.outbox.lock().sent();
        metrics::counter!(names::CLUSTER_EVENTS_PUBLISHED).increment(count as u64);
        shared.published.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_leave_room_for_two_failures() {
        assert_eq!(
            renew_interval(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        assert_eq!(
            renew_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }
}
