//! `POST /v1/tasks`: submit a task, through the producer crate's one
//! publish path, optionally waiting for its final receipt (`?wait=30s`).
//!
//! What is checked, in order, and the answer when it fails: the key (401),
//! `?wait=` (400), the body's size (413) and JSON (400: malformed, missing
//! or unknown field), the task type's name (400), the key's scope for it
//! (403), the payload against the capability's built-in schema (400 with
//! every violation), the envelope's values (400); then whether the broker
//! blocks publishing (429), the idempotency key (409 for another request;
//! the first request's ids for the same one), and the publish: no queue for
//! the task type (404), broker blocked (429) or unreachable (503).

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::idempotency::{self, Decision, Ticket};
use crate::state::GatewayState;
use crate::wait;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use broker_topology::names;
use broker_topology::receipt::new_receipt_id;
use producer::{PublishError, PublishErrorKind, Published, TaskSpec, WaitOutcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The `Idempotency-Key` header, the same as the body's `idempotency_key`.
pub(crate) const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The longest run-time limit a task may be given: a year.
const MAX_TIMEOUT_SECS: f64 = 365.0 * 86_400.0;

/// A task to submit.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitTask {
    /// The task type (capability), such as `command.execute`: 1 to 200
    /// characters from `A-Z a-z 0-9 . _ -`.
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._-]+$")]
    task_type: String,
    /// The payload, checked against the task type's built-in schema
    /// (docs/protocol.md, section 3).
    payload: Value,
    /// The same key, from the same API key, publishes once and answers
    /// with the same task id for 24 hours (also as the `Idempotency-Key`
    /// header).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// Attempts allowed in all, including the first.
    #[serde(default)]
    #[schema(minimum = 1)]
    max_attempts: Option<u32>,
    /// Run-time limit of one attempt, in seconds.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 31536000)]
    timeout_secs: Option<f64>,
    /// Seconds before any worker may take the task (it waits in a delay
    /// queue, its chain starting with `scheduled`); at most 24 days.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2073600)]
    delay_secs: Option<f64>,
}

/// `?wait=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubmitQuery {
    /// Wait for the task's final receipt this long (`500ms`, `30s`, `2m`;
    /// capped by the gateway's `--max-wait`): 200 with the receipt when it
    /// comes in time, else 202 with `timed_out: true`.
    #[param(pattern = "^[0-9]+(ms|s|m)?$")]
    wait: Option<String>,
}

/// A submitted task.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Submitted {
    /// The task id.
    task_id: String,
    /// The id of its first receipt (`queued`, or `scheduled` when delayed).
    queued_receipt_id: String,
    /// With `?wait=`: true when the task did not end in time (it goes on).
    #[serde(skip_serializing_if = "Option::is_none")]
    timed_out: Option<bool>,
}

/// A submitted task that ended within `?wait=`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Finished {
    /// The task id.
    task_id: String,
    /// The id of its first receipt.
    queued_receipt_id: String,
    /// The state the receipt ends it in: `succeeded`, `dead_lettered` (a
    /// failure not retried, or the broker's dead-lettering), `cancelled`,
    /// `purged`.
    #[schema(schema_with = <receipts_sink::api::doc::TaskState as utoipa::PartialSchema>::schema)]
    state: String,
    /// The receipt that ended it: `success` with the output and artifacts,
    /// `failure` with its reason, ...
    #[schema(value_type = receipts_sink::api::doc::Receipt)]
    receipt: broker_topology::Receipt,
}

/// Submits a task.
#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "tasks",
    request_body = SubmitTask,
    params(
        SubmitQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Same as the body's `idempotency_key`"),
    ),
    responses(
        (status = 202, description = "Published (or, with the idempotency key of an earlier request, published before)", body = Submitted,
         headers(("Location" = String, description = "/v1/tasks/{task_id}"))),
        (status = 200, description = "With ?wait=: the task ended in time", body = Finished),
        (status = 400, description = "Malformed JSON, a missing or unknown field, a payload that breaks its schema", body = receipts_sink::api::doc::ErrorBody),
        (status = 401, description = "No key, or not a valid one", body = receipts_sink::api::doc::ErrorBody),
        (status = 403, description = "The key may not submit this task type", body = receipts_sink::api::doc::ErrorBody),
        (status = 404, description = "No queue for this task type", body = receipts_sink::api::doc::ErrorBody),
        (status = 409, description = "The idempotency key came with another request", body = receipts_sink::api::doc::ErrorBody),
        (status = 413, description = "The body is over the size limit", body = receipts_sink::api::doc::ErrorBody),
        (status = 429, description = "The broker blocks publishing (a memory or disk alarm)", body = receipts_sink::api::doc::ErrorBody),
        (status = 503, description = "The broker cannot be reached", body = receipts_sink::api::doc::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn submit(
    State(state): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    let config = state.config.clone();
    let Query(query) = query.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let wait = match query.wait.as_deref().filter(|w| !w.trim().is_empty()) {
        Some(w) => Some(
            wait::parse(w)
                .map_err(GatewayError::BadRequest)?
                .min(config.max_wait),
        ),
        None => None,
    };
    let body = body.map_err(|e| GatewayError::from_body(e, config.max_body_bytes))?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let task: SubmitTask = serde_json::from_value(request)
        .map_err(|e| GatewayError::BadRequest(format!("invalid task: {e}")))?;
    names::validate_capability(&task.task_type)
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    if !caller.may_submit(&task.task_type) {
        return Err(GatewayError::Forbidden(format!(
            "API key {} ({}) may not submit tasks of type {:?}",
            caller.key_id, caller.name, task.task_type
        )));
    }
    let idempotency_key = idempotency_key(&task, &headers)?;
    let mut spec = task_spec(&task)?;
    // Chosen here, not by the producer: the ids are known whatever happens
    // to the publish, and the idempotency record holds them beforehand.
    spec.envelope.parent_receipt_id = Some(new_receipt_id());

    if let Some(reason) = state.blocked() {
        return Err(blocked(&reason));
    }

    let mut ticket = None;
    if let Some(key) = &idempotency_key {
        let fresh = (
            spec.envelope.task_id.clone(),
            spec.envelope.parent_receipt_id.clone().unwrap_or_default(),
        );
        match idempotency::decide(
            &state.store,
            &caller.key_id,
            key,
            &idempotency::request_hash(&request_identity(&task)),
            fresh,
            config.publish_deadline,
        )
        .await?
        {
            Decision::Done {
                task_id,
                queued_receipt_id,
            } => {
                tracing::info!(%task_id, task_type = %task.task_type, key_id = %caller.key_id,
                    "idempotency key seen before: nothing published");
                return Ok(accepted(task_id, queued_receipt_id, None));
            }
            Decision::Publish(t) => {
                spec.envelope.task_id = t.task_id.clone();
                spec.envelope.parent_receipt_id = Some(t.queued_receipt_id.clone());
                ticket = Some(t);
            }
        }
    }

    let again = ticket.as_ref().is_some_and(|t| t.again);
    let task_id = spec.envelope.task_id.clone();
    let queued_receipt_id = spec.envelope.parent_receipt_id.clone().unwrap_or_default();
    let outcome = match wait {
        None => state
            .producer
            .publish(spec)
            .await
            .map(|published| WaitOutcome::TimedOut { published }),
        Some(wait) => state.producer.publish_and_wait(spec, wait).await,
    };
    let outcome = match outcome {
        Ok(o) => o,
        // The broker has the task: only its first receipt is missing.
        Err(e) if matches!(e.kind(), PublishErrorKind::ReceiptNotConfirmed) => {
            tracing::warn!(%task_id, task_type = %task.task_type, error = %e,
                "task published, its queued receipt unconfirmed");
            WaitOutcome::TimedOut {
                published: Published {
                    task_id: task_id.clone(),
                    queued_receipt_id: queued_receipt_id.clone(),
                },
            }
        }
        Err(e) => {
            if let Some(t) = ticket {
                t.release(&state.store).await;
            }
            return Err(publish_error(&state, e, &task.task_type));
        }
    };
    if let Some(t) = ticket {
        mark_published(&state, t).await;
    }
    tracing::info!(%task_id, task_type = %task.task_type, key_id = %caller.key_id,
        idempotent_retry = again, "task submitted");
    Ok(match (outcome, wait) {
        (WaitOutcome::Finished { published, receipt }, _) => {
            let state = final_state(receipt.receipt_type);
            let body = Finished {
                task_id: published.task_id.clone(),
                queued_receipt_id: published.queued_receipt_id,
                state: state.as_str().to_owned(),
                receipt,
            };
            let mut response = (StatusCode::OK, Json(body)).into_response();
            set_location(&mut response, &published.task_id);
            response
        }
        (WaitOutcome::TimedOut { published }, Some(_)) => {
            accepted(published.task_id, published.queued_receipt_id, Some(true))
        }
        (WaitOutcome::TimedOut { published }, None) => {
            accepted(published.task_id, published.queued_receipt_id, None)
        }
    })
}

/// The state a task ends in with `receipt`: a final `failure` (one not
/// retried) always travels with the `dead_lettered` that follows it.
fn final_state(receipt: broker_topology::ReceiptType) -> receipts_sink::TaskState {
    match receipt {
        broker_topology::ReceiptType::Failure => receipts_sink::TaskState::DeadLettered,
        other => receipts_sink::TaskState::after(other),
    }
}

/// What makes two requests with one idempotency key the same request.
fn request_identity(task: &SubmitTask) -> Value {
    json!({
        "task_type": task.task_type,
        "payload": task.payload,
        "max_attempts": task.max_attempts,
        "timeout_secs": task.timeout_secs,
        "delay_secs": task.delay_secs,
    })
}

fn idempotency_key(task: &SubmitTask, headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let header = match headers.get(IDEMPOTENCY_HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    GatewayError::BadRequest("the Idempotency-Key header is not text".into())
                })?
                .to_owned(),
        ),
        None => None,
    };
    let key = match (&task.idempotency_key, header) {
        (Some(body), Some(header)) if *body != header => {
            return Err(GatewayError::BadRequest(
                "idempotency_key and the Idempotency-Key header differ: give one, or the same"
                    .into(),
            ));
        }
        (Some(body), _) => Some(body.clone()),
        (None, header) => header,
    };
    if let Some(k) = &key {
        idempotency::check_key(k)?;
    }
    Ok(key)
}

/// The task, checked: its payload against the built-in schema, its
/// envelope with the request's settings.
fn task_spec(task: &SubmitTask) -> Result<TaskSpec, GatewayError> {
    let mut spec = TaskSpec::json(&task.task_type, &task.payload).map_err(refused)?;
    spec.envelope.max_attempts = task.max_attempts;
    if let Some(secs) = task.timeout_secs {
        if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
            return Err(GatewayError::BadRequest(format!(
                "timeout_secs must be more than 0 and at most {MAX_TIMEOUT_SECS} (a year)"
            )));
        }
        spec.envelope.timeout_ms = Some((secs * 1000.0).ceil() as u64);
    }
    if let Some(secs) = task.delay_secs {
        let delay = Duration::try_from_secs_f64(secs).map_err(|_| {
            GatewayError::BadRequest(format!("delay_secs must be 0 or more, not {secs}"))
        })?;
        spec.delay = Some(delay);
    }
    spec.check().map_err(refused)?;
    Ok(spec)
}

/// A task refused before publishing.
fn refused(e: PublishError) -> GatewayError {
    match e.kind() {
        PublishErrorKind::InvalidPayload { violations } => GatewayError::InvalidPayload {
            message: e.to_string(),
            violations: violations.clone(),
        },
        _ => GatewayError::BadRequest(e.to_string()),
    }
}

async fn mark_published(state: &GatewayState, ticket: Ticket) {
    let task_id = ticket.task_id.clone();
    if let Err(e) = ticket.published(&state.store).await {
        // The task is on the broker; at worst a retry with this key after
        // the publish deadline publishes it again under the same id.
        tracing::error!(%task_id, error = %e, "cannot mark an idempotency key published");
    }
}

/// The answer to a failed publish. An error while the broker blocks
/// publishing is the block's (429), whatever the producer made of it (the
/// deadline ran out waiting for a confirm that a blocked broker never sends).
fn publish_error(state: &GatewayState, e: PublishError, task_type: &str) -> GatewayError {
    match e.kind() {
        PublishErrorKind::Unroutable { .. } => GatewayError::NotFound(format!(
            "task type {task_type:?} has no queue: no worker serves it and its topology was \
             never applied (chit topology apply --capability {task_type})"
        )),
        PublishErrorKind::InvalidPayload { .. } | PublishErrorKind::InvalidTask => refused(e),
        _ => match state.blocked() {
            Some(reason) => blocked(&reason),
            None => {
                tracing::warn!(task_type, error = %e, "publish failed");
                GatewayError::Unavailable(format!("the task was not published: {e}"))
            }
        },
    }
}

fn blocked(reason: &str) -> GatewayError {
    GatewayError::BrokerBlocked(format!(
        "the broker blocks publishing ({reason}): it is short of memory or disk; try again later"
    ))
}

fn accepted(task_id: String, queued_receipt_id: String, timed_out: Option<bool>) -> Response {
    let location = task_id.clone();
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Submitted {
            task_id,
            queued_receipt_id,
            timed_out,
        }),
    )
        .into_response();
    set_location(&mut response, &location);
    response
}

fn set_location(response: &mut Response, task_id: &str) {
    let path = format!("/v1/tasks/{}", percent_encode(task_id));
    if let Ok(v) = HeaderValue::from_str(&path) {
        response.headers_mut().insert(header::LOCATION, v);
    }
}

/// A task id as a path segment: chit's ids are UUIDs, but an idempotent
/// replay may carry any string.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
