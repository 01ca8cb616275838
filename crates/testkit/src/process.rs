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

/// The state letter (`R`, `S`, `T`, `Z`, ...) and the parent PID from the
/// text of a `/proc/.../stat` file.
fn parse_stat(text: &str) -> Option<(char, i32)> {
    // They follow the command name, which may hold spaces and parentheses;
    // the last ')' ends it.
    let mut fields = text.rsplit(')').next()?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The state letter and parent PID of the process or thread whose stat
/// file is `path`; `None` once it is gone.
fn stat_at(path: &std::path::Path) -> Option<(char, i32)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// Whether `pid` exists and is not a zombie (a zombie still answers
/// kill(2), so that cannot tell).
pub fn alive(pid: i32) -> bool {
    stat_at(format!("/proc/{pid}/stat").as_ref()).is_some_and(|(state, _)| state != 'Z')
}

/// The processes whose parent is `ppid`, each with its state letter.
pub fn children(ppid: i32) -> Vec<(i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (state, parent) = stat_at(format!("/proc/{pid}/stat").as_ref())?;
            (parent == ppid).then_some((pid, state))
        })
        .collect()
}

/// Whether every thread of `pid` is in state T (stopped) or t (traced).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        stat_at(&t.path().join("stat")).is_some_and(|(state, _)| matches!(state, 'T' | 't'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("42 (we ir) S 7 42 42 0"), Some(('S', 7)));
        assert_eq!(parse_stat("42 (a) b) Z 1 0"), Some(('Z', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn children_and_liveness_follow_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(alive(pid));
        let me = std::process::id() as i32;
        assert!(children(me).iter().any(|&(p, _)| p == pid));
        child.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !children(me).contains(&(pid, 'Z')) {
            assert!(Instant::now() < deadline, "the killed child is no zombie");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!alive(pid), "a zombie is not alive");
        child.wait().unwrap();
        assert!(!alive(pid));
    }

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
