//! `weir csi`: the CSI driver. Reads the flags and the namespace config,
//! serves metrics (its own and its FUSE daemon's) if asked, and runs
//! [`weir_csi::serve`] until SIGTERM or SIGINT; sessions and pods' mounts
//! stay up after it stops, for the next plugin to re-adopt.

use std::path::PathBuf;

use anyhow::Context;
use weir_session::Probe;

use crate::cli::{CsiArgs, CsiMode};
use crate::config::Config;

/// Runs the driver until a signal stops it.
pub fn run(args: CsiArgs) -> anyhow::Result<()> {
    crate::daemon::init_logging();
    let (settings, daemon_socket) = settings(&args)?;
    if let Some(addr) = args.metrics_addr {
        // The plugin's own numbers (sessions, publications, recoveries),
        // then those of the daemon serving now (FUSE, cache, UFS), as
        // `weir mount` serves them.
        crate::supervise::serve_metrics(addr, daemon_socket)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-csi")
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received; stopping the CSI server");
        };
        weir_csi::serve(settings, shutdown).await
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

/// The driver's settings, and the admin socket its FUSE daemons serve
/// (in the cache dir of the namespace config they are given).
fn settings(args: &CsiArgs) -> anyhow::Result<(weir_csi::Settings, PathBuf)> {
    let (config, config_yaml) = Config::load_with_text(args.config.as_deref(), &args.sets)?;
    let needs_mounts = args.mode != CsiMode::Controller || args.config.is_some();
    if needs_mounts && config.mounts.is_empty() {
        anyhow::bail!(
            "the namespace config has no `mounts`: give --config FILE with a mounts list"
        );
    }
    let mount_options = weir_fuse::MountOptions::parse(&config.fuse.options)?;
    let daemon_socket = config.cache.dir.join(weir_admin::SOCKET_NAME);
    let settings = weir_csi::Settings {
        endpoint: args.endpoint.clone(),
        node_id: args.node_id.clone(),
        state_dir: args.state_dir.clone(),
        mode: match args.mode {
            CsiMode::Node => weir_csi::Mode::Node,
            CsiMode::Controller => weir_csi::Mode::Controller,
            CsiMode::All => weir_csi::Mode::All,
        },
        kubelet_dir: args.kubelet_dir.clone(),
        session_grace: args.session_grace,
        probe: Probe {
            interval: args.probe_interval,
            timeout: args.probe_timeout,
        },
        daemon_program: std::env::current_exe().context("cannot find the weir executable")?,
        config_yaml,
        mount_options,
        mounts: config.mounts,
    };
    Ok((settings, daemon_socket))
}
