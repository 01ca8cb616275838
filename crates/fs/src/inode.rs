//! The inode table: kernel node ids to namespace paths, with lookup counts.
//!
//! The kernel refers to files by the node id we gave in a lookup reply and
//! tells us, through FORGET, when it drops its references. A node stays in
//! the table while the kernel holds lookups on it. Root is always node 1.
//!
//! With a [`Journal`], every change is recorded before the caller answers
//! the kernel, so a daemon taking over the connection can rebuild the table.

use std::collections::HashMap;
use std::sync::Arc;

use weir_namespace::child;
use weir_ufs::Kind;

use crate::journal::{Journal, NodeRecord};

/// The root directory's node id.
pub const ROOT_INO: u64 = 1;

#[derive(Debug, Clone)]
struct Node {
    path: String,
    kind: Kind,
    lookups: u64,
}

/// Node ids, paths and lookup counts.
#[derive(Debug)]
pub struct InodeTable {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
    journal: Option<Arc<Journal>>,
}

pub(crate) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
    }
}

pub(crate) fn kind_from_name(name: &str) -> Option<Kind> {
    match name {
        "file" => Some(Kind::File),
        "dir" => Some(Kind::Dir),
        "symlink" => Some(Kind::Symlink),
        _ => None,
    }
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    /// A table holding only the root.
    pub fn new() -> Self {
        let mut t = InodeTable {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next: ROOT_INO + 1,
            journal: None,
        };
        t.by_ino.insert(
            ROOT_INO,
            Node {
                path: "/".into(),
                kind: Kind::Dir,
                lookups: 1,
            },
        );
        t.by_path.insert("/".into(), ROOT_INO);
        t
    }

    /// Records every later change in `journal`.
    pub(crate) fn set_journal(&mut self, journal: Arc<Journal>) {
        self.journal = Some(journal);
    }

    /// A table rebuilt from journal records, ids and lookup counts as the
    /// kernel knows them. Records that do not parse are skipped with a
    /// warning: the kernel may then ask about ids we no longer know, which
    /// is answered ESTALE.
    pub(crate) fn restore(records: &[NodeRecord], max_ino: u64) -> Self {
        let mut t = InodeTable::new();
        t.next = t.next.max(max_ino + 1);
        for r in records {
            let Some(kind) = kind_from_name(&r.kind) else {
                tracing::warn!(ino = r.ino, kind = %r.kind, "skipping a journal node of unknown kind");
                continue;
            };
            let node = Node {
                path: r.path.clone(),
                kind,
                lookups: r.lookups,
            };
            if r.ino == ROOT_INO {
                continue;
            }
            t.by_ino.insert(r.ino, node);
            if r.linked {
                t.by_path.insert(r.path.clone(), r.ino);
            }
            t.next = t.next.max(r.ino + 1);
        }
        t
    }

    fn record(&self, ino: u64) {
        let (Some(j), Some(n)) = (&self.journal, self.by_ino.get(&ino)) else {
            return;
        };
        j.node(NodeRecord {
            ino,
            path: n.path.clone(),
            kind: kind_name(n.kind).into(),
            lookups: n.lookups,
            linked: self.by_path.get(&n.path) == Some(&ino),
        });
    }

    /// The node for `path`, created if new, with one more kernel lookup.
    pub fn lookup(&mut self, path: &str, kind: Kind) -> u64 {
        if let Some(&ino) = self.by_path.get(path)
            && let Some(node) = self.by_ino.get_mut(&ino)
        {
            node.lookups += 1;
            node.kind = kind;
            self.record(ino);
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(
            ino,
            Node {
                path: path.to_string(),
                kind,
                lookups: 1,
            },
        );
        self.by_path.insert(path.to_string(), ino);
        self.record(ino);
        ino
    }

    /// The node id of `path`, if the kernel knows one.
    pub fn peek(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The path of node `ino`.
    pub fn path(&self, ino: u64) -> Option<String> {
        self.by_ino.get(&ino).map(|n| n.path.clone())
    }

    /// The kind recorded for `ino` at its last lookup.
    pub fn kind(&self, ino: u64) -> Option<Kind> {
        self.by_ino.get(&ino).map(|n| n.kind)
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = self.by_ino.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            let path = node.path.clone();
            self.by_ino.remove(&ino);
            if self.by_path.get(&path) == Some(&ino) {
                self.by_path.remove(&path);
            }
            if let Some(j) = &self.journal {
                j.gone(ino);
            }
        } else {
            self.record(ino);
        }
    }

    /// `path` no longer names its node (it was unlinked); the node lives on
    /// until the kernel forgets it.
    pub fn unlink(&mut self, path: &str) {
        if let Some(ino) = self.by_path.remove(path) {
            self.record(ino);
        }
    }

    /// Moves `from` and everything below it to `to`, replacing whatever
    /// node `to` had.
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(replaced) = self.by_path.remove(to) {
            self.record(replaced);
        }
        let prefix = format!("{}/", from.trim_end_matches('/'));
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&prefix))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (old, ino) in moved {
            let new = if old == from {
                to.to_string()
            } else {
                child(to, &old[prefix.len()..])
            };
            self.by_path.remove(&old);
            if let Some(node) = self.by_ino.get_mut(&ino) {
                node.path = new.clone();
            }
            self.by_path.insert(new, ino);
            self.record(ino);
        }
    }

    /// Every path that names a node, with its id.
    pub(crate) fn linked(&self) -> Vec<(String, u64)> {
        self.by_path.iter().map(|(p, i)| (p.clone(), *i)).collect()
    }

    /// Number of nodes the kernel holds.
    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// Whether only the root is left.
    pub fn is_empty(&self) -> bool {
        self.by_ino.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_counted_and_forgotten() {
        let mut t = InodeTable::new();
        let a = t.lookup("/a", Kind::File);
        assert_eq!(t.lookup("/a", Kind::File), a);
        t.forget(a, 1);
        assert_eq!(t.path(a).as_deref(), Some("/a"));
        t.forget(a, 1);
        assert_eq!(t.path(a), None);
        assert_eq!(t.peek("/a"), None);
        assert_ne!(
            t.lookup("/a", Kind::File),
            a,
            "a forgotten id is not reused for the path"
        );
    }

    #[test]
    fn rename_moves_descendants() {
        let mut t = InodeTable::new();
        let d = t.lookup("/d", Kind::Dir);
        let f = t.lookup("/d/x/f", Kind::File);
        let other = t.lookup("/dd", Kind::File);
        t.rename("/d", "/e");
        assert_eq!(t.path(d).as_deref(), Some("/e"));
        assert_eq!(t.path(f).as_deref(), Some("/e/x/f"));
        assert_eq!(t.path(other).as_deref(), Some("/dd"));
        assert_eq!(t.peek("/e/x/f"), Some(f));
        assert_eq!(t.peek("/d/x/f"), None);
    }

    #[test]
    fn a_journaled_table_restores_ids_counts_and_unlinked_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::create(dir.path()).unwrap());
        let mut t = InodeTable::new();
        t.set_journal(j.clone());
        let a = t.lookup("/a", Kind::File);
        t.lookup("/a", Kind::File);
        let d = t.lookup("/d", Kind::Dir);
        let f = t.lookup("/d/f", Kind::File);
        let gone = t.lookup("/gone", Kind::File);
        t.forget(gone, 1);
        t.unlink("/a");
        t.rename("/d", "/e");
        let snap = j.snapshot();
        let r = InodeTable::restore(&snap.nodes, snap.max_ino);
        assert_eq!(r.path(a).as_deref(), Some("/a"));
        assert_eq!(
            r.peek("/a"),
            None,
            "an unlinked node keeps its id but not its name"
        );
        assert_eq!(r.path(f).as_deref(), Some("/e/f"));
        assert_eq!(r.peek("/e"), Some(d));
        assert_eq!(r.path(gone), None);
        let mut r = r;
        r.forget(a, 1);
        assert!(r.path(a).is_some(), "two lookups were journaled");
        r.forget(a, 1);
        assert!(r.path(a).is_none());
        assert!(
            r.lookup("/new", Kind::File) > gone,
            "new ids never reuse old ones"
        );
    }

    #[test]
    fn root_is_never_forgotten() {
        let mut t = InodeTable::new();
        t.forget(ROOT_INO, 100);
        assert_eq!(t.path(ROOT_INO).as_deref(), Some("/"));
    }
}
