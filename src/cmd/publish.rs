//! `chit publish`: one task from `--payload`/`--payload-file`, or one per
//! line of a JSON-lines file with a progress bar; prints each task id.

use crate::settings::{RetryFlags, Settings};
use anyhow::{Context, Result, bail};
use broker_topology::ContentType;
use clap::Args;
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct PublishArgs {
    /// Task type (capability), e.g. command.execute.
    task_type: String,
    /// The payload, as JSON.
    #[arg(long, conflicts_with_all = ["payload_file", "jsonl"])]
    payload: Option<String>,
    /// Read the JSON payload from a file.
    #[arg(long, conflicts_with = "jsonl")]
    payload_file: Option<PathBuf>,
    /// Publish one task per line of a JSON-lines file.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Print JSON ({task_id, queued_receipt_id}, one line per task).
    #[arg(long)]
    json: bool,
    /// Encode the body as MessagePack instead of JSON.
    #[arg(long)]
    msgpack: bool,
    #[command(flatten)]
    retry: RetryFlags,
    /// Give up when the broker has not confirmed after this many seconds.
    #[arg(long, default_value_t = default_deadline_secs())]
    deadline_secs: u64,
}

/// The producer crate owns the default; reading it here lets `--help` show it.
fn default_deadline_secs() -> u64 {
    ProducerConfig::new("").publish_deadline.as_secs()
}

/// Publishes; exit 1 when any line of a `--jsonl` file failed.
pub async fn run(settings: &Settings, args: PublishArgs) -> Result<ExitCode> {
    let config = settings.producer_config(Some(Duration::from_secs(args.deadline_secs)));
    let producer = Producer::new(config);
    if let Some(path) = &args.jsonl {
        return publish_jsonl(&producer, &args, path).await;
    }
    let text = match (&args.payload, &args.payload_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => {
            bail!("give the payload with --payload JSON, --payload-file FILE or --jsonl FILE")
        }
    };
    let payload: Value = serde_json::from_str(&text).context("the payload is not valid JSON")?;
    let spec = task_spec(&args, &payload)?;
    let published = producer.publish(spec).await?;
    if args.json {
        println!("{}", serde_json::to_string(&published)?);
    } else {
        println!("{}", published.task_id);
    }
    Ok(ExitCode::SUCCESS)
}

fn task_spec(args: &PublishArgs, payload: &Value) -> Result<TaskSpec, producer::PublishError> {
    let ct = if args.msgpack {
        ContentType::MsgPack
    } else {
        ContentType::Json
    };
    let mut spec = TaskSpec::new(&args.task_type, payload, ct)?;
    args.retry.stamp(&mut spec.envelope);
    Ok(spec)
}

/// Bad lines are reported with the publish failures rather than stopping
/// the run, so one typo does not hold back a large file.
async fn publish_jsonl(producer: &Producer, args: &PublishArgs, path: &Path) -> Result<ExitCode> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut specs = Vec::new();
    let mut lines = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let spec = serde_json::from_str::<Value>(&line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|v| task_spec(args, &v).map_err(|e| e.to_string()));
        match spec {
            Ok(s) => {
                specs.push(s);
                lines.push(n + 1);
            }
            Err(e) => failed.push((n + 1, e)),
        }
    }
    let bar = indicatif::ProgressBar::new(specs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tasks confirmed ({per_sec}, eta {eta})",
        )
        .expect("template"),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = std::time::Instant::now();
    let results = producer
        .publish_many(specs, |n| bar.set_position(n as u64))
        .await;
    bar.finish_and_clear();
    let mut ok = 0usize;
    for (line, r) in lines.iter().zip(results) {
        match r {
            Ok(p) => {
                ok += 1;
                if args.json {
                    println!("{}", serde_json::to_string(&p)?);
                }
            }
            Err(e) => failed.push((*line, e.to_string())),
        }
    }
    failed.sort();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {ok} tasks in {secs:.2} s ({:.0}/s); {} failed",
        ok as f64 / secs.max(1e-9),
        failed.len()
    );
    for (line, e) in &failed {
        eprintln!("  line {line}: {e}");
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
