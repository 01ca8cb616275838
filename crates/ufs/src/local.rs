//! Stat, listing and namespace changes for `file://` roots, done with plain
//! syscalls so that symlinks are seen as symlinks (`lstat`) and no path is
//! ever resolved outside the root.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, UfsError};
use crate::{Entry, Kind, LOCAL_STAGING_DIR, Stat};

/// Joins `rel` to `root`, refusing absolute paths and `..`.
fn join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(UfsError::Escape(rel.to_string()));
    }
    Ok(root.join(p))
}

/// Resolves `rel` (following symlinks) and fails unless it stays inside
/// `root`. A missing final component is checked through its parent.
pub(crate) async fn confine(root: &Path, rel: &str) -> Result<()> {
    let full = join(root, rel)?;
    let root = root.to_path_buf();
    let rel = rel.to_string();
    blocking(move || {
        let resolved = match std::fs::canonicalize(&full) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = full.parent().unwrap_or(&root);
                std::fs::canonicalize(parent).map_err(|e| UfsError::io(rel.clone(), e))?
            }
            Err(e) => return Err(UfsError::io(rel, e)),
        };
        if resolved.starts_with(&root) {
            Ok(())
        } else {
            Err(UfsError::Escape(rel))
        }
    })
    .await
}

/// Checks that the parent of `rel` stays inside `root`.
async fn confine_parent(root: &Path, rel: &str) -> Result<()> {
    match rel.rsplit_once('/') {
        Some((parent, _)) => confine(root, parent).await,
        None => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UfsError::io("blocking task", io::Error::other(e)))?
}

fn stat_of(meta: &std::fs::Metadata) -> Stat {
    use std::os::unix::fs::MetadataExt;
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    };
    Stat {
        kind,
        size: if kind == Kind::Dir { 0 } else { meta.len() },
        mtime: meta.modified().ok(),
        // mtime and size alone miss a same-size rewrite that keeps the mtime
        // (rsync -t, touch -r); the inode and ctime cannot be set by hand.
        etag: (kind == Kind::File).then(|| {
            format!(
                "local:{}:{}.{:09}",
                meta.ino(),
                meta.ctime(),
                meta.ctime_nsec()
            )
        }),
    }
}

pub(crate) async fn stat(root: &Path, rel: &str) -> Result<Stat> {
    confine_parent(root, rel).await?;
    let full = join(root, rel)?;
    let rel = rel.to_string();
    blocking(move || {
        let meta = std::fs::symlink_metadata(&full).map_err(|e| UfsError::io(rel, e))?;
        Ok(stat_of(&meta))
    })
    .await
}

pub(crate) async fn list(root: &Path, dir: &str) -> Result<Vec<Entry>> {
    if !dir.is_empty() {
        confine(root, dir).await?;
    }
    let full = join(root, dir)?;
    let at_root = dir.is_empty();
    let dir = dir.to_string();
    blocking(move || {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&full).map_err(|e| UfsError::io(dir.clone(), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| UfsError::io(dir.clone(), e))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                tracing::warn!(dir = %dir, "skipping a name that is not UTF-8");
                continue;
            };
            if at_root && name == LOCAL_STAGING_DIR {
                continue;
            }
            match ent.path().symlink_metadata() {
                Ok(meta) => out.push(Entry {
                    name,
                    stat: stat_of(&meta),
                }),
                // Removed between readdir and lstat: not an error.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(UfsError::io(format!("{dir}/{name}"), e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    })
    .await
}

async fn run_io(
    root: &Path,
    rel: &str,
    f: impl FnOnce(PathBuf) -> io::Result<()> + Send + 'static,
) -> Result<()> {
    confine_parent(root, rel).await?;
    let full = join(root, rel)?;
    let rel = rel.to_string();
    blocking(move || f(full).map_err(|e| map_io(rel, e))).await
}

fn map_io(rel: String, e: io::Error) -> UfsError {
    match e.kind() {
        io::ErrorKind::AlreadyExists => UfsError::AlreadyExists(rel),
        io::ErrorKind::DirectoryNotEmpty => UfsError::NotEmpty(rel),
        io::ErrorKind::PermissionDenied => UfsError::PermissionDenied(rel),
        _ => UfsError::io(rel, e),
    }
}

pub(crate) async fn create_dir(root: &Path, rel: &str) -> Result<()> {
    run_io(root, rel, std::fs::create_dir).await
}

pub(crate) async fn remove_dir(root: &Path, rel: &str) -> Result<()> {
    run_io(root, rel, std::fs::remove_dir).await
}

pub(crate) async fn remove_file(root: &Path, rel: &str) -> Result<()> {
    run_io(root, rel, std::fs::remove_file).await
}

pub(crate) async fn symlink(root: &Path, rel: &str, target: &str) -> Result<()> {
    let target = target.to_string();
    run_io(root, rel, move |p| std::os::unix::fs::symlink(target, p)).await
}

pub(crate) async fn readlink(root: &Path, rel: &str) -> Result<String> {
    confine_parent(root, rel).await?;
    let full = join(root, rel)?;
    let rel = rel.to_string();
    blocking(move || {
        let t = std::fs::read_link(&full).map_err(|e| map_io(rel, e))?;
        Ok(t.to_string_lossy().into_owned())
    })
    .await
}

pub(crate) async fn rename(root: &Path, from: &str, to: &str) -> Result<()> {
    confine_parent(root, to).await?;
    let dst = join(root, to)?;
    run_io(root, from, move |src| std::fs::rename(src, dst)).await
}

static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What an atomic write puts in place.
pub(crate) enum Content {
    /// A local file's content.
    File(PathBuf),
    /// These bytes.
    Bytes(bytes::Bytes),
}

/// Writes `content` to a short temporary name in the root's staging dir,
/// syncs it, and renames it over `rel`: readers see the old file or the
/// whole new one, and any legal name (up to 255 bytes) works.
pub(crate) async fn write_atomic(root: &Path, rel: &str, content: Content) -> Result<()> {
    confine_parent(root, rel).await?;
    let dst = join(root, rel)?;
    let n = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = root
        .join(LOCAL_STAGING_DIR)
        .join(format!("{}-{n}", std::process::id()));
    let rel = rel.to_string();
    blocking(move || {
        let written = (|| {
            match &content {
                Content::File(src) => {
                    std::fs::copy(src, &tmp)?;
                }
                Content::Bytes(b) => std::fs::write(&tmp, b)?,
            }
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &dst)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(|e| map_io(rel, e))
    })
    .await
}
