//! `weir mount --foreground`: the supervisor. It mounts `/dev/fuse`, keeps
//! the descriptor, and runs the serving daemon (this same binary with
//! `--fuse-fd`) as its child through a [`weir_session::Session`]. When the
//! daemon crashes or hangs, a replacement takes over the live connection,
//! so the mount never shows "Transport endpoint is not connected".
//!
//! SIGTERM and SIGINT detach the mount; the daemon then finishes once no
//! file is open, and the supervisor exits with it.
//!
//! With `metrics.addr`, the supervisor owns the Prometheus port (it lives
//! as long as the mount, and records sessions and recoveries) and appends,
//! on each scrape, what the daemon serving now renders, fetched over its
//! admin socket: a takeover replaces the daemon, never the port.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use weir_fuse::MountOptions;
use weir_session::{DaemonCommand, Exit, Probe, Session, Spec};

use crate::cli::MountArgs;
use crate::config::Config;

/// How long a daemon may take to mount, reach its storage and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the supervisor until the session ends.
pub fn run(args: &MountArgs, config: Config) -> anyhow::Result<()> {
    crate::daemon::init_logging();
    let ready = args.ready_fd.map(|fd| {
        // SAFETY: our parent passed this descriptor to us for this purpose only.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let session = match start(args, &config) {
        Ok(s) => s,
        Err(e) => {
            if let Some(mut f) = ready {
                let _ = writeln!(f, "error: {}", crate::one_line(&e));
            }
            return Err(e);
        }
    };
    if let Some(mut f) = ready {
        let _ = writeln!(f, "ok");
    }
    tracing::info!(
        mountpoint = %session.mountpoint().display(),
        daemon = session.daemon_pid(),
        "supervising the FUSE session"
    );
    match session.wait() {
        Exit::Code(0) => Ok(()),
        exit => bail!(
            "the FUSE session on {} ended: {exit}",
            args.mountpoint.display()
        ),
    }
}

fn start(args: &MountArgs, config: &Config) -> anyhow::Result<Session> {
    let opts = MountOptions::parse(&config.fuse.options)?;
    let dir = &config.cache.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create cache dir {}", dir.display()))?;
    let _ = std::fs::write(
        dir.join("supervisor.pid"),
        format!("{}\n", std::process::id()),
    );
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    if let Some(addr) = config.metrics.addr {
        serve_metrics(addr, dir.join(weir_admin::SOCKET_NAME))?;
    }
    watch_signals(&mountpoint)?;
    let spec = Spec {
        mountpoint,
        dir: dir.join("session"),
        options: opts,
        daemon: DaemonCommand {
            program: std::env::current_exe().context("cannot find the weir executable")?,
            args: daemon_args(std::env::args_os().skip(1)),
            log: None,
        },
        probe: probe(config),
        ready_timeout: READY_TIMEOUT,
        on_event: None,
    };
    Ok(Session::start(spec)?)
}

/// How long a scrape waits for the daemon's part.
const DAEMON_METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves this process's metrics on `addr`, followed on each scrape by
/// those of the daemon answering on the admin `socket`, if one does.
pub(crate) fn serve_metrics(
    addr: std::net::SocketAddr,
    socket: std::path::PathBuf,
) -> anyhow::Result<()> {
    let client = weir_admin::Client::new(socket).with_timeout(DAEMON_METRICS_TIMEOUT);
    let extra: weir_metrics::Extra = Arc::new(move || {
        match client.call(&weir_admin::Request::Metrics) {
            Ok(weir_admin::Response::Metrics { text }) => Some(text),
            Ok(_) => None,
            Err(e) => {
                // Between daemons (a takeover), or a hung one: the scrape
                // still has the supervisor's own numbers.
                tracing::debug!(error = %e, "no daemon metrics for this scrape");
                None
            }
        }
    });
    let bound = weir_metrics::serve_with(addr, extra)?;
    tracing::info!(addr = %bound, "serving Prometheus metrics");
    Ok(())
}

fn probe(config: &Config) -> Option<Probe> {
    let f = &config.fuse;
    (!f.probe_interval.is_zero() && !f.probe_timeout.is_zero()).then_some(Probe {
        interval: f.probe_interval,
        timeout: f.probe_timeout,
    })
}

/// Our own command line, minus the readiness descriptor our parent gave
/// us: the session adds the daemon's own descriptors.
fn daemon_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        match a.to_str() {
            Some("--ready-fd") => skip_value = true,
            Some(s) if s.starts_with("--ready-fd=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// Blocks SIGTERM and SIGINT in every thread (threads inherit the mask;
/// the session unblocks them for its daemons) and detaches the mount when
/// one arrives.
fn watch_signals(mountpoint: &Path) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("cannot block signals")?;
    let mountpoint = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("weir-signals".into())
        .spawn(move || {
            loop {
                let Ok(sig) = set.wait() else { continue };
                tracing::info!(signal = ?sig, mountpoint = %mountpoint.display(), "unmounting");
                if let Err(e) = weir_fuse::mount::unmount(&mountpoint, true) {
                    tracing::warn!(error = %e, "unmount failed");
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readiness_descriptor_is_not_passed_on() {
        let args = [
            "mount",
            "/m",
            "--ready-fd",
            "3",
            "--foreground",
            "--ready-fd=5",
            "-o",
            "ro",
        ];
        let got = daemon_args(args.iter().map(OsString::from));
        assert_eq!(got, ["mount", "/m", "--foreground", "-o", "ro"]);
    }
}
