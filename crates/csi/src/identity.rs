//! The CSI Identity service: the driver's name and version, whether it
//! offers the Controller service, and whether it is ready to serve.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::{Request, Response, Status};
use weir_csi_proto::v1::identity_server::Identity;
use weir_csi_proto::v1::plugin_capability::{Service, service::Type as ServiceType};
use weir_csi_proto::v1::*;

use crate::DRIVER_NAME;

/// The Identity service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    controller: bool,
    ready: Arc<AtomicBool>,
    state_dir: PathBuf,
}

impl IdentityService {
    /// `controller`: whether this process serves the Controller service.
    pub fn new(controller: bool, ready: Arc<AtomicBool>, state_dir: PathBuf) -> IdentityService {
        IdentityService {
            controller,
            ready,
            state_dir,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let service = |t: ServiceType| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(Service {
                r#type: t as i32,
            })),
        };
        let capabilities = if self.controller {
            vec![service(ServiceType::ControllerService)]
        } else {
            Vec::new()
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    /// Ready once start-up recovery is done; an error (so the liveness
    /// probe restarts us) when the state dir, where every record goes, is
    /// gone.
    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        if !self.state_dir.is_dir() {
            return Err(Status::failed_precondition(format!(
                "the state dir {} is gone",
                self.state_dir.display()
            )));
        }
        Ok(Response::new(ProbeResponse {
            ready: Some(self.ready.load(Ordering::SeqCst)),
        }))
    }
}
