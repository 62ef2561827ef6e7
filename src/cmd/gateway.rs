//! `chit gateway`: the HTTP gateway (`POST /v1/tasks`, the task and receipt
//! queries, the dashboard) until SIGTERM or ctrl-c; and `chit gateway keys
//! add|list|revoke`, its API keys in the store.

use crate::settings::{GatewaySettings, Settings, duration_flag};
use crate::signal::stop_signal;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use receipts_sink::Store;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    action: Option<GatewayAction>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum GatewayAction {
    /// The gateway's API keys: add, list, revoke.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a key and print it, once (it is stored hashed), with its id.
    Add {
        /// A name for people and logs, e.g. the client's.
        #[arg(long)]
        name: String,
        /// What the key may do (repeatable): a task type (command.execute),
        /// a prefix (command.*), every task type (*), or admin (replay and
        /// purge dead letters).
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Print {"key_id", "key", "name", "scopes"} as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List the keys: id, name, scopes, when made and revoked (never the
    /// secret).
    List {
        /// Print JSON, one array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Revoke a key at once, for every gateway on the store.
    Revoke {
        /// The key's id (the part after chit_, as `keys list` shows it).
        key_id: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Args)]
struct StoreArg {
    /// The store the gateway uses: sqlite://PATH or postgres://...
    /// [default: the config file's `[gateway] store`, else `[sink] store`,
    /// else SQLite in chit's data directory]
    #[arg(long, env = "CHIT_STORE")]
    store: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on: HOST:PORT, :PORT or HOST [default: 127.0.0.1:8800]
    #[arg(long, env = "CHIT_GATEWAY_HTTP")]
    http: Option<String>,
    #[command(flatten)]
    store: StoreArg,
    /// Largest request body in bytes; larger gets 413 [default: 1048576]
    #[arg(long, env = "CHIT_GATEWAY_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// The RabbitMQ management API, for the dashboard's queue figures
    /// [default: http://AMQP-HOST:15672, with the AMQP URL's credentials]
    #[arg(long, env = "CHIT_MANAGEMENT_URL")]
    management_url: Option<String>,
    /// Longest `?wait=` of POST /v1/tasks: a whole number and a unit
    /// (500ms, 30s, 2m) [default: 60s]
    #[arg(long, value_parser = duration_flag, value_name = "DURATION")]
    max_wait: Option<Duration>,
    /// How long a publish may wait for the broker before the request gets
    /// 503 (or 429 while the broker blocks publishing) [default: 5s]
    #[arg(long, value_parser = duration_flag, value_name = "DURATION")]
    publish_deadline: Option<Duration>,
}

impl GatewayArgs {
    /// True for `chit gateway` itself, which runs until stopped.
    pub fn is_server(&self) -> bool {
        self.action.is_none()
    }
}

/// Serves, or manages keys.
pub async fn run(settings: &Settings, args: GatewayArgs) -> Result<ExitCode> {
    match args.action {
        None => serve(settings, args.serve).await,
        Some(GatewayAction::Keys { action }) => keys(settings, action).await,
    }
}

async fn serve(settings: &Settings, args: ServeArgs) -> Result<ExitCode> {
    let config = settings.gateway_config(&GatewaySettings {
        store: args.store.store,
        http: args.http,
        max_body_bytes: args.max_body_bytes,
        max_wait: args.max_wait,
        publish_deadline: args.publish_deadline,
        management_url: args.management_url,
    })?;
    gateway::run(config, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn open_store(settings: &Settings, store: StoreArg) -> Result<Store> {
    let url = settings.gateway_store(store.store)?;
    Store::open(&url)
        .await
        .with_context(|| format!("opening the gateway's store {}", redact_store(&url)))
}

/// A store URL without its password, for messages.
fn redact_store(url: &str) -> String {
    broker_link::redact(url)
}

async fn keys(settings: &Settings, action: KeysAction) -> Result<ExitCode> {
    match action {
        KeysAction::Add {
            name,
            scopes,
            json,
            store,
        } => {
            let store = open_store(settings, store).await?;
            let key = gateway::keys::add(&store, &name, &scopes).await?;
            store.close().await;
            let r = &key.record;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "key_id": r.key_id, "key": key.key, "name": r.name, "scopes": r.scopes,
                    })
                );
            } else {
                println!("{}", key.key);
                eprintln!(
                    "key id {} ({}), scopes {}: keep the key; it is not shown again",
                    r.key_id,
                    r.name,
                    r.scopes.join(" ")
                );
            }
        }
        KeysAction::List { json, store } => {
            let store = open_store(settings, store).await?;
            let keys = gateway::keys::list(&store).await?;
            store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                println!(
                    "no API keys (make one with chit gateway keys add --name NAME --scope SCOPE)"
                );
            } else {
                print!("{}", key_table(&keys));
            }
        }
        KeysAction::Revoke { key_id, store } => {
            let store = open_store(settings, store).await?;
            let (key, before) = gateway::keys::revoke(&store, &key_id).await?;
            store.close().await;
            let at = key
                .revoked_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            if before {
                println!(
                    "key {} ({}) was already revoked at {at}",
                    key.key_id, key.name
                );
            } else {
                println!("key {} ({}) revoked at {at}", key.key_id, key.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The keys as a table, one a line.
fn key_table(keys: &[receipts_sink::store::ApiKeyRecord]) -> String {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|k| {
            [
                k.key_id.clone(),
                k.name.clone(),
                k.scopes.join(","),
                time(&k.created_at),
                k.revoked_at
                    .as_ref()
                    .map(time)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "SCOPES", "CREATED", "REVOKED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}
