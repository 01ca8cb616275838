//! Changing the mount table through the admin endpoint.
//!
//! - **Standalone**: the daemon's own table. A mount is opened and its
//!   storage checked before it is served; the new table is kept in an
//!   overlay file in the session directory, so a replacement daemon (a
//!   takeover) serves the same table. It is not written back to the YAML
//!   file: a fresh `weir mount` starts from the file again.
//! - **Cluster**: the table in etcd ([`weir_cluster::Admin`]). The request
//!   returns once this daemon serves the change (or after a few seconds,
//!   saying it does not yet); every other daemon follows within seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_cluster::Cluster;
use weir_fs::Fs;
use weir_namespace::{MountSpec, MountTable};
use weir_ufs::Tuning;

use crate::protocol::{ErrorKind, ErrorReply};

/// How long a new mount's storage may take to answer its first check.
const REACH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a cluster mount waits for this daemon to serve it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Who owns the mount table.
#[derive(Debug)]
pub enum TableControl {
    /// This daemon.
    Standalone(Standalone),
    /// etcd.
    Cluster {
        /// The cluster client.
        cluster: Arc<Cluster>,
        /// The etcd revision this daemon serves (see [`crate::follow`]).
        applied: watch::Receiver<i64>,
    },
}

/// The standalone daemon's table and where it keeps it.
#[derive(Debug)]
pub struct Standalone {
    fs: Fs,
    overlay: PathBuf,
    tuning: Tuning,
    lock: tokio::sync::Mutex<()>,
}

impl Standalone {
    /// Control of `fs`'s table, kept in `overlay`.
    pub fn new(fs: Fs, overlay: PathBuf, tuning: Tuning) -> Self {
        Standalone {
            fs,
            overlay,
            tuning,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The table an earlier daemon of this session served, if it changed
    /// it through the admin endpoint.
    pub fn load_overlay(path: &Path) -> std::io::Result<Option<Vec<MountSpec>>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds `spec`, once its storage answers.
    pub async fn mount(&self, spec: MountSpec) -> Result<String, ErrorReply> {
        let _one_at_a_time = self.lock.lock().await;
        let path = weir_namespace::normalize(&spec.path)
            .map_err(|e| ErrorReply::new(ErrorKind::Invalid, format!("{}: {e}", spec.path)))?;
        let current = self.fs.table();
        if let Some(m) = current.mounts().iter().find(|m| m.path == path) {
            return Err(ErrorReply::new(
                ErrorKind::AlreadyMounted,
                format!(
                    "{path} is already mounted (from {}); umount it first",
                    weir_ufs::uri::redact(&m.spec.ufs)
                ),
            ));
        }
        let spec = MountSpec { path, ..spec };
        let mut specs = current.specs();
        specs.push(spec.clone());
        let (table, errors) = MountTable::open_lenient(&specs, &self.tuning, Some(&current));
        if let Some(e) = errors.first() {
            return Err(ErrorReply::new(ErrorKind::Invalid, e.to_string()));
        }
        if let Some(m) = table.mounts().iter().find(|m| m.path == spec.path) {
            check_reachable(&m.ufs, &spec).await?;
        }
        self.commit(table).await?;
        Ok(format!(
            "mounted {} from {} on this daemon (not written to its config file)",
            spec.path,
            weir_ufs::uri::redact(&spec.ufs)
        ))
    }

    /// Removes the mount at `path`.
    pub async fn umount(&self, path: &str) -> Result<String, ErrorReply> {
        let _one_at_a_time = self.lock.lock().await;
        let path = weir_namespace::normalize(path)
            .map_err(|e| ErrorReply::new(ErrorKind::Invalid, format!("{path}: {e}")))?;
        let current = self.fs.table();
        let specs: Vec<MountSpec> = current
            .specs()
            .into_iter()
            .filter(|s| weir_namespace::normalize(&s.path).ok().as_deref() != Some(&path))
            .collect();
        if specs.len() == current.mounts().len() {
            return Err(ErrorReply::new(
                ErrorKind::NotMounted,
                format!("nothing is mounted at {path}"),
            ));
        }
        let (table, _) = MountTable::open_lenient(&specs, &self.tuning, Some(&current));
        self.commit(table).await?;
        Ok(format!(
            "unmounted {path} on this daemon (open files keep reading it until closed)"
        ))
    }

    /// Keeps `table` for a replacement daemon, then serves it.
    async fn commit(&self, table: MountTable) -> Result<(), ErrorReply> {
        let json = serde_json::to_vec_pretty(&table.specs())
            .map_err(|e| ErrorReply::new(ErrorKind::Failed, e.to_string()))?;
        let tmp = self.overlay.with_extension("tmp");
        let write = async {
            tokio::fs::write(&tmp, &json).await?;
            tokio::fs::rename(&tmp, &self.overlay).await
        };
        write.await.map_err(|e| {
            ErrorReply::new(
                ErrorKind::Failed,
                format!("cannot keep the table in {}: {e}", self.overlay.display()),
            )
        })?;
        self.fs.set_table(table);
        Ok(())
    }
}

async fn check_reachable(ufs: &weir_ufs::Ufs, spec: &MountSpec) -> Result<(), ErrorReply> {
    let uri = weir_ufs::uri::redact(&spec.ufs);
    match tokio::time::timeout(REACH_TIMEOUT, ufs.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ErrorReply::new(
            ErrorKind::Unavailable,
            format!("cannot reach {uri} (mount {}): {e}", spec.path),
        )),
        Err(_) => Err(ErrorReply::new(
            ErrorKind::Unavailable,
            format!(
                "cannot reach {uri} (mount {}): no answer within {REACH_TIMEOUT:?}",
                spec.path
            ),
        )),
    }
}

impl TableControl {
    /// Adds a mount.
    pub async fn mount(&self, spec: MountSpec) -> Result<String, ErrorReply> {
        match self {
            TableControl::Standalone(s) => s.mount(spec).await,
            TableControl::Cluster { cluster, applied } => {
                let revision = cluster.admin().mount(&spec).await?;
                let path = weir_namespace::normalize(&spec.path).unwrap_or(spec.path.clone());
                Ok(format!(
                    "mounted {path} from {} in cluster {} (etcd revision {revision}); {}",
                    weir_ufs::uri::redact(&spec.ufs),
                    cluster.config().cluster,
                    applied_note(applied.clone(), revision).await
                ))
            }
        }
    }

    /// Removes a mount.
    pub async fn umount(&self, path: &str) -> Result<String, ErrorReply> {
        match self {
            TableControl::Standalone(s) => s.umount(path).await,
            TableControl::Cluster { cluster, applied } => {
                let revision = cluster.admin().umount(path).await?;
                Ok(format!(
                    "unmounted {path} in cluster {} (etcd revision {revision}); {}",
                    cluster.config().cluster,
                    applied_note(applied.clone(), revision).await
                ))
            }
        }
    }
}

/// Waits (briefly) for this daemon to serve `revision`, and says whether it does.
async fn applied_note(mut applied: watch::Receiver<i64>, revision: i64) -> &'static str {
    let served = tokio::time::timeout(APPLY_TIMEOUT, applied.wait_for(|r| *r >= revision)).await;
    if matches!(served, Ok(Ok(_))) {
        "this node serves it now, and every node of the cluster within seconds"
    } else {
        "this node has not picked it up yet; every node follows within seconds"
    }
}
