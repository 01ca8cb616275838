//! FUSE passthrough on a real mount: a wholly cached file is read by the
//! kernel straight from the cache's data file, without the daemon, and its
//! pages are never evicted while it is.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Whether `f` reads back `data` while the daemon is stopped: only a file
/// the kernel reads without the daemon can. The descriptor is opened
/// before the stop and closed after it, since open and close do reach
/// the daemon.
fn reads_without_daemon(guard: &MountGuard, f: &std::fs::File, data: &[u8]) -> bool {
    let pid = guard.pid().expect("daemon pid");
    let f = f.try_clone().unwrap();
    let want = data.to_vec();
    let (tx, rx) = mpsc::channel();
    stop(pid);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; want.len()];
        let ok = f.read_exact_at(&mut buf, 0).is_ok() && buf == want;
        let _ = tx.send(ok);
    });
    let answered = rx.recv_timeout(Duration::from_millis(1500));
    signal(pid, libc::SIGCONT);
    match answered {
        Ok(ok) => ok,
        Err(_) => {
            // The read waited for the daemon: let it finish before going on.
            let _ = rx.recv_timeout(Duration::from_secs(30));
            false
        }
    }
}

/// Reads `name` whole through the mount, then opens it until an open is
/// passed through (the check of a whole file runs in the background).
fn passed_through(
    guard: &MountGuard,
    name: &str,
    data: &[u8],
    attempts: usize,
) -> Option<std::fs::File> {
    assert!(std::fs::read(guard.join(name)).unwrap() == data);
    for _ in 0..attempts {
        let f = std::fs::File::open(guard.join(name)).unwrap();
        if reads_without_daemon(guard, &f, data) {
            return Some(f);
        }
        drop(f);
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_whole_cached_file_is_read_without_the_daemon() {
    for backend in [Backend::File, Backend::S3] {
        let env = Env::new(backend);
        let data = pattern((5 << 20) + 123, 4);
        env.put("model.bin", &data);
        let guard = env.mount(&[]);
        let held = passed_through(&guard, "model.bin", &data, 20);
        assert!(
            held.is_some(),
            "{backend:?}: no open of the whole file was passed through; log: {}",
            guard.log()
        );
    }
}

#[test]
fn without_passthrough_the_daemon_serves_every_read() {
    let env = Env::new(Backend::File);
    let data = pattern(1 << 20, 2);
    env.put("model.bin", &data);
    let guard = env.mount(&["--set", "fuse.passthrough=false"]);
    assert!(passed_through(&guard, "model.bin", &data, 3).is_none());
}

#[test]
fn a_file_read_by_the_kernel_is_never_evicted_under_it() {
    let env = Env::new(Backend::File);
    let a = pattern(3 << 20, 7);
    let b = pattern(3 << 20, 8);
    env.put("a.bin", &a);
    env.put("b.bin", &b);
    // Room for four 1 MiB pages: b cannot be cached without evicting a.
    let guard = env.mount(&["--cache-size", "4MiB"]);
    let held = passed_through(&guard, "a.bin", &a, 20).expect("a passed through");
    let gb = guard.join("b.bin");
    let got_b = timed(LIMIT, move || std::fs::read(gb).unwrap());
    assert!(got_b == b, "b reads right even with the cache pinned full");
    let mut buf = vec![0u8; a.len()];
    held.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf == a, "a's data file kept every page");
    drop(held);
    // Unpinned, a gives way to b like any other file.
    let gb = guard.join("b.bin");
    let again = timed(LIMIT, move || std::fs::read(gb).unwrap());
    assert!(again == b);
}

#[test]
fn a_writer_of_a_passed_through_file_is_refused_until_its_readers_close() {
    let env = Env::new(Backend::File);
    let data = pattern(2 << 20, 5);
    env.put("f.bin", &data);
    let guard = env.mount(&[]);
    let reader = passed_through(&guard, "f.bin", &data, 20).expect("passed through");
    let path = guard.join("f.bin");
    let refused = {
        let path = path.clone();
        timed(LIMIT, move || std::fs::write(path, b"new"))
    };
    assert_errno(refused, libc::ETXTBSY);
    let mut buf = vec![0u8; data.len()];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf == data, "the reader reads on");
    drop(reader);
    timed(LIMIT, move || std::fs::write(path, b"new").unwrap());
    assert_eq!(env.get("f.bin").unwrap(), b"new");
}
