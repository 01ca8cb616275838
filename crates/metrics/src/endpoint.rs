//! The Prometheus endpoint of a process whose metrics are partly recorded
//! elsewhere: `weir mount`'s supervisor owns the listening port (it lives
//! as long as the mount, and records sessions and recoveries) and appends
//! what its serving daemon renders, which it fetches on each scrape.
//! A takeover replaces the daemon, never the port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::ServeError;

/// Text to append to each scrape (another process's metrics), or `None`
/// when there is none now. Called on a blocking thread, once per scrape.
pub type Extra = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// How often histograms are drained into their summaries.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs this process's recorder without a listener and returns the
/// handle that renders it. Histograms need [`keep_up`] (or calls of
/// [`PrometheusHandle::run_upkeep`]) to reach their summaries.
pub fn install_recorder() -> Result<PrometheusHandle, ServeError> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| ServeError {
            addr: None,
            reason: e.to_string(),
        })?;
    crate::describe();
    Ok(handle)
}

/// Drains histograms every few seconds on a thread of its own, as the
/// exporter's own listener would.
pub fn keep_up(handle: PrometheusHandle) {
    let _ = std::thread::Builder::new()
        .name("weir-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                handle.run_upkeep();
            }
        });
}

/// Serves this process's metrics, followed by `extra`'s, on `addr` (any
/// path), from a thread of its own. Returns the bound address once the
/// port is listening (port 0 picks a free one).
pub fn serve_with(addr: SocketAddr, extra: Extra) -> Result<SocketAddr, ServeError> {
    let fail = |reason: String| ServeError {
        addr: Some(addr),
        reason,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let handle = install_recorder()?;
    keep_up(handle.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    std::thread::Builder::new()
        .name("weir-metrics-http".into())
        .spawn(move || rt.block_on(accept(listener, handle, extra)))
        .map_err(|e| fail(e.to_string()))?;
    Ok(bound)
}

async fn accept(listener: std::net::TcpListener, handle: PrometheusHandle, extra: Extra) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics endpoint cannot listen");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (handle, extra) = (handle.clone(), extra.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let (handle, extra) = (handle.clone(), extra.clone());
                    async move { Ok::<_, Infallible>(scrape(handle, extra).await) }
                });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

async fn scrape(handle: PrometheusHandle, extra: Extra) -> Response<Full<Bytes>> {
    let mut text = handle.render();
    match tokio::task::spawn_blocking(move || extra()).await {
        Ok(Some(more)) => {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&more);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot collect the daemon's metrics"),
    }
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
