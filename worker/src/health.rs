//! `GET /healthz` for a worker: its broker connection, for probes and people.
//!
//! 200 while connected (also while the broker blocks publishers: restarting
//! the worker would not help, and the body says `blocked`); 503 while the
//! connection is down and being re-established.

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

/// Serves `/healthz` on `addr` until shutdown.
pub(crate) async fn serve(
    addr: SocketAddr,
    link: Arc<BrokerLink>,
    worker_id: String,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(health_addr = %listener.local_addr()?, "health endpoint listening");
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .with_state(Health { link, worker_id });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
}
