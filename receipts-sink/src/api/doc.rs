//! The API's answers as OpenAPI schemas, for the generated document
//! ([`super::query_openapi`], served by the gateway at `/v1/openapi.json`).
//!
//! These types only describe JSON: the handlers answer with the store's own
//! types ([`crate::TaskView`], [`crate::Page`], `broker_topology::Receipt`),
//! whose crates know nothing of OpenAPI. Each type here has the fields,
//! names and optionality of the one it describes; the lists of task states
//! and receipt types are read from those crates at run time, so a new state
//! shows in the document without an edit here.

use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code (machine-readable) and message (for people) of an error.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthenticated`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `broker_blocked`, `unavailable`,
    /// `internal`.
    pub code: String,
    /// What was wrong, naming the field, parameter or task.
    pub message: String,
}

/// A task state, as `TaskState` names it.
pub struct TaskState;

impl PartialSchema for TaskState {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Where a task stands (docs/protocol.md, section 9)."))
            .enum_values(Some(crate::task::TaskState::ALL.iter().map(|s| s.as_str())))
            .into()
    }
}

impl ToSchema for TaskState {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TaskState")
    }
}

/// A receipt type, as `broker_topology::ReceiptType` names it.
pub struct ReceiptType;

impl PartialSchema for ReceiptType {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The step a receipt records (docs/protocol.md, section 4).",
            ))
            .enum_values(Some(
                broker_topology::ReceiptType::ALL.iter().map(|t| t.as_str()),
            ))
            .into()
    }
}

impl ToSchema for ReceiptType {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ReceiptType")
    }
}

/// A file or object a task produced.
#[derive(ToSchema)]
pub struct Artifact {
    /// A path on the worker's host.
    pub path: Option<String>,
    /// A URI, for artifacts that live elsewhere.
    pub uri: Option<String>,
    /// MIME type of the content.
    pub content_type: Option<String>,
    /// Size in bytes.
    #[schema(minimum = 0)]
    pub size: Option<u64>,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: Option<String>,
    /// What the artifact is.
    pub description: Option<String>,
}

/// One step of a task (docs/protocol.md, section 4). Optional fields are
/// left out when they have no value.
#[derive(ToSchema)]
pub struct Receipt {
    /// Unique id (chit makes UUIDv7s).
    pub receipt_id: String,
    /// The task it belongs to.
    pub task_id: String,
    /// The task type.
    pub task_type: String,
    /// Which step.
    #[schema(schema_with = <ReceiptType as PartialSchema>::schema)]
    pub receipt_type: String,
    /// The receipts this one follows; empty for the first of a chain.
    pub parent_receipt_ids: Vec<String>,
    /// The worker that wrote it.
    #[schema(required = false)]
    pub worker_id: Option<String>,
    /// Attempt number, from 1.
    #[schema(minimum = 1)]
    pub attempt: u32,
    /// When the step happened (RFC 3339, UTC), by the writer's clock.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Details of the step.
    #[schema(value_type = Option<Object>, required = false)]
    pub body: Option<serde_json::Value>,
    /// Outputs of the step.
    #[schema(required = false)]
    pub artifacts: Vec<Artifact>,
    /// W3C trace id, 32 hex digits.
    #[schema(required = false)]
    pub trace_id: Option<String>,
    /// The span that did the step, 16 hex digits.
    #[schema(required = false)]
    pub span_id: Option<String>,
}

/// A task's summary.
#[derive(ToSchema)]
pub struct TaskRow {
    /// The task id.
    pub task_id: String,
    /// Its task type.
    pub task_type: String,
    /// Where it stands.
    #[schema(schema_with = <TaskState as PartialSchema>::schema)]
    pub state: String,
    /// Highest attempt number seen.
    #[schema(minimum = 0)]
    pub attempts: u32,
    /// Earliest receipt time.
    #[schema(format = DateTime)]
    pub first_seen: String,
    /// Latest receipt time.
    #[schema(format = DateTime)]
    pub last_update: String,
    /// Worker of the latest receipt that names one.
    pub worker_id: Option<String>,
    /// Error of the latest failure that gave one.
    pub last_error: Option<String>,
}

/// A task and its receipt chain, each receipt after its parents.
#[derive(ToSchema)]
pub struct TaskView {
    /// The summary.
    pub task: TaskRow,
    /// The receipts, in parent order.
    pub chain: Vec<Receipt>,
}

/// One page of tasks, most recently updated first.
#[derive(ToSchema)]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<TaskRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The receipts of one task.
#[derive(ToSchema)]
pub struct ReceiptList {
    /// The task.
    pub task_id: String,
    /// Its receipts, in parent order.
    pub receipts: Vec<Receipt>,
}

/// Input the sink could not read as receipts.
#[derive(ToSchema)]
pub struct QuarantinedRecord {
    /// SHA-256 (hex) of `raw` and `reason`.
    pub id: String,
    /// Why it was rejected.
    pub reason: String,
    /// The input, as text.
    pub raw: String,
    /// When the sink stored it.
    #[schema(format = DateTime)]
    pub received_at: String,
}

/// The most recently quarantined records.
#[derive(ToSchema)]
pub struct QuarantineList {
    /// Newest first.
    pub quarantined: Vec<QuarantinedRecord>,
}
