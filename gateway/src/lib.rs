//! chit's HTTP gateway: the front door for clients that do not speak AMQP,
//! and the dashboard.
//!
//! # Layout
//!
//! - `tasks`: `POST /v1/tasks` (submit, optionally wait for the final
//!   receipt), through the producer crate's one publish path.
//! - `auth`: bearer keys ([`keys`] manages them) and the [`Caller`]
//!   extractor every protected handler takes.
//! - `idempotency`: the same `idempotency_key` publishes once.
//! - `wait`: reading `?wait=` durations.
//! - `admin`: queue depths (management API), live workers, and the
//!   dead-letter queues with replay and purge.
//! - `dashboard`: the web UI, its assets compiled into the binary.
//! - `health`: `/healthz`.
//! - `openapi`: `/v1/openapi.json`, generated from the handlers.
//! - `error`: [`GatewayError`], every failure as a JSON body with its status;
//!   [`StartError`].
//!
//! The task and receipt queries are the receipts sink's own router
//! (`receipts_sink::api::query_router`), mounted here over the same store
//! behind the keys: one implementation of the queries.
//!
//! [`router`] builds the app (tests call it with `oneshot`); [`run`] and
//! [`serve`] run it until a stop signal.

mod admin;
mod auth;
mod dashboard;
mod error;
mod health;
mod idempotency;
pub mod keys;
mod openapi;
mod state;
mod tasks;
mod wait;

pub use auth::Caller;
pub use error::{GatewayError, StartError};
pub use state::{
    DEFAULT_HTTP_ADDR, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT, DEFAULT_PUBLISH_DEADLINE,
    GatewayConfig, GatewayState, IDEMPOTENCY_WINDOW,
};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::routing::{get, post};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long requests in flight may go on after the stop signal (a
/// `?wait=` may be long): then the gateway stops anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole app over `state`.
pub fn router(state: GatewayState) -> Router {
    let queries =
        receipts_sink::api::query_router::<GatewayState>(state.store.clone()).route_layer(
            middleware::from_fn_with_state(state.clone(), auth::require_key),
        );
    Router::new()
        .route("/v1/tasks", post(tasks::submit))
        .route("/healthz", get(health::healthz))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .merge(queries)
        .merge(admin::routes())
        .merge(dashboard::routes())
        .fallback(|method: Method, uri: Uri| async move {
            GatewayError::NotFound(format!("no such route: {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            GatewayError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Binds `config.http` and serves until `shutdown` resolves.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = TcpListener::bind(config.http)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.http,
            source,
        })?;
    serve(config, listener, shutdown).await
}

/// Serves on `listener` until `shutdown` resolves, then lets requests in
/// flight finish (for at most [`DRAIN_TIMEOUT`]) and closes the broker
/// connections and the store.
pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = GatewayState::open(config).await?;
    // Connected now, not on the first request: that request does not pay
    // for it and `/healthz` tells the truth from the start.
    let link = state.producer.link().clone();
    tokio::spawn(async move {
        let _ = link.session().await;
    });
    let heartbeats = receipts_sink::spawn_heartbeat_listener(
        state.producer.link().clone(),
        state.workers.clone(),
    );
    let pruner = tokio::spawn(idempotency::prune(state.store.clone()));
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!(
        http_addr = %addr,
        store = ?state.store.kind(),
        broker = %state.producer.link().redacted_url(),
        "gateway listening"
    );
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state.clone());
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stopping_tx.send(());
            })
            .await
    });
    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = stopping_rx => {
            tracing::info!("gateway stopping: finishing requests in flight");
            tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await.ok()
        }
    };
    if served.is_none() {
        tracing::warn!(
            timeout_secs = DRAIN_TIMEOUT.as_secs(),
            "requests still in flight; stopping anyway"
        );
        server.abort();
    }
    heartbeats.abort();
    pruner.abort();
    state.close().await;
    tracing::info!("gateway stopped");
    match served {
        Some(Ok(Err(e))) => Err(StartError::Serve(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
