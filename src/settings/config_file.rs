//! The config file (TOML, every field optional) and the directories chit
//! keeps it and its data in.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config file (TOML). Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the file was read from; `None` when there is none. Paths in
    /// the file (a capability's `schema`) are relative to its directory.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    pub amqp_url: Option<String>,
    /// TLS files for amqps:// (as `--tls-ca`, `--tls-cert`, `--tls-key`),
    /// relative to the file's directory.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `chit task show` links each trace id through this URL template,
    /// its `{trace_id}` replaced (as `CHIT_TRACE_URL`).
    pub trace_url: Option<String>,
    #[serde(default)]
    pub worker: WorkerFile,
    #[serde(default)]
    pub sink: SinkFile,
    #[serde(default)]
    pub gateway: GatewayFile,
    #[serde(default, rename = "capability")]
    pub capabilities: Vec<CapabilityFile>,
    /// `[executor.NAME]` tables: `kind` and the kind's options, read by
    /// the worker crate's kind table (see `executor_settings`).
    #[serde(default, rename = "executor")]
    pub executors: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub concurrency: Option<usize>,
    pub prefetch: Option<u16>,
    pub worker_id: Option<String>,
    pub drain_timeout_secs: Option<u64>,
    /// Seconds between two health checks of each executor.
    pub health_interval_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFile {
    pub store: Option<String>,
    pub group: Option<String>,
    /// How long finished tasks are kept, as `30d`.
    pub retain: Option<String>,
    pub http: Option<String>,
    pub api: Option<String>,
}

/// `[gateway]`: the HTTP gateway (`chit gateway`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Address to listen on.
    pub http: Option<String>,
    /// Its store; without it, `[sink] store`, else the default store.
    pub store: Option<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: Option<usize>,
    /// Longest `?wait=`, as `60s`.
    pub max_wait: Option<String>,
    /// How long a publish may wait for the broker, as `5s`.
    pub publish_deadline: Option<String>,
    /// The RabbitMQ management API's base URL.
    pub management_url: Option<String>,
}

/// A capability's settings in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityFile {
    pub name: String,
    pub executor: Option<String>,
    pub max_attempts: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub delivery_limit: Option<u32>,
    pub timeout_secs: Option<f64>,
    /// The payload schema: a JSON Schema file (relative to the config
    /// file's directory) or an inline table; read by `schema_settings`.
    pub schema: Option<toml::Value>,
}

impl FileConfig {
    /// Reads `path`, or the default file when it exists, or nothing.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let default = config_dir().join("chit.toml");
                if !default.exists() {
                    return Ok(FileConfig::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut file: FileConfig = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        file.path = Some(path);
        Ok(file)
    }

    /// The file's settings for a capability, if it has any.
    pub fn capability(&self, name: &str) -> Option<&CapabilityFile> {
        self.capabilities.iter().find(|c| c.name == name)
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$XDG_CONFIG_HOME/chit` or `~/.config/chit`.
pub fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"))
        .join("chit")
}

/// `$CHIT_DATA_DIR`, else `$XDG_DATA_HOME/chit`, else `~/.local/share/chit`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CHIT_DATA_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"))
        .join("chit")
}

/// The default receipt store: a SQLite file in the data directory.
pub fn default_store_url() -> Result<String> {
    let dir = data_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    Ok(format!("sqlite://{}", dir.join("receipts.db").display()))
}
