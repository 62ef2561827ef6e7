//! `chit cancel`: ask the workers to cancel a task.

use crate::settings::Settings;
use anyhow::Result;
use clap::Args;
use producer::Producer;
use std::process::ExitCode;

#[derive(Args)]
pub struct CancelArgs {
    /// The task to cancel.
    task_id: String,
    /// Kill at once (SIGKILL) rather than SIGTERM and a grace period.
    #[arg(long)]
    force: bool,
}

/// Publishes the cancel request; the outcome shows in the task's receipts.
pub async fn run(settings: &Settings, args: CancelArgs) -> Result<ExitCode> {
    let producer = Producer::new(settings.producer_config(None));
    producer.cancel(&args.task_id, args.force).await?;
    println!(
        "cancel request for {} sent{}",
        args.task_id,
        if args.force { " (forced)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}
