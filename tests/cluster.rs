//! Cluster mode against a real etcd on loopback: two daemons on this
//! machine (separate mount points and cache dirs, one cluster) share the
//! mount table and each other's invalidations, well before a metadata TTL
//! of an hour; a stopped etcd changes nothing for reads and shows in
//! `weir fs mounts`; a restarted one is picked up again; a daemon that
//! starts while etcd is down serves the table it kept.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use weir_testkit::Etcd;

/// How long a change made on one node may take to show on the other.
const PROPAGATE: Duration = Duration::from_secs(10);

struct Node {
    mnt: PathBuf,
    cache: PathBuf,
    guard: MountGuard,
}

fn cluster_args(etcd: &Etcd, name: &str, node: &str) -> Vec<String> {
    vec![
        "--set".into(),
        format!("cluster.etcd=[{}]", etcd.endpoint()),
        "--set".into(),
        format!("cluster.name={name}"),
        "--set".into(),
        format!("cluster.node_id={node}"),
        // The default: a node whose etcd has only just started may need
        // more than a few seconds on a loaded machine. With etcd down it
        // falls back to its kept table at the first failed connect.
        "--set".into(),
        "cluster.start_timeout=10s".into(),
        // Long enough that only an invalidation can explain a fresh view.
        "--set".into(),
        "metadata.ttl=1h".into(),
    ]
}

fn start_node(tmp: &Path, etcd: &Etcd, name: &str, node: &str) -> Node {
    let mnt = tmp.join(format!("mnt-{node}"));
    let cache = tmp.join(format!("cache-{node}"));
    let args = cluster_args(etcd, name, node);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let guard = MountGuard::mount(&weir(), &mnt, &cache, &args)
        .unwrap_or_else(|e| panic!("mount {node} failed: {e}"));
    Node { mnt, cache, guard }
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn lists(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().any(|e| e.file_name() == name))
        .unwrap_or(false)
}

/// A cluster name no other test run shares.
fn cluster_name(what: &str) -> String {
    format!("{what}-{}", std::process::id())
}

#[test]
fn mount_table_and_changes_reach_the_other_daemon() {
    timed(LIMIT, || {
        let tmp = tempfile::tempdir().unwrap();
        let etcd = Etcd::start_new().expect("etcd");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("f"), b"one").unwrap();
        let name = cluster_name("share");
        let a = start_node(tmp.path(), &etcd, &name, "node-a");
        let b = start_node(tmp.path(), &etcd, &name, "node-b");

        // An empty table at first; a mount made through A serves on B.
        assert!(!exists(&b.mnt.join("f")));
        let uri = format!("file://{}", data.display());
        let out = weir_fs_ok(&a.cache, &["mount", "/", &uri]);
        assert!(out.contains("mounted /"), "{out}");
        let took = eventually(PROPAGATE, || exists(&b.mnt.join("f")))
            .unwrap_or_else(|| panic!("B never saw the mount; log:\n{}", b.guard.log()));
        eprintln!("mount table change reached B in {took:?}");
        assert_eq!(std::fs::read(b.mnt.join("f")).unwrap(), b"one");
        let mounts = weir_fs_ok(&b.cache, &["mounts"]);
        assert!(mounts.contains("node-b: connected"), "{mounts}");
        assert!(mounts.contains("members (2): node-a, node-b"), "{mounts}");

        // B has listed the root and stat-ed f: both are cached for an hour.
        assert!(!lists(&b.mnt, "g"));
        std::fs::write(a.mnt.join("g"), b"new file").unwrap();
        let took = eventually(PROPAGATE, || lists(&b.mnt, "g") && exists(&b.mnt.join("g")))
            .expect("B never saw the new file");
        eprintln!("create through A reached B in {took:?}");
        assert_eq!(std::fs::read(b.mnt.join("g")).unwrap(), b"new file");

        std::fs::write(a.mnt.join("f"), b"changed, and longer").unwrap();
        let took = eventually(PROPAGATE, || {
            std::fs::read(b.mnt.join("f")).is_ok_and(|d| d == b"changed, and longer")
        })
        .expect("B kept reading the old f");
        eprintln!("overwrite through A reached B in {took:?}");

        std::fs::rename(a.mnt.join("g"), a.mnt.join("h")).unwrap();
        let took = eventually(PROPAGATE, || {
            lists(&b.mnt, "h") && !lists(&b.mnt, "g") && !exists(&b.mnt.join("g"))
        })
        .expect("B never saw the rename");
        eprintln!("rename through A reached B in {took:?}");

        std::fs::remove_file(a.mnt.join("h")).unwrap();
        let took = eventually(PROPAGATE, || {
            !lists(&b.mnt, "h") && !exists(&b.mnt.join("h"))
        })
        .expect("B still sees the deleted file");
        eprintln!("delete through A reached B in {took:?}");

        // And back: an umount through B leaves A's namespace.
        weir_fs_ok(&b.cache, &["umount", "/"]);
        eventually(PROPAGATE, || !exists(&a.mnt.join("f"))).expect("A still serves /");
        drop((a, b));
    });
}

#[test]
fn a_stopped_etcd_changes_nothing_for_reads() {
    timed(LIMIT, || {
        let tmp = tempfile::tempdir().unwrap();
        let mut etcd = Etcd::start_new().expect("etcd");
        let data = tmp.path().join("data");
        let two = tmp.path().join("two");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&two).unwrap();
        let body = pattern(3 << 20, 7);
        std::fs::write(data.join("big"), &body).unwrap();
        std::fs::write(two.join("z"), b"zz").unwrap();
        let name = cluster_name("outage");
        let a = start_node(tmp.path(), &etcd, &name, "node-a");
        let mut b = start_node(tmp.path(), &etcd, &name, "node-b");
        weir_fs_ok(
            &a.cache,
            &["mount", "/", &format!("file://{}", data.display())],
        );
        eventually(PROPAGATE, || exists(&b.mnt.join("big"))).expect("B never saw the mount");

        etcd.stop();
        for n in [&a, &b] {
            assert_eq!(std::fs::read(n.mnt.join("big")).unwrap(), body);
        }
        eventually(PROPAGATE, || {
            weir_fs(&a.cache, &["mounts"])
                .stdout
                .contains("node-a: disconnected")
        })
        .expect("A never reported the outage");
        let out = weir_fs_ok(&a.cache, &["mounts"]);
        assert!(out.contains("serving the last known mount table"), "{out}");
        assert!(out.contains("members: unknown"), "{out}");
        // Writes through weir keep working too; their announcements wait.
        std::fs::write(a.mnt.join("during"), b"x").unwrap();
        assert_eq!(std::fs::read(a.mnt.join("during")).unwrap(), b"x");
        // A mount change needs etcd, and says so.
        let refused = weir_fs(
            &a.cache,
            &["mount", "/two", &format!("file://{}", two.display())],
        );
        assert!(
            !refused.ok && refused.stderr.contains("unavailable"),
            "{refused:?}"
        );

        // A daemon that starts now serves the table it kept.
        b.guard.unmount(Duration::from_secs(20));
        let b2 = start_node(tmp.path(), &etcd, &name, "node-b");
        assert_eq!(std::fs::read(b2.mnt.join("big")).unwrap(), body);
        let out = weir_fs_ok(&b2.cache, &["mounts"]);
        assert!(out.contains("the copy kept in the cache dir"), "{out}");
        // B's guard unmounted already: dropping it leaves B2 (same mount
        // point, same cache dir) alone.
        drop(b);

        etcd.start().expect("etcd again");
        eventually(PROPAGATE * 2, || {
            weir_fs(&a.cache, &["mounts"])
                .stdout
                .contains("node-a: connected")
        })
        .expect("A never reconnected");
        weir_fs_ok(
            &a.cache,
            &["mount", "/two", &format!("file://{}", two.display())],
        );
        // Both the daemon that lost etcd (A) and the one that started
        // without it (B2) follow the table again.
        for (who, n) in [("A", &a), ("B2", &b2)] {
            eventually(PROPAGATE * 2, || {
                std::fs::read(n.mnt.join("two/z")).is_ok_and(|d| d == b"zz")
            })
            .unwrap_or_else(|| {
                panic!(
                    "{who} never served /two after etcd came back; log:\n{}",
                    n.guard.log()
                )
            });
        }
        let out = weir_fs_ok(&b2.cache, &["mounts"]);
        assert!(out.contains("node-b: connected"), "{out}");
        drop((a, b2));
    });
}
