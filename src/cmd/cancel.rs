//! `chit cancel`: ask the workers to cancel a task.
//!
//! The sink is asked first what it knows of the task, so that an unknown id
//! (a typo, a task of another deployment) is an error rather than a request
//! sent into the void, and a finished task is reported as such:
//!
//! | the sink says | what happens | exit |
//! | --- | --- | --- |
//! | queued, scheduled, running, retrying, failed | request sent | 0 |
//! | succeeded, cancelled, dead_lettered, purged | nothing sent: it has finished | 0 |
//! | 404 (no receipt of it) | nothing sent | 1 |
//! | no answer (no sink, timeout, 5xx) | request sent, state unknown | 0 |
//!
//! `--no-check` skips the question, for a task the sink cannot know yet (one
//! published by another client without a `queued` receipt, and not yet taken
//! by a worker).

use crate::api_client::get_task;
use crate::settings::Settings;
use anyhow::{Result, bail};
use clap::Args;
use producer::Producer;
use std::process::ExitCode;
use std::time::Duration;

/// How long the sink's API gets to answer before the state counts as unknown.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a task the sink does not know is asked for again, since its
/// `queued` receipt may still be on its way, before it counts as unknown.
const UNKNOWN_AFTER: Duration = Duration::from_secs(1);

/// States in which a task will not run again by itself.
const FINISHED: [&str; 4] = ["succeeded", "cancelled", "dead_lettered", "purged"];

#[derive(Args)]
pub struct CancelArgs {
    /// The task to cancel.
    task_id: String,
    /// Kill at once (SIGKILL) rather than SIGTERM and a grace period.
    #[arg(long)]
    force: bool,
    /// Send the request without asking the sink about the task first.
    #[arg(long)]
    no_check: bool,
    /// The sink's HTTP API, asked for the task's state.
    #[arg(long = "api", env = "CHIT_API_URL")]
    api: Option<String>,
}

/// Asks the sink, then publishes the cancel request (or says why not); the
/// outcome shows in the task's receipts.
pub async fn run(settings: &Settings, args: CancelArgs) -> Result<ExitCode> {
    let id = &args.task_id;
    let state = if args.no_check {
        "unknown (not checked)".to_owned()
    } else {
        let base = settings.api_url(args.api.clone())?;
        let asked = tokio::time::timeout(LOOKUP_TIMEOUT, get_task(&base, id, UNKNOWN_AFTER)).await;
        match asked {
            Ok(Ok(Some(body))) => {
                let state = body["task"]["state"].as_str().unwrap_or("unknown");
                if FINISHED.contains(&state) {
                    println!("task {id} has already finished ({state}): no cancel request sent");
                    return Ok(ExitCode::SUCCESS);
                }
                state.to_owned()
            }
            Ok(Ok(None)) => bail!(
                "task {id} is unknown to the sink at {base}: no cancel request sent (if it was \
                 published without a queued receipt, use --no-check to send it anyway)"
            ),
            Ok(Err(e)) => format!("unknown, the sink's API did not answer: {e:#}"),
            Err(_) => format!(
                "unknown, the sink's API at {base} did not answer within {LOOKUP_TIMEOUT:?}"
            ),
        }
    };
    let producer = Producer::new(settings.producer_config(None));
    producer.cancel(id, args.force).await?;
    println!(
        "cancel request for {id} sent{} (task state: {state})",
        if args.force { ", forced" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}
