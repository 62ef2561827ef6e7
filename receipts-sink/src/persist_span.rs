//! The `persist` span of a batch write: what a trace shows of the sink.
//!
//! A batch holds receipts of many tasks, so its span is no task's child:
//! it is linked to the trace context each receipt records (`trace_id` and
//! `span_id`), at most [`trace_context::MAX_LINKS`] distinct ones, as the
//! OpenTelemetry messaging conventions do for a batch. Disabled, and no
//! work, when tracing is off.

use broker_link::trace_context;
use broker_topology::{Receipt, TraceContext, names};
use std::collections::HashSet;
use tracing::Span;

/// The `persist` span of writing `receipts` from `group`'s queue.
pub(crate) fn persist_span(receipts: &[Receipt], group: &str) -> Span {
    if !trace_context::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: trace_context::TARGET,
        "persist",
        otel.name = format!("persist {}", names::sink_queue(group)),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.name = "persist",
        "messaging.operation.type" = "process",
        messaging.destination.name = names::RECEIPT_EXCHANGE,
        messaging.destination.subscription.name = names::sink_queue(group),
        messaging.batch.message_count = receipts.len(),
        chit.sink.group = group,
    );
    let mut linked = HashSet::new();
    for r in receipts {
        let (Some(trace_id), Some(span_id)) = (r.trace_id, r.span_id) else {
            continue;
        };
        if linked.len() == trace_context::MAX_LINKS {
            break;
        }
        let to = TraceContext {
            trace_id,
            span_id,
            sampled: true,
        };
        if linked.insert(to) {
            trace_context::link(&span, &to);
        }
    }
    span
}
