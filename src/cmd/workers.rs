//! `chit workers`: the live workers, as the sink's API lists them from their
//! heartbeats (`GET /v1/workers`). A worker drops out of the list three
//! heartbeat intervals (15 s by default) after its last heartbeat, or at once
//! when it stops cleanly.

use crate::api_client::get_json;
use crate::cmd::task::ApiArgs;
use crate::settings::Settings;
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct WorkersArgs {
    /// Print the API's JSON, `{"workers": [...]}`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// Fetches and prints the live workers.
pub async fn run(settings: &Settings, args: WorkersArgs) -> Result<ExitCode> {
    let url = format!("{}/v1/workers", settings.api_url(args.api.url)?);
    let body = get_json(&url).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let workers: Vec<receipts_sink::LiveWorker> =
            serde_json::from_value(body["workers"].clone())?;
        print!("{}", receipts_sink::render_workers(&workers));
    }
    Ok(ExitCode::SUCCESS)
}
