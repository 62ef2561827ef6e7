//! The attempt's trace: its `process` and `execute` spans, and the trace
//! context its receipts, its log lines and its executor's children get.
//!
//! Spans follow the OpenTelemetry messaging conventions: `process` (kind
//! consumer) is a child of the context in the task's `traceparent`, or the
//! root of a new trace when there is none; `execute` is under it, and the
//! receipt publishes (see `broker_link::receipts`) too. Both spans have the
//! target [`trace_context::TARGET`], so without an exporter they are
//! disabled and [`TaskTrace::start`] costs a header parse, or 24 random
//! bytes for a task that came without a `traceparent`.

use broker_link::trace_context;
use broker_topology::{TaskEnvelope, TraceContext, names};
use tracing::Span;

/// The trace an attempt belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskTrace {
    /// The `process` span's context when tracing is on; else the task's
    /// own (`traceparent`), or a new trace when it had none.
    pub(crate) context: TraceContext,
    /// True when `context` is this worker's `process` span, which receipts
    /// then name as their `span_id`.
    pub(crate) own_span: bool,
    /// True when the task came with a readable `traceparent`.
    pub(crate) continued: bool,
}

impl TaskTrace {
    /// The trace of an attempt whose `process` span is `process`.
    pub(crate) fn start(env: &TaskEnvelope, process: &Span) -> TaskTrace {
        let incoming = env.traceparent.as_deref().and_then(TraceContext::parse);
        if let Some(parent) = &incoming {
            trace_context::set_parent(process, parent, env.tracestate.as_deref());
        }
        match trace_context::of(process) {
            Some(context) => TaskTrace {
                context,
                own_span: true,
                continued: incoming.is_some(),
            },
            None => TaskTrace {
                context: incoming.unwrap_or_else(|| TraceContext::new_root(false)),
                own_span: false,
                continued: incoming.is_some(),
            },
        }
    }

    /// The `TRACEPARENT` an executor hands on, when it is not the task's
    /// own header as it came (`None`: keep that, no copy made): the
    /// `execute` span's context when tracing is on, else the new trace's.
    pub(crate) fn for_children(&self, execute: &Span) -> Option<String> {
        match trace_context::of(execute) {
            Some(ctx) => Some(ctx.traceparent()),
            None if self.continued => None,
            None => Some(self.context.traceparent()),
        }
    }
}

/// The `process` span of one delivery: disabled unless tracing is on.
pub(crate) fn process_span(
    env: &TaskEnvelope,
    worker_id: &str,
    delivery: &lapin::message::Delivery,
) -> Span {
    tracing::info_span!(
        target: trace_context::TARGET,
        "process",
        otel.name = format!("process {}", names::task_queue(&env.task_type)),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.name = "process",
        "messaging.operation.type" = "process",
        messaging.destination.name = %delivery.exchange,
        messaging.destination.subscription.name = names::task_queue(&env.task_type),
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
        messaging.message.id = %env.task_id,
        "chit.task.type" = %env.task_type,
        chit.task.attempt = env.attempt,
        chit.task.delivery = env.delivery_count + 1,
        chit.worker.id = worker_id,
        chit.outcome = tracing::field::Empty,
    )
}

/// The `execute` span of a run, under the current (`process`) span.
pub(crate) fn execute_span(env: &TaskEnvelope, executor: &str) -> Span {
    tracing::info_span!(
        target: trace_context::TARGET,
        "execute",
        otel.name = format!("execute {}", env.task_type),
        otel.kind = "internal",
        "chit.task.type" = %env.task_type,
        chit.task.attempt = env.attempt,
        chit.executor = executor,
    )
}

/// The `publish` span of a copy of the task (a retry, a dead letter, a
/// hand-back), under the current span: the next delivery of the copy is
/// its child.
pub(crate) fn copy_span(exchange: &str, routing_key: &str, message_id: Option<&str>) -> Span {
    tracing::info_span!(
        target: trace_context::TARGET,
        "publish",
        otel.name = format!(
            "publish {}",
            if exchange.is_empty() { routing_key } else { exchange }
        ),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.name = "publish",
        "messaging.operation.type" = "send",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = message_id,
    )
}

/// Records how the attempt ended on the current (`process`) span, and
/// marks it failed when it did. Nothing when tracing is off.
pub(crate) fn record_outcome(outcome: &'static str, error: Option<&dyn std::fmt::Display>) {
    if !trace_context::enabled() {
        return;
    }
    let span = Span::current();
    span.record("chit.outcome", outcome);
    if let Some(e) = error {
        trace_context::set_error(&span, &e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tracing_a_task_keeps_its_trace_or_starts_one() {
        let mut env = TaskEnvelope::new("noop");
        env.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let off = Span::none();
        let t = TaskTrace::start(&env, &off);
        assert!(t.continued && !t.own_span);
        assert_eq!(
            t.context.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(t.for_children(&off), None, "the header as it came");

        env.traceparent = Some("garbage".into());
        let fresh = TaskTrace::start(&env, &off);
        assert!(!fresh.continued);
        assert_ne!(fresh.context.trace_id, t.context.trace_id);
        let child = fresh.for_children(&off).unwrap();
        assert_eq!(TraceContext::parse(&child), Some(fresh.context));
        assert!(!fresh.context.sampled, "nobody records this trace");
    }
}
