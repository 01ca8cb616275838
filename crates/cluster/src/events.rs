//! Cross-node invalidation events: what a daemon publishes after a change
//! made through weir, what every other daemon receives, and the explicit
//! "you may have missed events" signal.
//!
//! Changes wait in an [`Outbox`] until the publisher sends them as one
//! batch, so a burst (an untar) costs a few etcd writes, not one per file.
//! While etcd is unreachable they keep waiting; past a bound they collapse
//! into one overflow marker, which tells every receiver to drop its whole
//! metadata cache instead.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use weir_metrics::names;

use crate::ClusterError;

/// One change made through weir, by namespace path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// `path` was created or its content or attributes changed (a file
    /// written, a directory made).
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
        /// The old namespace path.
        from: String,
        /// The new namespace path.
        to: String,
    },
}

impl Change {
    /// The paths whose cached metadata (and their parents' listings) the
    /// change makes stale.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Change::Write { path } | Change::Delete { path } => vec![path],
            Change::Rename { from, to } => vec![from, to],
        }
    }

    /// The change with its paths normalised, or why it cannot be sent.
    pub(crate) fn normalised(self) -> Result<Change, ClusterError> {
        let norm = |p: String| {
            weir_namespace::normalize(&p).map_err(|e| ClusterError::InvalidPath {
                path: p.clone(),
                reason: e.to_string(),
            })
        };
        Ok(match self {
            Change::Write { path } => Change::Write { path: norm(path)? },
            Change::Delete { path } => Change::Delete { path: norm(path)? },
            Change::Rename { from, to } => Change::Rename {
                from: norm(from)?,
                to: norm(to)?,
            },
        })
    }
}

/// A change another node made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The node id that made it.
    pub origin: String,
    /// What changed.
    pub change: Change,
    /// The etcd revision it was published at.
    pub revision: i64,
}

/// Why this node may have missed changes. On any of them the safe answer is
/// to drop the whole metadata cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissedReason {
    /// The link to etcd came back after an outage. Nobody could publish
    /// while etcd was down, so changes made then were never announced.
    Reconnected {
        /// When the link went down.
        offline_since: SystemTime,
    },
    /// etcd compacted its history past the point this node had seen, so the
    /// watch could not resume; the table was reloaded in full.
    Compacted {
        /// The oldest revision etcd still has.
        compact_revision: i64,
    },
    /// A node could not publish its changes in time (etcd was out of its
    /// reach too long) and announced that it dropped them.
    PeerOverflow {
        /// The node that dropped changes.
        origin: String,
    },
    /// This subscriber fell behind and the oldest notices were discarded.
    Lagged {
        /// How many notices were lost.
        skipped: u64,
    },
}

impl MissedReason {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            MissedReason::Reconnected { .. } => "reconnected",
            MissedReason::Compacted { .. } => "compacted",
            MissedReason::PeerOverflow { .. } => "peer_overflow",
            MissedReason::Lagged { .. } => "lagged",
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Drop the cached metadata of these paths.
    Invalidate(Invalidation),
    /// Drop all cached metadata.
    MissedEvents(MissedReason),
}

/// The value of an events key: one batch from one daemon instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventBatch {
    /// Node id of the publisher.
    pub(crate) origin: String,
    /// The publishing daemon instance; a daemon skips its own batches.
    pub(crate) instance: String,
    /// The changes, oldest first.
    pub(crate) changes: Vec<Change>,
    /// The publisher dropped changes before these.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) overflow: bool,
}

/// The notices that one received batch means for this node.
pub(crate) fn notices_of(batch: EventBatch, revision: i64) -> Vec<Notice> {
    let mut out = Vec::with_capacity(batch.changes.len() + 1);
    if batch.overflow {
        out.push(Notice::MissedEvents(MissedReason::PeerOverflow {
            origin: batch.origin.clone(),
        }));
    }
    for change in batch.changes {
        out.push(Notice::Invalidate(Invalidation {
            origin: batch.origin.clone(),
            change,
            revision,
        }));
    }
    out
}

/// Most changes sent in one etcd write: 256 paths of at most 4 KiB stay
/// under etcd's default 1.5 MiB request limit.
pub(crate) const MAX_BATCH: usize = 256;

/// Changes waiting to be published.
#[derive(Debug)]
pub(crate) struct Outbox {
    changes: Vec<Change>,
    overflow: bool,
    capacity: usize,
    /// A taken batch is being sent.
    in_flight: bool,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Outbox {
            changes: Vec::new(),
            overflow: false,
            capacity,
            in_flight: false,
        }
    }

    /// Queues a change; past capacity, every queued change is replaced by
    /// the overflow marker.
    pub(crate) fn push(&mut self, change: Change) {
        if self.overflow {
            metrics::counter!(names::CLUSTER_EVENTS_DROPPED).increment(1);
            return;
        }
        if self.changes.len() >= self.capacity {
            let dropped = self.changes.len() as u64 + 1;
            tracing::warn!(
                dropped,
                "too many changes waiting for etcd; peers will be told to drop their caches"
            );
            metrics::counter!(names::CLUSTER_EVENTS_DROPPED).increment(dropped);
            self.changes.clear();
            self.overflow = true;
            return;
        }
        self.changes.push(change);
    }

    /// Takes the next batch to send (at most [`MAX_BATCH`] changes), and
    /// whether it carries the overflow marker.
    pub(crate) fn take(&mut self) -> Option<(Vec<Change>, bool)> {
        if self.changes.is_empty() && !self.overflow {
            return None;
        }
        let n = self.changes.len().min(MAX_BATCH);
        let batch: Vec<Change> = self.changes.drain(..n).collect();
        let overflow = std::mem::take(&mut self.overflow);
        self.in_flight = true;
        Some((batch, overflow))
    }

    /// The taken batch reached etcd.
    pub(crate) fn sent(&mut self) {
        self.in_flight = false;
    }

    /// Puts back a batch that could not be sent, ahead of newer changes.
    pub(crate) fn put_back(&mut self, batch: Vec<Change>, overflow: bool) {
        self.in_flight = false;
        if overflow || self.overflow {
            let dropped = (batch.len() + self.changes.len()) as u64;
            metrics::counter!(names::CLUSTER_EVENTS_DROPPED).increment(dropped);
            self.changes.clear();
            self.overflow = true;
            return;
        }
        let newer = std::mem::replace(&mut self.changes, batch);
        for c in newer {
            self.push(c);
        }
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty() && !self.overflow
    }

    /// Whether everything queued so far has reached etcd.
    pub(crate) fn is_idle(&self) -> bool {
        self.is_empty() && !self.in_flight
    }
}

/// A stream of [`Notice`]s for one consumer, from [`crate::Cluster::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Notice>,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Notice>) -> Self {
        Subscription { rx }
    }

    /// The next notice; `None` once the cluster client is shut down. A
    /// consumer too slow to keep up gets [`MissedReason::Lagged`] in place of
    /// what it missed, never a silent gap.
    pub async fn next(&mut self) -> Option<Notice> {
        match self.rx.recv().await {
            Ok(n) => Some(n),
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                metrics::counter!(names::CLUSTER_MISSED_EVENTS, "reason" => "lagged").increment(1);
                Some(Notice::MissedEvents(MissedReason::Lagged { skipped }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A notice if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Notice> {
        match self.rx.try_recv() {
            Ok(n) => Some(n),
            Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                Some(Notice::MissedEvents(MissedReason::Lagged { skipped }))
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &str) -> Change {
        Change::Write { path: p.into() }
    }

    #[test]
    fn changes_are_normalised_or_refused() {
        let c = Change::Rename {
            from: "//a/".into(),
            to: "/b/./c".into(),
        };
        assert_eq!(
            c.normalised().unwrap(),
            Change::Rename {
                from: "/a".into(),
                to: "/b/c".into()
            }
        );
        assert!(w("rel").normalised().is_err());
        assert!(w("/a/../b").normalised().is_err());
    }

    #[test]
    fn batches_are_json_with_a_kind_tag() {
        let b = EventBatch {
            origin: "n1".into(),
            instance: "i".into(),
            changes: vec![Change::Delete { path: "/x".into() }],
            overflow: false,
        };
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains(r#""kind":"delete""#), "{json}");
        assert!(!json.contains("overflow"), "{json}");
        assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), b);
    }

    #[test]
    fn outbox_batches_in_order_and_collapses_on_overflow() {
        let mut o = Outbox::new(3);
        o.push(w("/1"));
        o.push(w("/2"));
        let (batch, overflow) = o.take().unwrap();
        assert_eq!(batch, vec![w("/1"), w("/2")]);
        assert!(!overflow);
        assert!(o.take().is_none());

        o.push(w("/3"));
        o.put_back(vec![w("/1")], false);
        assert_eq!(
            o.take().unwrap().0,
            vec![w("/1"), w("/3")],
            "failed batch goes first"
        );

        for i in 0..5 {
            o.push(w(&format!("/{i}")));
        }
        let (batch, overflow) = o.take().unwrap();
        assert!(
            batch.is_empty() && overflow,
            "4th change over capacity 3 collapses"
        );
        assert!(o.is_empty());
        assert!(!o.is_idle(), "the taken batch is not sent yet");
        o.sent();
        assert!(o.is_idle());
    }

    #[test]
    fn outbox_sends_big_queues_in_bounded_batches() {
        let mut o = Outbox::new(10_000);
        for i in 0..MAX_BATCH + 1 {
            o.push(w(&format!("/{i}")));
        }
        assert_eq!(o.take().unwrap().0.len(), MAX_BATCH);
        assert_eq!(o.take().unwrap().0.len(), 1);
    }

    #[test]
    fn overflow_batch_becomes_a_missed_signal_first() {
        let b = EventBatch {
            origin: "n2".into(),
            instance: "i".into(),
            changes: vec![w("/a")],
            overflow: true,
        };
        let n = notices_of(b, 5);
        assert_eq!(
            n[0],
            Notice::MissedEvents(MissedReason::PeerOverflow {
                origin: "n2".into()
            })
        );
        assert!(matches!(&n[1], Notice::Invalidate(i) if i.revision == 5 && i.origin == "n2"));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_it_missed_notices() {
        let (tx, rx) = broadcast::channel(2);
        let mut sub = Subscription::new(rx);
        for i in 0..5 {
            tx.send(Notice::Invalidate(Invalidation {
                origin: "n".into(),
                change: w(&format!("/{i}")),
                revision: i,
            }))
            .unwrap();
        }
        assert_eq!(
            sub.next().await,
            Some(Notice::MissedEvents(MissedReason::Lagged { skipped: 3 }))
        );
        drop(tx);
        assert!(matches!(sub.next().await, Some(Notice::Invalidate(_))));
    }
}
