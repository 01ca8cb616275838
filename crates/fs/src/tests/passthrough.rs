//! I/O modes: which opens the kernel may serve by FUSE passthrough, and how
//! the modes of one inode's opens stay compatible (the kernel fails an open
//! whose mode conflicts with the inode's with EIO).

use super::*;
use crate::IoMode;

/// Writes `name` into the UFS, reads it whole through `fs` so every page is
/// cached, and waits for the background check that passthrough needs.
async fn whole_file(e: &Env, name: &str, len: usize) -> Attr {
    std::fs::write(e.root().join(name), pattern(len, 5)).unwrap();
    let attr = e.fs.lookup(ROOT_INO, name).await.unwrap();
    let o = e.fs.open(attr.ino, RO).await.unwrap();
    assert_eq!(o.mode, IoMode::Cached, "nothing cached yet");
    read_fh(&e.fs, o.fh).await.unwrap();
    e.fs.release(o.fh).await.unwrap();
    while e.fs.checks_running() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    attr
}

fn passthrough_env() -> Env {
    let e = env();
    e.fs.enable_passthrough(true);
    e
}

fn is_passthrough(m: &IoMode) -> bool {
    matches!(m, IoMode::Passthrough { .. })
}

#[tokio::test]
async fn a_whole_checked_file_is_passed_through_and_pinned() {
    timed(async {
        let e = passthrough_env();
        let attr = whole_file(&e, "f", 3 * PAGE as usize + 7).await;
        let a = e.fs.open(attr.ino, RO).await.unwrap();
        let IoMode::Passthrough { file, id } = &a.mode else {
            panic!("expected passthrough, got {:?}", a.mode)
        };
        assert_eq!(id, &None, "the first open registers the backing file");
        assert_eq!(
            std::fs::read(file).unwrap(),
            pattern(3 * PAGE as usize + 7, 5)
        );
        e.fs.set_backing(attr.ino, 17);
        let b = e.fs.open(attr.ino, RO).await.unwrap();
        assert_eq!(
            b.mode,
            IoMode::Passthrough {
                file: file.clone(),
                id: Some(17)
            },
            "later opens share it"
        );
        let key =
            e.fs.file_handle(a.fh)
                .unwrap()
                .reader
                .as_ref()
                .unwrap()
                .src
                .key;
        assert_eq!(e.fs.inner.pages.pins(key), 1);
        assert_eq!(
            e.fs.release_io(a.fh).await.1,
            None,
            "another open still uses it"
        );
        assert_eq!(
            e.fs.release_io(b.fh).await.1,
            Some(17),
            "the last one closes it"
        );
        assert_eq!(e.fs.inner.pages.pins(key), 0);
    })
    .await
}

#[tokio::test]
async fn modes_of_one_inode_never_conflict() {
    timed(async {
        let e = passthrough_env();
        let attr = whole_file(&e, "f", 2 * PAGE as usize).await;
        // A cached open is held: a new open of the whole file stays cached.
        e.fs.enable_passthrough(false);
        let cached = e.fs.open(attr.ino, RO).await.unwrap();
        e.fs.enable_passthrough(true);
        assert_eq!(cached.mode, IoMode::Cached);
        assert_eq!(e.fs.open(attr.ino, RO).await.unwrap().mode, IoMode::Cached);
        // Once every cached open is gone, passthrough starts.
        for fh in [cached.fh, cached.fh + 1] {
            e.fs.release(fh).await.unwrap();
        }
        let through = e.fs.open(attr.ino, RO).await.unwrap();
        assert!(is_passthrough(&through.mode), "{:?}", through.mode);
        // A writer of a passed-through inode is refused: the kernel would
        // send its writes to the backing file.
        assert_eq!(errno(e.fs.open(attr.ino, W_TRUNC).await), libc::ETXTBSY);
        // The storage changed behind our back: a reader of the new version
        // shares the backing file, and reads the pinned version, until the
        // passthrough opens are gone.
        std::fs::write(e.root().join("f"), b"new").unwrap();
        e.fs.invalidate("/f");
        let shared = e.fs.open(attr.ino, RO).await.unwrap();
        assert_eq!(shared.mode, through.mode);
        e.fs.release(through.fh).await.unwrap();
        e.fs.release(shared.fh).await.unwrap();
        let after = e.fs.open(attr.ino, W_TRUNC).await.unwrap();
        assert_eq!(
            after.mode,
            IoMode::Cached,
            "a writer once the readers are gone"
        );
        write_seq(&e.fs, after.fh, b"newer").await.unwrap();
        e.fs.release(after.fh).await.unwrap();
        assert_eq!(read_all(&e.fs, attr.ino).await.unwrap(), b"newer");
    })
    .await
}

#[tokio::test]
async fn a_refused_backing_turns_the_open_cached_and_passthrough_off() {
    timed(async {
        let e = passthrough_env();
        let attr = whole_file(&e, "f", PAGE as usize).await;
        let o = e.fs.open(attr.ino, RO).await.unwrap();
        assert!(is_passthrough(&o.mode));
        e.fs.passthrough_refused(o.fh);
        assert!(!e.fs.passthrough_enabled());
        assert_eq!(e.fs.open(attr.ino, RO).await.unwrap().mode, IoMode::Cached);
        assert_eq!(
            read_fh(&e.fs, o.fh).await.unwrap(),
            pattern(PAGE as usize, 5)
        );
    })
    .await
}

#[tokio::test]
async fn without_passthrough_or_a_whole_file_opens_are_cached() {
    timed(async {
        let e = env();
        let attr = whole_file(&e, "f", PAGE as usize).await;
        assert_eq!(e.fs.open(attr.ino, RO).await.unwrap().mode, IoMode::Cached);
        let e = passthrough_env();
        std::fs::write(e.root().join("g"), pattern(64 * PAGE as usize, 1)).unwrap();
        let g = e.fs.lookup(ROOT_INO, "g").await.unwrap();
        let o = e.fs.open(g.ino, RO).await.unwrap();
        // One page in the middle: a random read, so nothing is read ahead.
        e.fs.read(o.fh, 40 * PAGE, 10).await.unwrap();
        e.fs.release(o.fh).await.unwrap();
        assert_eq!(
            e.fs.open(g.ino, RO).await.unwrap().mode,
            IoMode::Cached,
            "half a file cannot be passed through"
        );
    })
    .await
}

#[tokio::test]
async fn a_takeover_keeps_passthrough_opens_their_backing_and_their_pin() {
    timed(async {
        let mut e = env();
        e.fs = e.journaled(crate::Start::Fresh).unwrap();
        e.fs.enable_passthrough(true);
        let attr = whole_file(&e, "f", 2 * PAGE as usize).await;
        let o = e.fs.open(attr.ino, RO).await.unwrap();
        assert!(is_passthrough(&o.mode));
        e.fs.set_backing(attr.ino, 5);
        let key =
            e.fs.file_handle(o.fh)
                .unwrap()
                .reader
                .as_ref()
                .unwrap()
                .src
                .key;
        e.crash_and_take_over();
        e.fs.enable_passthrough(true);
        assert_eq!(
            e.fs.inner.pages.pins(key),
            1,
            "still pinned after the takeover"
        );
        let again = e.fs.open(attr.ino, RO).await.unwrap();
        assert!(
            matches!(again.mode, IoMode::Passthrough { id: Some(5), .. }),
            "a new open shares the dead daemon's backing: {:?}",
            again.mode
        );
        assert_eq!(e.fs.release_io(o.fh).await.1, None);
        assert_eq!(e.fs.release_io(again.fh).await.1, Some(5));
        assert_eq!(e.fs.inner.pages.pins(key), 0);
    })
    .await
}
