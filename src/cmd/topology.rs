//! `chit topology`: declare chit's exchanges and queues, or compare the
//! broker with them.

use crate::settings::Settings;
use anyhow::Result;
use broker_topology::Topology;
use broker_topology::declare::EntityState;
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
    /// Compare the broker with what chit expects.
    Show {
        /// Task type whose queue to check (repeatable); also the config file's capabilities.
        #[arg(long = "capability")]
        capabilities: Vec<String>,
    },
}

/// Applies or shows; `show` fails (exit 1) when the broker is out of sync.
pub async fn run(settings: &Settings, action: TopologyAction) -> Result<ExitCode> {
    let (names, apply) = match &action {
        TopologyAction::Apply { capabilities } => (capabilities, true),
        TopologyAction::Show { capabilities } => (capabilities, false),
    };
    let topology = Topology::for_capabilities(&settings.topology_capabilities(names)?);
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
    for e in &report.entries {
        let state = match &e.state {
            EntityState::Present {
                messages: Some(m),
                consumers: Some(c),
            } => {
                format!("ok  ({m} messages, {c} consumers)")
            }
            EntityState::Present { .. } => "ok".into(),
            EntityState::Missing => "MISSING (run chit topology apply)".into(),
            EntityState::Differs(d) => format!("DIFFERS: {d}"),
        };
        println!("{:<8} {:<45} {state}", e.entity, e.name);
    }
    Ok(if report.is_in_sync() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
