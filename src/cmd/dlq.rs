//! `chit dlq`: list, show, replay or purge a task type's dead letters.

use crate::settings::Settings;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use producer::Producer;
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DlqAction {
    /// Count and summarise dead letters.
    List {
        /// Task type whose dead letters to read.
        task_type: String,
        /// Dead letters to summarise at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print dead letters in full, as JSON.
    Show {
        /// Task type whose dead letters to read.
        task_type: String,
        /// Dead letters to print at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Publish dead letters again (all, or one task), each with a fresh retry budget.
    Replay {
        /// Task type whose dead letters to publish again.
        task_type: String,
        /// Replay only this task's dead letter.
        #[arg(long)]
        task_id: Option<String>,
    },
    /// Delete all dead letters of a task type, each with a `purged` receipt.
    /// Asks first on a terminal; elsewhere needs --yes.
    Purge {
        /// Task type whose dead letters to delete.
        task_type: String,
        /// Do not ask: purge.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Runs the action; replaying a `--task-id` that is not there is an error,
/// and so is a purge that was not confirmed.
pub async fn run(settings: &Settings, action: DlqAction) -> Result<ExitCode> {
    let producer = Producer::new(settings.producer_config(None));
    match action {
        DlqAction::List { task_type, limit } => {
            let (total, letters) = producer.dead_letters(&task_type, limit).await?;
            println!("{total} dead-lettered {task_type} tasks");
            for d in letters {
                println!(
                    "  {}  attempt {}  {}",
                    d.task_id,
                    d.attempt,
                    d.last_error.as_deref().unwrap_or("(no error recorded)")
                );
            }
        }
        DlqAction::Show { task_type, limit } => {
            let (_, letters) = producer.dead_letters(&task_type, limit).await?;
            println!("{}", serde_json::to_string_pretty(&letters)?);
        }
        DlqAction::Replay { task_type, task_id } => {
            let replayed = producer
                .replay_dead_letters(&task_type, task_id.as_ref().map(std::slice::from_ref))
                .await?;
            for p in &replayed {
                println!("{}", p.task_id);
            }
            eprintln!("replayed {} tasks", replayed.len());
            if task_id.is_some() && replayed.is_empty() {
                bail!("no dead letter of {task_type} has that task id");
            }
        }
        DlqAction::Purge { task_type, yes } => {
            let mut at_most = None;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!(
                        "refusing to purge the dead letters of {task_type} without confirmation: \
                         stdin is not a terminal; pass --yes to purge"
                    );
                }
                let n = producer.count_dead_letters(&task_type).await?;
                if n == 0 {
                    println!("no dead-lettered {task_type} tasks to purge");
                    return Ok(ExitCode::SUCCESS);
                }
                if !confirm(&format!(
                    "delete {n} dead-lettered {task_type} tasks for good? [y/N] "
                ))
                .await?
                {
                    eprintln!("nothing purged");
                    return Ok(ExitCode::FAILURE);
                }
                at_most = Some(n);
            }
            let n = producer.purge_dead_letters(&task_type, at_most).await?;
            println!("purged {n} dead-lettered {task_type} tasks");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks `question` on stderr and reads the answer from stdin: true for `y` or `yes`.
async fn confirm(question: &str) -> Result<bool> {
    eprint!("{question}");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await?
    .context("cannot read the answer from stdin")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
