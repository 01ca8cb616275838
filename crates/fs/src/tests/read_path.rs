//! Paged reads, the page cache, and how metadata TTLs show.

use std::sync::atomic::Ordering;

use super::*;

/// Three full pages and a partial one.
const SIZE: usize = 3 * PAGE as usize + 123;

#[tokio::test]
async fn reads_spanning_pages_return_exact_bytes() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let data = pattern(SIZE, 9);
        std::fs::write(e.root().join("f"), &data).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(attr.size, SIZE as u64);
        let p = PAGE as usize;
        let cases: &[(usize, u32)] = &[
            (0, 10),
            (p - 1, 2),
            (p - 10, PAGE as u32 + 20),
            (2 * p, PAGE as u32),
            (p / 2, 3 * PAGE as u32),
            (3 * p, 200),
            (3 * p + 100, 1000),
            (SIZE - 1, 10),
            (0, SIZE as u32 + 4096),
            (5, 0),
        ];
        for &(off, len) in cases {
            // A fresh handle each time, and the same one for all.
            let opened = fs.open(attr.ino, RO).await.unwrap();
            let got = fs.read(opened.fh, off as u64, len).await.unwrap();
            fs.release(opened.fh).await.unwrap();
            let end = (off + len as usize).min(SIZE);
            assert_eq!(&got[..], &data[off..end], "read({off}, {len})");
        }
        let opened = fs.open(attr.ino, RO).await.unwrap();
        for &(off, len) in cases.iter().rev() {
            let got = fs.read(opened.fh, off as u64, len).await.unwrap();
            let end = (off + len as usize).min(SIZE);
            assert_eq!(&got[..], &data[off..end], "read({off}, {len})");
        }
        // Past the end.
        for off in [SIZE as u64, SIZE as u64 + 1, 10 * PAGE] {
            assert!(fs.read(opened.fh, off, 100).await.unwrap().is_empty());
        }
        // Sequential reads in odd chunks rebuild the file.
        let mut all = Vec::new();
        loop {
            let chunk = fs.read(opened.fh, all.len() as u64, 1000).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            all.extend_from_slice(&chunk);
        }
        assert_eq!(all, data);
        fs.release(opened.fh).await.unwrap();
        // A file written through weir reads back the same way.
        let w = put(fs, ROOT_INO, "w", &data).await;
        assert_eq!(read_all(fs, w.ino).await.unwrap(), data);
        // An empty file.
        let z = put(fs, ROOT_INO, "z", b"").await;
        assert!(read_all(fs, z.ino).await.unwrap().is_empty());
    })
    .await
}

#[tokio::test]
async fn reads_fill_the_page_cache() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let data = pattern(SIZE, 10);
        std::fs::write(e.root().join("f"), &data).unwrap();
        assert_eq!(fs.pages().used(), 0);
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), data);
        assert!(fs.pages().used() > 0);
        assert!(fs.pages().used() <= SIZE.div_ceil(PAGE as usize) as u64 * PAGE);
        // A second reader is served from the cache.
        let hits = fs.pages().stats().hits.load(Ordering::Relaxed);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), data);
        assert!(fs.pages().stats().hits.load(Ordering::Relaxed) > hits);
    })
    .await
}

#[tokio::test]
async fn open_handle_after_rename_or_unlink() {
    timed(async {
        // No read-ahead, so that the second page is not cached.
        let e = env_with(&["/"], |c| c.readahead_pages = 0);
        let fs = &e.fs;
        let data = pattern(2 * PAGE as usize, 15);
        std::fs::write(e.root().join("f"), &data).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        let opened = fs.open(attr.ino, RO).await.unwrap();
        assert_eq!(fs.read(opened.fh, 0, 10).await.unwrap(), &data[..10]);
        fs.rename(ROOT_INO, "f", ROOT_INO, "g", RenameFlags::default())
            .await
            .unwrap();
        // Pages already cached are still served, and the rest was fetched
        // before the name went: the handle reads its whole version.
        assert_eq!(fs.read(opened.fh, 0, 10).await.unwrap(), &data[..10]);
        let second = PAGE as usize..PAGE as usize + 10;
        assert_eq!(
            fs.read(opened.fh, PAGE, 10).await.unwrap(),
            &data[second.clone()]
        );
        fs.release(opened.fh).await.unwrap();

        // The same after an unlink.
        let g = fs.lookup(ROOT_INO, "g").await.unwrap();
        let opened = fs.open(g.ino, RO).await.unwrap();
        assert_eq!(fs.read(opened.fh, 0, 10).await.unwrap(), &data[..10]);
        fs.unlink(ROOT_INO, "g").await.unwrap();
        // A new file of that name is never read through the old handle.
        std::fs::write(e.root().join("g"), pattern(2 * PAGE as usize, 16)).unwrap();
        assert_eq!(fs.read(opened.fh, PAGE, 10).await.unwrap(), &data[second]);
        fs.release(opened.fh).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn concurrent_reads_agree() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let data = Arc::new(pattern(8 * PAGE as usize + 7, 11));
        std::fs::write(e.root().join("f"), &*data).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        let tasks: Vec<_> = (0..8u64)
            .map(|i| {
                let fs = fs.clone();
                let data = data.clone();
                tokio::spawn(async move {
                    let opened = fs.open(attr.ino, RO).await.unwrap();
                    // Each reader starts at a different page and wraps.
                    let start = (i * PAGE) as usize;
                    let mut got = vec![0u8; data.len()];
                    let mut off = start;
                    let mut done = 0;
                    while done < data.len() {
                        let len = (data.len() - off).min(data.len() - done).min(5000);
                        let chunk = fs.read(opened.fh, off as u64, len as u32).await.unwrap();
                        assert_eq!(chunk.len(), len);
                        got[off..off + len].copy_from_slice(&chunk);
                        done += len;
                        off = (off + len) % data.len();
                        // Let the other readers in even when every
                        // page comes from memory.
                        tokio::task::yield_now().await;
                    }
                    fs.release(opened.fh).await.unwrap();
                    assert_eq!(got, *data);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
}

#[tokio::test]
async fn zero_ttl_sees_changes_behind_weirs_back_at_once() {
    timed(async {
        let e = env_with(&["/"], |c| c.metadata_ttl = Duration::ZERO);
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), b"version one").unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"version one");
        assert_eq!(names(fs, ROOT_INO).await, ["f"]);
        // Rewritten with a different size (so its version surely differs).
        std::fs::write(e.root().join("f"), b"the second version").unwrap();
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 18);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"the second version");
        // New and removed files.
        std::fs::write(e.root().join("g"), b"g").unwrap();
        assert_eq!(names(fs, ROOT_INO).await, ["f", "g"]);
        std::fs::remove_file(e.root().join("f")).unwrap();
        assert_eq!(errno(fs.getattr(attr.ino).await), libc::ENOENT);
        assert_eq!(errno(fs.lookup(ROOT_INO, "f").await), libc::ENOENT);
        assert_eq!(names(fs, ROOT_INO).await, ["g"]);
    })
    .await
}

#[tokio::test]
async fn zero_ttl_sees_a_same_size_rewrite_behind_weirs_back() {
    timed(async {
        let e = env_with(&["/"], |c| c.metadata_ttl = Duration::ZERO);
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), b"AAAA").unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"AAAA");
        // A local file's version is its mtime and size, so a same-size
        // rewrite is only told apart once the mtime moved: wait out the
        // kernel's timestamp granularity (one tick, at most 10 ms).
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(e.root().join("f"), b"BBBB").unwrap();
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"BBBB");
    })
    .await
}

#[tokio::test]
async fn zero_ttl_sees_a_same_size_rewrite_that_keeps_the_mtime() {
    timed(async {
        let e = env_with(&["/"], |c| c.metadata_ttl = Duration::ZERO);
        let fs = &e.fs;
        let path = e.root().join("f");
        std::fs::write(&path, b"AAAA").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"AAAA");
        std::fs::write(&path, b"BBBB").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(mtime).unwrap();
        drop(file);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"BBBB");
    })
    .await
}

#[tokio::test]
async fn long_ttl_keeps_reporting_the_old_metadata() {
    timed(async {
        let e = env_with(&["/"], |c| c.metadata_ttl = Duration::from_secs(3600));
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), b"version one").unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"version one");
        assert_eq!(names(fs, ROOT_INO).await, ["f"]);

        std::fs::write(e.root().join("f"), b"the second version").unwrap();
        std::fs::write(e.root().join("g"), b"g").unwrap();
        // Within the TTL: the old size, the old listing, and (from the
        // page cache, pinned to the old version) the old bytes.
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 11);
        assert_eq!(fs.lookup(ROOT_INO, "f").await.unwrap().size, 11);
        assert_eq!(names(fs, ROOT_INO).await, ["f"]);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"version one");

        // Changes made through weir show at once.
        put(fs, ROOT_INO, "h", b"hh").await;
        assert_eq!(names(fs, ROOT_INO).await, ["f", "g", "h"]);
    })
    .await
}

#[tokio::test]
async fn long_ttl_never_mixes_versions_of_a_changed_file() {
    timed(async {
        let e = env_with(&["/"], |c| c.metadata_ttl = Duration::from_secs(3600));
        let fs = &e.fs;
        let old = pattern(2 * PAGE as usize, 12);
        let new = pattern(3 * PAGE as usize, 13);
        std::fs::write(e.root().join("f"), &old).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        // Nothing cached yet; the file changes behind weir's back.
        std::fs::write(e.root().join("f"), &new).unwrap();
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, old.len() as u64);
        // The read notices the version moved: ESTALE, never a mix.
        let opened = fs.open(attr.ino, RO).await.unwrap();
        assert_eq!(errno(fs.read(opened.fh, 0, 100).await), libc::ESTALE);
        fs.release(opened.fh).await.unwrap();
        // ... and dropped the stale metadata, so the next open is fresh.
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, new.len() as u64);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), new);
    })
    .await
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Arbitrary reads of an arbitrary file return exactly its bytes.
    #[test]
    fn arbitrary_reads_match_the_content(
        size in 0usize..5 * PAGE as usize,
        reads in proptest::collection::vec((0u64..6 * PAGE, 0u32..3 * PAGE as u32), 1..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(timed(async {
            let e = env();
            let fs = &e.fs;
            let data = pattern(size, 14);
            std::fs::write(e.root().join("f"), &data).unwrap();
            let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
            let opened = fs.open(attr.ino, RO).await.unwrap();
            for (off, len) in reads {
                let got = fs.read(opened.fh, off, len).await.unwrap();
                let lo = (off as usize).min(size);
                let hi = (off as usize + len as usize).min(size);
                assert_eq!(&got[..], &data[lo..hi], "read({off}, {len}) of {size}");
            }
            fs.release(opened.fh).await.unwrap();
        }));
    }
}

/// Sequential reads fetch runs of pages with one UFS request each: a
/// 40-page file in at most 8-page requests takes a handful, not 40.
#[test]
fn read_ahead_fetches_runs_of_pages_per_request() {
    let e = env_with(&["/"], |c| {
        c.readahead_pages = 16;
        c.fetch_pages = 8;
    });
    let data = pattern(40 * PAGE as usize, 3);
    std::fs::write(e.root().join("big"), &data).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (got, rec) = weir_metrics::testing::capture(|| {
        rt.block_on(async {
            let attr = e.fs.lookup(ROOT_INO, "big").await.unwrap();
            let o = e.fs.open(attr.ino, RO).await.unwrap();
            let got = read_fh(&e.fs, o.fh).await.unwrap();
            e.fs.release(o.fh).await.unwrap();
            got
        })
    });
    assert!(got == data);
    let reads = rec.counter(
        weir_metrics::names::UFS_REQUESTS,
        &[("op", "read"), ("scheme", "file")],
    );
    assert!(
        (5..=12).contains(&reads),
        "{reads} read requests for 40 pages in runs of at most 8"
    );
}

/// A file unlinked, renamed away or replaced while open still reads back
/// whole through its open handles, as on a local disk.
#[tokio::test]
async fn open_files_outlive_their_names() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let size = 6 * PAGE as usize + 9;
        for (i, name) in ["gone", "moved", "replaced"].iter().enumerate() {
            std::fs::write(e.root().join(name), pattern(size, i as u8)).unwrap();
        }
        std::fs::write(e.root().join("new"), b"other").unwrap();
        let mut open = Vec::new();
        for name in ["gone", "moved", "replaced"] {
            let attr = fs.lookup(ROOT_INO, name).await.unwrap();
            let o = fs.open(attr.ino, RO).await.unwrap();
            // Only the first page is cached when the name goes.
            fs.read(o.fh, 0, 100).await.unwrap();
            open.push(o.fh);
        }
        let gone = fs.lookup(ROOT_INO, "gone").await.unwrap();
        fs.unlink(ROOT_INO, "gone").await.unwrap();
        assert_eq!(
            fs.getattr(gone.ino).await.unwrap().size,
            size as u64,
            "fstat of an unlinked open file"
        );
        let none = RenameFlags::default();
        fs.rename(ROOT_INO, "moved", ROOT_INO, "elsewhere", none)
            .await
            .unwrap();
        fs.rename(ROOT_INO, "new", ROOT_INO, "replaced", none)
            .await
            .unwrap();
        for (i, fh) in open.iter().enumerate() {
            assert_eq!(
                read_fh(fs, *fh).await.unwrap(),
                pattern(size, i as u8),
                "handle {i}"
            );
        }
        let keys: Vec<_> = open
            .iter()
            .map(|fh| {
                fs.file_handle(*fh)
                    .unwrap()
                    .reader
                    .as_ref()
                    .unwrap()
                    .src
                    .key
            })
            .collect();
        assert!(
            keys.iter().all(|k| fs.inner.pages.pins(*k) == 1),
            "kept while open"
        );
        for fh in open {
            fs.release(fh).await.unwrap();
        }
        assert!(
            keys.iter().all(|k| fs.inner.pages.pins(*k) == 0),
            "let go at close"
        );
        assert_eq!(std::fs::read(e.root().join("replaced")).unwrap(), b"other");
    })
    .await
}
