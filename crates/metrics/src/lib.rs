//! weir's metrics: every metric name as a constant in one place, their
//! descriptions, and the Prometheus scrape endpoint.
//!
//! Crates record through the `metrics` facade with these names; nothing is
//! exported until a binary calls [`serve`] (a plain endpoint),
//! [`serve_with`] (an endpoint that appends another process's metrics) or
//! [`install_recorder`] (render on demand). `docs/metrics.md` lists the
//! same names, and a test keeps the two in step.

use std::net::SocketAddr;

pub use metrics::{counter, gauge, histogram};
pub use metrics_exporter_prometheus::PrometheusHandle;

mod endpoint;

pub use endpoint::{Extra, install_recorder, keep_up, serve_with};

#[cfg(feature = "testing")]
pub mod testing;

/// Metric names. Labels are given in each constant's documentation.
pub mod names {
    /// FUSE requests answered, by `op`.
    pub const FUSE_REQUESTS: &str = "weir_fuse_requests_total";
    /// FUSE requests answered with an error, by `op` and `errno`.
    pub const FUSE_ERRORS: &str = "weir_fuse_errors_total";
    /// Seconds to answer a FUSE request, by `op`.
    pub const FUSE_SECONDS: &str = "weir_fuse_request_duration_seconds";
    /// FUSE requests being handled right now.
    pub const FUSE_INFLIGHT: &str = "weir_fuse_requests_in_flight";

    /// Pages served from the page cache.
    pub const CACHE_HITS: &str = "weir_cache_hits_total";
    /// Pages asked of the page cache and not found.
    pub const CACHE_MISSES: &str = "weir_cache_misses_total";
    /// Bytes served from the page cache.
    pub const CACHE_HIT_BYTES: &str = "weir_cache_hit_bytes_total";
    /// Pages evicted to stay within capacity.
    pub const CACHE_EVICTIONS: &str = "weir_cache_evictions_total";
    /// Cached pages that failed their checksum and were refetched.
    pub const CACHE_CORRUPTIONS: &str = "weir_cache_corruptions_total";
    /// Bytes of page data on disk.
    pub const CACHE_USED_BYTES: &str = "weir_cache_used_bytes";
    /// The page cache's capacity in bytes.
    pub const CACHE_CAPACITY_BYTES: &str = "weir_cache_capacity_bytes";

    /// Requests sent to under-storage, by `op` and `scheme`.
    pub const UFS_REQUESTS: &str = "weir_ufs_requests_total";
    /// Under-storage requests that failed, by `op` and `scheme`.
    pub const UFS_ERRORS: &str = "weir_ufs_errors_total";
    /// Bytes moved to or from under-storage, by `op` (`read`, `upload`) and `scheme`.
    pub const UFS_BYTES: &str = "weir_ufs_bytes_total";
    /// Seconds per under-storage request, by `op` and `scheme`.
    pub const UFS_SECONDS: &str = "weir_ufs_request_duration_seconds";

    /// FUSE sessions this process supervises.
    pub const SESSIONS: &str = "weir_sessions";
    /// CSI publications (bind mounts into pods) this node holds.
    pub const PUBLICATIONS: &str = "weir_publications";
    /// Recoveries of a FUSE session, by `layer` (`takeover`, `remount`) and
    /// `outcome` (`ok`, `failed`).
    pub const RECOVERIES: &str = "weir_recoveries_total";
    /// Seconds from a daemon's death to its replacement serving, for takeovers.
    pub const RECOVERY_PAUSE_SECONDS: &str = "weir_recovery_pause_seconds";

    /// 1 while the cluster client's watch on etcd is live, else 0.
    pub const CLUSTER_ETCD_CONNECTED: &str = "weir_cluster_etcd_connected";
    /// Nodes registered in the cluster, as this node sees them.
    pub const CLUSTER_MEMBERS: &str = "weir_cluster_members";
    /// Entries in the mount table being served.
    pub const CLUSTER_MOUNTS: &str = "weir_cluster_mounts";
    /// Path changes this node announced to the cluster.
    pub const CLUSTER_EVENTS_PUBLISHED: &str = "weir_cluster_events_published_total";
    /// Path changes received from other nodes.
    pub const CLUSTER_EVENTS_RECEIVED: &str = "weir_cluster_events_received_total";
    /// Path changes this node could not announce one by one (etcd out of reach
    /// too long) and replaced by one "drop everything" announcement.
    pub const CLUSTER_EVENTS_DROPPED: &str = "weir_cluster_events_dropped_total";
    /// Signals that this node may have missed changes, by `reason`
    /// (`reconnected`, `compacted`, `peer_overflow`, `lagged`).
    pub const CLUSTER_MISSED_EVENTS: &str = "weir_cluster_missed_events_total";
}

/// Why the metrics endpoint (or the recorder) could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics{}: {reason}", addr.map(|a| format!(" on {a}")).unwrap_or_default())]
pub struct ServeError {
    addr: Option<SocketAddr>,
    reason: String,
}

/// Serves every metric recorded in this process on `addr` (any path),
/// in Prometheus text format, and registers the descriptions.
pub fn serve(addr: SocketAddr) -> Result<(), ServeError> {
    // Bind first: the exporter would otherwise report a taken port only in
    // its own background thread, after we claimed success.
    let probe = std::net::TcpListener::bind(addr).map_err(|e| ServeError {
        addr: Some(addr),
        reason: e.to_string(),
    })?;
    drop(probe);
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| ServeError {
            addr: Some(addr),
            reason: e.to_string(),
        })?;
    describe();
    Ok(())
}

/// Registers the help text of every metric.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(FUSE_REQUESTS, "FUSE requests answered, by op");
    describe_counter!(
        FUSE_ERRORS,
        "FUSE requests answered with an error, by op and errno"
    );
    describe_histogram!(FUSE_SECONDS, "Seconds to answer a FUSE request, by op");
    describe_gauge!(FUSE_INFLIGHT, "FUSE requests being handled right now");
    describe_counter!(CACHE_HITS, "Pages served from the page cache");
    describe_counter!(CACHE_MISSES, "Pages asked of the page cache and not found");
    describe_counter!(CACHE_HIT_BYTES, "Bytes served from the page cache");
    describe_counter!(CACHE_EVICTIONS, "Pages evicted to stay within capacity");
    describe_counter!(CACHE_CORRUPTIONS, "Cached pages that failed their checksum");
    describe_gauge!(CACHE_USED_BYTES, "Bytes of page data on disk");
    describe_gauge!(CACHE_CAPACITY_BYTES, "The page cache's capacity in bytes");
    describe_counter!(
        UFS_REQUESTS,
        "Requests sent to under-storage, by op and scheme"
    );
    describe_counter!(
        UFS_ERRORS,
        "Under-storage requests that failed, by op and scheme"
    );
    describe_counter!(
        UFS_BYTES,
        "Bytes moved to or from under-storage, by op and scheme"
    );
    describe_histogram!(
        UFS_SECONDS,
        "Seconds per under-storage request, by op and scheme"
    );
    describe_gauge!(SESSIONS, "FUSE sessions this process supervises");
    describe_gauge!(PUBLICATIONS, "CSI publications this node holds");
    describe_counter!(
        RECOVERIES,
        "Recoveries of a FUSE session, by layer and outcome"
    );
    describe_histogram!(
        RECOVERY_PAUSE_SECONDS,
        "Seconds from a daemon's death to its replacement serving"
    );
    describe_gauge!(
        CLUSTER_ETCD_CONNECTED,
        "1 while the watch on etcd is live, else 0"
    );
    describe_gauge!(CLUSTER_MEMBERS, "Nodes registered in the cluster");
    describe_gauge!(CLUSTER_MOUNTS, "Entries in the mount table being served");
    describe_counter!(
        CLUSTER_EVENTS_PUBLISHED,
        "Path changes this node announced to the cluster"
    );
    describe_counter!(
        CLUSTER_EVENTS_RECEIVED,
        "Path changes received from other nodes"
    );
    describe_counter!(
        CLUSTER_EVENTS_DROPPED,
        "Path changes replaced by one drop-everything announcement"
    );
    describe_counter!(
        CLUSTER_MISSED_EVENTS,
        "Signals that this node may have missed changes, by reason"
    );
}
