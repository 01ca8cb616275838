//! Requests the kernel sends again after a takeover (FUSE_NOTIFY_RESEND).
//! The dead daemon may have carried one out and died before answering, so
//! each is made idempotent here: a resent change that finds its work done
//! answers as done, and brings the inode table in line with it. It is
//! announced again too: the dead daemon may have died before it could.

use crate::Fs;
use crate::error::{FsError, Result};
use crate::events::Change;
use crate::types::{Attr, Kind, RenameFlags};

impl Fs {
    /// `unlink` resent: a name already gone was removed by the dead daemon.
    pub async fn unlink_resent(&self, parent: u64, name: &str) -> Result<()> {
        match self.unlink(parent, name).await {
            Err(e) if e.errno() == libc::ENOENT => self.settle_removal(parent, name),
            r => r,
        }
    }

    /// `rmdir` resent: a directory already gone was removed by the dead daemon.
    pub async fn rmdir_resent(&self, parent: u64, name: &str) -> Result<()> {
        match self.rmdir(parent, name).await {
            Err(e) if e.errno() == libc::ENOENT => self.settle_removal(parent, name),
            r => r,
        }
    }

    fn settle_removal(&self, parent: u64, name: &str) -> Result<()> {
        let path = self.child_path(parent, name)?;
        tracing::info!(%path, "a resent removal found its work done");
        self.inner.inodes.lock().unlink(&path);
        self.announce(Change::Delete { path });
        Ok(())
    }

    /// `rename` resent: a source already gone, with its target in place,
    /// was moved by the dead daemon, which may not have moved its nodes.
    pub async fn rename_resent(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        flags: RenameFlags,
    ) -> Result<()> {
        let first = self.rename(parent, name, newparent, newname, flags).await;
        let Err(e) = &first else { return first };
        if e.errno() != libc::ENOENT {
            return first;
        }
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        if self.stat_path(&to).await.is_err() {
            return first;
        }
        tracing::info!(%from, %to, "a resent rename found its work done");
        self.inner.inodes.lock().rename(&from, &to);
        self.announce(Change::Rename { from, to });
        Ok(())
    }

    /// `mkdir` resent: a directory already there was made by the dead daemon.
    pub async fn mkdir_resent(&self, parent: u64, name: &str) -> Result<Attr> {
        match self.mkdir(parent, name).await {
            Err(e) if e.errno() == libc::EEXIST => {
                self.settle_creation(parent, name, Kind::Dir, e).await
            }
            r => r,
        }
    }

    /// `symlink` resent: a symlink already there was made by the dead daemon.
    pub async fn symlink_resent(&self, parent: u64, name: &str, target: &str) -> Result<Attr> {
        match self.symlink(parent, name, target).await {
            Err(e) if e.errno() == libc::EEXIST => {
                self.settle_creation(parent, name, Kind::Symlink, e).await
            }
            r => r,
        }
    }

    async fn settle_creation(
        &self,
        parent: u64,
        name: &str,
        kind: Kind,
        exists: FsError,
    ) -> Result<Attr> {
        let attr = self.lookup(parent, name).await?;
        if attr.kind != kind {
            self.forget(attr.ino, 1);
            return Err(exists);
        }
        tracing::info!(name, "a resent creation found its work done");
        if let Ok(path) = self.child_path(parent, name) {
            self.announce(Change::Write { path });
        }
        Ok(attr)
    }
}
