//! The admin protocol: one JSON object per line. A client connects to the
//! daemon's socket, writes one [`Request`] line, reads one [`Response`]
//! line, and the daemon closes the connection. Long work (a preload) is a
//! job: one request starts it, later ones ask how far it got or cancel it,
//! so no connection outlives a request and a replaced daemon is simply
//! asked again.
//!
//! ```text
//! -> {"op":"check_cached","path":"/data"}
//! <- {"result":"cached","files":[{"path":"/data/a","size":10,"cached":10}],"total_size":10,"total_cached":10,"errors":[]}
//! -> {"op":"load_start","path":"/nope"}
//! <- {"result":"error","kind":"not_found","message":"/nope: not found"}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_namespace::MountSpec;

/// The version of this protocol; [`Response::Stats`] reports it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request or response line accepted, in bytes.
pub const MAX_LINE: usize = 64 << 20;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's numbers: cache, FUSE, UFS, CPU, cluster.
    Stats,
    /// The daemon's metrics in Prometheus text format.
    Metrics,
    /// One namespace path's attributes.
    Stat {
        /// The namespace path.
        path: String,
    },
    /// A directory's entries, or a whole tree's.
    List {
        /// The namespace path of a directory.
        path: String,
        /// Everything below, not only the directory's own entries.
        #[serde(default)]
        recursive: bool,
    },
    /// How much of each file at or below `path` is cached.
    CheckCached {
        /// A file or directory.
        path: String,
    },
    /// Drops the cached pages of every file at or below `path`.
    DropCache {
        /// A file or directory.
        path: String,
    },
    /// Starts preloading every file at or below `path` into the cache.
    LoadStart {
        /// A file or directory.
        path: String,
        /// Files loaded at once (default 4).
        #[serde(default)]
        parallel: Option<usize>,
    },
    /// How far a load job got.
    LoadProgress {
        /// The job id from [`Response::Job`].
        job: u64,
    },
    /// Stops a load job; what it fetched stays cached.
    LoadCancel {
        /// The job id.
        job: u64,
    },
    /// The mount table served, and in cluster mode the link and members.
    Mounts,
    /// Adds a mount (cluster mode: to etcd; standalone: to this daemon).
    Mount {
        /// What to mount where.
        spec: MountSpec,
    },
    /// Removes the mount at `path`.
    Umount {
        /// The mount path.
        path: String,
    },
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// For [`Request::Stats`].
    Stats(Box<Stats>),
    /// For [`Request::Metrics`].
    Metrics {
        /// Prometheus text.
        text: String,
    },
    /// For [`Request::Stat`].
    Stat(EntryInfo),
    /// For [`Request::List`].
    List {
        /// Entries sorted by path.
        entries: Vec<EntryInfo>,
    },
    /// For [`Request::CheckCached`].
    Cached(CachedReport),
    /// For [`Request::DropCache`].
    Dropped(DropReport),
    /// For the load requests.
    Job(JobProgress),
    /// For [`Request::Mounts`].
    Mounts(MountsReport),
    /// A mount table change was made.
    TableChanged {
        /// What it did, in one line.
        message: String,
    },
    /// The request failed.
    Error(ErrorReply),
}

/// A failed request: what kind of failure, and one line saying what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The kind, for scripts.
    pub kind: ErrorKind,
    /// The cause, for people.
    pub message: String,
}

/// Kinds of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such path in the namespace.
    NotFound,
    /// A directory was needed.
    NotADirectory,
    /// A file was needed.
    IsADirectory,
    /// The request is malformed or names an invalid path or URI.
    Invalid,
    /// In use now.
    Busy,
    /// etcd (or the storage) did not answer.
    Unavailable,
    /// The mount path is taken.
    AlreadyMounted,
    /// Nothing is mounted there.
    NotMounted,
    /// No such load job (it ended long ago, or another daemon started it).
    NoSuchJob,
    /// Anything else.
    Failed,
}

/// Kinds of namespace entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// One namespace entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// Its namespace path.
    pub path: String,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, Unix seconds, when the storage gives one.
    pub mtime: Option<i64>,
    /// Which storage holds it (credentials removed), if any.
    pub ufs: Option<String>,
}

/// How much of a file is cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFile {
    /// Namespace path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Bytes of its current version in the page cache.
    pub cached: u64,
}

/// The answer to [`Request::CheckCached`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedReport {
    /// Every file, sorted by path.
    pub files: Vec<CachedFile>,
    /// Sum of the sizes.
    pub total_size: u64,
    /// Sum of the cached bytes.
    pub total_cached: u64,
    /// Paths that could not be checked, with why.
    pub errors: Vec<String>,
}

/// The answer to [`Request::DropCache`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropReport {
    /// Files whose pages were dropped.
    pub files: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Files kept because the kernel reads them from the cache right now.
    pub busy: Vec<String>,
    /// Paths that could not be dropped, with why.
    pub errors: Vec<String>,
}

/// Where a load job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Walking the tree to count files and bytes.
    Scanning,
    /// Fetching.
    Running,
    /// Every file was loaded (some may have failed; see `errors`).
    Done,
    /// Stopped by a cancel request.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Cancelled)
    }
}

/// A load job's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// The job id.
    pub job: u64,
    /// What it loads.
    pub path: String,
    /// Where it is.
    pub state: JobState,
    /// Files found (final once scanning ended).
    pub files_total: u64,
    /// Files finished, loaded or failed.
    pub files_done: u64,
    /// Of those, files that were wholly cached already.
    pub files_skipped: u64,
    /// Files that failed.
    pub files_failed: u64,
    /// Bytes of all files found.
    pub bytes_total: u64,
    /// Bytes cached already when the job reached them.
    pub bytes_already: u64,
    /// Bytes fetched from storage by this job.
    pub bytes_fetched: u64,
    /// Seconds since the job started.
    pub elapsed: f64,
    /// The first failures, with their paths.
    pub errors: Vec<String>,
}

/// Whether the daemon follows a cluster or serves its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The YAML file's table (and `weir fs mount` changes to it).
    Standalone,
    /// The table in etcd.
    Cluster,
}

/// A mount as shown to users: credentials in options masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountView {
    /// Namespace path.
    pub path: String,
    /// Storage URI, credentials removed.
    pub ufs: String,
    /// Options, secret values masked.
    pub options: BTreeMap<String, String>,
}

impl MountView {
    /// The view of `spec`.
    pub fn of(spec: &MountSpec) -> MountView {
        MountView {
            path: spec.path.clone(),
            ufs: weir_ufs::uri::redact(&spec.ufs),
            options: spec
                .options
                .iter()
                .map(|(k, v)| {
                    let secret = ["secret", "key", "token", "password", "credential"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s));
                    (k.clone(), if secret { "***".into() } else { v.clone() })
                })
                .collect(),
        }
    }
}

/// The link to the cluster, as this daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// The cluster name.
    pub cluster: String,
    /// This node's id.
    pub node_id: String,
    /// `connecting`, `connected` or `disconnected`.
    pub state: String,
    /// One line for people, as in the logs.
    pub status: String,
    /// The etcd revision the table is current to.
    pub revision: i64,
    /// Where the table now served came from: `etcd` or `cache_file`.
    pub table_source: Option<String>,
}

/// The answer to [`Request::Mounts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountsReport {
    /// Standalone or cluster.
    pub mode: Mode,
    /// The mounts this daemon serves now, by path.
    pub mounts: Vec<MountView>,
    /// Entries of the table that cannot be served, with why.
    pub errors: Vec<String>,
    /// The cluster link, in cluster mode.
    pub cluster: Option<ClusterReport>,
    /// Registered nodes, in cluster mode when etcd answers.
    pub members: Option<Vec<String>>,
}

/// The daemon's numbers since it started (a takeover starts them over).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The process.
    pub daemon: DaemonInfo,
    /// The page cache.
    pub cache: CacheStats,
    /// FUSE requests.
    pub fuse: FuseStats,
    /// Under-storage calls, by scheme and op.
    pub ufs: Vec<UfsStats>,
    /// CPU time of the process and of its FUSE workers.
    pub cpu: CpuStats,
    /// The cluster link, in cluster mode.
    pub cluster: Option<ClusterReport>,
    /// Mounts served.
    pub mounts: usize,
}

/// Who answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Its PID.
    pub pid: u32,
    /// weir's version.
    pub version: String,
    /// Standalone or cluster.
    pub mode: Mode,
    /// Where it is mounted.
    pub mountpoint: String,
    /// Its cache directory.
    pub cache_dir: String,
    /// When it started, Unix seconds.
    pub started_at: u64,
    /// FUSE worker threads (`fuse.threads`).
    pub fuse_threads: usize,
    /// Most UFS reads in flight at once.
    pub ufs_concurrency: usize,
    /// Read-ahead of a sequential reader, bytes (`cache.readahead`).
    pub readahead: u64,
    /// Metadata TTL, seconds (`metadata.ttl`).
    pub metadata_ttl: f64,
    /// Whether FUSE passthrough is on (the kernel agreed to it).
    pub passthrough: bool,
    /// CPU cores available.
    pub cores: usize,
}

/// Page cache numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Bytes of pages on disk.
    pub used: u64,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Page size in bytes.
    pub page_size: u64,
    /// Pages served from the cache.
    pub hits: u64,
    /// Pages not found there.
    pub misses: u64,
    /// Pages evicted.
    pub evictions: u64,
    /// Pages that failed their checksum.
    pub corruptions: u64,
}

/// FUSE numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuseStats {
    /// Requests being answered now.
    pub in_flight: f64,
    /// Per operation, sorted by op.
    pub ops: Vec<OpStats>,
}

/// One FUSE operation's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    /// `lookup`, `read`, ...
    pub op: String,
    /// Requests answered.
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Seconds spent answering them, summed.
    pub seconds: f64,
}

/// One kind of UFS call's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UfsStats {
    /// `s3`, `file`, ...
    pub scheme: String,
    /// `read`, `stat`, ...
    pub op: String,
    /// Calls.
    pub requests: u64,
    /// Failed calls.
    pub errors: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds spent, summed.
    pub seconds: f64,
}

/// CPU time, in seconds since the daemon started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    /// All threads.
    pub process: f64,
    /// The FUSE worker threads only.
    pub fuse_workers: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: Request =
            serde_json::from_str(r#"{"op":"list","path":"/a","recursive":true}"#).unwrap();
        assert_eq!(
            r,
            Request::List {
                path: "/a".into(),
                recursive: true
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"load_start","path":"/a"}"#).unwrap();
        assert_eq!(
            r,
            Request::LoadStart {
                path: "/a".into(),
                parallel: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"stat"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"nope"}"#).is_err());
    }

    #[test]
    fn errors_and_payloads_round_trip() {
        let e = Response::Error(ErrorReply {
            kind: ErrorKind::NotFound,
            message: "/x: not found".into(),
        });
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"result":"error","kind":"not_found","message":"/x: not found"}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), e);
        let m = Response::Metrics {
            text: "a 1\n".into(),
        };
        let back: Response = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn secrets_are_masked_in_views() {
        let mut options = BTreeMap::new();
        options.insert("secret_access_key".to_string(), "s3cr3t".to_string());
        options.insert("region".to_string(), "us-east-1".to_string());
        let v = MountView::of(&MountSpec {
            path: "/s3".into(),
            ufs: "s3://b/p".into(),
            options,
        });
        assert_eq!(v.options["secret_access_key"], "***");
        assert_eq!(v.options["region"], "us-east-1");
    }
}
