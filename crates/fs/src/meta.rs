//! Stat of a namespace path: files being written first, then mount points,
//! then the metadata cache (including the parent's cached listing), then
//! the UFS. Symlinks are only surfaced when the `symlinks` switch is on;
//! otherwise a symlink in a local UFS is hidden, never followed.

use weir_namespace::{Mount, split_name};
use weir_ufs::{Kind, Stat};

use crate::error::{FsError, Result};
use crate::{Fs, Place};

/// Largest object we probe for the symlink marker on object stores.
const SYMLINK_PROBE_MAX: u64 = 4096;

impl Fs {
    /// The attributes of `path`, from the freshest source that knows.
    pub(crate) async fn stat_path(&self, path: &str) -> Result<Stat> {
        if let Some(stat) = self.inner.pending.stat(path) {
            return Ok(stat);
        }
        self.stat_backing(path).await
    }

    /// The attributes of `path` in the mount table and the UFS, ignoring
    /// files being written.
    pub(crate) async fn stat_backing(&self, path: &str) -> Result<Stat> {
        let (mount, rel) = match self.place(path) {
            Place::Virtual => return Ok(Stat::dir()),
            Place::Outside => return Err(FsError::not_found(path)),
            Place::Ufs(mount, rel) => (mount, rel),
        };
        if rel.is_empty() {
            return Ok(Stat::dir());
        }
        let found = match self.cached_stat(path) {
            Some(found) => found,
            None => self.fetch_stat(path, &mount, &rel).await?,
        };
        match found {
            Some(stat) if stat.kind == Kind::Symlink && !self.inner.cfg.symlinks => {
                Err(FsError::not_found(path))
            }
            Some(stat) => Ok(stat),
            // A directory that only exists because a mount point is below it.
            None if !self.table().mount_children(path).is_empty() => Ok(Stat::dir()),
            None => Err(FsError::not_found(path)),
        }
    }

    fn cached_stat(&self, path: &str) -> Option<Option<Stat>> {
        let meta = &self.inner.meta;
        if let Some(found) = meta.stat(path) {
            return Some(found);
        }
        if self.needs_symlink_probe() {
            return None;
        }
        let (parent, name) = split_name(path);
        let listing = meta.list(parent)?;
        Some(
            listing
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.stat.clone()),
        )
    }

    async fn fetch_stat(&self, path: &str, mount: &Mount, rel: &str) -> Result<Option<Stat>> {
        let ufs = &mount.ufs;
        let mut stat = match ufs.stat(rel).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                self.inner.meta.put_stat(path, None);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if self.needs_symlink_probe()
            && !ufs.is_local()
            && stat.kind == Kind::File
            && stat.size <= SYMLINK_PROBE_MAX
            && let Some(target) = ufs.object_symlink_target(rel).await?
        {
            stat.kind = Kind::Symlink;
            stat.size = target.len() as u64;
        }
        self.inner.meta.put_stat(path, Some(stat.clone()));
        Ok(Some(stat))
    }

    /// Object stores keep symlinks as marked objects that a listing cannot
    /// tell from files, so with symlinks on, files need a HEAD each.
    fn needs_symlink_probe(&self) -> bool {
        self.inner.cfg.symlinks
    }

    /// Drops cached metadata of `path` and its parent's listing.
    pub(crate) fn invalidate(&self, path: &str) {
        let (parent, _) = split_name(path);
        self.inner.meta.invalidate(path, parent);
    }
}
