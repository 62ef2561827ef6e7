//! `GET /healthz` and `GET /readyz` for a worker, for probes and people,
//! beside `GET /metrics` (see `metrics`).
//!
//! `/healthz` is the broker connection: 200 while connected (also while the
//! broker blocks publishers: restarting the worker would not help, and the
//! body says `blocked`); 503 while the connection is down and being
//! re-established.
//!
//! `/readyz` adds each executor's last periodic health check (see
//! `readiness`): 200 only when the link is healthy and every executor is,
//! 503 otherwise, with each executor's name, kind, `healthy`, `detail` and
//! `last_checked` in the body.

use crate::readiness::Readiness;
use crate::shutdown::Shutdown;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use broker_link::BrokerLink;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct Health {
    link: Arc<BrokerLink>,
    worker_id: String,
    readiness: Arc<Readiness>,
}

async fn healthz(State(h): State<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let state = h.link.state();
    let status = if state.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"worker_id": h.worker_id, "broker": state.as_str(), "detail": state.detail()})),
    )
}

async fn readyz(State(h): State<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let link = h.link.state();
    let executors = h.readiness.executors();
    let ready = link.is_healthy() && executors.iter().all(|e| e.healthy == Some(true));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "worker_id": h.worker_id,
            "broker": {"state": link.as_str(), "healthy": link.is_healthy(), "detail": link.detail()},
            "executors": executors,
            "check_interval_secs": h.readiness.interval().as_secs_f64(),
        })),
    )
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until shutdown.
pub(crate) async fn serve(
    addr: SocketAddr,
    link: Arc<BrokerLink>,
    worker_id: String,
    readiness: Arc<Readiness>,
    metrics: Arc<crate::metrics::WorkerMetrics>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(health_addr = %listener.local_addr()?, "health endpoint listening");
    let metrics = crate::metrics::routes(metrics, link.clone());
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Health {
            link,
            worker_id,
            readiness,
        })
        .merge(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
}
