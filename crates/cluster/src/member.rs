//! Who this daemon is to the cluster: the member record it registers under
//! its lease, and the instance id that tells its own events from others'.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One registered node, as stored under `/weir/NAME/members/NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node id.
    pub node_id: String,
    /// The daemon instance (unique per process start).
    pub instance: String,
    /// The host it runs on.
    pub hostname: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When it started, in seconds since the Unix epoch.
    pub started_at: u64,
    /// weir's version.
    pub version: String,
}

impl Member {
    /// The record of this process for node `node_id`.
    pub(crate) fn this_process(node_id: &str, version: &str) -> Member {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let pid = std::process::id();
        Member {
            node_id: node_id.to_string(),
            // Unique enough across restarts on one node: a pid is reused only
            // long after, and never within the same nanosecond.
            instance: format!("{node_id}.{pid}.{:x}", started.as_nanos()),
            hostname: hostname(),
            pid,
            started_at: started.as_secs(),
            version: version.to_string(),
        }
    }

    /// When it started.
    pub fn started(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(self.started_at)
    }
}

/// The kernel's host name (the pod name in Kubernetes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_described_and_instances_differ() {
        let a = Member::this_process("n1", "1.2.3");
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = Member::this_process("n1", "1.2.3");
        assert_eq!(a.pid, std::process::id());
        assert_ne!(a.hostname, "");
        assert!(a.instance.starts_with("n1."));
        assert_ne!(a.instance, b.instance);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Member>(&json).unwrap(), a);
    }
}
