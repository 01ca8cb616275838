//! The etcd key layout of one weir cluster, in one place.
//!
//! Everything of cluster `NAME` lives under `/weir/NAME/`, so one prefix
//! watch sees every change and `etcdctl get --prefix /weir/NAME/` shows it all:
//!
//! - `/weir/NAME/mounts<PATH>`: one mount, the JSON of a `MountSpec`; the key
//!   ends with the normalised mount path (`/weir/NAME/mounts/` is the root
//!   mount, `/weir/NAME/mounts/s3` is `/s3`).
//! - `/weir/NAME/members/NODE`: one live node, under that node's lease.
//! - `/weir/NAME/events/INSTANCE`: the latest batch of path changes one
//!   running daemon published, under its lease; each put overwrites it, so
//!   the key space holds one key per live daemon and the history is left to
//!   etcd's compaction.

/// The keys of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: String,
}

/// What a key under the cluster prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyKind<'a> {
    /// A mount, by its mount path.
    Mount(&'a str),
    /// A member, by node id.
    Member(&'a str),
    /// An event batch, by daemon instance.
    Events(&'a str),
    /// Something weir does not write.
    Other,
}

const MOUNTS: &str = "mounts";
const MEMBERS: &str = "members/";
const EVENTS: &str = "events/";

impl Keys {
    /// The keys of cluster `name` (already validated).
    pub(crate) fn new(name: &str) -> Keys {
        Keys {
            root: format!("/weir/{name}/"),
        }
    }

    /// The prefix of everything in this cluster.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// The prefix of every mount key.
    pub(crate) fn mounts(&self) -> String {
        format!("{}{MOUNTS}/", self.root)
    }

    /// The key of the mount at normalised `path`.
    pub(crate) fn mount(&self, path: &str) -> String {
        format!("{}{MOUNTS}{path}", self.root)
    }

    /// The prefix of every member key.
    pub(crate) fn members(&self) -> String {
        format!("{}{MEMBERS}", self.root)
    }

    /// The key of member `node`.
    pub(crate) fn member(&self, node: &str) -> String {
        format!("{}{MEMBERS}{node}", self.root)
    }

    /// The key a daemon `instance` publishes its events under.
    pub(crate) fn events(&self, instance: &str) -> String {
        format!("{}{EVENTS}{instance}", self.root)
    }

    /// Classifies a key read from etcd.
    pub(crate) fn classify<'a>(&self, key: &'a str) -> KeyKind<'a> {
        let Some(rest) = key.strip_prefix(self.root.as_str()) else {
            return KeyKind::Other;
        };
        if let Some(path) = rest.strip_prefix(MOUNTS)
            && path.starts_with('/')
        {
            KeyKind::Mount(path)
        } else if let Some(node) = rest.strip_prefix(MEMBERS) {
            KeyKind::Member(node)
        } else if let Some(instance) = rest.strip_prefix(EVENTS) {
            KeyKind::Events(instance)
        } else {
            KeyKind::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_classify() {
        let k = Keys::new("prod");
        assert_eq!(k.mount("/"), "/weir/prod/mounts/");
        assert_eq!(k.classify(&k.mount("/")), KeyKind::Mount("/"));
        assert_eq!(k.classify(&k.mount("/a/b")), KeyKind::Mount("/a/b"));
        assert!(k.mount("/a").starts_with(&k.mounts()));
        assert_eq!(k.classify(&k.member("n1")), KeyKind::Member("n1"));
        assert_eq!(k.classify(&k.events("i-1")), KeyKind::Events("i-1"));
        assert_eq!(k.classify("/weir/prod/mountsx"), KeyKind::Other);
        assert_eq!(k.classify("/weir/other/mounts/a"), KeyKind::Other);
    }

    #[test]
    fn one_cluster_prefix_is_not_a_prefix_of_another() {
        let a = Keys::new("a");
        assert_eq!(a.classify(&Keys::new("ab").mount("/x")), KeyKind::Other);
    }
}
