//! Directories and namespace changes: listings (merging the UFS, mount
//! points and files being written), mkdir, rmdir, unlink, rename, symlinks.

use std::sync::Arc;

use weir_namespace::{Mount, child};
use weir_ufs::{Entry, Kind, Stat};

use crate::error::{FsError, Result};
use crate::events::Change;
use crate::handle::{DirHandle, Handle};
use crate::types::{Attr, DirEntry, RenameFlags};
use crate::{Fs, Place, policy};

/// Node ids shown in listings for nodes the kernel has not looked up: a
/// stable hash of the path with the top bit set, so it never collides with
/// the ids of the inode table.
fn listing_ino(path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | (1 << 63)
}

impl Fs {
    /// The children of directory `path`, with their attributes.
    pub(crate) async fn listing(&self, path: &str) -> Result<Vec<Entry>> {
        let table = self.table();
        let mut entries: Vec<Entry> = match self.place(path) {
            Place::Outside => return Err(FsError::not_found(path)),
            Place::Virtual => Vec::new(),
            Place::Ufs(mount, rel) => self.ufs_listing(path, &mount, &rel).await?,
        };
        if !self.inner.cfg.symlinks {
            entries.retain(|e| e.stat.kind != Kind::Symlink);
        }
        for name in table.mount_children(path) {
            entries.retain(|e| e.name != name);
            entries.push(Entry {
                name,
                stat: Stat::dir(),
            });
        }
        for name in self.inner.pending.children(path) {
            if let Some(stat) = self.inner.pending.stat(&child(path, &name)) {
                entries.retain(|e| e.name != name);
                entries.push(Entry { name, stat });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    async fn ufs_listing(&self, path: &str, mount: &Mount, rel: &str) -> Result<Vec<Entry>> {
        if let Some(cached) = self.inner.meta.list(path) {
            return Ok(cached.as_ref().clone());
        }
        let ufs = &mount.ufs;
        let entries = match ufs.list(rel).await {
            Ok(e) => e,
            // A directory that exists only as an ancestor of a mount point.
            Err(e) if e.is_not_found() && !self.table().mount_children(path).is_empty() => {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        for e in &entries {
            self.inner
                .meta
                .put_stat(&child(path, &e.name), Some(e.stat.clone()));
        }
        self.inner.meta.put_list(path, Arc::new(entries.clone()));
        Ok(entries)
    }

    /// Opens directory `ino`, taking a snapshot of its entries.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        self.opendir_from(ino, crate::Origin::default()).await
    }

    /// Opens directory `ino` for the request `origin`.
    pub async fn opendir_from(&self, ino: u64, origin: crate::Origin) -> Result<u64> {
        if let Some(fh) = self.handle_of_request(origin.unique) {
            return Ok(fh);
        }
        let path = self.path_of(ino)?;
        let stat = self.stat_path(&path).await?;
        if stat.kind != Kind::Dir {
            return Err(FsError::new(
                libc::ENOTDIR,
                format!("{path} is not a directory"),
            ));
        }
        let entries = self.dir_entries(&path).await?;
        let fh = self.new_fh();
        let handle = DirHandle {
            path,
            unique: origin.unique,
            entries: tokio::sync::OnceCell::new_with(Some(entries)),
        };
        self.add_handle(fh, Handle::Dir(Arc::new(handle)));
        Ok(fh)
    }

    /// `.`, `..` and the listing of `path`, with the node ids the kernel knows.
    async fn dir_entries(&self, path: &str) -> Result<Vec<DirEntry>> {
        let listing = self.listing(path).await?;
        let inodes = self.inner.inodes.lock();
        let ino = inodes.peek(path).unwrap_or(crate::ROOT_INO);
        let parent_ino = inodes.peek(weir_namespace::parent(path)).unwrap_or(ino);
        let mut entries = Vec::with_capacity(listing.len() + 2);
        entries.push(DirEntry {
            ino,
            kind: Kind::Dir,
            name: ".".into(),
        });
        entries.push(DirEntry {
            ino: parent_ino,
            kind: Kind::Dir,
            name: "..".into(),
        });
        for e in listing {
            let p = child(path, &e.name);
            entries.push(DirEntry {
                ino: inodes.peek(&p).unwrap_or_else(|| listing_ino(&p)),
                kind: e.stat.kind,
                name: e.name,
            });
        }
        Ok(entries)
    }

    /// Entries of an open directory from position `offset` on.
    pub async fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let dir = self.dir_handle(fh)?;
        // Only a handle restored after a takeover lists here: its snapshot
        // died with the previous daemon.
        let entries = dir
            .entries
            .get_or_try_init(|| self.dir_entries(&dir.path))
            .await?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(entries.len());
        Ok(entries[start..].to_vec())
    }

    /// Closes an open directory.
    pub fn releasedir(&self, fh: u64) {
        self.remove_handle(fh);
    }

    fn check_not_mount(&self, path: &str) -> Result<()> {
        let table = self.table();
        if table.is_mount_point(path) || !table.mount_children(path).is_empty() {
            return Err(FsError::new(
                libc::EBUSY,
                format!("{path} is (or holds) a mount point"),
            ));
        }
        Ok(())
    }

    /// Creates directory `name` in `parent`.
    pub async fn mkdir(&self, parent: u64, name: &str) -> Result<Attr> {
        let path = self.child_path(parent, name)?;
        policy::check_writable(self.inner.cfg.read_only, &path)?;
        if self.stat_path(&path).await.is_ok() {
            return Err(FsError::new(libc::EEXIST, format!("{path} exists")));
        }
        let (mount, rel) = self.ufs_of(&path)?;
        mount.ufs.create_dir(&rel).await?;
        self.invalidate(&path);
        self.inner.meta.put_stat(&path, Some(Stat::dir()));
        self.announce(Change::Write { path });
        self.lookup(parent, name).await
    }

    /// Removes file `name` from `parent`.
    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        let path = self.child_path(parent, name)?;
        policy::check_writable(self.inner.cfg.read_only, &path)?;
        self.check_not_mount(&path)?;
        let stat = self.stat_path(&path).await?;
        if stat.kind == Kind::Dir {
            return Err(FsError::new(libc::EISDIR, format!("{path} is a directory")));
        }
        let (mount, rel) = self.ufs_of(&path)?;
        let was_pending = self.inner.pending.stat(&path).is_some();
        self.unlink_writers(&path).await;
        self.keep_open_readers(&path, false).await;
        match mount.ufs.delete(&rel).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() && was_pending => {}
            Err(e) => return Err(e.into()),
        }
        self.invalidate(&path);
        self.inner.inodes.lock().unlink(&path);
        self.announce(Change::Delete { path });
        Ok(())
    }

    /// Removes the empty directory `name` from `parent`.
    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        let path = self.child_path(parent, name)?;
        policy::check_writable(self.inner.cfg.read_only, &path)?;
        self.check_not_mount(&path)?;
        let stat = self.stat_path(&path).await?;
        if stat.kind != Kind::Dir {
            return Err(FsError::new(
                libc::ENOTDIR,
                format!("{path} is not a directory"),
            ));
        }
        if !self.inner.pending.children(&path).is_empty() {
            return Err(FsError::new(
                libc::ENOTEMPTY,
                format!("{path} has files being written"),
            ));
        }
        let (mount, rel) = self.ufs_of(&path)?;
        mount.ufs.remove_dir(&rel).await?;
        self.invalidate(&path);
        self.inner.meta.invalidate_tree(&path);
        self.inner.inodes.lock().unlink(&path);
        self.announce(Change::Delete { path });
        Ok(())
    }

    /// Renames `parent/name` to `newparent/newname`, replacing a file or an
    /// empty directory there, as rename(2) does.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        flags: RenameFlags,
    ) -> Result<()> {
        if flags.exchange {
            return Err(FsError::unsupported("RENAME_EXCHANGE"));
        }
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        policy::check_writable(self.inner.cfg.read_only, &from)?;
        if from == to {
            // A no-op, as in rename(2), but only for a name that exists.
            self.stat_path(&from).await?;
            return Ok(());
        }
        self.check_not_mount(&from)?;
        self.check_not_mount(&to)?;
        let (mount, from_rel) = self.ufs_of(&from)?;
        let (to_mount, to_rel) = self.ufs_of(&to)?;
        if !Arc::ptr_eq(&mount, &to_mount) {
            return Err(FsError::new(
                libc::EXDEV,
                format!("{from} and {to} are on different mounts"),
            ));
        }
        let src = self.stat_path(&from).await?;
        if src.kind == Kind::Dir && to.starts_with(&format!("{from}/")) {
            return Err(FsError::new(
                libc::EINVAL,
                format!("cannot move {from} into itself"),
            ));
        }
        let ufs = &mount.ufs;
        match self.stat_path(&to).await {
            Ok(_) if flags.no_replace => {
                return Err(FsError::new(libc::EEXIST, format!("{to} exists")));
            }
            Ok(dst) => match (src.kind, dst.kind) {
                (Kind::Dir, Kind::Dir) => {
                    if !self.listing(&to).await?.is_empty() {
                        return Err(FsError::new(libc::ENOTEMPTY, format!("{to} is not empty")));
                    }
                    if !ufs.is_local() {
                        ufs.remove_dir(&to_rel).await?;
                    }
                }
                (Kind::Dir, _) => {
                    return Err(FsError::new(
                        libc::ENOTDIR,
                        format!("{to} is not a directory"),
                    ));
                }
                (_, Kind::Dir) => {
                    return Err(FsError::new(libc::EISDIR, format!("{to} is a directory")));
                }
                // The replaced file is gone: its open writers must not
                // upload over the file renamed into its place.
                _ => {
                    self.unlink_writers(&to).await;
                    self.keep_open_readers(&to, false).await;
                }
            },
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
        self.move_writers(&from, &to).await?;
        self.keep_open_readers(&from, src.kind == Kind::Dir).await;
        let result = ufs.rename(&from_rel, &to_rel, src.kind).await;
        for p in [&from, &to] {
            self.invalidate(p);
            self.inner.meta.invalidate_tree(p);
        }
        result?;
        self.inner.inodes.lock().rename(&from, &to);
        self.announce(Change::Rename { from, to });
        Ok(())
    }

    /// Creates symlink `name` in `parent` pointing at `target`.
    pub async fn symlink(&self, parent: u64, name: &str, target: &str) -> Result<Attr> {
        policy::check_symlinks(self.inner.cfg.symlinks)?;
        let path = self.child_path(parent, name)?;
        policy::check_writable(self.inner.cfg.read_only, &path)?;
        if self.stat_path(&path).await.is_ok() {
            return Err(FsError::new(libc::EEXIST, format!("{path} exists")));
        }
        let (mount, rel) = self.ufs_of(&path)?;
        mount.ufs.symlink(&rel, target).await?;
        self.invalidate(&path);
        self.announce(Change::Write { path });
        self.lookup(parent, name).await
    }

    /// The target of symlink `ino`.
    pub async fn readlink(&self, ino: u64) -> Result<String> {
        policy::check_symlinks(self.inner.cfg.symlinks)?;
        let path = self.path_of(ino)?;
        let (mount, rel) = self.ufs_of(&path)?;
        Ok(mount.ufs.readlink(&rel).await?)
    }
}
