//! Crash survival of a standalone `weir mount`: the supervisor holds the
//! FUSE connection, and when the daemon dies or hangs a replacement takes
//! it over (layer 1) or, when none can, the mount is replaced (layer 2).
//! Each test kills only the daemons of its own mount, by PID.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Files the readers check, with their contents.
fn files(env: &Env, n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let name = format!("f{i}.bin");
            let data = pattern(size, i as u64 + 1);
            env.put(&name, &data);
            (name, data)
        })
        .collect()
}

/// Waits until a daemon other than `old` serves the mount.
fn wait_for_replacement(guard: &MountGuard, old: i32, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = guard.pid()
            && pid != old
            && std::fs::metadata(guard.path()).is_ok()
        {
            return pid;
        }
        assert!(
            start.elapsed() < limit,
            "no replacement daemon within {limit:?}; log: {}",
            guard.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the reader threads saw.
#[derive(Debug, Default)]
struct Seen {
    calls: AtomicU64,
    failures: AtomicU64,
    slowest_us: AtomicU64,
}

impl Seen {
    fn record(&self, took: Duration, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.slowest_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Reads every file through new opens, and through descriptors opened
/// before the first kill, until `stop`; every call timed and checked.
fn reader(
    mnt: PathBuf,
    files: Arc<Vec<(String, Vec<u8>)>>,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    latencies: Arc<samples::Samples>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut errors = Vec::new();
        let held: Vec<std::fs::File> = files
            .iter()
            .map(|(n, _)| std::fs::File::open(mnt.join(n)).expect("open before the kills"))
            .collect();
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for (i, (name, data)) in files.iter().enumerate() {
                let t = Instant::now();
                let fresh = std::fs::read(mnt.join(name));
                let ok = matches!(&fresh, Ok(d) if d == data);
                seen.record(t.elapsed(), ok);
                latencies.push(t.elapsed());
                if !ok {
                    errors.push(format!("read {name}: {:?}", fresh.map(|d| d.len())));
                }
                let off = (round * 65_537 + i as u64 * 4096) % (data.len() as u64 - 4096);
                let mut buf = vec![0u8; 4096];
                let t = Instant::now();
                let r = held[i].read_exact_at(&mut buf, off);
                let ok = r.is_ok() && buf[..] == data[off as usize..off as usize + 4096];
                seen.record(t.elapsed(), ok);
                if !ok {
                    errors.push(format!("pread {name}@{off}: {r:?}"));
                }
            }
            round += 1;
        }
        errors
    })
}

/// Call latencies, for the p50 the note reports.
mod samples {
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Debug, Default)]
    pub struct Samples(Mutex<Vec<Duration>>);

    impl Samples {
        pub fn push(&self, d: Duration) {
            self.0.lock().unwrap().push(d);
        }

        pub fn percentile(&self, p: f64) -> Duration {
            let mut v = self.0.lock().unwrap().clone();
            v.sort();
            v.get(((v.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or_default()
        }
    }
}

/// The pauses the supervisor logged, in milliseconds.
fn logged_pauses(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("FUSE daemon replaced"))
        .filter_map(|l| l.split("pause_ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

fn twenty_kills_while_reading(backend: Backend) {
    let env = Env::new(backend);
    let files = Arc::new(files(&env, 4, 3 << 20));
    let guard = env.mount(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let latencies = Arc::new(samples::Samples::default());
    let readers: Vec<_> = (0..2)
        .map(|_| {
            reader(
                env.mnt.clone(),
                files.clone(),
                stop.clone(),
                seen.clone(),
                latencies.clone(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut pid = guard.pid().expect("daemon pid");
    for _ in 0..20 {
        signal(pid, libc::SIGKILL);
        pid = wait_for_replacement(&guard, pid, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = timed(LIMIT, move || {
        readers
            .into_iter()
            .flat_map(|r| r.join().expect("reader thread"))
            .collect()
    });
    // The supervisor logs each takeover just after it records the PID.
    let _ = eventually(Duration::from_secs(10), || {
        logged_pauses(&guard.log()).len() >= 20
    });
    let pauses = logged_pauses(&guard.log());
    let mut sorted = pauses.clone();
    sorted.sort();
    eprintln!(
        "{backend:?}: {} calls, {} failed; call p50 {:?}, slowest {} ms; daemon replaced {} times, pause p50 {} ms, max {} ms",
        seen.calls.load(Ordering::Relaxed),
        seen.failures.load(Ordering::Relaxed),
        latencies.percentile(0.5),
        seen.slowest_us.load(Ordering::Relaxed) / 1000,
        pauses.len(),
        sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0),
    );
    assert!(
        errors.is_empty(),
        "{} failed calls: {errors:?}",
        errors.len()
    );
    assert_eq!(pauses.len(), 20, "every kill was followed by a takeover");
    assert!(seen.calls.load(Ordering::Relaxed) > 100, "the readers read");
}

#[test]
fn twenty_kills_while_reading_local_files_fail_no_call() {
    twenty_kills_while_reading(Backend::File);
}

#[test]
fn twenty_kills_while_reading_from_s3_fail_no_call() {
    twenty_kills_while_reading(Backend::S3);
}

#[test]
fn a_stopped_daemon_is_detected_and_replaced() {
    let env = Env::new(Backend::File);
    let data = pattern(1 << 20, 9);
    env.put("f", &data);
    let guard = env.mount(&[
        "--set",
        "fuse.probe_interval=200ms",
        "--set",
        // Also the replacement's first probe: a daemon still starting on a
        // loaded machine must not be taken for hung as well.
        "fuse.probe_timeout=2s",
    ]);
    let pid = guard.pid().expect("daemon pid");
    let mut held = std::fs::File::open(env.mnt.join("f")).unwrap();
    stop(pid);
    let stopped = Instant::now();
    let mnt = env.mnt.clone();
    let expected = data.clone();
    // This read reaches the stopped daemon and waits; the replacement gets
    // it resent and answers.
    let got = timed(LIMIT, move || std::fs::read(mnt.join("f")).unwrap());
    let waited = stopped.elapsed();
    assert!(got == expected);
    let new = wait_for_replacement(&guard, pid, Duration::from_secs(10));
    assert_ne!(new, pid);
    let mut back = Vec::new();
    held.seek(SeekFrom::Start(0)).unwrap();
    held.read_to_end(&mut back).unwrap();
    assert!(back == data, "a descriptor opened before the hang reads on");
    eprintln!("a read blocked by a stopped daemon came back after {waited:?}");
    assert!(
        waited < Duration::from_secs(15),
        "replaced only after {waited:?}"
    );
    assert!(!alive(pid), "the stopped daemon was killed");
}

/// Processes whose parent is `ppid`, and which of them are zombies.
fn children_of(ppid: i32) -> (Vec<i32>, Vec<i32>) {
    let kids = weir_testkit::process::children(ppid);
    let zombies = kids.iter().filter(|k| k.1 == 'Z').map(|k| k.0).collect();
    (kids.into_iter().map(|k| k.0).collect(), zombies)
}

fn mounts_at(path: &Path) -> usize {
    let canon = path.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == canon))
        .count()
}

#[test]
fn a_hundred_kills_leave_one_mount_and_no_zombie() {
    let env = Env::new(Backend::File);
    env.put("f", b"still here");
    let guard = env.mount(&[]);
    let supervisor = guard.supervisor_pid().expect("supervisor pid");
    let mut pid = guard.pid().expect("daemon pid");
    let start = Instant::now();
    for _ in 0..100 {
        signal(pid, libc::SIGKILL);
        pid = wait_for_replacement(&guard, pid, Duration::from_secs(20));
    }
    eprintln!("100 kill/takeover cycles in {:?}", start.elapsed());
    assert_eq!(std::fs::read(env.mnt.join("f")).unwrap(), b"still here");
    assert_eq!(mounts_at(&env.mnt), 1, "one mount, never stacked");
    let (children, zombies) = children_of(supervisor);
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    assert_eq!(children, vec![pid], "one daemon, the current one");
    drop(guard);
    assert!(!alive(pid) && !alive(supervisor), "all stopped");
    assert_eq!(mounts_at(&env.mnt), 0);
}

#[test]
fn without_a_journal_the_supervisor_remounts() {
    let env = Env::new(Backend::File);
    env.put("f", b"data");
    let fusectl_before = fusectl_mounts();
    let guard = env.mount(&[]);
    let held = std::fs::File::open(env.mnt.join("f")).unwrap();
    let pid = guard.pid().expect("daemon pid");
    std::fs::remove_file(env.cache.join("session/journal")).unwrap();
    let killed = Instant::now();
    signal(pid, libc::SIGKILL);
    let new = wait_for_replacement(&guard, pid, Duration::from_secs(20));
    let mnt = env.mnt.clone();
    let fresh = timed(LIMIT, move || std::fs::read(mnt.join("f")));
    eprintln!("remounted in {:?}", killed.elapsed());
    assert_eq!(fresh.unwrap(), b"data", "new opens work on the fresh mount");
    let mut buf = [0u8; 4];
    let old = held.read_at(&mut buf, 0);
    let old_errno = old.as_ref().map_err(errno).err();
    eprintln!("a descriptor of the old mount: {old:?}");
    assert_eq!(
        old_errno,
        Some(libc::ENOTCONN),
        "a descriptor of the old mount fails"
    );
    assert_eq!(mounts_at(&env.mnt), 1, "the stale mount is gone");
    assert_ne!(new, pid);
    // The supervisor records the new PID before it logs the remount.
    let logged = eventually(Duration::from_secs(10), || {
        let log = guard.log();
        log.contains("FUSE mount replaced by a fresh one")
            && log.contains("aborted the FUSE connection")
    });
    assert!(logged.is_some(), "{}", guard.log());
    // The abort reached fusectl without leaving a mount of it behind (a
    // concurrent test's abort may hold one for a moment).
    let restored = eventually(Duration::from_secs(5), || {
        fusectl_mounts() == fusectl_before
    });
    assert!(
        restored.is_some(),
        "fusectl left mounted: {:?}",
        fusectl_mounts()
    );
}

/// Mount points of the FUSE control filesystem, wherever they are.
fn fusectl_mounts() -> Vec<PathBuf> {
    weir_fuse::mount::mounts()
        .unwrap()
        .into_iter()
        .filter(|m| m.fs_type == "fusectl")
        .map(|m| m.mount_point)
        .collect()
}
