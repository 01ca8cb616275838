//! The CSI Controller service: dynamic volumes are directories of the
//! namespace, named by the StorageClass (`basePath`, `pathPattern`) from
//! the PVC and PV names that csi-provisioner passes. Creating a volume
//! only records it (the node creates the directory on first use); deleting
//! one removes its directory only with `onDelete: delete`, and only for a
//! volume this controller recorded, so a crafted id deletes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};
use weir_csi_proto::v1::controller_server::Controller;
use weir_csi_proto::v1::controller_service_capability::{Rpc, rpc::Type as RpcType};
use weir_csi_proto::v1::validate_volume_capabilities_response::Confirmed;
use weir_csi_proto::v1::*;

use crate::context::{CREATE_DIRECTORY, MOUNT_PATH};
use crate::error::{CsiError, required};
use crate::locks::KeyLocks;
use crate::state::{OnDelete, Records, VolumeRecord};
use crate::storage::Storage;
use crate::{capability, paths};

const BASE_PATH: &str = "basePath";
const PATH_PATTERN: &str = "pathPattern";
const ON_DELETE: &str = "onDelete";
const DEFAULT_PATTERN: &str = "${pv.name}";
const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
const PV_NAME: &str = "csi.storage.k8s.io/pv/name";
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The Controller service.
#[derive(Debug, Clone)]
pub struct ControllerService {
    records: Records,
    volumes: Arc<Mutex<BTreeMap<String, VolumeRecord>>>,
    storage: Arc<Storage>,
    locks: Arc<KeyLocks>,
}

impl ControllerService {
    /// The service over the volume records in `records`.
    pub fn new(records: Records, storage: Storage) -> Result<ControllerService, CsiError> {
        let volumes = records
            .load::<VolumeRecord>()?
            .into_iter()
            .map(|v| (v.id.clone(), v))
            .collect();
        Ok(ControllerService {
            records,
            volumes: Arc::new(Mutex::new(volumes)),
            storage: Arc::new(storage),
            locks: Arc::new(KeyLocks::default()),
        })
    }

    fn volumes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VolumeRecord>> {
        self.volumes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the volume `want`, or finds the same one recorded before.
    fn record(&self, want: VolumeRecord) -> Result<VolumeRecord, CsiError> {
        let mut volumes = self.volumes();
        if let Some(v) = volumes.values().find(|v| v.name == want.name) {
            if v.path == want.path && v.capacity == want.capacity && v.on_delete == want.on_delete {
                return Ok(v.clone());
            }
            return Err(CsiError::AlreadyExists(format!(
                "volume {:?} exists with another directory, capacity or onDelete",
                want.name
            )));
        }
        if let Some(v) = volumes.values().find(|v| overlaps(&v.path, &want.path)) {
            return Err(CsiError::AlreadyExists(format!(
                "{} overlaps the directory {} of volume {:?}; give each volume its own directory",
                want.path, v.path, v.name
            )));
        }
        self.records.put(&want.id, &want)?;
        volumes.insert(want.id.clone(), want.clone());
        Ok(want)
    }
}

/// Whether one directory is the other or inside it.
fn overlaps(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    inside(a, b) || inside(b, a)
}

/// One value substituted into a path: a single, plain path component.
fn component<'a>(
    params: &'a HashMap<String, String>,
    key: &str,
    var: &str,
) -> Result<&'a str, CsiError> {
    let v = params.get(key).map(String::as_str).ok_or_else(|| {
        CsiError::Invalid(format!(
            "pathPattern uses {var} but {key} is missing (run csi-provisioner with --extra-create-metadata)"
        ))
    })?;
    if v.is_empty() || v == "." || v == ".." || v.contains('/') || v.contains('\0') {
        return Err(CsiError::Invalid(format!(
            "{key} {v:?} is not a plain name"
        )));
    }
    Ok(v)
}

/// `basePath` joined with the expanded `pathPattern`, normalised.
fn volume_path(name: &str, params: &HashMap<String, String>) -> Result<String, CsiError> {
    let base = params.get(BASE_PATH).map(String::as_str).unwrap_or("/");
    let base =
        paths::mount_path(base).map_err(|e| CsiError::Invalid(format!("{BASE_PATH}: {e}")))?;
    let pattern = params
        .get(PATH_PATTERN)
        .map(String::as_str)
        .unwrap_or(DEFAULT_PATTERN);
    let mut expanded = pattern.to_string();
    for (var, key) in [
        ("${pvc.namespace}", PVC_NAMESPACE),
        ("${pvc.name}", PVC_NAME),
        ("${pv.name}", PV_NAME),
    ] {
        if expanded.contains(var) {
            let value = if key == PV_NAME && !params.contains_key(PV_NAME) {
                name
            } else {
                component(params, key, var)?
            };
            expanded = expanded.replace(var, value);
        }
    }
    if expanded.contains("${") {
        return Err(CsiError::Invalid(format!(
            "pathPattern {pattern:?} uses an unknown variable; known: ${{pvc.namespace}}, ${{pvc.name}}, ${{pv.name}}"
        )));
    }
    let rel = paths::mount_path(&expanded)
        .map_err(|e| CsiError::Invalid(format!("{PATH_PATTERN}: {e}")))?;
    if rel == "/" {
        return Err(CsiError::Invalid("pathPattern expands to nothing".into()));
    }
    Ok(if base == "/" {
        rel
    } else {
        format!("{base}{rel}")
    })
}

fn on_delete(params: &HashMap<String, String>) -> Result<OnDelete, CsiError> {
    match params.get(ON_DELETE).map(String::as_str) {
        None | Some("retain") => Ok(OnDelete::Retain),
        Some("delete") => Ok(OnDelete::Delete),
        Some(v) => Err(CsiError::Invalid(format!(
            "onDelete must be retain or delete, not {v:?}"
        ))),
    }
}

fn check_params(params: &HashMap<String, String>) -> Result<(), CsiError> {
    match params.keys().find(|k| {
        !k.starts_with("csi.storage.k8s.io/")
            && ![BASE_PATH, PATH_PATTERN, ON_DELETE].contains(&k.as_str())
    }) {
        Some(k) => Err(CsiError::Invalid(format!(
            "unknown StorageClass parameter {k:?}; weir takes basePath, pathPattern and onDelete"
        ))),
        None => Ok(()),
    }
}

/// The capacity to report: weir's namespace has no size, so what was asked.
fn capacity(range: Option<&CapacityRange>) -> Result<i64, CsiError> {
    let Some(r) = range else { return Ok(0) };
    if r.required_bytes < 0 || r.limit_bytes < 0 {
        return Err(CsiError::Invalid(
            "capacity_range must not be negative".into(),
        ));
    }
    if r.limit_bytes > 0 && r.required_bytes > r.limit_bytes {
        return Err(CsiError::OutOfRange(format!(
            "required_bytes {} is more than limit_bytes {}",
            r.required_bytes, r.limit_bytes
        )));
    }
    Ok(if r.required_bytes > 0 {
        r.required_bytes
    } else {
        r.limit_bytes
    })
}

fn volume_of(v: &VolumeRecord) -> Volume {
    Volume {
        capacity_bytes: v.capacity,
        volume_id: v.id.clone(),
        volume_context: [
            (MOUNT_PATH.to_string(), v.path.clone()),
            (CREATE_DIRECTORY.to_string(), "true".to_string()),
        ]
        .into(),
        content_source: None,
        accessible_topology: Vec::new(),
    }
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(CsiError::Unimplemented(format!("{what} is not offered by weir")).into())
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = req.into_inner();
        let name = required(&req.name, "name")?;
        capability::check_all(&req.volume_capabilities)?;
        if req.volume_content_source.is_some() {
            return Err(CsiError::Invalid(
                "weir cannot create a volume from a snapshot or clone".into(),
            )
            .into());
        }
        check_params(&req.parameters)?;
        let want = VolumeRecord {
            name: name.to_string(),
            id: name.to_string(),
            path: volume_path(name, &req.parameters)?,
            on_delete: on_delete(&req.parameters)?,
            capacity: capacity(req.capacity_range.as_ref())?,
            parameters: req.parameters.clone().into_iter().collect(),
        };
        let _guard = self.locks.lock(name, LOCK_WAIT).await?;
        let v = self.record(want)?;
        tracing::info!(volume = %v.id, dir = %v.path, on_delete = ?v.on_delete, "volume created");
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume_of(&v)),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = required(&req.get_ref().volume_id, "volume_id")?.to_string();
        let _guard = self.locks.lock(&id, LOCK_WAIT).await?;
        let Some(v) = self.volumes().get(&id).cloned() else {
            tracing::info!(volume = %id, "DeleteVolume of a volume this controller did not create: nothing deleted");
            return Ok(Response::new(DeleteVolumeResponse {}));
        };
        if v.on_delete == OnDelete::Delete {
            self.storage.remove_tree(&v.path).await?;
            tracing::info!(volume = %id, dir = %v.path, "volume deleted with its directory");
        } else {
            tracing::info!(volume = %id, dir = %v.path, "volume deleted; its directory is retained");
        }
        self.records.remove(&id).map_err(CsiError::from)?;
        self.volumes().remove(&id);
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        unimplemented("ControllerPublishVolume (no attach step)")
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        unimplemented("ControllerUnpublishVolume (no attach step)")
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = req.into_inner();
        let id = required(&req.volume_id, "volume_id")?;
        if req.volume_capabilities.is_empty() {
            return Err(CsiError::Invalid("volume_capabilities is required".into()).into());
        }
        if !self.volumes().contains_key(id) {
            return Err(CsiError::NotFound(format!("volume {id:?} does not exist")).into());
        }
        let answer = match capability::check_all(&req.volume_capabilities) {
            Ok(()) => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(e) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: e.to_string(),
            },
        };
        Ok(Response::new(answer))
    }

    async fn list_volumes(
        &self,
        _: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        unimplemented("ListVolumes")
    }

    async fn get_capacity(
        &self,
        _: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        unimplemented("GetCapacity")
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(Rpc {
                    r#type: RpcType::CreateDeleteVolume as i32,
                })),
            }],
        }))
    }

    async fn create_snapshot(
        &self,
        _: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        unimplemented("CreateSnapshot")
    }

    async fn delete_snapshot(
        &self,
        _: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        unimplemented("DeleteSnapshot")
    }

    async fn list_snapshots(
        &self,
        _: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        unimplemented("ListSnapshots")
    }

    async fn controller_expand_volume(
        &self,
        _: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        unimplemented("ControllerExpandVolume")
    }

    async fn controller_get_volume(
        &self,
        _: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        unimplemented("ControllerGetVolume")
    }

    async fn controller_modify_volume(
        &self,
        _: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        unimplemented("ControllerModifyVolume")
    }

    async fn get_snapshot(
        &self,
        _: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        unimplemented("GetSnapshot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paths_come_from_the_pattern() {
        let p = params(&[
            ("basePath", "/volumes"),
            ("pathPattern", "${pvc.namespace}/${pvc.name}"),
            (PVC_NAMESPACE, "team-a"),
            (PVC_NAME, "data"),
        ]);
        assert_eq!(volume_path("pvc-1", &p).unwrap(), "/volumes/team-a/data");
        assert_eq!(volume_path("pvc-1", &params(&[])).unwrap(), "/pvc-1");
        let p = params(&[("pathPattern", "x-${pv.name}"), (PV_NAME, "pv9")]);
        assert_eq!(volume_path("n", &p).unwrap(), "/x-pv9");
    }

    #[test]
    fn hostile_values_are_refused() {
        for p in [
            params(&[("pathPattern", "${pvc.name}"), (PVC_NAME, "..")]),
            params(&[("pathPattern", "${pvc.name}"), (PVC_NAME, "a/b")]),
            params(&[("pathPattern", "${pvc.name}")]),
            params(&[("pathPattern", "../x")]),
            params(&[("basePath", "/a/../b")]),
            params(&[("pathPattern", "${pod.name}")]),
            params(&[("pathPattern", "/")]),
        ] {
            assert!(
                matches!(volume_path("n", &p), Err(CsiError::Invalid(_))),
                "{p:?}"
            );
        }
        assert!(check_params(&params(&[("basepath", "/")])).is_err());
        assert!(check_params(&params(&[(PVC_NAME, "x"), ("onDelete", "delete")])).is_ok());
        assert!(on_delete(&params(&[("onDelete", "purge")])).is_err());
    }

    #[test]
    fn overlap_is_component_wise() {
        assert!(overlaps("/a", "/a"));
        assert!(overlaps("/a", "/a/b"));
        assert!(overlaps("/a/b", "/a"));
        assert!(!overlaps("/a", "/ab"));
    }
}
