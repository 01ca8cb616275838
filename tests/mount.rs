//! `weir mount` end to end: a real FUSE mount over a local directory and
//! over a real S3 server, a namespace joining both, `weir umount`, and
//! nothing left behind.

mod common;

use std::io::Read;

use common::*;

fn roundtrip(backend: Backend) {
    let env = Env::new(backend);
    let big = pattern((5 << 20) + 123, 7);
    env.put("dir/seeded.bin", &big);
    let guard = env.mount(&[]);
    let mnt = guard.path().to_path_buf();
    timed(LIMIT, move || {
        assert_eq!(
            std::fs::read(mnt.join("dir/seeded.bin")).unwrap(),
            big,
            "seeded object reads back"
        );
        let data = pattern(3 << 20, 9);
        std::fs::write(mnt.join("dir/new.bin"), &data).unwrap();
        assert_eq!(std::fs::read(mnt.join("dir/new.bin")).unwrap(), data);
        assert_eq!(names(&mnt.join("dir")), vec!["new.bin", "seeded.bin"]);
    });
    assert_eq!(
        env.get("dir/new.bin").unwrap(),
        pattern(3 << 20, 9),
        "written file is in the UFS"
    );
}

#[test]
fn file_backend_roundtrip() {
    roundtrip(Backend::File);
}

#[test]
fn s3_backend_roundtrip() {
    roundtrip(Backend::S3);
}

#[test]
fn one_namespace_joins_local_and_s3() {
    let mut env = Env::new(Backend::File);
    let s3_root = env.tmp.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let s3 = S3Server::start(&s3_root, BUCKET).unwrap();
    std::fs::create_dir_all(s3.root().join(BUCKET).join("models")).unwrap();
    std::fs::write(s3.root().join(BUCKET).join("models/m.bin"), b"model").unwrap();
    env.put("local.txt", b"local");
    let opts: Vec<String> = s3
        .options()
        .iter()
        .map(|(k, v)| format!("{k}: \"{v}\""))
        .collect();
    env.extra_config = format!(
        "  - path: /remote/s3\n    ufs: \"s3://{BUCKET}/models\"\n    options: {{{}}}\n",
        opts.join(", ")
    );
    env.s3 = None;
    let guard = env.mount(&[]);
    let mnt = guard.path().to_path_buf();
    timed(LIMIT, move || {
        assert_eq!(names(&mnt), vec!["local.txt", "remote"]);
        assert_eq!(names(&mnt.join("remote")), vec!["s3"]);
        assert_eq!(
            std::fs::read(mnt.join("remote/s3/m.bin")).unwrap(),
            b"model"
        );
        assert_eq!(std::fs::read(mnt.join("local.txt")).unwrap(), b"local");
        std::fs::write(mnt.join("remote/s3/out.txt"), b"up").unwrap();
        // Moving between storages is a copy, which rename(2) refuses with EXDEV.
        assert_errno(
            std::fs::rename(mnt.join("local.txt"), mnt.join("remote/s3/local.txt")),
            libc::EXDEV,
        );
        // Mount points cannot be removed from inside the mount.
        assert_errno(std::fs::remove_dir(mnt.join("remote/s3")), libc::EBUSY);
    });
    assert_eq!(
        std::fs::read(s3.root().join(BUCKET).join("models/out.txt")).unwrap(),
        b"up"
    );
    drop(s3);
}

#[test]
fn umount_command_unmounts_and_the_daemon_exits() {
    let env = Env::new(Backend::File);
    let mut guard = env.mount(&[]);
    assert!(is_mounted(&env.mnt));
    let pid = guard.pid().expect("daemon pid");
    let out = weir_umount(&[], &env.mnt);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&env.mnt));
    assert!(
        guard.unmount(std::time::Duration::from_secs(10)),
        "daemon {pid} exited by itself"
    );
    // Unmounting again is a clear error.
    let out = weir_umount(&[], &env.mnt);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not mounted"));
}

#[test]
fn busy_umount_is_refused_and_lazy_works() {
    let env = Env::new(Backend::File);
    env.put("f", b"x");
    let mut guard = env.mount(&[]);
    let mut f = std::fs::File::open(env.mnt.join("f")).unwrap();
    let out = weir_umount(&[], &env.mnt);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = weir_umount(&["--lazy"], &env.mnt);
    assert!(out.status.success());
    // The open file keeps working after a lazy unmount.
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "x");
    drop(f);
    assert!(guard.unmount(std::time::Duration::from_secs(10)));
}

/// Kills the daemon (SIGKILL) while `write` is in progress and checks the
/// UFS holds nothing or the whole file, and that the application was told.
/// The supervisor replaces the daemon on the live connection, so the
/// application must in fact succeed, with all its data in the UFS.
fn crash_during(
    backend: Backend,
    size: usize,
    kill_after: std::time::Duration,
    close_before_kill: bool,
) {
    let env = Env::new(backend);
    let guard = env.mount(&[]);
    let pid = guard.pid().expect("daemon pid");
    let path = guard.join("big.bin");
    let data = pattern(size, 42);
    let mut expected = data.clone();
    if !close_before_kill {
        expected.extend_from_slice(b"tail");
    }
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&data)?;
        if close_before_kill {
            f.sync_all()?;
        } else {
            std::thread::sleep(std::time::Duration::from_secs(2));
            f.write_all(b"tail")?;
        }
        drop(f);
        Ok(())
    });
    std::thread::sleep(kill_after);
    signal(pid, libc::SIGKILL);
    let app = timed(LIMIT, move || writer.join().expect("writer thread"));
    match env.get("big.bin") {
        None => {}
        Some(got) => {
            assert!(
                app.is_ok() || close_before_kill,
                "{backend:?}: an object of {} bytes appeared although the app got {app:?}; log: {}",
                got.len(),
                guard.log()
            );
            assert_eq!(
                got.len(),
                expected.len(),
                "{backend:?}: never a partial object (the app got {app:?}); log: {}",
                guard.log()
            );
            assert!(got == expected, "never a corrupt object");
        }
    }
    assert!(
        app.is_ok(),
        "{backend:?}: the writer failed across a takeover: {app:?}; log: {}",
        guard.log()
    );
    assert!(
        env.get("big.bin").as_deref() == Some(&expected[..]),
        "success means the data is there"
    );
    // The writer can finish before the supervisor has recorded the
    // replacement's PID.
    assert!(
        eventually(std::time::Duration::from_secs(30), || guard.pid()
            != Some(pid))
        .is_some(),
        "a new daemon serves"
    );
    drop(guard);
    assert!(!is_mounted(&env.mnt));
}

#[test]
fn a_daemon_killed_before_close_loses_no_write() {
    crash_during(
        Backend::S3,
        20 << 20,
        std::time::Duration::from_millis(500),
        false,
    );
    crash_during(
        Backend::File,
        20 << 20,
        std::time::Duration::from_millis(500),
        false,
    );
}

#[test]
fn a_daemon_killed_during_the_upload_loses_nothing() {
    for delay in [5, 50, 200] {
        crash_during(
            Backend::S3,
            48 << 20,
            std::time::Duration::from_millis(delay),
            true,
        );
    }
}

#[test]
fn large_write_goes_up_in_parts() {
    // Above the 8 MiB part size, so the S3 upload is multipart.
    let env = Env::new(Backend::S3);
    let guard = env.mount(&[]);
    let data = pattern((20 << 20) + 5, 3);
    let p = guard.join("multi.bin");
    let d2 = data.clone();
    timed(LIMIT, move || std::fs::write(p, d2).unwrap());
    assert!(env.get("multi.bin").unwrap() == data);
}

#[test]
fn a_child_closing_an_inherited_descriptor_does_not_publish_a_partial_file() {
    let env = Env::new(Backend::S3);
    let guard = env.mount(&[]);
    let path = guard.join("part.bin");
    let in_ufs = env.data.join("part.bin");
    let published_mid_write = timed(LIMIT, move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"first half ").unwrap();
        // fork + exec: the child's copy of the descriptor is closed at exec,
        // which sends the filesystem a FLUSH from the child.
        std::process::Command::new("true").status().unwrap();
        let published = in_ufs.exists();
        f.write_all(b"second half").unwrap();
        drop(f);
        published
    });
    assert!(
        !published_mid_write,
        "the child's close published a partial file"
    );
    assert_eq!(
        env.get("part.bin").as_deref(),
        Some(&b"first half second half"[..])
    );
}
