//! `GET /v1/openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' `utoipa` annotations: the gateway's own (`POST /v1/tasks`,
//! `/healthz`, this one) and the receipts sink's query routes it mounts
//! (`receipts_sink::api::query_openapi`), which need a key here, and the
//! dashboard's admin routes (`admin::openapi`).

use crate::{health, tasks};
use axum::Json;
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{PathItem, RefOr, Response};

/// The security scheme's name in the document.
const BEARER: &str = "bearer";

/// Paths that need no key.
const PUBLIC: &[&str] = &["/healthz", "/v1/openapi.json"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chit gateway",
        description = "Submit tasks to chit over HTTP and read their receipt chains. \
            Every route but /healthz and this document needs `Authorization: Bearer <API key>` \
            (make one with `chit gateway keys add`). Errors are JSON: \
            {\"error\": {\"code\": \"...\", \"message\": \"...\"}}."
    ),
    paths(tasks::submit, health::healthz, openapi_json),
    components(schemas(tasks::SubmitTask, tasks::Submitted, tasks::Finished, receipts_sink::api::Health)),
    tags(
        (name = "tasks", description = "Submitting tasks"),
        (name = "health", description = "Liveness of the gateway"),
    )
)]
struct GatewayApi;

static DOCUMENT: LazyLock<serde_json::Value> =
    LazyLock::new(|| serde_json::to_value(document()).expect("the OpenAPI document is JSON"));

/// The whole document: the gateway's routes, the sink's query routes, the
/// bearer scheme on every route that needs a key.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = GatewayApi::openapi();
    doc.merge(receipts_sink::api::query_openapi());
    doc.merge(crate::admin::openapi());
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("chit_<id>_<secret>")
                    .description(Some("An API key from `chit gateway keys add`"))
                    .build(),
            ),
        );
    for (path, item) in doc.paths.paths.iter_mut() {
        if PUBLIC.contains(&path.as_str()) {
            continue;
        }
        for op in operations(item) {
            op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            let responses = &mut op.responses.responses;
            responses
                .entry("401".into())
                .or_insert_with(|| RefOr::T(Response::new("No API key, or not a valid one")));
        }
    }
    doc
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    Json(DOCUMENT.clone())
}
