//! `chit task`: look at tasks and their receipt chains through the sink's
//! HTTP API.
//!
//! `task show` right after `chit publish` may find no receipt yet: the
//! `queued` receipt is on its way through the broker to the sink. It asks
//! again for up to `--wait-secs` seconds (2 by default) before it says so.
//! It lists the trace ids the receipts record, each followed by a link when
//! a trace URL template is set (`--trace-url`, `CHIT_TRACE_URL`, or the
//! config file's `trace_url`).

use crate::api_client::{get_json, get_task};
use crate::settings::Settings;
use anyhow::{Result, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use receipts_sink::TaskState;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// How long `task show` waits for a task's first receipt by default.
const DEFAULT_SHOW_WAIT_SECS: f64 = 2.0;

#[derive(Subcommand)]
pub enum TaskAction {
    /// A task's state and its receipt chain as a tree.
    Show {
        /// The task's id, as `chit publish` printed it.
        task_id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the task's first receipt to reach the sink
        /// when it has none yet (0: ask once).
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SHOW_WAIT_SECS,
              value_parser = parse_wait, visible_alias = "wait")]
        wait_secs: f64,
        /// Link each trace id: a URL with `{trace_id}` in it, such as
        /// https://grafana.example/explore?traceId={trace_id} [default: the
        /// config file's `trace_url`]
        #[arg(long, env = "CHIT_TRACE_URL", value_name = "TEMPLATE")]
        trace_url: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Tasks, newest first.
    List {
        /// Only tasks in this state.
        #[arg(long, value_parser = PossibleValuesParser::new(
            TaskState::ALL.map(TaskState::as_str)))]
        state: Option<String>,
        /// Only tasks of this task type.
        #[arg(long)]
        task_type: Option<String>,
        /// Tasks to list at most; more than the API's page of 1000 are
        /// fetched page by page.
        #[arg(long, default_value_t = receipts_sink::api::DEFAULT_PAGE_SIZE,
              value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Start after the tasks already listed: the cursor printed by the
        /// previous `task list` ("next page: --cursor ..." on stderr, or
        /// `next_cursor` in its --json).
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON, `{"tasks": [...], "next_cursor": ...}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct ApiArgs {
    /// The sink's HTTP API: HOST:PORT, :PORT, HOST or http://HOST:PORT
    /// [default: the config file's `[sink] api`, else 127.0.0.1:8700]
    #[arg(long = "api", env = "CHIT_API_URL")]
    pub(crate) url: Option<String>,
}

/// Fetches and prints; an API error (unknown task, bad filter) is an error.
pub async fn run(settings: &Settings, action: TaskAction) -> Result<ExitCode> {
    match action {
        TaskAction::Show {
            task_id,
            json,
            wait_secs: wait,
            trace_url,
            api,
        } => {
            let trace_url = trace_url.or_else(|| settings.file.trace_url.clone());
            if let Some(t) = &trace_url
                && !t.contains(receipts_sink::render::TRACE_ID_PLACEHOLDER)
            {
                bail!(
                    "trace URL template {t:?} has no {} to put the trace id in",
                    receipts_sink::render::TRACE_ID_PLACEHOLDER
                );
            }
            let base = settings.api_url(api.url)?;
            let Some(body) = get_task(&base, &task_id, Duration::from_secs_f64(wait)).await? else {
                bail!(
                    "no receipts for task {task_id} yet: the sink at {base} has none \
                     (HTTP 404 after waiting {wait} s). Receipts may still be on their way: \
                     try again, or give --wait-secs more seconds; else check the task id, and that \
                     the sink reads the broker the task went to"
                );
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let view: receipts_sink::TaskView = serde_json::from_value(body)?;
                print!(
                    "{}",
                    receipts_sink::render::render_tree_linked(
                        &view,
                        output_width(),
                        trace_url.as_deref()
                    )
                );
            }
        }
        TaskAction::List {
            state,
            task_type,
            limit,
            cursor,
            json,
            api,
        } => {
            let mut url = format!("{}/v1/tasks?", settings.api_url(api.url)?);
            if let Some(s) = state {
                url.push_str(&format!("state={s}&"));
            }
            if let Some(t) = task_type {
                url.push_str(&format!("task_type={t}&"));
            }
            let page = list_pages(&url, limit, cursor).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                let page: receipts_sink::Page = serde_json::from_value(page)?;
                print!("{}", receipts_sink::render_task_table(&page.tasks));
                // On stderr, so stdout stays the table alone.
                if let Some(next) = page.next_cursor {
                    eprintln!("next page: --cursor {next}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Up to `limit` tasks from `url` (ending in `?` or `&`), from `cursor` on,
/// in pages of at most the API's maximum; returns them as one page, whose
/// `next_cursor` continues after the last of them.
async fn list_pages(
    url: &str,
    limit: u32,
    mut cursor: Option<String>,
) -> Result<serde_json::Value> {
    let mut tasks: Vec<serde_json::Value> = Vec::new();
    let mut left = limit as usize;
    loop {
        let page = left.min(receipts_sink::store::MAX_PAGE_SIZE as usize);
        let mut page_url = format!("{url}limit={page}");
        if let Some(c) = &cursor {
            page_url.push_str(&format!("&cursor={c}"));
        }
        let mut body = get_json(&page_url).await?;
        let got = match body["tasks"].take() {
            serde_json::Value::Array(got) => got,
            _ => bail!("the API at {page_url} answered without a task list"),
        };
        left = left.saturating_sub(got.len());
        tasks.extend(got);
        cursor = body["next_cursor"].as_str().map(str::to_owned);
        if left == 0 || cursor.is_none() {
            break;
        }
    }
    Ok(serde_json::json!({"tasks": tasks, "next_cursor": cursor}))
}

/// `--wait-secs`: a number of seconds, 0 or more.
fn parse_wait(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!("{raw:?} is not a number of seconds from 0 to 3600")),
    }
}

/// Columns to wrap the tree to: the terminal's, else
/// [`receipts_sink::render::DEFAULT_WIDTH`].
fn output_width() -> usize {
    let term = std::io::stdout()
        .is_terminal()
        .then(|| console::Term::stdout().size_checked());
    match term.flatten() {
        Some((_, cols)) if cols > 0 => usize::from(cols),
        _ => receipts_sink::render::DEFAULT_WIDTH,
    }
}
