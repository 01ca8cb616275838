//! `weir csi` over a real unix socket with real FUSE and bind mounts:
//! every RPC's answers and error codes, idempotency, read-only binds,
//! stats on healthy and broken mounts, the session's grace period, the
//! controller, metrics and Kubernetes Events on a recovery.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::csi::*;
use common::{signal, stop, timed};
use tonic::Code;
use weir_csi_proto::v1::volume_capability::access_mode::Mode;
use weir_csi_proto::v1::*;

const LIMIT: Duration = Duration::from_secs(120);

fn errno_of(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .unwrap_or(-1)
}

#[test]
fn identity_and_capabilities() {
    timed(LIMIT, || {
        let mut w = World::new("");
        let mut c = w.start("all");
        let info =
            w.rt.block_on(c.identity.get_plugin_info(GetPluginInfoRequest {}))
                .unwrap()
                .into_inner();
        assert_eq!(info.name, "fuse.csi.weir.dev");
        assert!(!info.vendor_version.is_empty());
        let caps =
            w.rt.block_on(
                c.identity
                    .get_plugin_capabilities(GetPluginCapabilitiesRequest {}),
            )
            .unwrap()
            .into_inner();
        assert!(
            format!("{caps:?}").contains("ControllerService"),
            "{caps:?}"
        );
        let node =
            w.rt.block_on(c.node.node_get_capabilities(NodeGetCapabilitiesRequest {}))
                .unwrap()
                .into_inner();
        let types: Vec<i32> = node
            .capabilities
            .iter()
            .filter_map(|c| {
                c.r#type
                    .as_ref()
                    .map(|node_service_capability::Type::Rpc(r)| r.r#type)
            })
            .collect();
        assert_eq!(
            types,
            [2, 4],
            "GET_VOLUME_STATS and VOLUME_CONDITION, no STAGE_UNSTAGE"
        );
        let info =
            w.rt.block_on(c.node.node_get_info(NodeGetInfoRequest {}))
                .unwrap()
                .into_inner();
        assert_eq!(info.node_id, "node-1");
        let ctrl =
            w.rt.block_on(
                c.controller
                    .controller_get_capabilities(ControllerGetCapabilitiesRequest {}),
            )
            .unwrap()
            .into_inner();
        assert!(
            format!("{ctrl:?}").contains("CreateDeleteVolume"),
            "{ctrl:?}"
        );
        assert_eq!(ctrl.capabilities.len(), 1);
        let stage =
            w.rt.block_on(c.node.node_stage_volume(NodeStageVolumeRequest::default()));
        assert_eq!(code(stage), Code::Unimplemented);
        w.kill_plugin();
        let mut c = w.start("node");
        let caps =
            w.rt.block_on(
                c.identity
                    .get_plugin_capabilities(GetPluginCapabilitiesRequest {}),
            )
            .unwrap()
            .into_inner();
        assert!(
            caps.capabilities.is_empty(),
            "node mode offers no controller: {caps:?}"
        );
        let ctrl =
            w.rt.block_on(c.controller.create_volume(CreateVolumeRequest::default()));
        assert_eq!(code(ctrl), Code::Unimplemented);
    });
}

#[test]
fn publish_binds_the_directory_and_unpublish_takes_it_down() {
    timed(LIMIT, || {
        let mut w = World::new("");
        std::fs::create_dir_all(w.data.join("team-a")).unwrap();
        std::fs::write(w.data.join("team-a/hello.txt"), b"hello").unwrap();
        let port = free_port();
        w.flags.push(format!("--metrics-addr=127.0.0.1:{port}"));
        let before = w.mounts();
        let mut c = w.start("node");
        let t = w.target("pod-1", "vol");
        let req = publish("vol-1", &t, &[("mountPath", "/team-a")]);
        w.rt.block_on(c.node.node_publish_volume(req.clone()))
            .unwrap();
        assert_eq!(std::fs::read(t.join("hello.txt")).unwrap(), b"hello");
        std::fs::write(t.join("new.txt"), b"written").unwrap();
        assert_eq!(
            std::fs::read(w.data.join("team-a/new.txt")).unwrap(),
            b"written"
        );
        // Idempotent: the same publish again is OK and binds nothing more.
        let mounts = w.mounts();
        w.rt.block_on(c.node.node_publish_volume(req)).unwrap();
        assert_eq!(w.mounts(), mounts);
        let stats =
            w.rt.block_on(c.node.node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: "vol-1".into(),
                volume_path: t.to_string_lossy().into(),
                staging_target_path: String::new(),
            }))
            .unwrap()
            .into_inner();
        let cond = stats.volume_condition.unwrap();
        assert!(!cond.abnormal, "{cond:?}");
        assert_eq!(stats.usage.len(), 2);
        assert!(stats.usage[0].total > 0);
        let metrics = scrape(port);
        assert!(metrics.contains("weir_publications 1"), "{metrics}");
        assert!(metrics.contains("weir_sessions 1"), "{metrics}");
        // The daemon's own metrics come with the plugin's, through its
        // admin socket: the read above went through FUSE.
        assert!(
            metrics.contains("weir_fuse_requests_total{op=\"read\"}"),
            "{metrics}"
        );
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("vol-1", &t)))
            .unwrap();
        assert!(!t.exists(), "the target dir is removed");
        assert_eq!(
            std::fs::read(w.data.join("team-a/hello.txt")).unwrap(),
            b"hello",
            "user files are kept"
        );
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("vol-1", &t)))
            .unwrap();
        assert!(scrape(port).contains("weir_publications 0"));
        // Only the session mount is left, until its grace period ends.
        let after: Vec<String> = w
            .mounts()
            .into_iter()
            .filter(|m| !m.contains("/mnt/default"))
            .collect();
        assert_eq!(after, before);
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn hostile_and_missing_fields_are_refused() {
    timed(LIMIT, || {
        let mut w = World::new("  symlinks: true\n");
        for d in ["team-a", "team-b"] {
            std::fs::create_dir_all(w.data.join(d)).unwrap();
        }
        std::fs::write(w.data.join("team-b/secret"), b"b").unwrap();
        std::fs::write(w.data.join("file"), b"f").unwrap();
        std::os::unix::fs::symlink("../team-b", w.data.join("team-a/up")).unwrap();
        std::os::unix::fs::symlink("/etc", w.data.join("team-a/abs")).unwrap();
        std::os::unix::fs::symlink("team-b", w.data.join("rel")).unwrap();
        let outside = w.root.join("outside");
        std::fs::create_dir_all(outside.join("v/mount")).unwrap();
        std::os::unix::fs::symlink(&outside, w.kubelet.join("pods")).unwrap_or(());
        let mut c = w.start("node");
        let t = w
            .root
            .join("kubelet2/pods/u/volumes/kubernetes.io~csi/v/mount");
        let k = w.kubelet.display().to_string();
        let cases: Vec<(NodePublishVolumeRequest, Code)> = vec![
            (
                NodePublishVolumeRequest {
                    volume_id: String::new(),
                    ..publish("v", &t, &[])
                },
                Code::InvalidArgument,
            ),
            (
                NodePublishVolumeRequest {
                    target_path: String::new(),
                    ..publish("v", &t, &[])
                },
                Code::InvalidArgument,
            ),
            (
                NodePublishVolumeRequest {
                    volume_capability: None,
                    ..publish("v", &t, &[])
                },
                Code::InvalidArgument,
            ),
            (
                NodePublishVolumeRequest {
                    volume_capability: Some(block_cap()),
                    ..publish("v", &t, &[])
                },
                Code::InvalidArgument,
            ),
            (
                NodePublishVolumeRequest {
                    volume_capability: Some(mount_cap(Mode::Unknown, &[])),
                    ..publish("v", &t, &[])
                },
                Code::InvalidArgument,
            ),
            (
                NodePublishVolumeRequest {
                    volume_capability: Some(mount_cap(Mode::SingleNodeWriter, &["exec-me"])),
                    ..publish("v", &t, &[])
                },
                Code::InvalidArgument,
            ),
            (
                publish("v", std::path::Path::new("/etc/x"), &[]),
                Code::InvalidArgument,
            ),
            (publish("v", &t, &[]), Code::InvalidArgument),
            (
                publish(
                    "v",
                    std::path::Path::new(&format!(
                        "{k}/pods/u/volumes/kubernetes.io~csi/v/../../../../../etc"
                    )),
                    &[],
                ),
                Code::InvalidArgument,
            ),
            (
                publish(
                    "v",
                    std::path::Path::new(&format!("{k}/pods/u/volumes/kubernetes.io~csi/v")),
                    &[],
                ),
                Code::InvalidArgument,
            ),
            (
                publish(
                    "v",
                    std::path::Path::new(&format!("{k}/pods/u/volumes/kubernetes.io~csi/v/mount")),
                    &[],
                ),
                Code::InvalidArgument,
            ),
            (
                publish(
                    "v",
                    std::path::Path::new(&format!("{k}2/x")),
                    &[("mountPath", "/team-a")],
                ),
                Code::InvalidArgument,
            ),
        ];
        for (i, (req, want)) in cases.into_iter().enumerate() {
            let got = code(w.rt.block_on(c.node.node_publish_volume(req.clone())));
            assert_eq!(got, want, "case {i}: {req:?}");
        }
        // kubelet/pods is a symlink out of the kubelet dir: refused above
        // (last case but two). Now a real kubelet layout for the rest.
        std::fs::remove_file(w.kubelet.join("pods")).unwrap();
        let t = w.target("u", "v");
        for (ctx, want) in [
            (
                vec![("mountPath", "/team-a/../team-b")],
                Code::InvalidArgument,
            ),
            (vec![("mountPath", "../team-b")], Code::InvalidArgument),
            (vec![("mountPath", "/team-a/up")], Code::InvalidArgument),
            (vec![("mountPath", "/team-a/abs")], Code::InvalidArgument),
            (vec![("mountPath", "/rel")], Code::InvalidArgument),
            (vec![("mountPath", "/file")], Code::InvalidArgument),
            (vec![("mountPath", "/missing")], Code::NotFound),
            (vec![("mountpath", "/team-a")], Code::InvalidArgument),
            (
                vec![("mountPath", "/team-a"), ("createDirectory", "yes")],
                Code::InvalidArgument,
            ),
        ] {
            let got = code(w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &ctx))));
            assert_eq!(got, want, "{ctx:?}");
        }
        assert_eq!(
            w.mounts()
                .into_iter()
                .filter(|m| m.contains("kubelet"))
                .count(),
            0,
            "no failed publish left a mount"
        );
        // Incompatible republish of one target.
        w.rt.block_on(
            c.node
                .node_publish_volume(publish("v", &t, &[("mountPath", "/team-a")])),
        )
        .unwrap();
        for req in [
            publish("v", &t, &[("mountPath", "/team-b")]),
            publish("other", &t, &[("mountPath", "/team-a")]),
            NodePublishVolumeRequest {
                readonly: true,
                ..publish("v", &t, &[("mountPath", "/team-a")])
            },
        ] {
            assert_eq!(
                code(w.rt.block_on(c.node.node_publish_volume(req))),
                Code::AlreadyExists
            );
        }
        // Unpublish and stats with missing or unknown fields.
        assert_eq!(
            code(w.rt.block_on(c.node.node_unpublish_volume(unpublish("", &t)))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                w.rt.block_on(
                    c.node
                        .node_unpublish_volume(unpublish("v", std::path::Path::new("")))
                )
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                w.rt.block_on(
                    c.node
                        .node_unpublish_volume(unpublish("v", std::path::Path::new("/etc")))
                )
            ),
            Code::InvalidArgument
        );
        let stats = |id: &str, path: &str| NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: path.into(),
            staging_target_path: String::new(),
        };
        assert_eq!(
            code(w.rt.block_on(c.node.node_get_volume_stats(stats("", "x")))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(w.rt.block_on(c.node.node_get_volume_stats(stats("v", "")))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(w.rt.block_on(c.node.node_get_volume_stats(stats("v", "some/path")))),
            Code::NotFound
        );
        assert_eq!(
            code(
                w.rt.block_on(
                    c.node
                        .node_get_volume_stats(stats("other", &t.to_string_lossy()))
                )
            ),
            Code::NotFound
        );
        // Another volume's unpublish leaves this bind alone.
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("other", &t)))
            .unwrap();
        assert!(t.join("up").symlink_metadata().is_ok(), "still bound");
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("v", &t)))
            .unwrap();
        assert!(w.data.join("team-b/secret").exists());
    });
}

#[test]
fn create_directory_and_read_only_binds() {
    timed(LIMIT, || {
        let mut w = World::new("");
        std::fs::create_dir_all(w.data.join("ro")).unwrap();
        let mut c = w.start("node");
        let t1 = w.target("p", "new");
        w.rt.block_on(c.node.node_publish_volume(publish(
            "new",
            &t1,
            &[("mountPath", "/made/here"), ("createDirectory", "true")],
        )))
        .unwrap();
        assert!(w.data.join("made/here").is_dir());
        std::fs::write(t1.join("f"), b"x").unwrap();
        let ro_requests = [
            NodePublishVolumeRequest {
                readonly: true,
                ..publish("ro1", &w.target("p", "ro1"), &[("mountPath", "/ro")])
            },
            NodePublishVolumeRequest {
                volume_capability: Some(mount_cap(Mode::MultiNodeReaderOnly, &[])),
                ..publish("ro2", &w.target("p", "ro2"), &[("mountPath", "/ro")])
            },
            NodePublishVolumeRequest {
                volume_capability: Some(mount_cap(Mode::SingleNodeWriter, &["ro", "noexec"])),
                ..publish("ro3", &w.target("p", "ro3"), &[("mountPath", "/ro")])
            },
        ];
        for req in ro_requests {
            let t = std::path::PathBuf::from(&req.target_path);
            w.rt.block_on(c.node.node_publish_volume(req)).unwrap();
            assert_eq!(errno_of(std::fs::write(t.join("nope"), b"x")), libc::EROFS);
            assert!(!w.data.join("ro/nope").exists());
            let line = w
                .mounts()
                .into_iter()
                .rev()
                .find(|m| m.contains(&*t.to_string_lossy()))
                .unwrap();
            assert!(
                line.contains(" ro,") && line.contains("nosuid") && line.contains("nodev"),
                "{line}"
            );
        }
    });
}

#[test]
fn stats_report_unmounted_and_hung_volumes() {
    timed(LIMIT, || {
        let mut w = World::new("");
        let mut c = w.start("node");
        let t = w.target("p", "v");
        w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &[])))
            .unwrap();
        let req = NodeGetVolumeStatsRequest {
            volume_id: "v".into(),
            volume_path: t.to_string_lossy().into(),
            staging_target_path: String::new(),
        };
        let mut node = c.node.clone();
        let mut stats = |w: &World| {
            w.rt.block_on(node.node_get_volume_stats(req.clone()))
                .unwrap()
                .into_inner()
                .volume_condition
                .unwrap()
        };
        assert!(!stats(&w).abnormal);
        // Hung: the daemon stops answering. The stats probe gives up after
        // half of --probe-timeout (3 s) and says so; the watchdog replaces
        // the stopped daemon and the volume is normal again.
        let pid = w.daemon_pid().unwrap();
        stop(pid);
        let started = Instant::now();
        let cond = stats(&w);
        assert!(cond.abnormal && cond.message.contains("hung"), "{cond:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered under its deadline (1.5 s), not when the daemon did"
        );
        let start = Instant::now();
        // The replacement answers before the plugin records its PID.
        while stats(&w).abnormal || w.daemon_pid() == Some(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the watchdog did not bring it back:\n{}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_ne!(w.daemon_pid(), Some(pid));
        // Not mounted: someone unmounted the target behind our back.
        nix::mount::umount2(&t, nix::mount::MntFlags::MNT_DETACH).unwrap();
        let cond = stats(&w);
        assert!(
            cond.abnormal && cond.message.contains("not mounted"),
            "{cond:?}"
        );
        // A republish repairs it.
        w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &[])))
            .unwrap();
        assert!(!stats(&w).abnormal);
    });
}

#[test]
fn an_unused_session_stops_after_the_grace_period() {
    timed(LIMIT, || {
        let mut w = World::new("");
        // Long enough that the republish below lands within it on a loaded
        // machine.
        w.flags.push("--session-grace=5s".into());
        let mut c = w.start("node");
        let t = w.target("p", "v");
        w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &[])))
            .unwrap();
        let pid = w.daemon_pid().unwrap();
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("v", &t)))
            .unwrap();
        // Used again within the grace: the same daemon serves.
        w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &[])))
            .unwrap();
        std::thread::sleep(Duration::from_secs(6));
        assert_eq!(w.daemon_pid(), Some(pid));
        assert!(weir_testkit::is_mounted(&w.session_mount()));
        w.rt.block_on(c.node.node_unpublish_volume(unpublish("v", &t)))
            .unwrap();
        let start = Instant::now();
        while weir_testkit::is_mounted(&w.session_mount())
            || std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "session still up:\n{}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(w.mounts().is_empty(), "{:?}", w.mounts());
    });
}

fn create(name: &str, params: &[(&str, &str)], required: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap(Mode::MultiNodeMultiWriter, &[])],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn controller_creates_and_deletes_only_what_it_recorded() {
    timed(LIMIT, || {
        let mut w = World::new("");
        std::fs::create_dir_all(w.data.join("volumes/keep")).unwrap();
        std::fs::write(w.data.join("volumes/keep/precious"), b"p").unwrap();
        let mut c = w.start("all");
        let sc = [
            ("basePath", "/volumes"),
            ("pathPattern", "${pvc.namespace}/${pvc.name}"),
            ("csi.storage.k8s.io/pvc/namespace", "team-a"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pv/name", "pvc-1"),
        ];
        let v =
            w.rt.block_on(c.controller.create_volume(create("pvc-1", &sc, 1 << 30)))
                .unwrap()
                .into_inner()
                .volume
                .unwrap();
        assert_eq!(
            v.volume_context.get("mountPath").map(String::as_str),
            Some("/volumes/team-a/data")
        );
        assert_eq!(
            v.volume_context.get("createDirectory").map(String::as_str),
            Some("true")
        );
        assert_eq!(v.capacity_bytes, 1 << 30);
        let again =
            w.rt.block_on(c.controller.create_volume(create("pvc-1", &sc, 1 << 30)))
                .unwrap()
                .into_inner()
                .volume
                .unwrap();
        assert_eq!(again, v, "idempotent by name");
        assert_eq!(
            code(w.rt.block_on(c.controller.create_volume(create("pvc-1", &sc, 2 << 30)))),
            Code::AlreadyExists
        );
        let overlapping = [("basePath", "/volumes"), ("pathPattern", "team-a")];
        assert_eq!(
            code(w.rt.block_on(c.controller.create_volume(create("pvc-2", &overlapping, 0)))),
            Code::AlreadyExists
        );
        assert_eq!(
            code(w.rt.block_on(c.controller.create_volume(create("", &sc, 0)))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(w.rt.block_on(c.controller.create_volume(create(
                "x",
                &[("pathPattern", "${pvc.name}")],
                0
            )))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                w.rt.block_on(c.controller.create_volume(create(
                    "x",
                    &[("pathPattern", "../x")],
                    0
                )))
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                w.rt.block_on(
                    c.controller
                        .create_volume(create("x", &[("colour", "blue")], 0))
                )
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                w.rt.block_on(c.controller.create_volume(CreateVolumeRequest {
                    volume_capabilities: vec![block_cap()],
                    ..create("x", &[], 0)
                }))
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                w.rt.block_on(c.controller.create_volume(CreateVolumeRequest {
                    capacity_range: Some(CapacityRange {
                        required_bytes: 10,
                        limit_bytes: 5
                    }),
                    ..create("x", &[], 0)
                }))
            ),
            Code::OutOfRange
        );
        // The node creates the directory on first use.
        let t = w.target("p", "pvc-1");
        let ctx: Vec<(&str, &str)> = v
            .volume_context
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        w.rt.block_on(c.node.node_publish_volume(publish(&v.volume_id, &t, &ctx)))
            .unwrap();
        std::fs::write(t.join("mine"), b"m").unwrap();
        w.rt.block_on(c.node.node_unpublish_volume(unpublish(&v.volume_id, &t)))
            .unwrap();
        // Validate.
        let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: caps,
            ..Default::default()
        };
        let ok =
            w.rt.block_on(c.controller.validate_volume_capabilities(validate(
                &v.volume_id,
                vec![mount_cap(Mode::SingleNodeWriter, &[])],
            )))
            .unwrap()
            .into_inner();
        assert!(ok.confirmed.is_some());
        let no =
            w.rt.block_on(
                c.controller
                    .validate_volume_capabilities(validate(&v.volume_id, vec![block_cap()])),
            )
            .unwrap()
            .into_inner();
        assert!(no.confirmed.is_none() && !no.message.is_empty());
        assert_eq!(
            code(
                w.rt.block_on(c.controller.validate_volume_capabilities(validate(
                    "nope",
                    vec![mount_cap(Mode::SingleNodeWriter, &[])]
                )))
            ),
            Code::NotFound
        );
        assert_eq!(
            code(
                w.rt.block_on(
                    c.controller
                        .validate_volume_capabilities(validate(&v.volume_id, vec![]))
                )
            ),
            Code::InvalidArgument
        );
        // Retain (the default): the data stays.
        w.rt.block_on(c.controller.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            std::fs::read(w.data.join("volumes/team-a/data/mine")).unwrap(),
            b"m"
        );
        // Delete: the directory goes.
        let del = [("basePath", "/scratch"), ("onDelete", "delete")];
        let d =
            w.rt.block_on(c.controller.create_volume(create("pvc-3", &del, 0)))
                .unwrap()
                .into_inner()
                .volume
                .unwrap();
        std::fs::create_dir_all(w.data.join("scratch/pvc-3/sub")).unwrap();
        std::fs::write(w.data.join("scratch/pvc-3/sub/f"), b"f").unwrap();
        w.rt.block_on(c.controller.delete_volume(DeleteVolumeRequest {
            volume_id: d.volume_id.clone(),
            ..Default::default()
        }))
        .unwrap();
        assert!(!w.data.join("scratch/pvc-3").exists());
        assert!(w.data.join("scratch").exists());
        // Crafted ids delete nothing, and are answered OK (CSI: an unknown volume is deleted already).
        for crafted in [
            "keep",
            "volumes",
            "/volumes/keep",
            "../data",
            "pvc-1",
            "pvc-3",
        ] {
            w.rt.block_on(c.controller.delete_volume(DeleteVolumeRequest {
                volume_id: crafted.into(),
                ..Default::default()
            }))
            .unwrap();
        }
        assert_eq!(
            std::fs::read(w.data.join("volumes/keep/precious")).unwrap(),
            b"p"
        );
        assert_eq!(
            std::fs::read(w.data.join("volumes/team-a/data/mine")).unwrap(),
            b"m"
        );
        assert_eq!(
            code(w.rt.block_on(c.controller.delete_volume(DeleteVolumeRequest::default()))),
            Code::InvalidArgument
        );
        // Records survive a controller restart.
        w.rt.block_on(c.controller.create_volume(create("pvc-1", &sc, 1 << 30)))
            .unwrap();
        w.kill_plugin();
        let mut c = w.start("controller");
        assert_eq!(
            code(w.rt.block_on(c.controller.create_volume(create("pvc-1", &sc, 2 << 30)))),
            Code::AlreadyExists
        );
    });
}

/// A stand-in Kubernetes API server: answers every request 201 and keeps
/// what was POSTed.
struct ApiServer {
    port: u16,
    posted: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

fn api_server(rt: &tokio::runtime::Runtime) -> ApiServer {
    use http_body_util::{BodyExt, Full};
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let p = posted.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let p = p.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let p = p.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = String::from_utf8_lossy(&body).into_owned();
                            p.lock().unwrap().push((path, body.clone()));
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(201)
                                    .header("content-type", "application/json")
                                    .body(Full::new(hyper::body::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    ApiServer { port, posted }
}

#[test]
fn a_takeover_is_posted_as_an_event_on_the_pod() {
    timed(LIMIT, || {
        let mut w = World::new("");
        let api = api_server(&w.rt);
        let kubeconfig = w.root.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"http://127.0.0.1:{}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n",
                api.port
            ),
        )
        .unwrap();
        w.env
            .push(("KUBECONFIG".into(), kubeconfig.to_string_lossy().into()));
        let mut c = w.start("node");
        let t = w.target("uid-1", "v");
        let pod = [
            ("csi.storage.k8s.io/pod.name", "trainer-0"),
            ("csi.storage.k8s.io/pod.namespace", "ml"),
            ("csi.storage.k8s.io/pod.uid", "uid-1"),
        ];
        w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &pod)))
            .unwrap();
        let pid = w.daemon_pid().unwrap();
        signal(pid, libc::SIGKILL);
        let start = Instant::now();
        let event = loop {
            if let Some(e) = api.posted.lock().unwrap().first().cloned() {
                break e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no event posted:\n{}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(event.0, "/api/v1/namespaces/ml/events");
        let body: serde_json::Value = serde_json::from_str(&event.1).unwrap();
        assert_eq!(body["reason"], "FuseDaemonReplaced");
        assert_eq!(body["involvedObject"]["name"], "trainer-0");
        assert_eq!(body["involvedObject"]["uid"], "uid-1");
        assert_eq!(body["type"], "Normal");
        assert!(
            t.read_dir().is_ok(),
            "the volume still works after the takeover"
        );
    });
}

#[test]
fn without_an_api_server_recovery_is_only_logged() {
    timed(LIMIT, || {
        let mut w = World::new("");
        let mut c = w.start("node");
        let t = w.target("uid-1", "v");
        let pod = [
            ("csi.storage.k8s.io/pod.name", "p"),
            ("csi.storage.k8s.io/pod.namespace", "ns"),
            ("csi.storage.k8s.io/pod.uid", "uid-1"),
        ];
        w.rt.block_on(c.node.node_publish_volume(publish("v", &t, &pod)))
            .unwrap();
        signal(w.daemon_pid().unwrap(), libc::SIGKILL);
        let start = Instant::now();
        while !w.log().contains("no Kubernetes API server is configured") {
            assert!(start.elapsed() < Duration::from_secs(30), "{}", w.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(t.read_dir().is_ok());
    });
}
