//! The client side, for `weir fs` and the supervisor: finding a daemon's
//! socket and asking it one request at a time. Blocking: the callers are a
//! command line and a metrics scrape on a blocking thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::AdminError;
use crate::protocol::{MAX_LINE, Request, Response};
use crate::registry;

/// The socket's name in a daemon's cache directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// A connection factory for one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: Duration::from_secs(600),
        }
    }

    /// The same client, waiting at most `timeout` for an answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` and returns the answer; a refusal is
    /// [`AdminError::Reply`].
    pub fn call(&self, req: &Request) -> Result<Response, AdminError> {
        let connect = |source| AdminError::Connect {
            socket: self.socket.clone(),
            source,
        };
        let protocol = |reason: String| AdminError::Protocol {
            socket: self.socket.clone(),
            reason,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(connect)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| protocol(e.to_string()))?;
        let mut line = serde_json::to_vec(req).map_err(|e| protocol(e.to_string()))?;
        line.push(b'\n');
        stream
            .write_all(&line)
            .map_err(|e| protocol(format!("did not take the request: {e}")))?;
        let mut answer = String::new();
        let read = BufReader::new(stream.take(MAX_LINE as u64)).read_line(&mut answer);
        match read {
            Ok(0) => return Err(protocol("closed the connection without answering".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(protocol(format!(
                    "did not answer within {:?}",
                    self.timeout
                )));
            }
            Err(e) => return Err(protocol(format!("answer cut short: {e}"))),
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Error(e)) => Err(AdminError::Reply(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(protocol(format!(
                "answered something weir does not understand: {e}"
            ))),
        }
    }
}

/// Finds the daemon to talk to: the one with cache directory `cache_dir`,
/// or the one serving `mount`, or, given neither, the only one running.
pub fn find_daemon(mount: Option<&Path>, cache_dir: Option<&Path>) -> Result<Client, AdminError> {
    if let Some(dir) = cache_dir {
        let socket = dir.join(SOCKET_NAME);
        if !socket.exists() {
            return Err(AdminError::NoDaemon(format!(
                "no weir daemon runs with cache dir {} (no {})",
                dir.display(),
                socket.display()
            )));
        }
        return Ok(Client::new(socket));
    }
    if let Some(m) = mount {
        let m = registry::mount_path(m);
        return match registry::lookup(&m) {
            Some(reg) => Ok(Client::new(reg.socket)),
            None => Err(AdminError::NoDaemon(format!(
                "no weir daemon is registered for {} in {} (is it mounted with weir mount?)",
                m.display(),
                registry::run_dir().display()
            ))),
        };
    }
    let live = registry::all_live();
    match live.as_slice() {
        [one] => Ok(Client::new(one.socket.clone())),
        [] => Err(AdminError::NoDaemon(format!(
            "no weir daemon is running (none registered in {}); start one with weir mount, or name one with --mount MOUNTPOINT or --cache-dir DIR",
            registry::run_dir().display()
        ))),
        many => Err(AdminError::NoDaemon(format!(
            "{} weir mounts are running ({}); choose one with --mount MOUNTPOINT",
            many.len(),
            many.iter()
                .map(|r| r.mountpoint.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
