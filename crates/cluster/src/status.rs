//! The client's view of its link to etcd, for logs, metrics and `weir fs`:
//! connected or not since when, the last error, and the last revision seen.

use std::fmt;
use std::time::SystemTime;

use tokio::sync::watch;
use weir_metrics::names;

/// Whether the client currently follows etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not yet connected since start.
    Connecting,
    /// The watch is live: changes arrive as they happen.
    Connected,
    /// The watch broke; the last known table is being served.
    Disconnected,
}

/// A snapshot of the link's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Connected, disconnected, or still connecting.
    pub state: LinkState,
    /// When `state` last changed.
    pub since: SystemTime,
    /// The most recent error talking to etcd, kept after recovery.
    pub last_error: Option<String>,
    /// The etcd revision everything seen so far is current to (0: none yet).
    pub revision: i64,
}

impl Status {
    fn starting() -> Self {
        Status {
            state: LinkState::Connecting,
            since: SystemTime::now(),
            last_error: None,
            revision: 0,
        }
    }

    /// Whether the watch is live.
    pub fn is_connected(&self) -> bool {
        self.state == LinkState::Connected
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = humantime::format_rfc3339_seconds(self.since);
        match self.state {
            LinkState::Connecting => write!(f, "connecting to etcd since {since}")?,
            LinkState::Connected => write!(f, "connected to etcd since {since}")?,
            LinkState::Disconnected => write!(
                f,
                "disconnected from etcd since {since}, serving the last known mount table"
            )?,
        }
        write!(f, " (revision {})", self.revision)?;
        if let Some(e) = &self.last_error {
            write!(f, "; last error: {e}")?;
        }
        Ok(())
    }
}

/// The shared, watchable status. Every change is also logged once and
/// mirrored into the `weir_cluster_etcd_connected` gauge.
#[derive(Debug)]
pub(crate) struct StatusCell {
    tx: watch::Sender<Status>,
}

impl StatusCell {
    pub(crate) fn new() -> Self {
        metrics::gauge!(names::CLUSTER_ETCD_CONNECTED).set(0.0);
        StatusCell {
            tx: watch::Sender::new(Status::starting()),
        }
    }

    pub(crate) fn get(&self) -> Status {
        self.tx.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    /// The watch is live again.
    pub(crate) fn connected(&self) {
        self.tx.send_if_modified(|s| {
            if s.state == LinkState::Connected {
                return false;
            }
            tracing::info!(revision = s.revision, "connected to etcd");
            s.state = LinkState::Connected;
            s.since = SystemTime::now();
            true
        });
        metrics::gauge!(names::CLUSTER_ETCD_CONNECTED).set(1.0);
    }

    /// The watch broke with `error`. Returns when the link went down, which
    /// is earlier than now if it was already down.
    pub(crate) fn disconnected(&self, error: &str) -> SystemTime {
        let mut since = SystemTime::now();
        self.tx.send_modify(|s| {
            if s.state == LinkState::Connected {
                tracing::warn!(error, "lost etcd; serving the last known mount table");
                s.state = LinkState::Disconnected;
                s.since = since;
            } else if s.state == LinkState::Disconnected {
                since = s.since;
                tracing::debug!(error, "etcd still unreachable");
            } else if s.last_error.is_none() {
                // Once, not on every retry: the status carries the rest.
                tracing::warn!(error, "cannot reach etcd yet; retrying");
            }
            s.last_error = Some(error.to_string());
        });
        metrics::gauge!(names::CLUSTER_ETCD_CONNECTED).set(0.0);
        since
    }

    /// Records an error that did not break the watch (a failed keep-alive
    /// or publish, say).
    pub(crate) fn error(&self, error: &str) {
        self.tx
            .send_modify(|s| s.last_error = Some(error.to_string()));
    }

    /// Everything up to `revision` has been seen.
    pub(crate) fn revision(&self, revision: i64) {
        self.tx.send_if_modified(|s| {
            if revision > s.revision {
                s.revision = revision;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_keep_the_outage_start_and_the_last_error() {
        let cell = StatusCell::new();
        assert_eq!(cell.get().state, LinkState::Connecting);
        cell.connected();
        cell.revision(7);
        cell.revision(3);
        assert_eq!(cell.get().revision, 7, "revisions never go back");
        let down = cell.disconnected("boom");
        let again = cell.disconnected("still down");
        assert_eq!(down, again, "a longer outage keeps its start");
        let s = cell.get();
        assert_eq!(s.state, LinkState::Disconnected);
        assert_eq!(s.last_error.as_deref(), Some("still down"));
        let text = s.to_string();
        assert!(
            text.contains("disconnected") && text.contains("still down"),
            "{text}"
        );
        cell.connected();
        assert!(cell.get().is_connected());
        assert_eq!(cell.get().last_error.as_deref(), Some("still down"));
    }
}
