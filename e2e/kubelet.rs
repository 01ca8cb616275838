//! A kubelet-like harness on one machine. The kubelet dir is an rshared
//! mount; targets are laid out the way kubelet lays them out; "pods" are
//! processes in `unshare -m --propagation slave` mount namespaces, chrooted
//! into a tmpfs root with the volume rbound (rslave, as HostToContainer)
//! at /vol and only /usr beside it. The pods read and write through their
//! volumes while the plugin and its daemon are restarted and killed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::csi::*;
use common::timed;
use weir_csi_proto::v1::*;

const LIMIT: Duration = Duration::from_secs(180);

/// A World whose kubelet dir is an rshared mount, as on a node.
fn node(extra_config: &str) -> World {
    let w = World::new(extra_config);
    use nix::mount::{MsFlags, mount};
    mount(
        Some(&w.kubelet),
        &w.kubelet,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind kubelet dir");
    // Private first: a bind of a dir of a shared mount would join that
    // mount's peer group, and our targets would propagate out of the test.
    mount(
        None::<&str>,
        &w.kubelet,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make kubelet dir private");
    mount(
        None::<&str>,
        &w.kubelet,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .expect("make kubelet dir rshared");
    w
}

/// A pod: a shell in its own mount namespace, chrooted, its volume at /vol
/// and a results dir at /out. Dropping it kills its whole process group.
struct Pod {
    child: Child,
    out: PathBuf,
}

const POD_SETUP: &str = r#"set -e
mount -t tmpfs -o mode=755 tmpfs "$R"
mkdir -p "$R/vol" "$R/out" "$R/tmp" "$R/usr" "$R/dev"
touch "$R/dev/null"
mount --bind /dev/null "$R/dev/null"
mount --rbind "$T" "$R/vol"
mount --make-rslave "$R/vol"
mount --bind "$O" "$R/out"
mount --rbind /usr "$R/usr"
mount -o remount,bind,ro "$R/usr"
for d in bin lib lib64 sbin; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$R/$d"; fi
done
echo ready > "$O/ready"
exec chroot "$R" /bin/sh -c "$POD_SCRIPT"
"#;

impl Pod {
    fn start(w: &World, name: &str, target: &Path, script: &str) -> Pod {
        let dir = w.root.join("pods-rt").join(name);
        let (root, out) = (dir.join("root"), dir.join("out"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "slave", "--", "sh", "-c", POD_SETUP])
            .env("R", &root)
            .env("T", target)
            .env("O", &out)
            .env("POD_SCRIPT", script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .process_group(0)
            .spawn()
            .expect("unshare");
        let pod = Pod { child, out };
        let start = Instant::now();
        while !pod.out.join("ready").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pod did not start: {}",
                pod.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pod
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.parent().unwrap().join("stderr")).unwrap_or_default()
    }

    /// The weir mounts the pod's namespace sees, for failure messages.
    fn weir_mounts(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.child.id()))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("fuse.weir"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.out.join(name)).unwrap_or_default()
    }

    /// Waits until the pod's script has exited, and says how.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "pod still running: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this test started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[test]
fn a_pod_scoped_to_team_a_cannot_reach_team_b_by_any_path() {
    timed(LIMIT, || {
        let mut w = node("  symlinks: true\n");
        for d in ["team-a", "team-b"] {
            std::fs::create_dir_all(w.data.join(d)).unwrap();
        }
        std::fs::write(w.data.join("team-a/a.txt"), b"team-a data").unwrap();
        std::fs::write(w.data.join("team-b/secret"), b"TEAM-B-SECRET").unwrap();
        let mut c = w.start("node");
        let t = w.target("pod-a", "vol");
        w.rt.block_on(
            c.node
                .node_publish_volume(publish("a", &t, &[("mountPath", "/team-a")])),
        )
        .unwrap();
        let host_b = w.data.join("team-b");
        let script = format!(
            r#"
cat /vol/a.txt > /out/seen
echo written-by-a > /vol/from-a.txt
ln -s ../team-b /vol/up
ln -s /team-b /vol/abs
ln -s {host_b} /vol/host
ln -s ../../../../../../../../team-b /vol/deep
for p in /vol/../team-b/secret /vol/team-b/secret /vol/up/secret /vol/abs/secret /vol/host/secret /vol/deep/secret ../team-b/secret /team-b/secret {host_b}/secret; do
  cat "$p" >> /out/seen 2>/dev/null || echo "refused $p" >> /out/refused
done
(cd /vol && cd .. && ls -a) >> /out/seen 2>&1
grep -Rs TEAM-B /vol /tmp >> /out/seen 2>/dev/null || true
echo done > /out/done
"#,
            host_b = host_b.display()
        );
        let mut pod = Pod::start(&w, "a", &t, &script);
        assert!(
            pod.wait(Duration::from_secs(60)).success(),
            "{}",
            pod.stderr()
        );
        let seen = pod.read("seen");
        assert!(
            seen.contains("team-a data"),
            "the pod reads its own volume: {seen}"
        );
        assert!(
            !seen.contains("TEAM-B-SECRET"),
            "team-b leaked into the pod:\n{seen}"
        );
        assert_eq!(
            pod.read("refused").lines().count(),
            9,
            "{}",
            pod.read("refused")
        );
        assert_eq!(
            std::fs::read(w.data.join("team-a/from-a.txt")).unwrap(),
            b"written-by-a\n"
        );
        // The symlinks the pod planted cannot redirect a later volume either.
        for planted in ["/team-a/up", "/team-a/abs", "/team-a/host", "/team-a/deep"] {
            let t2 = w.target("pod-x", "v2");
            let r = w.rt.block_on(c.node.node_publish_volume(publish(
                "x",
                &t2,
                &[("mountPath", planted)],
            )));
            assert_eq!(code(r), tonic::Code::InvalidArgument, "{planted}");
        }
    });
}

#[test]
fn two_hundred_publish_cycles_leave_mountinfo_as_it_was() {
    timed(LIMIT, || {
        let mut w = node("");
        std::fs::create_dir_all(w.data.join("d")).unwrap();
        let mut c = w.start("node");
        // Bring the session up once, so that it is part of "before".
        let t0 = w.target("warm", "v");
        w.rt.block_on(c.node.node_publish_volume(publish("warm", &t0, &[])))
            .unwrap();
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("warm", &t0)))
            .unwrap();
        let before = w.mounts();
        let started = Instant::now();
        for i in 0..200 {
            let t = w.target(&format!("pod-{i}"), "vol");
            let ro = i % 2 == 1;
            let req = NodePublishVolumeRequest {
                readonly: ro,
                ..publish(&format!("v{i}"), &t, &[("mountPath", "/d")])
            };
            w.rt.block_on(c.node.node_publish_volume(req)).unwrap();
            w.rt.block_on(
                c.node
                    .node_unpublish_volume(unpublish(&format!("v{i}"), &t)),
            )
            .unwrap();
            assert!(!t.exists());
        }
        eprintln!("200 publish/unpublish cycles in {:?}", started.elapsed());
        assert_eq!(w.mounts(), before);
        let records = std::fs::read_dir(w.state.join("publications"))
            .unwrap()
            .count();
        assert_eq!(records, 0);
    });
}

/// The weir daemons serving this test's session mount.
fn daemons(w: &World) -> Vec<i32> {
    pids_with(&w.session_mount().to_string_lossy())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--fuse-fd"))
        })
        .collect()
}

#[test]
fn two_volumes_share_one_fuse_process_and_a_plugin_restart_leaks_nothing() {
    timed(LIMIT, || {
        let mut w = node("");
        for d in ["x", "y"] {
            std::fs::create_dir_all(w.data.join(d)).unwrap();
            std::fs::write(w.data.join(d).join("f"), d).unwrap();
        }
        let baseline = w.mounts();
        let mut c = w.start("node");
        let (tx, ty) = (w.target("p1", "x"), w.target("p2", "y"));
        w.rt.block_on(
            c.node
                .node_publish_volume(publish("x", &tx, &[("mountPath", "/x")])),
        )
        .unwrap();
        w.rt.block_on(
            c.node
                .node_publish_volume(publish("y", &ty, &[("mountPath", "/y")])),
        )
        .unwrap();
        let pids = daemons(&w);
        assert_eq!(pids.len(), 1, "one FUSE process for both volumes: {pids:?}");
        let pod = Pod::start(
            &w,
            "p1",
            &tx,
            "while :; do if cat /vol/f > /out/last.tmp; then mv /out/last.tmp /out/last; else echo ERR >> /out/errors; fi; sleep 0.05; done",
        );
        let published = w.mounts();
        // Restart with SIGTERM, then with SIGKILL: each time the daemon is
        // re-adopted, no mount is added or lost, and the pod keeps reading.
        for how in ["term", "kill"] {
            if how == "term" {
                assert!(w.stop_plugin().success(), "SIGTERM exits 0");
            } else {
                w.kill_plugin();
            }
            assert!(
                std::fs::read(tx.join("f")).is_ok(),
                "mounts stay up while the plugin is down"
            );
            c = w.start("node");
            assert_eq!(
                daemons(&w),
                pids,
                "{how}: re-adopted, no second FUSE process:\n{}",
                w.log()
            );
            assert_eq!(w.mounts(), published, "{how}: no mount leaked or lost");
            let stats =
                w.rt.block_on(c.node.node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: "y".into(),
                    volume_path: ty.to_string_lossy().into(),
                    staging_target_path: String::new(),
                }))
                .unwrap()
                .into_inner();
            assert!(!stats.volume_condition.unwrap().abnormal);
        }
        assert!(w.log().contains("adopted a running FUSE session"));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(pod.read("errors"), "", "the pod saw no error");
        assert_eq!(pod.read("last"), "x");
        drop(pod);
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("x", &tx)))
            .unwrap();
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("y", &ty)))
            .unwrap();
        let left: Vec<String> = w
            .mounts()
            .into_iter()
            .filter(|m| !m.contains("/mnt/default"))
            .collect();
        assert_eq!(left, baseline);
    });
}

#[test]
fn a_killed_daemon_is_replaced_while_a_pod_reads() {
    timed(LIMIT, || {
        let mut w = node("");
        std::fs::create_dir_all(w.data.join("d")).unwrap();
        let big = common::pattern(4 << 20, 7);
        std::fs::write(w.data.join("d/big"), &big).unwrap();
        std::fs::write(w.data.join("d/small"), b"hello").unwrap();
        let mut c = w.start("node");
        let t = w.target("p", "v");
        w.rt.block_on(
            c.node
                .node_publish_volume(publish("v", &t, &[("mountPath", "/d")])),
        )
        .unwrap();
        let script = r#"
i=0
while :; do
  [ "$(cat /vol/small)" = hello ] || echo "small $i" >> /out/errors
  cat /vol/big > /tmp/copy || echo "big $i" >> /out/errors
  i=$((i+1)); echo $i > /out/count.tmp && mv /out/count.tmp /out/count
done"#;
        let pod = Pod::start(&w, "reader", &t, script);
        let mut last = 0;
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(300));
            let pid = w.daemon_pid().unwrap();
            // SAFETY: kill(2) of the daemon this test's plugin started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let start = Instant::now();
            while w.daemon_pid() == Some(pid) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no takeover:\n{}",
                    w.log()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            eprintln!(
                "daemon {pid} replaced by {:?} after {:?}",
                w.daemon_pid(),
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        let count: u64 = pod.read("count").trim().parse().unwrap_or(0);
        assert!(count > last, "the pod kept reading");
        last = count;
        assert_eq!(
            pod.read("errors"),
            "",
            "the pod saw an error ({last} rounds):\n{}",
            w.log()
        );
        assert_eq!(daemons(&w).len(), 1);
    });
}

#[test]
fn after_plugin_and_daemon_die_together_a_restart_rebinds_within_five_seconds() {
    timed(LIMIT, || {
        let mut w = node("");
        std::fs::create_dir_all(w.data.join("d")).unwrap();
        std::fs::write(w.data.join("d/small"), b"hello").unwrap();
        let mut c = w.start("node");
        let t = w.target("p", "v");
        let pod_info = [("mountPath", "/d")];
        w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &pod_info)))
            .unwrap();
        let script = r#"
while :; do
  if [ "$(cat /vol/small 2>/dev/null)" = hello ]; then date +%s%N > /out/ok.tmp; mv /out/ok.tmp /out/ok; fi
  sleep 0.01
done"#;
        let pod = Pod::start(&w, "reader", &t, script);
        let real = w.kubelet.join("pods/p/volumes/kubernetes.io~csi/v/mount");
        // Five crashes: the stack of binds on the target stays capped.
        for round in 0..5 {
            let pid = w.daemon_pid().unwrap();
            w.kill_plugin();
            // SAFETY: kill(2) of the daemon this test's plugin started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(300));
            assert!(std::fs::read(t.join("small")).is_err(), "the mount is dead");
            let restarted = Instant::now();
            let since = now_nanos();
            c = w.start("node");
            loop {
                let ok: u128 = pod.read("ok").trim().parse().unwrap_or(0);
                if ok > since {
                    break;
                }
                assert!(
                    restarted.elapsed() < Duration::from_secs(5),
                    "round {round}: the pod's new opens still fail:\n{}\npod mounts:\n{}\nhost mounts:\n{:#?}\n{}",
                    w.log(),
                    pod.weir_mounts(),
                    w.mounts(),
                    pod.stderr()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            eprintln!(
                "round {round}: new opens in the pod work {:?} after the restart",
                restarted.elapsed()
            );
            let stack = mount_points_below(&w.root)
                .into_iter()
                .filter(|(_, p)| *p == real)
                .count();
            assert!(
                (2..=weir_csi::publisher::MAX_STACK).contains(&stack),
                "round {round}: {stack} binds on the target"
            );
            let stats =
                w.rt.block_on(c.node.node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: "v".into(),
                    volume_path: t.to_string_lossy().into(),
                    staging_target_path: String::new(),
                }))
                .unwrap()
                .into_inner();
            assert!(!stats.volume_condition.unwrap().abnormal);
        }
        assert_eq!(daemons(&w).len(), 1);
        drop(pod);
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("v", &t)))
            .unwrap();
        assert_eq!(
            mount_points_below(&w.root)
                .into_iter()
                .filter(|(_, p)| p.starts_with(w.kubelet.join("pods")))
                .count(),
            0
        );
    });
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
#[ignore = "needs cluster"]
fn a_real_kubelet_mounts_the_inline_volume_example() {
    // Run on a cluster with the driver installed (docs/install.md):
    //   kubectl apply -f deploy/examples/inline-volumes-pod.yaml
    //   kubectl wait --for=condition=Ready pod/weir-inline-demo
    // This machine has no API server; the harness above stands in for kubelet.
    let out = Command::new("kubectl")
        .args([
            "wait",
            "--for=condition=Ready",
            "pod/weir-inline-demo",
            "--timeout=120s",
        ])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
