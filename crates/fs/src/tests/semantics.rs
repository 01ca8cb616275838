//! One test per row of the semantics table, through the `Fs` API.

use super::*;

#[tokio::test]
async fn create_write_flush_release_lands_in_ufs() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let data = pattern(10_000, 1);
        let (attr, opened) = fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        assert_eq!(attr.kind, Kind::File);
        assert_eq!(attr.size, 0);
        write_seq(fs, opened.fh, &data).await.unwrap();
        fs.flush(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), data);
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), data);
        assert_eq!(fs.open_handles(), 0);
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(attr.size, data.len() as u64);
        assert_eq!(attr.perm, 0o644);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), data);
        // A read-only handle cannot write.
        let ro = fs.open(attr.ino, RO).await.unwrap();
        assert_eq!(errno(fs.write(ro.fh, 0, b"x").await), libc::EBADF);
        fs.flush(ro.fh).await.unwrap();
        fs.release(ro.fh).await.unwrap();
        // An empty file is uploaded too: create alone makes a file.
        put(fs, ROOT_INO, "empty", b"").await;
        assert_eq!(std::fs::read(e.root().join("empty")).unwrap(), b"");
        // O_EXCL on an existing file.
        assert_eq!(
            errno(
                fs.create(
                    ROOT_INO,
                    "f",
                    OpenFlags {
                        exclusive: true,
                        ..W_TRUNC
                    }
                )
                .await
            ),
            libc::EEXIST
        );
        // No staging leftovers in the UFS.
        assert!(
            std::fs::read_dir(e.root().join(weir_ufs::LOCAL_STAGING_DIR))
                .unwrap()
                .next()
                .is_none()
        );
    })
    .await
}

#[tokio::test]
async fn file_being_written_is_invisible_in_ufs_until_flush() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let (_, opened) = fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        write_seq(fs, opened.fh, &pattern(5000, 2)).await.unwrap();
        assert!(
            !e.root().join("f").exists(),
            "the final name must not exist in the UFS before flush"
        );
        assert!(disk_names(e.root()).is_empty());
        // weir itself sees the pending file with its staged size.
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(attr.size, 5000);
        assert_eq!(names(fs, ROOT_INO).await, ["f"]);
        fs.flush(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), pattern(5000, 2));
        // An overwrite keeps the old content in the UFS until flush.
        let opened2 = fs.open(attr.ino, W_TRUNC).await.unwrap();
        write_seq(fs, opened2.fh, b"new").await.unwrap();
        assert_eq!(
            std::fs::read(e.root().join("f")).unwrap(),
            pattern(5000, 2),
            "O_TRUNC must not truncate the UFS object before the new one is complete"
        );
        fs.release(opened2.fh).await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"new");
    })
    .await
}

#[tokio::test]
async fn overwrite_with_o_trunc() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), pattern(9000, 3)).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(attr.size, 9000);
        let opened = fs.open(attr.ino, W_TRUNC).await.unwrap();
        write_seq(fs, opened.fh, b"short").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"short");
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 5);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"short");
        // create() of an existing name also overwrites it.
        put(fs, ROOT_INO, "f", b"again").await;
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"again");
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"again");
        // Opening a directory for writing is EISDIR.
        fs.mkdir(ROOT_INO, "d").await.unwrap();
        let d = fs.lookup(ROOT_INO, "d").await.unwrap();
        assert_eq!(errno(fs.open(d.ino, W_TRUNC).await), libc::EISDIR);
        assert_eq!(errno(fs.create(ROOT_INO, "d", W_TRUNC).await), libc::EISDIR);
    })
    .await
}

#[tokio::test]
async fn overwrites_of_the_same_size_are_read_back_at_once() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        // Quick successive rewrites through weir, each read back at once:
        // a page cached for the previous content must never be served.
        let f = put(fs, ROOT_INO, "f", b"0000").await;
        for i in 1..50u8 {
            assert_eq!(read_all(fs, f.ino).await.unwrap(), [b'0' + (i - 1) % 10; 4]);
            let opened = fs.open(f.ino, W_TRUNC).await.unwrap();
            fs.write(opened.fh, 0, &[b'0' + i % 10; 4]).await.unwrap();
            fs.release(opened.fh).await.unwrap();
        }
    })
    .await
}

#[tokio::test]
async fn truncate_to_zero_without_handle() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), pattern(9000, 4)).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        let after = fs.setattr(attr.ino, &set_size(0), None).await.unwrap();
        assert_eq!(after.size, 0);
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"");
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"");
        // Truncating to the current size is a no-op, even without the switch.
        let after = fs.setattr(attr.ino, &set_size(0), None).await.unwrap();
        assert_eq!(after.size, 0);
        // A file being written is truncated through its handle only.
        let (g, opened) = fs.create(ROOT_INO, "g", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"abc").await.unwrap();
        assert_eq!(
            errno(fs.setattr(g.ino, &set_size(0), None).await),
            libc::EBUSY
        );
        fs.setattr(g.ino, &set_size(0), Some(opened.fh))
            .await
            .unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("g")).unwrap(), b"");
        // A directory cannot be truncated.
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        assert_eq!(
            errno(fs.setattr(d.ino, &set_size(0), None).await),
            libc::EISDIR
        );
    })
    .await
}

#[tokio::test]
async fn truncate_to_zero_through_handle() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), pattern(9000, 5)).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();
        // open(O_WRONLY) then ftruncate(0), as a kernel without atomic
        // O_TRUNC does.
        let opened = fs.open(attr.ino, W).await.unwrap();
        let after = fs
            .setattr(attr.ino, &set_size(0), Some(opened.fh))
            .await
            .unwrap();
        assert_eq!(after.size, 0);
        assert_eq!(
            std::fs::read(e.root().join("f")).unwrap(),
            pattern(9000, 5),
            "the UFS keeps the old content until the handle is flushed"
        );
        write_seq(fs, opened.fh, b"xyz").await.unwrap();
        assert_eq!(read_fh(fs, opened.fh).await.unwrap(), b"xyz");
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"xyz");
        // Truncate to 0 with nothing written after it leaves an empty file.
        let opened = fs.open(attr.ino, W).await.unwrap();
        fs.setattr(attr.ino, &set_size(0), Some(opened.fh))
            .await
            .unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"");
    })
    .await
}

#[tokio::test]
async fn random_writes_append_and_truncate_are_enotsup_by_default() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), b"hello world").unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();

        // Writing into an existing file without O_TRUNC, anywhere.
        let opened = fs.open(attr.ino, W).await.unwrap();
        assert_eq!(errno(fs.write(opened.fh, 0, b"J").await), libc::ENOTSUP);
        assert_eq!(errno(fs.write(opened.fh, 11, b"!").await), libc::ENOTSUP);
        assert_eq!(
            errno(fs.setattr(attr.ino, &set_size(5), Some(opened.fh)).await),
            libc::ENOTSUP
        );
        fs.release(opened.fh).await.unwrap();

        // O_APPEND.
        assert_eq!(errno(fs.open(attr.ino, W_APPEND).await), libc::ENOTSUP);
        assert_eq!(
            errno(
                fs.create(
                    ROOT_INO,
                    "f",
                    OpenFlags {
                        truncate: false,
                        ..W_APPEND
                    }
                )
                .await
            ),
            libc::ENOTSUP
        );

        // Truncate to a size other than 0, shrinking or growing.
        for size in [5, 20] {
            assert_eq!(
                errno(fs.setattr(attr.ino, &set_size(size), None).await),
                libc::ENOTSUP
            );
        }
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"hello world");

        // In a new file: only writes at the current end.
        let (g, opened) = fs.create(ROOT_INO, "g", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"abc").await.unwrap();
        assert_eq!(errno(fs.write(opened.fh, 1, b"x").await), libc::ENOTSUP);
        assert_eq!(errno(fs.write(opened.fh, 10, b"x").await), libc::ENOTSUP);
        assert_eq!(
            errno(fs.setattr(g.ino, &set_size(1), Some(opened.fh)).await),
            libc::ENOTSUP
        );
        // Truncate to the current size is allowed (a no-op).
        fs.setattr(g.ino, &set_size(3), Some(opened.fh))
            .await
            .unwrap();
        fs.write(opened.fh, 3, b"def").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("g")).unwrap(), b"abcdef");
    })
    .await
}

#[tokio::test]
async fn random_writes_append_and_truncate_work_with_the_switch() {
    timed(async {
        let e = env_with(&["/"], |c| c.random_writes = true);
        let fs = &e.fs;
        let mut expect = pattern(2 * PAGE as usize + 100, 6);
        std::fs::write(e.root().join("f"), &expect).unwrap();
        let attr = fs.lookup(ROOT_INO, "f").await.unwrap();

        // A random write across a page boundary.
        let opened = fs.open(attr.ino, W).await.unwrap();
        fs.write(opened.fh, PAGE - 1, b"XYZ").await.unwrap();
        expect[PAGE as usize - 1..PAGE as usize + 2].copy_from_slice(b"XYZ");
        assert_eq!(read_fh(fs, opened.fh).await.unwrap(), expect);
        fs.write(opened.fh, 0, b"J").await.unwrap();
        expect[0] = b'J';
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), expect);
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), expect);

        // Append: the kernel writes at the current size.
        let opened = fs.open(attr.ino, W_APPEND).await.unwrap();
        fs.write(opened.fh, expect.len() as u64, b"tail")
            .await
            .unwrap();
        expect.extend_from_slice(b"tail");
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), expect);

        // Truncate to a smaller, then a larger size, without a handle.
        fs.setattr(attr.ino, &set_size(5000), None).await.unwrap();
        expect.truncate(5000);
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), expect);
        let after = fs.setattr(attr.ino, &set_size(9000), None).await.unwrap();
        assert_eq!(after.size, 9000);
        expect.resize(9000, 0);
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), expect);

        // Truncate through a handle, then write after the new end.
        let opened = fs.open(attr.ino, W).await.unwrap();
        fs.setattr(attr.ino, &set_size(10), Some(opened.fh))
            .await
            .unwrap();
        fs.write(opened.fh, 10, b"!").await.unwrap();
        expect.truncate(10);
        expect.push(b'!');
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), expect);

        // A write past the end of a new file leaves a hole of zeros.
        let (_, opened) = fs.create(ROOT_INO, "g", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 100, b"end").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        let mut hole = vec![0u8; 100];
        hole.extend_from_slice(b"end");
        assert_eq!(std::fs::read(e.root().join("g")).unwrap(), hole);
    })
    .await
}

#[tokio::test]
async fn symlinks_are_enotsup_by_default() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        assert_eq!(
            errno(fs.symlink(ROOT_INO, "l", "target").await),
            libc::ENOTSUP
        );
        assert!(std::fs::symlink_metadata(e.root().join("l")).is_err());
        // A symlink already in the UFS is hidden, never followed.
        std::fs::write(e.root().join("target"), b"data").unwrap();
        std::os::unix::fs::symlink("target", e.root().join("l")).unwrap();
        assert_eq!(errno(fs.lookup(ROOT_INO, "l").await), libc::ENOENT);
        assert_eq!(names(fs, ROOT_INO).await, ["target"]);
        assert_eq!(errno(fs.readlink(ROOT_INO).await), libc::ENOTSUP);
    })
    .await
}

#[tokio::test]
async fn symlinks_work_with_the_switch() {
    timed(async {
        let e = env_with(&["/"], |c| c.symlinks = true);
        let fs = &e.fs;
        let attr = fs.symlink(ROOT_INO, "l", "some/target").await.unwrap();
        assert_eq!(attr.kind, Kind::Symlink);
        assert_eq!(
            std::fs::read_link(e.root().join("l")).unwrap(),
            Path::new("some/target")
        );
        assert_eq!(fs.readlink(attr.ino).await.unwrap(), "some/target");
        let looked = fs.lookup(ROOT_INO, "l").await.unwrap();
        assert_eq!((looked.ino, looked.kind), (attr.ino, Kind::Symlink));
        assert_eq!(
            ls(fs, ROOT_INO).await.unwrap()[2..],
            [("l".to_string(), Kind::Symlink)]
        );
        assert_eq!(
            errno(fs.symlink(ROOT_INO, "l", "other").await),
            libc::EEXIST
        );
        assert_eq!(errno(fs.open(attr.ino, RO).await), libc::ELOOP);
        // A symlink made behind weir's back is seen too.
        std::os::unix::fs::symlink("/elsewhere", e.root().join("m")).unwrap();
        let m = fs.lookup(ROOT_INO, "m").await.unwrap();
        assert_eq!(m.kind, Kind::Symlink);
        assert_eq!(fs.readlink(m.ino).await.unwrap(), "/elsewhere");
        fs.unlink(ROOT_INO, "l").await.unwrap();
        assert!(std::fs::symlink_metadata(e.root().join("l")).is_err());
    })
    .await
}

#[tokio::test]
async fn chmod_chown_utimens_are_enotsup() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let attr = put(fs, ROOT_INO, "f", b"data").await;
        let refused = [
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
            SetAttr {
                uid: Some(1000),
                ..SetAttr::default()
            },
            SetAttr {
                gid: Some(1000),
                ..SetAttr::default()
            },
            SetAttr {
                times: true,
                ..SetAttr::default()
            },
            // Refused as a whole even when combined with a legal truncate.
            SetAttr {
                size: Some(0),
                mode: Some(0o600),
                ..SetAttr::default()
            },
        ];
        for set in &refused {
            assert_eq!(
                errno(fs.setattr(attr.ino, set, None).await),
                libc::ENOTSUP,
                "{set:?}"
            );
        }
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"data");
        // An empty setattr is a getattr.
        let same = fs.setattr(attr.ino, &SetAttr::default(), None).await;
        assert_eq!(same.unwrap().size, 4);
    })
    .await
}

#[tokio::test]
async fn statfs_is_large_and_constant() {
    timed(async {
        let e = env();
        let before = e.fs.statfs();
        put(&e.fs, ROOT_INO, "f", &pattern(100_000, 7)).await;
        let after = e.fs.statfs();
        assert_eq!(before, after);
        assert!(after.blocks * u64::from(after.bsize) >= 1 << 50);
        assert_eq!(after.bfree, after.blocks);
        assert_eq!(after.namelen, 255);
    })
    .await
}

#[tokio::test]
async fn mkdir_and_rmdir() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        assert_eq!(d.kind, Kind::Dir);
        assert_eq!(d.perm, 0o755);
        assert!(e.root().join("d").is_dir());
        assert_eq!(errno(fs.mkdir(ROOT_INO, "d").await), libc::EEXIST);
        put(fs, ROOT_INO, "f", b"x").await;
        assert_eq!(errno(fs.mkdir(ROOT_INO, "f").await), libc::EEXIST);
        // Nested.
        let sub = fs.mkdir(d.ino, "sub").await.unwrap();
        assert!(e.root().join("d/sub").is_dir());
        put(fs, sub.ino, "g", b"y").await;
        assert_eq!(std::fs::read(e.root().join("d/sub/g")).unwrap(), b"y");

        assert_eq!(errno(fs.rmdir(ROOT_INO, "d").await), libc::ENOTEMPTY);
        assert_eq!(errno(fs.rmdir(d.ino, "sub").await), libc::ENOTEMPTY);
        assert_eq!(errno(fs.rmdir(ROOT_INO, "f").await), libc::ENOTDIR);
        assert_eq!(errno(fs.rmdir(ROOT_INO, "nope").await), libc::ENOENT);
        fs.unlink(sub.ino, "g").await.unwrap();
        fs.rmdir(d.ino, "sub").await.unwrap();
        fs.rmdir(ROOT_INO, "d").await.unwrap();
        assert!(!e.root().join("d").exists());
        assert_eq!(errno(fs.lookup(ROOT_INO, "d").await), libc::ENOENT);
        assert_eq!(names(fs, ROOT_INO).await, ["f"]);
        // Created again after removal.
        fs.mkdir(ROOT_INO, "d").await.unwrap();
        assert!(e.root().join("d").is_dir());
    })
    .await
}

#[tokio::test]
async fn rmdir_of_dir_with_a_file_being_written_is_enotempty() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        let (_, opened) = fs.create(d.ino, "f", W_TRUNC).await.unwrap();
        assert_eq!(errno(fs.rmdir(ROOT_INO, "d").await), libc::ENOTEMPTY);
        fs.release(opened.fh).await.unwrap();
        assert_eq!(errno(fs.rmdir(ROOT_INO, "d").await), libc::ENOTEMPTY);
        assert!(e.root().join("d/f").is_file());
    })
    .await
}

#[tokio::test]
async fn unlink_removes_files_only() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let attr = put(fs, ROOT_INO, "f", b"data").await;
        fs.mkdir(ROOT_INO, "d").await.unwrap();
        fs.unlink(ROOT_INO, "f").await.unwrap();
        assert!(!e.root().join("f").exists());
        assert_eq!(errno(fs.lookup(ROOT_INO, "f").await), libc::ENOENT);
        assert_eq!(errno(fs.unlink(ROOT_INO, "f").await), libc::ENOENT);
        assert_eq!(errno(fs.unlink(ROOT_INO, "d").await), libc::EISDIR);
        assert_eq!(names(fs, ROOT_INO).await, ["d"]);
        // The node id the kernel still holds no longer reaches the file.
        assert_eq!(errno(fs.open(attr.ino, RO).await), libc::ENOENT);
    })
    .await
}

#[tokio::test]
async fn rename_files() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let a = put(fs, ROOT_INO, "a", b"AAA").await;
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        // Into another directory under a new name.
        fs.rename(ROOT_INO, "a", d.ino, "b", RenameFlags::default())
            .await
            .unwrap();
        assert!(!e.root().join("a").exists());
        assert_eq!(std::fs::read(e.root().join("d/b")).unwrap(), b"AAA");
        assert_eq!(errno(fs.lookup(ROOT_INO, "a").await), libc::ENOENT);
        let b = fs.lookup(d.ino, "b").await.unwrap();
        assert_eq!(b.ino, a.ino, "the node moves with its file");
        assert_eq!(read_all(fs, a.ino).await.unwrap(), b"AAA");
        // Replacing an existing file.
        put(fs, ROOT_INO, "c", b"CCCCC").await;
        fs.rename(d.ino, "b", ROOT_INO, "c", RenameFlags::default())
            .await
            .unwrap();
        assert_eq!(std::fs::read(e.root().join("c")).unwrap(), b"AAA");
        assert!(!e.root().join("d/b").exists());
        let c = fs.lookup(ROOT_INO, "c").await.unwrap();
        assert_eq!(c.size, 3);
        assert_eq!(read_all(fs, c.ino).await.unwrap(), b"AAA");
        assert_eq!(names(fs, ROOT_INO).await, ["c", "d"]);
        assert!(names(fs, d.ino).await.is_empty());
        // Errors.
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "nope", ROOT_INO, "x", RenameFlags::default())
                    .await
            ),
            libc::ENOENT
        );
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "c", ROOT_INO, "d", RenameFlags::default())
                    .await
            ),
            libc::EISDIR
        );
        // Renaming a file onto itself is a no-op.
        fs.rename(ROOT_INO, "c", ROOT_INO, "c", RenameFlags::default())
            .await
            .unwrap();
        assert_eq!(std::fs::read(e.root().join("c")).unwrap(), b"AAA");
        // ... but only for a name that exists.
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "nope", ROOT_INO, "nope", RenameFlags::default())
                    .await
            ),
            libc::ENOENT
        );
    })
    .await
}

#[tokio::test]
async fn rename_directories() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        let sub = fs.mkdir(d.ino, "sub").await.unwrap();
        let f = put(fs, sub.ino, "f", b"deep").await;
        fs.rename(ROOT_INO, "d", ROOT_INO, "e", RenameFlags::default())
            .await
            .unwrap();
        assert!(!e.root().join("d").exists());
        assert_eq!(std::fs::read(e.root().join("e/sub/f")).unwrap(), b"deep");
        assert_eq!(errno(fs.lookup(ROOT_INO, "d").await), libc::ENOENT);
        let e_ = fs.lookup(ROOT_INO, "e").await.unwrap();
        assert_eq!(e_.ino, d.ino);
        let sub2 = fs.lookup(e_.ino, "sub").await.unwrap();
        let f2 = fs.lookup(sub2.ino, "f").await.unwrap();
        assert_eq!(f2.ino, f.ino, "descendants keep their nodes");
        assert_eq!(read_all(fs, f.ino).await.unwrap(), b"deep");

        // Onto an empty directory: replaces it.
        fs.mkdir(ROOT_INO, "empty").await.unwrap();
        fs.rename(ROOT_INO, "e", ROOT_INO, "empty", RenameFlags::default())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(e.root().join("empty/sub/f")).unwrap(),
            b"deep"
        );
        assert_eq!(names(fs, ROOT_INO).await, ["empty"]);

        // Onto a non-empty directory: ENOTEMPTY, nothing moves.
        let full = fs.mkdir(ROOT_INO, "full").await.unwrap();
        put(fs, full.ino, "x", b"x").await;
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "empty", ROOT_INO, "full", RenameFlags::default())
                    .await
            ),
            libc::ENOTEMPTY
        );
        assert!(e.root().join("empty/sub/f").exists());
        assert_eq!(std::fs::read(e.root().join("full/x")).unwrap(), b"x");

        // Onto a file: ENOTDIR. Into itself: EINVAL.
        put(fs, ROOT_INO, "file", b"f").await;
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "empty", ROOT_INO, "file", RenameFlags::default())
                    .await
            ),
            libc::ENOTDIR
        );
        let empty = fs.lookup(ROOT_INO, "empty").await.unwrap();
        assert_eq!(
            errno(
                fs.rename(
                    ROOT_INO,
                    "empty",
                    empty.ino,
                    "inner",
                    RenameFlags::default()
                )
                .await
            ),
            libc::EINVAL
        );
        assert_eq!(names(fs, ROOT_INO).await, ["empty", "file", "full"]);
        assert_eq!(disk_names(e.root()), ["empty", "file", "full"]);
    })
    .await
}

#[tokio::test]
async fn rename_flags() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        put(fs, ROOT_INO, "a", b"A").await;
        put(fs, ROOT_INO, "b", b"B").await;
        let no_replace = RenameFlags {
            no_replace: true,
            exchange: false,
        };
        let exchange = RenameFlags {
            no_replace: false,
            exchange: true,
        };
        assert_eq!(
            errno(fs.rename(ROOT_INO, "a", ROOT_INO, "b", no_replace).await),
            libc::EEXIST
        );
        assert_eq!(
            errno(fs.rename(ROOT_INO, "a", ROOT_INO, "b", exchange).await),
            libc::ENOTSUP
        );
        assert_eq!(std::fs::read(e.root().join("a")).unwrap(), b"A");
        assert_eq!(std::fs::read(e.root().join("b")).unwrap(), b"B");
        fs.rename(ROOT_INO, "a", ROOT_INO, "c", no_replace)
            .await
            .unwrap();
        assert_eq!(disk_names(e.root()), ["b", "c"]);
        assert_eq!(std::fs::read(e.root().join("c")).unwrap(), b"A");
    })
    .await
}

#[tokio::test]
async fn rename_across_mounts_is_exdev() {
    timed(async {
        let e = env_with(&["/", "/m"], |_| {});
        let fs = &e.fs;
        put(fs, ROOT_INO, "a", b"A").await;
        let m = fs.lookup(ROOT_INO, "m").await.unwrap();
        assert_eq!(m.kind, Kind::Dir);
        put(fs, m.ino, "b", b"B").await;
        assert_eq!(std::fs::read(e.roots[1].path().join("b")).unwrap(), b"B");
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "a", m.ino, "a", RenameFlags::default())
                    .await
            ),
            libc::EXDEV
        );
        assert_eq!(
            errno(
                fs.rename(m.ino, "b", ROOT_INO, "b", RenameFlags::default())
                    .await
            ),
            libc::EXDEV
        );
        // A mount point itself cannot be moved or removed.
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "m", ROOT_INO, "z", RenameFlags::default())
                    .await
            ),
            libc::EBUSY
        );
        assert_eq!(errno(fs.rmdir(ROOT_INO, "m").await), libc::EBUSY);
        assert_eq!(disk_names(e.root()), ["a"]);
        assert_eq!(disk_names(e.roots[1].path()), ["b"]);
    })
    .await
}

#[tokio::test]
async fn readdir_lists_dots_children_pending_files_and_mount_points() {
    timed(async {
        let e = env_with(&["/", "/m", "/x/y"], |_| {});
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), b"f").unwrap();
        std::fs::create_dir(e.root().join("d")).unwrap();
        std::fs::write(e.roots[1].path().join("inner"), b"i").unwrap();
        let (_, pending) = fs.create(ROOT_INO, "p", W_TRUNC).await.unwrap();
        fs.write(pending.fh, 0, b"pending").await.unwrap();

        let fh = fs.opendir(ROOT_INO).await.unwrap();
        let entries = fs.readdir(fh, 0).await.unwrap();
        let got: Vec<(&str, Kind)> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(
            got,
            [
                (".", Kind::Dir),
                ("..", Kind::Dir),
                ("d", Kind::Dir),
                ("f", Kind::File),
                ("m", Kind::Dir),
                ("p", Kind::File),
                ("x", Kind::Dir),
            ]
        );
        assert_eq!(entries[0].ino, ROOT_INO);
        assert_eq!(entries[1].ino, ROOT_INO);
        // Node ids are distinct.
        let mut inos: Vec<u64> = entries[2..].iter().map(|e| e.ino).collect();
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), 5);
        // Reading from an offset continues the same snapshot.
        let rest = fs.readdir(fh, 5).await.unwrap();
        let rest: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(rest, ["p", "x"]);
        assert!(fs.readdir(fh, 7).await.unwrap().is_empty());
        assert!(fs.readdir(fh, 100).await.unwrap().is_empty());
        fs.releasedir(fh);
        assert_eq!(errno(fs.readdir(fh, 0).await), libc::EBADF);

        // The file being written shows with its staged size.
        let p = fs.lookup(ROOT_INO, "p").await.unwrap();
        assert_eq!(p.size, 7);
        fs.release(pending.fh).await.unwrap();

        // Mount points and their virtual ancestors.
        let m = fs.lookup(ROOT_INO, "m").await.unwrap();
        assert_eq!(names(fs, m.ino).await, ["inner"]);
        let x = fs.lookup(ROOT_INO, "x").await.unwrap();
        assert_eq!(x.kind, Kind::Dir);
        assert_eq!(names(fs, x.ino).await, ["y"]);
        let dots = ls(fs, x.ino).await.unwrap();
        assert_eq!(dots[0], (".".to_string(), Kind::Dir));
        assert_eq!(dots[1], ("..".to_string(), Kind::Dir));
        let y = fs.lookup(x.ino, "y").await.unwrap();
        assert!(names(fs, y.ino).await.is_empty());
        put(fs, y.ino, "deep", b"deep").await;
        assert_eq!(
            std::fs::read(e.roots[2].path().join("deep")).unwrap(),
            b"deep"
        );
        // ".." of a subdirectory is its parent.
        let d = fs.lookup(ROOT_INO, "d").await.unwrap();
        let fh = fs.opendir(d.ino).await.unwrap();
        let entries = fs.readdir(fh, 0).await.unwrap();
        fs.releasedir(fh);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].ino, d.ino);
        assert_eq!(entries[1].ino, ROOT_INO);
        // opendir of a file is ENOTDIR.
        let f = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(errno(fs.opendir(f.ino).await), libc::ENOTDIR);
        assert_eq!(fs.open_handles(), 0);
    })
    .await
}

#[tokio::test]
async fn read_only_refuses_every_change_with_erofs() {
    timed(async {
        let e = env_with(&["/"], |c| {
            c.read_only = true;
            c.symlinks = true;
        });
        let fs = &e.fs;
        std::fs::write(e.root().join("f"), b"data").unwrap();
        std::fs::create_dir(e.root().join("d")).unwrap();
        let f = fs.lookup(ROOT_INO, "f").await.unwrap();
        let d = fs.lookup(ROOT_INO, "d").await.unwrap();
        assert_eq!(f.perm, 0o444);
        assert_eq!(d.perm, 0o555);
        let erofs = libc::EROFS;
        assert_eq!(errno(fs.create(ROOT_INO, "g", W_TRUNC).await), erofs);
        assert_eq!(errno(fs.create(ROOT_INO, "f", W_TRUNC).await), erofs);
        assert_eq!(errno(fs.open(f.ino, W).await), erofs);
        assert_eq!(errno(fs.open(f.ino, W_TRUNC).await), erofs);
        assert_eq!(errno(fs.setattr(f.ino, &set_size(0), None).await), erofs);
        assert_eq!(errno(fs.mkdir(ROOT_INO, "n").await), erofs);
        assert_eq!(errno(fs.unlink(ROOT_INO, "f").await), erofs);
        assert_eq!(errno(fs.rmdir(ROOT_INO, "d").await), erofs);
        assert_eq!(
            errno(
                fs.rename(ROOT_INO, "f", ROOT_INO, "g", RenameFlags::default())
                    .await
            ),
            erofs
        );
        assert_eq!(errno(fs.symlink(ROOT_INO, "l", "f").await), erofs);
        // Reading still works, and nothing changed.
        assert_eq!(read_all(fs, f.ino).await.unwrap(), b"data");
        assert_eq!(names(fs, ROOT_INO).await, ["d", "f"]);
        assert_eq!(disk_names(e.root()), ["d", "f"]);
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"data");
        assert_eq!(fs.open_handles(), 0);
    })
    .await
}

#[tokio::test]
async fn bad_names_are_refused() {
    timed(async {
        let e = env_with(&["/"], |c| c.symlinks = true);
        let fs = &e.fs;
        put(fs, ROOT_INO, "ok", b"x").await;
        let long = "x".repeat(256);
        let cases = [
            ("..", libc::EINVAL),
            (".", libc::EINVAL),
            ("", libc::EINVAL),
            ("a/b", libc::EINVAL),
            ("/", libc::EINVAL),
            ("a\0b", libc::EINVAL),
            (long.as_str(), libc::ENAMETOOLONG),
        ];
        let none = RenameFlags::default();
        for (name, want) in cases {
            assert_eq!(errno(fs.lookup(ROOT_INO, name).await), want, "{name:?}");
            assert_eq!(
                errno(fs.create(ROOT_INO, name, W_TRUNC).await),
                want,
                "{name:?}"
            );
            assert_eq!(errno(fs.mkdir(ROOT_INO, name).await), want, "{name:?}");
            assert_eq!(errno(fs.unlink(ROOT_INO, name).await), want, "{name:?}");
            assert_eq!(errno(fs.rmdir(ROOT_INO, name).await), want, "{name:?}");
            assert_eq!(
                errno(fs.symlink(ROOT_INO, name, "t").await),
                want,
                "{name:?}"
            );
            assert_eq!(
                errno(fs.rename(ROOT_INO, "ok", ROOT_INO, name, none).await),
                want,
                "{name:?}"
            );
            assert_eq!(
                errno(fs.rename(ROOT_INO, name, ROOT_INO, "new", none).await),
                want,
                "{name:?}"
            );
        }
        assert_eq!(disk_names(e.root()), ["ok"]);
        // 255 bytes is the limit, and accepted.
        let max = "y".repeat(255);
        let d = fs.mkdir(ROOT_INO, &max).await.unwrap();
        assert!(e.root().join(&max).is_dir());
        assert_eq!(fs.lookup(ROOT_INO, &max).await.unwrap().ino, d.ino);
        fs.rename(ROOT_INO, "ok", d.ino, &max, none).await.unwrap();
        assert_eq!(std::fs::read(e.root().join(&max).join(&max)).unwrap(), b"x");
        let long_file = "z".repeat(246);
        put(fs, ROOT_INO, &long_file, b"z").await;
        assert_eq!(std::fs::read(e.root().join(&long_file)).unwrap(), b"z");
    })
    .await
}

#[tokio::test]
async fn files_with_the_longest_legal_name_can_be_written() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let max = "y".repeat(255);
        put(fs, ROOT_INO, &max, b"m").await;
        assert_eq!(std::fs::read(e.root().join(&max)).unwrap(), b"m");
        assert_eq!(fs.lookup(ROOT_INO, &max).await.unwrap().size, 1);
    })
    .await
}

#[tokio::test]
async fn unlink_while_writing_never_resurrects_the_file() {
    timed(async {
        let e = env();
        let fs = &e.fs;

        // Never flushed before the unlink.
        let (_, opened) = fs.create(ROOT_INO, "a", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"one").await.unwrap();
        fs.unlink(ROOT_INO, "a").await.unwrap();
        assert_eq!(errno(fs.lookup(ROOT_INO, "a").await), libc::ENOENT);
        fs.write(opened.fh, 3, b"two").await.unwrap();
        fs.flush(opened.fh).await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert!(!e.root().join("a").exists());
        assert_eq!(errno(fs.lookup(ROOT_INO, "a").await), libc::ENOENT);

        // Flushed once, then unlinked, then written and closed.
        let (_, opened) = fs.create(ROOT_INO, "b", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"one").await.unwrap();
        fs.flush(opened.fh).await.unwrap();
        assert!(e.root().join("b").exists());
        fs.unlink(ROOT_INO, "b").await.unwrap();
        assert!(!e.root().join("b").exists());
        fs.write(opened.fh, 3, b"two").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert!(!e.root().join("b").exists());

        // Unlinked, then a new file of the same name: closing the old
        // handle neither resurrects the old data nor hides the new file.
        let (_, old) = fs.create(ROOT_INO, "c", W_TRUNC).await.unwrap();
        fs.write(old.fh, 0, b"old").await.unwrap();
        fs.unlink(ROOT_INO, "c").await.unwrap();
        let (_, new) = fs.create(ROOT_INO, "c", W_TRUNC).await.unwrap();
        fs.write(new.fh, 0, b"new!").await.unwrap();
        fs.release(old.fh).await.unwrap();
        assert!(!e.root().join("c").exists());
        assert_eq!(fs.lookup(ROOT_INO, "c").await.unwrap().size, 4);
        assert_eq!(names(fs, ROOT_INO).await, ["c"]);
        fs.release(new.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("c")).unwrap(), b"new!");

        assert_eq!(disk_names(e.root()), ["c"]);
        assert_eq!(names(fs, ROOT_INO).await, ["c"]);
        assert_eq!(fs.open_handles(), 0);
    })
    .await
}

#[tokio::test]
async fn rename_onto_a_file_being_written_detaches_its_writer() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        // Never flushed.
        let (_, opened) = fs.create(ROOT_INO, "a", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"old data").await.unwrap();
        put(fs, ROOT_INO, "b", b"BBB").await;
        fs.rename(ROOT_INO, "b", ROOT_INO, "a", RenameFlags::default())
            .await
            .unwrap();
        assert_eq!(fs.lookup(ROOT_INO, "a").await.unwrap().size, 3);
        fs.write(opened.fh, 8, b", more").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(
            std::fs::read(e.root().join("a")).unwrap(),
            b"BBB",
            "closing the replaced file must not overwrite the renamed one"
        );
        let a = fs.lookup(ROOT_INO, "a").await.unwrap();
        assert_eq!(read_all(fs, a.ino).await.unwrap(), b"BBB");

        // Flushed once before the rename.
        let (_, opened) = fs.create(ROOT_INO, "c", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"old").await.unwrap();
        fs.flush(opened.fh).await.unwrap();
        fs.rename(ROOT_INO, "a", ROOT_INO, "c", RenameFlags::default())
            .await
            .unwrap();
        fs.write(opened.fh, 3, b"er").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("c")).unwrap(), b"BBB");
        assert_eq!(disk_names(e.root()), ["c"]);
        assert_eq!(names(fs, ROOT_INO).await, ["c"]);
    })
    .await
}

#[tokio::test]
async fn rename_of_a_directory_holding_a_file_being_written() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        let (_, opened) = fs.create(d.ino, "f", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"first,").await.unwrap();
        fs.rename(ROOT_INO, "d", ROOT_INO, "e", RenameFlags::default())
            .await
            .unwrap();
        fs.write(opened.fh, 6, b"second").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(disk_names(e.root()), ["e"]);
        assert_eq!(
            std::fs::read(e.root().join("e/f")).unwrap(),
            b"first,second"
        );
        let e_ = fs.lookup(ROOT_INO, "e").await.unwrap();
        assert_eq!(names(fs, e_.ino).await, ["f"]);
    })
    .await
}

#[tokio::test]
async fn reading_a_file_while_another_handle_writes_it() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let (attr, writer) = fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        fs.write(writer.fh, 0, b"staged").await.unwrap();
        // The writer reads its own staged bytes.
        assert_eq!(fs.read(writer.fh, 0, 100).await.unwrap(), &b"staged"[..]);
        // Another handle opened meanwhile reads what the UFS holds:
        // nothing yet, so end of file at once.
        let reader = fs.open(attr.ino, RO).await.unwrap();
        assert_eq!(fs.read(reader.fh, 0, 100).await.unwrap(), &b""[..]);
        fs.release(writer.fh).await.unwrap();
        fs.release(reader.fh).await.unwrap();
        // Opened after the close, it reads the whole file.
        assert_eq!(read_all(fs, attr.ino).await.unwrap(), b"staged");
    })
    .await
}

#[tokio::test]
async fn rename_while_writing_moves_the_pending_file() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let d = fs.mkdir(ROOT_INO, "d").await.unwrap();
        let (_, opened) = fs.create(ROOT_INO, "a", W_TRUNC).await.unwrap();
        fs.write(opened.fh, 0, b"first,").await.unwrap();
        fs.rename(ROOT_INO, "a", d.ino, "b", RenameFlags::default())
            .await
            .unwrap();
        assert_eq!(errno(fs.lookup(ROOT_INO, "a").await), libc::ENOENT);
        assert_eq!(fs.lookup(d.ino, "b").await.unwrap().size, 6);
        fs.write(opened.fh, 6, b"second").await.unwrap();
        fs.release(opened.fh).await.unwrap();
        assert_eq!(disk_names(e.root()), ["d"]);
        assert_eq!(
            std::fs::read(e.root().join("d/b")).unwrap(),
            b"first,second"
        );
    })
    .await
}

/// The kernel sends RELEASE after close(2) has returned, so a new handle can
/// open a file whose previous writer is flushed but not yet released. It must
/// still build on the uploaded content.
#[tokio::test]
async fn random_write_after_flush_before_release_keeps_the_content() {
    timed(async {
        let e = env_with(&["/"], |c| c.random_writes = true);
        let fs = &e.fs;
        let (attr, first) = fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        fs.write(first.fh, 0, b"0123456789").await.unwrap();
        fs.flush(first.fh).await.unwrap();
        let second = fs.open(attr.ino, W).await.unwrap();
        fs.write(second.fh, 3, b"xy").await.unwrap();
        fs.release(first.fh).await.unwrap();
        fs.flush(second.fh).await.unwrap();
        fs.release(second.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"012xy56789");
    })
    .await
}

/// A FLUSH from a process other than the opener (a child closing an
/// inherited descriptor) must not publish a partial file.
#[tokio::test]
async fn flush_from_another_process_does_not_upload() {
    timed(async {
        let e = env();
        let fs = &e.fs;
        let (_, o) = fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        fs.set_opener(o.fh, 100);
        fs.write(o.fh, 0, b"part").await.unwrap();
        fs.flush_from(o.fh, Some(200)).await.unwrap();
        assert!(
            !e.root().join("f").exists(),
            "nothing published by the child's close"
        );
        fs.flush_from(o.fh, Some(100)).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"part");
        fs.release(o.fh).await.unwrap();
    })
    .await
}
