//! A real S3 protocol server on loopback, backed by a local directory.
//!
//! [`S3Server`] wraps `s3s` (the S3 HTTP protocol layer, including SigV4
//! authentication) and `s3s-fs` (an S3 implementation that stores every object
//! as a plain file) and serves them with `hyper-util` on `127.0.0.1`. Each
//! subdirectory of the root directory is a bucket and each object `key` in
//! bucket `b` is the file `root/b/key`; `s3s-fs` keeps its sidecar files
//! (metadata, ETags, multipart parts) directly in `root`, never inside a bucket.
//!
//! The server runs on its own tokio runtime in a background thread, so it can
//! be used from plain synchronous tests as well as from async ones.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Access key id every [`S3Server`] accepts.
pub const ACCESS_KEY: &str = "weirtest";
/// Secret access key every [`S3Server`] accepts.
pub const SECRET_KEY: &str = "weirtestsecret";
/// Region clients should sign requests for.
pub const REGION: &str = "us-east-1";

/// How long [`S3Server::stop`] waits for in-flight blocking file operations
/// before abandoning them.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// An S3 server listening on `127.0.0.1`, serving a local directory.
///
/// Requests must be signed (SigV4) with [`ACCESS_KEY`] / [`SECRET_KEY`];
/// anonymous requests are rejected with `AccessDenied`. Only path-style
/// addressing (`http://127.0.0.1:PORT/bucket/key`) is supported.
///
/// Do not run two servers on the same root at the same time: `s3s-fs` names
/// its temporary files with a per-process counter and deletes leftovers from
/// `root` at startup.
///
/// Dropping the server stops it (see [`S3Server::stop`]).
#[derive(Debug)]
pub struct S3Server {
    root: PathBuf,
    bucket: String,
    port: u16,
    running: Option<Running>,
}

/// Handles to a live server: the shutdown trigger and the thread owning the runtime.
#[derive(Debug)]
struct Running {
    shutdown: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl S3Server {
    /// Starts a server on 127.0.0.1 with an OS-chosen port, serving the directory `root`
    /// (each subdirectory of root is a bucket). Creates `root/<bucket>`. Runs on its own
    /// dedicated tokio runtime in a background thread so it works from sync tests.
    /// Requires SigV4 auth with fixed test credentials ([`ACCESS_KEY`], [`SECRET_KEY`]).
    ///
    /// Returns once the port accepts connections.
    pub fn start(root: &Path, bucket: &str) -> io::Result<S3Server> {
        Self::start_on(root, bucket, 0)
    }

    /// Same as [`S3Server::start`], but binds to a specific port (used to restart a
    /// server on the same port). Port 0 means "let the OS choose".
    pub fn start_on(root: &Path, bucket: &str, port: u16) -> io::Result<S3Server> {
        validate_bucket(bucket)?;

        let bucket_dir = root.join(bucket);
        std::fs::create_dir_all(&bucket_dir).map_err(|e| {
            context(
                e,
                format!("cannot create bucket directory {}", bucket_dir.display()),
            )
        })?;
        let root = root
            .canonicalize()
            .map_err(|e| context(e, format!("cannot resolve root {}", root.display())))?;

        let fs = s3s_fs::FileSystem::new(&root).map_err(|e| {
            io::Error::other(format!("s3s-fs cannot serve {}: {e:?}", root.display()))
        })?;
        let service = build_service(fs);

        // Bind synchronously: once `bind` returns the socket is listening, so
        // connections are queued by the kernel even before the accept loop runs.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| context(e, format!("cannot listen on {addr}")))?;
        let port = std_listener
            .local_addr()
            .map_err(|e| context(e, "cannot read the listening address".to_owned()))?
            .port();
        std_listener
            .set_nonblocking(true)
            .map_err(|e| context(e, "cannot make the listener non-blocking".to_owned()))?;

        // The runtime is created, used and shut down only on the server thread,
        // so `start`/`stop` work from inside another runtime's async context.
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name(format!("weir-s3-{port}"))
            .spawn(move || {
                let (runtime, listener) = match runtime_with_listener(std_listener) {
                    Ok(ok) => ok,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                runtime.block_on(accept_loop(listener, service, shutdown_rx));
                // The accept loop returned, so the listener is closed. Shutting
                // the runtime down drops every connection task, which closes the
                // client sockets, mid-request if need be.
                runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
            })
            .map_err(|e| context(e, "cannot spawn the S3 server thread".to_owned()))?;

        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other("S3 server thread exited during startup"));
            }
        }

        tracing::debug!(port, root = %root.display(), bucket, "S3 test server started");

        Ok(S3Server {
            root,
            bucket: bucket.to_owned(),
            port,
            running: Some(Running {
                shutdown: shutdown_tx,
                thread,
            }),
        })
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", Ipv4Addr::LOCALHOST, self.port)
    }

    /// The TCP port the server listens (or listened) on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket created by [`S3Server::start`].
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The backing directory (canonicalized); objects are files under `root/bucket/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// OpenDAL S3 options for weir: `endpoint`, `region`, `access_key_id`,
    /// `secret_access_key`. The bucket is not included (see [`S3Server::bucket`]).
    pub fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("endpoint".to_owned(), self.endpoint()),
            ("region".to_owned(), REGION.to_owned()),
            ("access_key_id".to_owned(), ACCESS_KEY.to_owned()),
            ("secret_access_key".to_owned(), SECRET_KEY.to_owned()),
        ])
    }

    /// Whether the server is running (i.e. [`S3Server::stop`] has not been called).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops accepting and closes all connections, aborting in-flight requests.
    /// After this returns, connecting to the port fails (connection refused).
    /// Idempotent.
    ///
    /// Safe to call from inside an async context: the blocking shutdown happens
    /// on the server's own thread, this only waits for that thread to finish.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // An error only means the accept loop is already gone.
        let _ = running.shutdown.send(());
        if running.thread.join().is_err() {
            tracing::error!(port = self.port, "S3 test server thread panicked");
        }
        tracing::debug!(port = self.port, "S3 test server stopped");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the server runtime and registers `listener` with it.
fn runtime_with_listener(
    listener: std::net::TcpListener,
) -> io::Result<(tokio::runtime::Runtime, TcpListener)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("weir-s3-worker")
        .enable_all()
        .build()
        .map_err(|e| context(e, "cannot build the S3 server runtime".to_owned()))?;
    let listener = {
        let _guard = runtime.enter();
        TcpListener::from_std(listener)
            .map_err(|e| context(e, "cannot register the listener with tokio".to_owned()))?
    };
    Ok((runtime, listener))
}

/// Wraps `fs` in the S3 protocol layer with the fixed test credentials.
fn build_service(fs: s3s_fs::FileSystem) -> S3Service {
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    builder.build()
}

/// Accepts connections until `shutdown` fires (or its sender is dropped),
/// serving each one on its own task. Returning drops (closes) the listener.
async fn accept_loop(
    listener: TcpListener,
    service: S3Service,
    mut shutdown: oneshot::Receiver<()>,
) {
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                // Best effort: small S3 requests are latency-bound.
                let _ = socket.set_nodelay(true);
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "S3 connection ended with error: {e}");
                    }
                });
            }
            Err(e) => {
                // Typically EMFILE or a connection reset before accept; back off
                // briefly instead of spinning.
                tracing::warn!("S3 server accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Rejects bucket names the server would refuse to route: `s3s` applies the
/// AWS naming rules (3-63 chars of `a-z0-9.-`, ...) to every request.
fn validate_bucket(bucket: &str) -> io::Result<()> {
    if s3s::path::check_bucket_name(bucket) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid bucket name {bucket:?}: S3 requires 3-63 characters of a-z, 0-9, '.' and '-', \
                 starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Worker threads for the server runtime: enough for concurrent requests,
/// small enough that many servers in one test binary stay cheap.
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// Adds `what` to an I/O error's message, keeping its kind.
fn context(err: io::Error, what: String) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}
