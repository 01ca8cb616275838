//! A filesystem whose surroundings change while it serves: the mount table
//! swapped under open handles, changes announced to an observer, changes
//! made elsewhere invalidated, and the path-based API of the admin
//! endpoint (cached share, preload, drop).

use std::sync::Mutex;

use super::*;
use crate::{Change, ChangeObserver, KernelNotifier};

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Change>>);

impl ChangeObserver for Recorder {
    fn changed(&self, change: &Change) {
        self.0.lock().unwrap().push(change.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Debug, Default)]
struct Kernel(Mutex<Vec<String>>);

impl KernelNotifier for Kernel {
    fn inval_entry(&self, parent: u64, name: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("entry {parent} {name}"));
    }
    fn inval_inode(&self, ino: u64) {
        self.0.lock().unwrap().push(format!("inode {ino}"));
    }
}

fn spec(path: &str, dir: &Path) -> MountSpec {
    MountSpec {
        path: path.into(),
        ufs: format!("file://{}", dir.display()),
        options: BTreeMap::new(),
    }
}

fn table_of(specs: &[MountSpec]) -> MountTable {
    MountTable::open(specs, &Tuning::default()).unwrap()
}

#[tokio::test]
async fn a_new_table_shows_its_mounts_at_once() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        assert_eq!(errno(fs.lookup(ROOT_INO, "new").await), libc::ENOENT);
        let extra = tempfile::tempdir().unwrap();
        std::fs::write(extra.path().join("x"), b"hello").unwrap();
        let mut specs = e.specs.clone();
        specs.push(spec("/new", extra.path()));
        fs.set_table(table_of(&specs));
        assert!(names(fs, ROOT_INO).await.contains(&"new".to_string()));
        let dir = fs.lookup(ROOT_INO, "new").await.unwrap();
        let x = fs.lookup(dir.ino, "x").await.unwrap();
        assert_eq!(read_all(fs, x.ino).await.unwrap(), b"hello");
        // And gone again.
        fs.set_table(table_of(&e.specs));
        assert_eq!(errno(fs.lookup(ROOT_INO, "new").await), libc::ENOENT);
    })
    .await
}

#[tokio::test]
async fn open_handles_keep_the_mount_they_opened_on() {
    timed(async {
        let e = env_with(&["/", "/m"], |_| {});
        let fs = &e.fs;
        let data = pattern(3 * PAGE as usize, 4);
        std::fs::write(e.roots[1].path().join("r"), &data).unwrap();
        let m = fs.lookup(ROOT_INO, "m").await.unwrap();
        let r = fs.lookup(m.ino, "r").await.unwrap();
        let reader = fs.open(r.ino, RO).await.unwrap();
        let (_, writer) = fs.create(m.ino, "w", W_TRUNC).await.unwrap();
        // /m leaves the table while both are open.
        fs.set_table(table_of(&e.specs[..1]));
        assert_eq!(read_fh(fs, reader.fh).await.unwrap(), data);
        write_seq(fs, writer.fh, b"written after the swap")
            .await
            .unwrap();
        fs.release(writer.fh).await.unwrap();
        fs.release(reader.fh).await.unwrap();
        assert_eq!(
            std::fs::read(e.roots[1].path().join("w")).unwrap(),
            b"written after the swap",
            "the writer uploaded to the mount it opened on"
        );
        assert!(
            !e.root().join("w").exists(),
            "not to the mount now at its path"
        );
    })
    .await
}

#[tokio::test]
async fn successful_changes_are_announced_and_failed_ones_are_not() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let seen = Arc::new(Recorder::default());
        fs.set_observer(seen.clone());
        put(fs, ROOT_INO, "f", b"data").await;
        assert_eq!(seen.take(), [Change::Write { path: "/f".into() }]);
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        fs.rename(ROOT_INO, "f", d.ino, "g", RenameFlags::default())
            .await
            .unwrap();
        fs.unlink(d.ino, "g").await.unwrap();
        fs.rmdir(ROOT_INO, "d").await.unwrap();
        assert_eq!(
            seen.take(),
            [
                Change::Write { path: "/d".into() },
                Change::Rename {
                    from: "/f".into(),
                    to: "/d/g".into()
                },
                Change::Delete {
                    path: "/d/g".into()
                },
                Change::Delete { path: "/d".into() },
            ]
        );
        assert_eq!(errno(fs.unlink(ROOT_INO, "missing").await), libc::ENOENT);
        assert_eq!(errno(fs.rmdir(ROOT_INO, "missing").await), libc::ENOENT);
        assert!(seen.take().is_empty(), "failures are not announced");
    })
    .await
}

#[tokio::test]
async fn remote_changes_drop_cached_stats_listings_and_kernel_entries() {
    timed(async {
        let e = env(); // metadata TTL 60 s: only the invalidation can show changes
        let fs = &e.fs;
        let kernel = Arc::new(Kernel::default());
        fs.set_kernel_notifier(kernel.clone());
        std::fs::write(e.root().join("f"), b"one").unwrap();
        let f = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(names(fs, ROOT_INO).await, ["f"]);
        // Behind weir's back, as another node would.
        std::fs::write(e.root().join("f"), b"longer now").unwrap();
        std::fs::write(e.root().join("g"), b"new").unwrap();
        assert_eq!(fs.getattr(f.ino).await.unwrap().size, 3, "cached");
        assert_eq!(names(fs, ROOT_INO).await, ["f"], "cached");
        fs.invalidate_remote(&Change::Write { path: "/f".into() });
        assert_eq!(fs.getattr(f.ino).await.unwrap().size, 10);
        assert_eq!(
            names(fs, ROOT_INO).await,
            ["f", "g"],
            "the parent's listing too"
        );
        assert_eq!(
            *kernel.0.lock().unwrap(),
            [format!("entry {ROOT_INO} f"), format!("inode {}", f.ino)]
        );
        // A renamed directory takes its cached children with it.
        std::fs::create_dir(e.root().join("d")).unwrap();
        std::fs::write(e.root().join("d/x"), b"x").unwrap();
        fs.invalidate_remote(&Change::Write { path: "/d".into() });
        let d = fs.lookup(ROOT_INO, "d").await.unwrap();
        assert_eq!(names(fs, d.ino).await, ["x"]);
        std::fs::rename(e.root().join("d"), e.root().join("e")).unwrap();
        assert!(fs.lookup(d.ino, "x").await.is_ok(), "cached");
        fs.invalidate_remote(&Change::Rename {
            from: "/d".into(),
            to: "/e".into(),
        });
        assert_eq!(errno(fs.lookup(d.ino, "x").await), libc::ENOENT);
    })
    .await
}

#[tokio::test]
async fn dropping_all_metadata_forgets_every_cached_stat() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let kernel = Arc::new(Kernel::default());
        fs.set_kernel_notifier(kernel.clone());
        std::fs::write(e.root().join("f"), b"one").unwrap();
        let f = fs.lookup(ROOT_INO, "f").await.unwrap();
        std::fs::write(e.root().join("f"), b"three").unwrap();
        assert_eq!(fs.getattr(f.ino).await.unwrap().size, 3);
        fs.drop_metadata();
        assert_eq!(fs.getattr(f.ino).await.unwrap().size, 5);
        assert!(
            kernel
                .0
                .lock()
                .unwrap()
                .contains(&format!("entry {ROOT_INO} f")),
            "every name the kernel holds is invalidated"
        );
    })
    .await
}

#[tokio::test]
async fn load_fills_the_cache_once_and_drop_empties_it() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let size = 5 * PAGE as usize + 77;
        std::fs::write(e.root().join("f"), pattern(size, 3)).unwrap();
        let before = fs.cached_at("/f").await.unwrap();
        assert_eq!((before.size, before.cached), (size as u64, 0));
        let seen = std::sync::atomic::AtomicU64::new(0);
        let add = |n: u64| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let first = fs.load_at("/f", &add).await.unwrap();
        assert_eq!((first.already, first.fetched), (0, size as u64));
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), size as u64);
        assert_eq!(fs.cached_at("//f").await.unwrap().cached, size as u64);
        let again = fs.load_at("/f", &add).await.unwrap();
        assert_eq!((again.already, again.fetched), (size as u64, 0), "a no-op");
        assert_eq!(fs.drop_cached_at("/f").await.unwrap(), size as u64);
        assert_eq!(fs.cached_at("/f").await.unwrap().cached, 0);
        // A changed object is a new version: nothing of it is cached.
        fs.load_at("/f", &add).await.unwrap();
        std::fs::write(e.root().join("f"), pattern(size, 4)).unwrap();
        fs.invalidate_remote(&Change::Write { path: "/f".into() });
        assert_eq!(fs.cached_at("/f").await.unwrap().cached, 0);
    })
    .await
}

#[tokio::test]
async fn path_api_errors_name_the_problem() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), b"x").unwrap();
        std::fs::create_dir(e.root().join("d")).unwrap();
        assert_eq!(errno(fs.stat_at("/missing").await), libc::ENOENT);
        assert_eq!(errno(fs.list_at("/f").await), libc::ENOTDIR);
        assert_eq!(errno(fs.cached_at("/d").await), libc::EISDIR);
        assert_eq!(errno(fs.load_at("/missing", &|_| {}).await), libc::ENOENT);
        assert_eq!(errno(fs.stat_at("/a/../b").await), libc::EINVAL);
        let names: Vec<String> = fs
            .list_at("/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["d", "f"]);
    })
    .await
}
