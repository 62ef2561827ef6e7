//! The HTTP gateway (`chit gateway`) against a real broker: submitting
//! tasks and reading their chains, seed 000's curl examples as written,
//! every error status, idempotency keys under a race and across a restart,
//! publish-and-wait, delayed tasks, and `chit gateway keys`. The broker
//! faults (a blocked broker, one that is gone) run on a node of their own.

#[path = "support/broker_node.rs"]
mod broker_node;
mod support;

use broker_link::Declare;
use broker_node::{BrokerNode, BrokerOpts};
use broker_topology::{Capability, ReceiptType, Topology, names};
use chrono::Utc;
use receipts_sink::Store;
use receipts_sink::store::IdempotencyRecord;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{
    ChildGuard, ReceiptTap, Vhost, apply_capabilities, chit, free_port, queue_depth, wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

/// `chit gateway keys add` on `store`: (key id, key).
fn add_key(store: &str, name: &str, scopes: &[&str]) -> (String, String) {
    let mut cmd = chit();
    cmd.args([
        "gateway", "keys", "add", "--json", "--store", store, "--name", name,
    ]);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "keys add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["key_id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// A running `chit gateway` on a port of its own.
struct Gateway {
    child: ChildGuard,
    port: u16,
}

impl Gateway {
    fn start(amqp_url: &str, store: &str, extra: &[&str]) -> Gateway {
        let port = free_port();
        let mut cmd = chit();
        cmd.args(["gateway", "--amqp-url", amqp_url, "--store", store])
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(extra);
        Gateway {
            child: ChildGuard::spawn(cmd),
            port,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `/healthz` answers `want`.
    async fn wait_health(&self, want: u16) -> Value {
        let url = format!("{}/healthz", self.base());
        wait_for(&format!("gateway /healthz {want}"), WAIT, || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                (r.status().as_u16() == want).then_some(())?;
                r.json::<Value>().await.ok()
            }
        })
        .await
    }

    /// Stops it with SIGTERM and waits for it to exit.
    fn stop(mut self) {
        self.child.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self
            .child
            .wait_timeout(WAIT)
            .expect("gateway stops on SIGTERM");
        assert!(status.success(), "gateway exit status {status:?}");
    }
}

/// A vhost with the topology of `capabilities`, a store in a temp dir, a
/// sink on it, a gateway, and a key with every task type and admin.
struct Rig {
    vhost: Vhost,
    dir: tempfile::TempDir,
    store: String,
    gateway: Gateway,
    key: String,
    _sink: ChildGuard,
    workers: Vec<ChildGuard>,
}

impl Rig {
    async fn start(capabilities: &[&str], gateway_flags: &[&str]) -> Rig {
        let vhost = Vhost::create();
        let conn = vhost.connect().await;
        let caps: Vec<Capability> = capabilities
            .iter()
            .map(|c| Capability::new(*c).unwrap())
            .collect();
        Topology::for_capabilities(&caps)
            .apply(&conn)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("receipts.db").display());
        let (_, key) = add_key(&store, "test", &["*", "admin"]);
        let mut sink = chit();
        sink.args(["sink", "--amqp-url", &vhost.url, "--store", &store])
            .args(["--http", &format!("127.0.0.1:{}", free_port())]);
        let sink = ChildGuard::spawn(sink);
        let gateway = Gateway::start(&vhost.url, &store, gateway_flags);
        gateway.wait_health(200).await;
        Rig {
            vhost,
            dir,
            store,
            gateway,
            key,
            _sink: sink,
            workers: Vec::new(),
        }
    }

    fn worker(&mut self, capability: &str) {
        let mut cmd = chit();
        cmd.args(["worker", "--amqp-url", &self.vhost.url]).args([
            "--capability",
            capability,
            "--drain-timeout",
            "2",
        ]);
        self.workers.push(ChildGuard::spawn(cmd));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.base())
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        get_json(&self.url(path), Some(&self.key)).await
    }

    /// Waits until the store behind the gateway shows `task_id` in `state`.
    async fn wait_state(&self, task_id: &str, state: &str) -> Value {
        wait_for(&format!("task {task_id} {state}"), WAIT, || async {
            let (status, body) = self.get(&format!("/v1/tasks/{task_id}")).await;
            (status == StatusCode::OK && body["task"]["state"] == state).then_some(body)
        })
        .await
    }
}

async fn get_json(url: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Sends `body` as it is, with `key` when given; (status, headers, JSON).
async fn raw_post(
    url: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: the body is JSON ({e}): {text:?}"));
    (status, headers, json)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("<none>")
}

fn receipt_types(view: &Value) -> Vec<String> {
    view["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["receipt_type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submitted_task_runs_and_the_gateway_serves_its_chain() {
    let mut rig = Rig::start(&["command.execute"], &[]).await;
    rig.worker("command.execute");
    let out = rig.dir.path().join("out.json");
    let r = reqwest::Client::new()
        .post(rig.url("/v1/tasks"))
        .bearer_auth(&rig.key)
        .json(&json!({
            "task_type": "command.execute",
            "payload": {"command": "echo happy", "output_path": out.to_str().unwrap()},
            "max_attempts": 2,
            "timeout_secs": 30,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let task_id = body["task_id"].as_str().unwrap().to_owned();
    let queued = body["queued_receipt_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/tasks/{task_id}"));

    let view = rig.wait_state(&task_id, "succeeded").await;
    assert_eq!(receipt_types(&view), ["queued", "accepted", "success"]);
    assert_eq!(view["chain"][0]["receipt_id"], queued.as_str());
    assert_eq!(view["task"]["task_type"], "command.execute");
    let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written["stdout"], "happy\n");

    let (status, receipts) = rig.get(&format!("/v1/receipts?task_id={task_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipts["task_id"], task_id.as_str());
    assert_eq!(receipts["receipts"], view["chain"]);

    // Filters, with `type=` as well as `task_type=`.
    for query in [
        "state=succeeded&type=command.execute&limit=5",
        "state=succeeded&task_type=command.execute",
    ] {
        let (status, page) = rig.get(&format!("/v1/tasks?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(page["tasks"][0]["task_id"], task_id.as_str(), "{query}");
    }
    for query in ["state=queued", "type=noop", "state=succeeded&type=other"] {
        let (_, page) = rig.get(&format!("/v1/tasks?{query}")).await;
        assert_eq!(page["tasks"], json!([]), "{query}");
    }
    let (status, body) = rig.get("/v1/tasks?state=done").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    // The same answers as the sink's own API: one implementation.
    let (_, health) = get_json(&rig.url("/healthz"), None).await;
    assert_eq!(health, json!({"store": "ok", "broker": "connected"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_000s_curl_examples_work_as_written() {
    let mut rig = Rig::start(&["command.execute"], &[]).await;
    rig.worker("command.execute");
    let files = ["/tmp/asyncgate_test_output.json", "/tmp/ls_output.json"];
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    // Seed 000's two examples, as written; only the port and the key differ.
    let first = r#"curl -X POST http://localhost:8000/v1/tasks \
  -H "Authorization: Bearer your-api-key" \
  -H "Content-Type: application/json" \
  -d '{
    "task_type": "command.execute",
    "payload": {
      "command": "echo \"Hello from AsyncGate\"",
      "output_path": "/tmp/asyncgate_test_output.json"
    }
  }'"#;
    let second = r#"curl -X POST http://localhost:8000/v1/tasks \
     -H "Authorization: Bearer test-key" \
     -H "Content-Type: application/json" \
     -d '{
       "task_type": "command.execute",
       "payload": {
         "command": "ls -la /tmp",
         "output_path": "/tmp/ls_output.json"
       }
     }'"#;
    let port = format!("localhost:{}", rig.gateway.port);
    let mut ids = Vec::new();
    for (example, key, file) in [
        (first, "your-api-key", files[0]),
        (second, "test-key", files[1]),
    ] {
        let script = example
            .replace("localhost:8000", &port)
            .replace(key, &rig.key);
        let out = Command::new("bash")
            .args(["-c", &format!("{script} --silent --show-error")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let id = answer["task_id"].as_str().expect("a task id").to_owned();
        assert!(answer["queued_receipt_id"].is_string(), "{answer}");
        rig.wait_state(&id, "succeeded").await;
        let written: Value = wait_for(&format!("{file} written"), WAIT, || async {
            serde_json::from_slice(&std::fs::read(file).ok()?).ok()
        })
        .await;
        assert_eq!(written["exit_code"], 0, "{written}");
        ids.push((id, written));
    }
    assert_eq!(ids[0].1["stdout"], "Hello from AsyncGate\n");
    assert_eq!(ids[0].1["command"], "echo \"Hello from AsyncGate\"");
    let listing = ids[1].1["stdout"].as_str().unwrap();
    assert!(listing.starts_with("total "), "{listing}");
    assert!(listing.contains("asyncgate_test_output.json"), "{listing}");
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_json_with_its_status() {
    let rig = Rig::start(&["command.execute", "noop"], &["--max-body-bytes", "4096"]).await;
    let tasks = rig.url("/v1/tasks");
    let ok_body = json!({"task_type": "noop", "payload": {}}).to_string();

    // 400: malformed JSON, a missing field, an unknown one, a bad task
    // type, a payload that breaks its schema (naming the field).
    for (body, says) in [
        ("{\"task_type\": ", "not valid JSON"),
        ("{\"payload\": {}}", "missing field `task_type`"),
        ("{\"task_type\": \"noop\"}", "missing field `payload`"),
        (
            "{\"task_type\": \"noop\", \"payload\": {}, \"priority\": 1}",
            "unknown field `priority`",
        ),
        (
            "{\"task_type\": \"no spaces\", \"payload\": {}}",
            "not a valid capability",
        ),
        (
            "{\"task_type\": \"noop\", \"payload\": {}, \"max_attempts\": 0}",
            "max attempts",
        ),
        (
            "{\"task_type\": \"noop\", \"payload\": {}, \"timeout_secs\": -1}",
            "timeout_secs",
        ),
    ] {
        let (status, _, err) = raw_post(&tasks, Some(&rig.key), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(message(&err).contains(says), "{body}: {err}");
    }
    let (status, _, err) = raw_post(
        &tasks,
        Some(&rig.key),
        json!({"task_type": "command.execute", "payload": {"command": "true", "timeout_secs": "soon"}})
            .to_string(),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "invalid_payload")
    );
    assert!(message(&err).contains("/timeout_secs"), "{err}");
    assert_eq!(err["error"]["violations"][0]["pointer"], "/timeout_secs");

    // 401: no key, not a key, a wrong one, a revoked one.
    let (_, other) = add_key(&rig.store, "other", &["noop"]);
    let mut wrong = other.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for key in [None, Some("your-api-key"), Some(wrong.as_str())] {
        let (status, headers, err) = raw_post(&tasks, key, ok_body.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{key:?}"
        );
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let (revoked_id, revoked) = add_key(&rig.store, "revoked", &["*"]);
    let (status, _, _) = raw_post(&tasks, Some(&revoked), ok_body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "valid before revocation");
    let out = chit()
        .args([
            "gateway",
            "keys",
            "revoke",
            &revoked_id,
            "--store",
            &rig.store,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (status, _, err) = raw_post(&tasks, Some(&revoked), ok_body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message(&err).contains("revoked"), "{err}");
    // The queries need a key too.
    let (status, err) = get_json(&rig.url("/v1/tasks"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let (status, _) = get_json(&rig.url("/v1/tasks"), Some(&revoked)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // 403: a key without the scope.
    let (status, _, err) = raw_post(
        &tasks,
        Some(&other),
        json!({"task_type": "command.execute", "payload": {"command": "true"}}).to_string(),
    )
    .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(message(&err).contains("command.execute"), "{err}");
    let (status, _, _) = raw_post(&tasks, Some(&other), ok_body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "its own scope is fine");

    // 404: a task type without a queue, an unknown task, an unknown route.
    let (status, err) = rig
        .post(
            "/v1/tasks",
            &json!({"task_type": "nobody.serves", "payload": {}}),
        )
        .await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "not_found"));
    assert!(message(&err).contains("nobody.serves"), "{err}");
    let (status, err) = rig.get("/v1/tasks/no-such-task").await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, err) = rig.get("/v2/nothing").await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "not_found"));

    // 413: over --max-body-bytes.
    let big = json!({"task_type": "noop", "payload": {"pad": "x".repeat(5000)}}).to_string();
    let (status, _, err) = raw_post(&tasks, Some(&rig.key), big).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert!(message(&err).contains("4096"), "{err}");

    // 409: an idempotency key with another request.
    let first = json!({"task_type": "noop", "payload": {"n": 1}, "idempotency_key": "k-409"});
    let (status, _) = rig.post("/v1/tasks", &first).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let changed = json!({"task_type": "noop", "payload": {"n": 2}, "idempotency_key": "k-409"});
    let (status, err) = rig.post("/v1/tasks", &changed).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "conflict"));
    assert!(message(&err).contains("k-409"), "{err}");
    // The key belongs to one API key: another may use the same string.
    let (status, _, _) = raw_post(&tasks, Some(&other), changed.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("r.db").display());
    let (_, key) = add_key(&store, "t", &["*"]);
    let nowhere = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let gateway = Gateway::start(&nowhere, &store, &["--publish-deadline", "2s"]);
    let health = gateway.wait_health(503).await;
    assert_eq!(health["store"], "ok");
    assert_ne!(health["broker"], "connected");
    let started = Instant::now();
    let (status, headers, err) = raw_post(
        &format!("{}/v1/tasks", gateway.base()),
        Some(&key),
        json!({"task_type": "noop", "payload": {}}).to_string(),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{err}"
    );
    assert!(headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded by the deadline"
    );
    gateway.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_broker_is_429_and_a_stopped_one_503() {
    let mut node = BrokerNode::start(BrokerOpts::default());
    let url = node.amqp_url();
    let conn = broker_link::connect(&url, "test").await.unwrap();
    apply_capabilities(&conn, &["noop"]).await;
    drop(conn);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("r.db").display());
    let (_, key) = add_key(&store, "t", &["*"]);
    let gateway = Gateway::start(&url, &store, &["--publish-deadline", "3s"]);
    gateway.wait_health(200).await;
    let tasks = format!("{}/v1/tasks", gateway.base());
    let submit = || async {
        raw_post(
            &tasks,
            Some(&key),
            json!({"task_type": "noop", "payload": {}}).to_string(),
        )
        .await
    };
    let (status, _, _) = submit().await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // A memory alarm on this node only: publishers are blocked.
    node.set_memory_watermark(0.00001);
    let (headers, err) = wait_for(
        "429 while the broker blocks publishing",
        Duration::from_secs(60),
        || async {
            let (status, headers, err) = submit().await;
            (status == StatusCode::TOO_MANY_REQUESTS).then_some((headers, err))
        },
    )
    .await;
    assert_eq!(code(&err), "broker_blocked");
    assert!(message(&err).contains("blocks publishing"), "{err}");
    assert!(headers.contains_key("retry-after"));
    // Blocked is known now: the next answer comes at once.
    let started = Instant::now();
    let (status, _, _) = submit().await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let health = gateway.wait_health(200).await;
    assert_eq!(health["broker"], "blocked");

    node.set_memory_watermark(0.4);
    wait_for(
        "202 once the alarm clears",
        Duration::from_secs(60),
        || async { (submit().await.0 == StatusCode::ACCEPTED).then_some(()) },
    )
    .await;

    // The broker gone: 503.
    node.stop();
    let (status, _, err) = submit().await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{err}"
    );
    gateway.wait_health(503).await;
    gateway.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_racing_requests_with_one_idempotency_key_publish_once_and_a_restart_keeps_it() {
    // No worker: the one task stays in its queue, to be counted.
    let vhost = Vhost::create();
    let tap = ReceiptTap::start(&vhost).await;
    let conn = vhost.connect().await;
    apply_capabilities(&conn, &["noop"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("r.db").display());
    let (_, key) = add_key(&store, "t", &["noop"]);
    let gateway = Gateway::start(&vhost.url, &store, &[]);
    gateway.wait_health(200).await;
    let tasks = format!("{}/v1/tasks", gateway.base());
    let body = json!({"task_type": "noop", "payload": {"order": 42}});
    let client = reqwest::Client::new();
    let requests = (0..20).map(|i| {
        let req = client.post(&tasks).bearer_auth(&key);
        // Half give the key in the body, half in the header.
        let req = if i % 2 == 0 {
            let mut b = body.clone();
            b["idempotency_key"] = json!("order-42");
            req.json(&b)
        } else {
            req.header("Idempotency-Key", "order-42").json(&body)
        };
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        ids.insert((
            body["task_id"].as_str().unwrap().to_owned(),
            body["queued_receipt_id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(ids.len(), 1, "one task for one key: {ids:?}");
    let (task_id, queued_id) = ids.into_iter().next().unwrap();
    let queue = names::task_queue("noop");
    wait_for("the task in its queue", WAIT, || async {
        (queue_depth(&conn, &queue).await == 1).then_some(())
    })
    .await;
    let rs = tap.wait_task(&task_id, WAIT, |rs| !rs.is_empty()).await;
    assert_eq!(rs.len(), 1, "one queued receipt: {rs:#?}");
    assert_eq!(rs[0].receipt_type, ReceiptType::Queued);
    assert_eq!(rs[0].receipt_id, queued_id);

    // A restart remembers the key: same task, nothing published.
    gateway.stop();
    let gateway = Gateway::start(&vhost.url, &store, &[]);
    gateway.wait_health(200).await;
    let mut again = body.clone();
    again["idempotency_key"] = json!("order-42");
    let (status, _, answer) = raw_post(
        &format!("{}/v1/tasks", gateway.base()),
        Some(&key),
        again.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["task_id"], task_id.as_str());
    assert_eq!(answer["queued_receipt_id"], queued_id.as_str());
    // Field order does not make another request.
    let reordered = format!(
        r#"{{"payload": {{"order": 42}}, "idempotency_key": "order-42", "task_type": "noop"}}"#
    );
    let (status, _, answer) = raw_post(
        &format!("{}/v1/tasks", gateway.base()),
        Some(&key),
        reordered,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["task_id"], task_id.as_str());
    // A later task settles the tap: anything published is in it by then.
    let (_, _, later) = raw_post(
        &format!("{}/v1/tasks", gateway.base()),
        Some(&key),
        json!({"task_type": "noop", "payload": {}}).to_string(),
    )
    .await;
    tap.wait_task(later["task_id"].as_str().unwrap(), WAIT, |rs| {
        !rs.is_empty()
    })
    .await;
    assert_eq!(tap.for_task(&task_id).len(), 1, "still one queued receipt");
    assert_eq!(
        queue_depth(&conn, &queue).await,
        2,
        "the key's task and the later one"
    );
    gateway.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_left_by_a_crashed_gateway_is_published_with_its_task_id() {
    let vhost = Vhost::create();
    let conn = vhost.connect().await;
    apply_capabilities(&conn, &["noop"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("r.db").display());
    let (key_id, key) = add_key(&store_url, "t", &["noop"]);
    let gateway = Gateway::start(&vhost.url, &store_url, &["--publish-deadline", "2s"]);
    gateway.wait_health(200).await;
    let tasks = format!("{}/v1/tasks", gateway.base());
    let body = json!({"task_type": "noop", "payload": {"n": 7}, "idempotency_key": "crash"});
    // What a gateway that died between reserving and publishing leaves: a
    // record with the request's hash, its ids, a claim a minute old and no
    // publish. The hash is the gateway's; take it from a real request's
    // record under another key, then forge the crashed one.
    let (status, _, _) = raw_post(
        &tasks,
        Some(&key),
        json!({"task_type": "noop", "payload": {"n": 7}, "idempotency_key": "probe"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let store = Store::open(&store_url).await.unwrap();
    let probe = store
        .idempotency_record(&key_id, "probe")
        .await
        .unwrap()
        .unwrap();
    let a_minute_ago = Utc::now() - chrono::Duration::seconds(60);
    let crashed = IdempotencyRecord {
        key_id: key_id.clone(),
        idempotency_key: "crash".into(),
        request_hash: probe.request_hash.clone(),
        task_id: "crashed-task-1".into(),
        queued_receipt_id: "crashed-task-1-queued".into(),
        created_at: a_minute_ago,
        claimed_at: a_minute_ago,
        published_at: None,
    };
    store
        .reserve_idempotency(&crashed, a_minute_ago - chrono::Duration::hours(24))
        .await
        .unwrap();
    let queue = names::task_queue("noop");
    let before = queue_depth(&conn, &queue).await;

    let (status, _, answer) = raw_post(&tasks, Some(&key), body.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["task_id"], "crashed-task-1");
    assert_eq!(answer["queued_receipt_id"], "crashed-task-1-queued");
    assert_eq!(queue_depth(&conn, &queue).await, before + 1);
    let record = store
        .idempotency_record(&key_id, "crash")
        .await
        .unwrap()
        .unwrap();
    assert!(record.published_at.is_some());
    // Published now: the next request publishes nothing.
    let (_, _, answer) = raw_post(&tasks, Some(&key), body.to_string()).await;
    assert_eq!(answer["task_id"], "crashed-task-1");
    assert_eq!(queue_depth(&conn, &queue).await, before + 1);
    store.close().await;
    gateway.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_answers_with_the_final_receipt_or_a_timeout() {
    let mut rig = Rig::start(&["command.execute"], &["--max-wait", "20s"]).await;
    rig.worker("command.execute");
    let task = |command: &str| json!({"task_type": "command.execute", "payload": {"command": command}, "max_attempts": 1});

    let (status, done) = rig.post("/v1/tasks?wait=20s", &task("echo waited")).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["receipt"]["receipt_type"], "success");
    assert_eq!(done["receipt"]["task_id"], done["task_id"]);
    assert_eq!(done["receipt"]["body"]["exit_code"], 0);

    let (status, failed) = rig
        .post("/v1/tasks?wait=20s", &task("echo broken >&2; exit 3"))
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["receipt"]["receipt_type"], "failure", "{failed}");
    assert_eq!(failed["state"], "dead_lettered");
    assert_eq!(failed["receipt"]["body"]["reason"], "failed");
    assert_eq!(failed["receipt"]["body"]["exit_code"], 3);

    let started = Instant::now();
    let (status, late) = rig.post("/v1/tasks?wait=500ms", &task("sleep 3")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{late}");
    assert_eq!(late["timed_out"], true);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let id = late["task_id"].as_str().unwrap().to_owned();
    rig.wait_state(&id, "succeeded").await;

    let (status, err) = rig.post("/v1/tasks?wait=soon", &task("true")).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    assert!(message(&err).contains("500ms, 30s, 2m"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_task_is_scheduled_then_runs() {
    let mut rig = Rig::start(&["command.execute"], &[]).await;
    rig.worker("command.execute");
    let started = Instant::now();
    let (status, body) = rig
        .post(
            "/v1/tasks",
            &json!({"task_type": "command.execute", "payload": {"command": "true"}, "delay_secs": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["task_id"].as_str().unwrap().to_owned();
    let view = rig.wait_state(&id, "succeeded").await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(receipt_types(&view)[0], "scheduled", "{view}");
    assert_eq!(view["chain"][0]["receipt_id"], body["queued_receipt_id"]);
    let (status, err) = rig
        .post(
            "/v1/tasks",
            &json!({"task_type": "command.execute", "payload": {"command": "true"}, "delay_secs": -1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

#[test]
fn keys_are_added_listed_and_revoked_and_the_secret_is_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("r.db").display());
    let run = |args: &[&str]| {
        let out = chit()
            .args(["gateway", "keys"])
            .args(args)
            .args(["--store", &store])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&[
        "add",
        "--name",
        "ci",
        "--scope",
        "command.*",
        "--scope",
        "admin",
    ]);
    assert!(ok, "{stderr}");
    let key = stdout.trim().to_owned();
    assert!(key.starts_with("chit_"), "{stdout}");
    let id = key.split('_').nth(1).unwrap().to_owned();
    assert!(
        stderr.contains(&id) && stderr.contains("not shown again"),
        "{stderr}"
    );
    let secret = key.rsplit('_').next().unwrap().to_owned();

    let (ok, list, _) = run(&["list"]);
    assert!(ok);
    assert!(
        list.contains(&id) && list.contains("ci") && list.contains("command.*,admin"),
        "{list}"
    );
    assert!(!list.contains(&secret), "never the secret: {list}");
    let (_, json_list, _) = run(&["list", "--json"]);
    let keys: Value = serde_json::from_str(&json_list).unwrap();
    assert_eq!(keys[0]["key_id"], id.as_str());
    assert_eq!(keys[0]["revoked_at"], Value::Null);
    assert!(
        keys[0].get("hash").is_none() && keys[0].get("salt").is_none(),
        "{keys}"
    );
    assert!(!json_list.contains(&secret));

    let (ok, out, _) = run(&["revoke", &id]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (_, json_list, _) = run(&["list", "--json"]);
    let keys: Value = serde_json::from_str(&json_list).unwrap();
    assert!(keys[0]["revoked_at"].is_string(), "{keys}");
    let (ok, out, _) = run(&["revoke", &id]);
    assert!(ok && out.contains("already revoked"), "{out}");
    let (ok, _, stderr) = run(&["revoke", "0123456789abcdef"]);
    assert!(!ok && stderr.contains("no API key"), "{stderr}");
    let (ok, _, stderr) = run(&["add", "--name", "bad", "--scope", "com*"]);
    assert!(!ok && stderr.contains("invalid scope"), "{stderr}");
}
