//! The mount table as cluster mode keeps it: validation of a spec before it
//! is written, decoding of what etcd holds, the snapshot handed to the
//! daemon, and the table cache file that outlives a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_namespace::{MountSpec, MountStore, NamespaceError};

use crate::ClusterError;
use crate::status::StatusCell;

/// Where a table snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableSource {
    /// Read from etcd at [`TableSnapshot::revision`].
    Etcd,
    /// Read from the table cache file because etcd could not be reached at
    /// start; it is what etcd held at [`TableSnapshot::revision`].
    CacheFile,
}

/// One full mount table, as of one etcd revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    /// Every mount, sorted by path, each path normalised.
    pub specs: Vec<MountSpec>,
    /// The etcd revision this table is current to.
    pub revision: i64,
    /// Where it came from.
    pub source: TableSource,
}

/// Checks a spec before it is written to etcd and returns it with its path
/// normalised. The URI is parsed, not opened: the storage is reached by each
/// node that serves the mount, which reports its own errors.
pub(crate) fn validate(spec: &MountSpec) -> Result<MountSpec, ClusterError> {
    let invalid = |reason: String| ClusterError::InvalidMount {
        path: spec.path.clone(),
        reason,
    };
    let path = weir_namespace::normalize(&spec.path).map_err(|e| invalid(e.to_string()))?;
    weir_ufs::uri::parse(&spec.ufs, &spec.options).map_err(|e| invalid(e.to_string()))?;
    Ok(MountSpec {
        path,
        ..spec.clone()
    })
}

/// The mount a key's value describes, if it is a valid spec for that key.
pub(crate) fn decode(key_path: &str, value: &[u8]) -> Result<MountSpec, String> {
    let spec: MountSpec = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let path = weir_namespace::normalize(&spec.path).map_err(|e| e.to_string())?;
    if path != key_path {
        return Err(format!("value names path {path:?}, key names {key_path:?}"));
    }
    Ok(MountSpec { path, ..spec })
}

/// The JSON stored for a validated spec.
pub(crate) fn encode(spec: &MountSpec) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

/// The table being built from etcd: path to spec.
pub(crate) type Specs = BTreeMap<String, MountSpec>;

/// A snapshot of `specs` at `revision`.
pub(crate) fn snapshot(specs: &Specs, revision: i64, source: TableSource) -> TableSnapshot {
    TableSnapshot {
        specs: specs.values().cloned().collect(),
        revision,
        source,
    }
}

/// Writes the table cache file atomically (temporary file, then rename),
/// so a crash leaves the old table or the new one.
pub(crate) async fn save_cache(path: &Path, table: &TableSnapshot) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(table).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, json).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Reads the table cache file, marked as coming from it.
pub(crate) async fn load_cache(path: &Path) -> std::io::Result<TableSnapshot> {
    let bytes = tokio::fs::read(path).await?;
    let mut table: TableSnapshot = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    table.source = TableSource::CacheFile;
    Ok(table)
}

/// The latest table, shared between the watcher (writer) and readers.
pub(crate) type TableCell = watch::Sender<Option<Arc<TableSnapshot>>>;

/// A [`MountStore`] that answers with the last table seen from etcd, without
/// asking etcd: a daemon built on the store keeps working through an outage.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    table: watch::Receiver<Option<Arc<TableSnapshot>>>,
    status: Arc<StatusCell>,
}

impl ClusterStore {
    pub(crate) fn new(table: &TableCell, status: Arc<StatusCell>) -> Self {
        ClusterStore {
            table: table.subscribe(),
            status,
        }
    }
}

impl MountStore for ClusterStore {
    fn load(&self) -> Result<Vec<MountSpec>, NamespaceError> {
        match &*self.table.borrow() {
            Some(t) => Ok(t.specs.clone()),
            None => Err(NamespaceError::Store(format!(
                "no mount table from etcd yet: {}",
                self.status.get()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, ufs: &str) -> MountSpec {
        MountSpec {
            path: path.into(),
            ufs: ufs.into(),
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn validation_normalises_and_refuses_bad_specs() {
        assert_eq!(
            validate(&spec("//a/./b/", "s3://bkt/p")).unwrap().path,
            "/a/b"
        );
        let e = validate(&spec("/a/../b", "s3://bkt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(".."), "{e}");
        let e = validate(&spec("rel", "s3://bkt")).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
        let e = validate(&spec("/a", "bogus://x")).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        assert!(validate(&spec("/a", "s3://")).is_err(), "no bucket");
    }

    #[test]
    fn decode_checks_the_value_against_its_key() {
        let s = spec("/a", "s3://b");
        assert_eq!(decode("/a", encode(&s).as_bytes()).unwrap(), s);
        assert!(
            decode("/b", encode(&s).as_bytes())
                .unwrap_err()
                .contains("key")
        );
        assert!(decode("/a", b"not json").is_err());
        assert!(decode("/a", br#"{"path":"/a","ufs":"s3://b","bogus":1}"#).is_err());
    }

    #[tokio::test]
    async fn cache_file_round_trips_and_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/table.json");
        let mut specs = Specs::new();
        specs.insert("/a".into(), spec("/a", "s3://b"));
        let t = snapshot(&specs, 9, TableSource::Etcd);
        save_cache(&f, &t).await.unwrap();
        let back = load_cache(&f).await.unwrap();
        assert_eq!(back.specs, t.specs);
        assert_eq!(back.revision, 9);
        assert_eq!(back.source, TableSource::CacheFile);
        assert!(!f.with_extension("tmp").exists());
    }

    #[test]
    fn store_serves_the_latest_table_or_says_why_not() {
        let cell = TableCell::new(None);
        let store = ClusterStore::new(&cell, Arc::new(StatusCell::new()));
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("no mount table"), "{e}");
        let mut specs = Specs::new();
        specs.insert("/".into(), spec("/", "s3://b"));
        cell.send_replace(Some(Arc::new(snapshot(&specs, 1, TableSource::Etcd))));
        assert_eq!(store.load().unwrap(), vec![spec("/", "s3://b")]);
    }
}
