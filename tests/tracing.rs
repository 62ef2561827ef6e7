//! Traces and logs as an operator meets them (issue 17): one task published
//! by `chit publish`, run by `chit worker` and stored by `chit sink`, each
//! exporting OTLP to a receiver on loopback, is one trace with the spans of
//! the OpenTelemetry messaging conventions; the command's child gets the
//! `execute` span as `TRACEPARENT`; a task from a plain AMQP client starts
//! a trace of its own; `--log-format json` lines carry the task's fields.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use broker_topology::{Receipt, ReceiptType, TraceContext, names};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{ChildGuard, ReceiptTap, Vhost, apply_capabilities, chit, free_port, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A span as the receiver got it: ids in hex, attributes as text.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attrs: HashMap<String, String>,
    links: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map(String::as_str).unwrap_or("")
    }
}

/// An OTLP/HTTP receiver on loopback: `POST /v1/traces`, protobuf.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Got>>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn collect(State(spans): State<Arc<Mutex<Vec<Got>>>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut got = spans.lock().unwrap();
    for rs in request.resource_spans {
        let resource = rs
            .resource
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attrs: attrs(&s.attributes),
                    links: s
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", post(collect))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { endpoint, spans }
    }

    /// `cmd` exporting here, in batches sent every 100 ms.
    fn export(&self, cmd: &mut Command) {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &self.endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL");
    }

    /// Waits for the span `pick` finds.
    async fn span(&self, what: &str, pick: impl Fn(&Got) -> bool) -> Got {
        wait_for(what, WAIT, || {
            let found = self.spans.lock().unwrap().iter().find(|s| pick(s)).cloned();
            async move { found }
        })
        .await
    }

    fn all(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }
}

fn worker(vhost: &Vhost) -> Command {
    let mut cmd = chit();
    cmd.args(["worker", "--amqp-url", &vhost.url]).args([
        "--capability",
        "command.execute",
        "--drain-timeout",
        "5",
    ]);
    cmd
}

/// A command that writes its `TRACEPARENT` to `file`.
fn writes_traceparent(file: &std::path::Path) -> Value {
    json!({ "command": format!("printf %s \"$TRACEPARENT\" > {}", file.display()) })
}

fn ended(rs: &[Receipt]) -> bool {
    rs.iter().any(|r| r.receipt_type == ReceiptType::Success)
}

/// Declares the topology of `command.execute`, so a task published before
/// the worker is up waits for it.
async fn declare(vhost: &Vhost) -> lapin::Connection {
    let conn = vhost.connect().await;
    apply_capabilities(&conn, &["command.execute"]).await;
    conn
}

/// Publishes `payload` as a plain AMQP client would: a message id, a JSON
/// body, and no chit header, no `traceparent`.
async fn publish_plain(vhost: &Vhost, payload: &Value) -> String {
    let conn = declare(vhost).await;
    let ch = conn.create_channel().await.unwrap();
    let task_id = uuid::Uuid::new_v4().to_string();
    ch.basic_publish(
        names::TASK_EXCHANGE.into(),
        "command.execute".into(),
        BasicPublishOptions::default(),
        payload.to_string().as_bytes(),
        BasicProperties::default().with_message_id(task_id.as_str().into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    task_id
}

#[tokio::test(flavor = "multi_thread")]
async fn one_task_is_one_trace_from_the_producer_through_the_worker_to_the_sink() {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let otlp = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _conn = declare(&vhost).await;

    let port = free_port();
    let mut sink = chit();
    sink.args(["sink", "--amqp-url", &vhost.url])
        .args([
            "--store",
            &format!("sqlite://{}", dir.path().join("r.db").display()),
        ])
        .args(["--http", &format!("127.0.0.1:{port}")]);
    otlp.export(&mut sink);
    let _sink = ChildGuard::spawn(sink);
    let mut w = worker(&vhost);
    otlp.export(&mut w);
    let _worker = ChildGuard::spawn(w);

    let file = dir.path().join("traceparent");
    let mut publish = chit();
    publish
        .args(["publish", "command.execute", "--amqp-url", &vhost.url])
        .args(["--payload", &writes_traceparent(&file).to_string()]);
    otlp.export(&mut publish);
    let out = publish.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let receipts = tap.wait_task(&task_id, WAIT, ended).await;
    let of = |t: ReceiptType| receipts.iter().find(|r| r.receipt_type == t).unwrap();
    let trace_id = of(ReceiptType::Queued)
        .trace_id
        .expect("queued records the trace");
    assert!(
        receipts.iter().all(|r| r.trace_id == Some(trace_id)),
        "one trace id in every receipt: {receipts:?}"
    );
    let trace = trace_id.to_string();

    // The producer's publish, in its own process and service.
    let publish = otlp
        .span("the producer's publish span", |s| {
            s.name == "publish chit.tasks" && s.attr("messaging.message.id") == task_id
        })
        .await;
    assert_eq!(publish.service, "chit-publish");
    assert_eq!(publish.trace_id, trace);
    assert_eq!(publish.parent_span_id, "", "publish starts the trace");
    assert_eq!(publish.attr("messaging.system"), "rabbitmq");
    assert_eq!(publish.attr("messaging.destination.name"), "chit.tasks");
    assert_eq!(
        publish.attr("messaging.rabbitmq.destination.routing_key"),
        "command.execute"
    );
    assert_eq!(
        of(ReceiptType::Queued).span_id.map(|s| s.to_string()),
        Some(publish.span_id.clone()),
        "queued names the publish span"
    );

    // The worker's process, a child of the publish across the broker.
    let process = otlp
        .span("the worker's process span", |s| {
            s.name == "process chit.task.command.execute"
                && s.attr("messaging.message.id") == task_id
        })
        .await;
    assert_eq!(process.service, "chit-worker");
    assert_eq!(process.trace_id, trace);
    assert_eq!(process.parent_span_id, publish.span_id);
    assert_eq!(process.attr("messaging.system"), "rabbitmq");
    assert_eq!(process.attr("messaging.destination.name"), "chit.tasks");
    assert_eq!(
        process.attr("messaging.rabbitmq.destination.routing_key"),
        "command.execute"
    );
    assert_eq!(process.attr("chit.task.type"), "command.execute");
    assert_eq!(process.attr("chit.task.attempt"), "1");
    let accepted = of(ReceiptType::Accepted);
    assert_eq!(
        Some(process.attr("chit.worker.id")),
        accepted.worker_id.as_deref()
    );
    assert_eq!(process.attr("chit.outcome"), "success");
    for r in receipts.iter().filter(|r| r.worker_id.is_some()) {
        assert_eq!(
            r.span_id.map(|s| s.to_string()),
            Some(process.span_id.clone()),
            "{:?} names the process span",
            r.receipt_type
        );
    }

    // execute under process, and its context is the child's TRACEPARENT.
    let execute = otlp
        .span("the execute span", |s| {
            s.name == "execute command.execute" && s.parent_span_id == process.span_id
        })
        .await;
    assert_eq!(execute.trace_id, trace);
    let child = TraceContext::parse(&std::fs::read_to_string(&file).unwrap())
        .expect("the child got a TRACEPARENT");
    assert_eq!(child.trace_id, trace_id);
    assert_eq!(child.span_id.to_string(), execute.span_id);

    // The receipt publishes under process, on the receipts exchange.
    let receipt_publish = otlp
        .span("a receipt publish span", |s| {
            s.name == "publish chit.receipts" && s.parent_span_id == process.span_id
        })
        .await;
    assert_eq!(receipt_publish.trace_id, trace);
    assert_eq!(
        receipt_publish.attr("messaging.destination.name"),
        "chit.receipts"
    );

    // The sink's persist: no parent in the trace, a link to the receipts.
    let persist = otlp
        .span("the sink's persist span linked to the task", |s| {
            s.name.starts_with("persist ")
                && s.links.contains(&(trace.clone(), process.span_id.clone()))
        })
        .await;
    assert_eq!(persist.service, "chit-sink");
    assert_ne!(persist.trace_id, trace, "a batch is no task's child");
    assert_eq!(persist.attr("messaging.system"), "rabbitmq");

    // `chit task show` prints the trace id, as a link with a template.
    let shown = chit()
        .args([
            "task",
            "show",
            &task_id,
            "--api",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--wait-secs", "10"])
        .env(
            "CHIT_TRACE_URL",
            "https://traces.example/explore?traceId={trace_id}",
        )
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!(
            "trace: {trace} https://traces.example/explore?traceId={trace}"
        )),
        "{shown}"
    );
    let stored = otlp.all().iter().filter(|s| s.trace_id == trace).count();
    assert!(
        stored >= 5,
        "publish, process, execute, receipt publishes: {stored}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_from_a_plain_client_gets_a_trace_id_that_reaches_its_child_without_export() {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = worker(&vhost);
    w.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let _worker = ChildGuard::spawn(w);

    let file = dir.path().join("traceparent");
    let task_id = publish_plain(&vhost, &writes_traceparent(&file)).await;
    let receipts = tap.wait_task(&task_id, WAIT, ended).await;
    let trace_id = receipts[0].trace_id.expect("a trace id in the receipts");
    assert!(receipts.iter().all(|r| r.trace_id == Some(trace_id)));
    assert!(
        receipts.iter().all(|r| r.span_id.is_none()),
        "no span of the worker's own when it does not trace"
    );
    let child = TraceContext::parse(&std::fs::read_to_string(&file).unwrap())
        .expect("the child got a TRACEPARENT");
    assert_eq!(child.trace_id, trace_id);
    assert!(!child.sampled, "nobody records this trace");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_task_fields_and_a_plain_task_starts_a_new_trace() {
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let otlp = Receiver::start().await;
    let mut w = worker(&vhost);
    w.args(["--log-format", "json", "--log-level", "info"])
        .env("RUST_LOG", "off")
        .stderr(Stdio::piped());
    otlp.export(&mut w);
    let mut worker = ChildGuard::spawn(w);
    let stderr = worker.0.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });

    let task_id = publish_plain(&vhost, &json!({"command": "true"})).await;
    let receipts = tap.wait_task(&task_id, WAIT, ended).await;
    let trace = receipts[0].trace_id.expect("a trace id").to_string();

    // The worker's own root span: a new trace, named in the receipts.
    let process = otlp
        .span("the process span of the plain task", |s| {
            s.name.starts_with("process ") && s.attr("messaging.message.id") == task_id
        })
        .await;
    assert_eq!(process.trace_id, trace);
    assert_eq!(process.parent_span_id, "", "no traceparent: a root span");

    // --log-level info wins over RUST_LOG=off; every line is JSON.
    let finished: Value = wait_for("the task's finish line in JSON", WAIT, || {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["task_id"] == task_id.as_str() && v["message"] == "task finished").then_some(v)
        });
        async move { found }
    })
    .await;
    assert_eq!(finished["task_type"], "command.execute");
    assert_eq!(finished["attempt"], 1);
    assert_eq!(finished["trace_id"], trace.as_str());
    assert_eq!(finished["level"], "INFO");
    assert_eq!(finished["outcome"], "success");
    let all = lines.lock().unwrap().clone();
    assert!(!all.is_empty());
    for line in &all {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}
