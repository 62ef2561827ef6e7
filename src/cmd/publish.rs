//! `chit publish`: one task from `--payload`/`--payload-file`, or one per
//! line of a JSON-lines file with a progress bar.
//!
//! Everything is checked before anything is published: the flags, each
//! payload's JSON, and the payload against its capability's schemas: the
//! config file's `schema` of its `[[capability]]` entry, if any, and the
//! built-in one of a built-in capability (see
//! `broker_topology::payload_schema`).
//! A `--jsonl` file with a bad line publishes nothing, so a run after the
//! fix does not publish the good lines twice, unless `--partial` is given.
//!
//! Output: the id of each published task on stdout, one a line, in the order
//! of the input; with `--json`, one JSON object a line instead
//! (`{task_id, queued_receipt_id}`, plus `line` for `--jsonl`). Problems go
//! to stderr, and make the exit status 1.
//!
//! `--delay 30s` holds a task back that long (its first receipt is
//! `scheduled`). `--wait` publishes one task and waits for the receipt that
//! ends it (`Producer::publish_and_wait`, through `reply_to`, not by asking
//! the sink), and prints that receipt as JSON:
//!
//! | the task | stdout | exit |
//! | --- | --- | --- |
//! | succeeded | its `success` receipt | 0 |
//! | failed for good, dead-lettered, cancelled, purged | that receipt | 1 |
//! | no end within `--timeout` | `{"task_id": ..., "timed_out": true}` | 124 |

use crate::settings::{RetryFlags, Settings, duration_flag};
use anyhow::{Context, Result, bail};
use broker_topology::{ContentType, PayloadSchema, ReceiptType};
use clap::Args;
use producer::{Producer, ProducerConfig, Published, TaskSpec, WaitOutcome};
use serde_json::Value;
use std::io::Read;
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
    /// Read the JSON payload from a file; `-` reads standard input.
    #[arg(long, conflicts_with = "jsonl")]
    payload_file: Option<PathBuf>,
    /// Publish one task per line of a JSON-lines file (`-`: standard input).
    /// Every line is checked first; if any is bad, none is published.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// With --jsonl: publish the good lines even when some are bad (the bad
    /// ones are listed, and the exit status is still 1).
    #[arg(long, requires = "jsonl")]
    partial: bool,
    /// Print JSON, one object per task a line: {task_id, queued_receipt_id},
    /// and the input's line number as `line` with --jsonl.
    #[arg(long)]
    json: bool,
    /// Encode the body as MessagePack instead of JSON.
    #[arg(long)]
    msgpack: bool,
    #[command(flatten)]
    retry: RetryFlags,
    /// Hold the task back this long before a worker may take it: a whole
    /// number and a unit, ms, s, m, h, d or w (30s, 2m). Rounded up, never
    /// down; at most 24 days.
    #[arg(long, value_name = "DURATION", value_parser = duration_flag)]
    delay: Option<Duration>,
    /// Wait for the task to end and print the receipt that ends it as JSON:
    /// exit 0 when it succeeded, 1 when it failed for good, was
    /// dead-lettered, cancelled or purged, 124 at --timeout.
    #[arg(long, conflicts_with = "jsonl")]
    wait: bool,
    /// With --wait: how long to wait for the task's end (30s, 2m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = duration_flag,
          default_value = DEFAULT_WAIT, requires = "wait")]
    timeout: Duration,
    /// Give up when the broker has not confirmed after this many seconds.
    #[arg(long, default_value_t = default_deadline_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    deadline_secs: u64,
}

/// How long `--wait` waits by default.
const DEFAULT_WAIT: &str = "5m";

/// The exit status of `--wait` when the task has not ended in time, as
/// `timeout(1)` has it.
const TIMED_OUT: u8 = 124;

/// The producer crate owns the default; reading it here lets `--help` show it.
fn default_deadline_secs() -> u64 {
    ProducerConfig::new("").publish_deadline.as_secs()
}

/// Publishes; exit 1 when anything was not published.
pub async fn run(settings: &Settings, args: PublishArgs) -> Result<ExitCode> {
    check_flags(&args)?;
    // The config file's schema of this task type, read and compiled once.
    let schema = settings.capability_schema(&args.task_type)?;
    let schema = schema.as_ref().map(|s| &*s.schema);
    if let Some(path) = &args.jsonl {
        let text = read_input(path)?;
        let config = settings.producer_config(Some(Duration::from_secs(args.deadline_secs)));
        return publish_jsonl(&Producer::new(config), &args, schema, &text).await;
    }
    let text = match (&args.payload, &args.payload_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => read_input(f)?,
        (None, None) => {
            bail!("give the payload with --payload JSON, --payload-file FILE or --jsonl FILE")
        }
    };
    let payload: Value = serde_json::from_str(&text).context("the payload is not valid JSON")?;
    let spec = task_spec(&args, &payload, schema)?;
    let config = settings.producer_config(Some(Duration::from_secs(args.deadline_secs)));
    if args.wait {
        let outcome = Producer::new(config)
            .publish_and_wait(spec, args.timeout)
            .await?;
        return wait_output(&outcome, args.timeout);
    }
    let published = Producer::new(config).publish(spec).await?;
    if args.json {
        println!("{}", serde_json::to_string(&published)?);
    } else {
        println!("{}", published.task_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints how `--wait` ended and says the exit status (see the module docs).
fn wait_output(outcome: &WaitOutcome, timeout: Duration) -> Result<ExitCode> {
    match outcome {
        WaitOutcome::Finished { receipt, .. } => {
            println!("{}", serde_json::to_string(receipt)?);
            Ok(if receipt.receipt_type == ReceiptType::Success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        WaitOutcome::TimedOut {
            published: Published { task_id, .. },
        } => {
            println!(
                "{}",
                serde_json::json!({"task_id": task_id, "timed_out": true})
            );
            eprintln!(
                "task {task_id} has not ended within {timeout:?}: it is still queued, scheduled                  or running (chit task show {task_id})"
            );
            Ok(ExitCode::from(TIMED_OUT))
        }
    }
}

/// Refuses flag values no task can have, naming the flag. The producer
/// refuses them too, in the envelope's terms.
fn check_flags(args: &PublishArgs) -> Result<()> {
    // clap's `requires` lets it through beside --payload, which conflicts
    // with --jsonl.
    if args.partial && args.jsonl.is_none() {
        bail!("--partial applies to --jsonl only");
    }
    // --max-attempts and --timeout-secs are checked by their parsers
    // (settings::retry_flags), for the worker too.
    Ok(())
}

/// The text of `path`, or of standard input when it is `-`.
fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The task for `payload`, checked: its payload against the capability's
/// schemas (`schema`, the config file's, and the built-in one), its envelope
/// with the flags stamped in.
fn task_spec(
    args: &PublishArgs,
    payload: &Value,
    schema: Option<&PayloadSchema>,
) -> Result<TaskSpec, producer::PublishError> {
    let ct = if args.msgpack {
        ContentType::MsgPack
    } else {
        ContentType::Json
    };
    let mut spec = TaskSpec::with_schema(&args.task_type, payload, ct, schema)?;
    args.retry.stamp(&mut spec.envelope);
    spec.delay = args.delay;
    spec.check()?;
    Ok(spec)
}

/// The non-blank lines of a JSON-lines text as tasks, each with its line
/// number (from 1), and the bad lines with what is wrong with each.
type Lines = (Vec<(usize, TaskSpec)>, Vec<(usize, String)>);

fn read_lines(args: &PublishArgs, schema: Option<&PayloadSchema>, text: &str) -> Lines {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let spec = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|v| task_spec(args, &v, schema).map_err(|e| e.to_string()));
        match spec {
            Ok(s) => good.push((n + 1, s)),
            Err(e) => bad.push((n + 1, e)),
        }
    }
    (good, bad)
}

/// Checks every line, then publishes them all (or, with `--partial`, the
/// good ones) with pipelined confirms.
async fn publish_jsonl(
    producer: &Producer,
    args: &PublishArgs,
    schema: Option<&PayloadSchema>,
    text: &str,
) -> Result<ExitCode> {
    let (good, mut failed) = read_lines(args, schema, text);
    if !failed.is_empty() && !args.partial {
        for (line, e) in &failed {
            eprintln!("line {line}: {e}");
        }
        let mut numbers: Vec<String> = failed.iter().take(10).map(|(n, _)| n.to_string()).collect();
        if failed.len() > 10 {
            numbers.push("...".into());
        }
        bail!(
            "{} of {} lines are bad (line {}); nothing was published: fix them and run again, \
             or give --partial to publish the good lines",
            failed.len(),
            failed.len() + good.len(),
            numbers.join(", ")
        );
    }
    let (lines, specs): (Vec<usize>, Vec<TaskSpec>) = good.into_iter().unzip();
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
                    let out = serde_json::json!({
                        "line": line,
                        "task_id": p.task_id,
                        "queued_receipt_id": p.queued_receipt_id,
                    });
                    println!("{out}");
                } else {
                    println!("{}", p.task_id);
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
