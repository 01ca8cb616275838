//! A real `weir csi` for tests: a plugin process on a unix socket, a gRPC
//! client for it, kubelet-style target paths, and a guard that, on drop
//! (also after a failed assertion), kills the plugin and the session
//! daemon it started (by PID) and lazily unmounts everything mounted
//! below the test's own directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use weir_csi_proto::v1::controller_client::ControllerClient;
use weir_csi_proto::v1::identity_client::IdentityClient;
use weir_csi_proto::v1::node_client::NodeClient;
use weir_csi_proto::v1::volume_capability::access_mode::Mode;
use weir_csi_proto::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use weir_csi_proto::v1::*;

/// One test's CSI world: directories, the namespace's storage, a plugin.
#[derive(Debug)]
pub struct World {
    pub tmp: tempfile::TempDir,
    /// The canonical root of everything this test mounts.
    pub root: PathBuf,
    /// The storage behind the namespace (file://).
    pub data: PathBuf,
    pub kubelet: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub plugin: Option<Child>,
    /// Extra `weir csi` flags.
    pub flags: Vec<String>,
    /// Extra environment of the plugin.
    pub env: Vec<(String, String)>,
    pub rt: tokio::runtime::Runtime,
}

/// The gRPC clients.
#[derive(Debug, Clone)]
pub struct Clients {
    pub identity: IdentityClient<Channel>,
    pub node: NodeClient<Channel>,
    pub controller: ControllerClient<Channel>,
}

impl World {
    /// Directories and a config; `extra_config` is appended to the YAML.
    pub fn new(extra_config: &str) -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical tmp");
        let data = root.join("data");
        let kubelet = root.join("kubelet");
        for d in [&data, &kubelet] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let config = root.join("weir.yaml");
        std::fs::write(
            &config,
            format!(
                "mounts:\n  - path: /\n    ufs: \"file://{}\"\ncache:\n  dir: {}\nfuse:\n  options: [allow_other]\n{extra_config}",
                data.display(),
                root.join("cache").display()
            ),
        )
        .expect("config");
        World {
            state: root.join("state"),
            socket: root.join("csi.sock"),
            tmp,
            root,
            data,
            kubelet,
            config,
            plugin: None,
            flags: Vec::new(),
            env: Vec::new(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    /// The plugin's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("plugin.log")).unwrap_or_default()
    }

    /// Starts `weir csi --mode MODE` and waits until Probe says ready.
    pub fn start(&mut self, mode: &str) -> Clients {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("plugin.log"))
            .expect("log");
        let mut cmd = Command::new(super::weir());
        cmd.arg("csi")
            .arg(format!("--endpoint=unix://{}", self.socket.display()))
            .arg("--node-id=node-1")
            .arg(format!("--state-dir={}", self.state.display()))
            .arg(format!("--kubelet-dir={}", self.kubelet.display()))
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--mode={mode}"))
            .arg("--probe-interval=1s")
            .arg("--probe-timeout=3s")
            .args(&self.flags)
            .env("WEIR_LOG", "info")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.plugin = Some(cmd.spawn().expect("start weir csi"));
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&mut self, limit: Duration) -> Clients {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .plugin
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("weir csi exited ({status}):\n{}", self.log());
            }
            if let Ok(mut c) = self.connect() {
                let ready = self
                    .rt
                    .block_on(c.identity.probe(ProbeRequest {}))
                    .ok()
                    .and_then(|r| r.into_inner().ready);
                if ready == Some(true) {
                    return c;
                }
            }
            assert!(
                start.elapsed() < limit,
                "weir csi not ready within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// gRPC clients over the unix socket.
    pub fn connect(&self) -> Result<Clients, tonic::transport::Error> {
        let path = self.socket.clone();
        let channel = self.rt.block_on(
            Endpoint::from_static("http://weir.invalid").connect_with_connector(tower::service_fn(
                move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                },
            )),
        )?;
        Ok(Clients {
            identity: IdentityClient::new(channel.clone()),
            node: NodeClient::new(channel.clone()),
            controller: ControllerClient::new(channel),
        })
    }

    /// Kills the plugin (SIGKILL) and waits for it; the session and the
    /// pods' mounts stay, as after a crash.
    pub fn kill_plugin(&mut self) {
        if let Some(mut c) = self.plugin.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the plugin with SIGTERM and waits for it to exit.
    pub fn stop_plugin(&mut self) -> std::process::ExitStatus {
        let mut c = self.plugin.take().expect("plugin running");
        // SAFETY: kill(2) of the child this test started.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                panic!("weir csi ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The session daemon's PID, as the plugin recorded it.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state.join("sessions/default/daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The session's mount point.
    pub fn session_mount(&self) -> PathBuf {
        self.state.join("mnt/default")
    }

    /// A kubelet-style target of pod `uid`, volume `name` (its parent made,
    /// as kubelet does).
    pub fn target(&self, uid: &str, name: &str) -> PathBuf {
        let dir = self
            .kubelet
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~csi")
            .join(name);
        std::fs::create_dir_all(&dir).expect("target parent");
        dir.join("mount")
    }

    /// The lines of mountinfo below this test's root (id and parent dropped,
    /// so two readings compare).
    pub fn mounts(&self) -> Vec<String> {
        mounts_below(&self.root)
    }
}

/// Mount points of this namespace below `root`, as (id, path) in order.
pub fn mount_points_below(root: &Path) -> Vec<(u32, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let p = PathBuf::from(f.get(4)?);
            let id = f.first()?.parse().ok()?;
            p.starts_with(root).then_some((id, p))
        })
        .collect()
}

/// Mountinfo lines below `root` without the ids, for comparing.
pub fn mounts_below(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|p| Path::new(p).starts_with(root))
        })
        .map(|l| l.split(' ').skip(4).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Lazily unmounts everything below `root`, topmost first.
pub fn unmount_below(root: &Path) {
    for _ in 0..64 {
        let points = mount_points_below(root);
        let Some((_, p)) = points.last() else { return };
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_plugin();
        if let Some(pid) = self.daemon_pid() {
            // SAFETY: kill(2) of the daemon this test's plugin started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        unmount_below(&self.root);
    }
}

/// A mount capability in `mode`.
pub fn mount_cap(mode: Mode, flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: flags.iter().map(|s| s.to_string()).collect(),
            volume_mount_group: String::new(),
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A block capability.
pub fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A publish request of `volume` at `target` with context pairs.
pub fn publish(volume: &str, target: &Path, ctx: &[(&str, &str)]) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.into(),
        target_path: target.to_string_lossy().into_owned(),
        volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter, &[])),
        volume_context: ctx
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// An unpublish request.
pub fn unpublish(volume: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume.into(),
        target_path: target.to_string_lossy().into_owned(),
    }
}

/// The gRPC code of a result.
pub fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// PIDs of the processes whose command line names `needle`.
pub fn pids_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}
