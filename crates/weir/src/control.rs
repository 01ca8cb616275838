//! The daemon's control plane, wired up: where its mount table comes from
//! (the YAML file, the standalone overlay a takeover inherits, or etcd),
//! its admin endpoint on `<cache dir>/admin.sock`, and its entry in the
//! registry `weir fs` looks daemons up in.
//!
//! In cluster mode the daemon joins the cluster, waits (at most
//! `cluster.start_timeout`) for the table from etcd, or, with etcd down,
//! from the copy it kept in its cache dir, builds the filesystem from it and
//! then follows the cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use weir_admin::follow::{self, Follower};
use weir_admin::protocol::{DaemonInfo, Mode};
use weir_admin::registry::{self, Registration};
use weir_admin::{Context, Render, SOCKET_NAME, Server, Standalone, TableControl};
use weir_cluster::{Cluster, TableSnapshot};
use weir_fs::Fs;
use weir_namespace::MountTable;
use weir_ufs::Tuning;

use crate::config::Config;

/// The file in the session dir that keeps a standalone table changed with
/// `weir fs mount`/`umount`, for a replacement daemon.
const OVERLAY: &str = "mounts.json";
/// The file in the cache dir that keeps the last table from etcd.
const TABLE_CACHE: &str = "cluster-table.json";

/// Where the table came from, and what the admin endpoint needs to change it.
pub(crate) enum Origin {
    /// The YAML file, or the overlay of an earlier daemon of this session.
    Standalone { overlay: PathBuf },
    /// etcd.
    Cluster {
        cluster: Arc<Cluster>,
        snapshot: Arc<TableSnapshot>,
        errors: Vec<String>,
    },
}

/// The table to build the filesystem from.
pub(crate) struct Plan {
    pub table: MountTable,
    pub origin: Origin,
}

impl Plan {
    /// Whether the table came from the YAML file (so its storage should be
    /// checked before serving).
    pub fn is_standalone(&self) -> bool {
        matches!(self.origin, Origin::Standalone { .. })
    }
}

/// Opens the table this daemon serves.
pub(crate) fn open_table(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    session_dir: &Path,
    takeover: bool,
) -> anyhow::Result<Plan> {
    let tuning = Tuning::default();
    if !config.cluster.enabled() {
        let overlay = session_dir.join(OVERLAY);
        let inherited = if takeover {
            Standalone::load_overlay(&overlay)
                .with_context(|| format!("cannot read {}", overlay.display()))?
        } else {
            // A fresh mount starts from the file again.
            let _ = std::fs::remove_file(&overlay);
            None
        };
        let table = match inherited {
            Some(specs) => {
                tracing::info!(
                    mounts = specs.len(),
                    "serving the table an earlier daemon of this session changed"
                );
                MountTable::open_lenient(&specs, &tuning, None).0
            }
            None => MountTable::open(&config.mounts, &tuning)?,
        };
        return Ok(Plan {
            table,
            origin: Origin::Standalone { overlay },
        });
    }
    let c = &config.cluster;
    let cfg = c.client_config(config.cache.dir.join(TABLE_CACHE));
    let (cluster, snapshot) = rt.block_on(async {
        let cluster = Arc::new(Cluster::start(cfg).await?);
        let snapshot = cluster.wait_for_table(c.start_timeout).await?;
        Ok::<_, weir_cluster::ClusterError>((cluster, snapshot))
    })?;
    tracing::info!(
        cluster = %c.name,
        node = %cluster.me().node_id,
        mounts = snapshot.specs.len(),
        revision = snapshot.revision,
        source = ?snapshot.source,
        status = %cluster.status(),
        "joined the cluster"
    );
    let (table, errors) = follow::open_table(&snapshot, &tuning, None);
    Ok(Plan {
        table,
        origin: Origin::Cluster {
            cluster,
            snapshot,
            errors,
        },
    })
}

/// The running control plane; [`Control::close`] takes it down.
pub(crate) struct Control {
    server: Server,
    mountpoint: PathBuf,
    cluster: Option<Arc<Cluster>>,
    _follower: Option<Arc<Follower>>,
}

/// Starts following the cluster (in cluster mode), serves the admin
/// endpoint and registers this daemon. Call inside the daemon's runtime.
pub(crate) fn start(
    fs: &Fs,
    origin: Origin,
    config: &Config,
    mountpoint: &Path,
    metrics: Render,
) -> anyhow::Result<Control> {
    let dir = &config.cache.dir;
    let mountpoint = registry::mount_path(mountpoint);
    let (mode, table, cluster) = match origin {
        Origin::Standalone { overlay } => (
            Mode::Standalone,
            TableControl::Standalone(Standalone::new(fs.clone(), overlay, Tuning::default())),
            None,
        ),
        Origin::Cluster {
            cluster,
            snapshot,
            errors,
        } => {
            let follower = Arc::new(follow::follow(
                fs,
                cluster.clone(),
                Tuning::default(),
                &snapshot,
                errors,
            ));
            let table = TableControl::Cluster {
                cluster: cluster.clone(),
                applied: follower.applied(),
            };
            (Mode::Cluster, table, Some((cluster, follower)))
        }
    };
    let info = DaemonInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        mode,
        mountpoint: mountpoint.display().to_string(),
        cache_dir: dir.display().to_string(),
        started_at: weir_admin::unix_now(),
        fuse_threads: config.fuse.threads,
        ufs_concurrency: weir_fs::FsConfig::new(PathBuf::new()).ufs_concurrency,
        readahead: config.cache.readahead.as_u64(),
        metadata_ttl: config.metadata.ttl.as_secs_f64(),
        passthrough: false,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let ctx = Arc::new(Context::new(
        fs.clone(),
        info,
        metrics,
        table,
        cluster.clone(),
    ));
    let socket = dir.join(SOCKET_NAME);
    let server = Server::start(ctx, &socket)
        .with_context(|| format!("cannot serve the admin endpoint on {}", socket.display()))?;
    let reg = Registration {
        mountpoint: mountpoint.clone(),
        cache_dir: dir.clone(),
        socket,
        pid: std::process::id(),
    };
    match registry::register(&reg) {
        Ok(path) => tracing::debug!(path = %path.display(), "registered for weir fs"),
        // weir fs --cache-dir still finds us.
        Err(e) => {
            tracing::warn!(run_dir = %registry::run_dir().display(), error = %e, "cannot register for weir fs")
        }
    }
    let (cluster, follower) = match cluster {
        Some((c, f)) => (Some(c), Some(f)),
        None => (None, None),
    };
    Ok(Control {
        server,
        mountpoint,
        cluster,
        _follower: follower,
    })
}

impl Control {
    /// Stops serving the endpoint, unregisters, and leaves the cluster.
    pub fn close(self, rt: &tokio::runtime::Runtime) {
        self.server.close();
        registry::unregister(&self.mountpoint, std::process::id());
        if let Some(cluster) = self.cluster {
            rt.block_on(async {
                let _ = cluster.flush(std::time::Duration::from_secs(2)).await;
                cluster.leave().await;
            });
        }
    }
}
