//! Persisted records in the state dir: one JSON file per publication
//! (`publications/`) and per controller volume (`volumes/`). Each is
//! written atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves the old record or the new one, never half
//! of one; a restarted plugin reads them to re-adopt what it had.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A pod, from kubelet's pod-info volume context keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// `csi.storage.k8s.io/pod.name`
    pub name: String,
    /// `csi.storage.k8s.io/pod.namespace`
    pub namespace: String,
    /// `csi.storage.k8s.io/pod.uid`
    pub uid: String,
}

/// One bind of a namespace directory onto a kubelet target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The CSI volume id.
    pub volume_id: String,
    /// The target path, as kubelet gave it.
    pub target: PathBuf,
    /// The session whose mount is bound.
    pub session: String,
    /// The normalised directory of the namespace that is bound.
    pub mount_path: String,
    /// Whether a missing `mount_path` is created.
    pub create_directory: bool,
    /// Read-only bind.
    pub read_only: bool,
    /// `MOUNT_ATTR_*` flags of the bind besides read-only.
    pub attrs: u64,
    /// Whether kubelet called it an ephemeral inline volume.
    pub ephemeral: bool,
    /// The pod using it, when kubelet said.
    pub pod: Option<Pod>,
}

impl Publication {
    /// Whether a publish request that produced `other` asks for the same
    /// bind (so that answering OK is right).
    pub fn same_bind(&self, other: &Publication) -> bool {
        self.volume_id == other.volume_id
            && self.mount_path == other.mount_path
            && self.read_only == other.read_only
            && self.attrs == other.attrs
    }
}

/// What DeleteVolume does with the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Keep the data.
    Retain,
    /// Remove the directory and everything in it.
    Delete,
}

/// A volume the controller created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The CreateVolume name (the idempotency key).
    pub name: String,
    /// The volume id handed out.
    pub id: String,
    /// Its normalised directory in the namespace.
    pub path: String,
    /// What DeleteVolume does.
    pub on_delete: OnDelete,
    /// The capacity reported.
    pub capacity: i64,
    /// The StorageClass parameters it was made with.
    pub parameters: BTreeMap<String, String>,
}

/// A directory of records of one kind, keyed by a string (hashed into the
/// file name, so any key is a safe name).
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("state {path}: {reason}")]
pub struct StateError {
    path: PathBuf,
    reason: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Records {
    /// The records in `dir`, which is created if missing.
    pub fn open(dir: PathBuf) -> Result<Records, StateError> {
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        Ok(Records { dir })
    }

    fn file(&self, key: &str) -> PathBuf {
        let h = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
        self.dir.join(format!("{h:032x}.json"))
    }

    /// Writes the record for `key` atomically and durably.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let path = self.file(key);
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(value).map_err(|e| err(&path, e))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| err(&path, e))
    }

    /// Removes the record for `key` (missing is fine).
    pub fn remove(&self, key: &str) -> Result<(), StateError> {
        let path = self.file(key);
        match std::fs::remove_file(&path) {
            Ok(()) => std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }

    /// Every record. One that cannot be parsed is logged and skipped, so a
    /// damaged file does not keep the plugin from starting.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Vec<T>, StateError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| err(&self.dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| err(&self.dir, e))?.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(v) => out.push(v),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "skipping an unreadable state record")
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(target: &str) -> Publication {
        Publication {
            volume_id: "v".into(),
            target: target.into(),
            session: "default".into(),
            mount_path: "/a".into(),
            create_directory: false,
            read_only: true,
            attrs: 0,
            ephemeral: false,
            pod: None,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_can_be_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Records::open(tmp.path().join("p")).unwrap();
        r.put("/t/1", &publication("/t/1")).unwrap();
        r.put("/t/2", &publication("/t/2")).unwrap();
        r.put("/t/1", &publication("/t/1")).unwrap();
        std::fs::write(tmp.path().join("p/junk.json"), b"{not json").unwrap();
        let r = Records::open(tmp.path().join("p")).unwrap();
        let mut got: Vec<Publication> = r.load().unwrap();
        got.sort_by(|a, b| a.target.cmp(&b.target));
        assert_eq!(got, [publication("/t/1"), publication("/t/2")]);
        r.remove("/t/1").unwrap();
        r.remove("/t/1").unwrap();
        assert_eq!(r.load::<Publication>().unwrap(), [publication("/t/2")]);
    }
}
