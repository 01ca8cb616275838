//! Cluster mode against a real etcd on loopback: two nodes in one process
//! share the mount table, membership and invalidation events, and survive
//! etcd being stopped, restarted and compacted.

mod common;

use std::time::Duration;

use common::{config, eventually, notices_until, run, spec};
use weir_cluster::{
    Admin, Change, Cluster, ClusterError, LinkState, MissedReason, Notice, TableSource,
};
use weir_namespace::MountStore;
use weir_testkit::Etcd;

const SECS_5: Duration = Duration::from_secs(5);
const TEST_LIMIT: Duration = Duration::from_secs(60);

fn has_mount(c: &Cluster, path: &str) -> bool {
    c.table()
        .is_some_and(|t| t.specs.iter().any(|s| s.path == path))
}

fn is_invalidation(n: &Notice, origin: &str, change: &Change) -> bool {
    matches!(n, Notice::Invalidate(i) if i.origin == origin && &i.change == change)
}

#[test]
fn two_nodes_share_the_mount_table() {
    let etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let a = Cluster::start(config(&endpoint, "node-a")).await.unwrap();
        let b = Cluster::start(config(&endpoint, "node-b")).await.unwrap();
        let empty = b.wait_for_table(SECS_5).await.unwrap();
        assert!(empty.specs.is_empty());
        assert_eq!(empty.source, TableSource::Etcd);

        let mut b_tables = b.watch_table();
        let rev = a
            .admin()
            .mount(&spec("//data/", "s3://bucket/prefix"))
            .await
            .unwrap();
        let table = tokio::time::timeout(
            SECS_5,
            b_tables.wait_for(|t| t.as_ref().is_some_and(|t| !t.specs.is_empty())),
        )
        .await
        .expect("b sees a's mount")
        .unwrap()
        .clone()
        .unwrap();
        assert_eq!(table.specs, vec![spec("/data", "s3://bucket/prefix")]);
        assert!(table.revision >= rev);
        assert_eq!(
            b.store().load().unwrap(),
            table.specs,
            "the MountStore serves it"
        );

        let dup = b
            .admin()
            .mount(&spec("/data", "s3://other"))
            .await
            .unwrap_err();
        assert!(
            matches!(&dup, ClusterError::AlreadyMounted { path, ufs } if path == "/data" && ufs == "s3://bucket/prefix"),
            "{dup}"
        );
        let bad = b
            .admin()
            .mount(&spec("/x/../y", "s3://b"))
            .await
            .unwrap_err();
        assert!(matches!(bad, ClusterError::InvalidMount { .. }), "{bad}");

        b.admin().umount("/data/").await.unwrap();
        eventually("a sees the umount", SECS_5, || async {
            (!has_mount(&a, "/data")).then_some(())
        })
        .await;
        let gone = a.admin().umount("/data").await.unwrap_err();
        assert!(matches!(gone, ClusterError::NotMounted(_)), "{gone}");
        assert_eq!(a.admin().load_table().await.unwrap().specs, vec![]);
    });
}

#[test]
fn invalidations_reach_the_other_node_and_not_their_own() {
    let etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let a = Cluster::start(config(&endpoint, "node-a")).await.unwrap();
        let b = Cluster::start(config(&endpoint, "node-b")).await.unwrap();
        for c in [&a, &b] {
            c.wait_for_table(SECS_5).await.unwrap();
            eventually("watch live", SECS_5, || async {
                c.status().is_connected().then_some(())
            })
            .await;
        }
        let mut a_sub = a.subscribe();
        let mut b_sub = b.subscribe();

        let write = Change::Write {
            path: "/data/f".into(),
        };
        let rename = Change::Rename {
            from: "/data/f".into(),
            to: "//data/g".into(),
        };
        a.publish(write.clone()).unwrap();
        a.publish(rename).unwrap();
        let renamed = Change::Rename {
            from: "/data/f".into(),
            to: "/data/g".into(),
        };
        let got = notices_until(&mut b_sub, SECS_5, |n| n.len() >= 2).await;
        assert!(is_invalidation(&got[0], "node-a", &write), "{got:?}");
        assert!(is_invalidation(&got[1], "node-a", &renamed), "{got:?}");

        let delete = Change::Delete {
            path: "/data/g".into(),
        };
        b.publish(delete.clone()).unwrap();
        let got = notices_until(&mut a_sub, SECS_5, |n| !n.is_empty()).await;
        assert!(
            is_invalidation(&got[0], "node-b", &delete),
            "a gets b's change and none of its own first: {got:?}"
        );
        assert!(b_sub.try_next().is_none(), "b does not hear itself");

        let bad = a
            .publish(Change::Write {
                path: "relative".into(),
            })
            .unwrap_err();
        assert!(matches!(bad, ClusterError::InvalidPath { .. }), "{bad}");
    });
}

#[test]
fn stopped_etcd_keeps_the_table_and_a_restart_is_picked_up() {
    let mut etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let a = Cluster::start(config(&endpoint, "node-a")).await.unwrap();
        let b = Cluster::start(config(&endpoint, "node-b")).await.unwrap();
        a.admin().mount(&spec("/", "s3://root")).await.unwrap();
        eventually("b has the table", SECS_5, || async {
            has_mount(&b, "/").then_some(())
        })
        .await;
        eventually("b watch live", SECS_5, || async {
            b.status().is_connected().then_some(())
        })
        .await;
        let mut a_sub = a.subscribe();
        let mut b_sub = b.subscribe();

        etcd.stop();
        let status = eventually("b notices", SECS_5, || async {
            let s = b.status();
            (s.state == LinkState::Disconnected).then_some(s)
        })
        .await;
        assert!(status.last_error.is_some());
        assert!(status.to_string().contains("disconnected"), "{status}");
        assert!(has_mount(&b, "/"), "the last table is still served");
        assert_eq!(b.store().load().unwrap(), vec![spec("/", "s3://root")]);
        let down = b.admin().mount(&spec("/x", "s3://x")).await.unwrap_err();
        assert!(down.is_transient(), "{down}");
        // Written while etcd is down: kept and sent once it is back.
        let offline_write = Change::Write {
            path: "/written-offline".into(),
        };
        a.publish(offline_write.clone()).unwrap();

        etcd.start().unwrap();
        eventually("b reconnects", Duration::from_secs(10), || async {
            b.status().is_connected().then_some(())
        })
        .await;
        notices_until(&mut b_sub, SECS_5, |n| {
            n.iter()
                .any(|n| matches!(n, Notice::MissedEvents(MissedReason::Reconnected { .. })))
                && n.iter()
                    .any(|n| is_invalidation(n, "node-a", &offline_write))
        })
        .await;
        let got = notices_until(&mut a_sub, SECS_5, |n| !n.is_empty()).await;
        assert!(
            matches!(
                got[0],
                Notice::MissedEvents(MissedReason::Reconnected { .. })
            ),
            "{got:?}"
        );
        a.flush(SECS_5).await.unwrap();

        // The resumed watch follows new changes.
        a.admin()
            .mount(&spec("/after", "s3://after"))
            .await
            .unwrap();
        eventually("b follows after the restart", SECS_5, || async {
            has_mount(&b, "/after").then_some(())
        })
        .await;
    });
}

#[test]
fn compaction_during_an_outage_reloads_the_table() {
    let mut etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let mut cfg = config(&endpoint, "slow");
        // Stay away long enough for the test to restart etcd and compact.
        // etcd's restart alone can take seconds on a loaded machine.
        cfg.reconnect_min = Duration::from_secs(10);
        cfg.reconnect_max = Duration::from_secs(10);
        let a = Cluster::start(cfg).await.unwrap();
        eventually("connected", SECS_5, || async {
            a.status().is_connected().then_some(())
        })
        .await;
        let mut sub = a.subscribe();
        etcd.stop();
        eventually("disconnected", SECS_5, || async {
            (a.status().state == LinkState::Disconnected).then_some(())
        })
        .await;
        etcd.start().unwrap();
        let admin = Admin::connect(&config(&endpoint, "admin")).await.unwrap();
        admin.mount(&spec("/late", "s3://late")).await.unwrap();
        // etcd still serves a watch from the compaction revision itself, so
        // compact one write past the first one a missed.
        let rev = admin.mount(&spec("/later", "s3://later")).await.unwrap();
        let mut raw = etcd_client::Client::connect([endpoint.as_str()], None)
            .await
            .unwrap();
        raw.compact(rev, None).await.unwrap();
        assert!(!has_mount(&a, "/late"), "a is still away");
        notices_until(&mut sub, Duration::from_secs(30), |n| {
            n.iter()
                .any(|n| matches!(n, Notice::MissedEvents(MissedReason::Compacted { .. })))
        })
        .await;
        eventually("reloaded table", SECS_5, || async {
            has_mount(&a, "/late").then_some(())
        })
        .await;
    });
}

#[test]
fn a_wiped_etcd_is_read_afresh_not_waited_for() {
    let mut etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let a = Cluster::start(config(&endpoint, "node-a")).await.unwrap();
        // Push the revision well past what the fresh etcd will reach.
        for _ in 0..20 {
            a.admin().mount(&spec("/tmp", "s3://tmp")).await.unwrap();
            a.admin().umount("/tmp").await.unwrap();
        }
        a.admin().mount(&spec("/old", "s3://old")).await.unwrap();
        eventually("a has /old", SECS_5, || async {
            has_mount(&a, "/old").then_some(())
        })
        .await;

        etcd.stop();
        std::fs::remove_dir_all(etcd.data_dir()).unwrap();
        etcd.start().unwrap();
        let admin = Admin::connect(&config(&endpoint, "admin")).await.unwrap();
        admin.mount(&spec("/fresh", "s3://fresh")).await.unwrap();
        eventually(
            "a follows the new etcd",
            Duration::from_secs(10),
            || async {
                let t = a.table()?;
                (t.specs == vec![spec("/fresh", "s3://fresh")]).then_some(())
            },
        )
        .await;
    });
}

#[test]
fn members_come_and_go_with_their_lease() {
    let etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let admin = Admin::connect(&config(&endpoint, "admin")).await.unwrap();
        let a = Cluster::start(config(&endpoint, "node-a")).await.unwrap();
        let b = Cluster::start(config(&endpoint, "node-b")).await.unwrap();
        let ids = || async {
            let m = admin.members().await.unwrap();
            m.into_iter().map(|m| m.node_id).collect::<Vec<_>>()
        };
        eventually("both registered", SECS_5, || async {
            (ids().await == ["node-a", "node-b"]).then_some(())
        })
        .await;
        let members = admin.members().await.unwrap();
        assert_eq!(members[0], *a.me(), "the record describes the process");
        assert_eq!(members[0].pid, std::process::id());

        // Renewals keep a member listed well past its TTL.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(ids().await, ["node-a", "node-b"]);

        // A daemon that dies stops renewing: gone after the 2 s TTL.
        drop(b);
        eventually("b expires", SECS_5, || async {
            (ids().await == ["node-a"]).then_some(())
        })
        .await;

        // One that shuts down leaves at once.
        a.shutdown().await;
        assert!(ids().await.is_empty());
    });
}

#[test]
fn changes_queued_past_the_bound_become_a_drop_everything_signal() {
    let mut etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let mut cfg = config(&endpoint, "node-a");
        cfg.max_pending_changes = 3;
        let a = Cluster::start(cfg).await.unwrap();
        let b = Cluster::start(config(&endpoint, "node-b")).await.unwrap();
        eventually("b live", SECS_5, || async {
            b.status().is_connected().then_some(())
        })
        .await;
        eventually("a registered", SECS_5, || async {
            (b.admin().members().await.ok()?.len() == 2).then_some(())
        })
        .await;
        etcd.stop();
        for i in 0..5 {
            a.publish(Change::Write {
                path: format!("/f{i}"),
            })
            .unwrap();
        }
        let mut sub = b.subscribe();
        etcd.start().unwrap();
        let got = notices_until(&mut sub, Duration::from_secs(10), |n| {
            n.iter().any(|n| {
                matches!(n, Notice::MissedEvents(MissedReason::PeerOverflow { origin }) if origin == "node-a")
            })
        })
        .await;
        assert!(
            !got.iter().any(|n| matches!(n, Notice::Invalidate(_))),
            "the dropped changes are not sent one by one: {got:?}"
        );
    });
}

#[test]
fn the_table_cache_file_serves_a_start_without_etcd() {
    let mut etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(TEST_LIMIT, move || async move {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("table.json");
        let mut cfg = config(&endpoint, "node-a");
        cfg.table_cache = Some(cache.clone());
        let a = Cluster::start(cfg.clone()).await.unwrap();
        a.admin().mount(&spec("/m", "s3://m")).await.unwrap();
        eventually("cache file written", SECS_5, || async {
            std::fs::read_to_string(&cache)
                .ok()
                .filter(|s| s.contains("s3://m"))
        })
        .await;
        a.shutdown().await;

        etcd.stop();
        let a = Cluster::start(cfg).await.unwrap();
        let t = a.wait_for_table(SECS_5).await.unwrap();
        assert_eq!(t.source, TableSource::CacheFile);
        assert_eq!(t.specs, vec![spec("/m", "s3://m")]);
        assert!(!a.status().is_connected());
        etcd.start().unwrap();
        eventually("back on etcd", Duration::from_secs(10), || async {
            a.table()
                .filter(|t| t.source == TableSource::Etcd)
                .map(|_| ())
        })
        .await;
    });
}

#[test]
fn no_etcd_and_no_cache_file_is_a_clear_error() {
    run(TEST_LIMIT, || async {
        // Nothing listens on port 1.
        let a = Cluster::start(config("http://127.0.0.1:1", "node-a"))
            .await
            .unwrap();
        let e = a.wait_for_table(Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, ClusterError::NoTable { .. }), "{e}");
        assert!(e.to_string().contains("no mount table"), "{e}");
        assert_eq!(a.status().state, LinkState::Connecting);
        let store_err = a.store().load().unwrap_err().to_string();
        assert!(store_err.contains("connecting"), "{store_err}");
    });
}
