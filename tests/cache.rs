//! Cache tests that prove a hit instead of assuming one: reads that can
//! only succeed from the cache, freshness after the TTL, corruption caught
//! by checksums, the capacity bound, and a cache still warm after restart.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;

#[test]
fn reads_come_from_cache_when_s3_is_down() {
    let mut env = Env::new(Backend::S3);
    let data = pattern((3 << 20) + 777, 1);
    env.put("ds/train.bin", &data);
    let guard = env.mount(&[]);
    let f = guard.join("ds/train.bin");
    let first = {
        let f = f.clone();
        timed(LIMIT, move || std::fs::read(f).unwrap())
    };
    assert_eq!(first, data);
    env.s3.as_mut().unwrap().stop();
    let again = timed(LIMIT, move || std::fs::read(f).unwrap());
    assert_eq!(again, data, "byte-identical with the S3 server stopped");
}

#[test]
fn object_replaced_behind_our_back_is_fresh_after_ttl() {
    let mut env = Env::new(Backend::S3);
    env.extra_config = "metadata: {ttl: 1}\n".into();
    env.put("m.bin", &pattern(200_000, 1));
    let guard = env.mount(&["-o", "attr_timeout=0,entry_timeout=0"]);
    let f = guard.join("m.bin");
    assert_eq!(std::fs::read(&f).unwrap(), pattern(200_000, 1));
    // Same size, new bytes: only the version (etag) tells them apart.
    env.put("m.bin", &pattern(200_000, 2));
    std::thread::sleep(Duration::from_millis(1500));
    let f2 = f.clone();
    assert_eq!(
        timed(LIMIT, move || std::fs::read(f2).unwrap()),
        pattern(200_000, 2)
    );
    // A different size too.
    env.put("m.bin", &pattern(5000, 3));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        timed(LIMIT, move || std::fs::read(f).unwrap()),
        pattern(5000, 3)
    );
}

fn data_files(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let root = cache.join("pages-v1");
    for shard in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "data") {
                out.push(f.path());
            }
        }
    }
    out
}

#[test]
fn corrupted_page_is_detected_and_refetched() {
    let env = Env::new(Backend::S3);
    let data = pattern(2 << 20, 4);
    env.put("c.bin", &data);
    let guard = env.mount(&[]);
    let f = guard.join("c.bin");
    assert_eq!(std::fs::read(&f).unwrap(), data);
    let files = data_files(&env.cache);
    assert_eq!(files.len(), 1, "one sparse file per object version");
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&files[0])
            .unwrap();
        file.write_all_at(b"CORRUPTED!", 4096).unwrap();
        file.write_all_at(b"CORRUPTED!", (1 << 20) + 10).unwrap();
    }
    let f2 = f.clone();
    assert_eq!(
        timed(LIMIT, move || std::fs::read(f2).unwrap()),
        data,
        "corruption is never served"
    );
    assert!(
        guard.log().contains("failed its checksum"),
        "the daemon noticed: {}",
        guard.log()
    );
    // The refetched pages are good again.
    let mut on_disk = vec![0u8; 16];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&files[0])
        .unwrap()
        .read_exact_at(&mut on_disk, 4096)
        .unwrap();
    assert_eq!(&on_disk[..], &data[4096..4096 + 16]);
}

#[test]
fn cache_never_exceeds_capacity_by_more_than_one_page() {
    let env = Env::new(Backend::S3);
    for i in 0..4 {
        env.put(&format!("f{i}"), &pattern(3 << 20, i));
    }
    let guard = env.mount(&["--cache-size", "4MiB"]);
    let mnt = guard.path().to_path_buf();
    let cache = env.cache.clone();
    timed(LIMIT, move || {
        for round in 0..2 {
            for i in 0..4 {
                assert_eq!(
                    std::fs::read(mnt.join(format!("f{i}"))).unwrap(),
                    pattern(3 << 20, i),
                    "round {round}"
                );
                let used: u64 = data_files(&cache)
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.blocks() * 512)
                    .sum();
                assert!(used <= (4 << 20) + (1 << 20), "cache holds {used} bytes");
            }
        }
    });
}

#[test]
fn cache_is_warm_after_restart() {
    let mut env = Env::new(Backend::S3);
    let data = pattern(3 << 20, 5);
    env.put("w.bin", &data);
    let mut guard = env.mount(&[]);
    assert_eq!(std::fs::read(guard.join("w.bin")).unwrap(), data);
    assert!(guard.unmount(Duration::from_secs(10)));
    // A new daemon: it needs S3 to start and to look the file up, then S3
    // goes away, so the bytes can only come from the pages the first
    // daemon left on disk.
    let guard = env.mount(&[]);
    let f = guard.join("w.bin");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), data.len() as u64);
    env.s3.as_mut().unwrap().stop();
    assert_eq!(
        timed(LIMIT, move || std::fs::read(f).unwrap()),
        data,
        "served from the cache kept across restart"
    );
}
