//! `chit topology`: declare chit's exchanges and queues, or compare the
//! broker with them.

use crate::settings::Settings;
use anyhow::Result;
use broker_link::management::Management;
use broker_topology::declare::EntityState;
use broker_topology::{Topology, names};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TopologyAction {
    /// Declare everything (idempotent).
    Apply {
        /// Task type to declare a queue for (repeatable); also the config file's capabilities.
        #[arg(long = "capability")]
        capabilities: Vec<String>,
    },
    /// Compare the broker with what chit expects, with queue depths and
    /// consumers, and list the retry delay queues that hold tasks.
    Show {
        /// Task type whose queue to check (repeatable); also the config file's capabilities.
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// The broker's management API, which counts the consumers of
        /// streams and lists delay queues [default: http://AMQP-HOST:15672,
        /// with the AMQP URL's credentials]
        #[arg(long, env = "CHIT_MANAGEMENT_URL")]
        management_url: Option<String>,
    },
}

/// Applies or shows; `show` fails (exit 1) when the broker is out of sync.
pub async fn run(settings: &Settings, action: TopologyAction) -> Result<ExitCode> {
    let (names, apply) = match &action {
        TopologyAction::Apply { capabilities } => (capabilities, true),
        TopologyAction::Show { capabilities, .. } => (capabilities, false),
    };
    let capabilities = settings.topology_capabilities(names)?;
    let topology = Topology::for_capabilities(&capabilities);
    let conn = broker_link::connect(&settings.amqp_url, "chit-cli").await?;
    if apply {
        broker_link::declare::apply(&conn, &topology).await?;
        println!(
            "topology applied: {} exchanges, {} queues, {} bindings",
            topology.exchanges.len(),
            topology.queues.len(),
            topology.bindings.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let report = broker_link::declare::inspect(&conn, &topology).await?;
    let management_url = match &action {
        TopologyAction::Show { management_url, .. } => management_url.as_deref(),
        TopologyAction::Apply { .. } => None,
    };
    // The management API is optional: without it, streams show no counts
    // (AMQP reports 0 for them) and delay queues cannot be listed.
    let stats = match Management::for_amqp_url(&settings.amqp_url, management_url) {
        Ok(m) => m.queues().await,
        Err(e) => Err(e),
    };
    let by_name = |name: &str| {
        stats
            .as_ref()
            .ok()
            .and_then(|qs| qs.iter().find(|q| q.name == name))
    };
    for e in &report.entries {
        let state = match &e.state {
            EntityState::Present {
                messages: Some(m),
                consumers: Some(c),
            } => {
                format!("ok  ({m} messages, {c} consumers)")
            }
            EntityState::Present { .. } if e.entity == "queue" => match by_name(&e.name) {
                Some(q) => format!("ok  ({} messages, {} consumers)", q.messages, q.consumers),
                None => "ok  (consumers unknown: AMQP does not count them for streams)".into(),
            },
            EntityState::Present { .. } => "ok".into(),
            EntityState::Missing => "MISSING (run chit topology apply)".into(),
            EntityState::Differs(d) => format!("DIFFERS: {d}"),
        };
        println!("{:<8} {:<45} {state}", e.entity, e.name);
    }
    match &stats {
        Ok(queues) => {
            for q in queues.iter().filter(|q| {
                capabilities
                    .iter()
                    .any(|c| names::is_delay_queue_of(&q.name, &c.name))
            }) {
                println!(
                    "{:<8} {:<45} {} messages waiting to retry",
                    "delay", q.name, q.messages
                );
            }
        }
        Err(e) => eprintln!("note: stream consumers and retry delay queues not shown: {e}"),
    }
    Ok(if report.is_in_sync() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
