//! Helpers shared by the cluster tests: a hard timeout around an async test
//! body, settings with short timings, and polling for a condition.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use weir_cluster::{ClusterConfig, Notice, Subscription};
use weir_namespace::MountSpec;

/// Runs an async test body on its own runtime and thread, failing the test
/// if it takes longer than `limit` (a hang must not hang CI).
pub fn run<F>(limit: Duration, body: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    weir_testkit::timed(limit, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(body());
    });
}

/// Settings for node `node` on `endpoint`, with timings short enough for
/// tests: a 2 s lease, 2 s requests, reconnects every 100-500 ms.
pub fn config(endpoint: &str, node: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new([endpoint], "test", node);
    c.lease_ttl = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c.reconnect_min = Duration::from_millis(100);
    c.reconnect_max = Duration::from_millis(500);
    c
}

/// A mount spec with no options.
pub fn spec(path: &str, ufs: &str) -> MountSpec {
    MountSpec {
        path: path.into(),
        ufs: ufs.into(),
        options: BTreeMap::new(),
    }
}

/// Polls `probe` every 50 ms until it gives a value, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects notices until `done` says the collected ones are enough, for at
/// most `limit`.
pub async fn notices_until(
    sub: &mut Subscription,
    limit: Duration,
    done: impl Fn(&[Notice]) -> bool,
) -> Vec<Notice> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(n)) => seen.push(n),
            Ok(None) => panic!("subscription closed; got {seen:?}"),
            Err(_) => panic!("notices not complete within {limit:?}; got {seen:?}"),
        }
    }
    seen
}
