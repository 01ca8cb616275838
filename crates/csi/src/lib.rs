//! weir's CSI driver: the Identity, Node and Controller services over one
//! shared FUSE session per node, served with tonic on a unix socket.
//!
//! - `identity`, `node`, `controller`: the three gRPC services; thin,
//!   they check requests and call the modules below.
//! - `publications`: binds namespace directories onto kubelet targets,
//!   records them, takes them down, re-binds them after a remount.
//! - `publisher`: the bind mounts themselves and reading what is mounted
//!   at a target; `syscalls`: `openat2` and the new mount API.
//! - `sessions`: the node's shared FUSE session (start, adopt, grace stop).
//! - `recovery`: session events → re-binds, metrics and pod Events
//!   (`events`).
//! - `stats`: usage and condition of a volume, under a deadline.
//! - `state`: the records in the state dir; `paths`, `context`,
//!   `capability`: validation of what kubelet and users send.
//! - `storage`: the controller's UFS access (deleting a volume's data).
//! - `locks`, `blocking`, `error`: per-volume serialisation, deadlines,
//!   and the error type with its gRPC codes.

mod blocking;
mod capability;
mod context;
mod controller;
mod error;
mod events;
mod identity;
mod locks;
mod node;
pub mod paths;
mod publications;
pub mod publisher;
mod recovery;
mod sessions;
mod state;
mod stats;
mod storage;
mod syscalls;

use std::future::Future;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use tokio_stream::wrappers::UnixListenerStream;
use weir_csi_proto::v1::controller_server::ControllerServer;
use weir_csi_proto::v1::identity_server::IdentityServer;
use weir_csi_proto::v1::node_server::NodeServer;
use weir_fuse::MountOptions;
use weir_namespace::MountSpec;
use weir_session::Probe;

pub use error::CsiError;
pub use sessions::SESSION;

/// The driver's name, as the CSIDriver object and kubelet know it.
pub const DRIVER_NAME: &str = "fuse.csi.weir.dev";

/// Which services to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Identity and Node.
    Node,
    /// Identity and Controller.
    Controller,
    /// All three.
    All,
}

/// Everything the driver needs, from the command line and the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `unix:///path/csi.sock` (or a plain path).
    pub endpoint: String,
    /// This node's name.
    pub node_id: String,
    /// Sessions, records and session mounts live here.
    pub state_dir: PathBuf,
    /// Which services.
    pub mode: Mode,
    /// kubelet's root dir; targets must be inside it.
    pub kubelet_dir: PathBuf,
    /// How long a session with no publications stays mounted.
    pub session_grace: Duration,
    /// The watchdog's probe of the session mount; also the deadline of
    /// each publish step that touches the mount (stats probes get half).
    pub probe: Probe,
    /// The `weir` executable to run as the FUSE daemon.
    pub daemon_program: PathBuf,
    /// The namespace configuration the daemon runs with (YAML).
    pub config_yaml: String,
    /// Options of the FUSE mount.
    pub mount_options: MountOptions,
    /// The mount table, for the controller's deletes.
    pub mounts: Vec<MountSpec>,
}

/// Why the driver could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The endpoint is not a unix socket address.
    #[error("endpoint {0:?}: expected unix:///path/to/csi.sock")]
    Endpoint(String),
    /// Another plugin uses the state dir or the socket.
    #[error("{0}")]
    InUse(String),
    /// A file or directory could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The driver could not be set up.
    #[error(transparent)]
    Setup(#[from] CsiError),
    /// gRPC serving failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DriverError {
    let what = what.into();
    move |source| DriverError::Io { what, source }
}

/// How long a fresh daemon may take to mount and reach its storage.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves the driver on its endpoint until `shutdown` completes. Sessions
/// and the pods' mounts stay up after it returns: a restarted plugin
/// re-adopts them.
pub async fn serve(
    mut settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DriverError> {
    let socket = socket_path(&settings.endpoint)?;
    std::fs::create_dir_all(&settings.state_dir)
        .map_err(io(format!("state dir {}", settings.state_dir.display())))?;
    settings.state_dir = settings.state_dir.canonicalize().map_err(io("state dir"))?;
    let _lock = lock_state_dir(&settings.state_dir)?;
    let ready = Arc::new(AtomicBool::new(false));
    let node = matches!(settings.mode, Mode::Node | Mode::All);
    let controller = matches!(settings.mode, Mode::Controller | Mode::All);
    let identity =
        identity::IdentityService::new(controller, ready.clone(), settings.state_dir.clone());
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(IdentityServer::new(identity));
    if controller {
        let records =
            state::Records::open(settings.state_dir.join("volumes")).map_err(CsiError::from)?;
        let storage = storage::Storage::new(settings.mounts.clone());
        routes.add_service(ControllerServer::new(controller::ControllerService::new(
            records, storage,
        )?));
    }
    if node {
        routes.add_service(NodeServer::new(start_node(&settings, ready.clone())?));
    } else {
        ready.store(true, Ordering::SeqCst);
    }
    let listener = bind_socket(&socket)?;
    tracing::info!(endpoint = %socket.display(), mode = ?settings.mode, node = %settings.node_id, "serving CSI");
    let result = tonic::transport::Server::builder()
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("CSI server stopped; FUSE sessions and pods' mounts stay up");
    Ok(result?)
}

/// Builds the node side and starts its recovery in the background; the
/// node answers UNAVAILABLE (and Probe not ready) until that is done.
fn start_node(
    settings: &Settings,
    ready: Arc<AtomicBool>,
) -> Result<node::NodeService, DriverError> {
    let (tx, rx) = mpsc::channel();
    let sessions = sessions::Sessions::new(
        sessions::SessionSettings {
            state_dir: settings.state_dir.clone(),
            config_yaml: settings.config_yaml.clone(),
            program: settings.daemon_program.clone(),
            options: settings.mount_options.clone(),
            probe: Some(settings.probe),
            grace: settings.session_grace,
            ready_timeout: READY_TIMEOUT,
        },
        tx,
    );
    let records =
        state::Records::open(settings.state_dir.join("publications")).map_err(CsiError::from)?;
    let pubs = Arc::new(publications::Publications::open(
        &settings.kubelet_dir,
        records,
        sessions.clone(),
        settings.probe.timeout,
    )?);
    let reporter =
        events::Reporter::new(settings.node_id.clone(), tokio::runtime::Handle::current());
    let recovery = recovery::Recovery::new(pubs.clone(), reporter);
    recovery.spawn(rx).map_err(io("recovery thread"))?;
    let service = node::NodeService::new(
        settings.node_id.clone(),
        pubs.clone(),
        settings.probe.timeout,
        ready.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        pubs.forget_vanished();
        let resumed = sessions.resume(pubs.all().len());
        tracing::info!(
            ?resumed,
            publications = pubs.all().len(),
            "node state recovered"
        );
        recovery.after_restart(&resumed, started);
        ready.store(true, Ordering::SeqCst);
    });
    Ok(service)
}

/// The socket path of a `unix://` endpoint.
fn socket_path(endpoint: &str) -> Result<PathBuf, DriverError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(DriverError::Endpoint(endpoint.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// Binds the socket, replacing a stale one (nobody answers on it) but
/// never one a running plugin serves.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, DriverError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(DriverError::InUse(format!(
                "{} is served by another process",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(io(format!("stale socket {}", path.display())))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("socket dir {}", dir.display())))?;
    }
    tokio::net::UnixListener::bind(path).map_err(io(format!("bind {}", path.display())))
}

/// One plugin per state dir: two would fight over sessions and records.
fn lock_state_dir(dir: &Path) -> Result<Flock<std::fs::File>, DriverError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("{}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        DriverError::InUse(format!(
            "state dir {} is in use by another weir csi",
            dir.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_paths() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/csi/csi.sock").unwrap(),
            Path::new("/csi/csi.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("unix://relative").is_err());
    }
}
