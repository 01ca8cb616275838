//! A daemon dies and a successor takes over its FUSE connection: the
//! kernel's node ids, lookup counts and handles must mean the same files.

use super::*;
use crate::Start;

/// An environment whose filesystem journals, as a supervised daemon's does.
fn journaled_env() -> Env {
    let mut e = env();
    e.fs = e.journaled(Start::Fresh).unwrap();
    e
}

async fn write_file(root: &Path, name: &str, data: &[u8]) {
    std::fs::write(root.join(name), data).unwrap();
}

#[tokio::test]
async fn node_ids_and_lookup_counts_survive_a_takeover() {
    timed(async {
        let mut e = journaled_env();
        std::fs::create_dir(e.root().join("d")).unwrap();
        write_file(e.root(), "d/f", b"hello").await;
        let d = e.fs.lookup(ROOT_INO, "d").await.unwrap();
        let f = e.fs.lookup(d.ino, "f").await.unwrap();
        e.fs.lookup(d.ino, "f").await.unwrap();
        e.crash_and_take_over();
        let fs = &e.fs;
        assert_eq!(fs.getattr(f.ino).await.unwrap().size, 5);
        assert_eq!(fs.lookup(d.ino, "f").await.unwrap().ino, f.ino);
        // Three lookups are held now; two forgets leave the node known.
        fs.forget(f.ino, 2);
        assert_eq!(fs.getattr(f.ino).await.unwrap().ino, f.ino);
        fs.forget(f.ino, 1);
        assert_eq!(errno(fs.getattr(f.ino).await), libc::ESTALE);
        let g = fs.lookup(d.ino, "f").await.unwrap();
        assert!(g.ino > f.ino, "a forgotten id is not handed out again");
    })
    .await
}

#[tokio::test]
async fn a_rename_before_the_crash_is_kept() {
    timed(async {
        let mut e = journaled_env();
        std::fs::create_dir(e.root().join("d")).unwrap();
        write_file(e.root(), "d/f", b"abc").await;
        let d = e.fs.lookup(ROOT_INO, "d").await.unwrap();
        let f = e.fs.lookup(d.ino, "f").await.unwrap();
        e.fs.rename(ROOT_INO, "d", ROOT_INO, "e", RenameFlags::default())
            .await
            .unwrap();
        e.crash_and_take_over();
        assert_eq!(read_all(&e.fs, f.ino).await.unwrap(), b"abc");
        let looked = e.fs.lookup(d.ino, "f").await.unwrap();
        assert_eq!(
            looked.ino, f.ino,
            "the moved node is found under its new parent path"
        );
    })
    .await
}

#[tokio::test]
async fn a_read_handle_keeps_reading_its_version_after_a_takeover() {
    timed(async {
        let mut e = journaled_env();
        let data = pattern(5 * PAGE as usize + 123, 7);
        write_file(e.root(), "f", &data).await;
        let f = e.fs.lookup(ROOT_INO, "f").await.unwrap();
        let opened = e.fs.open(f.ino, RO).await.unwrap();
        let head = e.fs.read(opened.fh, 0, PAGE as u32).await.unwrap();
        assert_eq!(&head[..], &data[..PAGE as usize]);
        e.crash_and_take_over();
        let rest = read_fh(&e.fs, opened.fh).await.unwrap();
        assert_eq!(rest, data);
        e.fs.release(opened.fh).await.unwrap();
        assert_eq!(e.fs.open_handles(), 0);
    })
    .await
}

#[tokio::test]
async fn a_write_handle_keeps_writing_and_its_close_uploads_everything() {
    timed(async {
        let mut e = journaled_env();
        let data = pattern(3 * PAGE as usize + 10, 3);
        let (_, opened) = e.fs.create(ROOT_INO, "new", W_TRUNC).await.unwrap();
        let half = data.len() / 2;
        e.fs.write(opened.fh, 0, &data[..half]).await.unwrap();
        e.crash_and_take_over();
        // The file being written is still visible with its staged size.
        assert_eq!(
            e.fs.lookup(ROOT_INO, "new").await.unwrap().size,
            half as u64
        );
        assert!(!e.root().join("new").exists(), "nothing uploaded yet");
        // The kernel resends a write that was in flight: it lands again,
        // though a write that is not resent may not go back.
        assert_eq!(
            errno(e.fs.write(opened.fh, 0, &data[..half]).await),
            libc::ENOTSUP
        );
        e.fs.write_resent(opened.fh, 0, &data[..half])
            .await
            .unwrap();
        e.fs.write(opened.fh, half as u64, &data[half..])
            .await
            .unwrap();
        e.fs.flush(opened.fh).await.unwrap();
        e.fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("new")).unwrap(), data);
    })
    .await
}

#[tokio::test]
async fn a_release_cut_short_by_the_crash_is_done_by_the_successor() {
    timed(async {
        let mut e = journaled_env();
        let (_, opened) = e.fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        e.fs.write(opened.fh, 0, b"complete").await.unwrap();
        e.crash_and_take_over();
        e.fs.release(opened.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"complete");
        let staging: Vec<_> = std::fs::read_dir(&e.cfg.staging_dir).unwrap().collect();
        assert!(staging.is_empty(), "staging files left: {staging:?}");
    })
    .await
}

#[tokio::test]
async fn an_unlinked_file_being_written_is_not_resurrected() {
    timed(async {
        let mut e = journaled_env();
        let (_, opened) = e.fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        e.fs.write(opened.fh, 0, b"doomed").await.unwrap();
        e.fs.unlink(ROOT_INO, "f").await.unwrap();
        e.crash_and_take_over();
        e.fs.release(opened.fh).await.unwrap();
        assert!(!e.root().join("f").exists());
        assert_eq!(errno(e.fs.lookup(ROOT_INO, "f").await), libc::ENOENT);
    })
    .await
}

#[tokio::test]
async fn a_lost_staging_file_fails_its_handle_with_eio_and_uploads_nothing() {
    timed(async {
        let mut e = journaled_env();
        let (_, opened) = e.fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        e.fs.write(opened.fh, 0, b"part").await.unwrap();
        for f in std::fs::read_dir(&e.cfg.staging_dir).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        e.crash_and_take_over();
        assert_eq!(errno(e.fs.write(opened.fh, 4, b"more").await), libc::EIO);
        assert_eq!(errno(e.fs.flush(opened.fh).await), libc::EIO);
        e.fs.release(opened.fh).await.unwrap();
        assert!(!e.root().join("f").exists());
    })
    .await
}

#[tokio::test]
async fn an_open_directory_lists_again_and_handle_numbers_move_on() {
    timed(async {
        let mut e = journaled_env();
        write_file(e.root(), "a", b"1").await;
        write_file(e.root(), "b", b"2").await;
        let dir = e.fs.opendir(ROOT_INO).await.unwrap();
        e.crash_and_take_over();
        let names: Vec<String> =
            e.fs.readdir(dir, 0)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.name)
                .collect();
        assert_eq!(names, [".", "..", "a", "b"]);
        let again = e.fs.opendir(ROOT_INO).await.unwrap();
        assert!(again > dir, "handle numbers are not reused");
        e.fs.releasedir(dir);
        e.fs.releasedir(again);
    })
    .await
}

#[tokio::test]
async fn a_second_crash_restores_what_the_first_successor_recorded() {
    timed(async {
        let mut e = journaled_env();
        let (_, w) = e.fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        e.fs.write(w.fh, 0, b"one ").await.unwrap();
        e.crash_and_take_over();
        e.fs.write(w.fh, 4, b"two").await.unwrap();
        let g = e.fs.lookup(ROOT_INO, "f").await.unwrap();
        e.crash_and_take_over();
        assert_eq!(e.fs.getattr(g.ino).await.unwrap().size, 7);
        e.fs.release(w.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("f")).unwrap(), b"one two");
    })
    .await
}

#[tokio::test]
async fn a_takeover_without_a_journal_is_refused_and_a_fresh_start_forgets() {
    timed(async {
        let mut e = journaled_env();
        let (_, w) = e.fs.create(ROOT_INO, "f", W_TRUNC).await.unwrap();
        e.fs.write(w.fh, 0, b"x").await.unwrap();
        // A new connection: nothing of the old one is kept.
        let fresh = e.journaled(Start::Fresh).unwrap();
        std::mem::forget(std::mem::replace(&mut e.fs, fresh));
        assert_eq!(errno(e.fs.write(w.fh, 1, b"y").await), libc::EBADF);
        assert_eq!(std::fs::read_dir(&e.cfg.staging_dir).unwrap().count(), 0);
        std::fs::remove_file(e.state.path().join("session").join("journal")).unwrap();
        assert!(e.journaled(Start::Takeover).is_err());
    })
    .await
}

#[tokio::test]
async fn a_resent_open_create_or_opendir_gets_the_handle_the_dead_daemon_made() {
    timed(async {
        let mut e = journaled_env();
        write_file(e.root(), "r", b"read me").await;
        let r = e.fs.lookup(ROOT_INO, "r").await.unwrap();
        let origin = |unique| crate::Origin { unique, pid: 42 };
        let read = e.fs.open_from(r.ino, RO, origin(11)).await.unwrap();
        let (_, made) =
            e.fs.create_from(ROOT_INO, "c", W_TRUNC, origin(12))
                .await
                .unwrap();
        let dir = e.fs.opendir_from(ROOT_INO, origin(13)).await.unwrap();
        e.crash_and_take_over();
        let fs = &e.fs;
        assert_eq!(
            fs.open_from(r.ino, RO, origin(11)).await.unwrap().fh,
            read.fh
        );
        let (attr, again) = fs
            .create_from(ROOT_INO, "c", W_TRUNC, origin(12))
            .await
            .unwrap();
        assert_eq!(again.fh, made.fh);
        assert_eq!(attr.kind, Kind::File);
        assert_eq!(fs.opendir_from(ROOT_INO, origin(13)).await.unwrap(), dir);
        // Another request is another handle.
        assert_ne!(
            fs.open_from(r.ino, RO, origin(14)).await.unwrap().fh,
            read.fh
        );
        assert_eq!(fs.open_handles(), 4);
        fs.write(made.fh, 0, b"c").await.unwrap();
        fs.release(made.fh).await.unwrap();
        assert_eq!(std::fs::read(e.root().join("c")).unwrap(), b"c");
    })
    .await
}

#[tokio::test]
async fn resent_changes_that_the_dead_daemon_finished_answer_as_done() {
    timed(async {
        let mut e = journaled_env();
        std::fs::create_dir(e.root().join("d")).unwrap();
        write_file(e.root(), "d/f", b"f").await;
        write_file(e.root(), "gone", b"g").await;
        let d = e.fs.lookup(ROOT_INO, "d").await.unwrap();
        let f = e.fs.lookup(d.ino, "f").await.unwrap();
        let gone = e.fs.lookup(ROOT_INO, "gone").await.unwrap();
        // The dead daemon did these in the UFS and died before its tables
        // or its answers caught up.
        std::fs::rename(e.root().join("d"), e.root().join("moved")).unwrap();
        std::fs::remove_file(e.root().join("gone")).unwrap();
        std::fs::create_dir(e.root().join("made")).unwrap();
        e.crash_and_take_over();
        let fs = &e.fs;
        let none = RenameFlags::default();
        fs.rename_resent(ROOT_INO, "d", ROOT_INO, "moved", none)
            .await
            .unwrap();
        assert_eq!(
            read_all(fs, f.ino).await.unwrap(),
            b"f",
            "nodes follow the rename"
        );
        fs.unlink_resent(ROOT_INO, "gone").await.unwrap();
        assert_eq!(errno(fs.getattr(gone.ino).await), libc::ENOENT);
        assert_eq!(
            fs.mkdir_resent(ROOT_INO, "made").await.unwrap().kind,
            Kind::Dir
        );
        fs.rmdir_resent(ROOT_INO, "never-was").await.unwrap();
        // What is not the dead daemon's work still fails.
        assert_eq!(
            errno(fs.rename_resent(ROOT_INO, "x", ROOT_INO, "y", none).await),
            libc::ENOENT
        );
        write_file(e.root(), "file", b"").await;
        assert_eq!(errno(fs.mkdir_resent(ROOT_INO, "file").await), libc::EEXIST);
        // Not resent: the same calls fail as they always did.
        assert_eq!(errno(fs.unlink(ROOT_INO, "gone").await), libc::ENOENT);
        assert_eq!(errno(fs.mkdir(ROOT_INO, "made").await), libc::EEXIST);
    })
    .await
}
