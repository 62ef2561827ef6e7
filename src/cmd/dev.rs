//! `chit dev`: everything on one machine. Declares the topology, then runs
//! a receipts sink and a `command.execute` worker in this process until
//! ctrl-c, both built through the same settings as `chit sink` and
//! `chit worker`: the same flags, `CHIT_*` variables and `[sink]` section
//! of the config file.

use crate::settings::{Settings, SinkSettings, WorkerSettings};
use crate::signal::stop_signal;
use anyhow::{Context, Result};
use broker_topology::Topology;
use clap::Args;
use std::process::ExitCode;
use worker::WorkerConfig;

/// The one capability `chit dev` serves.
const CAPABILITY: &str = "command.execute";
/// Shorter than a worker's default drain: ctrl-c on a laptop should not hang.
const DRAIN_TIMEOUT_SECS: u64 = 10;

#[derive(Args)]
pub struct DevArgs {
    /// Receipt store: sqlite://PATH or postgres://... [default: the config
    /// file's `[sink] store`, else SQLite in chit's data directory]
    #[arg(long, env = "CHIT_STORE")]
    store: Option<String>,
    /// Address of the HTTP API [default: the config file's `[sink] http`,
    /// else 127.0.0.1:8700]
    #[arg(long, env = "CHIT_HTTP")]
    http: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = WorkerConfig::DEFAULT_CONCURRENCY)]
    concurrency: usize,
}

/// Runs until a stop signal, then stops the sink and the worker together.
pub async fn run(settings: &Settings, args: DevArgs) -> Result<ExitCode> {
    let capabilities = vec![CAPABILITY.to_owned()];
    let conn = broker_link::connect(&settings.amqp_url, "chit-dev")
        .await
        .context(
            "chit dev needs a local RabbitMQ: run deploy/local/run.sh, which installs and starts one",
        )?;
    let topology = Topology::for_capabilities(&settings.topology_capabilities(&capabilities)?);
    broker_link::declare::apply(&conn, &topology).await?;
    drop(conn);
    let sink = settings.sink_config(&SinkSettings {
        store: args.store,
        http: args.http,
        ..SinkSettings::default()
    })?;
    let wconf = settings.worker_config(&WorkerSettings {
        capabilities,
        concurrency: Some(args.concurrency),
        worker_id: Some(format!("dev-{}", std::process::id())),
        drain_timeout_secs: Some(DRAIN_TIMEOUT_SECS),
        ..WorkerSettings::default()
    })?;
    let store = sink.store_url.clone();
    let api = format!("http://{}", sink.http_addr);
    let (trigger, shutdown) = worker::shutdown::shutdown();
    let mut s = shutdown.clone();
    let sink_task = tokio::spawn(receipts_sink::run(sink, async move { s.recv().await }));
    let registry = settings.executor_registry(wconf.kill_grace)?;
    let mut s = shutdown;
    let worker_task = tokio::spawn(worker::run(wconf, registry, async move { s.recv().await }));
    println!(
        "\nchit dev is running: a command.execute worker and a receipts sink ({store}, API {api}).\n\
         In another terminal, try:\n\n  \
         id=$(chit publish command.execute --payload '{{\"command\": \"echo hello from chit\", \"output_path\": \"/tmp/chit-hello.json\"}}')\n  \
         chit task show $id --api {api}\n  \
         chit task list --api {api}\n\n\
         Stop with ctrl-c.\n"
    );
    stop_signal().await;
    trigger.fire();
    let (s, w) = tokio::join!(sink_task, worker_task);
    s??;
    w??;
    Ok(ExitCode::SUCCESS)
}
