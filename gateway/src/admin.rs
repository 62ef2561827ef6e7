//! What the dashboard shows besides tasks: queue depths, live workers, and
//! the dead-letter queues with replay and purge. Every route needs a bearer
//! key ([`Caller`]); replay and purge need one with the `admin` scope.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /v1/queues` | `{"available": true, "management_url", "queues": [{task_type, queue, depth, ready, unacked, consumers, delayed, dead_letters}]}`, one entry per capability with a task queue; `{"available": false, "reason", "queues": []}` (still 200) when the management API is not configured or does not answer |
//! | `GET /v1/workers` | `{"workers": [...]}`: live workers, by their heartbeats (as the sink's `GET /v1/workers`) |
//! | `GET /v1/dlq?task_type=&limit=` | `{"queues": [{task_type, total, dead_letters: [...]}]}`: with `task_type`, that type's dead letters (at most `limit`, 100 by default); without, every known type's count and no letters |
//! | `POST /v1/dlq/{task_type}/replay` | body `{}` or empty: replays every dead letter of the type; `{"task_ids": [...]}`: only those. Answers `{task_type, replayed, task_ids, not_found}`. Admin only |
//! | `POST /v1/dlq/{task_type}/purge` | body `{}` or empty: purges every dead letter of the type, each with a `purged` receipt; `{"at_most": n}`: the first `n`. Answers `{task_type, purged}`. Admin only |
//!
//! Queue figures come from the RabbitMQ management API
//! ([`Management::queues`](broker_link::management::Management::queues)),
//! which refreshes them every few seconds, so they lag a little. Dead-letter
//! counts come from a passive declare instead (exact, and without the
//! management API). Listing dead letters reads them and hands them back
//! unacked, which counts as a delivery on the quorum queue: the dashboard
//! lists them when its dead-letter page opens or a count changes, never on
//! every poll.
//!
//! Replay and purge are the producer crate's (`producer::Producer`'s
//! `replay_dead_letters` and `purge_dead_letters`), the same code as
//! `chit dlq`. Purge takes no task ids: the producer purges from the head of
//! the queue, not by id.
//!
//! OpenAPI: every handler is annotated, and [`openapi`] gives their part
//! of the document (the gateway's `openapi` module merges it). The
//! producer's and the sink's answer types know nothing of OpenAPI, so
//! [`DeadLetterDoc`] and [`LiveWorkerDoc`] describe them, and a test checks
//! they name the same fields.

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::state::GatewayState;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_link::management::QueueStats;
use broker_topology::names;
use producer::{DeadLetter, PublishError, PublishErrorKind};
use receipts_sink::api::doc::ErrorBody;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Dead letters listed when `limit` is not given.
const DEFAULT_DLQ_LIMIT: usize = 100;

/// Most dead letters one listing reads.
const MAX_DLQ_LIMIT: usize = 1000;

/// Most task ids one replay request names (each is a pass over the queue).
const MAX_REPLAY_IDS: usize = 100;

/// The admin routes, merged into the gateway's router.
pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/queues", get(queues))
        .route("/v1/workers", get(workers))
        .route("/v1/dlq", get(list_dead_letters))
        .route("/v1/dlq/{task_type}/replay", post(replay))
        .route("/v1/dlq/{task_type}/purge", post(purge))
}

/// The OpenAPI description of [`routes`], for the gateway's document.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    AdminApi::openapi()
}

#[derive(OpenApi)]
#[openapi(
    paths(queues, workers, list_dead_letters, replay, purge),
    components(schemas(
        QueuesAnswer,
        CapabilityQueues,
        WorkersAnswer,
        LiveWorkerDoc,
        DlqAnswer,
        DlqQueue,
        DeadLetterDoc,
        ReplayRequest,
        ReplayAnswer,
        PurgeRequest,
        PurgeAnswer,
    )),
    tags(
        (name = "broker", description = "Queue figures and live workers, for the dashboard"),
        (name = "dead letters", description = "Dead-lettered tasks: list, replay, purge"),
    )
)]
struct AdminApi;

/// Queue figures per capability, or why there are none.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub(crate) struct QueuesAnswer {
    /// False when the management API is not configured or did not answer.
    available: bool,
    /// Why not, when not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The management API asked, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    management_url: Option<String>,
    /// One entry per capability, by task type.
    queues: Vec<CapabilityQueues>,
}

/// The queues of one capability.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub(crate) struct CapabilityQueues {
    /// The capability (task type).
    task_type: String,
    /// Its task queue.
    queue: String,
    /// Messages in the task queue: ready plus unacked.
    depth: u64,
    /// Waiting for a worker.
    ready: u64,
    /// Delivered and not yet acknowledged: the leases workers hold.
    unacked: u64,
    /// Consumers of the task queue.
    consumers: u64,
    /// Tasks waiting in its delay queues (retries and delayed tasks).
    delayed: u64,
    /// Messages in its dead-letter queue.
    dead_letters: u64,
}

/// The capabilities with a task queue among `stats`, with their figures.
///
/// The capability is read back from the task queue's name by taking off
/// the prefix [`names::task_queue`] puts there, and kept only when naming
/// it again gives the same queue, so the name is never spelled here.
fn per_capability(stats: &[QueueStats]) -> Vec<CapabilityQueues> {
    let by_name: BTreeMap<&str, &QueueStats> = stats.iter().map(|q| (q.name.as_str(), q)).collect();
    let prefix = names::task_queue("");
    let capabilities: BTreeSet<&str> = stats
        .iter()
        .filter_map(|q| q.name.strip_prefix(prefix.as_str()))
        .filter(|cap| {
            names::validate_capability(cap).is_ok()
                && by_name.contains_key(&*names::task_queue(cap))
        })
        .collect();
    capabilities
        .into_iter()
        .map(|cap| {
            let queue = names::task_queue(cap);
            let task = by_name[queue.as_str()];
            let delayed = stats
                .iter()
                .filter(|q| names::is_delay_queue_of(&q.name, cap))
                .map(|q| q.messages)
                .sum();
            let dead_letters = by_name
                .get(names::dead_letter_queue(cap).as_str())
                .map_or(0, |q| q.messages);
            CapabilityQueues {
                task_type: cap.to_owned(),
                depth: task.messages,
                ready: task.messages.saturating_sub(task.unacked),
                unacked: task.unacked,
                consumers: task.consumers,
                delayed,
                dead_letters,
                queue,
            }
        })
        .collect()
}

/// Task queue depth, ready, unacked (leases held), consumers, delayed and
/// dead-lettered tasks per capability, from the RabbitMQ management API.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "broker",
    responses(
        (status = 200, description = "The figures; `available` is false, with the reason, when the \
            management API is not configured or does not answer", body = QueuesAnswer),
    )
)]
async fn queues(_caller: Caller, State(state): State<GatewayState>) -> Json<QueuesAnswer> {
    let Some(management) = &state.management else {
        return Json(QueuesAnswer {
            available: false,
            reason: Some(
                "no RabbitMQ management API is configured for this gateway, so queue \
                 depths are unknown"
                    .into(),
            ),
            management_url: None,
            queues: Vec::new(),
        });
    };
    match management.queues().await {
        Ok(stats) => Json(QueuesAnswer {
            available: true,
            reason: None,
            management_url: Some(management.url().to_owned()),
            queues: per_capability(&stats),
        }),
        Err(e) => {
            // Not a failure of the gateway: the page shows the notice.
            warn!(error = %e, "management API unavailable for queue figures");
            Json(QueuesAnswer {
                available: false,
                reason: Some(e.to_string()),
                management_url: Some(management.url().to_owned()),
                queues: Vec::new(),
            })
        }
    }
}

/// The live workers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkersAnswer {
    /// Live workers, by worker id.
    #[schema(value_type = Vec<LiveWorkerDoc>)]
    workers: Vec<receipts_sink::LiveWorker>,
}

/// A live worker (`receipts_sink::LiveWorker`), by its last heartbeat.
#[derive(ToSchema)]
#[schema(as = LiveWorker)]
#[allow(dead_code)] // describes JSON only
pub(crate) struct LiveWorkerDoc {
    /// Its id, as in its receipts.
    worker_id: String,
    /// Its host.
    host: String,
    /// Its process id on that host.
    pid: u32,
    /// The task types it consumes.
    capabilities: Vec<String>,
    /// Tasks it held at its last heartbeat.
    in_flight: u64,
    /// Tasks it runs at once at most.
    concurrency: u64,
    /// Its chit version.
    version: String,
    /// When it started, by its clock (RFC 3339).
    started_at: String,
    /// Seconds it has been up.
    uptime_secs: f64,
    /// When its last heartbeat arrived, by the gateway's clock (RFC 3339).
    last_seen: String,
    /// Seconds since then.
    last_seen_secs_ago: f64,
    /// Seconds until it drops out of the list without another heartbeat.
    expires_in_secs: f64,
}

/// Live workers: those whose last heartbeat has not expired.
#[utoipa::path(
    get,
    path = "/v1/workers",
    tag = "broker",
    responses((status = 200, description = "The live workers, by worker id", body = WorkersAnswer))
)]
async fn workers(_caller: Caller, State(state): State<GatewayState>) -> Json<WorkersAnswer> {
    Json(WorkersAnswer {
        workers: state.workers.list(),
    })
}

/// Query of `GET /v1/dlq`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DlqParams {
    /// List this task type's dead letters; without it, every known type's
    /// count only.
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._-]+$")]
    task_type: Option<String>,
    /// Dead letters listed at most (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Dead-letter queues.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DlqAnswer {
    /// Each task type looked at.
    queues: Vec<DlqQueue>,
}

/// One dead-letter queue.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DlqQueue {
    /// The task type.
    task_type: String,
    /// Dead letters waiting in it.
    total: u32,
    /// The first of them (only when one task type was asked for).
    #[schema(value_type = Vec<DeadLetterDoc>)]
    dead_letters: Vec<DeadLetter>,
}

/// A dead-lettered task (`producer::DeadLetter`).
#[derive(ToSchema)]
#[schema(as = DeadLetter)]
#[allow(dead_code)] // describes JSON only
pub(crate) struct DeadLetterDoc {
    /// Task id.
    task_id: String,
    /// Task type.
    task_type: String,
    /// The attempt that was dead-lettered.
    attempt: u32,
    /// Its `dead_lettered` receipt.
    dead_lettered_receipt_id: Option<String>,
    /// `worker` or `broker`.
    dead_lettered_by: String,
    /// The last error, or what the broker did.
    last_error: Option<String>,
    /// The payload, as text.
    payload: String,
}

/// Dead letters: one task type's (reading them hands each out and back,
/// unacked), or every known type's count.
#[utoipa::path(
    get,
    path = "/v1/dlq",
    tag = "dead letters",
    params(DlqParams),
    responses(
        (status = 200, description = "The dead-letter queues looked at", body = DlqAnswer),
        (status = 400, description = "A bad task type or limit", body = ErrorBody),
        (status = 404, description = "The task type has no dead-letter queue", body = ErrorBody),
        (status = 503, description = "The broker cannot be reached", body = ErrorBody),
    )
)]
async fn list_dead_letters(
    _caller: Caller,
    State(state): State<GatewayState>,
    params: Result<Query<DlqParams>, QueryRejection>,
) -> Result<Json<DlqAnswer>, GatewayError> {
    let Query(params) = params.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let limit = parse_limit(params.limit.as_deref())?;
    if let Some(task_type) = params.task_type.filter(|t| !t.is_empty()) {
        check_task_type(&task_type)?;
        let (total, dead_letters) = state
            .producer
            .dead_letters(&task_type, limit)
            .await
            .map_err(dlq_error)?;
        return Ok(Json(DlqAnswer {
            queues: vec![DlqQueue {
                task_type,
                total,
                dead_letters,
            }],
        }));
    }
    // Every task type we know of: those with a task queue (management API)
    // and those live workers serve. A type whose dead-letter queue is gone
    // is left out, not an error.
    let mut known: BTreeSet<String> = state
        .workers
        .list()
        .into_iter()
        .flat_map(|w| w.capabilities)
        .collect();
    if let Some(management) = &state.management {
        match management.queues().await {
            Ok(stats) => known.extend(per_capability(&stats).into_iter().map(|c| c.task_type)),
            Err(e) => warn!(error = %e, "management API unavailable for the dead-letter summary"),
        }
    }
    let mut queues = Vec::new();
    for task_type in known {
        match state.producer.count_dead_letters(&task_type).await {
            Ok(total) => queues.push(DlqQueue {
                task_type,
                total,
                dead_letters: Vec::new(),
            }),
            Err(e) if matches!(e.kind(), PublishErrorKind::QueueNotFound { .. }) => {}
            Err(e) => return Err(dlq_error(e)),
        }
    }
    Ok(Json(DlqAnswer { queues }))
}

/// Which dead letters to replay; an empty body (or `{}`) replays all.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// Only these tasks (1 to 100); all when missing.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 100)]
    task_ids: Option<Vec<String>>,
}

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReplayAnswer {
    task_type: String,
    /// How many were replayed.
    replayed: usize,
    /// The replayed tasks.
    task_ids: Vec<String>,
    /// Asked-for task ids with no dead letter in the queue.
    not_found: Vec<String>,
}

/// Replays dead letters: each task is published again under its id, with
/// the next attempt number and a fresh retry budget; its chain goes on
/// from its `dead_lettered` receipt. Needs the admin scope.
#[utoipa::path(
    post,
    path = "/v1/dlq/{task_type}/replay",
    tag = "dead letters",
    params(("task_type" = String, Path, min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._-]+$",
        description = "The task type")),
    request_body(content = Option<ReplayRequest>, content_type = "application/json",
        description = "Optional: the tasks to replay"),
    responses(
        (status = 200, description = "Replayed", body = ReplayAnswer),
        (status = 400, description = "A bad task type or body", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope", body = ErrorBody),
        (status = 404, description = "The task type has no dead-letter queue", body = ErrorBody),
        (status = 503, description = "The broker cannot be reached", body = ErrorBody),
    )
)]
async fn replay(
    caller: Caller,
    State(state): State<GatewayState>,
    Path(task_type): Path<String>,
    body: Bytes,
) -> Result<Json<ReplayAnswer>, GatewayError> {
    require_admin(&caller, "replay dead letters")?;
    check_task_type(&task_type)?;
    let request: ReplayRequest = parse_body(&body)?;
    let mut answer = ReplayAnswer {
        task_type: task_type.clone(),
        replayed: 0,
        task_ids: Vec::new(),
        not_found: Vec::new(),
    };
    match request.task_ids {
        None => {
            let replayed = state
                .producer
                .replay_dead_letters(&task_type, None)
                .await
                .map_err(dlq_error)?;
            answer.task_ids = replayed.into_iter().map(|p| p.task_id).collect();
        }
        Some(ids) => {
            if ids.is_empty() || ids.len() > MAX_REPLAY_IDS {
                return Err(GatewayError::BadRequest(format!(
                    "task_ids must name 1 to {MAX_REPLAY_IDS} tasks (or be left out to replay all)"
                )));
            }
            let replayed = state
                .producer
                .replay_dead_letters(&task_type, Some(&ids))
                .await
                .map_err(dlq_error)?;
            answer.task_ids = replayed.into_iter().map(|p| p.task_id).collect();
            answer.not_found = ids
                .into_iter()
                .filter(|id| !answer.task_ids.contains(id))
                .collect();
        }
    }
    answer.replayed = answer.task_ids.len();
    info!(
        task_type = %task_type,
        replayed = answer.replayed,
        not_found = answer.not_found.len(),
        key = %caller.name,
        "dead letters replayed through the gateway"
    );
    Ok(Json(answer))
}

/// How many dead letters to purge; an empty body (or `{}`) purges all.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// Purge at most this many, from the head of the queue; all when missing.
    #[serde(default)]
    at_most: Option<u32>,
}

/// What a purge did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PurgeAnswer {
    task_type: String,
    /// How many dead letters were deleted (each with a `purged` receipt).
    purged: u32,
}

/// Purges dead letters: deletes them, each with a `purged` receipt that
/// ends its chain. Needs the admin scope.
#[utoipa::path(
    post,
    path = "/v1/dlq/{task_type}/purge",
    tag = "dead letters",
    params(("task_type" = String, Path, min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9._-]+$",
        description = "The task type")),
    request_body(content = Option<PurgeRequest>, content_type = "application/json",
        description = "Optional: purge at most this many"),
    responses(
        (status = 200, description = "Purged", body = PurgeAnswer),
        (status = 400, description = "A bad task type or body", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope", body = ErrorBody),
        (status = 404, description = "The task type has no dead-letter queue", body = ErrorBody),
        (status = 503, description = "The broker cannot be reached, or did not confirm the purged \
            receipts (the rest stay in the queue)", body = ErrorBody),
    )
)]
async fn purge(
    caller: Caller,
    State(state): State<GatewayState>,
    Path(task_type): Path<String>,
    body: Bytes,
) -> Result<Json<PurgeAnswer>, GatewayError> {
    require_admin(&caller, "purge dead letters")?;
    check_task_type(&task_type)?;
    let request: PurgeRequest = parse_body(&body)?;
    let purged = state
        .producer
        .purge_dead_letters(&task_type, request.at_most)
        .await
        .map_err(dlq_error)?;
    info!(
        task_type = %task_type,
        purged,
        key = %caller.name,
        "dead letters purged through the gateway"
    );
    Ok(Json(PurgeAnswer { task_type, purged }))
}

fn require_admin(caller: &Caller, what: &str) -> Result<(), GatewayError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(GatewayError::Forbidden(format!(
            "key {:?} may not {what}: it needs the admin scope",
            caller.name
        )))
    }
}

fn check_task_type(task_type: &str) -> Result<(), GatewayError> {
    names::validate_capability(task_type).map_err(|e| GatewayError::BadRequest(e.to_string()))
}

fn parse_limit(raw: Option<&str>) -> Result<usize, GatewayError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_DLQ_LIMIT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_DLQ_LIMIT).contains(&n) => Ok(n),
        _ => Err(GatewayError::BadRequest(format!(
            "invalid limit {raw:?}: use a whole number from 1 to {MAX_DLQ_LIMIT}"
        ))),
    }
}

/// An optional JSON body: empty (or only white space) is the default.
fn parse_body<T: Default + for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::BadRequest(format!("invalid request body: {e}")))
}

/// The status a dead-letter operation's failure is answered with.
fn dlq_error(e: PublishError) -> GatewayError {
    match e.kind() {
        PublishErrorKind::QueueNotFound { .. } => GatewayError::NotFound(e.to_string()),
        PublishErrorKind::Unavailable | PublishErrorKind::ReceiptNotConfirmed => {
            GatewayError::Unavailable(e.to_string())
        }
        _ => GatewayError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: String, messages: u64, unacked: u64, consumers: u64) -> QueueStats {
        QueueStats {
            name,
            queue_type: "quorum".into(),
            messages,
            unacked,
            consumers,
        }
    }

    #[test]
    fn figures_are_gathered_per_capability() {
        let stats = vec![
            q(names::task_queue("command.execute"), 7, 2, 3),
            q(names::dead_letter_queue("command.execute"), 4, 0, 0),
            q(names::dead_letter_watch_queue("command.execute"), 0, 0, 1),
            q(names::delay_queue("command.execute", 1000), 1, 0, 0),
            q(names::delay_queue("command.execute", 5000), 2, 0, 0),
            // A capability whose name starts the same: its own entry.
            q(names::task_queue("command"), 1, 0, 0),
            q(names::delay_queue("command", 1000), 9, 0, 0),
            q(names::sink_queue("default"), 50, 0, 1),
            q(names::CANCEL_STREAM.to_owned(), 3, 0, 1),
        ];
        let caps = per_capability(&stats);
        assert_eq!(caps.len(), 2, "{caps:?}");
        assert_eq!(caps[0].task_type, "command");
        assert_eq!(caps[0].delayed, 9);
        assert_eq!(
            caps[1],
            CapabilityQueues {
                task_type: "command.execute".into(),
                queue: names::task_queue("command.execute"),
                depth: 7,
                ready: 5,
                unacked: 2,
                consumers: 3,
                delayed: 3,
                dead_letters: 4,
            }
        );
    }

    #[test]
    fn a_task_queue_without_a_dead_letter_queue_counts_none() {
        let caps = per_capability(&[q(names::task_queue("build"), 0, 0, 0)]);
        assert_eq!(caps[0].dead_letters, 0);
        assert_eq!(caps[0].depth, 0);
    }

    #[test]
    fn an_empty_body_is_the_default_and_unknown_fields_are_refused() {
        let r: ReplayRequest = parse_body(b"").unwrap();
        assert!(r.task_ids.is_none());
        let r: ReplayRequest = parse_body(b" {\"task_ids\": [\"a\"]} ").unwrap();
        assert_eq!(r.task_ids.unwrap(), vec!["a"]);
        let err = parse_body::<PurgeRequest>(b"{\"task_ids\": [\"a\"]}").unwrap_err();
        assert!(matches!(err, GatewayError::BadRequest(_)), "{err:?}");
        let p: PurgeRequest = parse_body(b"{\"at_most\": 2}").unwrap();
        assert_eq!(p.at_most, Some(2));
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_DLQ_LIMIT);
        assert_eq!(parse_limit(Some("5")).unwrap(), 5);
        assert!(parse_limit(Some("0")).is_err());
        assert!(parse_limit(Some("1001")).is_err());
        assert!(parse_limit(Some("x")).is_err());
    }

    fn keys(v: serde_json::Value) -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    }

    fn schema_fields<T: ToSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        keys(schema["properties"].clone())
    }

    #[test]
    fn the_documented_dead_letter_and_worker_have_the_real_fields() {
        let letter = DeadLetter {
            task_id: "t".into(),
            task_type: "c".into(),
            attempt: 1,
            dead_lettered_receipt_id: None,
            dead_lettered_by: "worker",
            last_error: None,
            payload: "{}".into(),
        };
        assert_eq!(
            keys(serde_json::to_value(letter).unwrap()),
            schema_fields::<DeadLetterDoc>()
        );
        let now = chrono::Utc::now();
        let worker = receipts_sink::LiveWorker {
            worker_id: "w".into(),
            host: "h".into(),
            pid: 1,
            capabilities: vec![],
            in_flight: 0,
            concurrency: 1,
            version: "v".into(),
            started_at: now,
            uptime_secs: 0.0,
            last_seen: now,
            last_seen_secs_ago: 0.0,
            expires_in_secs: 1.0,
        };
        assert_eq!(
            keys(serde_json::to_value(worker).unwrap()),
            schema_fields::<LiveWorkerDoc>()
        );
    }

    #[test]
    fn the_document_has_every_route() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let paths = keys(doc["paths"].clone());
        for p in [
            "/v1/queues",
            "/v1/workers",
            "/v1/dlq",
            "/v1/dlq/{task_type}/replay",
            "/v1/dlq/{task_type}/purge",
        ] {
            assert!(paths.contains(p), "{p} missing from {paths:?}");
        }
        let replay = &doc["components"]["schemas"]["ReplayRequest"];
        assert_eq!(replay["additionalProperties"], false, "{replay}");
    }

    /// The app over a fresh SQLite store, without a management API and
    /// with a broker that is never reached (nothing here needs one), and
    /// two keys: one that may submit anything, one that is also admin.
    async fn app() -> (axum::Router, String, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = receipts_sink::Store::open(&url).await.unwrap();
        let user = crate::keys::add(&store, "user", &["*".into()])
            .await
            .unwrap();
        let admin = crate::keys::add(&store, "ops", &["*".into(), "admin".into()])
            .await
            .unwrap();
        let config = crate::GatewayConfig::new("amqp://guest:guest@127.0.0.1:1/none", url);
        let state = GatewayState::new(store, None, config);
        (crate::router(state), user.key, admin.key, dir)
    }

    async fn call(
        app: &axum::Router,
        method: &str,
        uri: &str,
        key: Option<&str>,
    ) -> (u16, serde_json::Value) {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let res = app
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn every_route_needs_a_key_and_replay_and_purge_need_admin() {
        let (app, user, _admin, _dir) = app().await;
        for (method, uri) in [
            ("GET", "/v1/queues"),
            ("GET", "/v1/workers"),
            ("GET", "/v1/dlq"),
            ("POST", "/v1/dlq/command.execute/replay"),
            ("POST", "/v1/dlq/command.execute/purge"),
        ] {
            let (status, body) = call(&app, method, uri, None).await;
            assert_eq!(status, 401, "{method} {uri}: {body}");
            assert_eq!(body["error"]["code"], "unauthenticated");
        }
        for action in ["replay", "purge"] {
            let uri = format!("/v1/dlq/command.execute/{action}");
            let (status, body) = call(&app, "POST", &uri, Some(&user)).await;
            assert_eq!(status, 403, "{uri}: {body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains("admin"),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn without_a_management_api_queues_say_so_with_200() {
        let (app, user, admin, _dir) = app().await;
        let (status, body) = call(&app, "GET", "/v1/queues", Some(&user)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["available"], false);
        assert!(body["reason"].as_str().unwrap().contains("management"));
        assert_eq!(body["queues"], serde_json::json!([]));

        let (status, body) = call(&app, "GET", "/v1/workers", Some(&user)).await;
        assert_eq!((status, body), (200, serde_json::json!({"workers": []})));

        // Bad input is refused before the broker is asked.
        let (status, body) = call(&app, "GET", "/v1/dlq?limit=0", Some(&user)).await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = call(&app, "GET", "/v1/dlq?task_type=a%20b", Some(&user)).await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = call(&app, "POST", "/v1/dlq/a%20b/purge", Some(&admin)).await;
        assert_eq!(status, 400, "{body}");
    }

    #[test]
    fn only_admin_keys_replay_and_purge() {
        let mut caller = Caller {
            key_id: "k".into(),
            name: "ci".into(),
            scopes: vec!["*".into()],
        };
        assert!(matches!(
            require_admin(&caller, "purge dead letters"),
            Err(GatewayError::Forbidden(_))
        ));
        caller.scopes.push("admin".into());
        assert!(require_admin(&caller, "purge dead letters").is_ok());
    }
}
