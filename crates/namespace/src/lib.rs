//! The mount table: which namespace path is served by which UFS root.
//!
//! weir joins many storage roots into one tree. A [`MountTable`] maps each
//! mount path (`/`, `/s3`, `/datasets/imagenet`) to an opened [`Ufs`], and
//! resolves any namespace path to the mount that serves it plus the path
//! relative to that mount's root. Ancestors of mount points that no mount
//! covers, and the root, are virtual directories.

mod path;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_ufs::{Tuning, Ufs};

pub use path::{PathError, child, join, normalize, parent, split_name};
pub use store::{FileStore, MountStore};

/// One entry of the mount table as the user writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// Namespace path of the mount point, such as `/` or `/s3`.
    pub path: String,
    /// The storage root, such as `file:///srv/data` or `s3://bucket/prefix`.
    pub ufs: String,
    /// OpenDAL configuration keys for that storage (`endpoint`, `region`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Why a mount table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A mount path is not a clean absolute path.
    #[error("mount path {path:?}: {source}")]
    BadPath {
        /// The offending path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: PathError,
    },
    /// Two mounts claim the same path.
    #[error("mount path {0:?} is listed twice")]
    Duplicate(String),
    /// The table is empty.
    #[error("the mount table is empty: give --ufs URI or a config file with `mounts`")]
    Empty,
    /// A UFS could not be opened.
    #[error("mount {path:?} ({uri}): {source}")]
    Ufs {
        /// The mount path.
        path: String,
        /// The storage URI (credentials removed).
        uri: String,
        /// The UFS error.
        #[source]
        source: weir_ufs::UfsError,
    },
    /// The store could not be read.
    #[error("mount store: {0}")]
    Store(String),
}

/// A mount with its storage opened.
#[derive(Debug)]
pub struct Mount {
    /// Normalised namespace path of the mount point.
    pub path: String,
    /// The storage behind it.
    pub ufs: Ufs,
    /// The spec it was built from.
    pub spec: MountSpec,
}

/// Where a namespace path lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Inside mount number `mount`, at `rel` relative to its root.
    Ufs {
        /// Index into [`MountTable::mounts`].
        mount: usize,
        /// UFS-relative path (no leading `/`; empty for the mount root).
        rel: String,
    },
    /// An ancestor of mount points that no mount covers: a read-only directory.
    Virtual,
    /// Outside every mount and not an ancestor of one.
    Outside,
}

/// The whole mount table, ready to resolve paths. Mounts are shared
/// (`Arc`), so a table built from a changed list keeps the opened storage of
/// every mount that did not change, and a handle that holds a mount keeps
/// using it after the table moved on.
#[derive(Debug, Default)]
pub struct MountTable {
    mounts: Vec<Arc<Mount>>,
}

impl MountTable {
    /// Validates `specs` and opens every UFS; any bad spec fails the table.
    pub fn open(specs: &[MountSpec], tuning: &Tuning) -> Result<MountTable, NamespaceError> {
        if specs.is_empty() {
            return Err(NamespaceError::Empty);
        }
        let mut table = MountTable::default();
        for spec in specs {
            table.add(spec, tuning, None)?;
        }
        Ok(table)
    }

    /// A table of every spec that can be served, reusing the mounts of
    /// `previous` whose spec is unchanged, and the reasons the others were
    /// left out. An empty table is allowed: in cluster mode the table is
    /// whatever the cluster holds, and one bad entry must not take the
    /// other mounts down with it.
    pub fn open_lenient(
        specs: &[MountSpec],
        tuning: &Tuning,
        previous: Option<&MountTable>,
    ) -> (MountTable, Vec<NamespaceError>) {
        let mut table = MountTable::default();
        let mut errors = Vec::new();
        for spec in specs {
            if let Err(e) = table.add(spec, tuning, previous) {
                errors.push(e);
            }
        }
        (table, errors)
    }

    fn add(
        &mut self,
        spec: &MountSpec,
        tuning: &Tuning,
        previous: Option<&MountTable>,
    ) -> Result<(), NamespaceError> {
        let path = normalize(&spec.path).map_err(|source| NamespaceError::BadPath {
            path: spec.path.clone(),
            source,
        })?;
        if self.mounts.iter().any(|m| m.path == path) {
            return Err(NamespaceError::Duplicate(path));
        }
        let reused = previous
            .and_then(|t| t.mounts.iter().find(|m| m.path == path && m.spec == *spec))
            .cloned();
        let mount = match reused {
            Some(m) => m,
            None => {
                let ufs =
                    Ufs::open(&spec.ufs, &spec.options, tuning.clone()).map_err(|source| {
                        NamespaceError::Ufs {
                            path: path.clone(),
                            uri: weir_ufs::uri::redact(&spec.ufs),
                            source,
                        }
                    })?;
                Arc::new(Mount {
                    path,
                    ufs,
                    spec: spec.clone(),
                })
            }
        };
        self.mounts.push(mount);
        Ok(())
    }

    /// The specs of the mounts served, in table order.
    pub fn specs(&self) -> Vec<MountSpec> {
        self.mounts.iter().map(|m| m.spec.clone()).collect()
    }

    /// All mounts, in table order.
    pub fn mounts(&self) -> &[Arc<Mount>] {
        &self.mounts
    }

    /// The mount with index `i`.
    pub fn mount(&self, i: usize) -> &Arc<Mount> {
        &self.mounts[i]
    }

    /// Finds the mount serving the normalised namespace path `path`.
    pub fn resolve(&self, path: &str) -> Resolved {
        let best = self
            .mounts
            .iter()
            .enumerate()
            .filter_map(|(i, m)| relative_to(&m.path, path).map(|rel| (i, m.path.len(), rel)))
            .max_by_key(|(_, len, _)| *len);
        if let Some((mount, _, rel)) = best {
            return Resolved::Ufs { mount, rel };
        }
        // The root is a directory even with no mount at all (an empty
        // cluster table), or the mount itself would be unusable.
        if path == "/"
            || self
                .mounts
                .iter()
                .any(|m| relative_to(path, &m.path).is_some())
        {
            Resolved::Virtual
        } else {
            Resolved::Outside
        }
    }

    /// Whether `path` is itself a mount point (or the virtual root).
    pub fn is_mount_point(&self, path: &str) -> bool {
        path == "/" || self.mounts.iter().any(|m| m.path == path)
    }

    /// Names under `dir` that exist because a mount point is at or below them.
    pub fn mount_children(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .mounts
            .iter()
            .filter_map(|m| relative_to(dir, &m.path))
            .filter(|rel| !rel.is_empty())
            .map(|rel| rel.split('/').next().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// `path` relative to `base` if `path` is `base` or below it (component-wise).
fn relative_to(base: &str, path: &str) -> Option<String> {
    if base == "/" {
        return Some(path.trim_start_matches('/').to_string());
    }
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        Some(String::new())
    } else {
        rest.strip_prefix('/').map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[&str]) -> (MountTable, Vec<tempfile::TempDir>) {
        let dirs: Vec<_> = paths.iter().map(|_| tempfile::tempdir().unwrap()).collect();
        let specs: Vec<_> = paths
            .iter()
            .zip(&dirs)
            .map(|(p, d)| MountSpec {
                path: p.to_string(),
                ufs: format!("file://{}", d.path().display()),
                options: BTreeMap::new(),
            })
            .collect();
        (MountTable::open(&specs, &Tuning::default()).unwrap(), dirs)
    }

    #[test]
    fn longest_prefix_wins() {
        let (t, _d) = table(&["/", "/s3", "/s3/deep"]);
        assert_eq!(
            t.resolve("/x/y"),
            Resolved::Ufs {
                mount: 0,
                rel: "x/y".into()
            }
        );
        assert_eq!(
            t.resolve("/s3"),
            Resolved::Ufs {
                mount: 1,
                rel: "".into()
            }
        );
        assert_eq!(
            t.resolve("/s3x"),
            Resolved::Ufs {
                mount: 0,
                rel: "s3x".into()
            }
        );
        assert_eq!(
            t.resolve("/s3/deep/f"),
            Resolved::Ufs {
                mount: 2,
                rel: "f".into()
            }
        );
    }

    #[test]
    fn ancestors_of_mounts_are_virtual() {
        let (t, _d) = table(&["/a/b", "/a/c/d"]);
        assert_eq!(t.resolve("/"), Resolved::Virtual);
        assert_eq!(t.resolve("/a"), Resolved::Virtual);
        assert_eq!(t.resolve("/a/c"), Resolved::Virtual);
        assert_eq!(t.resolve("/z"), Resolved::Outside);
        assert_eq!(t.mount_children("/"), vec!["a"]);
        assert_eq!(t.mount_children("/a"), vec!["b", "c"]);
        assert!(t.mount_children("/a/b").is_empty());
    }

    #[test]
    fn a_lenient_table_keeps_good_mounts_and_reuses_unchanged_ones() {
        let (first, _d) = table(&["/a", "/b"]);
        let mut specs = first.specs();
        specs.push(MountSpec {
            path: "/bad".into(),
            ufs: "bogus://x".into(),
            options: BTreeMap::new(),
        });
        specs[1].options.insert("changed".into(), "yes".into());
        let (next, errors) = MountTable::open_lenient(&specs, &Tuning::default(), Some(&first));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("/bad"), "{}", errors[0]);
        assert_eq!(next.mounts().len(), 2);
        assert!(
            Arc::ptr_eq(&next.mounts()[0], &first.mounts()[0]),
            "unchanged: reused"
        );
        assert!(
            !Arc::ptr_eq(&next.mounts()[1], &first.mounts()[1]),
            "changed: reopened"
        );
        let (empty, errors) = MountTable::open_lenient(&[], &Tuning::default(), None);
        assert!(empty.mounts().is_empty() && errors.is_empty());
        assert_eq!(empty.resolve("/x"), Resolved::Outside);
        assert_eq!(
            empty.resolve("/"),
            Resolved::Virtual,
            "the root is always there"
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        let spec = |p: &str, u: &str| MountSpec {
            path: p.into(),
            ufs: u.into(),
            options: BTreeMap::new(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let uri = format!("file://{}", tmp.path().display());
        let t = Tuning::default();
        assert!(matches!(
            MountTable::open(&[], &t),
            Err(NamespaceError::Empty)
        ));
        assert!(matches!(
            MountTable::open(&[spec("rel", &uri)], &t),
            Err(NamespaceError::BadPath { .. })
        ));
        assert!(matches!(
            MountTable::open(&[spec("/a", &uri), spec("/a/", &uri)], &t),
            Err(NamespaceError::Duplicate(_))
        ));
        assert!(matches!(
            MountTable::open(&[spec("/", "bogus://x")], &t),
            Err(NamespaceError::Ufs { .. })
        ));
    }
}
