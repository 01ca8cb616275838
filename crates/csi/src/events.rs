//! Kubernetes Events on the pods a recovery touched, so that
//! `kubectl describe pod` shows what happened to its volume. The API is
//! found the usual way (in-cluster service account, or KUBECONFIG); with
//! none reachable, one line says so and events are only logged.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

use crate::DRIVER_NAME;
use crate::state::Pod;

/// Whether an event reports trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Things recovered.
    Normal,
    /// Something failed, or the pod may have seen errors.
    Warning,
}

/// Posts events through the API server, if there is one.
pub struct Reporter {
    node_id: String,
    handle: tokio::runtime::Handle,
    client: OnceCell<Option<kube::Client>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("node_id", &self.node_id)
            .field("connected", &self.client.get().map(Option::is_some))
            .finish()
    }
}

impl Reporter {
    /// A reporter posting from `node_id`, on the runtime `handle`.
    pub fn new(node_id: String, handle: tokio::runtime::Handle) -> Arc<Reporter> {
        // Both of rustls's crypto providers are linked in (other crates
        // want the other one), so it cannot pick one by itself; kube's TLS
        // would panic at the first connection. An error only means one is
        // installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Arc::new(Reporter {
            node_id,
            handle,
            client: OnceCell::new(),
        })
    }

    /// Posts one event on `pod`, in the background.
    pub fn post(self: &Arc<Self>, pod: &Pod, severity: Severity, reason: &str, message: String) {
        let me = self.clone();
        let pod = pod.clone();
        let reason = reason.to_string();
        self.handle.spawn(async move {
            let Some(client) = me.client().await else {
                return;
            };
            let event = me.event(&pod, severity, &reason, message);
            let api: Api<Event> = Api::namespaced(client.clone(), &pod.namespace);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => tracing::debug!(pod = %pod.name, %reason, "posted an event"),
                Err(e) => {
                    tracing::warn!(pod = %pod.name, namespace = %pod.namespace, error = %e, "cannot post an event")
                }
            }
        });
    }

    async fn client(&self) -> Option<&kube::Client> {
        self.client
            .get_or_init(|| async {
                let made = match kube::Config::infer().await {
                    Ok(cfg) => kube::Client::try_from(cfg).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match made {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::info!(reason = %e, "no Kubernetes API server is configured; recovery events are only logged");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    fn event(&self, pod: &Pod, severity: Severity, reason: &str, message: String) -> Event {
        let now = k8s_openapi::jiff::Timestamp::now();
        let name = format!("{}.{:x}", pod.name, now.as_nanosecond());
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(
                match severity {
                    Severity::Normal => "Normal",
                    Severity::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some(DRIVER_NAME.into()),
                host: Some(self.node_id.clone()),
            }),
            reporting_component: Some(DRIVER_NAME.into()),
            reporting_instance: Some(self.node_id.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        }
    }
}
