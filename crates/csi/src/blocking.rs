//! Work that may block on a FUSE mount, run on its own thread under a
//! deadline. A thread stuck on a hung mount is abandoned, never waited
//! for; what it produces later is dropped, so an action that timed out is
//! never carried out afterwards.

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a new thread and waits at most `timeout` for its result.
/// `None`: it did not finish in time (or could not be started).
pub fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if spawned.is_err() {
        return None;
    }
    rx.recv_timeout(timeout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_call_times_out_and_a_fast_one_returns() {
        assert_eq!(with_timeout(Duration::from_secs(5), "t", || 7), Some(7));
        let slow = with_timeout(Duration::from_millis(50), "t", || {
            std::thread::sleep(Duration::from_secs(2));
            7
        });
        assert_eq!(slow, None);
    }
}
