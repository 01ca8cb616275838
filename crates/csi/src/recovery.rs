//! The CSI half of crash survival. The session's watchdog replaces a dead
//! daemon on the live connection (layer 1) or mounts afresh (layer 2);
//! this module hears of each step, re-binds every recorded target onto a
//! new mount, and tells the affected pods through Kubernetes Events. A
//! restarted plugin calls [`Recovery::after_restart`] for the same work.

use std::sync::{Arc, mpsc};
use std::time::Instant;

use weir_metrics::names;
use weir_session::Event;

use crate::events::{Reporter, Severity};
use crate::publications::{Publications, Repair};
use crate::sessions::Resumed;

/// Reacts to session events.
#[derive(Debug)]
pub struct Recovery {
    pubs: Arc<Publications>,
    reporter: Arc<Reporter>,
}

impl Recovery {
    /// Recovery over `pubs`, reporting through `reporter`.
    pub fn new(pubs: Arc<Publications>, reporter: Arc<Reporter>) -> Arc<Recovery> {
        Arc::new(Recovery { pubs, reporter })
    }

    /// Handles the session events from `rx` on a thread of its own, until
    /// every sender is gone.
    pub fn spawn(self: &Arc<Self>, rx: mpsc::Receiver<Event>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("weir-recovery".into())
            .spawn(move || {
                for e in rx {
                    me.handle(&e);
                }
            })
            .map(|_| ())
    }

    fn handle(&self, e: &Event) {
        match e {
            Event::Replaced {
                old_pid,
                new_pid,
                cause,
                pause,
            } => self.tell_pods(
                Severity::Normal,
                "FuseDaemonReplaced",
                &format!(
                    "weir's FUSE daemon (pid {old_pid}) {cause}; pid {new_pid} took over the live connection after {} ms. Calls in flight were paused, not failed.",
                    pause.as_millis()
                ),
            ),
            Event::TakeoverFailed { reason } => self.tell_pods(
                Severity::Warning,
                "FuseTakeoverFailed",
                &format!("no FUSE daemon could take over the connection ({reason}); remounting"),
            ),
            Event::Remounted { took, .. } => {
                self.rebind(&format!("remounted in {} ms", took.as_millis()));
            }
            Event::RemountFailed { reason } => self.tell_pods(
                Severity::Warning,
                "FuseRemountFailed",
                &format!(
                    "weir's FUSE mount is gone and could not be mounted again ({reason}); the volume fails until the next publish"
                ),
            ),
            Event::Ended { .. } => {}
        }
    }

    /// After the plugin restarted and [`crate::sessions::Sessions::resume`]
    /// did `resumed`: re-binds the targets if the session was mounted
    /// afresh, and counts and reports that remount.
    pub fn after_restart(&self, resumed: &Resumed, started: Instant) {
        match resumed {
            Resumed::Nothing | Resumed::Adopted => {}
            Resumed::Remounted => {
                metrics::counter!(names::RECOVERIES, "layer" => "remount", "outcome" => "ok")
                    .increment(1);
                self.rebind(&format!(
                    "the plugin restarted and found the FUSE daemon gone; remounted in {} ms",
                    started.elapsed().as_millis()
                ));
            }
            Resumed::Failed(reason) => {
                metrics::counter!(names::RECOVERIES, "layer" => "remount", "outcome" => "failed")
                    .increment(1);
                tracing::error!(%reason, "the plugin restarted and could not mount the FUSE session again");
                self.tell_pods(
                    Severity::Warning,
                    "FuseRemountFailed",
                    &format!("weir's FUSE mount could not be mounted again after a plugin restart ({reason})"),
                );
            }
        }
    }

    /// Binds the session's new mount onto every recorded target, and tells
    /// each pod what it sees now.
    fn rebind(&self, what: &str) {
        let started = Instant::now();
        let results = self.pubs.rebind_all();
        let mut failed = 0;
        for (p, r) in &results {
            let (severity, reason, message) = match r {
                Ok(Repair::Rebound) => (
                    Severity::Warning,
                    "FuseVolumeRemounted",
                    format!(
                        "weir's FUSE mount was replaced ({what}); volume {} was bound again. Files opened before fail with ENOTCONN; new opens work (with mountPropagation: HostToContainer).",
                        p.volume_id
                    ),
                ),
                Ok(Repair::Current | Repair::Skipped(_)) => continue,
                Err(e) => {
                    failed += 1;
                    (
                        Severity::Warning,
                        "FuseRebindFailed",
                        format!(
                            "volume {} could not be bound to the new FUSE mount: {e}",
                            p.volume_id
                        ),
                    )
                }
            };
            tracing::warn!(volume = %p.volume_id, target = %p.target.display(), %reason, "{message}");
            if let Some(pod) = &p.pod {
                self.reporter.post(pod, severity, reason, message);
            }
        }
        tracing::warn!(
            targets = results.len(),
            failed,
            took_ms = started.elapsed().as_millis() as u64,
            "re-bound the recorded targets onto the new FUSE mount"
        );
    }

    fn tell_pods(&self, severity: Severity, reason: &str, message: &str) {
        for p in self.pubs.all() {
            if let Some(pod) = &p.pod {
                self.reporter
                    .post(pod, severity, reason, message.to_string());
            }
        }
    }
}
