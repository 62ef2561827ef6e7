//! `http.request` against a real server on 127.0.0.1 (allowed explicitly
//! through `private_hosts`), and the SSRF guard's refusals.

use super::*;
use axum::Router;
use axum::extract::{Path as UrlPath, Query};
use axum::http::{HeaderMap as AxumHeaders, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A test server on an ephemeral loopback port, stopped on drop.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start() -> Server {
        let app = Router::new()
            .route(
                "/json",
                get(|| async { axum::Json(json!({"hello": "world", "n": 3})) }),
            )
            .route(
                "/echo",
                any(
                    |method: Method, headers: AxumHeaders, body: String| async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        axum::Json(json!({
                            "method": method.as_str(),
                            "content_type": h("content-type"),
                            "x_test": h("x-test"),
                            "traceparent": h("traceparent"),
                            "body": body,
                        }))
                    },
                ),
            )
            .route(
                "/status/{code}",
                get(|UrlPath(code): UrlPath<u16>| async move {
                    (StatusCode::from_u16(code).unwrap(), "not what you wanted")
                }),
            )
            .route(
                "/bytes/{n}",
                get(|UrlPath(n): UrlPath<usize>| async move {
                    let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                    ([(header::CONTENT_TYPE, "text/plain")], body)
                }),
            )
            .route(
                "/binary",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/octet-stream")],
                        vec![0u8, 159, 146, 150],
                    )
                }),
            )
            .route("/never", get(std::future::pending::<Response>))
            .route(
                "/redirect",
                get(|Query(q): Query<BTreeMap<String, String>>| async move {
                    Redirect::to(&q["to"]).into_response()
                }),
            )
            .route("/loop", get(|| async { Redirect::to("/loop") }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn ctx() -> TaskContext {
    TaskContext {
        task_id: format!("http-test-{}", rand::random::<u64>()),
        task_type: "http.request".into(),
        attempt: 1,
        worker_id: "w".into(),
        timeout: None,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        polls: 0,
        previous_output: None,
    }
}

/// Options that let the test server (127.0.0.1) through, bodies in `dir`.
fn loopback_options(dir: &Path) -> HttpOptions {
    HttpOptions {
        private_hosts: vec!["127.0.0.1".into()],
        artifact_dir: Some(dir.to_path_buf()),
        ..HttpOptions::default()
    }
}

async fn run(exec: &HttpExecutor, payload: Value) -> Result<Outcome, ExecError> {
    exec.validate(&payload)?;
    exec.execute(&ctx(), payload, Cancellation::never()).await
}

#[tokio::test]
async fn get_reports_status_headers_and_a_json_body() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new("http.request", loopback_options(dir.path())).unwrap();
    let out = run(&exec, json!({"url": server.url("/json")}))
        .await
        .unwrap();
    assert_eq!(out.body["status"], 200);
    assert_eq!(out.body["body"], json!({"hello": "world", "n": 3}));
    assert_eq!(out.body["body_encoding"], "json");
    assert_eq!(out.body["headers"]["content-type"], "application/json");
    assert_eq!(out.body["remote_addr"], server.addr.to_string());
    let raw = serde_json::to_vec(&json!({"hello": "world", "n": 3})).unwrap();
    assert_eq!(out.body["body_bytes"], raw.len());
    assert_eq!(out.body["body_sha256"], hex::encode(Sha256::digest(&raw)));
    assert!(out.artifacts.is_empty());
}

#[tokio::test]
async fn post_sends_a_json_body_headers_and_the_traceparent() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new("http.request", loopback_options(dir.path())).unwrap();
    let out = run(
        &exec,
        json!({
            "method": "post",
            "url": server.url("/echo"),
            "headers": {"X-Test": "yes"},
            "json": {"a": [1, 2]},
        }),
    )
    .await
    .unwrap();
    let echoed = &out.body["body"];
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["content_type"], "application/json");
    assert_eq!(echoed["x_test"], "yes");
    assert_eq!(echoed["traceparent"], ctx().traceparent.unwrap());
    assert_eq!(
        serde_json::from_str::<Value>(echoed["body"].as_str().unwrap()).unwrap(),
        json!({"a": [1, 2]})
    );
    // A text body, with the payload's own content type.
    let out = run(
        &exec,
        json!({
            "method": "PUT",
            "url": server.url("/echo"),
            "headers": {"content-type": "text/csv"},
            "body": "a,b\n1,2\n",
        }),
    )
    .await
    .unwrap();
    assert_eq!(out.body["body"]["content_type"], "text/csv");
    assert_eq!(out.body["body"]["body"], "a,b\n1,2\n");
}

#[tokio::test]
async fn a_status_outside_the_success_list_fails_and_says_whether_to_retry() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new("http.request", loopback_options(dir.path())).unwrap();
    let err = run(&exec, json!({"url": server.url("/status/404")}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Permanent);
    assert_eq!(err.message, "HTTP 404 Not Found");
    assert_eq!(err.details["status"], 404);
    assert_eq!(err.details["body"], "not what you wanted");
    let err = run(&exec, json!({"url": server.url("/status/503")}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Failed);
    assert!(err.is_retryable());
    // The executor's own success list.
    let exec = HttpExecutor::new(
        "http.request",
        HttpOptions {
            success_statuses: vec!["2xx".into(), "404".into()],
            ..loopback_options(dir.path())
        },
    )
    .unwrap();
    let out = run(&exec, json!({"url": server.url("/status/404")}))
        .await
        .unwrap();
    assert_eq!(out.body["status"], 404);
}

#[tokio::test]
async fn a_body_over_the_inline_limit_goes_to_an_artifact_with_its_sha256() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new(
        "http.request",
        HttpOptions {
            inline_body_bytes: 1000,
            ..loopback_options(dir.path())
        },
    )
    .unwrap();
    let small = run(&exec, json!({"url": server.url("/bytes/1000")}))
        .await
        .unwrap();
    assert_eq!(small.body["body"].as_str().unwrap().len(), 1000);
    assert!(small.artifacts.is_empty());

    let out = run(&exec, json!({"url": server.url("/bytes/300000")}))
        .await
        .unwrap();
    assert!(out.body.get("body").is_none(), "{}", out.body);
    assert_eq!(out.body["body_bytes"], 300000);
    let artifact = &out.artifacts[0];
    let path = artifact.path.as_deref().unwrap();
    assert!(Path::new(path).starts_with(dir.path()), "{path}");
    assert_eq!(out.body["body_artifact"], path);
    let written = std::fs::read(path).unwrap();
    let expected: Vec<u8> = (0..300000).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(written, expected);
    assert_eq!(artifact.size, Some(300000));
    assert_eq!(
        artifact.sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&expected)).as_str())
    );
    assert_eq!(out.body["body_sha256"], artifact.sha256.clone().unwrap());
    assert_eq!(artifact.content_type.as_deref(), Some("text/plain"));
    // Nothing half-written is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn a_body_over_max_response_bytes_fails_and_leaves_no_file() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new(
        "http.request",
        HttpOptions {
            inline_body_bytes: 100,
            ..loopback_options(dir.path())
        },
    )
    .unwrap();
    let err = run(
        &exec,
        json!({"url": server.url("/bytes/200000"), "max_response_bytes": 50000}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Permanent);
    assert!(err.message.contains("max_response_bytes (50000)"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Asking for more than the executor allows is refused up front.
    let err = exec
        .validate(&json!({"url": server.url("/json"), "max_response_bytes": 1u64 << 40}))
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::InvalidPayload);
}

#[tokio::test]
async fn a_binary_body_is_hashed_but_kept_out_of_the_receipt() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new("http.request", loopback_options(dir.path())).unwrap();
    let out = run(&exec, json!({"url": server.url("/binary")}))
        .await
        .unwrap();
    assert_eq!(out.body["body_encoding"], "binary_omitted");
    assert_eq!(out.body["body_bytes"], 4);
    assert!(out.body.get("body").is_none());
}

#[tokio::test]
async fn a_request_past_its_timeout_fails_with_reason_timeout() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new("http.request", loopback_options(dir.path())).unwrap();
    let started = Instant::now();
    let err = run(
        &exec,
        json!({"url": server.url("/never"), "timeout_secs": 0.3}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Timeout);
    assert!(err.message.contains("0.3 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Above the executor's maximum: refused before running.
    let err = exec
        .validate(&json!({"url": server.url("/never"), "timeout_secs": 301}))
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::InvalidPayload);
}

#[tokio::test]
async fn a_cancel_abandons_the_request() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(HttpExecutor::new("http.request", loopback_options(dir.path())).unwrap());
    let (canceller, cancel) = crate::executor::cancellation();
    let url = server.url("/never");
    let run = tokio::spawn({
        let exec = exec.clone();
        async move { exec.execute(&ctx(), json!({"url": url}), cancel).await }
    });
    canceller.cancel(CancelReason::Cancelled { force: false });
    let err = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Cancelled);
}

/// Runs `url` (a valid payload) and expects the policy to refuse it.
async fn refused(exec: &HttpExecutor, url: &str) -> ExecError {
    let payload = json!({"url": url});
    assert!(
        exec.validate(&payload).is_ok(),
        "{url}: the payload is valid"
    );
    let err = exec
        .execute(&ctx(), payload, Cancellation::never())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Refused, "{url}: {err}");
    assert!(!err.is_retryable());
    assert_eq!(err.details["executor"], exec.name());
    err
}

#[tokio::test]
async fn loopback_localhost_and_metadata_are_refused_unless_allowed() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let guarded = HttpExecutor::new(
        "fetch",
        HttpOptions {
            artifact_dir: Some(dir.path().to_path_buf()),
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let err = refused(&guarded, &server.url("/json")).await;
    assert_eq!(err.details["rule"], "ssrf_guard");
    assert_eq!(err.details["refused"], "address");
    assert_eq!(err.details["class"], "loopback");
    assert!(err.message.contains("private_hosts"), "{err}");
    let localhost = format!("http://localhost:{}/json", server.addr.port());
    let err = refused(&guarded, &localhost).await;
    assert_eq!(err.details["rule"], "ssrf_guard");
    assert_eq!(err.details["refused"], "local_name");
    let err = refused(&guarded, "http://169.254.169.254/latest/meta-data/").await;
    assert_eq!(err.details["class"], "cloud_metadata");
    assert_eq!(err.details["address"], "169.254.169.254");

    // Opened on purpose: the address, or the name.
    let open = HttpExecutor::new("fetch", loopback_options(dir.path())).unwrap();
    assert!(
        run(&open, json!({"url": server.url("/json")}))
            .await
            .is_ok()
    );
    refused(&open, &localhost).await;
    let by_name = HttpExecutor::new(
        "fetch",
        HttpOptions {
            private_hosts: vec!["localhost".into()],
            artifact_dir: Some(dir.path().to_path_buf()),
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let out = run(&by_name, json!({"url": localhost})).await.unwrap();
    assert_eq!(out.body["status"], 200);
}

#[tokio::test]
async fn allowed_hosts_and_methods_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new(
        "api",
        HttpOptions {
            allowed_hosts: vec!["api.example.com".into(), "*.example.org".into()],
            allowed_methods: vec!["GET".into()],
            artifact_dir: Some(dir.path().to_path_buf()),
            ..HttpOptions::default()
        },
    )
    .unwrap();
    // The policy alone (these hosts are not reachable from a test).
    let policy = |payload: Value| exec.check_policy(&exec.parse(&payload).unwrap());
    assert!(policy(json!({"url": "https://api.example.com/v1"})).is_ok());
    assert!(policy(json!({"url": "https://x.example.org/"})).is_ok());
    let err = refused(&exec, "https://example.org/").await;
    assert_eq!(err.details["rule"], "allowed_hosts");
    assert_eq!(err.details["host"], "example.org");
    let err = policy(json!({"url": "https://api.example.com/v1", "method": "DELETE"})).unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Refused);
    assert_eq!(err.details["rule"], "allowed_methods");
    // Not HTTP at all: the payload is wrong.
    let err = exec
        .validate(&json!({"url": "ftp://api.example.com/"}))
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::InvalidPayload);
}

#[tokio::test]
async fn a_redirect_to_a_refused_host_is_not_followed() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = HttpExecutor::new("http.request", loopback_options(dir.path())).unwrap();
    // A redirect that stays allowed is followed.
    let ok = format!("{}?to={}", server.url("/redirect"), server.url("/json"));
    let out = run(&exec, json!({"url": ok})).await.unwrap();
    assert_eq!(out.body["url"], server.url("/json"));
    // Loopback refusals first: should the guard fail, the test fails on
    // them before anything could leave this machine.
    for (to, refused, class) in [
        (
            format!("http://localhost:{}/json", server.addr.port()),
            "local_name",
            None,
        ),
        (
            format!("http://127.0.0.2:{}/json", server.addr.port()),
            "address",
            Some("loopback"),
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "address",
            Some("cloud_metadata"),
        ),
        ("http://10.0.0.1/".to_owned(), "address", Some("private")),
    ] {
        let url = format!("{}?to={to}", server.url("/redirect"));
        let err = run(&exec, json!({"url": url})).await.unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Refused, "{to}: {err}");
        assert_eq!(err.details["refused"], refused, "{to}: {err}");
        if let Some(class) = class {
            assert_eq!(err.details["class"], class);
        }
    }
    let err = run(&exec, json!({"url": server.url("/loop")}))
        .await
        .unwrap_err();
    assert_eq!(err.details["rule"], "max_redirects");
    assert_eq!(err.details["limit"], 5);
}

/// A DNS stand-in: answers every name with the next list of addresses, and
/// counts the lookups.
struct ScriptedDns {
    answers: Vec<Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl ScriptedDns {
    fn new(answers: &[&[&str]]) -> Arc<Self> {
        Arc::new(ScriptedDns {
            answers: answers
                .iter()
                .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
                .collect(),
            lookups: AtomicUsize::new(0),
        })
    }
}

impl Resolve for ScriptedDns {
    fn resolve(&self, _: Name) -> Resolving {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        let ips = self.answers[n.min(self.answers.len() - 1)].clone();
        let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
        Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_a_refused_address_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback answer first: should the guard fail, the test fails here
    // before anything could leave this machine.
    let canary = HttpExecutor::with_resolver(
        "http.request",
        HttpOptions {
            artifact_dir: Some(dir.path().to_path_buf()),
            ..HttpOptions::default()
        },
        ScriptedDns::new(&[&["127.0.0.2"]]),
    )
    .unwrap();
    let err = canary
        .execute(
            &ctx(),
            json!({"url": "http://internal.test/"}),
            Cancellation::never(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.details["class"], "loopback", "{err}");

    let dns = ScriptedDns::new(&[&["10.0.0.1"]]);
    let exec = HttpExecutor::with_resolver(
        "http.request",
        HttpOptions {
            artifact_dir: Some(dir.path().to_path_buf()),
            ..HttpOptions::default()
        },
        dns.clone(),
    )
    .unwrap();
    let payload = json!({"url": "http://internal.test/"});
    assert!(
        exec.validate(&payload).is_ok(),
        "a name passes until resolved"
    );
    let err = exec
        .execute(&ctx(), payload, Cancellation::never())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Refused, "{err}");
    assert_eq!(err.details["rule"], "ssrf_guard");
    assert_eq!(err.details["refused"], "address");
    assert_eq!(err.details["host"], "internal.test");
    assert_eq!(err.details["address"], "10.0.0.1");
    assert_eq!(err.details["class"], "private");
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);

    // The same through the `resolve` option, as a config file would pin it.
    let pinned = HttpExecutor::new(
        "http.request",
        HttpOptions {
            resolve: BTreeMap::from([("internal.test".into(), vec!["10.0.0.1".parse().unwrap()])]),
            artifact_dir: Some(dir.path().to_path_buf()),
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let err = pinned
        .execute(
            &ctx(),
            json!({"url": "http://internal.test/"}),
            Cancellation::never(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.details["address"], "10.0.0.1");
}

#[tokio::test]
async fn the_address_checked_is_the_address_connected_with_one_lookup() {
    // DNS rebinding: the first answer passes the guard, every later one
    // would not. The client must connect with the first answer, and never
    // look the name up again for that connection.
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.1 is opened by `private_hosts`; 127.0.0.2 is not.
    let dns = ScriptedDns::new(&[&["127.0.0.1"], &["127.0.0.2"]]);
    let exec =
        HttpExecutor::with_resolver("http.request", loopback_options(dir.path()), dns.clone())
            .unwrap();
    let url = format!("http://rebind.test:{}/json", server.addr.port());
    let out = run(&exec, json!({"url": url})).await.unwrap();
    assert_eq!(out.body["remote_addr"], server.addr.to_string());
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
    // A new client, whose first answer is the rebound one: refused.
    let rebound = ScriptedDns::new(&[&["127.0.0.2"]]);
    let exec =
        HttpExecutor::with_resolver("http.request", loopback_options(dir.path()), rebound).unwrap();
    let err = exec
        .execute(&ctx(), json!({"url": url}), Cancellation::never())
        .await
        .unwrap_err();
    assert_eq!(err.details["address"], "127.0.0.2");
    assert_eq!(err.details["class"], "loopback");
}

#[test]
fn options_are_checked_when_the_executor_is_built() {
    for (options, option) in [
        (
            HttpOptions {
                allowed_hosts: vec!["a*b".into()],
                ..HttpOptions::default()
            },
            "allowed_hosts",
        ),
        (
            HttpOptions {
                success_statuses: vec!["7xx".into()],
                ..HttpOptions::default()
            },
            "success_statuses",
        ),
        (
            HttpOptions {
                default_timeout_secs: 500.0,
                ..HttpOptions::default()
            },
            "default_timeout_secs",
        ),
    ] {
        let err = HttpExecutor::new("h", options).unwrap_err();
        assert!(err.to_string().contains(option), "{err}");
    }
    let options: HttpOptions =
        serde_json::from_value(json!({"allowed_hosts": ["x.example"]})).unwrap();
    assert!(options.ssrf_guard);
    assert!(serde_json::from_value::<HttpOptions>(json!({"alowed_hosts": []})).is_err());
}
