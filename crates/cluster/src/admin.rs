//! One-shot requests to the cluster's etcd: read the mount table and the
//! members, mount and umount. No background work, so a command-line tool
//! (`weir fs mount`) can use it as well as a daemon.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use weir_namespace::MountSpec;

use crate::keys::{KeyKind, Keys};
use crate::table::{self, Specs, TableSnapshot, TableSource};
use crate::{ClusterConfig, ClusterError, Member};

/// HTTP/2 pings that notice a silent etcd (a partition, a frozen process);
/// etcd refuses pings more often than every 5 s by default.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on one cluster's keys in etcd. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    client: Client,
    keys: Keys,
    timeout: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("prefix", &self.keys.root())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The parts of the cluster's state the watcher starts from, all as of one
/// revision.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) specs: Specs,
    pub(crate) members: BTreeSet<String>,
    pub(crate) revision: i64,
}

impl Admin {
    /// A client for `cfg`'s cluster. This checks the settings but does not
    /// wait for etcd: requests fail with [`ClusterError::Unavailable`] while
    /// it cannot be reached, and the connection comes back by itself.
    pub async fn connect(cfg: &ClusterConfig) -> Result<Admin, ClusterError> {
        cfg.validate()?;
        let options = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = tokio::time::timeout(
            cfg.request_timeout,
            Client::connect(&cfg.endpoints, Some(options)),
        )
        .await
        .map_err(|_| ClusterError::timed_out("connect", cfg.request_timeout))?
        .map_err(|e| ClusterError::from_etcd("connect", e))?;
        Ok(Admin {
            client,
            keys: Keys::new(&cfg.cluster),
            timeout: cfg.request_timeout,
        })
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs one etcd request with the request timeout.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(r) => r.map_err(|e| ClusterError::from_etcd(op, e)),
            Err(_) => Err(ClusterError::timed_out(op, self.timeout)),
        }
    }

    /// The mount table as etcd holds it now. Entries that are not valid
    /// specs (written by hand, say) are skipped with a warning.
    pub async fn load_table(&self) -> Result<TableSnapshot, ClusterError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                "read the mount table",
                kv.get(self.keys.mounts(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let specs = self.specs_of(resp.kvs());
        Ok(table::snapshot(&specs, revision, TableSource::Etcd))
    }

    /// etcd's current revision.
    pub(crate) async fn current_revision(&self) -> Result<i64, ClusterError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                "read the revision",
                kv.get(self.keys.root(), Some(GetOptions::new().with_count_only())),
            )
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// The mount table and the member ids, as of one revision.
    pub(crate) async fn load_state(&self) -> Result<State, ClusterError> {
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys.mounts(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(
                self.keys.members(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        ]);
        let mut kv = self.client.kv_client();
        let resp = self.call("read the cluster state", kv.txn(txn)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut state = State {
            specs: Specs::new(),
            members: BTreeSet::new(),
            revision,
        };
        for op in resp.op_responses() {
            let etcd_client::TxnOpResponse::Get(get) = op else {
                continue;
            };
            state.specs.append(&mut self.specs_of(get.kvs()));
            for kv in get.kvs() {
                if let Ok(key) = kv.key_str()
                    && let KeyKind::Member(node) = self.keys.classify(key)
                {
                    state.members.insert(node.to_string());
                }
            }
        }
        Ok(state)
    }

    fn specs_of(&self, kvs: &[etcd_client::KeyValue]) -> Specs {
        let mut specs = Specs::new();
        for kv in kvs {
            let Ok(key) = kv.key_str() else { continue };
            let KeyKind::Mount(path) = self.keys.classify(key) else {
                continue;
            };
            match table::decode(path, kv.value()) {
                Ok(spec) => {
                    specs.insert(spec.path.clone(), spec);
                }
                Err(e) => tracing::warn!(key, error = %e, "skipping a bad mount entry in etcd"),
            }
        }
        specs
    }

    /// Adds a mount, unless its path is taken. Returns the etcd revision of
    /// the change; every watching daemon has it within seconds.
    pub async fn mount(&self, spec: &MountSpec) -> Result<i64, ClusterError> {
        let spec = table::validate(spec)?;
        let key = self.keys.mount(&spec.path);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), table::encode(&spec), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut kv = self.client.kv_client();
        let resp = self.call("mount", kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        let ufs = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .and_then(|v| table::decode(&spec.path, &v).ok())
            .map(|s| weir_ufs::uri::redact(&s.ufs))
            .unwrap_or_else(|| "an entry weir cannot read".to_string());
        Err(ClusterError::AlreadyMounted {
            path: spec.path,
            ufs,
        })
    }

    /// Removes the mount at `path`. Returns the etcd revision of the change.
    pub async fn umount(&self, path: &str) -> Result<i64, ClusterError> {
        let path = weir_namespace::normalize(path).map_err(|e| ClusterError::InvalidMount {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let mut kv = self.client.kv_client();
        let resp = self
            .call("umount", kv.delete(self.keys.mount(&path), None))
            .await?;
        if resp.deleted() == 0 {
            return Err(ClusterError::NotMounted(path));
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// The nodes registered now, sorted by node id.
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                "list members",
                kv.get(self.keys.members(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut members: Vec<Member> = resp
            .kvs()
            .iter()
            .filter_map(|kv| match serde_json::from_slice(kv.value()) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(key = ?kv.key_str(), error = %e, "skipping a bad member entry");
                    None
                }
            })
            .collect();
        members.sort_by(|a: &Member, b| a.node_id.cmp(&b.node_id));
        Ok(members)
    }
}
