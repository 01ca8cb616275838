//! `weir fs` against real standalone mounts: `load` really fills the cache
//! (afterwards `check-cached` says 100% and the files read byte-identical
//! with the S3 server stopped), the metrics endpoint's counters move as
//! reads happen, `doctor` gives a verdict, a takeover keeps a table changed
//! with `weir fs mount`, and bad input gives one clear line and a non-zero
//! exit.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Fetches the metrics endpoint on `port` over plain HTTP.
fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name && labels.iter().all(|x| series.contains(x)))
                .then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn load_fills_the_cache_and_reads_survive_a_stopped_s3() {
    timed(LIMIT, || {
        let mut env = Env::new(Backend::S3);
        let files: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| {
                (
                    format!("train/part-{i}"),
                    pattern(1_500_000 + i * 1000, i as u64),
                )
            })
            .chain([("train/small/label.txt".to_string(), b"cat\n".to_vec())])
            .collect();
        for (rel, data) in &files {
            env.put(rel, data);
        }
        let m = env.mount(&[]);
        let before = weir_fs_ok(&env.cache, &["check-cached", "/train"]);
        assert!(before.contains("total: 0.0% cached"), "{before}");

        let load = weir_fs(&env.cache, &["load", "/train", "--parallel", "3"]);
        assert!(load.ok, "{load:?}");
        eprintln!(
            "weir fs load stderr:\n{}stdout:\n{}",
            load.stderr, load.stdout
        );
        assert!(
            load.stdout
                .contains("loaded /train: 7 files (7 loaded, 0 already cached, 0 failed)"),
            "{load:?}"
        );
        // Without a terminal, progress comes as lines on stderr.
        assert!(
            load.stderr.contains("load /train: done, 7/7 files"),
            "{load:?}"
        );

        let after = weir_fs_ok(&env.cache, &["check-cached", "/train"]);
        assert!(after.contains("total: 100.0% cached"), "{after}");
        assert_eq!(
            after.lines().filter(|l| l.contains("100.0%")).count(),
            8,
            "{after}"
        );

        // A second run resumes: nothing left to fetch.
        let again = weir_fs_ok(&env.cache, &["load", "/train"]);
        assert!(again.contains("7 already cached"), "{again}");
        assert!(again.contains("0 B fetched"), "{again}");

        env.s3.as_mut().expect("s3").stop();
        for (rel, data) in &files {
            let got = std::fs::read(m.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert!(got == *data, "{rel} differs with S3 stopped");
        }
        let dropped = weir_fs_ok(&env.cache, &["drop-cache", "/train/part-0"]);
        assert!(dropped.contains("from 1 files"), "{dropped}");
        let now = weir_fs_ok(&env.cache, &["check-cached", "/train/part-0"]);
        assert!(now.contains("total: 0.0% cached"), "{now}");
        drop(m);
    });
}

/// Runs `weir fs load` as a child, sends it SIGINT once it shows progress,
/// and returns its exit code, stdout and stderr.
fn load_interrupted(cache: &Path, path: &str) -> (Option<i32>, String, String) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = Command::new(weir())
        .args(["fs", "--cache-dir"])
        .arg(cache)
        .args(["load", path, "--parallel", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir fs load");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            // Interrupt once some files are loaded, not while the tree is
            // still being scanned: a cancel then has work done and left.
            if loaded_some(&line) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let started = rx.recv_timeout(Duration::from_secs(30));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if started.is_ok() {
        nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).expect("SIGINT to our child");
    }
    let status = wait_or_kill(&mut child, Duration::from_secs(30)).expect("wait");
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    let stderr = lines.join().unwrap_or_default();
    assert!(started.is_ok(), "weir fs load showed no progress: {stderr}");
    let status = status.unwrap_or_else(|| panic!("weir fs load ignored SIGINT: {stderr}"));
    (status.code(), stdout, stderr)
}

/// Whether a progress line of `weir fs load` shows at least one file done
/// (`load /ds: running, 5/1500 files, ...`).
fn loaded_some(line: &str) -> bool {
    line.split_once(": running, ")
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(done, _)| done.parse::<u64>().ok())
        .is_some_and(|done| done > 0)
}

fn cached_total(cache: &Path, path: &str) -> String {
    let out = weir_fs_ok(cache, &["check-cached", path]);
    out.lines()
        .find(|l| l.starts_with("total:"))
        .unwrap_or_else(|| panic!("no total in {out}"))
        .to_string()
}

#[test]
fn ctrl_c_cancels_a_load_and_the_next_run_resumes() {
    timed(LIMIT, || {
        let env = Env::new(Backend::S3);
        // Many files, loaded one at a time: seconds of work, so the
        // interrupt lands while most of it is still to do.
        const FILES: usize = 1500;
        for i in 0..FILES {
            env.put(
                &format!("ds/{:02}/f{i}", i % 20),
                &pattern(64 << 10, i as u64),
            );
        }
        let m = env.mount(&[]);
        let (code, stdout, stderr) = load_interrupted(&env.cache, "/ds");
        eprintln!("interrupted weir fs load, stderr:\n{stderr}stdout:\n{stdout}");
        assert_eq!(code, Some(130), "stdout: {stdout}\nstderr: {stderr}");
        assert!(stderr.contains("load cancelled"), "{stderr}");
        assert!(stdout.contains("cancelled loading /ds"), "{stdout}");
        // The daemon stopped too: what is cached no longer grows.
        let first = cached_total(&env.cache, "/ds");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(cached_total(&env.cache, "/ds"), first, "the job went on");
        assert!(
            !first.contains("100.0%"),
            "nothing was left to cancel: {first}"
        );

        // The same command again finishes the job, skipping what is cached.
        let again = weir_fs(&env.cache, &["load", "/ds", "--parallel", "4"]);
        eprintln!("resumed: {}", again.stdout);
        assert!(again.ok, "{again:?}");
        assert!(
            again.stdout.contains(&format!("loaded /ds: {FILES} files")),
            "{again:?}"
        );
        assert!(!again.stdout.contains(" 0 already cached,"), "{again:?}");
        assert!(cached_total(&env.cache, "/ds").contains("100.0%"));
        drop(m);
    });
}

#[test]
fn metrics_move_with_reads_and_doctor_gives_a_verdict() {
    timed(LIMIT, || {
        let env = Env::new(Backend::File);
        env.put("a.bin", &pattern(3 << 20, 1));
        env.put("b.bin", &pattern(2 << 20, 2));
        let port = free_port();
        let addr = format!("metrics.addr=127.0.0.1:{port}");
        // Passthrough would let the kernel read cached files without asking.
        let m = env.mount(&["--set", &addr, "--set", "fuse.passthrough=false"]);
        let t0 = scrape(port);
        assert_eq!(value(&t0, "weir_sessions", &[]), 1.0, "{t0}");
        // The daemon's part of the scrape: counters exist from the start.
        assert!(t0.contains("weir_fuse_requests_total"), "{t0}");

        // A cold read: FUSE reads, cache misses and UFS reads.
        assert_eq!(std::fs::read(m.join("a.bin")).unwrap(), pattern(3 << 20, 1));
        let t1 = scrape(port);
        let fuse_reads = |t: &str| value(t, "weir_fuse_requests_total", &["op=\"read\""]);
        let ufs_reads = |t: &str| value(t, "weir_ufs_requests_total", &["op=\"read\""]);
        let hits = |t: &str| value(t, "weir_cache_hits_total", &[]);
        let misses = |t: &str| value(t, "weir_cache_misses_total", &[]);
        assert!(fuse_reads(&t1) > fuse_reads(&t0), "no FUSE reads counted");
        assert!(ufs_reads(&t1) > ufs_reads(&t0), "no UFS reads counted");
        assert!(misses(&t1) > misses(&t0), "no cache misses counted");
        assert!(value(&t1, "weir_ufs_bytes_total", &["op=\"read\""]) >= (3 << 20) as f64);

        // Loaded first, then read: hits, and not one more UFS read.
        weir_fs_ok(&env.cache, &["load", "/b.bin"]);
        let t2 = scrape(port);
        assert_eq!(std::fs::read(m.join("b.bin")).unwrap(), pattern(2 << 20, 2));
        let t3 = scrape(port);
        assert!(
            hits(&t3) >= hits(&t2) + 2.0,
            "hits {} -> {}",
            hits(&t2),
            hits(&t3)
        );
        assert!(fuse_reads(&t3) > fuse_reads(&t2));
        assert_eq!(
            ufs_reads(&t3),
            ufs_reads(&t2),
            "a cached file went to the UFS"
        );
        let hist = "weir_fuse_request_duration_seconds_count";
        assert!(value(&t3, hist, &["op=\"read\""]) > 0.0, "{t3}");

        // doctor: two samples, findings and a verdict.
        let mnt = m.path().to_path_buf();
        let reader = std::thread::spawn(move || {
            for _ in 0..20 {
                let _ = std::fs::read(mnt.join("a.bin"));
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let doc = weir_fs(&env.cache, &["doctor", "--interval", "1s"]);
        reader.join().unwrap();
        eprintln!("doctor:\n{}", doc.stdout);
        assert!(doc.ok, "{doc:?}");
        for want in ["FUSE CPU", "cache hit ratio", "storage (UFS)", "verdict:"] {
            assert!(doc.stdout.contains(want), "{want} missing: {doc:?}");
        }
        // --json: the same findings, as fields a script can test.
        let doc = weir_fs(&env.cache, &["doctor", "--interval", "200ms", "--json"]);
        assert!(doc.ok, "{doc:?}");
        let v: serde_json::Value = serde_json::from_str(&doc.stdout).expect("doctor --json");
        let findings = v["report"]["findings"].as_array().expect("findings");
        let areas: Vec<&str> = findings.iter().filter_map(|f| f["area"].as_str()).collect();
        assert!(areas.contains(&"cache hit ratio"), "{areas:?}");
        for f in findings {
            let level = f["level"].as_str().unwrap_or_default();
            assert!(["ok", "note", "bottleneck"].contains(&level), "{f}");
            assert!(f["observed"].is_string(), "{f}");
        }
        assert!(v["report"]["interval_secs"].as_f64().unwrap() >= 0.2, "{v}");
        assert!(
            v["bottleneck"].is_null() || v["bottleneck"].is_string(),
            "{v}"
        );
        assert!(v["text"].as_str().unwrap().contains("verdict:"), "{v}");
        drop(m);
    });
}

#[test]
fn a_takeover_keeps_a_table_changed_with_weir_fs() {
    timed(LIMIT, || {
        let env = Env::new(Backend::File);
        env.put("root.txt", b"root");
        let extra = env.tmp.path().join("extra");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("e.txt"), b"extra").unwrap();
        let m = env.mount(&[]);
        let out = weir_fs_ok(
            &env.cache,
            &["mount", "/extra", &format!("file://{}", extra.display())],
        );
        assert!(out.contains("mounted /extra"), "{out}");
        assert_eq!(std::fs::read(m.join("extra/e.txt")).unwrap(), b"extra");
        // --mount finds the daemon through the registry.
        let mut cmd = Command::new(weir());
        cmd.args(["fs", "mounts", "--mount"]).arg(m.path());
        let listed = fs_output(&mut cmd);
        assert!(listed.ok && listed.stdout.contains("/extra"), "{listed:?}");

        let old = m.pid().expect("daemon pid");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), nix::sys::signal::SIGKILL).unwrap();
        eventually(Duration::from_secs(30), || {
            m.pid().is_some_and(|p| p != old)
        })
        .expect("no replacement daemon");
        assert_eq!(std::fs::read(m.join("extra/e.txt")).unwrap(), b"extra");
        eventually(Duration::from_secs(10), || {
            weir_fs(&env.cache, &["mounts"]).stdout.contains("/extra")
        })
        .expect("the replacement does not serve /extra");
        drop(m);
    });
}

fn assert_one_line_error(out: &FsOut, needle: &str) {
    assert!(!out.ok, "expected failure: {out:?}");
    assert_eq!(out.code, Some(1), "{out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line: {out:?}");
    assert!(lines[0].starts_with("weir: error: "), "{out:?}");
    assert!(lines[0].contains(needle), "{needle:?} not in {out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[test]
fn bad_input_gives_one_clear_line() {
    timed(LIMIT, || {
        let empty = tempfile::tempdir().unwrap();
        // No daemon at all.
        let mut cmd = Command::new(weir());
        cmd.args(["fs", "ls", "/"])
            .env("WEIR_RUN_DIR", empty.path());
        assert_one_line_error(&fs_output(&mut cmd), "no weir daemon is running");
        assert_one_line_error(
            &weir_fs(empty.path(), &["mounts"]),
            "no weir daemon runs with cache dir",
        );
        let mut cmd = Command::new(weir());
        cmd.args(["fs", "stat", "/", "--mount"])
            .arg(empty.path().join("nowhere"));
        assert_one_line_error(&fs_output(&mut cmd), "no weir daemon is registered");

        let env = Env::new(Backend::File);
        env.put("file", b"x");
        let m = env.mount(&[]);
        let c = &env.cache;
        assert_one_line_error(&weir_fs(c, &["stat", "/nope"]), "/nope: not found");
        assert_one_line_error(&weir_fs(c, &["ls", "relative"]), "absolute namespace path");
        assert_one_line_error(&weir_fs(c, &["ls", "/file/below"]), "Not a directory");
        assert_one_line_error(&weir_fs(c, &["load", "/nope"]), "not found");
        assert_one_line_error(&weir_fs(c, &["check-cached", "/nope"]), "not found");
        assert_one_line_error(&weir_fs(c, &["mount", "/x", "nope://y"]), "unknown scheme");
        assert_one_line_error(
            &weir_fs(c, &["mount", "/x", "file:///tmp", "--option", "novalue"]),
            "KEY=VALUE",
        );
        assert_one_line_error(
            &weir_fs(c, &["mount", "/", "file:///tmp"]),
            "already mounted",
        );
        assert_one_line_error(
            &weir_fs(c, &["umount", "/never"]),
            "nothing is mounted at /never",
        );
        // The daemon still serves after all that.
        assert_eq!(std::fs::read(m.join("file")).unwrap(), b"x");
        assert!(Path::new(&c.join("admin.sock")).exists() && weir_fs(c, &["mounts"]).ok);
        drop(m);
    });
}
