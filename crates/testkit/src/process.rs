//! Signals to processes a test started, and waiting for their effect.
//!
//! kill(2) returns before a signal has done anything: a SIGSTOP stops a
//! process only once one of its threads has run and begun the group stop,
//! and until then its other threads keep answering FUSE requests. A test
//! that means "the daemon is stopped" must wait for the kernel to say so.

use std::time::{Duration, Instant};

/// Sends `sig` to `pid`, a process the calling test started; panics if the
/// process is gone, since the test would then check nothing.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; the caller owns `pid`.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Stops `pid` with SIGSTOP and returns once every one of its threads is
/// stopped, so that none can still answer a request.
pub fn stop(pid: i32) {
    signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_threads_stopped(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} did not stop within 10 s of SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether every thread of `pid` is in state T (stopped) or t (traced).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
            // The state follows the command name, which may hold spaces
            // and parentheses; the last ')' ends it.
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with(['T', 't']))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_waits_for_the_stop_and_cont_resumes() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        stop(pid);
        assert!(all_threads_stopped(pid));
        signal(pid, libc::SIGCONT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "SIGCONT did not resume");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
