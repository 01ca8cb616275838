//! Validation of the paths kubelet and users hand us, before anything on
//! disk is touched: a volume's `mountPath` inside the namespace, and a
//! target path inside kubelet's directory in kubelet's own layout.
//!
//! These checks are lexical. The walk that follows (in `syscalls`) opens
//! each component with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so that a
//! symlink planted in the namespace or in kubelet's dir cannot redirect it.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `..` component: refused even where it would stay inside.
    #[error("{0:?} contains '..'")]
    DotDot(String),
    /// A NUL byte.
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    /// Longer than the kernel takes.
    #[error("path of {0} bytes is too long")]
    TooLong(usize),
    /// Not absolute.
    #[error("{0:?} is not an absolute path")]
    Relative(String),
    /// Outside kubelet's directory.
    #[error("{path:?} is not inside the kubelet directory {kubelet}")]
    OutsideKubelet {
        /// The path.
        path: String,
        /// The kubelet dir.
        kubelet: String,
    },
    /// Inside kubelet's dir, but not where kubelet puts CSI volumes.
    #[error(
        "{0:?} is not a CSI volume target (<kubelet-dir>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount)"
    )]
    Layout(String),
}

const PATH_MAX: usize = 4096;

/// A `mountPath` normalised to `/` or `/a/b`. Empty means the root. A
/// leading `/` is optional: the path is always inside the namespace.
pub fn mount_path(raw: &str) -> Result<String, PathError> {
    check_bytes(raw)?;
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::DotDot(raw.to_string())),
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The components of a normalised mount path (none for the root).
pub fn components(mount_path: &str) -> impl Iterator<Item = &str> {
    mount_path.split('/').filter(|p| !p.is_empty())
}

fn check_bytes(raw: &str) -> Result<(), PathError> {
    if raw.contains('\0') {
        return Err(PathError::Nul(raw.to_string()));
    }
    if raw.len() > PATH_MAX {
        return Err(PathError::TooLong(raw.len()));
    }
    Ok(())
}

/// A target path, checked to be in kubelet's CSI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path relative to the kubelet dir:
    /// `pods/<uid>/volumes/kubernetes.io~csi/<name>/mount`.
    pub rel: PathBuf,
    /// The pod's UID, as kubelet names its directory.
    pub pod_uid: String,
}

/// Checks that `raw` is `<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<name>/mount`,
/// written plainly (no `.`, `..` or empty components).
pub fn target(kubelet: &Path, raw: &str) -> Result<Target, PathError> {
    check_bytes(raw)?;
    if !raw.starts_with('/') {
        return Err(PathError::Relative(raw.to_string()));
    }
    let trimmed = raw.trim_end_matches('/');
    if trimmed.split('/').skip(1).any(|p| p == "..") {
        return Err(PathError::DotDot(raw.to_string()));
    }
    if trimmed.split('/').skip(1).any(|p| p.is_empty() || p == ".") {
        return Err(PathError::Layout(raw.to_string()));
    }
    let rel = Path::new(trimmed)
        .strip_prefix(kubelet)
        .map_err(|_| PathError::OutsideKubelet {
            path: raw.to_string(),
            kubelet: kubelet.display().to_string(),
        })?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().unwrap_or(""),
            _ => "",
        })
        .collect();
    match parts.as_slice() {
        ["pods", uid, "volumes", "kubernetes.io~csi", name, "mount"]
            if !uid.is_empty() && !name.is_empty() =>
        {
            Ok(Target {
                rel: rel.to_path_buf(),
                pod_uid: (*uid).to_string(),
            })
        }
        _ => Err(PathError::Layout(raw.to_string())),
    }
}

/// The kubelet dir written plainly (no trailing `/`, no `.`), so that
/// targets can be compared with it component by component.
pub fn plain_dir(dir: &Path) -> PathBuf {
    dir.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_normalised() {
        assert_eq!(mount_path("").unwrap(), "/");
        assert_eq!(mount_path("/").unwrap(), "/");
        assert_eq!(mount_path("team-a").unwrap(), "/team-a");
        assert_eq!(mount_path("//team-a/./x/").unwrap(), "/team-a/x");
        assert_eq!(components("/a/b").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(components("/").count(), 0);
    }

    #[test]
    fn dot_dot_is_refused_even_when_it_stays_inside() {
        for bad in ["..", "/..", "/a/../b", "a/..", "/../etc"] {
            assert!(
                matches!(mount_path(bad), Err(PathError::DotDot(_))),
                "{bad}"
            );
        }
        assert!(matches!(mount_path("a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(
            mount_path(&"a/".repeat(3000)),
            Err(PathError::TooLong(_))
        ));
    }

    #[test]
    fn targets_must_be_in_kubelet_layout() {
        let k = Path::new("/var/lib/kubelet");
        let ok = "/var/lib/kubelet/pods/1234-ab/volumes/kubernetes.io~csi/data/mount";
        let t = target(k, ok).unwrap();
        assert_eq!(t.pod_uid, "1234-ab");
        assert_eq!(
            t.rel,
            Path::new("pods/1234-ab/volumes/kubernetes.io~csi/data/mount")
        );
        assert!(target(k, &format!("{ok}/")).is_ok());
        let cases = [
            ("/etc/passwd", "outside"),
            (
                "/var/lib/kubeletX/pods/u/volumes/kubernetes.io~csi/d/mount",
                "outside",
            ),
            (
                "var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/d/mount",
                "relative",
            ),
            (
                "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/d/../../../../../etc",
                "dotdot",
            ),
            (
                "/var/lib/kubelet/pods/../pods/u/volumes/kubernetes.io~csi/d/mount",
                "dotdot",
            ),
            ("/var/lib/kubelet/pods", "layout"),
            (
                "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/d",
                "layout",
            ),
            (
                "/var/lib/kubelet/pods/u/volumes/kubernetes.io~nfs/d/mount",
                "layout",
            ),
            (
                "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/d/mount/x",
                "layout",
            ),
            (
                "/var/lib/kubelet/pods//volumes/kubernetes.io~csi/d/mount",
                "layout",
            ),
            (
                "/var/lib/kubelet/pods/./u/volumes/kubernetes.io~csi/d/mount",
                "layout",
            ),
            (
                "/var/lib/kubelet/plugins/kubernetes.io/csi/x/mount",
                "layout",
            ),
        ];
        for (raw, why) in cases {
            let e = target(k, raw).unwrap_err();
            let got = match e {
                PathError::OutsideKubelet { .. } => "outside",
                PathError::Relative(_) => "relative",
                PathError::DotDot(_) => "dotdot",
                PathError::Layout(_) => "layout",
                _ => "other",
            };
            assert_eq!(got, why, "{raw}: {e}");
        }
    }

    #[test]
    fn kubelet_dir_is_written_plainly() {
        assert_eq!(plain_dir(Path::new("/k/./x/")), Path::new("/k/x"));
    }
}
