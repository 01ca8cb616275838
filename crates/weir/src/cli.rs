//! Command-line parsing and the `mount` / `umount` commands (`weir fs`
//! is in `fscmd`).

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::{daemon, supervise};

/// weir: one cached POSIX namespace over many storage systems.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Mount a namespace at MOUNTPOINT.
    Mount(MountArgs),
    /// Unmount MOUNTPOINT.
    Umount(UmountArgs),
    /// Run the Kubernetes CSI driver (node plugin, controller, or both).
    Csi(CsiArgs),
    /// Ask a running mount: ls, stat, mount, umount, mounts, check-cached,
    /// load, drop-cache, doctor.
    Fs(crate::fscmd::FsArgs),
}

/// `weir csi`
#[derive(Debug, Args, Clone)]
pub struct CsiArgs {
    /// gRPC endpoint kubelet and the sidecars talk to (unix:///path/csi.sock).
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: String,
    /// This node's name, as Kubernetes knows it.
    #[arg(long, env = "NODE_ID")]
    pub node_id: String,
    /// Directory for sessions, publications and the mounts behind them.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// YAML configuration file of the namespace (as for weir mount).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which services to run.
    #[arg(long, value_enum, default_value = "all")]
    pub mode: CsiMode,
    /// kubelet's root directory; target paths must be inside it.
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// How long a session with no publications stays mounted.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub session_grace: Duration,
    /// How often the watchdog probes each session's mount.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub probe_interval: Duration,
    /// How long a probe may take before the mount counts as hung.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub probe_timeout: Duration,
    /// Serve Prometheus metrics on this address (host:port).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Override any config key, as in fuse.random_writes=true.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// What `weir csi` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CsiMode {
    /// Identity and Node services (the DaemonSet).
    Node,
    /// Identity and Controller services (the Deployment).
    Controller,
    /// All three.
    All,
}

/// `weir mount`
#[derive(Debug, Args, Clone)]
pub struct MountArgs {
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Mount this storage at the namespace root (file:///dir, s3://bucket/prefix, ...).
    #[arg(long, conflicts_with = "config")]
    pub ufs: Option<String>,
    /// YAML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cache directory (overrides cache.dir).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Cache capacity, as in 10GiB (overrides cache.capacity).
    #[arg(long)]
    pub cache_size: Option<ByteSize>,
    /// Mount options: kernel_cache, auto_cache, attr_timeout=N, entry_timeout=N,
    /// max_background=N, max_idle_threads=N, ro, allow_other.
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Override any config key, as in fuse.random_writes=true.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Stay in the foreground and log to stderr.
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Log file of the background daemon (default: <cache dir>/weir.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Internal: the descriptor on which a background daemon reports readiness.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
    /// Internal: serve the FUSE connection on this descriptor, which the
    /// supervisor mounted and holds (daemon mode).
    #[arg(long, hide = true, requires = "session_dir")]
    pub fuse_fd: Option<i32>,
    /// Internal: the session directory (saved INIT, journal).
    #[arg(long, hide = true)]
    pub session_dir: Option<PathBuf>,
    /// Internal: take over a live connection whose daemon died.
    #[arg(long, hide = true, requires = "fuse_fd")]
    pub takeover: bool,
}

#[derive(Debug, Args)]
struct UmountArgs {
    /// The mount point.
    mountpoint: PathBuf,
    /// Detach now even if files are open (the daemon exits once they close).
    #[arg(long, short = 'l')]
    lazy: bool,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Mount(args) => mount(args),
        Cmd::Umount(args) => umount(&args.mountpoint, args.lazy),
        Cmd::Csi(args) => crate::csi::run(args),
        Cmd::Fs(args) => crate::fscmd::run(args),
    }
}

/// The configuration a mount will run with: file, `--set`, then flags.
pub fn effective_config(args: &MountArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), &args.sets)?;
    if let Some(uri) = &args.ufs {
        if config.cluster.enabled() {
            bail!(
                "--ufs: in cluster mode the mount table lives in etcd; add mounts with `weir fs mount PATH URI`"
            );
        }
        if !config.mounts.is_empty() {
            bail!("--ufs and a config with mounts both name the storage; use one");
        }
        config.mounts.push(weir_namespace::MountSpec {
            path: "/".into(),
            ufs: uri.clone(),
            options: Default::default(),
        });
    }
    if config.mounts.is_empty() && !config.cluster.enabled() {
        bail!("nothing to mount: give --ufs URI, or --config FILE with a `mounts` list");
    }
    if let Some(dir) = &args.cache_dir {
        config.cache.dir = dir.clone();
    }
    if let Some(size) = args.cache_size {
        config.cache.capacity = size;
    }
    config.fuse.options.extend(args.options.iter().cloned());
    weir_fuse::MountOptions::parse(&config.fuse.options)?;
    Ok(config)
}

fn mount(args: MountArgs) -> anyhow::Result<()> {
    let config = effective_config(&args)?;
    if args.fuse_fd.is_some() {
        return daemon::run(&args, config);
    }
    weir_fuse::check_mount_point(&args.mountpoint)?;
    if args.foreground {
        return supervise::run(&args, config);
    }
    spawn_background(&args, &config)
}

/// Starts `weir mount --foreground` detached, and waits for its word.
fn spawn_background(args: &MountArgs, config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.cache.dir)
        .with_context(|| format!("cannot create cache dir {}", config.cache.dir.display()))?;
    let log = args
        .log_file
        .clone()
        .unwrap_or_else(|| config.cache.dir.join("weir.log"));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let (read_end, write_end) = nix::unistd::pipe().context("pipe")?;
    let mut cmd = Command::new(std::env::current_exe().context("cannot find the weir executable")?);
    cmd.args(std::env::args_os().skip(1))
        .arg("--foreground")
        .arg("--ready-fd")
        .arg("3")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let write_raw = write_end.as_raw_fd();
    // SAFETY: only async-signal-safe calls (setsid, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::dup2(write_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the weir daemon")?;
    drop(write_end);
    match wait_ready(read_end, Duration::from_secs(120)) {
        Ready::Ok => Ok(()),
        Ready::Failed(msg) => {
            let _ = child.wait();
            bail!("{msg}")
        }
        Ready::Silent => {
            let status = child.wait().ok();
            bail!(
                "the weir daemon exited ({}) before the mount was ready; see {}",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown status".into()),
                log.display()
            )
        }
        Ready::Timeout => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = weir_fuse::mount::unmount(&args.mountpoint, true);
            bail!(
                "the mount did not become ready in time; see {}",
                log.display()
            )
        }
    }
}

enum Ready {
    Ok,
    Failed(String),
    Silent,
    Timeout,
}

fn wait_ready(read_end: OwnedFd, timeout: Duration) -> Ready {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(std::fs::File::from(read_end)).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(timeout) {
        Ok(line) if line.trim() == "ok" => Ready::Ok,
        Ok(line) if line.is_empty() => Ready::Silent,
        Ok(line) => Ready::Failed(line.trim().trim_start_matches("error: ").to_string()),
        Err(_) => Ready::Timeout,
    }
}

fn umount(mountpoint: &Path, lazy: bool) -> anyhow::Result<()> {
    match weir_fuse::mount::mount_at(mountpoint)? {
        Some(m) if m.fs_type == weir_fuse::mount::FS_TYPE => {}
        Some(m) => bail!(
            "{} is a {} mount, not a weir mount",
            mountpoint.display(),
            m.fs_type
        ),
        None => bail!("{} is not mounted", mountpoint.display()),
    }
    weir_fuse::mount::unmount(mountpoint, lazy).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            anyhow::anyhow!(
                "{} is busy (files are open); close them or use --lazy",
                mountpoint.display()
            )
        } else {
            anyhow::anyhow!("cannot unmount {}: {e}", mountpoint.display())
        }
    })
}
