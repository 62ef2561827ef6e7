//! `http.request`: makes one HTTP request and reports the response.
//!
//! The payload names the method, URL, headers and body; the executor's
//! options ([`HttpOptions`], from the worker's config) say which hosts and
//! methods are allowed, which statuses count as success, and bound the
//! timeout and the response size. A response body up to `inline_body_bytes`
//! goes into the receipt; a larger one is written to a file under
//! `artifact_dir` and listed as an artifact with its size and SHA-256.
//!
//! Every host the request reaches, redirects included, passes the SSRF
//! [`guard`] first; the client is reqwest, with the guard in its DNS hook, so
//! it connects only to addresses the guard has seen. System proxy settings
//! are ignored: through a proxy the guard would check the proxy, not the
//! host.

use crate::error::ConfigError;
use crate::executor::{
    CancelReason, Cancellation, ExecError, ExecErrorKind, Executor, Outcome, TaskContext,
};
use crate::executors::kinds::{KindDefaults, parse_options};
use async_trait::async_trait;
use broker_topology::Artifact;
use broker_topology::payload_schema::PayloadSchema;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use url::Url;

pub mod guard;

use guard::{GuardedResolver, NameLookup, Policy, Refused, SystemResolver};

/// The capability whose payload schema this executor follows.
const KIND: &str = "http.request";
/// The executor's row in the kind table (`kind = "http"`).
pub const HTTP_KIND: &str = "http";

/// The options of an `http.request` executor: `[executor.NAME]` with
/// `kind = "http.request"` in the worker's config file. Every field has a
/// default, so an empty table is a working executor with the guard on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpOptions {
    /// Hosts a request may go to: exact names or addresses, or
    /// `*.example.com` for any subdomain of `example.com`. Checked for the
    /// first URL and every redirect. Empty (the default): any host the SSRF
    /// guard lets through.
    pub allowed_hosts: Vec<String>,
    /// Hosts and addresses the SSRF guard lets through although they are
    /// loopback, private, link-local or metadata addresses: a name (which
    /// may then resolve anywhere), an address, or a network such as
    /// `10.1.0.0/16`. Default: none.
    pub private_hosts: Vec<String>,
    /// The SSRF guard; `false` turns the address checks off (not
    /// `allowed_hosts`). Default `true`.
    pub ssrf_guard: bool,
    /// Methods a payload may use. Default: GET, HEAD, POST, PUT, PATCH,
    /// DELETE, OPTIONS.
    pub allowed_methods: Vec<String>,
    /// Statuses that make a success receipt: `200`, `2xx` or `200-299`.
    /// Default `["2xx"]`.
    pub success_statuses: Vec<String>,
    /// Request timeout when the payload gives none, in seconds. Default 30.
    pub default_timeout_secs: f64,
    /// The longest timeout a payload may ask for, in seconds. Default 300.
    pub max_timeout_secs: f64,
    /// Response size limit when the payload gives none. Default 10 MiB.
    pub default_max_response_bytes: u64,
    /// The largest `max_response_bytes` a payload may ask for. Default 100 MiB.
    pub max_response_bytes: u64,
    /// Bodies up to this size go into the receipt; larger ones to a file.
    /// Default 64 KiB.
    pub inline_body_bytes: u64,
    /// Redirects followed at most; `0` refuses every redirect. Default 5.
    pub max_redirects: usize,
    /// Where response bodies too large for the receipt are written.
    /// Default: `chit-http` in the system's temporary directory.
    pub artifact_dir: Option<PathBuf>,
    /// Fixed addresses for names, like curl's `--resolve`; the guard checks
    /// them like any DNS answer. Default: none.
    pub resolve: BTreeMap<String, Vec<IpAddr>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            allowed_hosts: Vec::new(),
            private_hosts: Vec::new(),
            ssrf_guard: true,
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            success_statuses: vec!["2xx".into()],
            default_timeout_secs: 30.0,
            max_timeout_secs: 300.0,
            default_max_response_bytes: 10 << 20,
            max_response_bytes: 100 << 20,
            inline_body_bytes: 64 << 10,
            max_redirects: 5,
            artifact_dir: None,
            resolve: BTreeMap::new(),
        }
    }
}

/// The `http.request` payload.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpPayload {
    /// The method; default `GET`.
    #[serde(default)]
    pub method: Option<String>,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A text body (content type `text/plain` unless a header says otherwise).
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON body (content type `application/json`); not with `body`.
    #[serde(default)]
    pub json: Option<Value>,
    /// Timeout of the whole request, body included, in seconds.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// The largest response body accepted; a larger one fails the task.
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
}

/// A payload checked against the options, ready to send.
#[derive(Debug)]
struct Request {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<RequestBody>,
    timeout: Duration,
    max_response_bytes: u64,
}

#[derive(Debug)]
enum RequestBody {
    Text(String),
    Json(Value),
}

/// A range of statuses counted as success.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StatusRange(u16, u16);

impl StatusRange {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let range = if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
            let c: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
            StatusRange(c * 100, c * 100 + 99)
        } else if let Some((lo, hi)) = s.split_once('-') {
            StatusRange(lo.trim().parse().ok()?, hi.trim().parse().ok()?)
        } else {
            let code = s.parse().ok()?;
            StatusRange(code, code)
        };
        (100 <= range.0 && range.0 <= range.1 && range.1 <= 599).then_some(range)
    }
}

/// Runs `http.request` tasks.
pub struct HttpExecutor {
    name: String,
    options: HttpOptions,
    policy: Arc<Policy>,
    methods: Vec<Method>,
    success: Vec<StatusRange>,
    artifact_dir: PathBuf,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExecutor")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HttpExecutor {
    /// An executor registered as `name`, resolving names through the system
    /// (after the `resolve` option's pinned names).
    pub fn new(name: impl Into<String>, options: HttpOptions) -> Result<Self, ConfigError> {
        let lookup = Arc::new(SystemResolver::with_pinned(options.resolve.clone()));
        Self::with_resolver(name, options, lookup)
    }

    /// Like [`new`](Self::new), with another lookup under the guard: every
    /// address it returns is checked like a DNS answer. For tests, and for
    /// embedders with a DNS of their own.
    pub fn with_resolver(
        name: impl Into<String>,
        options: HttpOptions,
        lookup: NameLookup,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        let invalid = |message: String| ConfigError::Invalid {
            executor: name.clone(),
            message,
        };
        let positive = |option: &str, v: f64| {
            if v > 0.0 && v.is_finite() && v < 1e9 {
                Ok(())
            } else {
                Err(invalid(format!(
                    "`{option}` must be a positive number of seconds"
                )))
            }
        };
        positive("default_timeout_secs", options.default_timeout_secs)?;
        positive("max_timeout_secs", options.max_timeout_secs)?;
        if options.default_timeout_secs > options.max_timeout_secs {
            return Err(invalid(
                "`default_timeout_secs` is larger than `max_timeout_secs`".into(),
            ));
        }
        if options.default_max_response_bytes > options.max_response_bytes {
            return Err(invalid(
                "`default_max_response_bytes` is larger than `max_response_bytes`".into(),
            ));
        }
        let policy = Arc::new(
            Policy::new(
                &options.allowed_hosts,
                &options.private_hosts,
                options.ssrf_guard,
                options.max_redirects,
            )
            .map_err(invalid)?,
        );
        let methods = options
            .allowed_methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| invalid(format!("`allowed_methods`: {m:?} is not a method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let success = options
            .success_statuses
            .iter()
            .map(|s| {
                StatusRange::parse(s).ok_or_else(|| {
                    invalid(format!(
                        "`success_statuses`: {s:?} is not a status, `2xx` or `200-299`"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if success.is_empty() {
            return Err(invalid("`success_statuses` is empty".into()));
        }
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(lookup, policy.clone())))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                // `previous` holds the first URL too, as in reqwest's own limit.
                if attempt.previous().len() > redirect_policy.max_redirects() {
                    let limit = redirect_policy.max_redirects();
                    return attempt.error(Refused::TooManyRedirects { limit });
                }
                match redirect_policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }))
            .user_agent(concat!("chit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let artifact_dir = options
            .artifact_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("chit-http"));
        Ok(HttpExecutor {
            name,
            options,
            policy,
            methods,
            success,
            artifact_dir,
            client,
        })
    }

    fn parse(&self, payload: &Value) -> Result<Request, ExecError> {
        if let Some(schema) = PayloadSchema::builtin(KIND) {
            schema
                .check(payload)
                .map_err(|e| ExecError::invalid(e.to_string()))?;
        }
        let p: HttpPayload = serde_json::from_value(payload.clone())
            .map_err(|e| ExecError::invalid(format!("{KIND} payload: {e}")))?;
        let method = p.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ExecError::invalid(format!("{KIND} payload: bad method {method:?}")))?;
        let url = Url::parse(&p.url)
            .map_err(|e| ExecError::invalid(format!("{KIND} payload: url {:?}: {e}", p.url)))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &p.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                ExecError::invalid(format!("{KIND} payload: bad header name {k:?}"))
            })?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                ExecError::invalid(format!("{KIND} payload: bad value for header {k:?}"))
            })?;
            headers.append(name, value);
        }
        let body = match (p.body, p.json) {
            (Some(_), Some(_)) => {
                return Err(ExecError::invalid(format!(
                    "{KIND} payload: give `body` or `json`, not both"
                )));
            }
            (Some(text), None) => Some(RequestBody::Text(text)),
            (None, Some(v)) => Some(RequestBody::Json(v)),
            (None, None) => None,
        };
        let timeout = p.timeout_secs.unwrap_or(self.options.default_timeout_secs);
        if !(timeout > 0.0 && timeout <= self.options.max_timeout_secs) {
            return Err(ExecError::invalid(format!(
                "{KIND} payload: timeout_secs must be above 0 and at most {} (this executor's max_timeout_secs)",
                self.options.max_timeout_secs
            )));
        }
        let max_response_bytes = p
            .max_response_bytes
            .unwrap_or(self.options.default_max_response_bytes);
        if max_response_bytes > self.options.max_response_bytes {
            return Err(ExecError::invalid(format!(
                "{KIND} payload: max_response_bytes must be at most {} (this executor's max_response_bytes)",
                self.options.max_response_bytes
            )));
        }
        Ok(Request {
            method,
            url,
            headers,
            body,
            timeout: Duration::from_secs_f64(timeout),
            max_response_bytes,
        })
    }

    /// What this executor's policy says to a checked payload: the method,
    /// and the URL's host (its addresses are checked again on lookup).
    fn check_policy(&self, req: &Request) -> Result<(), ExecError> {
        if !self.methods.contains(&req.method) {
            return Err(ExecError::new(
                ExecErrorKind::Refused,
                format!(
                    "{KIND}: method {} is not in this executor's allowed_methods",
                    req.method
                ),
            )
            .with_details(json!({"rule": "allowed_methods", "executor": self.name})));
        }
        self.policy
            .check_url(&req.url)
            .map_err(|r| refusal(&r, &self.name))
    }

    /// Sends the request and reads the response, within `deadline`.
    async fn fetch(
        &self,
        ctx: &TaskContext,
        req: Request,
        deadline: Duration,
    ) -> Result<Outcome, ExecError> {
        let started = Instant::now();
        let mut rb = self
            .client
            .request(req.method.clone(), req.url.clone())
            .timeout(deadline);
        if let Some(tp) = ctx
            .traceparent
            .as_deref()
            .filter(|_| !req.headers.contains_key("traceparent"))
        {
            rb = rb.header("traceparent", tp);
        }
        rb = match req.body {
            Some(RequestBody::Text(text)) => {
                let rb = if req.headers.contains_key(reqwest::header::CONTENT_TYPE) {
                    rb
                } else {
                    rb.header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                };
                rb.body(text)
            }
            Some(RequestBody::Json(v)) => rb.json(&v),
            None => rb,
        };
        // After the body, so the payload's own Content-Type wins.
        rb = rb.headers(req.headers);
        tracing::debug!(task_id = %ctx.task_id, method = %req.method, url = %req.url, "http request");
        let mut resp = rb
            .send()
            .await
            .map_err(|e| send_error(&e, deadline, &self.name))?;
        let status = resp.status();
        let mut summary = Map::new();
        summary.insert("status".into(), json!(status.as_u16()));
        summary.insert("url".into(), json!(resp.url().as_str()));
        if let Some(addr) = resp.remote_addr() {
            summary.insert("remote_addr".into(), json!(addr.to_string()));
        }
        summary.insert("headers".into(), headers_json(resp.headers()));
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        let mut body = BodySink::new(self.options.inline_body_bytes);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.total + chunk.len() as u64 > req.max_response_bytes {
                        body.discard().await;
                        summary.insert("body_bytes_read".into(), json!(body.total));
                        return Err(ExecError::new(
                            ExecErrorKind::Permanent,
                            format!(
                                "response body is larger than max_response_bytes ({})",
                                req.max_response_bytes
                            ),
                        )
                        .with_details(Value::Object(summary)));
                    }
                    body.push(&chunk, || self.body_path(ctx))
                        .await
                        .map_err(|e| {
                            ExecError::new(
                                ExecErrorKind::Unavailable,
                                format!(
                                    "cannot write the response body under {}: {e}",
                                    self.artifact_dir.display()
                                ),
                            )
                        })?;
                }
                Ok(None) => break,
                Err(e) => {
                    body.discard().await;
                    return Err(
                        send_error(&e, deadline, &self.name).with_details(Value::Object(summary))
                    );
                }
            }
        }
        let (inline, artifact) = body.finish(content_type.as_deref()).await.map_err(|e| {
            ExecError::new(
                ExecErrorKind::Unavailable,
                format!("cannot write the response body: {e}"),
            )
        })?;
        summary.insert("body_bytes".into(), json!(inline.total));
        summary.insert("body_sha256".into(), json!(inline.sha256));
        match (inline.bytes, &artifact) {
            (Some(bytes), None) => {
                let is_json = content_type.as_deref().is_some_and(is_json_type);
                match String::from_utf8(bytes) {
                    Ok(text) => match serde_json::from_str::<Value>(&text) {
                        Ok(v) if is_json => {
                            summary.insert("body".into(), v);
                            summary.insert("body_encoding".into(), json!("json"));
                        }
                        _ => {
                            summary.insert("body".into(), Value::String(text));
                            summary.insert("body_encoding".into(), json!("text"));
                        }
                    },
                    Err(_) => {
                        // Not text: not for a JSON receipt. The size and hash stay.
                        summary.insert("body_encoding".into(), json!("binary_omitted"));
                    }
                }
            }
            (_, Some(a)) => {
                summary.insert("body_artifact".into(), json!(a.path));
            }
            (None, None) => {}
        }
        summary.insert(
            "duration_ms".into(),
            json!(started.elapsed().as_millis() as u64),
        );
        let artifacts: Vec<Artifact> = artifact.into_iter().collect();
        let code = status.as_u16();
        if self.success.iter().any(|r| r.0 <= code && code <= r.1) {
            return Ok(Outcome {
                body: Value::Object(summary),
                artifacts,
                ..Outcome::default()
            });
        }
        // Statuses that say "later": retried. Any other failure status: not.
        let kind = match code {
            408 | 425 | 429 | 500..=599 => ExecErrorKind::Failed,
            _ => ExecErrorKind::Permanent,
        };
        let mut e =
            ExecError::new(kind, format!("HTTP {status}")).with_details(Value::Object(summary));
        e.artifacts = artifacts;
        Err(e)
    }

    /// Where the body of this attempt goes when too large for the receipt.
    fn body_path(&self, ctx: &TaskContext) -> PathBuf {
        self.artifact_dir.join(format!(
            "{}-{}.body",
            safe_file_name(&ctx.task_id),
            ctx.attempt
        ))
    }
}

/// The body read so far: in memory up to the inline limit, then in a file.
struct BodySink {
    inline_limit: u64,
    total: u64,
    hasher: Sha256,
    memory: Vec<u8>,
    file: Option<(PathBuf, PathBuf, tokio::fs::File)>,
}

/// What [`BodySink::finish`] returns besides an artifact.
struct Inline {
    bytes: Option<Vec<u8>>,
    total: u64,
    sha256: String,
}

impl BodySink {
    fn new(inline_limit: u64) -> Self {
        BodySink {
            inline_limit,
            total: 0,
            hasher: Sha256::new(),
            memory: Vec::new(),
            file: None,
        }
    }

    async fn push(&mut self, chunk: &[u8], path: impl FnOnce() -> PathBuf) -> std::io::Result<()> {
        self.total += chunk.len() as u64;
        self.hasher.update(chunk);
        if self.file.is_none() && self.total <= self.inline_limit {
            self.memory.extend_from_slice(chunk);
            return Ok(());
        }
        if self.file.is_none() {
            let path = path();
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            // Written under a temporary name and renamed when complete.
            let tmp = path.with_extension(format!("part-{}", std::process::id()));
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&self.memory).await?;
            self.memory = Vec::new();
            self.file = Some((path, tmp, f));
        }
        let (_, _, f) = self.file.as_mut().expect("file");
        f.write_all(chunk).await
    }

    async fn discard(&mut self) {
        if let Some((_, tmp, f)) = self.file.take() {
            drop(f);
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    }

    async fn finish(
        self,
        content_type: Option<&str>,
    ) -> std::io::Result<(Inline, Option<Artifact>)> {
        let sha256 = hex::encode(self.hasher.finalize());
        let Some((path, tmp, mut f)) = self.file else {
            let inline = Inline {
                bytes: (self.total > 0).then_some(self.memory),
                total: self.total,
                sha256,
            };
            return Ok((inline, None));
        };
        f.flush().await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &path).await?;
        let artifact = Artifact {
            path: Some(path.display().to_string()),
            content_type: content_type.map(str::to_owned),
            size: Some(self.total),
            sha256: Some(sha256.clone()),
            description: Some("HTTP response body".into()),
            ..Artifact::default()
        };
        let inline = Inline {
            bytes: None,
            total: self.total,
            sha256,
        };
        Ok((inline, Some(artifact)))
    }
}

fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// A task id made safe as a file name.
fn safe_file_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    json!(out)
}

/// A refusal by the host policy or the SSRF guard: never retried, with the
/// rule and the executor in the receipt.
fn refusal(refused: &Refused, executor: &str) -> ExecError {
    let mut details = refused.details();
    details["executor"] = json!(executor);
    ExecError::new(ExecErrorKind::Refused, format!("{KIND}: {refused}")).with_details(details)
}

/// How a request that got no (complete) response failed.
fn send_error(e: &reqwest::Error, deadline: Duration, executor: &str) -> ExecError {
    if let Some(refused) = guard::refusal_in(e) {
        return refusal(&refused, executor);
    }
    let detail = error_chain(e);
    if e.is_timeout() {
        return ExecError::new(
            ExecErrorKind::Timeout,
            format!("request timed out after {} s", deadline.as_secs_f64()),
        )
        .with_details(json!({"error": detail}));
    }
    let kind = if e.is_connect() {
        ExecErrorKind::Unavailable
    } else if e.is_builder() || e.is_redirect() {
        ExecErrorKind::Permanent
    } else {
        ExecErrorKind::Failed
    };
    ExecError::new(kind, format!("request failed: {detail}")).with_details(json!({"error": detail}))
}

/// An error and its causes on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        cur = s.source();
    }
    text
}

#[async_trait]
impl Executor for HttpExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        HTTP_KIND
    }

    fn validate(&self, payload: &Value) -> Result<(), ExecError> {
        self.parse(payload).map(|_| ())
    }

    async fn execute(
        &self,
        ctx: &TaskContext,
        payload: Value,
        mut cancel: Cancellation,
    ) -> Result<Outcome, ExecError> {
        let req = self.parse(&payload)?;
        self.check_policy(&req)?;
        // The request's own deadline, never past the attempt's.
        let deadline = ctx.timeout.map_or(req.timeout, |t| t.min(req.timeout));
        tokio::select! {
            result = self.fetch(ctx, req, deadline) => result,
            reason = cancel.cancelled() => {
                // Dropping the request closes its connection.
                let mut e = ExecError::from_cancel(reason);
                if reason == CancelReason::Timeout {
                    e.message = "timed out; request abandoned".into();
                }
                Err(e)
            }
        }
    }

    async fn health_check(&self) -> Result<(), ExecError> {
        // Reaches out to nothing: only checks that bodies can be stored.
        check_dir_writable(&self.artifact_dir).await.map_err(|e| {
            ExecError::new(
                ExecErrorKind::Unavailable,
                format!(
                    "artifact_dir {} is not writable: {e}",
                    self.artifact_dir.display()
                ),
            )
        })
    }
}

/// The kind table's builder: `[executor.NAME]` with `kind = "http"`.
pub(super) fn build_kind(
    name: &str,
    options: Value,
    _defaults: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    let options: HttpOptions = parse_options(name, options)?;
    Ok(Arc::new(HttpExecutor::new(name, options)?))
}

async fn check_dir_writable(dir: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let probe = dir.join(format!(".chit-probe-{}", std::process::id()));
    tokio::fs::write(&probe, b"").await?;
    tokio::fs::remove_file(&probe).await
}

#[cfg(test)]
mod tests;
