//! The admin endpoint over a real unix socket, in front of a real `Fs` over
//! local directories (no FUSE): stat and list, a load job that fills the
//! cache once and is a no-op the second time, check-cached, drop-cache,
//! standalone mount and umount kept in the overlay file, and clear errors.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_admin::protocol::*;
use weir_admin::{Client, Context, ErrorKind, Server, Standalone, TableControl};
use weir_cache::{PageCache, PageCacheConfig};
use weir_fs::{Fs, FsConfig};
use weir_namespace::{MountSpec, MountTable};

struct Daemon {
    dir: tempfile::TempDir,
    data: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    server: Option<Server>,
}

fn spec(path: &str, dir: &Path) -> MountSpec {
    MountSpec {
        path: path.into(),
        ufs: format!("file://{}", dir.display()),
        options: BTreeMap::new(),
    }
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = MountTable::open(&[spec("/", data.path())], &Default::default()).unwrap();
    let pages = PageCache::open(PageCacheConfig {
        dir: dir.path().join("pages"),
        capacity: 64 << 20,
        page_size: 4096,
        memory: 0,
    })
    .unwrap();
    let fs = Fs::new(
        table,
        Arc::new(pages),
        FsConfig::new(dir.path().join("staging")),
    )
    .unwrap();
    let info = DaemonInfo {
        pid: std::process::id(),
        version: "test".into(),
        mode: Mode::Standalone,
        mountpoint: "/nowhere".into(),
        cache_dir: dir.path().display().to_string(),
        started_at: 0,
        fuse_threads: 4,
        ufs_concurrency: 16,
        readahead: 1 << 20,
        metadata_ttl: 60.0,
        passthrough: false,
        cores: 2,
    };
    let table = TableControl::Standalone(Standalone::new(
        fs.clone(),
        dir.path().join("mounts.json"),
        Default::default(),
    ));
    let ctx = Arc::new(Context::new(
        fs,
        info,
        Arc::new(|| "weir_fuse_requests_total{op=\"read\"} 3\n".to_string()),
        table,
        None,
    ));
    let socket = dir.path().join("admin.sock");
    let server = rt.block_on(async { Server::start(ctx, &socket) }).unwrap();
    Daemon {
        dir,
        data,
        _rt: rt,
        server: Some(server),
    }
}

impl Daemon {
    fn client(&self) -> Client {
        Client::new(self.dir.path().join("admin.sock")).with_timeout(Duration::from_secs(30))
    }

    fn call(&self, req: Request) -> Result<Response, weir_admin::AdminError> {
        self.client().call(&req)
    }

    fn load(&self, path: &str) -> JobProgress {
        let Response::Job(started) = self
            .call(Request::LoadStart {
                path: path.into(),
                parallel: Some(2),
            })
            .unwrap()
        else {
            panic!("not a job")
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Response::Job(p) = self
                .call(Request::LoadProgress { job: started.job })
                .unwrap()
            else {
                panic!("not a job")
            };
            if p.state.is_final() {
                return p;
            }
            assert!(Instant::now() < deadline, "load did not finish: {p:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cached(&self, path: &str) -> CachedReport {
        match self
            .call(Request::CheckCached { path: path.into() })
            .unwrap()
        {
            Response::Cached(c) => c,
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.close();
        }
    }
}

#[test]
fn the_socket_is_private_and_removed_on_close() {
    let mut d = start();
    let socket = d.dir.path().join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    d.server.take().unwrap().close();
    assert!(!socket.exists());
    let e = d.call(Request::Stats).unwrap_err().to_string();
    assert!(e.contains("no weir daemon answers"), "{e}");
}

#[test]
fn load_fills_the_cache_once_then_check_and_drop() {
    let d = start();
    std::fs::create_dir_all(d.data.path().join("ds/sub")).unwrap();
    std::fs::write(d.data.path().join("ds/a"), vec![1u8; 10_000]).unwrap();
    std::fs::write(d.data.path().join("ds/sub/b"), vec![2u8; 50_000]).unwrap();
    std::fs::write(d.data.path().join("ds/empty"), b"").unwrap();
    let before = d.cached("/ds");
    assert_eq!((before.total_size, before.total_cached), (60_000, 0));
    let first = d.load("/ds");
    assert_eq!(first.state, JobState::Done);
    assert_eq!((first.files_total, first.files_done), (3, 3));
    assert_eq!((first.bytes_total, first.bytes_fetched), (60_000, 60_000));
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let after = d.cached("/ds");
    assert_eq!(after.total_cached, 60_000);
    assert!(after.files.iter().all(|f| f.cached == f.size), "{after:?}");
    let second = d.load("/ds");
    assert_eq!(second.bytes_fetched, 0, "a second load is a no-op");
    assert_eq!(second.files_skipped, 3);
    assert_eq!(second.bytes_already, 60_000);
    let Response::Dropped(dropped) = d.call(Request::DropCache { path: "/ds".into() }).unwrap()
    else {
        panic!()
    };
    assert_eq!((dropped.files, dropped.bytes), (2, 60_000));
    assert_eq!(d.cached("/ds").total_cached, 0);
}

#[test]
fn stat_list_and_stats_answer() {
    let d = start();
    std::fs::create_dir_all(d.data.path().join("d/e")).unwrap();
    std::fs::write(d.data.path().join("d/f"), b"12345").unwrap();
    std::fs::write(d.data.path().join("d/e/g"), b"1").unwrap();
    let Response::Stat(s) = d
        .call(Request::Stat {
            path: "/d/f".into(),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((s.kind, s.size), (EntryKind::File, 5));
    assert!(s.ufs.unwrap().starts_with("file://"));
    let list = |recursive| match d
        .call(Request::List {
            path: "/d".into(),
            recursive,
        })
        .unwrap()
    {
        Response::List { entries } => entries.into_iter().map(|e| e.path).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(list(false), ["/d/e", "/d/f"]);
    assert_eq!(list(true), ["/d/e", "/d/e/g", "/d/f"]);
    let Response::Stats(stats) = d.call(Request::Stats).unwrap() else {
        panic!()
    };
    assert_eq!(
        stats.fuse.ops[0].requests, 3,
        "read back from the metrics text"
    );
    assert_eq!(stats.daemon.mode, Mode::Standalone);
}

#[test]
fn standalone_mounts_change_the_table_and_are_kept_for_a_successor() {
    let d = start();
    let extra = tempfile::tempdir().unwrap();
    std::fs::write(extra.path().join("x"), b"x").unwrap();
    let Response::TableChanged { message } = d
        .call(Request::Mount {
            spec: spec("/extra", extra.path()),
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(message.contains("mounted /extra"), "{message}");
    assert!(
        d.call(Request::Stat {
            path: "/extra/x".into()
        })
        .is_ok()
    );
    let kept = Standalone::load_overlay(&d.dir.path().join("mounts.json"))
        .unwrap()
        .unwrap();
    assert_eq!(kept.len(), 2);
    let e = d
        .call(Request::Mount {
            spec: spec("/extra", extra.path()),
        })
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::AlreadyMounted), "{e}");
    let e = d
        .call(Request::Mount {
            spec: MountSpec {
                path: "/bad".into(),
                ufs: "nope://x".into(),
                options: BTreeMap::new(),
            },
        })
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Invalid), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    let Response::Mounts(m) = d.call(Request::Mounts).unwrap() else {
        panic!()
    };
    assert_eq!(
        m.mounts.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(),
        ["/", "/extra"]
    );
    d.call(Request::Umount {
        path: "/extra".into(),
    })
    .unwrap();
    let e = d
        .call(Request::Stat {
            path: "/extra/x".into(),
        })
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
    let e = d
        .call(Request::Umount {
            path: "/extra".into(),
        })
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotMounted), "{e}");
}

#[test]
fn bad_requests_get_one_line_errors() {
    let d = start();
    let e = d
        .call(Request::LoadStart {
            path: "/missing".into(),
            parallel: None,
        })
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound));
    assert_eq!(e.to_string(), "/missing: not found");
    let e = d.call(Request::LoadProgress { job: 42 }).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NoSuchJob));
    let e = d
        .call(Request::List {
            path: "../x".into(),
            recursive: false,
        })
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Invalid), "{e}");
    // A line that is not a request.
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(d.dir.path().join("admin.sock")).unwrap();
    s.write_all(b"{\"op\":\"bogus\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("\"kind\":\"invalid\""), "{line}");
}
