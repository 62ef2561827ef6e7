//! `chit dlq`: list, show, replay or purge a task type's dead letters.

use crate::settings::Settings;
use anyhow::{Result, bail};
use clap::Subcommand;
use producer::Producer;
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
    /// Delete all dead letters of a task type.
    Purge {
        /// Task type whose dead letters to delete.
        task_type: String,
    },
}

/// Runs the action; replaying a `--task-id` that is not there is an error.
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
                    d.last_error
                        .as_deref()
                        .unwrap_or("(no error recorded: dead-lettered by the broker)")
                );
            }
        }
        DlqAction::Show { task_type, limit } => {
            let (_, letters) = producer.dead_letters(&task_type, limit).await?;
            println!("{}", serde_json::to_string_pretty(&letters)?);
        }
        DlqAction::Replay { task_type, task_id } => {
            let replayed = producer
                .replay_dead_letters(&task_type, task_id.as_deref())
                .await?;
            for p in &replayed {
                println!("{}", p.task_id);
            }
            eprintln!("replayed {} tasks", replayed.len());
            if task_id.is_some() && replayed.is_empty() {
                bail!("no dead letter of {task_type} has that task id");
            }
        }
        DlqAction::Purge { task_type } => {
            let n = producer.purge_dead_letters(&task_type).await?;
            println!("purged {n} dead-lettered {task_type} tasks");
        }
    }
    Ok(ExitCode::SUCCESS)
}
