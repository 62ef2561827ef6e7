//! The HTTP query API over the store, built by [`router`].
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /v1/tasks/{id}` | `{"task": {...}, "chain": [receipts]}`, 404 if unknown |
//! | `GET /v1/tasks?state=&task_type=&limit=&cursor=` | `{"tasks": [...], "next_cursor": ...}` (`type=` is taken for `task_type=`) |
//! | `GET /v1/receipts?task_id=` | `{"task_id": ..., "receipts": [...]}` |
//! | `GET /v1/quarantine?limit=` | `{"quarantined": [...]}` |
//! | `GET /healthz` | 200 `{"store":"ok","broker":"connected"}`, else 503 |
//! | `GET /v1/workers` | `{"workers": [...]}`: live workers, by their heartbeats |
//! | `GET /metrics` | the Prometheus metrics, in the text format |
//!
//! The first four, the queries, are also [`query_router`]: a router over a
//! store alone, which the HTTP gateway mounts (behind its keys) so that the
//! gateway and the sink answer the same queries with the same code.
//! [`query_openapi`] describes them for the gateway's OpenAPI document
//! (the schemas are in [`doc`]).
//!
//! Every error is JSON, `{"error": {"code": "not_found", "message": "..."}}`.
//! Bad input keeps its 4xx status and says what was wrong; internal failures
//! are logged and answered with a generic 500.

pub mod doc;

use crate::error::SinkError;
use crate::status::SinkStatus;
use crate::store::{MAX_PAGE_SIZE, Store};
use crate::task::{TaskFilter, TaskState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::OpenApi;

/// Page size when `limit` is not given.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// What the handlers share: the store and the sink's status.
#[derive(Debug, Clone)]
pub struct ApiState {
    store: Store,
    status: Arc<SinkStatus>,
}

impl ApiState {
    /// State over `store`, reporting the broker state from `status`.
    pub fn new(store: Store, status: Arc<SinkStatus>) -> Self {
        ApiState { store, status }
    }
}

/// The API's routes: the queries ([`query_router`]) and the sink's own
/// health, workers and metrics, with a JSON 404 for anything else.
pub fn router(state: ApiState) -> Router {
    query_router(state.store.clone())
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .route("/v1/workers", get(list_workers))
                .route("/metrics", get(metrics))
                .with_state(state),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
}

/// The query routes (`/v1/tasks/{id}`, `/v1/tasks`, `/v1/receipts`,
/// `/v1/quarantine`) over `store`, for any outer router state. No fallback:
/// the router it is merged into answers unknown routes.
pub fn query_router<S>(store: Store) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/receipts", get(list_receipts))
        .route("/v1/quarantine", get(list_quarantine))
        .with_state(store)
}

/// The OpenAPI description of [`query_router`]'s routes and their schemas.
pub fn query_openapi() -> utoipa::openapi::OpenApi {
    QueryApi::openapi()
}

#[derive(OpenApi)]
#[openapi(
    paths(get_task, list_tasks, list_receipts, list_quarantine),
    components(schemas(
        doc::ErrorBody,
        doc::ErrorDetail,
        doc::TaskState,
        doc::ReceiptType,
        doc::Artifact,
        doc::Receipt,
        doc::TaskRow,
        doc::TaskView,
        doc::TaskPage,
        doc::ReceiptList,
        doc::QuarantinedRecord,
        doc::QuarantineList,
    )),
    tags((name = "queries", description = "Tasks and their receipt chains, from the receipt store"))
)]
struct QueryApi;

/// An API failure, answered as JSON.
#[derive(Debug)]
pub enum ApiError {
    /// 404.
    NotFound(String),
    /// 400.
    BadRequest(String),
    /// 500; the message is logged, not sent.
    Internal(SinkError),
}

impl From<SinkError> for ApiError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::BadCursor(m) => ApiError::BadRequest(format!("invalid cursor: {m}")),
            other => ApiError::Internal(other),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the sink's log".to_owned(),
                )
            }
        };
        let body = json!({"error": {"code": code, "message": message}});
        (status, Json(body)).into_response()
    }
}

/// A task and its receipt chain.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "queries",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 200, description = "The task and its chain", body = doc::TaskView),
        (status = 404, description = "No receipt of this task is stored", body = doc::ErrorBody),
    )
)]
async fn get_task(
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    tracing::debug!(task_id = %id, "task lookup");
    match store.task(&id).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no receipts stored for task {id}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    state: Option<String>,
    // `type=` as well: the issue that asked for the gateway spells it so.
    #[serde(alias = "type")]
    task_type: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Tasks, most recently updated first, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "queries",
    params(
        ("state" = Option<doc::TaskState>, Query, description = "Only tasks in this state"),
        ("task_type" = Option<String>, Query, description = "Only tasks of this type (`type` is taken too)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Tasks per page (default 50)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the page before"),
    ),
    responses(
        (status = 200, description = "One page", body = doc::TaskPage),
        (status = 400, description = "A bad state, limit or cursor", body = doc::ErrorBody),
    )
)]
async fn list_tasks(
    State(store): State<Store>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let task_state = match p.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            let allowed: Vec<&str> = TaskState::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::BadRequest(format!(
                "invalid state {s:?}: use one of {}",
                allowed.join(", ")
            ))
        })?),
    };
    let filter = TaskFilter {
        state: task_state,
        task_type: p.task_type.filter(|t| !t.is_empty()),
    };
    let limit = parse_limit(p.limit.as_deref())?;
    let cursor = p.cursor.as_deref().filter(|c| !c.is_empty());
    let page = store.list_tasks(&filter, limit, cursor).await?;
    Ok(Json(page).into_response())
}

#[derive(Debug, Deserialize)]
struct ReceiptParams {
    task_id: Option<String>,
}

/// The receipts of one task, each after its parents.
#[utoipa::path(
    get,
    path = "/v1/receipts",
    tag = "queries",
    params(("task_id" = String, Query, min_length = 1, description = "The task")),
    responses(
        (status = 200, description = "Its receipts (none when it is unknown)", body = doc::ReceiptList),
        (status = 400, description = "No task_id", body = doc::ErrorBody),
    )
)]
async fn list_receipts(
    State(store): State<Store>,
    params: Result<Query<ReceiptParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let Some(task_id) = p.task_id.filter(|t| !t.is_empty()) else {
        return Err(ApiError::BadRequest(
            "the task_id parameter is required".into(),
        ));
    };
    let receipts = store.receipts(&task_id).await?;
    Ok(Json(json!({"task_id": task_id, "receipts": receipts})).into_response())
}

#[derive(Debug, Deserialize)]
struct QuarantineParams {
    limit: Option<String>,
}

/// Input the sink could not read as receipts, newest first.
#[utoipa::path(
    get,
    path = "/v1/quarantine",
    tag = "queries",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Records at most (default 50)")),
    responses(
        (status = 200, description = "The records", body = doc::QuarantineList),
        (status = 400, description = "A bad limit", body = doc::ErrorBody),
    )
)]
async fn list_quarantine(
    State(store): State<Store>,
    params: Result<Query<QuarantineParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let limit = parse_limit(p.limit.as_deref())?;
    let records = store.quarantined(limit).await?;
    Ok(Json(json!({"quarantined": records})).into_response())
}

async fn healthz(State(state): State<ApiState>) -> Response {
    health(&state.store, state.status.broker()).await
}

/// A component's health, as `/healthz` answers it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the store does not answer.
    store: &'static str,
    /// The broker link: `connected`, `blocked` (publishing refused by a
    /// memory or disk alarm), `connecting`, `reconnecting` or `stopped`.
    broker: &'static str,
    /// Why the broker link is blocked or reconnecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// 200 when the store answers and the broker link is healthy (connected,
/// or connected but blocked, which a restart would not cure), else 503;
/// the body is [`Health`]. Shared by the sink's and the gateway's `/healthz`.
pub async fn health(store: &Store, broker: broker_link::LinkState) -> Response {
    let store_ok = match store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unavailable");
            false
        }
    };
    let code = if store_ok && broker.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        store: if store_ok { "ok" } else { "unavailable" },
        broker: broker.as_str(),
        detail: broker.detail().map(str::to_owned),
    };
    (code, Json(body)).into_response()
}

async fn list_workers(State(state): State<ApiState>) -> Response {
    Json(json!({"workers": state.status.workers().list()})).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let live = state.status.workers().count();
    let text = state.status.metrics().render(live);
    (
        [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        text,
    )
        .into_response()
}

fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "invalid limit {raw:?}: use a whole number from 1 to {MAX_PAGE_SIZE}"
        ))),
    }
}

#[cfg(test)]
mod tests;
