//! Integration tests for `weir_testkit::S3Server`: lifecycle (accept, stop,
//! restart), authentication, and which S3 features the `s3s-fs` backend
//! supports when driven through OpenDAL the way weir drives it.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use opendal::Operator;
use weir_testkit::S3Server;

const BUCKET: &str = "weir-test";
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and fails the test if it takes longer than `limit`.
fn with_timeout<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("test timed out after {limit:?}"),
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("test thread exited without a result"),
        },
    }
}

/// Drives `fut` to completion on a fresh current-thread runtime.
fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build test runtime")
        .block_on(fut)
}

/// An OpenDAL S3 operator for `server`'s bucket. Must be called inside a runtime.
fn operator(server: &S3Server) -> Operator {
    let mut opts: Vec<(String, String)> = server.options().into_iter().collect();
    opts.push(("bucket".to_owned(), server.bucket().to_owned()));
    opts.push(("root".to_owned(), "/".to_owned()));
    Operator::via_iter("s3", opts).expect("build s3 operator")
}

fn start(dir: &Path) -> S3Server {
    S3Server::start(dir, BUCKET).expect("start S3 server")
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
}

fn assert_refused(port: u16) {
    match connect(port) {
        Ok(_) => panic!("port {port} still accepts connections"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
    }
}

/// Deterministic, non-repeating-ish test payload.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn port_accepts_then_refuses_after_stop() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path());
        assert!(server.root().join(BUCKET).is_dir());
        assert_eq!(
            server.endpoint(),
            format!("http://127.0.0.1:{}", server.port())
        );
        assert_eq!(server.bucket(), BUCKET);
        assert!(server.is_running());

        connect(server.port()).expect("server port accepts");

        server.stop();
        assert!(!server.is_running());
        assert_refused(server.port());

        server.stop(); // idempotent
        assert_refused(server.port());
    });
}

#[test]
fn stop_aborts_open_connections() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path());
        let mut conn = connect(server.port()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Give the accept loop a moment so the connection has a serving task.
        std::thread::sleep(Duration::from_millis(50));

        server.stop();

        let mut buf = [0u8; 64];
        match conn.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected {n} bytes from a stopped server"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ),
                "expected EOF or reset, got {e}"
            ),
        }
    });
}

#[test]
fn client_fails_after_stop_and_recovers_after_restart() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path());
        let port = server.port();
        block_on(async {
            let op = operator(&server);
            op.write("persist.txt", "kept").await.unwrap();

            server.stop();
            // The operator's pooled keep-alive connection is dead and new ones are refused.
            op.read("persist.txt")
                .await
                .expect_err("read from a stopped server must fail");

            let server =
                S3Server::start_on(dir.path(), BUCKET, port).expect("restart on same port");
            assert_eq!(server.port(), port);
            let data = op.read("persist.txt").await.unwrap().to_vec();
            assert_eq!(data, b"kept");
        });
    });
}

#[test]
fn unsigned_requests_are_denied() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        let mut conn = connect(server.port()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            conn,
            "GET /{BUCKET}?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            server.port()
        )
        .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 403"), "{response}");
        assert!(response.contains("AccessDenied"), "{response}");
    });
}

#[test]
fn wrong_secret_is_rejected() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        block_on(async {
            let mut opts = server.options();
            opts.insert("secret_access_key".to_owned(), "not-the-secret".to_owned());
            opts.insert("bucket".to_owned(), BUCKET.to_owned());
            let op = Operator::via_iter("s3", opts).unwrap();
            let err = op
                .write("x", "y")
                .await
                .expect_err("bad signature must fail");
            assert_eq!(err.kind(), opendal::ErrorKind::PermissionDenied, "{err}");
        });
        assert!(!server.root().join(BUCKET).join("x").exists());
    });
}

#[test]
fn invalid_bucket_name_is_rejected_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "a", "Upper", "under_score", "../escape", ".hidden"] {
        let err = S3Server::start(dir.path(), bad).expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
    }
}

#[test]
fn start_fails_on_busy_port() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        let err = S3Server::start_on(dir.path(), BUCKET, server.port()).expect_err("port is taken");
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    });
}

#[tokio::test(flavor = "current_thread")]
async fn usable_and_droppable_inside_async_context() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let op = operator(&server);
    tokio::time::timeout(LIMIT, op.write("async.txt", "ok"))
        .await
        .expect("timed out")
        .unwrap();
    let port = server.port();
    drop(server); // must not panic even though a runtime is current
    assert_refused(port);
}

#[test]
fn put_get_stat_list_delete_roundtrip() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        let bucket_dir = server.root().join(BUCKET);
        block_on(async {
            let op = operator(&server);
            let meta = op.write("hello/world.txt", "hello world").await.unwrap();
            let _ = meta;
            assert_eq!(
                std::fs::read(bucket_dir.join("hello/world.txt")).unwrap(),
                b"hello world"
            );
            assert_eq!(
                op.read("hello/world.txt").await.unwrap().to_vec(),
                b"hello world"
            );

            let stat = op.stat("hello/world.txt").await.unwrap();
            assert_eq!(stat.content_length(), 11);
            // Single-part ETag is the hex MD5 of the content, quoted.
            assert_eq!(stat.etag(), Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\""));

            op.write("top.txt", "t").await.unwrap();
            op.write("hello/sub/deep.txt", "d").await.unwrap();

            // Delimiter listing: one level, with common prefixes as directories.
            let mut names: Vec<String> = op
                .list("/")
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.path().to_owned())
                .collect();
            names.sort();
            assert!(names.contains(&"hello/".to_owned()), "{names:?}");
            assert!(names.contains(&"top.txt".to_owned()), "{names:?}");
            assert!(!names.iter().any(|n| n.contains("deep")), "{names:?}");

            let mut names: Vec<String> = op
                .list("hello/")
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.path().to_owned())
                .collect();
            names.sort();
            assert!(names.contains(&"hello/world.txt".to_owned()), "{names:?}");
            assert!(names.contains(&"hello/sub/".to_owned()), "{names:?}");

            // Recursive listing (no delimiter).
            let mut names: Vec<String> = op
                .list_with("")
                .recursive(true)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.metadata().is_file())
                .map(|e| e.path().to_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["hello/sub/deep.txt", "hello/world.txt", "top.txt"]);

            op.delete("top.txt").await.unwrap();
            assert!(!bucket_dir.join("top.txt").exists());
            let err = op.stat("top.txt").await.expect_err("deleted");
            assert_eq!(err.kind(), opendal::ErrorKind::NotFound);
        });
    });
}

#[test]
fn multipart_upload() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        let data = payload(12 << 20);
        block_on(async {
            let op = operator(&server);
            let mut w = op.writer_with("big.bin").chunk(5 << 20).await.unwrap();
            for piece in data.chunks(1 << 20) {
                w.write(piece.to_vec()).await.unwrap();
            }
            w.close().await.unwrap();

            let stat = op.stat("big.bin").await.unwrap();
            assert_eq!(stat.content_length(), data.len() as u64);
            // Multipart ETag: MD5 of the part MD5s, suffixed with the part count (5+5+2 MiB).
            let etag = stat.etag().expect("etag");
            assert!(etag.ends_with("-3\""), "{etag}");

            let back = op.read("big.bin").await.unwrap().to_vec();
            assert!(back == data, "multipart content differs");
        });
        let on_disk = std::fs::read(server.root().join(BUCKET).join("big.bin")).unwrap();
        assert!(on_disk == data, "file on disk differs");
        // Part files are cleaned up after completion.
        let leftovers: Vec<_> = std::fs::read_dir(server.root())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    });
}

#[test]
fn copy_object() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        block_on(async {
            let op = operator(&server);
            op.write("src dir/a b.txt", "copy me").await.unwrap();
            op.copy("src dir/a b.txt", "dst/c.txt").await.unwrap();
            assert_eq!(op.read("dst/c.txt").await.unwrap().to_vec(), b"copy me");
            assert_eq!(
                op.read("src dir/a b.txt").await.unwrap().to_vec(),
                b"copy me"
            );
            let src = op.stat("src dir/a b.txt").await.unwrap();
            let dst = op.stat("dst/c.txt").await.unwrap();
            assert_eq!(src.etag(), dst.etag());
        });
        assert_eq!(
            std::fs::read(server.root().join(BUCKET).join("dst/c.txt")).unwrap(),
            b"copy me"
        );
    });
}

#[test]
fn user_metadata_roundtrip() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        block_on(async {
            let op = operator(&server);
            op.write_with("meta.txt", "m")
                .user_metadata([
                    ("weir-mode".to_owned(), "0644".to_owned()),
                    ("weir-uid".to_owned(), "1000".to_owned()),
                ])
                .await
                .unwrap();
            let stat = op.stat("meta.txt").await.unwrap();
            let meta = stat.user_metadata().expect("user metadata on HEAD");
            assert_eq!(meta.get("weir-mode"), Some("0644"));
            assert_eq!(meta.get("weir-uid"), Some("1000"));

            // CopyObject (default MetadataDirective=COPY) carries metadata along.
            op.copy("meta.txt", "meta-copy.txt").await.unwrap();
            let stat = op.stat("meta-copy.txt").await.unwrap();
            let meta = stat.user_metadata().expect("user metadata on copy");
            assert_eq!(meta.get("weir-mode"), Some("0644"));
        });
    });
}

#[test]
fn ranged_get_with_matching_if_match() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        block_on(async {
            let op = operator(&server);
            op.write("range.txt", "0123456789").await.unwrap();
            let etag = op
                .stat("range.txt")
                .await
                .unwrap()
                .etag()
                .unwrap()
                .to_owned();
            let got = op
                .read_with("range.txt")
                .range(2..6)
                .if_match(&etag)
                .await
                .unwrap()
                .to_vec();
            assert_eq!(got, b"2345");
            let tail = op.read_with("range.txt").range(7..).await.unwrap().to_vec();
            assert_eq!(tail, b"789");
        });
    });
}

/// Documents a gap in s3s-fs 0.14.1: `GetObject` ignores `If-Match` (and the
/// other conditional headers), so a stale ETag still returns data instead of
/// `412 Precondition Failed`. Run with `--ignored` to check a newer version.
#[test]
#[ignore = "s3s-fs 0.14.1 does not evaluate If-Match on GetObject"]
fn ranged_get_with_stale_if_match_fails() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        block_on(async {
            let op = operator(&server);
            op.write("range.txt", "0123456789").await.unwrap();
            let err = op
                .read_with("range.txt")
                .range(2..6)
                .if_match("\"00000000000000000000000000000000\"")
                .await
                .expect_err("stale If-Match must fail");
            assert_eq!(err.kind(), opendal::ErrorKind::ConditionNotMatch, "{err}");
        });
    });
}

#[test]
fn conditional_put_if_not_exists() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        block_on(async {
            let op = operator(&server);
            op.write_with("once.txt", "first")
                .if_not_exists(true)
                .await
                .unwrap();
            let err = op
                .write_with("once.txt", "second")
                .if_not_exists(true)
                .await
                .expect_err("If-None-Match: * on existing object");
            assert_eq!(err.kind(), opendal::ErrorKind::ConditionNotMatch, "{err}");
            assert_eq!(op.read("once.txt").await.unwrap().to_vec(), b"first");
        });
    });
}

#[test]
fn files_seeded_on_disk_are_served() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        let seeded = server.root().join(BUCKET).join("seed/data.txt");
        std::fs::create_dir_all(seeded.parent().unwrap()).unwrap();
        std::fs::write(&seeded, "hello world").unwrap();
        block_on(async {
            let op = operator(&server);
            assert_eq!(
                op.read("seed/data.txt").await.unwrap().to_vec(),
                b"hello world"
            );
            let stat = op.stat("seed/data.txt").await.unwrap();
            // Without a sidecar the ETag is computed on the fly from the content.
            assert_eq!(stat.etag(), Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\""));
            assert!(stat.user_metadata().is_none_or(|m| m.is_empty()));
        });
    });
}
