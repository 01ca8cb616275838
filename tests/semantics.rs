//! Every row of docs/semantics.md, checked on a real mount over a local
//! directory and over a real S3 server.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Row ids this file tests; must match the table in docs/semantics.md.
const TESTED: &[&str] = &[
    "namespace",
    "reads",
    "write-new",
    "random-writes",
    "symlinks",
    "locks",
    "refused",
    "statfs",
    "parallel-dirops",
    "write-cache",
    "passthrough",
];

#[test]
fn documented_rows_are_all_tested() {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/semantics.md"))
            .unwrap();
    let mut rows: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| id") && !l.starts_with("|---"))
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .collect();
    rows.sort();
    let mut tested = TESTED.to_vec();
    tested.sort();
    assert_eq!(
        rows, tested,
        "docs/semantics.md rows and tested rows differ"
    );
}

/// Mounts `backend` with extra args and runs `body` with the mount point.
fn with_mount(backend: Backend, args: &[&str], body: impl FnOnce(PathBuf, &Env) + Send + 'static) {
    let env = Env::new(backend);
    let guard = env.mount(args);
    let mnt = guard.path().to_path_buf();
    let env = std::sync::Arc::new(env);
    let e2 = env.clone();
    timed(LIMIT, move || body(mnt, &e2));
    drop(guard);
}

macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn file() {
                super::$name(super::Backend::File);
            }
            #[test]
            fn s3() {
                super::$name(super::Backend::S3);
            }
        }
    };
}

fn namespace(b: Backend) {
    with_mount(b, &[], |m, env| {
        fs::create_dir(m.join("d")).unwrap();
        assert_errno(fs::create_dir(m.join("d")), libc::EEXIST);
        fs::write(m.join("d/f"), b"x").unwrap();
        assert_eq!(fs::metadata(m.join("d/f")).unwrap().len(), 1);
        assert!(fs::metadata(m.join("d")).unwrap().is_dir());
        assert_eq!(names(&m.join("d")), vec!["f"]);
        assert_errno(fs::remove_dir(m.join("d")), libc::ENOTEMPTY);
        fs::rename(m.join("d/f"), m.join("d/g")).unwrap();
        fs::write(m.join("d/h"), b"hh").unwrap();
        fs::rename(m.join("d/h"), m.join("d/g")).unwrap();
        assert_eq!(
            fs::read(m.join("d/g")).unwrap(),
            b"hh",
            "rename replaces a file"
        );
        fs::rename(m.join("d"), m.join("e")).unwrap();
        assert_errno(fs::metadata(m.join("d")), libc::ENOENT);
        assert_eq!(fs::read(m.join("e/g")).unwrap(), b"hh");
        assert_eq!(env.get("e/g").unwrap(), b"hh");
        assert_eq!(names(&m), vec!["e"]);
        assert_errno(fs::remove_file(m.join("e/nope")), libc::ENOENT);
        let big = pattern(3 << 20, 33);
        fs::write(m.join("e/big"), &big).unwrap();
        let mut held = File::open(m.join("e/big")).unwrap();
        let mut head = [0u8; 10];
        std::io::Read::read_exact(&mut held, &mut head).unwrap();
        fs::remove_file(m.join("e/big")).unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut held, &mut rest).unwrap();
        assert!(
            head[..] == big[..10] && rest[..] == big[10..],
            "an open file outlives its name"
        );
        drop(held);
        fs::remove_file(m.join("e/g")).unwrap();
        assert!(env.get("e/g").is_none());
        fs::remove_dir(m.join("e")).unwrap();
        assert_errno(fs::metadata(m.join("e")), libc::ENOENT);
        assert!(names(&m).is_empty());
    });
}
on_both!(namespace);

fn reads(b: Backend) {
    let size = 8 << 20;
    with_mount(b, &[], move |m, env| {
        let data = pattern(size, 11);
        env.put("r.bin", &data);
        let p = m.join("r.bin");
        assert_eq!(fs::read(&p).unwrap(), data, "sequential");
        let f = File::open(&p).unwrap();
        let mut x = 12345u64;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 20) as usize % size;
            let len = ((x >> 8) as usize % 300_000).min(size - off);
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off as u64).unwrap();
            assert_eq!(buf, &data[off..off + len], "random read at {off}+{len}");
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || fs::read(p).unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), data, "concurrent");
        }
    });
}
on_both!(reads);

fn write_new(b: Backend) {
    with_mount(b, &[], |m, env| {
        let data = pattern(3 << 20, 12);
        let mut f = File::create(m.join("w.bin")).unwrap();
        for chunk in data.chunks(128 << 10) {
            f.write_all(chunk).unwrap();
        }
        assert!(
            env.get("w.bin").is_none(),
            "nothing visible in the UFS before close"
        );
        drop(f);
        assert_eq!(env.get("w.bin").unwrap(), data, "whole file after close");
        fs::write(m.join("w.bin"), b"short").unwrap();
        assert_eq!(
            env.get("w.bin").unwrap(),
            b"short",
            "overwrite with O_TRUNC"
        );
        OpenOptions::new()
            .write(true)
            .open(m.join("w.bin"))
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(env.get("w.bin").unwrap(), b"", "ftruncate to 0");
        fs::write(m.join("w.bin"), b"again").unwrap();
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.join("w.bin"))
            .unwrap();
        assert_eq!(
            env.get("w.bin").unwrap(),
            b"",
            "open with O_TRUNC and close"
        );
        assert_eq!(fs::metadata(m.join("w.bin")).unwrap().len(), 0);
    });
}
on_both!(write_new);

fn random_writes(b: Backend) {
    with_mount(b, &[], |m, env| {
        env.put("a.txt", b"0123456789");
        assert_errno(
            OpenOptions::new().append(true).open(m.join("a.txt")),
            libc::ENOTSUP,
        );
        let f = OpenOptions::new()
            .write(true)
            .open(m.join("a.txt"))
            .unwrap();
        assert_errno(f.write_at(b"X", 3), libc::ENOTSUP);
        assert_errno(f.set_len(5), libc::ENOTSUP);
        drop(f);
        let mut f = File::create(m.join("new.txt")).unwrap();
        f.write_all(b"abc").unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        assert_errno(f.write_all(b"hole"), libc::ENOTSUP);
        drop(f);
        assert_eq!(
            env.get("a.txt").unwrap(),
            b"0123456789",
            "refusals changed nothing"
        );
    });
    with_mount(b, &["--set", "fuse.random_writes=true"], |m, env| {
        env.put("a.txt", b"0123456789");
        let mut f = OpenOptions::new()
            .append(true)
            .open(m.join("a.txt"))
            .unwrap();
        f.write_all(b"AB").unwrap();
        drop(f);
        assert_eq!(env.get("a.txt").unwrap(), b"0123456789AB");
        let f = OpenOptions::new()
            .write(true)
            .open(m.join("a.txt"))
            .unwrap();
        f.write_at(b"xy", 3).unwrap();
        drop(f);
        assert_eq!(env.get("a.txt").unwrap(), b"012xy56789AB");
        OpenOptions::new()
            .write(true)
            .open(m.join("a.txt"))
            .unwrap()
            .set_len(4)
            .unwrap();
        assert_eq!(env.get("a.txt").unwrap(), b"012x");
        OpenOptions::new()
            .write(true)
            .open(m.join("a.txt"))
            .unwrap()
            .set_len(6)
            .unwrap();
        assert_eq!(env.get("a.txt").unwrap(), b"012x\0\0");
    });
}
on_both!(random_writes);

fn symlinks(b: Backend) {
    with_mount(b, &[], |m, _env| {
        fs::write(m.join("t"), b"target").unwrap();
        assert_errno(std::os::unix::fs::symlink("t", m.join("l")), libc::ENOTSUP);
    });
    with_mount(b, &["--set", "fuse.symlinks=true"], |m, _env| {
        fs::write(m.join("t"), b"target").unwrap();
        std::os::unix::fs::symlink("t", m.join("l")).unwrap();
        assert_eq!(fs::read_link(m.join("l")).unwrap(), PathBuf::from("t"));
        assert!(
            fs::symlink_metadata(m.join("l"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read(m.join("l")).unwrap(),
            b"target",
            "the kernel follows it"
        );
    });
}
on_both!(symlinks);

fn locks(b: Backend) {
    with_mount(b, &[], |m, _env| {
        let p = m.join("lock");
        fs::write(&p, b"").unwrap();
        let held = File::open(&p).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let other = Command::new("flock")
            .arg("-n")
            .arg(&p)
            .arg("true")
            .status()
            .unwrap();
        assert!(!other.success(), "another process cannot take the flock");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_UN) }, 0);
        let other = Command::new("flock")
            .arg("-n")
            .arg(&p)
            .arg("true")
            .status()
            .unwrap();
        assert!(other.success(), "free again after unlock");
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let script = "import fcntl,sys\nf=open(sys.argv[1],'r+')\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n sys.exit(3)\n";
        let lk = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: fcntl with a valid flock struct on our descriptor.
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &lk) }, 0);
        let st = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&p)
            .status()
            .unwrap();
        assert_eq!(
            st.code(),
            Some(3),
            "fcntl lock held by this process blocks another"
        );
    });
}
on_both!(locks);

fn refused(b: Backend) {
    with_mount(b, &[], |m, _env| {
        let p = m.join("f");
        fs::write(&p, b"x").unwrap();
        assert_errno(fs::hard_link(&p, m.join("h")), libc::ENOTSUP);
        use std::os::unix::fs::PermissionsExt;
        assert_errno(
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)),
            libc::ENOTSUP,
        );
        assert_errno(
            std::os::unix::fs::chown(&p, Some(1), Some(1)),
            libc::ENOTSUP,
        );
        let f = OpenOptions::new().write(true).open(&p);
        assert_errno(
            f.and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH)),
            libc::ENOTSUP,
        );
        let cpath = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let name = c"user.test";
        // SAFETY: valid C strings and buffer.
        let rc =
            unsafe { libc::setxattr(cpath.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
        assert_errno(libc_result(rc as i64), libc::ENOTSUP);
        let mut buf = [0u8; 16];
        // SAFETY: as above.
        let rc = unsafe {
            libc::getxattr(
                cpath.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_errno(libc_result(rc as i64), libc::ENOTSUP);
        let fifo = std::ffi::CString::new(m.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string.
        let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
        assert_errno(libc_result(rc as i64), libc::ENOTSUP);
        let dev = std::ffi::CString::new(m.join("dev").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string.
        let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
        assert_errno(libc_result(rc as i64), libc::ENOTSUP);
        assert_eq!(fs::read(&p).unwrap(), b"x", "nothing changed");
    });
}
on_both!(refused);

fn statfs(b: Backend) {
    with_mount(b, &[], |m, _env| {
        let before = nix::sys::statfs::statfs(&m).unwrap();
        let cap = before.blocks() * before.block_size() as u64;
        assert!(cap >= 1 << 50, "at least 1 PiB, got {cap}");
        fs::write(m.join("f"), pattern(1 << 20, 1)).unwrap();
        let after = nix::sys::statfs::statfs(&m).unwrap();
        assert_eq!(after.blocks(), before.blocks());
        assert_eq!(after.blocks_free(), before.blocks_free(), "constant");
    });
}
on_both!(statfs);

fn parallel_dirops(b: Backend) {
    for (args, expect) in [
        (&[][..], "parallel_dirops=false"),
        (
            &["--set", "fuse.parallel_dirops=true"][..],
            "parallel_dirops=true",
        ),
    ] {
        let env = Env::new(b);
        for i in 0..32 {
            env.put(&format!("d/f{i}"), b"x");
        }
        let guard = env.mount(args);
        let mnt = guard.path().to_path_buf();
        timed(LIMIT, move || {
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let d = mnt.join("d");
                    std::thread::spawn(move || {
                        for i in (t..32).step_by(8) {
                            assert_eq!(fs::read(d.join(format!("f{i}"))).unwrap(), b"x");
                            assert_eq!(names(&d).len(), 32);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        });
        assert!(guard.log().contains(expect), "{expect} in log");
    }
}
on_both!(parallel_dirops);

fn write_cache(b: Backend) {
    with_mount(b, &[], |m, env| {
        let mut f = File::create(m.join("c")).unwrap();
        f.write_all(b"durable").unwrap();
        drop(f);
        assert_eq!(
            env.get("c").unwrap(),
            b"durable",
            "off: close returns after the upload"
        );
    });
    let env = Env::new(b);
    let cfg = env.config_file();
    let err = MountGuard::mount(
        &weir(),
        &env.mnt,
        &env.cache,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "write_cache.enabled=true",
        ],
    )
    .expect_err("write cache mode is refused");
    assert!(err.contains("write_cache.enabled"), "{err}");
}
on_both!(write_cache);

/// Opens `path` for reading until an open of it holds the file through
/// passthrough (the check of a wholly cached file runs in the background),
/// as a writer being refused shows; returns that reader.
fn hold_through_passthrough(path: &Path) -> Option<File> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let r = File::open(path).unwrap();
        // An open for writing without O_TRUNC changes nothing by itself.
        match OpenOptions::new().write(true).open(path) {
            Err(e) if errno(&e) == libc::ETXTBSY => return Some(r),
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    None
}

fn passthrough(b: Backend) {
    with_mount(b, &[], |m, env| {
        let data = pattern(2 << 20, 21);
        env.put("p.bin", &data);
        let p = m.join("p.bin");
        assert_eq!(fs::read(&p).unwrap(), data, "read whole once: cached");
        let reader = hold_through_passthrough(&p).expect("a reader held the file");
        let mut buf = vec![0u8; data.len()];
        reader.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, data, "same bytes");
        assert_errno(fs::write(&p, b"x"), libc::ETXTBSY);
        drop(reader);
        fs::write(&p, b"x").unwrap();
        assert_eq!(
            env.get("p.bin").unwrap(),
            b"x",
            "a writer once the readers closed"
        );
    });
    // Without the switch, a writer beside a reader is never refused.
    with_mount(b, &["--set", "fuse.passthrough=false"], |m, env| {
        let data = pattern(1 << 20, 22);
        env.put("p.bin", &data);
        let p = m.join("p.bin");
        assert_eq!(fs::read(&p).unwrap(), data);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _reader = File::open(&p).unwrap();
        fs::write(&p, b"y").unwrap();
        assert_eq!(env.get("p.bin").unwrap(), b"y");
    });
}
on_both!(passthrough);
