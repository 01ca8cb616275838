//! Under-storage (UFS) for weir: one small API over Apache OpenDAL.
//!
//! A [`Ufs`] is one storage root (`file:///srv/data`, `s3://bucket/prefix`, ...).
//! Paths are relative to that root, use `/` separators, and never start with
//! `/`; the empty path is the root itself. Local directories get their own
//! stat and listing code, because only there can a symlink point outside the
//! root, and weir must never follow one out.

mod error;
mod local;
pub mod uri;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use tokio::io::AsyncReadExt;
use weir_metrics::names;

pub use error::{Result, UfsError};

/// Name of the hidden directory, at the root of a `file://` UFS, where
/// uploads are staged before the atomic rename that publishes them.
pub const LOCAL_STAGING_DIR: &str = ".weir.tmp";

/// User-metadata key that marks an object as a symlink on object stores.
pub const SYMLINK_META_KEY: &str = "weir-symlink";

/// What kind of node a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file or object.
    File,
    /// A directory or prefix.
    Dir,
    /// A symbolic link (only surfaced when symlinks are enabled).
    Symlink,
}

/// Attributes of one path in the UFS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// File, directory or symlink.
    pub kind: Kind,
    /// Length in bytes (0 for directories).
    pub size: u64,
    /// Last modification time, when the storage knows it.
    pub mtime: Option<SystemTime>,
    /// The storage's version tag (S3 etag), when it has one.
    pub etag: Option<String>,
}

impl Stat {
    /// A directory with no further attributes.
    pub fn dir() -> Self {
        Stat {
            kind: Kind::Dir,
            size: 0,
            mtime: None,
            etag: None,
        }
    }

    /// A string that changes whenever the object's content changes: the etag,
    /// or else the modification time and size.
    pub fn version(&self) -> String {
        match &self.etag {
            Some(e) => format!("etag:{e}"),
            None => {
                let nanos = self
                    .mtime
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!("mtime:{nanos}:size:{}", self.size)
            }
        }
    }
}

/// One child of a listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The child's name (no slashes).
    pub name: String,
    /// Its attributes, as far as the listing told them.
    pub stat: Stat,
}

/// Tuning for the UFS client.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Per-request timeout (connect and I/O).
    pub timeout: Duration,
    /// Retries of a failed request, with exponential backoff.
    pub retries: usize,
    /// Part size for multipart uploads.
    pub upload_chunk: usize,
    /// Parts uploaded at once.
    pub upload_concurrency: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            timeout: Duration::from_secs(30),
            retries: 3,
            upload_chunk: 8 << 20,
            upload_concurrency: 4,
        }
    }
}

/// One storage root, opened.
#[derive(Debug, Clone)]
pub struct Ufs {
    op: Operator,
    uri: String,
    /// The `scheme` label of this UFS's metrics (`file`, `s3`, `gcs`, ...).
    scheme: &'static str,
    local_root: Option<PathBuf>,
    tuning: Tuning,
}

impl Ufs {
    /// Opens the storage named by `uri` with OpenDAL `options`. This checks the
    /// configuration only; [`Ufs::check`] checks that the storage answers.
    pub fn open(uri: &str, options: &BTreeMap<String, String>, tuning: Tuning) -> Result<Ufs> {
        let target = uri::parse(uri, options)?;
        let mut config = target.config.clone();
        if let Some(root) = &target.local_root {
            let meta = std::fs::metadata(root).map_err(|e| {
                UfsError::Config(format!("{uri}: cannot use {}: {e}", root.display()))
            })?;
            if !meta.is_dir() {
                return Err(UfsError::Config(format!(
                    "{uri}: {} is not a directory",
                    root.display()
                )));
            }
            let staging = root.join(LOCAL_STAGING_DIR);
            std::fs::create_dir_all(&staging).map_err(|e| {
                UfsError::Config(format!("{uri}: cannot create {}: {e}", staging.display()))
            })?;
            config.insert("atomic_write_dir".into(), staging.display().to_string());
        }
        let op = Operator::via_iter(target.scheme, config)
            .map_err(|e| UfsError::Config(format!("{}: {e}", uri::redact(uri))))?
            .layer(
                TimeoutLayer::new()
                    .with_timeout(tuning.timeout)
                    .with_io_timeout(tuning.timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(tuning.retries)
                    .with_jitter(),
            );
        let local_root = match target.local_root {
            Some(r) => Some(
                std::fs::canonicalize(&r).map_err(|e| UfsError::io(r.display().to_string(), e))?,
            ),
            None => None,
        };
        Ok(Ufs {
            op,
            uri: uri::redact(uri),
            scheme: metric_scheme(target.scheme),
            local_root,
            tuning,
        })
    }

    /// Runs one UFS call and records it: a request, its latency, and a
    /// failure unless it is "not found", which is an answer (a negative
    /// lookup), not a fault of the storage.
    async fn observed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let start = Instant::now();
        let result = call.await;
        let labels = [("op", op), ("scheme", self.scheme)];
        metrics::counter!(names::UFS_REQUESTS, &labels).increment(1);
        metrics::histogram!(names::UFS_SECONDS, &labels).record(start.elapsed().as_secs_f64());
        if let Err(e) = &result
            && !e.is_not_found()
        {
            metrics::counter!(names::UFS_ERRORS, &labels).increment(1);
        }
        result
    }

    /// Records `bytes` moved to or from the storage by `op`.
    fn moved(&self, op: &'static str, bytes: u64) {
        metrics::counter!(names::UFS_BYTES, "op" => op, "scheme" => self.scheme).increment(bytes);
    }

    /// The URI, without credentials.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether this UFS is a local directory.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Checks that the storage answers, listing its root.
    pub async fn check(&self) -> Result<()> {
        if self.is_local() {
            return self.list("").await.map(|_| ());
        }
        self.observed("check", async {
            let mut lister = self
                .op
                .lister_with("/")
                .await
                .map_err(|e| UfsError::from_dal(&self.uri, e))?;
            use futures::TryStreamExt;
            lister
                .try_next()
                .await
                .map_err(|e| UfsError::from_dal(&self.uri, e))?;
            Ok(())
        })
        .await
    }

    /// Attributes of `path`; [`UfsError::NotFound`] if nothing is there.
    pub async fn stat(&self, path: &str) -> Result<Stat> {
        if path.is_empty() && !self.is_local() {
            return Ok(Stat::dir());
        }
        self.observed("stat", async {
            match &self.local_root {
                Some(root) => local::stat(root, path).await,
                None => self.object_stat(path).await,
            }
        })
        .await
    }

    /// Object stores have no directories, only keys and prefixes, so a
    /// path is asked for both ways at once: a HEAD of the key and a listing
    /// of `path/`. Children under the prefix make it a directory (as in
    /// Mountpoint for S3, a directory shadows an object of the same name),
    /// and that answer does not wait for the HEAD.
    async fn object_stat(&self, path: &str) -> Result<Stat> {
        let head = self.op.stat(path);
        let dir = format!("{path}/");
        let has_children = async {
            use futures::TryStreamExt;
            let mut lister = self.op.lister_with(&dir).await?;
            lister.try_next().await.map(|e| e.is_some())
        };
        tokio::pin!(head, has_children);
        let mut head_res = None;
        let mut list_res = None;
        while head_res.is_none() || list_res.is_none() {
            tokio::select! {
                r = &mut head, if head_res.is_none() => head_res = Some(r),
                r = &mut has_children, if list_res.is_none() => {
                    if matches!(r, Ok(true)) {
                        return Ok(Stat::dir());
                    }
                    list_res = Some(r);
                }
            }
        }
        match (head_res, list_res) {
            (Some(Ok(m)), _) if m.is_dir() => Ok(Stat::dir()),
            (Some(Ok(m)), _) => Ok(stat_of(&m)),
            (Some(Err(e)), Some(Ok(_))) if e.kind() == opendal::ErrorKind::NotFound => {
                Err(UfsError::NotFound(path.to_string()))
            }
            (Some(Err(e)), _) => Err(UfsError::from_dal(path, e)),
            (_, Some(Err(e))) => Err(UfsError::from_dal(path, e)),
            _ => Err(UfsError::NotFound(path.to_string())),
        }
    }

    /// Whether `path` is a symlink stored as an object, and its target.
    pub async fn object_symlink_target(&self, path: &str) -> Result<Option<String>> {
        self.observed("readlink", self.object_symlink_target_unobserved(path))
            .await
    }

    async fn object_symlink_target_unobserved(&self, path: &str) -> Result<Option<String>> {
        let m = self
            .op
            .stat(path)
            .await
            .map_err(|e| UfsError::from_dal(path, e))?;
        let marked = m
            .user_metadata()
            .and_then(|u| u.get(SYMLINK_META_KEY).map(|v| v == "1"))
            .unwrap_or(false);
        if !marked {
            return Ok(None);
        }
        let data = self
            .op
            .read(path)
            .await
            .map_err(|e| UfsError::from_dal(path, e))?;
        Ok(Some(String::from_utf8_lossy(&data.to_bytes()).into_owned()))
    }

    /// The children of directory `dir`.
    pub async fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        self.observed("list", self.list_unobserved(dir)).await
    }

    async fn list_unobserved(&self, dir: &str) -> Result<Vec<Entry>> {
        if let Some(root) = &self.local_root {
            return local::list(root, dir).await;
        }
        let prefix = if dir.is_empty() {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let entries = self
            .op
            .list(&prefix)
            .await
            .map_err(|e| UfsError::from_dal(dir, e))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let rel = e.path().trim_start_matches('/');
            let name = rel
                .strip_prefix(prefix.trim_start_matches('/'))
                .unwrap_or(rel)
                .trim_end_matches('/');
            if name.is_empty() || name.contains('/') {
                continue; // the directory's own marker
            }
            let stat = if e.metadata().is_dir() {
                Stat::dir()
            } else {
                stat_of(e.metadata())
            };
            out.push(Entry {
                name: name.to_string(),
                stat,
            });
        }
        Ok(out)
    }

    /// Reads `len` bytes at `offset`. With `if_match`, fails with
    /// [`UfsError::Changed`] if the object's etag is no longer that value.
    pub async fn read(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let data = self
            .observed("read", async {
                if let Some(root) = &self.local_root {
                    local::confine(root, path).await?;
                }
                let mut req = self.op.read_with(path).range(offset..offset + len);
                if let Some(tag) =
                    if_match.filter(|_| self.op.info().capability().read_with_if_match)
                {
                    req = req.if_match(tag);
                }
                let buf = req.await.map_err(|e| UfsError::from_dal(path, e))?;
                Ok(buf.to_bytes())
            })
            .await?;
        self.moved("read", data.len() as u64);
        Ok(data)
    }

    /// Uploads the local file `src` to `path`, replacing what was there.
    /// Readers see the old object or the whole new one, never a part: S3 uses
    /// a multipart upload that only completes at the end, local directories
    /// use a rename.
    pub async fn upload(&self, path: &str, src: &Path) -> Result<Stat> {
        self.observed("upload", self.send_file(path, src)).await?;
        let stat = self.stat(path).await?;
        self.moved("upload", stat.size);
        Ok(stat)
    }

    /// The upload itself, without the stat that reports the new version.
    async fn send_file(&self, path: &str, src: &Path) -> Result<()> {
        if let Some(root) = &self.local_root {
            return local::write_atomic(root, path, local::Content::File(src.to_path_buf())).await;
        }
        let mut file = tokio::fs::File::open(src)
            .await
            .map_err(|e| UfsError::io(src.display().to_string(), e))?;
        let mut writer = self
            .op
            .writer_with(path)
            .chunk(self.tuning.upload_chunk)
            .concurrent(self.tuning.upload_concurrency)
            .await
            .map_err(|e| UfsError::from_dal(path, e))?;
        let mut buf = vec![0u8; self.tuning.upload_chunk];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(UfsError::io(src.display().to_string(), e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.write(Bytes::copy_from_slice(&buf[..n])).await {
                let _ = writer.abort().await;
                return Err(UfsError::from_dal(path, e));
            }
        }
        writer
            .close()
            .await
            .map_err(|e| UfsError::from_dal(path, e))?;
        Ok(())
    }

    /// Writes a small object in one request.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.observed("put", async {
            if let Some(root) = &self.local_root {
                return local::write_atomic(root, path, local::Content::Bytes(data)).await;
            }
            self.op
                .write(path, data)
                .await
                .map_err(|e| UfsError::from_dal(path, e))?;
            Ok(())
        })
        .await?;
        self.moved("put", len);
        Ok(())
    }

    /// Deletes the file at `path`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.observed("delete", async {
            if let Some(root) = &self.local_root {
                return local::remove_file(root, path).await;
            }
            self.op
                .delete(path)
                .await
                .map_err(|e| UfsError::from_dal(path, e))
        })
        .await
    }

    /// Creates directory `path` (a marker object on object stores).
    pub async fn create_dir(&self, path: &str) -> Result<()> {
        self.observed("create_dir", async {
            if let Some(root) = &self.local_root {
                return local::create_dir(root, path).await;
            }
            self.op
                .create_dir(&format!("{path}/"))
                .await
                .map_err(|e| UfsError::from_dal(path, e))
        })
        .await
    }

    /// Removes the empty directory `path`.
    pub async fn remove_dir(&self, path: &str) -> Result<()> {
        self.observed("remove_dir", async {
            if let Some(root) = &self.local_root {
                return local::remove_dir(root, path).await;
            }
            if !self.list(path).await?.is_empty() {
                return Err(UfsError::NotEmpty(path.to_string()));
            }
            self.op
                .delete(&format!("{path}/"))
                .await
                .map_err(|e| UfsError::from_dal(path, e))
        })
        .await
    }

    /// Renames a file or a directory. On a local directory this is one
    /// atomic `rename(2)`. On object stores a file is copied then deleted,
    /// and a directory is moved object by object, so a crash in the middle can
    /// leave objects under both names (never a lost one).
    pub async fn rename(&self, from: &str, to: &str, kind: Kind) -> Result<()> {
        self.observed("rename", async {
            if let Some(root) = &self.local_root {
                return local::rename(root, from, to).await;
            }
            match kind {
                Kind::Dir => self.rename_prefix(from, to).await,
                _ => self.copy_then_delete(from, to).await,
            }
        })
        .await
    }

    async fn copy_then_delete(&self, from: &str, to: &str) -> Result<()> {
        self.op
            .copy(from, to)
            .await
            .map_err(|e| UfsError::from_dal(from, e))?;
        self.op
            .delete(from)
            .await
            .map_err(|e| UfsError::from_dal(from, e))
    }

    async fn rename_prefix(&self, from: &str, to: &str) -> Result<()> {
        let src = format!("{from}/");
        let entries = self
            .op
            .list_with(&src)
            .recursive(true)
            .await
            .map_err(|e| UfsError::from_dal(from, e))?;
        for e in &entries {
            let rel = e.path().strip_prefix(&src).unwrap_or(e.path());
            if rel.is_empty() {
                continue;
            }
            let dst = format!("{to}/{rel}");
            if e.metadata().is_dir() {
                self.op
                    .create_dir(&dst)
                    .await
                    .map_err(|err| UfsError::from_dal(&dst, err))?;
            } else {
                self.op
                    .copy(e.path(), &dst)
                    .await
                    .map_err(|err| UfsError::from_dal(&dst, err))?;
            }
        }
        // Keep the directory alive under its new name even if it was implicit.
        self.op
            .create_dir(&format!("{to}/"))
            .await
            .map_err(|e| UfsError::from_dal(to, e))?;
        for e in entries.iter().rev() {
            if e.path() == src {
                continue;
            }
            self.op
                .delete(e.path())
                .await
                .map_err(|err| UfsError::from_dal(e.path(), err))?;
        }
        // Drop the old marker even when the listing did not show one: some
        // servers keep markers out of listings, and deleting a missing key is
        // not an error in S3.
        self.op
            .delete(&src)
            .await
            .map_err(|e| UfsError::from_dal(from, e))?;
        Ok(())
    }

    /// Creates a symlink at `path` pointing at `target`.
    pub async fn symlink(&self, path: &str, target: &str) -> Result<()> {
        self.observed("symlink", async {
            if let Some(root) = &self.local_root {
                return local::symlink(root, path, target).await;
            }
            let meta = [(SYMLINK_META_KEY.to_string(), "1".to_string())];
            self.op
                .write_with(path, Bytes::copy_from_slice(target.as_bytes()))
                .user_metadata(meta)
                .await
                .map_err(|e| UfsError::from_dal(path, e))?;
            Ok(())
        })
        .await
    }

    /// The target of the symlink at `path`.
    pub async fn readlink(&self, path: &str) -> Result<String> {
        self.observed("readlink", async {
            if let Some(root) = &self.local_root {
                return local::readlink(root, path).await;
            }
            self.object_symlink_target_unobserved(path)
                .await?
                .ok_or_else(|| UfsError::Unsupported(format!("{path} is not a symlink")))
        })
        .await
    }
}

/// The `scheme` label for an OpenDAL scheme: what users write in the URI
/// (`file`, not OpenDAL's `fs`).
fn metric_scheme(dal_scheme: &'static str) -> &'static str {
    match dal_scheme {
        "fs" => "file",
        other => other,
    }
}

fn stat_of(m: &opendal::Metadata) -> Stat {
    Stat {
        kind: Kind::File,
        size: m.content_length(),
        mtime: m.last_modified().map(SystemTime::from),
        etag: m.etag().map(|s| s.trim_matches('"').to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &Path) -> Ufs {
        let uri = format!("file://{}", dir.display());
        Ufs::open(&uri, &BTreeMap::new(), Tuning::default()).unwrap()
    }

    #[tokio::test]
    async fn local_roundtrip_list_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let ufs = local(dir.path());
        ufs.create_dir("d").await.unwrap();
        ufs.put("d/a", Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(ufs.stat("d/a").await.unwrap().size, 5);
        assert_eq!(
            ufs.read("d/a", 1, 3, None).await.unwrap(),
            Bytes::from_static(b"ell")
        );
        let names: Vec<_> = ufs
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["d".to_string()], "the staging dir stays hidden");
        ufs.rename("d", "e", Kind::Dir).await.unwrap();
        assert!(ufs.stat("d").await.unwrap_err().is_not_found());
        assert_eq!(ufs.stat("e").await.unwrap().kind, Kind::Dir);
        assert!(matches!(
            ufs.remove_dir("e").await,
            Err(UfsError::NotEmpty(_))
        ));
        ufs.delete("e/a").await.unwrap();
        ufs.remove_dir("e").await.unwrap();
        assert!(ufs.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn local_upload_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let ufs = local(dir.path());
        let src = dir.path().join("src.bin");
        std::fs::write(&src, vec![7u8; 3 << 20]).unwrap();
        let st = ufs.upload("out.bin", &src).await.unwrap();
        assert_eq!(st.size, 3 << 20);
        assert_eq!(
            std::fs::read(dir.path().join("out.bin")).unwrap(),
            vec![7u8; 3 << 20]
        );
        assert!(
            std::fs::read_dir(dir.path().join(LOCAL_STAGING_DIR))
                .unwrap()
                .next()
                .is_none(),
            "no staging leftovers"
        );
    }

    #[tokio::test]
    async fn symlink_out_of_root_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("evil")).unwrap();
        let ufs = local(dir.path());
        assert_eq!(ufs.stat("evil").await.unwrap().kind, Kind::Symlink);
        assert!(matches!(
            ufs.stat("evil/secret").await,
            Err(UfsError::Escape(_))
        ));
        assert!(matches!(
            ufs.read("evil/secret", 0, 1, None).await,
            Err(UfsError::Escape(_))
        ));
        assert!(matches!(ufs.list("evil").await, Err(UfsError::Escape(_))));
    }

    /// Runs `f` on a current-thread runtime under a capturing recorder, so
    /// every metric the UFS records lands in the result.
    fn recorded<F: std::future::Future<Output = ()>>(
        f: impl FnOnce() -> F,
    ) -> weir_metrics::testing::Recorded {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        weir_metrics::testing::capture(|| rt.block_on(f())).1
    }

    #[test]
    fn calls_are_counted_timed_and_sized_per_op_and_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("evil")).unwrap();
        let ufs = local(dir.path());
        let rec = recorded(|| async {
            ufs.put("a", Bytes::from_static(b"hello")).await.unwrap();
            assert_eq!(ufs.read("a", 1, 3, None).await.unwrap().len(), 3);
            assert!(ufs.stat("missing").await.unwrap_err().is_not_found());
            assert!(ufs.stat("evil/x").await.is_err());
            ufs.list("").await.unwrap();
            ufs.rename("a", "b", Kind::File).await.unwrap();
            ufs.delete("b").await.unwrap();
        });
        let file = |op| [("op", op), ("scheme", "file")];
        for op in ["put", "read", "list", "rename", "delete"] {
            assert_eq!(rec.counter(names::UFS_REQUESTS, &file(op)), 1, "{op}");
            assert_eq!(
                rec.histogram(names::UFS_SECONDS, &file(op)).len(),
                1,
                "{op}"
            );
        }
        assert_eq!(rec.counter(names::UFS_REQUESTS, &file("stat")), 2);
        assert_eq!(
            rec.counter(names::UFS_ERRORS, &file("stat")),
            1,
            "the escape is an error, the missing file an answer"
        );
        assert_eq!(rec.counter(names::UFS_ERRORS, &[]), 1);
        assert_eq!(rec.counter(names::UFS_BYTES, &file("put")), 5);
        assert_eq!(rec.counter(names::UFS_BYTES, &file("read")), 3);
    }

    #[test]
    fn uploads_count_their_bytes_and_the_stat_that_follows() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        std::fs::write(&src, vec![1u8; 1000]).unwrap();
        let ufs = local(dir.path());
        let rec = recorded(|| async {
            ufs.upload("up.bin", &src).await.unwrap();
        });
        let file = |op| [("op", op), ("scheme", "file")];
        assert_eq!(rec.counter(names::UFS_REQUESTS, &file("upload")), 1);
        assert_eq!(rec.counter(names::UFS_REQUESTS, &file("stat")), 1);
        assert_eq!(rec.counter(names::UFS_BYTES, &file("upload")), 1000);
    }

    #[test]
    fn object_stores_are_labelled_by_their_scheme() {
        assert_eq!(metric_scheme("fs"), "file");
        assert_eq!(metric_scheme("s3"), "s3");
        let ufs = Ufs::open(
            "s3://bucket/p",
            &BTreeMap::from([
                ("endpoint".to_string(), "http://127.0.0.1:1".to_string()),
                ("region".to_string(), "us-east-1".to_string()),
            ]),
            Tuning::default(),
        )
        .unwrap();
        assert_eq!(ufs.scheme, "s3");
    }

    #[test]
    fn version_changes_with_etag_or_mtime() {
        let a = Stat {
            kind: Kind::File,
            size: 1,
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(5)),
            etag: None,
        };
        let mut b = a.clone();
        b.size = 2;
        assert_ne!(a.version(), b.version());
        let mut c = a.clone();
        c.etag = Some("x".into());
        assert_eq!(c.version(), "etag:x");
    }
}
