//! Where the mount table comes from. The embedded default is the YAML
//! config file; cluster mode's store is `weir_cluster::ClusterStore`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{MountSpec, NamespaceError};

/// A source of mount specs.
pub trait MountStore: Send + Sync {
    /// The current mount table.
    fn load(&self) -> Result<Vec<MountSpec>, NamespaceError>;
}

/// Reads `mounts:` from a weir YAML config file.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store backed by the YAML file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }
}

#[derive(Deserialize)]
struct MountsOnly {
    #[serde(default)]
    mounts: Vec<MountSpec>,
}

impl MountStore for FileStore {
    fn load(&self) -> Result<Vec<MountSpec>, NamespaceError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| NamespaceError::Store(format!("{}: {e}", self.path.display())))?;
        let doc: MountsOnly = serde_yaml_ng::from_str(&text)
            .map_err(|e| NamespaceError::Store(format!("{}: {e}", self.path.display())))?;
        Ok(doc.mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mounts_and_ignores_other_sections() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("weir.yaml");
        std::fs::write(
            &f,
            "mounts:\n  - path: /\n    ufs: file:///tmp\n  - path: /s3\n    ufs: s3://b/p\n    options: {endpoint: 'http://x'}\ncache: {capacity: 1GiB}\n",
        )
        .unwrap();
        let m = FileStore::new(&f).load().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].options["endpoint"], "http://x");
    }

    #[test]
    fn unknown_mount_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("weir.yaml");
        std::fs::write(
            &f,
            "mounts:\n  - path: /\n    ufs: file:///tmp\n    bogus: 1\n",
        )
        .unwrap();
        let e = FileStore::new(&f).load().unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
