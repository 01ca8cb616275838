//! A real etcd server on loopback for tests, stopped by PID when dropped.
//!
//! [`Etcd`] runs the system's `etcd` binary (Debian package `etcd-server`)
//! with a temporary data directory and two free loopback ports (client and
//! peer), and returns once it answers `/health`. A test can [`Etcd::stop`]
//! it and [`Etcd::start`] it again on the same ports and data, to play an
//! outage. The child is also asked to die with the thread that started it
//! (`PR_SET_PDEATHSIG`), so a test process killed by a timeout leaves no
//! etcd behind either.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where Debian's `etcd-server` installs the binary; `WEIR_ETCD` overrides it.
const DEFAULT_BINARY: &str = "/usr/bin/etcd";
/// How long etcd may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long etcd may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One etcd member on 127.0.0.1, with its own data directory.
#[derive(Debug)]
pub struct Etcd {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd on two free loopback ports with a fresh data directory,
    /// and returns once it is healthy.
    pub fn start_new() -> io::Result<Etcd> {
        let binary = std::env::var_os("WEIR_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not found: install the Debian package etcd-server (scripts/setup.sh does)",
                    binary.display()
                ),
            ));
        }
        let client_port = free_port()?;
        let mut peer_port = free_port()?;
        while peer_port == client_port {
            peer_port = free_port()?;
        }
        let mut etcd = Etcd {
            binary,
            dir: tempfile::Builder::new().prefix("weir-etcd").tempdir()?,
            client_port,
            peer_port,
            child: None,
        };
        etcd.start()?;
        Ok(etcd)
    }

    /// The client URL, such as `http://127.0.0.1:23791`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Whether the etcd process is running (it may still be starting).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The PID of the running etcd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts etcd again on the same ports and data directory (after
    /// [`Etcd::stop`]); does nothing if it is running.
    pub fn start(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log_path = self.dir.path().join("etcd.log");
        let log = File::options().create(true).append(true).open(&log_path)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn()?);
        match self.wait_healthy() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                Err(io::Error::other(format!(
                    "{e}; etcd log:\n{}",
                    log_tail(&log_path)
                )))
            }
        }
    }

    /// Stops etcd by PID: SIGTERM, then SIGKILL if it does not exit in time.
    /// The data directory is kept for [`Etcd::start`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
    }

    /// The data directory (kept across restarts, removed on drop).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        vec![
            "--name".into(),
            "weir-test".into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("weir-test={peer}"),
            "--log-level".into(),
            "warn".into(),
        ]
    }

    fn wait_healthy(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!("etcd exited at start: {status}")));
            }
            if health_ok(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd did not answer on {addr} within {START_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether etcd's `/health` endpoint on `addr` says it is healthy.
fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if conn.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.starts_with("HTTP/1.1 200") && body.contains("\"health\":\"true\"")
}

/// A loopback port that was free a moment ago. etcd binds it itself, so
/// another process could take it in between; that shows as a failed start.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The last lines of etcd's log, for a start failure.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts_on_the_same_port() {
        crate::timed(Duration::from_secs(60), || {
            let mut etcd = Etcd::start_new().unwrap();
            let pid = etcd.pid().unwrap();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, etcd.client_port));
            assert!(health_ok(addr));
            etcd.stop();
            assert!(!health_ok(addr), "stopped etcd still answers");
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "etcd {pid} outlived stop()"
            );
            etcd.start().unwrap();
            assert!(health_ok(addr));
            let pid = etcd.pid().unwrap();
            drop(etcd);
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "etcd {pid} outlived drop"
            );
        });
    }
}
