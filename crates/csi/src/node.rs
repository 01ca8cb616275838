//! The CSI Node service: checks each request, serialises calls per
//! volume, and runs the blocking work (`publications`, `stats`) on
//! blocking threads so the gRPC server never waits on a FUSE mount.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic::{Request, Response, Status};
use weir_csi_proto::v1::node_server::Node;
use weir_csi_proto::v1::node_service_capability::{Rpc, rpc::Type as RpcType};
use weir_csi_proto::v1::volume_usage::Unit;
use weir_csi_proto::v1::*;

use crate::error::{CsiError, required};
use crate::locks::KeyLocks;
use crate::publications::Publications;
use crate::sessions::SESSION;
use crate::state::Publication;
use crate::stats::{Health, Prober};
use crate::{capability, context};

/// The Node service.
#[derive(Debug, Clone)]
pub struct NodeService {
    node_id: String,
    pubs: Arc<Publications>,
    prober: Arc<Prober>,
    locks: Arc<KeyLocks>,
    ready: Arc<AtomicBool>,
    lock_wait: Duration,
}

impl NodeService {
    /// The service over `pubs`; it answers UNAVAILABLE until `ready`.
    pub fn new(
        node_id: String,
        pubs: Arc<Publications>,
        probe_timeout: Duration,
        ready: Arc<AtomicBool>,
    ) -> NodeService {
        NodeService {
            node_id,
            pubs,
            // Half the watchdog's timeout: kubelet hears of a hung mount
            // before the watchdog replaces its daemon, and a stats call
            // never waits as long as the watchdog does.
            prober: Arc::new(Prober::new(probe_timeout / 2)),
            locks: Arc::new(KeyLocks::default()),
            ready,
            // Longer than one call's own deadlines, so a queued call waits
            // for a slow one rather than failing at once.
            lock_wait: probe_timeout * 3,
        }
    }

    fn check_ready(&self) -> Result<(), CsiError> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(CsiError::Unavailable(
                "the node plugin is still recovering its sessions; retry".into(),
            ))
        }
    }

    fn publication(
        &self,
        req: &NodePublishVolumeRequest,
    ) -> Result<(Publication, crate::paths::Target), CsiError> {
        let volume_id = required(&req.volume_id, "volume_id")?;
        let raw_target = required(&req.target_path, "target_path")?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| CsiError::Invalid("volume_capability is required".into()))?;
        let access = capability::check(cap)?;
        let ctx = context::parse(&req.volume_context)?;
        let (target, key) = self.pubs.target(raw_target)?;
        let p = Publication {
            volume_id: volume_id.to_string(),
            target: key,
            session: SESSION.to_string(),
            mount_path: ctx.mount_path,
            create_directory: ctx.create_directory,
            read_only: req.readonly || access.read_only,
            attrs: access.attrs,
            ephemeral: ctx.ephemeral,
            pod: ctx.pod,
        };
        Ok((p, target))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CsiError> + Send + 'static,
) -> Result<T, CsiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CsiError::Internal(format!("worker failed: {e}")))?
}

fn rpc(t: RpcType) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(Rpc { r#type: t as i32 })),
    }
}

fn usage(avail: i64, total: i64, used: i64, unit: Unit) -> VolumeUsage {
    VolumeUsage {
        available: avail,
        total,
        used,
        unit: unit as i32,
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(CsiError::Unimplemented(
            "weir has no staging: the node's one FUSE session replaces it".into(),
        )
        .into())
    }

    async fn node_unstage_volume(
        &self,
        _: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(CsiError::Unimplemented(
            "weir has no staging: the node's one FUSE session replaces it".into(),
        )
        .into())
    }

    async fn node_publish_volume(
        &self,
        req: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = req.into_inner();
        let (p, target) = self.publication(&req)?;
        self.check_ready()?;
        let _guard = self.locks.lock(&p.volume_id, self.lock_wait).await?;
        let pubs = self.pubs.clone();
        blocking(move || pubs.publish(p, &target)).await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = req.into_inner();
        let volume_id = required(&req.volume_id, "volume_id")?.to_string();
        let raw = required(&req.target_path, "target_path")?;
        let (target, key) = self.pubs.target(raw)?;
        self.check_ready()?;
        let _guard = self.locks.lock(&volume_id, self.lock_wait).await?;
        let pubs = self.pubs.clone();
        blocking(move || pubs.unpublish(&volume_id, &target, &key)).await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = req.into_inner();
        let volume_id = required(&req.volume_id, "volume_id")?;
        let path = required(&req.volume_path, "volume_path")?;
        let found = self
            .pubs
            .target(path)
            .ok()
            .and_then(|(t, key)| self.pubs.get(&key).map(|p| (t, p)))
            .filter(|(_, p)| p.volume_id == volume_id);
        let Some((target, _)) = found else {
            return Err(CsiError::NotFound(format!(
                "volume {volume_id:?} is not published at {path}"
            ))
            .into());
        };
        let real = self.pubs.real_path(&target);
        let device = self.pubs.sessions().device();
        let prober = self.prober.clone();
        let health = blocking(move || Ok(prober.check(&real, device))).await?;
        let (usage, condition) = match health {
            Health::Normal(u) => (
                vec![
                    usage(u.bytes.1, u.bytes.0, u.bytes.2, Unit::Bytes),
                    usage(u.inodes.1, u.inodes.0, u.inodes.2, Unit::Inodes),
                ],
                VolumeCondition {
                    abnormal: false,
                    message: "the volume answers".into(),
                },
            ),
            Health::Abnormal(message) => (
                Vec::new(),
                VolumeCondition {
                    abnormal: true,
                    message,
                },
            ),
        };
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition),
        }))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(CsiError::Unimplemented("weir volumes have no size to expand".into()).into())
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![rpc(RpcType::GetVolumeStats), rpc(RpcType::VolumeCondition)],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
