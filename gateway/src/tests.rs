//! The router through `oneshot`: no socket, a SQLite temp file, and a broker
//! URL where nothing listens, so everything up to the publish is exercised
//! without a broker (tests/gateway.rs does the rest against a real one).

use super::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use receipts_sink::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    _dir: tempfile::TempDir,
    router: Router,
    store: Store,
    key: String,
    key_id: String,
    narrow: String,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let store = Store::open(&url).await.unwrap();
    let mut config = GatewayConfig::new("amqp://guest:guest@127.0.0.1:1/%2f", url);
    config.max_body_bytes = 2048;
    config.publish_deadline = Duration::from_millis(500);
    let key = keys::add(&store, "all", &["*".into(), "admin".into()])
        .await
        .unwrap();
    let narrow = keys::add(&store, "narrow", &["noop".into()]).await.unwrap();
    let state = GatewayState::new(store.clone(), None, config);
    App {
        _dir: dir,
        router: router(state),
        store,
        key_id: key.record.key_id.clone(),
        key: key.key,
        narrow: narrow.key,
    }
}

async fn call(app: &App, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, headers, body)
}

fn post(key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/v1/tasks").header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    req.body(body.into()).unwrap()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn keys_are_checked_before_anything_else() {
    let app = app().await;
    let body = json!({"task_type": "noop", "payload": {}}).to_string();
    let wrong_secret = {
        let mut k = app.key.clone();
        let last = k.pop().unwrap();
        k.push(if last == '0' { '1' } else { '0' });
        k
    };
    let unknown = keys::generate("x", &["*".into()]).unwrap().key;
    for (key, says) in [
        (None, "no API key"),
        (Some("your-api-key"), "not a chit API key"),
        (Some(wrong_secret.as_str()), "unknown API key"),
        (Some(unknown.as_str()), "unknown API key"),
    ] {
        let (status, headers, err) = call(&app, post(key, body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{key:?}: {err}"
        );
    }
    // Not bearer.
    let req = Request::post("/v1/tasks")
        .header("authorization", format!("Basic {}", app.key))
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::UNAUTHORIZED);
    // The mounted queries too; the scheme's case does not matter.
    let req = Request::get("/v1/tasks").body(Body::empty()).unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::UNAUTHORIZED);
    let req = Request::get("/v1/tasks?type=noop")
        .header("authorization", format!("bearer {}", app.key))
        .body(Body::empty())
        .unwrap();
    let (status, _, page) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({"tasks": [], "next_cursor": null}));

    keys::revoke(&app.store, &app.key_id).await.unwrap();
    let (status, _, err) = call(&app, post(Some(&app.key), body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let app = app().await;
    let k = Some(app.key.as_str());
    for (body, status, says) in [
        ("{", StatusCode::BAD_REQUEST, "not valid JSON"),
        ("[]", StatusCode::BAD_REQUEST, "invalid task"),
        (
            r#"{"payload": {}}"#,
            StatusCode::BAD_REQUEST,
            "missing field `task_type`",
        ),
        (
            r#"{"task_type": "a b", "payload": {}}"#,
            StatusCode::BAD_REQUEST,
            "valid capability",
        ),
        (
            r#"{"task_type": "command.execute", "payload": {"cmd": "x"}}"#,
            StatusCode::BAD_REQUEST,
            "\"command\" is a required property",
        ),
        (
            r#"{"task_type": "noop", "payload": {}, "delay_secs": 99999999}"#,
            StatusCode::BAD_REQUEST,
            "longer than the longest",
        ),
        (
            r#"{"task_type": "noop", "payload": {}, "idempotency_key": ""}"#,
            StatusCode::BAD_REQUEST,
            "idempotency key",
        ),
    ] {
        let (got, _, err) = call(&app, post(k, body)).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {err}"
        );
    }
    let (status, _, err) = call(
        &app,
        post(
            k,
            format!(
                r#"{{"task_type": "noop", "payload": "{}"}}"#,
                "x".repeat(3000)
            ),
        ),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let req = Request::post("/v1/tasks?wait=forever")
        .header("authorization", format!("Bearer {}", app.key))
        .body(Body::from(r#"{"task_type": "noop", "payload": {}}"#))
        .unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::BAD_REQUEST);
    // Body and header disagree on the idempotency key.
    let req = Request::post("/v1/tasks")
        .header("authorization", format!("Bearer {}", app.key))
        .header("idempotency-key", "a")
        .body(Body::from(
            r#"{"task_type": "noop", "payload": {}, "idempotency_key": "b"}"#,
        ))
        .unwrap();
    let (status, _, err) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    // A key without the scope: 403, before the payload is looked at.
    let (status, _, err) = call(
        &app,
        post(
            Some(&app.narrow),
            r#"{"task_type": "command.execute", "payload": 1}"#,
        ),
    )
    .await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test]
async fn no_broker_is_503_and_a_failed_publish_keeps_the_idempotency_task_id() {
    let app = app().await;
    let body =
        json!({"task_type": "noop", "payload": {"n": 1}, "idempotency_key": "k1"}).to_string();
    let (status, headers, err) = call(&app, post(Some(&app.key), body.clone())).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{err}"
    );
    assert!(headers.contains_key("retry-after"));
    let first = app
        .store
        .idempotency_record(&app.key_id, "k1")
        .await
        .unwrap()
        .unwrap();
    assert!(first.published_at.is_none());
    // The claim was given up: the retry publishes (and fails) at once,
    // with the same task id.
    let started = std::time::Instant::now();
    let (status, _, _) = call(&app, post(Some(&app.key), body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let again = app
        .store
        .idempotency_record(&app.key_id, "k1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.task_id, first.task_id);
    assert_eq!(again.queued_receipt_id, first.queued_receipt_id);

    let req = Request::get("/healthz").body(Body::empty()).unwrap();
    let (status, _, health) = call(&app, req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["store"], "ok");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let app = app().await;
    let req = Request::get("/v2/x").body(Body::empty()).unwrap();
    let (status, _, err) = call(&app, req).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "not_found"));
    let req = Request::delete("/v1/tasks").body(Body::empty()).unwrap();
    let (status, _, err) = call(&app, req).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_with_its_security() {
    let app = app().await;
    let req = Request::get("/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let (status, _, doc) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = &doc["paths"];
    for (path, method) in [
        ("/v1/tasks", "post"),
        ("/v1/tasks", "get"),
        ("/v1/tasks/{id}", "get"),
        ("/v1/receipts", "get"),
        ("/v1/quarantine", "get"),
    ] {
        let op = &paths[path][method];
        assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    for path in ["/healthz", "/v1/openapi.json"] {
        assert!(
            paths[path]["get"]["security"].is_null(),
            "{path} needs no key"
        );
    }
    let post = &paths["/v1/tasks"]["post"];
    for status in [
        "200", "202", "400", "401", "403", "404", "409", "413", "429", "503",
    ] {
        assert!(
            post["responses"][status].is_object(),
            "POST /v1/tasks {status}"
        );
    }
    let states = &doc["components"]["schemas"]["TaskState"]["enum"];
    assert!(
        states.as_array().unwrap().contains(&json!("dead_lettered")),
        "{states}"
    );
}
