//! `chit task`: look at tasks and their receipt chains through the sink's
//! HTTP API.

use crate::api_client::get_json;
use crate::settings::Settings;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TaskAction {
    /// A task's state and its receipt chain as a tree.
    Show {
        /// The task's id, as `chit publish` printed it.
        task_id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Tasks, newest first.
    List {
        /// Only tasks in this state (queued, running, succeeded, failed, retrying, dead_lettered, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only tasks of this task type.
        #[arg(long)]
        task_type: Option<String>,
        /// Tasks to list at most.
        #[arg(long, default_value_t = receipts_sink::api::DEFAULT_PAGE_SIZE)]
        limit: u32,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct ApiArgs {
    /// The sink's HTTP API.
    #[arg(long = "api", env = "CHIT_API_URL")]
    url: Option<String>,
}

/// Fetches and prints; an API error (unknown task, bad filter) is an error.
pub async fn run(settings: &Settings, action: TaskAction) -> Result<ExitCode> {
    match action {
        TaskAction::Show { task_id, json, api } => {
            let base = settings.api_url(api.url);
            let body = get_json(&format!("{base}/v1/tasks/{task_id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let view: receipts_sink::TaskView = serde_json::from_value(body)?;
                print!("{}", receipts_sink::render_tree(&view));
            }
        }
        TaskAction::List {
            state,
            task_type,
            limit,
            json,
            api,
        } => {
            let mut url = format!("{}/v1/tasks?limit={limit}", settings.api_url(api.url));
            if let Some(s) = state {
                url.push_str(&format!("&state={s}"));
            }
            if let Some(t) = task_type {
                url.push_str(&format!("&task_type={t}"));
            }
            let body = get_json(&url).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let page: receipts_sink::Page = serde_json::from_value(body)?;
                print!("{}", receipts_sink::render_task_table(&page.tasks));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
