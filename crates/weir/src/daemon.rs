//! The mount daemon: builds the storage, caches and filesystem from the
//! configuration (the table from the YAML file or from etcd, see
//! `control`), serves the FUSE connection its supervisor holds (a new one,
//! or one whose previous daemon died) and its admin endpoint, reports
//! readiness, and serves until unmounted.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use weir_cache::{PageCache, PageCacheConfig};
use weir_fs::{Fs, FsConfig, Start};
use weir_fuse::{Connection, Handshake, LoopSettings, MountOptions};
use weir_namespace::MountTable;

use crate::cli::MountArgs;
use crate::config::Config;
use crate::control::{self, Control};

/// How long the startup check waits for each UFS to answer.
const REACH_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the daemon in this process until the mount goes away.
pub fn run(args: &MountArgs, config: Config) -> anyhow::Result<()> {
    init_logging();
    let ready = args.ready_fd.map(|fd| {
        // SAFETY: the supervisor passed this descriptor to us for this purpose only.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    });
    match start(args, &config) {
        Ok(running) => running.serve(ready),
        Err(e) => {
            let line = crate::one_line(&e);
            if let Some(mut f) = ready {
                let _ = writeln!(f, "error: {line}");
            }
            if args.takeover {
                // Retrying cannot help: the supervisor remounts instead.
                tracing::error!("cannot take over the FUSE connection: {line}");
                std::process::exit(weir_session::EXIT_CANNOT_TAKE_OVER);
            }
            Err(e)
        }
    }
}

pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

struct Running {
    rt: tokio::runtime::Runtime,
    fs: Fs,
    opts: MountOptions,
    settings: LoopSettings,
    mountpoint: std::path::PathBuf,
    conn: Connection,
    control: Control,
    _lock: Flock<std::fs::File>,
}

fn start(args: &MountArgs, config: &Config) -> anyhow::Result<Running> {
    let opts = MountOptions::parse(&config.fuse.options)?;
    let dir = &config.cache.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create cache dir {}", dir.display()))?;
    let lock = lock_cache_dir(dir)?;
    // For operators and tests: which process serves this cache dir.
    let _ = std::fs::write(dir.join("weir.pid"), format!("{}\n", std::process::id()));
    // Before anything records: metrics recorded earlier would be lost.
    let metrics: weir_admin::Render = match weir_metrics::install_recorder() {
        Ok(handle) => {
            weir_metrics::keep_up(handle.clone());
            Arc::new(move || handle.render())
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics are not recorded");
            Arc::new(String::new)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("weir-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let session_dir = args
        .session_dir
        .clone()
        .context("daemon mode needs --session-dir")?;
    let plan = control::open_table(&rt, config, &session_dir, args.takeover)?;
    if !args.takeover && plan.is_standalone() {
        // A replacement serves from the cache even while a storage is
        // down, rather than leave the mount without a daemon. A cluster
        // table's bad entries are skipped and reported instead.
        rt.block_on(check_reachable(&plan.table))?;
    }
    let page_size = config.cache.page_size.as_u64();
    let pages = PageCache::open(PageCacheConfig {
        dir: dir.clone(),
        capacity: config.cache.capacity.as_u64(),
        page_size,
        memory: config.cache.memory.as_u64(),
    })?;
    let mut fs_cfg = FsConfig::new(dir.join("staging"));
    fs_cfg.random_writes = config.fuse.random_writes;
    fs_cfg.symlinks = config.fuse.symlinks;
    fs_cfg.read_only = opts.read_only;
    fs_cfg.kernel_cache = opts.kernel_cache;
    fs_cfg.metadata_ttl = config.metadata.ttl;
    fs_cfg.readahead_pages = config.cache.readahead.as_u64() / page_size;
    fs_cfg.fetch_pages = config.cache.fetch_size.as_u64() / page_size;
    fs_cfg.uid = nix::unistd::getuid().as_raw();
    fs_cfg.gid = nix::unistd::getgid().as_raw();
    let start = if args.takeover {
        Start::Takeover
    } else {
        Start::Fresh
    };
    let fs = Fs::journaled(plan.table, Arc::new(pages), fs_cfg, &session_dir, start)?;
    let control = {
        let _in_rt = rt.enter();
        control::start(&fs, plan.origin, config, &args.mountpoint, metrics)?
    };
    let fd = args.fuse_fd.context("daemon mode needs --fuse-fd")?;
    let init_file = session_dir.join("init");
    let handshake = if args.takeover {
        Handshake::Takeover { init_file }
    } else {
        Handshake::Fresh { init_file }
    };
    // SAFETY: the supervisor handed us this descriptor, and only us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let conn = Connection::Held { fd, handshake };
    let threads = opts
        .max_idle_threads
        .map_or(config.fuse.threads, |m| m.min(config.fuse.threads));
    Ok(Running {
        rt,
        fs,
        opts,
        settings: LoopSettings {
            threads,
            parallel_dirops: config.fuse.parallel_dirops,
            passthrough: config.fuse.passthrough,
            read_ahead_kb: Some(config.fuse.read_ahead_kb),
        },
        mountpoint: args.mountpoint.clone(),
        conn,
        control,
        _lock: lock,
    })
}

fn lock_cache_dir(dir: &std::path::Path) -> anyhow::Result<Flock<std::fs::File>> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, e)) if e == nix::errno::Errno::EWOULDBLOCK => {
            bail!(
                "cache dir {} is in use by another weir mount; give each mount its own --cache-dir",
                dir.display()
            )
        }
        Err((_, e)) => bail!("cannot lock {}: {e}", path.display()),
    }
}

async fn check_reachable(table: &MountTable) -> anyhow::Result<()> {
    for m in table.mounts() {
        match tokio::time::timeout(REACH_TIMEOUT, m.ufs.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("cannot reach {} (mount {}): {e}", m.ufs.uri(), m.path),
            Err(_) => bail!(
                "cannot reach {} (mount {}): no answer within {REACH_TIMEOUT:?}",
                m.ufs.uri(),
                m.path
            ),
        }
    }
    Ok(())
}

impl Running {
    fn serve(self, ready: Option<std::fs::File>) -> anyhow::Result<()> {
        let mountpoint = self.mountpoint.clone();
        spawn_signal_handler(&self.rt, mountpoint.clone());
        let on_ready = move |r: Result<(), String>| match r {
            Ok(()) => {
                tracing::info!(mountpoint = %mountpoint.display(), "mounted and answering");
                if let Some(mut f) = ready {
                    let _ = writeln!(f, "ok");
                }
            }
            Err(msg) => {
                tracing::error!("{msg}");
                if let Some(mut f) = ready {
                    let _ = writeln!(f, "error: {msg}");
                }
                let _ = weir_fuse::mount::unmount(&mountpoint, true);
            }
        };
        let handle = self.rt.handle().clone();
        let served = weir_fuse::serve(
            self.fs.clone(),
            handle,
            &self.mountpoint,
            &self.opts,
            &self.settings,
            self.conn,
            on_ready,
        );
        tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted; exiting");
        self.control.close(&self.rt);
        self.rt.shutdown_timeout(Duration::from_secs(5));
        Ok(served?)
    }
}

/// SIGTERM and SIGINT detach the mount; the loop then ends by itself once
/// no file is open, and pending uploads finish first. (The supervisor does
/// the same on its own signals; these are for a signal sent to the daemon.)
fn spawn_signal_handler(rt: &tokio::runtime::Runtime, mountpoint: std::path::PathBuf) {
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!(mountpoint = %mountpoint.display(), "signal received; unmounting");
        if let Err(e) = weir_fuse::mount::unmount(&mountpoint, true) {
            tracing::error!(error = %e, "unmount failed");
        }
    });
}
