//! A small client for the receipts sink's HTTP API, for the commands that
//! read tasks through it (`chit task`).

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// GETs `url` and returns its JSON body; an error status becomes an error
/// carrying the API's own message.
pub async fn get_json(url: &str) -> Result<Value> {
    let resp = reqwest::get(url).await.with_context(|| {
        format!("cannot reach the sink's API at {url} (is `chit sink` or `chit dev` running?)")
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("the API at {url} did not answer JSON"))?;
    if !status.is_success() {
        let msg = body["error"]["message"].as_str().unwrap_or("unknown error");
        bail!("{msg} (HTTP {status})");
    }
    Ok(body)
}
