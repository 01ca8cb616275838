//! Shared set-up of the integration tests: temp dirs, a weir mount over a
//! local directory or over a real S3 server on loopback.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use weir_testkit::process::{alive, signal, stop};
pub use weir_testkit::{MountGuard, S3Server, is_mounted, run_with_timeout, timed, wait_or_kill};

/// Default time limit of one test body.
pub const LIMIT: Duration = Duration::from_secs(120);

/// The weir binary under test.
pub fn weir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weir"))
}

/// Which storage a test mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A local directory (`file://`).
    File,
    /// A real S3 server on loopback (`s3://`).
    S3,
}

/// A test's directories, its S3 server if any, and its mount.
#[derive(Debug)]
pub struct Env {
    /// Keeps the directories alive.
    pub tmp: tempfile::TempDir,
    /// Directory where the UFS objects live (the file:// root, or the bucket directory).
    pub data: PathBuf,
    /// The cache directory.
    pub cache: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    /// The S3 server, for `Backend::S3`.
    pub s3: Option<S3Server>,
    /// Extra lines of YAML config.
    pub extra_config: String,
}

pub const BUCKET: &str = "weir-test";

impl Env {
    pub fn new(backend: Backend) -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("cache");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).expect("mnt");
        let (data, s3) = match backend {
            Backend::File => {
                let d = tmp.path().join("data");
                std::fs::create_dir_all(&d).expect("data");
                (d, None)
            }
            Backend::S3 => {
                let root = tmp.path().join("s3");
                std::fs::create_dir_all(&root).expect("s3 root");
                let server = S3Server::start(&root, BUCKET).expect("start S3 server");
                (server.root().join(BUCKET), Some(server))
            }
        };
        Env {
            tmp,
            data,
            cache,
            mnt,
            s3,
            extra_config: String::new(),
        }
    }

    /// Writes the config file for this env and returns its path.
    pub fn config_file(&self) -> PathBuf {
        let mount = match &self.s3 {
            None => format!("  - path: /\n    ufs: \"file://{}\"\n", self.data.display()),
            Some(s3) => {
                let opts: Vec<String> = s3
                    .options()
                    .iter()
                    .map(|(k, v)| format!("{k}: \"{v}\""))
                    .collect();
                format!(
                    "  - path: /\n    ufs: \"s3://{BUCKET}/\"\n    options: {{{}}}\n",
                    opts.join(", ")
                )
            }
        };
        let text = format!("mounts:\n{mount}{}", self.extra_config);
        let path = self.tmp.path().join("weir.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Mounts with `args` added after `--config`.
    pub fn mount(&self, args: &[&str]) -> MountGuard {
        let cfg = self.config_file();
        let cfg = cfg.to_str().expect("utf-8 path");
        let mut all = vec!["--config", cfg];
        all.extend_from_slice(args);
        MountGuard::mount(&weir(), &self.mnt, &self.cache, &all)
            .unwrap_or_else(|e| panic!("mount failed: {e}"))
    }

    /// Writes an object straight into the UFS, behind weir's back.
    pub fn put(&self, rel: &str, data: &[u8]) {
        let p = self.data.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, data).expect("put");
    }

    /// Reads an object straight from the UFS.
    pub fn get(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.data.join(rel)).ok()
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The errno of an io::Error.
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Asserts that `r` failed with `expected`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: std::io::Result<T>, expected: i32) {
    match r {
        Ok(v) => panic!("expected errno {expected}, got success {v:?}"),
        Err(e) => assert_eq!(errno(&e), expected, "got {e}"),
    }
}

/// Runs `weir umount ARGS MOUNTPOINT` with a time limit.
pub fn weir_umount(args: &[&str], mnt: &Path) -> std::process::Output {
    run_with_timeout(
        std::process::Command::new(weir())
            .arg("umount")
            .args(args)
            .arg(mnt),
        LIMIT,
    )
    .expect("weir umount ran")
}

/// A libc call's return value as a Result: -1 becomes the errno it set.
pub fn libc_result(rc: i64) -> std::io::Result<i64> {
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Sorted names in a directory.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
pub mod csi;

/// What `weir fs` printed and how it exited.
#[derive(Debug)]
pub struct FsOut {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `weir fs --cache-dir CACHE ARGS...` with a time limit.
pub fn weir_fs(cache: &Path, args: &[&str]) -> FsOut {
    let mut cmd = std::process::Command::new(weir());
    cmd.arg("fs").arg("--cache-dir").arg(cache).args(args);
    fs_output(&mut cmd)
}

/// Runs a prepared `weir fs` command with a time limit.
pub fn fs_output(cmd: &mut std::process::Command) -> FsOut {
    let out = run_with_timeout(cmd, Duration::from_secs(60)).expect("weir fs ran");
    FsOut {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`weir_fs`], and it must succeed; returns stdout.
#[track_caller]
pub fn weir_fs_ok(cache: &Path, args: &[&str]) -> String {
    let out = weir_fs(cache, args);
    assert!(out.ok, "weir fs {args:?} failed: {out:?}");
    out.stdout
}

/// Polls `f` every 50 ms until it holds or `limit` passes; returns how long it took.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
