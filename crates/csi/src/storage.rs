//! The controller's access to the namespace's storage, without FUSE (the
//! controller runs unprivileged): removing a volume's directory tree
//! straight from the UFS that serves it, for `onDelete: delete`.

use std::sync::Arc;

use tokio::sync::OnceCell;
use weir_namespace::{MountSpec, MountTable, Resolved};
use weir_ufs::{Kind, Tuning, Ufs};

use crate::error::CsiError;

/// The namespace's storage, opened on first use.
#[derive(Debug)]
pub struct Storage {
    specs: Vec<MountSpec>,
    table: OnceCell<Arc<MountTable>>,
}

impl Storage {
    /// Storage of the mount table `specs`.
    pub fn new(specs: Vec<MountSpec>) -> Storage {
        Storage {
            specs,
            table: OnceCell::new(),
        }
    }

    async fn table(&self) -> Result<&Arc<MountTable>, CsiError> {
        self.table
            .get_or_try_init(|| async {
                MountTable::open(&self.specs, &Tuning::default())
                    .map(Arc::new)
                    .map_err(|e| CsiError::Internal(format!("cannot open the namespace: {e}")))
            })
            .await
    }

    /// Removes the directory `path` (normalised, not `/`) and everything
    /// in it. Refused when another mount of the table is at or below it:
    /// deleting one volume never reaches into other storage.
    pub async fn remove_tree(&self, path: &str) -> Result<(), CsiError> {
        let table = self.table().await?;
        if let Some(m) = table
            .mounts()
            .iter()
            .find(|m| m.path == path || m.path.starts_with(&format!("{path}/")))
        {
            return Err(CsiError::Precondition(format!(
                "{path} holds the mount point {} of other storage; not deleting it",
                m.path
            )));
        }
        let (ufs, rel) = match table.resolve(path) {
            Resolved::Ufs { mount, rel } if !rel.is_empty() => {
                (table.mount(mount).ufs.clone(), rel)
            }
            _ => {
                return Err(CsiError::Precondition(format!(
                    "{path} is not a directory of one storage"
                )));
            }
        };
        match ufs.stat(&rel).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(CsiError::Internal(format!("stat {path}: {e}"))),
            Ok(s) if s.kind != Kind::Dir => {
                return Err(CsiError::Precondition(format!("{path} is not a directory")));
            }
            Ok(_) => {}
        }
        remove_dir_all(&ufs, rel).await
    }
}

/// Depth-first removal, iterative (no recursion in async).
async fn remove_dir_all(ufs: &Ufs, root: String) -> Result<(), CsiError> {
    let fail =
        |what: &str, p: &str, e: weir_ufs::UfsError| CsiError::Internal(format!("{what} {p}: {e}"));
    // (dir, listed): a dir is removed once its children are.
    let mut stack = vec![(root, false)];
    while let Some((dir, listed)) = stack.pop() {
        if listed {
            match ufs.remove_dir(&dir).await {
                Err(e) if !e.is_not_found() => return Err(fail("remove", &dir, e)),
                _ => continue,
            }
        }
        stack.push((dir.clone(), true));
        let entries = ufs.list(&dir).await.map_err(|e| fail("list", &dir, e))?;
        for e in entries {
            let child = format!("{dir}/{}", e.name);
            if e.stat.kind == Kind::Dir {
                stack.push((child, false));
            } else {
                match ufs.delete(&child).await {
                    Err(err) if !err.is_not_found() => return Err(fail("delete", &child, err)),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}
