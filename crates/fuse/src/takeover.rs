//! Starting fuser on a FUSE connection held by a supervisor, including one
//! whose previous daemon died.
//!
//! fuser's `Session::from_fd` always runs the INIT handshake, but a
//! connection that an earlier daemon initialised will never send INIT again.
//! So fuser is started on one end of a socketpair: we write an INIT into the
//! other end (the kernel's own, read from `/dev/fuse` on a fresh connection,
//! or the copy saved then, on a takeover), read fuser's reply back, and only
//! then `dup2` the real `/dev/fuse` descriptor over fuser's end. On a fresh
//! connection the reply is forwarded to the kernel; on a takeover it is
//! dropped (the kernel keeps the options it negotiated) and the kernel is
//! asked, with `FUSE_NOTIFY_RESEND`, to send again every request the dead
//! daemon had read but not answered.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

/// `FUSE_INIT` in `fuse_in_header.opcode`.
const FUSE_INIT: u32 = 26;
/// `FUSE_NOTIFY_RESEND` (kernel 6.9 and later).
const FUSE_NOTIFY_RESEND: i32 = 7;
/// `sizeof(struct fuse_in_header)`.
const IN_HEADER_LEN: usize = 40;
/// The kernel refuses reads of `/dev/fuse` into smaller buffers.
const MIN_READ_BUFFER: usize = 8192;

/// How the connection's INIT is handled.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// A connection just mounted: its INIT is waiting on the descriptor.
    /// It is saved to `init_file` for later takeovers.
    Fresh {
        /// Where the raw INIT request is kept.
        init_file: PathBuf,
    },
    /// A live connection whose daemon died: replay the INIT saved in
    /// `init_file`, then ask the kernel to resend requests in flight.
    Takeover {
        /// Where the raw INIT request was kept.
        init_file: PathBuf,
    },
}

/// What the kernel said to `FUSE_NOTIFY_RESEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Not a takeover: nothing to resend.
    NotNeeded,
    /// Requests in flight at the crash will come again.
    Sent,
    /// The kernel predates RESEND (before 6.9): a request the dead daemon
    /// had read stays unanswered until its caller gives up.
    Unsupported,
}

/// Starts a fuser session for `fs` on the FUSE descriptor `dev`.
pub(crate) fn start<FS: fuser::Filesystem>(
    fs: FS,
    dev: OwnedFd,
    handshake: &Handshake,
    acl: fuser::SessionACL,
    config: fuser::Config,
) -> io::Result<(fuser::Session<FS>, Resend)> {
    let init = match handshake {
        Handshake::Fresh { init_file } => {
            let init = read_init(dev.as_fd())?;
            save(init_file, &init)?;
            init
        }
        Handshake::Takeover { init_file } => load(init_file)?,
    };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let theirs_raw = theirs.as_raw_fd();
    write_all(ours.as_fd(), &init)?;
    let session = fuser::Session::from_fd(fs, theirs, acl, config)?;
    let mut reply = vec![0u8; 4096];
    let n = nix::unistd::read(&ours, &mut reply).map_err(io::Error::from)?;
    if matches!(handshake, Handshake::Fresh { .. }) {
        write_all(dev.as_fd(), &reply[..n])?;
    }
    // From here on fuser's descriptor number is the connection itself.
    // SAFETY: both descriptors are open and ours; dup3 keeps close-on-exec.
    if unsafe { libc::dup3(dev.as_raw_fd(), theirs_raw, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(dev);
    let resend = match handshake {
        Handshake::Fresh { .. } => Resend::NotNeeded,
        // SAFETY: theirs_raw is open for as long as the session lives.
        Handshake::Takeover { .. } => send_resend(unsafe { BorrowedFd::borrow_raw(theirs_raw) })?,
    };
    Ok((session, resend))
}

/// The kernel's first message on a new connection.
fn read_init(dev: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MIN_READ_BUFFER.max(64 * 1024)];
    let n = loop {
        match nix::unistd::read(dev, &mut buf) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("reading FUSE INIT: {e}"),
                ));
            }
        }
    };
    buf.truncate(n);
    check_init(&buf)?;
    Ok(buf)
}

fn check_init(msg: &[u8]) -> io::Result<()> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if msg.len() < IN_HEADER_LEN {
        return Err(bad(format!(
            "a FUSE INIT of {} bytes is too short",
            msg.len()
        )));
    }
    let len = u32::from_ne_bytes(msg[0..4].try_into().expect("4 bytes")) as usize;
    let opcode = u32::from_ne_bytes(msg[4..8].try_into().expect("4 bytes"));
    if opcode != FUSE_INIT {
        return Err(bad(format!("expected FUSE INIT (26), got opcode {opcode}")));
    }
    if len != msg.len() {
        return Err(bad(format!(
            "FUSE INIT says {len} bytes but holds {}",
            msg.len()
        )));
    }
    Ok(())
}

fn save(path: &Path, data: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn load(path: &Path) -> io::Result<Vec<u8>> {
    let init = std::fs::read(path).map_err(|e| {
        io::Error::new(e.kind(), format!("saved FUSE INIT {}: {e}", path.display()))
    })?;
    check_init(&init)?;
    Ok(init)
}

fn write_all(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    let n = nix::unistd::write(fd, data).map_err(io::Error::from)?;
    if n != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write of {n} of {} bytes", data.len()),
        ));
    }
    Ok(())
}

/// One `fuse_out_header` with no unique and the notify code as its error.
fn send_resend(dev: BorrowedFd<'_>) -> io::Result<Resend> {
    let mut msg = [0u8; 16];
    msg[0..4].copy_from_slice(&16u32.to_ne_bytes());
    msg[4..8].copy_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    match nix::unistd::write(dev, &msg) {
        Ok(16) => Ok(Resend::Sent),
        Ok(n) => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short FUSE_NOTIFY_RESEND write ({n} bytes)"),
        )),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => Ok(Resend::Unsupported),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_msg(opcode: u32, extra: usize) -> Vec<u8> {
        let len = IN_HEADER_LEN + extra;
        let mut m = vec![0u8; len];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..8].copy_from_slice(&opcode.to_ne_bytes());
        m
    }

    #[test]
    fn only_a_whole_init_is_accepted() {
        assert!(check_init(&init_msg(FUSE_INIT, 64)).is_ok());
        assert!(check_init(&init_msg(1, 64)).is_err(), "a LOOKUP is no INIT");
        assert!(check_init(&init_msg(FUSE_INIT, 64)[..50]).is_err(), "torn");
        assert!(check_init(&[0u8; 8]).is_err());
    }

    #[test]
    fn a_saved_init_loads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/init");
        let m = init_msg(FUSE_INIT, 64);
        save(&f, &m).unwrap();
        assert_eq!(load(&f).unwrap(), m);
        std::fs::write(&f, &m[..30]).unwrap();
        assert_eq!(load(&f).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            load(&dir.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
