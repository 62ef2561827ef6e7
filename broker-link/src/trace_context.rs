//! Trace context between `tracing` spans, OpenTelemetry and the broker's
//! headers: the one place chit's crates touch OpenTelemetry.
//!
//! chit's spans for OpenTelemetry (`publish`, `process`, `execute`,
//! `persist`) are `tracing` spans with the target [`TARGET`]. The binary
//! installs an OpenTelemetry layer for that target only when export is
//! configured, and calls [`enable`]; without it, no subscriber is interested
//! in the target, so those spans are disabled at their call site and cost a
//! cached check, and every function here returns at once on [`enabled`].
//!
//! With export on, [`send`](crate::publish::send), the one publish path,
//! writes the current span's context into each message's `traceparent` and
//! `tracestate` headers ([`inject_current`]); a receipt batch gets the
//! context its [`ReceiptPublisher`](crate::ReceiptPublisher) chose. Without
//! it, a message keeps the headers it has.

use broker_topology::envelope::{H_TRACEPARENT, H_TRACESTATE};
use broker_topology::{SpanId, TraceContext, TraceId};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::trace::{self as otel, TraceContextExt};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the spans chit exports: a subscriber that does
/// not trace leaves it disabled.
pub const TARGET: &str = "chit::trace";

/// Most links a span gets: OpenTelemetry SDKs keep 128 by default.
pub const MAX_LINKS: usize = 128;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Says that an OpenTelemetry layer for [`TARGET`] is installed: spans get
/// ids, and publishes carry them. Called once by the binary.
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// True once [`enable`] was called.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The context `span` has in OpenTelemetry: `None` when tracing is off or
/// the span is disabled. Starts the span's clock if it had not started.
pub fn of(span: &Span) -> Option<TraceContext> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    from_otel(span.context().span().span_context())
}

/// The context of the current span, as [`of`].
pub fn current() -> Option<TraceContext> {
    if !enabled() {
        return None;
    }
    of(&Span::current())
}

/// Makes `parent`, read from a message's headers, the parent of `span`,
/// with the `tracestate` that came with it. Call before the span is
/// entered; does nothing when tracing is off.
pub fn set_parent(span: &Span, parent: &TraceContext, tracestate: Option<&str>) {
    if !enabled() || span.is_disabled() {
        return;
    }
    let state = tracestate
        .and_then(|s| otel::TraceState::from_str(s).ok())
        .unwrap_or(otel::TraceState::NONE);
    let cx = opentelemetry::Context::new().with_remote_span_context(to_otel(parent, state));
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "could not set a span's remote parent");
    }
}

/// Links `span` to `to`: a step it follows from without being its child
/// (the receipts a sink stores in one batch).
pub fn link(span: &Span, to: &TraceContext) {
    if !enabled() || span.is_disabled() {
        return;
    }
    span.add_link(to_otel(to, otel::TraceState::NONE));
}

/// Marks `span` as failed with `description`, for OpenTelemetry.
pub fn set_error(span: &Span, description: &str) {
    if !enabled() || span.is_disabled() {
        return;
    }
    span.set_status(otel::Status::error(description.to_owned()));
}

/// `properties` with the current span's `traceparent` and `tracestate`
/// headers in place of any they had; `None` when tracing is off or there
/// is no current span, and the message keeps its own headers.
pub fn inject_current(properties: &BasicProperties) -> Option<BasicProperties> {
    if !enabled() {
        return None;
    }
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    let ctx = from_otel(sc)?;
    let state = sc.trace_state().header();
    Some(with_headers(
        properties,
        &ctx,
        Some(state.as_str()).filter(|s| !s.is_empty()),
    ))
}

/// `properties` with `ctx` as its `traceparent` (and `tracestate`, when
/// given), replacing any trace headers it had.
pub fn with_headers(
    properties: &BasicProperties,
    ctx: &TraceContext,
    tracestate: Option<&str>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = properties.headers() {
        for (name, value) in old.inner() {
            if name.as_str() != H_TRACEPARENT && name.as_str() != H_TRACESTATE {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    headers.insert(
        H_TRACEPARENT.into(),
        AMQPValue::LongString(LongString::from(ctx.traceparent().as_str())),
    );
    if let Some(state) = tracestate {
        headers.insert(
            H_TRACESTATE.into(),
            AMQPValue::LongString(LongString::from(state)),
        );
    }
    properties.clone().with_headers(headers)
}

fn from_otel(sc: &otel::SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    Some(TraceContext {
        trace_id: TraceId::from_bytes(sc.trace_id().to_bytes())?,
        span_id: SpanId::from_bytes(sc.span_id().to_bytes())?,
        sampled: sc.is_sampled(),
    })
}

fn to_otel(ctx: &TraceContext, state: otel::TraceState) -> otel::SpanContext {
    otel::SpanContext::new(
        otel::TraceId::from_bytes(ctx.trace_id.to_bytes()),
        otel::SpanId::from_bytes(ctx.span_id.to_bytes()),
        if ctx.sampled {
            otel::TraceFlags::SAMPLED
        } else {
            otel::TraceFlags::default()
        },
        true,
        state,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_it_does_nothing_and_headers_are_written_on_request() {
        // No layer is installed in unit tests, and `enable` is not called.
        let span = tracing::info_span!(target: TARGET, "process");
        assert_eq!(of(&span), None);
        assert!(inject_current(&BasicProperties::default()).is_none());
        let ctx = TraceContext::new_root(true);
        let props = with_headers(&BasicProperties::default(), &ctx, Some("k=v"));
        let headers = props.headers().as_ref().unwrap();
        let env = broker_topology::TaskEnvelope::from_delivery(&props, "x", false).envelope;
        assert_eq!(env.traceparent, Some(ctx.traceparent()));
        assert_eq!(env.tracestate.as_deref(), Some("k=v"));
        let again = with_headers(&props, &ctx, None);
        assert!(headers.inner().contains_key(H_TRACESTATE));
        assert!(
            !again
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .contains_key(H_TRACESTATE)
        );
    }

    #[test]
    fn contexts_cross_into_opentelemetry_and_back() {
        let ctx = TraceContext::new_root(false);
        let sc = to_otel(&ctx, otel::TraceState::NONE);
        assert!(sc.is_remote());
        assert_eq!(from_otel(&sc), Some(ctx));
        assert_eq!(from_otel(&otel::SpanContext::NONE), None);
    }
}
