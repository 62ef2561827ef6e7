//! `chit`: the command line. It parses flags and settings and calls the
//! crates; the work happens in broker-topology, producer, worker and
//! receipts-sink.

mod settings;

use anyhow::{Context, Result, bail};
use broker_topology::connect::DEFAULT_AMQP_URL;
use broker_topology::declare::EntityState;
use broker_topology::retry::RetryPolicy;
use broker_topology::{Capability, ContentType, Topology};
use clap::{Args, Parser, Subcommand};
use producer::{Producer, ProducerConfig, TaskSpec};
use serde_json::Value;
use settings::FileConfig;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use worker::{CapabilityConfig, Registry, WorkerConfig};

#[derive(Parser)]
#[command(
    name = "chit",
    version,
    about = "A distributed work queue on RabbitMQ, with a receipt for every step"
)]
struct Cli {
    /// Broker URL.
    #[arg(long, env = "CHIT_AMQP_URL", global = true)]
    amqp_url: Option<String>,
    /// Config file (TOML); default ~/.config/chit/chit.toml when it exists.
    #[arg(long, env = "CHIT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Declare or inspect exchanges and queues.
    Topology {
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Publish tasks; prints the task id.
    Publish(PublishArgs),
    /// Run a worker.
    Worker(WorkerArgs),
    /// Run the receipts sink and its HTTP API.
    Sink(SinkArgs),
    /// Look at tasks and their receipt chains (through the sink's API).
    Task {
        #[command(subcommand)]
        action: TaskAction,
    },
    /// Cancel a task: skipped if still queued, stopped if running.
    Cancel {
        task_id: String,
        /// Kill at once (SIGKILL) rather than SIGTERM and a grace period.
        #[arg(long)]
        force: bool,
    },
    /// Dead-lettered tasks of a task type.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Everything on one machine: topology, a SQLite sink and a command.execute worker.
    Dev(DevArgs),
}

#[derive(Subcommand)]
enum TopologyAction {
    /// Declare everything (idempotent).
    Apply {
        /// Task type to declare a queue for (repeatable); also the config file's capabilities.
        #[arg(long = "capability")]
        capabilities: Vec<String>,
    },
    /// Compare the broker with what chit expects.
    Show {
        #[arg(long = "capability")]
        capabilities: Vec<String>,
    },
}

#[derive(Args)]
struct PublishArgs {
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
    /// Total attempts for this task (overrides the worker's setting).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// First retry delay in ms for this task.
    #[arg(long)]
    backoff_ms: Option<u64>,
    /// Run-time limit for this task, in seconds.
    #[arg(long)]
    timeout_secs: Option<f64>,
    /// Give up when the broker has not confirmed after this many seconds.
    #[arg(long, default_value_t = 30)]
    deadline_secs: u64,
}

#[derive(Args)]
struct WorkerArgs {
    /// Task type to consume, optionally `TYPE=EXECUTOR` (repeatable).
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Tasks run at once.
    #[arg(long, env = "CHIT_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Deliveries the broker may push ahead, per capability.
    #[arg(long, env = "CHIT_PREFETCH")]
    prefetch: Option<u16>,
    /// Worker id in receipts (default hostname-pid).
    #[arg(long, env = "CHIT_WORKER_ID")]
    worker_id: Option<String>,
    /// Seconds in-flight tasks get to finish after SIGTERM.
    #[arg(long, env = "CHIT_DRAIN_TIMEOUT")]
    drain_timeout: Option<u64>,
    /// Total attempts per task, for every capability given here.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// First retry delay in ms.
    #[arg(long)]
    backoff_ms: Option<u64>,
    /// Default run-time limit per task, in seconds.
    #[arg(long)]
    timeout_secs: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, default_value_t = 5.0)]
    kill_grace_secs: f64,
    /// Longest wait, in ms, for more receipts before a receipt batch is sent.
    #[arg(long, env = "CHIT_RECEIPT_LINGER_MS")]
    receipt_linger_ms: Option<f64>,
    /// Serve GET /healthz (broker connection state) on this address.
    #[arg(long, env = "CHIT_HEALTH_ADDR")]
    health: Option<String>,
}

#[derive(Args)]
struct SinkArgs {
    /// Receipt store: sqlite://PATH (default: in chit's data directory) or postgres://...
    #[arg(long, env = "CHIT_STORE")]
    store: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, env = "CHIT_HTTP")]
    http: Option<String>,
    /// Receipts per committed batch at most.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Milliseconds a batch stays open at most.
    #[arg(long)]
    batch_wait_ms: Option<u64>,
    /// Messages the broker may push ahead.
    #[arg(long)]
    prefetch: Option<u16>,
}

#[derive(Subcommand)]
enum TaskAction {
    /// A task's state and its receipt chain as a tree.
    Show {
        task_id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Tasks, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        task_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
struct ApiArgs {
    /// The sink's HTTP API.
    #[arg(long = "api", env = "CHIT_API_URL")]
    url: Option<String>,
}

#[derive(Subcommand)]
enum DlqAction {
    /// Count and summarise dead letters.
    List {
        task_type: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print dead letters in full, as JSON.
    Show {
        task_type: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Publish dead letters again (all, or one task), each with a fresh retry budget.
    Replay {
        task_type: String,
        #[arg(long)]
        task_id: Option<String>,
    },
    /// Delete all dead letters of a task type.
    Purge { task_type: String },
}

#[derive(Args)]
struct DevArgs {
    /// Receipt store (default: SQLite in chit's data directory).
    #[arg(long)]
    store: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8700")]
    http: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Long-running parts log their lifecycle; one-shot commands only problems.
    let long_running = matches!(
        cli.command,
        Command::Worker(_) | Command::Sink(_) | Command::Dev(_)
    );
    init_tracing(if long_running { "info" } else { "warn" });
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHIT_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{level},lapin=off,sqlx=warn"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let file = FileConfig::load(cli.config.as_deref())?;
    let amqp_url = cli
        .amqp_url
        .clone()
        .or_else(|| file.amqp_url.clone())
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned());
    match cli.command {
        Command::Topology { action } => topology(&amqp_url, &file, action).await,
        Command::Publish(args) => publish(&amqp_url, args).await,
        Command::Worker(args) => {
            let config = worker_config(&amqp_url, &file, &args)?;
            let registry = Registry::builtin(config.kill_grace);
            worker::run(config, registry, stop_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sink(args) => {
            let config = sink_config(&amqp_url, &file, &args)?;
            receipts_sink::run(config, stop_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Task { action } => task(&file, action).await,
        Command::Cancel { task_id, force } => {
            let producer = Producer::new(ProducerConfig::new(&amqp_url));
            producer.cancel(&task_id, force).await?;
            println!(
                "cancel request for {task_id} sent{}",
                if force { " (forced)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { action } => dlq(&amqp_url, action).await,
        Command::Dev(args) => dev(&amqp_url, &file, args).await,
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (ctrl-c).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn capabilities(file: &FileConfig, names: &[String]) -> Result<Vec<Capability>> {
    let mut names: Vec<String> = names
        .iter()
        .map(|n| n.split('=').next().unwrap_or(n).to_owned())
        .collect();
    if names.is_empty() {
        names = file.capabilities.iter().map(|c| c.name.clone()).collect();
    }
    names
        .into_iter()
        .map(|n| {
            let mut c = Capability::new(n)?;
            if let Some(limit) = file.capability(&c.name).and_then(|f| f.delivery_limit) {
                c.delivery_limit = limit;
            }
            Ok(c)
        })
        .collect()
}

async fn topology(amqp_url: &str, file: &FileConfig, action: TopologyAction) -> Result<ExitCode> {
    let (names, apply) = match &action {
        TopologyAction::Apply { capabilities } => (capabilities, true),
        TopologyAction::Show { capabilities } => (capabilities, false),
    };
    let topology = Topology::for_capabilities(&capabilities(file, names)?);
    let conn = broker_topology::connect(amqp_url, "chit-cli").await?;
    if apply {
        topology.apply(&conn).await?;
        println!(
            "topology applied: {} exchanges, {} queues, {} bindings",
            topology.exchanges.len(),
            topology.queues.len(),
            topology.bindings.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let report = topology.inspect(&conn).await?;
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

fn task_spec(args: &PublishArgs, payload: &Value) -> Result<TaskSpec, producer::PublishError> {
    let ct = if args.msgpack {
        ContentType::MsgPack
    } else {
        ContentType::Json
    };
    let mut spec = TaskSpec::new(&args.task_type, payload, ct)?;
    spec.envelope.max_attempts = args.max_attempts;
    spec.envelope.backoff_ms = args.backoff_ms;
    spec.envelope.timeout_ms = args.timeout_secs.map(|s| (s * 1000.0) as u64);
    Ok(spec)
}

async fn publish(amqp_url: &str, args: PublishArgs) -> Result<ExitCode> {
    let mut config = ProducerConfig::new(amqp_url);
    config.publish_deadline = Duration::from_secs(args.deadline_secs);
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

async fn publish_jsonl(
    producer: &Producer,
    args: &PublishArgs,
    path: &PathBuf,
) -> Result<ExitCode> {
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

fn worker_config(amqp_url: &str, file: &FileConfig, args: &WorkerArgs) -> Result<WorkerConfig> {
    let mut specs: Vec<String> = args.capabilities.clone();
    if specs.is_empty() {
        specs = file
            .capabilities
            .iter()
            .map(|c| match &c.executor {
                Some(e) => format!("{}={e}", c.name),
                None => c.name.clone(),
            })
            .collect();
    }
    let mut caps = Vec::new();
    for spec in &specs {
        let mut cap = CapabilityConfig::parse(spec);
        let defaults = RetryPolicy::default();
        let f = file.capability(&cap.name);
        cap.retry = RetryPolicy {
            max_attempts: args
                .max_attempts
                .or(f.and_then(|f| f.max_attempts))
                .unwrap_or(defaults.max_attempts),
            initial_backoff_ms: args
                .backoff_ms
                .or(f.and_then(|f| f.initial_backoff_ms))
                .unwrap_or(defaults.initial_backoff_ms),
            max_backoff_ms: f
                .and_then(|f| f.max_backoff_ms)
                .unwrap_or(defaults.max_backoff_ms),
        };
        if let Some(limit) = f.and_then(|f| f.delivery_limit) {
            cap.delivery_limit = limit;
        }
        if let Some(exec) = f
            .and_then(|f| f.executor.clone())
            .filter(|_| !spec.contains('='))
        {
            cap.executor = exec;
        }
        cap.timeout = args
            .timeout_secs
            .or(f.and_then(|f| f.timeout_secs))
            .map(Duration::from_secs_f64);
        caps.push(cap);
    }
    let mut config = WorkerConfig::new(amqp_url, caps);
    if let Some(c) = args.concurrency.or(file.worker.concurrency) {
        config.concurrency = c;
    }
    config.prefetch = args
        .prefetch
        .or(file.worker.prefetch)
        .unwrap_or_else(|| (config.concurrency * 2).clamp(1, u16::MAX as usize) as u16);
    if let Some(id) = args.worker_id.clone().or(file.worker.worker_id.clone()) {
        config.worker_id = id;
    }
    if let Some(d) = args.drain_timeout.or(file.worker.drain_timeout_secs) {
        config.drain_timeout = Duration::from_secs(d);
    }
    config.kill_grace = Duration::from_secs_f64(args.kill_grace_secs);
    if let Some(addr) = &args.health {
        config.health_addr =
            Some(addr.parse().with_context(|| {
                format!("--health {addr:?} is not an address like 127.0.0.1:8701")
            })?);
    }
    if let Some(ms) = args.receipt_linger_ms {
        config.receipts.linger = Duration::from_secs_f64(ms / 1000.0);
    }
    Ok(config)
}

fn sink_config(
    amqp_url: &str,
    file: &FileConfig,
    args: &SinkArgs,
) -> Result<receipts_sink::SinkConfig> {
    let store = match args.store.clone().or(file.sink.store.clone()) {
        Some(s) => s,
        None => settings::default_store_url()?,
    };
    let mut config = receipts_sink::SinkConfig::new(amqp_url, store);
    if let Some(http) = args.http.clone().or(file.sink.http.clone()) {
        config.http_addr = http
            .parse()
            .with_context(|| format!("--http {http:?} is not an address like 127.0.0.1:8700"))?;
    }
    if let Some(n) = args.batch_size {
        config.batch_size = n;
    }
    if let Some(ms) = args.batch_wait_ms {
        config.batch_wait = Duration::from_millis(ms);
    }
    if let Some(p) = args.prefetch {
        config.prefetch = p;
    }
    Ok(config)
}

fn api_url(file: &FileConfig, api: &ApiArgs) -> String {
    api.url
        .clone()
        .or(file.sink.api.clone())
        .unwrap_or_else(|| "http://127.0.0.1:8700".into())
        .trim_end_matches('/')
        .to_owned()
}

async fn get_json(url: &str) -> Result<Value> {
    let resp = reqwest::get(url).await.with_context(|| {
        format!("cannot reach the sink's API at {url} (is `chit sink` or `chit dev` running?)")
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("the API at {url} did not answer JSON"))?;
    if !status.is_success() {
        let msg = body["error"]["message"].as_str().unwrap_or("unknown error");
        bail!("{msg} (HTTP {status})");
    }
    Ok(body)
}

async fn task(file: &FileConfig, action: TaskAction) -> Result<ExitCode> {
    match action {
        TaskAction::Show { task_id, json, api } => {
            let body = get_json(&format!("{}/v1/tasks/{task_id}", api_url(file, &api))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let view: receipts_sink::TaskView = serde_json::from_value(body)?;
                print!("{}", receipts_sink::render_tree(&view));
            }
        }
        TaskAction::List {
            state,
            task_type,
            limit,
            json,
            api,
        } => {
            let mut url = format!("{}/v1/tasks?limit={limit}", api_url(file, &api));
            if let Some(s) = state {
                url.push_str(&format!("&state={s}"));
            }
            if let Some(t) = task_type {
                url.push_str(&format!("&task_type={t}"));
            }
            let body = get_json(&url).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let page: receipts_sink::Page = serde_json::from_value(body)?;
                print!("{}", receipts_sink::render_task_table(&page.tasks));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn dlq(amqp_url: &str, action: DlqAction) -> Result<ExitCode> {
    let producer = Producer::new(ProducerConfig::new(amqp_url));
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

async fn dev(amqp_url: &str, file: &FileConfig, args: DevArgs) -> Result<ExitCode> {
    let store = match args.store.clone() {
        Some(s) => s,
        None => settings::default_store_url()?,
    };
    let conn = broker_topology::connect(amqp_url, "chit-dev").await.context(
        "chit dev needs a local RabbitMQ: run deploy/local/run.sh, which installs and starts one",
    )?;
    Topology::for_capabilities(&[Capability::new("command.execute")?])
        .apply(&conn)
        .await?;
    drop(conn);
    let mut sink = receipts_sink::SinkConfig::new(amqp_url, store.clone());
    sink.http_addr = args
        .http
        .parse()
        .with_context(|| format!("--http {:?}", args.http))?;
    let mut wconf = worker_config(
        amqp_url,
        file,
        &WorkerArgs {
            capabilities: vec!["command.execute".into()],
            concurrency: Some(args.concurrency),
            prefetch: None,
            worker_id: None,
            drain_timeout: Some(10),
            max_attempts: None,
            backoff_ms: None,
            timeout_secs: None,
            kill_grace_secs: 5.0,
            receipt_linger_ms: None,
            health: None,
        },
    )?;
    wconf.worker_id = format!("dev-{}", std::process::id());
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut rx1 = stop_tx.subscribe();
    let mut rx2 = stop_tx.subscribe();
    let sink_task = tokio::spawn(receipts_sink::run(sink, async move {
        let _ = rx1.recv().await;
    }));
    let registry = Registry::builtin(wconf.kill_grace);
    let worker_task = tokio::spawn(worker::run(wconf, registry, async move {
        let _ = rx2.recv().await;
    }));
    let api = format!("http://{}", args.http);
    println!(
        "\nchit dev is running: a command.execute worker and a receipts sink ({store}, API {api}).\n\
         In another terminal, try:\n\n  \
         id=$(chit publish command.execute --payload '{{\"command\": \"echo hello from chit\", \"output_path\": \"/tmp/chit-hello.json\"}}')\n  \
         chit task show $id --api {api}\n  \
         chit task list --api {api}\n\n\
         Stop with ctrl-c.\n"
    );
    stop_signal().await;
    let _ = stop_tx.send(());
    let (s, w) = tokio::join!(sink_task, worker_task);
    s??;
    w??;
    Ok(ExitCode::SUCCESS)
}
