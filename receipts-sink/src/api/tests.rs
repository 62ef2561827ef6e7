//! API tests through `oneshot`: no socket, a SQLite temp file behind.

use super::*;
use crate::store::tests::{life, sqlite_store};
use axum::body::Body;
use axum::http::Request;
use broker_link::LinkState;
use broker_topology::codec::BadReceipt;
use serde_json::Value;
use tower::ServiceExt;

async fn app() -> (tempfile::TempDir, Router, Store, Arc<SinkStatus>) {
    let (dir, store) = sqlite_store().await;
    let status = Arc::new(SinkStatus::new());
    let router = router(ApiState::new(store.clone(), status.clone()));
    (dir, router, store, status)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let res = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let ct = res.headers().get("content-type").cloned();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        ct.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{uri}: every answer is JSON"
    );
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn a_task_comes_with_its_chain_and_unknown_ids_are_404() {
    let (_dir, app, store, _) = app().await;
    let chain = life("t1", chrono::Utc::now());
    store.write_batch(&chain, &[]).await.unwrap();

    let (status, body) = get(&app, "/v1/tasks/t1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["task"]["task_id"], "t1");
    assert_eq!(body["task"]["state"], "succeeded");
    assert_eq!(body["task"]["attempts"], 2);
    let view: crate::TaskView = serde_json::from_value(body).unwrap();
    assert_eq!(view.chain, chain);

    let (status, body) = get(&app, "/v1/tasks/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    let (status, body) = get(&app, "/v2/whatever").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

#[tokio::test]
async fn bad_parameters_are_400_and_say_why() {
    let (_dir, app, _, _) = app().await;
    let (status, body) = get(&app, "/v1/tasks?state=done").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    let msg = body["error"]["message"].as_str().unwrap();
    for s in TaskState::ALL {
        assert!(msg.contains(s.as_str()), "{msg}");
    }

    let (status, body) = get(&app, "/v1/tasks?cursor=not-a-cursor").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cursor")
    );

    for limit in ["0", "1001", "ten", "-1"] {
        let (status, body) = get(&app, &format!("/v1/tasks?limit={limit}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={limit}");
        assert!(body["error"]["message"].as_str().unwrap().contains("limit"));
    }
    let (status, _) = get(&app, "/v1/quarantine?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = get(&app, "/v1/receipts").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("task_id")
    );
}

#[tokio::test]
async fn pagination_walks_every_task_exactly_once() {
    let (_dir, app, store, _) = app().await;
    let t0 = chrono::Utc::now();
    let mut receipts = Vec::new();
    for i in 0..23 {
        receipts.extend(life(
            &format!("task-{i:02}"),
            t0 + chrono::Duration::seconds(i % 5),
        ));
    }
    store.write_batch(&receipts, &[]).await.unwrap();

    let mut seen = Vec::new();
    let mut uri = "/v1/tasks?limit=5".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        for t in body["tasks"].as_array().unwrap() {
            seen.push(t["task_id"].as_str().unwrap().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/tasks?limit=5&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 23, "{seen:?}");
    assert_eq!(seen.len(), 23);

    let (_, body) = get(&app, "/v1/tasks?state=succeeded&task_type=command.execute").await;
    assert_eq!(body["tasks"].as_array().unwrap().len(), 23);
    let (_, body) = get(&app, "/v1/tasks?state=queued").await;
    assert_eq!(body["tasks"].as_array().unwrap().len(), 0);
    assert_eq!(body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn receipts_and_quarantine_are_listed() {
    let (_dir, app, store, _) = app().await;
    let bad = BadReceipt {
        reason: "invalid JSON body".into(),
        raw: Value::String("{oops".into()),
    };
    store
        .write_batch(&life("t1", chrono::Utc::now()), &[bad])
        .await
        .unwrap();
    let (status, body) = get(&app, "/v1/receipts?task_id=t1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["receipts"].as_array().unwrap().len(), 6);
    let (_, body) = get(&app, "/v1/receipts?task_id=other").await;
    assert_eq!(body["receipts"].as_array().unwrap().len(), 0);

    let (status, body) = get(&app, "/v1/quarantine").await;
    assert_eq!(status, StatusCode::OK);
    let q = body["quarantined"].as_array().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["raw"], "{oops");
    assert_eq!(q[0]["reason"], "invalid JSON body");
}

#[tokio::test]
async fn healthz_names_the_part_that_is_down() {
    let (_dir, app, store, status) = app().await;
    let (code, body) = get(&app, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        serde_json::json!({"store": "ok", "broker": "connecting"})
    );

    status.set_broker(LinkState::Connected);
    let (code, body) = get(&app, "/healthz").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"store": "ok", "broker": "connected"})
    );

    status.set_broker(LinkState::Reconnecting("connection lost".into()));
    let (code, body) = get(&app, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["broker"], "reconnecting");

    status.set_broker(LinkState::Connected);
    store.close().await;
    let (code, body) = get(&app, "/healthz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        serde_json::json!({"store": "unavailable", "broker": "connected"})
    );

    // With the store gone, a query is a generic 500.
    let (code, body) = get(&app, "/v1/tasks/t1").await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "internal");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("closed")
    );
}

#[tokio::test]
async fn a_chain_comes_in_parent_order_whatever_the_clocks_said() {
    // Issue 13, finding 4: a worker's clock 2 ms behind the publisher's
    // dated `accepted` before `queued`, and the chain came back that way.
    let (_dir, app, store, _) = app().await;
    let mut chain = life("skew", chrono::Utc::now());
    chain[1].created_at = chain[0].created_at - chrono::Duration::milliseconds(2);
    store.write_batch(&chain, &[]).await.unwrap();
    for uri in ["/v1/tasks/skew", "/v1/receipts?task_id=skew"] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::OK);
        let list = body
            .get("chain")
            .or(body.get("receipts"))
            .and_then(Value::as_array)
            .unwrap();
        let ids: Vec<&str> = list
            .iter()
            .map(|r| r["receipt_id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = chain.iter().map(|r| r.receipt_id.as_str()).collect();
        assert_eq!(ids, want, "{uri}");
    }
}

#[tokio::test]
async fn type_is_taken_for_task_type_and_the_query_router_stands_alone() {
    let (_dir, _, store, _) = app().await;
    store
        .write_batch(&life("t1", chrono::Utc::now()), &[])
        .await
        .unwrap();
    // The query routes alone, as the gateway mounts them: no health,
    // workers or metrics, no fallback of their own.
    let queries: Router = query_router(store);
    for (uri, n) in [
        ("/v1/tasks?type=command.execute", 1),
        ("/v1/tasks?task_type=command.execute", 1),
        ("/v1/tasks?type=other", 0),
    ] {
        let (status, body) = get(&queries, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(body["tasks"].as_array().unwrap().len(), n, "{uri}");
    }
    let (status, _) = get(&queries, "/v1/tasks?type=a&task_type=b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "both spellings at once");
    let res = queries
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let doc = serde_json::to_value(query_openapi()).unwrap();
    for path in [
        "/v1/tasks",
        "/v1/tasks/{id}",
        "/v1/receipts",
        "/v1/quarantine",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
}
