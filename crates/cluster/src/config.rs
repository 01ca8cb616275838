//! How a daemon joins a cluster: etcd endpoints, names, and the timings of
//! leases, requests and reconnects.

use std::path::PathBuf;
use std::time::Duration;

use crate::ClusterError;

/// Settings of one cluster client.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd client URLs, such as `http://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// The cluster's name: the key prefix `/weir/NAME/` in etcd. Daemons with
    /// the same name share one mount table.
    pub cluster: String,
    /// This node's id (the Kubernetes node name, say). Two daemons that run at
    /// once need different ids: a second registration replaces the first.
    pub node_id: String,
    /// The version reported in the member record.
    pub version: String,
    /// How long a node stays listed after it stops renewing its lease.
    pub lease_ttl: Duration,
    /// How long one etcd request may take before it counts as unavailable.
    pub request_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// First wait before reconnecting after a failure; it doubles each time.
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts.
    pub reconnect_max: Duration,
    /// Where the last mount table from etcd is kept, so a daemon that starts
    /// while etcd is down can still serve it. `None`: not kept.
    pub table_cache: Option<PathBuf>,
    /// Changes kept while etcd is unreachable before they are collapsed into
    /// one "everything may have changed" event.
    pub max_pending_changes: usize,
}

impl ClusterConfig {
    /// Settings with the defaults for everything but the endpoints and names.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        cluster: impl Into<String>,
        node_id: impl Into<String>,
    ) -> Self {
        ClusterConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            cluster: cluster.into(),
            node_id: node_id.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            lease_ttl: Duration::from_secs(15),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
            table_cache: None,
            max_pending_changes: 1024,
        }
    }

    /// Checks the settings, so a bad one fails at start with a clear message.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.endpoints.is_empty() {
            return Err(ClusterError::Config("no etcd endpoints given".into()));
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ClusterError::Config(format!(
                    "etcd endpoint {e:?} must be a URL such as http://127.0.0.1:2379"
                )));
            }
        }
        check_name("cluster name", &self.cluster)?;
        check_name("node id", &self.node_id)?;
        if self.lease_ttl < Duration::from_secs(2) {
            return Err(ClusterError::Config(format!(
                "lease_ttl {:?} is below etcd's minimum of 2s",
                self.lease_ttl
            )));
        }
        for (what, d) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("reconnect_min", self.reconnect_min),
        ] {
            if d.is_zero() {
                return Err(ClusterError::Config(format!("{what} must not be zero")));
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ClusterError::Config(
                "reconnect_max must not be below reconnect_min".into(),
            ));
        }
        if self.max_pending_changes == 0 {
            return Err(ClusterError::Config(
                "max_pending_changes must not be zero".into(),
            ));
        }
        Ok(())
    }

    /// The lease TTL in whole seconds, as etcd takes it.
    pub(crate) fn lease_ttl_secs(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

/// Names become etcd key segments: keep them to characters that cannot
/// split or escape a key (no `/`), and readable in `etcdctl` output.
fn check_name(what: &str, name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Config(format!(
            "{what} {name:?} must be 1-253 characters of a-z, A-Z, 0-9, '-', '_' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ClusterConfig {
        ClusterConfig::new(["http://127.0.0.1:2379"], "c", "node-1")
    }

    #[test]
    fn defaults_validate() {
        ok().validate().unwrap();
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |f: &dyn Fn(&mut ClusterConfig)| {
            let mut c = ok();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.endpoints.clear()).contains("no etcd endpoints"));
        assert!(bad(&|c| c.endpoints = vec!["127.0.0.1:2379".into()]).contains("URL"));
        assert!(bad(&|c| c.cluster = "a/b".into()).contains("cluster name"));
        assert!(bad(&|c| c.node_id = String::new()).contains("node id"));
        assert!(bad(&|c| c.lease_ttl = Duration::from_secs(1)).contains("minimum"));
        assert!(bad(&|c| c.request_timeout = Duration::ZERO).contains("request_timeout"));
        assert!(bad(&|c| c.reconnect_max = Duration::from_millis(1)).contains("reconnect_max"));
    }
}
