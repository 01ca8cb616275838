//! Tests of the filesystem core through its public API, without FUSE.
//!
//! - `semantics`: one test per row of the semantics table in DESIGN.md
//!   ("POSIX semantics"), checking both what [`Fs`] answers and what lands in
//!   the UFS (a local directory).
//! - `read_path`: paged reads, the page cache, and metadata TTL semantics.
//! - `model`: a proptest that runs random operation sequences against both
//!   [`Fs`] and an in-memory reference model and compares them after every
//!   step.
//! - `takeover`: a journaled filesystem "crashes" (it is leaked, so nothing
//!   of it runs again) and a successor restores node ids and handles.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use weir_cache::{PageCache, PageCacheConfig};
use weir_namespace::{MountSpec, MountTable};
use weir_ufs::Tuning;

use crate::{Attr, Fs, FsConfig, FsError, Kind, OpenFlags, ROOT_INO, RenameFlags, Result, SetAttr};

/// Page size of every test cache: small, so that small files span pages.
const PAGE: u64 = 4096;

const RO: OpenFlags = OpenFlags {
    write: false,
    truncate: false,
    append: false,
    exclusive: false,
};
const W: OpenFlags = OpenFlags { write: true, ..RO };
const W_TRUNC: OpenFlags = OpenFlags {
    write: true,
    truncate: true,
    ..RO
};
const W_APPEND: OpenFlags = OpenFlags {
    write: true,
    append: true,
    ..RO
};

/// A filesystem over local UFS roots in temporary directories.
struct Env {
    fs: Fs,
    /// One UFS root per mount, in the order the mounts were given.
    roots: Vec<TempDir>,
    /// Page cache, staging directory and journal.
    state: TempDir,
    specs: Vec<MountSpec>,
    cfg: FsConfig,
}

impl Env {
    /// The UFS root of the first mount.
    fn root(&self) -> &Path {
        self.roots[0].path()
    }
}

/// A filesystem with one mount per path in `mounts`, each over a fresh
/// temporary directory, with settings adjusted by `tweak`.
fn env_with(mounts: &[&str], tweak: impl FnOnce(&mut FsConfig)) -> Env {
    let roots: Vec<TempDir> = mounts
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let specs: Vec<MountSpec> = mounts
        .iter()
        .zip(&roots)
        .map(|(path, dir)| MountSpec {
            path: path.to_string(),
            ufs: format!("file://{}", dir.path().display()),
            options: BTreeMap::new(),
        })
        .collect();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = FsConfig::new(state.path().join("staging"));
    tweak(&mut cfg);
    let table = MountTable::open(&specs, &Tuning::default()).unwrap();
    let fs = Fs::new(table, Arc::new(open_pages(state.path())), cfg.clone()).unwrap();
    Env {
        fs,
        roots,
        state,
        specs,
        cfg,
    }
}

fn open_pages(state: &Path) -> PageCache {
    PageCache::open(PageCacheConfig {
        dir: state.join("pages"),
        capacity: 64 << 20,
        page_size: PAGE,
        memory: 0,
    })
    .unwrap()
}

impl Env {
    /// A journaled filesystem over the same storage, as a daemon on a new
    /// FUSE connection (`Start::Fresh`) or one taking over (`Start::Takeover`).
    fn journaled(&self, start: crate::Start) -> Result<Fs> {
        let table = MountTable::open(&self.specs, &Tuning::default()).unwrap();
        Fs::journaled(
            table,
            Arc::new(open_pages(self.state.path())),
            self.cfg.clone(),
            &self.state.path().join("session"),
            start,
        )
    }

    /// Kills the current filesystem as a crash would (none of its code runs
    /// again: no release, no drop) and starts a successor from its journal.
    fn crash_and_take_over(&mut self) {
        let successor = self.journaled(crate::Start::Takeover).unwrap();
        let dead = std::mem::replace(&mut self.fs, successor);
        std::mem::forget(dead);
    }
}

/// A filesystem with one mount at `/` and default settings.
fn env() -> Env {
    env_with(&["/"], |_| {})
}

/// Runs `f`, failing the test instead of hanging if it takes over 30 s.
async fn timed<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the test hung for 30 s")
}

/// The errno of a call that must fail.
#[track_caller]
fn errno<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

/// Test data that differs from byte to byte and from page to page.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) as u8).wrapping_add(seed) ^ (i / 4096) as u8)
        .collect()
}

/// Writes `data` sequentially through `fh`, in chunks of odd sizes.
async fn write_seq(fs: &Fs, fh: u64, data: &[u8]) -> Result<()> {
    let mut off = 0u64;
    for chunk in data.chunks(1500) {
        let n = fs.write(fh, off, chunk).await?;
        assert_eq!(n as usize, chunk.len());
        off += u64::from(n);
    }
    Ok(())
}

/// Creates `name` in `parent` with content `data`: create, write, flush,
/// release, as `cp` would.
async fn put(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> Attr {
    let (attr, opened) = fs.create(parent, name, W_TRUNC).await.unwrap();
    write_seq(fs, opened.fh, data).await.unwrap();
    fs.flush(opened.fh).await.unwrap();
    fs.release(opened.fh).await.unwrap();
    attr
}

/// Everything readable through `fh`, read in chunks of 3000 bytes.
async fn read_fh(fs: &Fs, fh: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let data = fs.read(fh, out.len() as u64, 3000).await?;
        if data.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&data);
    }
}

/// The whole content of file `ino`, through a fresh read-only handle.
async fn read_all(fs: &Fs, ino: u64) -> Result<Vec<u8>> {
    let opened = fs.open(ino, RO).await?;
    let data = read_fh(fs, opened.fh).await;
    fs.release(opened.fh).await?;
    data
}

/// The entries of directory `ino` (including `.` and `..`), as (name, kind).
async fn ls(fs: &Fs, ino: u64) -> Result<Vec<(String, Kind)>> {
    let fh = fs.opendir(ino).await?;
    let entries = fs.readdir(fh, 0).await;
    fs.releasedir(fh);
    Ok(entries?.into_iter().map(|e| (e.name, e.kind)).collect())
}

/// The names in directory `ino`, without `.` and `..`.
async fn names(fs: &Fs, ino: u64) -> Vec<String> {
    ls(fs, ino)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// Names in a UFS directory on disk, sorted, without weir's staging dir.
fn disk_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != weir_ufs::LOCAL_STAGING_DIR)
        .collect();
    v.sort();
    v
}

fn set_size(size: u64) -> SetAttr {
    SetAttr {
        size: Some(size),
        ..SetAttr::default()
    }
}

mod live;
mod model;
mod passthrough;
mod read_path;
mod semantics;
mod takeover;
