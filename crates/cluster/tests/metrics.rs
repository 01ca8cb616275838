//! Cluster mode's metrics move as the cluster does. A binary of its own,
//! because it installs a process-wide capturing recorder.

mod common;

use std::time::Duration;

use common::{config, eventually, notices_until, run, spec};
use weir_cluster::{Change, Cluster, LinkState};
use weir_metrics::names;
use weir_metrics::testing::{Recorded, global};
use weir_testkit::Etcd;

const SECS_5: Duration = Duration::from_secs(5);

#[test]
fn link_members_mounts_and_events_are_recorded() {
    let recorder = global();
    let mut etcd = Etcd::start_new().unwrap();
    let endpoint = etcd.endpoint();
    run(Duration::from_secs(60), move || async move {
        let a = Cluster::start(config(&endpoint, "node-a")).await.unwrap();
        let b = Cluster::start(config(&endpoint, "node-b")).await.unwrap();
        a.admin().mount(&spec("/m", "s3://m")).await.unwrap();
        eventually("settled", SECS_5, || async {
            let both = a.admin().members().await.ok()?.len() == 2;
            let live = a.status().is_connected() && b.status().is_connected();
            let mounted = b.table().is_some_and(|t| t.specs.len() == 1);
            (both && live && mounted).then_some(())
        })
        .await;
        // Let both watchers apply the last registration before reading.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rec = Recorded::take(recorder);
        assert_eq!(rec.gauge(names::CLUSTER_ETCD_CONNECTED, &[]), Some(1.0));
        assert_eq!(rec.gauge(names::CLUSTER_MEMBERS, &[]), Some(2.0));
        assert_eq!(rec.gauge(names::CLUSTER_MOUNTS, &[]), Some(1.0));

        let mut b_sub = b.subscribe();
        a.publish(Change::Write {
            path: "/m/1".into(),
        })
        .unwrap();
        a.publish(Change::Delete {
            path: "/m/2".into(),
        })
        .unwrap();
        a.flush(SECS_5).await.unwrap();
        notices_until(&mut b_sub, SECS_5, |n| n.len() >= 2).await;
        let rec = Recorded::take(recorder);
        assert_eq!(rec.counter(names::CLUSTER_EVENTS_PUBLISHED, &[]), 2);
        assert_eq!(rec.counter(names::CLUSTER_EVENTS_RECEIVED, &[]), 2);

        etcd.stop();
        eventually("both see the outage", SECS_5, || async {
            (a.status().state == LinkState::Disconnected
                && b.status().state == LinkState::Disconnected)
                .then_some(())
        })
        .await;
        let rec = Recorded::take(recorder);
        assert_eq!(rec.gauge(names::CLUSTER_ETCD_CONNECTED, &[]), Some(0.0));
        etcd.start().unwrap();
        eventually("both back", Duration::from_secs(10), || async {
            (a.status().is_connected() && b.status().is_connected()).then_some(())
        })
        .await;
        let rec = Recorded::take(recorder);
        assert_eq!(rec.gauge(names::CLUSTER_ETCD_CONNECTED, &[]), Some(1.0));
        assert_eq!(
            rec.counter(names::CLUSTER_MISSED_EVENTS, &[("reason", "reconnected")]),
            2,
            "one missed-events signal per node"
        );
    });
}
