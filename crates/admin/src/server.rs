//! The admin endpoint in the daemon: a unix socket (mode 0600) in the
//! daemon's cache directory, one request per connection (see
//! [`crate::protocol`]).
//!
//! The socket is bound under a temporary name, restricted, then renamed
//! over `admin.sock`: a replacement daemon takes the name over atomically,
//! and no client ever finds a socket open to everyone.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use weir_cluster::Cluster;
use weir_fs::Fs;

use crate::follow::Follower;
use crate::jobs::Jobs;
use crate::protocol::*;
use crate::table::TableControl;
use crate::{stats, tree};

/// How long a members request may take before `mounts` answers without.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(2);

/// Renders this process's metrics (Prometheus text).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// What the endpoint serves.
pub struct Context {
    /// The filesystem.
    pub fs: Fs,
    /// Facts about the daemon (mode, paths, settings).
    pub info: DaemonInfo,
    /// This process's metrics.
    pub metrics: Render,
    /// Who owns the mount table.
    pub table: TableControl,
    /// The cluster, in cluster mode, and what follows it.
    pub cluster: Option<(Arc<Cluster>, Arc<Follower>)>,
    jobs: Jobs,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `cluster` must be given exactly in cluster mode.
    pub fn new(
        fs: Fs,
        info: DaemonInfo,
        metrics: Render,
        table: TableControl,
        cluster: Option<(Arc<Cluster>, Arc<Follower>)>,
    ) -> Self {
        Context {
            fs,
            info,
            metrics,
            table,
            cluster,
            jobs: Jobs::new(),
        }
    }
}

/// The running endpoint; [`Server::close`] removes its socket.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    /// Device and inode of our socket file, to remove only our own.
    id: (u64, u64),
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `path` and serves `ctx` on the current runtime.
    pub fn start(ctx: Arc<Context>, path: &Path) -> std::io::Result<Server> {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        let meta = std::fs::metadata(path)?;
        let task = tokio::spawn(accept(listener, ctx));
        tracing::info!(socket = %path.display(), "admin endpoint listening");
        Ok(Server {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            task,
        })
    }

    /// Stops serving and removes the socket, unless another daemon has
    /// taken its name since.
    pub fn close(self) {
        self.task.abort();
        if let Ok(m) = std::fs::metadata(&self.path)
            && (m.dev(), m.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn accept(listener: UnixListener, ctx: Arc<Context>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, ctx.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, ctx: Arc<Context>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64));
    let response = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                tracing::debug!(?req, "admin request");
                dispatch(&ctx, req).await
            }
            Err(e) => Response::Error(ErrorReply::new(
                ErrorKind::Invalid,
                format!("not a request weir understands: {e}"),
            )),
        },
        Err(e) => {
            tracing::debug!(error = %e, "admin endpoint: cannot read a request");
            return;
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    if let Err(e) = write.write_all(&out).await {
        tracing::debug!(error = %e, "admin endpoint: the client left before the answer");
    }
}

/// Answers one request.
pub async fn dispatch(ctx: &Context, req: Request) -> Response {
    match answer(ctx, req).await {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    }
}

async fn answer(ctx: &Context, req: Request) -> Result<Response, ErrorReply> {
    let fs = &ctx.fs;
    Ok(match req {
        Request::Stats => Response::Stats(Box::new(stats_of(ctx))),
        Request::Metrics => Response::Metrics {
            text: (ctx.metrics)(),
        },
        Request::Stat { path } => {
            let stat = fs.stat_at(&path).await?;
            let path = clean(&path)?;
            Response::Stat(tree::info(fs, &path, &stat))
        }
        Request::List { path, recursive } => {
            let walk = tree::walk(fs, &path, recursive).await?;
            // A directory lists its entries, not itself; a file lists as
            // itself, as ls does.
            let skip = usize::from(walk.entries[0].1.kind == weir_fs::Kind::Dir);
            let entries = walk.entries[skip..]
                .iter()
                .map(|(p, s)| tree::info(fs, p, s))
                .collect();
            Response::List { entries }
        }
        Request::CheckCached { path } => Response::Cached(check_cached(fs, &path).await?),
        Request::DropCache { path } => Response::Dropped(drop_cache(fs, &path).await?),
        Request::LoadStart { path, parallel } => {
            fs.stat_at(&path).await?;
            let job = ctx.jobs.start(fs.clone(), clean(&path)?, parallel);
            Response::Job(job.progress())
        }
        Request::LoadProgress { job } => Response::Job(job_of(ctx, job)?.progress()),
        Request::LoadCancel { job } => {
            let j = job_of(ctx, job)?;
            j.cancel();
            Response::Job(j.progress())
        }
        Request::Mounts => Response::Mounts(mounts(ctx).await),
        Request::Mount { spec } => Response::TableChanged {
            message: ctx.table.mount(spec).await?,
        },
        Request::Umount { path } => Response::TableChanged {
            message: ctx.table.umount(&path).await?,
        },
    })
}

fn clean(path: &str) -> Result<String, ErrorReply> {
    weir_namespace::normalize(path)
        .map_err(|e| ErrorReply::new(ErrorKind::Invalid, format!("{path}: {e}")))
}

fn job_of(ctx: &Context, id: u64) -> Result<Arc<crate::jobs::Job>, ErrorReply> {
    ctx.jobs.get(id).ok_or_else(|| {
        ErrorReply::new(
            ErrorKind::NoSuchJob,
            format!("no load job {id} in this daemon (it may have been replaced; start the load again to resume)"),
        )
    })
}

async fn check_cached(fs: &Fs, path: &str) -> Result<CachedReport, ErrorReply> {
    let walk = tree::walk(fs, path, true).await?;
    let mut report = CachedReport {
        files: Vec::new(),
        total_size: 0,
        total_cached: 0,
        errors: walk.errors.clone(),
    };
    for (p, _) in walk.files() {
        match fs.cached_at(p).await {
            Ok(c) => {
                report.total_size += c.size;
                report.total_cached += c.cached;
                report.files.push(CachedFile {
                    path: p.to_string(),
                    size: c.size,
                    cached: c.cached,
                });
            }
            Err(e) => report.errors.push(ErrorReply::from(e).message),
        }
    }
    Ok(report)
}

async fn drop_cache(fs: &Fs, path: &str) -> Result<DropReport, ErrorReply> {
    let walk = tree::walk(fs, path, true).await?;
    let mut report = DropReport {
        files: 0,
        bytes: 0,
        busy: Vec::new(),
        errors: walk.errors.clone(),
    };
    for (p, _) in walk.files() {
        match fs.drop_cached_at(p).await {
            Ok(bytes) => {
                report.bytes += bytes;
                if bytes > 0 {
                    report.files += 1;
                }
            }
            Err(e) if e.errno() == libc::EBUSY => report.busy.push(p.to_string()),
            Err(e) => report.errors.push(ErrorReply::from(e).message),
        }
    }
    Ok(report)
}

fn cluster_report(ctx: &Context) -> Option<ClusterReport> {
    let (cluster, _) = ctx.cluster.as_ref()?;
    let status = cluster.status();
    Some(ClusterReport {
        cluster: cluster.config().cluster.clone(),
        node_id: cluster.me().node_id.clone(),
        state: match status.state {
            weir_cluster::LinkState::Connecting => "connecting",
            weir_cluster::LinkState::Connected => "connected",
            weir_cluster::LinkState::Disconnected => "disconnected",
        }
        .into(),
        status: status.to_string(),
        revision: status.revision,
        table_source: cluster.table().map(|t| {
            match t.source {
                weir_cluster::TableSource::Etcd => "etcd",
                weir_cluster::TableSource::CacheFile => "cache_file",
            }
            .to_string()
        }),
    })
}

async fn mounts(ctx: &Context) -> MountsReport {
    let table = ctx.fs.table();
    let mut mounts: Vec<MountView> = table
        .mounts()
        .iter()
        .map(|m| MountView::of(&m.spec))
        .collect();
    mounts.sort_by(|a, b| a.path.cmp(&b.path));
    let (errors, members) = match &ctx.cluster {
        None => (Vec::new(), None),
        Some((cluster, follower)) => {
            let members =
                match tokio::time::timeout(MEMBERS_TIMEOUT, cluster.admin().members()).await {
                    Ok(Ok(m)) => Some(m.into_iter().map(|m| m.node_id).collect()),
                    _ => None,
                };
            (follower.errors().lock().clone(), members)
        }
    };
    MountsReport {
        mode: ctx.info.mode,
        mounts,
        errors,
        cluster: cluster_report(ctx),
        members,
    }
}

fn stats_of(ctx: &Context) -> Stats {
    let (fuse, ufs) = stats::from_metrics(&(ctx.metrics)());
    let mut info = ctx.info.clone();
    info.passthrough = ctx.fs.passthrough_enabled();
    Stats {
        protocol: PROTOCOL_VERSION,
        daemon: info,
        cache: stats::cache(&ctx.fs),
        fuse,
        ufs,
        cpu: stats::cpu(),
        cluster: cluster_report(ctx),
        mounts: ctx.fs.table().mounts().len(),
    }
}

/// Seconds since the Unix epoch now, for [`DaemonInfo::started_at`].
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
