//! Where `weir fs` finds the daemon of a mount: each daemon registers its
//! mount point, cache directory and admin socket in a small file under
//! `$WEIR_RUN_DIR/mounts/` (default `/run/weir/mounts/`), named after the
//! mount point. A replacement daemon registers again; a daemon that exits
//! cleanly removes its file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable naming the run directory.
pub const RUN_DIR_ENV: &str = "WEIR_RUN_DIR";
const DEFAULT_RUN_DIR: &str = "/run/weir";

/// One daemon's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The mount point it serves.
    pub mountpoint: PathBuf,
    /// Its cache directory.
    pub cache_dir: PathBuf,
    /// Its admin socket.
    pub socket: PathBuf,
    /// Its PID.
    pub pid: u32,
}

/// The run directory now.
pub fn run_dir() -> PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
}

fn dir() -> PathBuf {
    run_dir().join("mounts")
}

/// The file name for a mount point: the path with `%` and `/` escaped.
fn file_name(mountpoint: &Path) -> String {
    let text = mountpoint.to_string_lossy();
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out.push_str(".json");
    out
}

/// `path` made absolute and free of symlinks without looking at its last
/// component, which may be a hung mount.
pub fn mount_path(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name),
        _ => abs,
    }
}

/// Records `reg`, replacing an earlier daemon's entry for its mount point.
pub fn register(reg: &Registration) -> std::io::Result<PathBuf> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(file_name(&reg.mountpoint));
    let tmp = path.with_extension(format!("{}.tmp", reg.pid));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(reg).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Removes the entry of `mountpoint` if daemon `pid` still owns it.
pub fn unregister(mountpoint: &Path, pid: u32) {
    let path = dir().join(file_name(mountpoint));
    if read(&path).is_some_and(|r| r.pid == pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// The entry of `mountpoint`, if any.
pub fn lookup(mountpoint: &Path) -> Option<Registration> {
    read(&dir().join(file_name(mountpoint)))
}

/// Every entry whose daemon is alive.
pub fn all_live() -> Vec<Registration> {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut regs: Vec<Registration> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| read(&e.path()))
        .filter(|r| Path::new(&format!("/proc/{}", r.pid)).exists())
        .collect();
    regs.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    regs
}

fn read(path: &Path) -> Option<Registration> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unambiguous() {
        assert_eq!(file_name(Path::new("/mnt/weir")), "%2Fmnt%2Fweir.json");
        assert_ne!(file_name(Path::new("/a%2Fb")), file_name(Path::new("/a/b")));
    }

    #[test]
    fn mount_paths_resolve_the_parent_only() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let got = mount_path(&link.join("mnt"));
        assert_eq!(got, dir.path().canonicalize().unwrap().join("mnt"));
    }
}
