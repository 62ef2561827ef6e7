//! Logs and traces: the one `tracing` subscriber of the binary.
//!
//! Logs go to stderr as text or, with `--log-format json`, one JSON object a
//! line whose keys are the event's fields, the fields of every span it is in
//! (a worker's task span gives `task_id`, `task_type`, `attempt`,
//! `trace_id`), `timestamp`, `level`, `target` and `message`. The level is
//! `--log-level`, else `CHIT_LOG`, else `RUST_LOG`, else the command's own;
//! the quiet filters for chatty dependencies stay unless named.
//!
//! Traces are exported over OTLP (HTTP with protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, configured by the standard `OTEL_*` variables (service name,
//! resource attributes, headers, timeout, sampler, batch processor), and
//! flushed by [`Telemetry::shutdown`]. Only chit's own spans (target
//! `chit::trace`) and warnings are exported. With no endpoint nothing is
//! installed, and those spans stay disabled.

use anyhow::{Context, Result, bail};
use broker_link::trace_context;
use clap::ValueEnum;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Filters added to every log level unless it names their target itself.
const QUIET: [&str; 4] = [
    "lapin=off",
    "sqlx=warn",
    "opentelemetry=warn",
    "chit::trace=off",
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

/// What the binary installed; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Logs, and traces when an OTLP endpoint is configured. `level` is
    /// `--log-level` or the command's default; `service` names this
    /// process when `OTEL_SERVICE_NAME` does not. `runtime` sends the
    /// exports.
    pub fn init(
        format: LogFormat,
        level: Option<&str>,
        default_level: &str,
        service: &str,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Telemetry> {
        let logs = log_layer(format, log_filter(level, default_level));
        let provider = match export_config()? {
            Some(timeout) => Some(tracer_provider(service, timeout, runtime)?),
            None => None,
        };
        let traces = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("chit"))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(
                    Targets::new()
                        .with_target(trace_context::TARGET, Level::TRACE)
                        .with_default(Level::WARN),
                )
        });
        // No layer at all when nothing is exported: an absent (`None`)
        // layer would be interested in everything, and chit's trace spans
        // would be made, only to be thrown away.
        let registry = tracing_subscriber::registry().with(logs);
        match traces {
            Some(traces) => registry.with(traces).try_init(),
            None => registry.try_init(),
        }
        .context("installing the log subscriber")?;
        if provider.is_some() {
            trace_context::enable();
        }
        Ok(Telemetry { provider })
    }

    /// Exports the spans still buffered, waiting at most a few seconds.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("warning: could not flush traces to the OTLP endpoint: {e}");
        }
    }
}

/// The stderr log layer in `format`, behind `filter`.
fn log_layer<S>(format: LogFormat, filter: EnvFilter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_filter(filter)
            .boxed(),
    }
}

/// The log filter: `level`, else `CHIT_LOG`, else `RUST_LOG`, else
/// `default_level`; plus [`QUIET`] for the targets it does not name.
fn log_filter(level: Option<&str>, default_level: &str) -> EnvFilter {
    let wanted = level
        .map(str::to_owned)
        .or_else(|| std::env::var("CHIT_LOG").ok())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|w| !w.trim().is_empty())
        .unwrap_or_else(|| default_level.to_owned());
    let mut directives = wanted.clone();
    for quiet in QUIET {
        let target = quiet.split('=').next().unwrap_or(quiet);
        if !wanted.contains(target) {
            directives.push(',');
            directives.push_str(quiet);
        }
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: log level {wanted:?} not understood ({e}); using {default_level}");
        EnvFilter::new(format!("{default_level},{}", QUIET.join(",")))
    })
}

/// Whether traces are exported, by the standard variables: the export
/// timeout when they are, `None` when no endpoint is set or the SDK is
/// disabled. A protocol or exporter chit does not speak is an error.
fn export_config() -> Result<Option<Duration>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!(
            "OTEL_TRACES_EXPORTER={other}: chit exports traces over OTLP only (`otlp`, or `none`)"
        ),
    }
    if var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_none()
    {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = var(name) {
            if protocol.trim() != "http/protobuf" {
                bail!(
                    "{name}={protocol}: chit exports OTLP over http/protobuf only; \
                     point it at the collector's HTTP port (4318)"
                );
            }
            break;
        }
    }
    let timeout_ms = var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .map(|ms| {
            ms.trim()
                .parse::<u64>()
                .with_context(|| format!("OTEL_EXPORTER_OTLP_TIMEOUT={ms}: not milliseconds"))
        })
        .transpose()?
        .unwrap_or(10_000);
    Ok(Some(Duration::from_millis(timeout_ms)))
}

/// The tracer provider: a batch span processor sending to the OTLP
/// endpoint the `OTEL_EXPORTER_OTLP_*` variables name.
fn tracer_provider(
    service: &str,
    timeout: Duration,
    runtime: &tokio::runtime::Handle,
) -> Result<SdkTracerProvider> {
    let client = RuntimeClient {
        client: reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the OTLP HTTP client")?,
        runtime: runtime.clone(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .build()
        .context("configuring the OTLP exporter from the OTEL_EXPORTER_OTLP_* variables")?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The exporter's HTTP client: the SDK's batch processor runs on a thread
/// of its own, so each request is handed to the binary's runtime.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// `--log-format json`: the event's fields and those of its spans, flat.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        // Outermost span first, so an inner span's field wins.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Writes an event's fields into a JSON object.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_the_trace_spans_are_disabled_where_they_are_made() {
        // The subscriber `init` builds when no endpoint is set.
        for format in [LogFormat::Text, LogFormat::Json] {
            let logs = log_layer(format, log_filter(Some("trace"), "info"));
            let subscriber = tracing_subscriber::registry().with(logs);
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!(target: trace_context::TARGET, "process");
                assert!(span.is_disabled());
                assert!(!tracing::info_span!("task").is_disabled());
            });
        }
    }

    #[test]
    fn the_quiet_filters_stay_unless_named() {
        let f = log_filter(Some("debug"), "info").to_string();
        assert!(
            f.contains("lapin=off") && f.contains("chit::trace=off"),
            "{f}"
        );
        let f = log_filter(Some("info,lapin=debug"), "warn").to_string();
        assert!(f.contains("lapin=debug") && !f.contains("lapin=off"), "{f}");
    }
}
