//! The one error type of cluster mode. Variants tell a user what to do:
//! fix the input, pick another path, or wait for etcd.

use std::time::Duration;

/// A cluster-mode failure.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster configuration cannot work.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// A mount spec was refused before anything was written.
    #[error("mount {path:?}: {reason}")]
    InvalidMount {
        /// The mount path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path in an invalidation event is not a clean namespace path.
    #[error("event path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another mount already has this path.
    #[error("{path} is already mounted (from {ufs}); umount it first")]
    AlreadyMounted {
        /// The normalised mount path.
        path: String,
        /// What is mounted there now (credentials removed).
        ufs: String,
    },
    /// Nothing is mounted at this path.
    #[error("nothing is mounted at {0}")]
    NotMounted(String),
    /// etcd did not answer, or answered that it cannot serve now.
    #[error("etcd is unavailable ({op}): {reason}")]
    Unavailable {
        /// What we were doing.
        op: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// etcd refused a request for another reason.
    #[error("etcd {op}: {source}")]
    Etcd {
        /// What we were doing.
        op: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// No mount table could be had in time, from etcd or the table cache.
    #[error("no mount table from etcd within {waited:?}: {reason}")]
    NoTable {
        /// How long we waited.
        waited: Duration,
        /// The last error seen.
        reason: String,
    },
    /// The cluster client was shut down.
    #[error("the cluster client is shut down")]
    Closed,
}

impl ClusterError {
    /// Classifies an etcd client error: connection trouble is
    /// [`ClusterError::Unavailable`], the rest is [`ClusterError::Etcd`].
    pub(crate) fn from_etcd(op: &'static str, e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let unavailable = match &e {
            E::TransportError(_) | E::IoError(_) | E::WatchError(_) => true,
            E::LeaseKeepAliveError(_) => true,
            E::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            _ => false,
        };
        if unavailable {
            ClusterError::Unavailable {
                op,
                reason: e.to_string(),
            }
        } else {
            ClusterError::Etcd { op, source: e }
        }
    }

    /// The error for a request that got no answer in `limit`.
    pub(crate) fn timed_out(op: &'static str, limit: Duration) -> Self {
        ClusterError::Unavailable {
            op,
            reason: format!("no answer within {limit:?}"),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClusterError::Unavailable { .. })
    }
}
