//! Bad input to `weir mount`: each case exits non-zero with one clear line
//! naming the cause, and leaves no mount and no process behind.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Runs `weir mount MNT ARGS` expecting failure; returns the error line.
fn mount_fails(mnt: &Path, cache: &Path, args: &[&str]) -> String {
    let out = run_with_timeout(
        Command::new(weir())
            .arg("mount")
            .arg(mnt)
            .arg("--cache-dir")
            .arg(cache)
            .args(args),
        std::time::Duration::from_secs(90),
    )
    .expect("weir mount ran");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr:?}");
    assert!(lines[0].starts_with("weir: error: "), "{stderr}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!is_mounted(mnt), "no mount left at {}", mnt.display());
    assert!(
        processes_mentioning(&mnt.display().to_string()).is_empty(),
        "no process left for {}",
        mnt.display()
    );
    lines[0].to_string()
}

fn dirs() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    (tmp, data, mnt, cache)
}

#[test]
fn unknown_config_key() {
    let (tmp, data, mnt, cache) = dirs();
    let cfg = tmp.path().join("weir.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mounts:\n  - {{path: /, ufs: 'file://{}'}}\ncache: {{capacty: 1GiB}}\n",
            data.display()
        ),
    )
    .unwrap();
    let line = mount_fails(&mnt, &cache, &["--config", cfg.to_str().unwrap()]);
    assert!(line.contains("capacty"), "{line}");
}

#[test]
fn unknown_set_key_and_mount_option() {
    let (_tmp, data, mnt, cache) = dirs();
    let uri = format!("file://{}", data.display());
    let line = mount_fails(
        &mnt,
        &cache,
        &["--ufs", &uri, "--set", "fuse.random_write=true"],
    );
    assert!(line.contains("random_write"), "{line}");
    let line = mount_fails(&mnt, &cache, &["--ufs", &uri, "-o", "bogus_opt"]);
    assert!(line.contains("bogus_opt"), "{line}");
}

#[test]
fn bad_uris() {
    let (_tmp, data, mnt, cache) = dirs();
    for (uri, needle) in [
        ("bogus://x/y", "unknown scheme"),
        ("s3:///no-bucket", "bucket"),
        ("not a uri", "bad URI"),
        ("file:///definitely/not/here", "/definitely/not/here"),
    ] {
        let line = mount_fails(&mnt, &cache, &["--ufs", uri]);
        assert!(line.contains(needle), "{uri}: {line}");
    }
    let file = data.join("plain");
    std::fs::write(&file, b"x").unwrap();
    let line = mount_fails(
        &mnt,
        &cache,
        &["--ufs", &format!("file://{}", file.display())],
    );
    assert!(line.contains("not a directory"), "{line}");
}

#[test]
fn unreachable_endpoint() {
    let (tmp, _data, mnt, cache) = dirs();
    // A port nothing listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tmp.path().join("weir.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mounts:\n  - path: /\n    ufs: s3://bucket/\n    options: {{endpoint: 'http://127.0.0.1:{port}', access_key_id: a, secret_access_key: b}}\n"
        ),
    )
    .unwrap();
    let line = mount_fails(&mnt, &cache, &["--config", cfg.to_str().unwrap()]);
    assert!(line.contains("cannot reach s3://bucket/"), "{line}");
}

#[test]
fn missing_and_already_mounted_mountpoints() {
    let (tmp, data, mnt, cache) = dirs();
    let uri = format!("file://{}", data.display());
    let missing = tmp.path().join("nope");
    let line = mount_fails(&missing, &cache, &["--ufs", &uri]);
    assert!(line.contains("nope"), "{line}");
    let guard = MountGuard::mount(&weir(), &mnt, &cache, &["--ufs", &uri]).unwrap();
    let out = run_with_timeout(
        Command::new(weir())
            .arg("mount")
            .arg(&mnt)
            .arg("--cache-dir")
            .arg(tmp.path().join("c2"))
            .args(["--ufs", &uri]),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("already a mount point"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(is_mounted(&mnt), "the first mount is untouched");
    drop(guard);
    assert!(!is_mounted(&mnt));
}

#[test]
fn unavailable_features_are_refused() {
    let (_tmp, data, mnt, cache) = dirs();
    let uri = format!("file://{}", data.display());
    let line = mount_fails(
        &mnt,
        &cache,
        &["--ufs", &uri, "--set", "write_cache.enabled=true"],
    );
    assert!(line.contains("write_cache.enabled"), "{line}");
}

#[test]
fn second_mount_on_the_same_cache_dir_is_refused() {
    let (tmp, data, mnt, cache) = dirs();
    let uri = format!("file://{}", data.display());
    let _guard = MountGuard::mount(&weir(), &mnt, &cache, &["--ufs", &uri]).unwrap();
    let mnt2 = tmp.path().join("mnt2");
    std::fs::create_dir_all(&mnt2).unwrap();
    let line = mount_fails(&mnt2, &cache, &["--ufs", &uri]);
    assert!(line.contains("in use by another weir"), "{line}");
}
