//! A small client for the receipts sink's HTTP API, for the commands that
//! read tasks through it (`chit task`).

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// How often `chit task show` asks again while a task has no receipts yet.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// GETs `url` and returns its JSON body; an error status becomes an error
/// carrying the API's own message.
pub async fn get_json(url: &str) -> Result<Value> {
    match get(url).await? {
        (status, body) if status.is_success() => Ok(body),
        (status, body) => {
            let msg = body["error"]["message"].as_str().unwrap_or("unknown error");
            bail!("{msg} (HTTP {status})")
        }
    }
}

/// The API's view of one task (`GET /v1/tasks/{id}`) from the sink at
/// `base`. A task with no receipts stored is asked for again until `wait`
/// has passed, since its receipts may still be on their way (a `queued`
/// receipt reaches the sink a moment after `chit publish` returns); `None`
/// when it still has none then.
pub async fn get_task(base: &str, task_id: &str, wait: Duration) -> Result<Option<Value>> {
    let mut url = reqwest::Url::parse(base).with_context(|| format!("{base:?} is not a URL"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base:?} cannot take a path"))?
        .pop_if_empty()
        .extend(["v1", "tasks", task_id]);
    let deadline = Instant::now() + wait;
    loop {
        let (status, body) = get(url.as_str()).await?;
        if status == StatusCode::NOT_FOUND && body["error"]["code"] == "not_found" {
            if Instant::now() + POLL_EVERY > deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        }
        if !status.is_success() {
            let msg = body["error"]["message"].as_str().unwrap_or("unknown error");
            bail!("{msg} (HTTP {status})");
        }
        return Ok(Some(body));
    }
}

/// One GET: the status and the JSON body.
async fn get(url: &str) -> Result<(StatusCode, Value)> {
    let resp = reqwest::get(url).await.with_context(|| {
        format!("cannot reach the sink's API at {url} (is `chit sink` or `chit dev` running?)")
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("the API at {url} did not answer JSON"))?;
    Ok((status, body))
}
