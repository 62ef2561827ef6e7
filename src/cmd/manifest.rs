//! `chit manifest`: what a worker started with the same config file (and
//! `--capability` flags) would serve, as YAML (the default) or JSON, built
//! the way `chit worker` builds it, so a configuration the worker would
//! refuse is refused here too:
//!
//! - `chit_version` and `config_file`;
//! - `capabilities`: each task type's queue, executor and kind, retry
//!   policy, delivery limit, time limit, and payload schema (the config
//!   file's, else the built-in one of that task type, else none) with where
//!   it came from;
//! - `executors`: each executor's kind, what the kind does, where it is
//!   defined, its options, the built-in schema its kind checks payloads
//!   against, and the capabilities it serves.
//!
//! Options are shown with secrets hidden: the password of a URL (a `sql`
//! executor's `url`), URL query parameters and option keys named like a
//! password, secret, token or credential read `***`.
//!
//! JSON and YAML are written from the same values; the YAML writer is
//! `yaml` (why not a crate: see there).

mod yaml;

use crate::settings::{SchemaSource, Settings, WorkerSettings};
use anyhow::{Context, Result};
use broker_topology::{PayloadSchema, names};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::process::ExitCode;
use worker::executors::kinds;

#[derive(Args)]
pub struct ManifestArgs {
    /// Task type to describe, optionally `TYPE=EXECUTOR` (repeatable), as
    /// for `chit worker` [default: the config file's capabilities]
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,
}

/// How the manifest is printed.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

/// What a hidden secret reads.
const HIDDEN: &str = "***";

/// The built-in payload schema each kind checks payloads against, by kind;
/// `None` for a kind whose payloads are the program's business. A test
/// keeps it in step with the kind table.
const KIND_SCHEMAS: &[(&str, Option<&str>)] = &[
    ("command", Some("command.execute")),
    ("noop", Some("noop")),
    ("exec", None),
    ("http", Some("http.request")),
    ("file.read", Some("file.read")),
    ("file.write", Some("file.write")),
    ("file.edit", Some("file.edit")),
    ("file.grep", Some("file.grep")),
    ("file.find", Some("file.find")),
    ("file.list", Some("file.list")),
    ("sql", Some("sql.query")),
];

/// The manifest, its fields in the order they are printed.
#[derive(Debug, Serialize)]
struct Manifest {
    chit_version: Value,
    config_file: Value,
    capabilities: Value,
    executors: Value,
}

impl Manifest {
    fn yaml(&self) -> String {
        yaml::document(&[
            ("chit_version", &self.chit_version),
            ("config_file", &self.config_file),
            ("capabilities", &self.capabilities),
            ("executors", &self.executors),
        ])
    }
}

/// Prints the manifest.
pub async fn run(settings: &Settings, args: ManifestArgs) -> Result<ExitCode> {
    let manifest = manifest(settings, &args.capabilities)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&manifest)?),
        Format::Yaml => print!("{}", manifest.yaml()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The manifest of a worker serving `capabilities` (else the file's).
fn manifest(settings: &Settings, capabilities: &[String]) -> Result<Manifest> {
    let config = settings.worker_config(&WorkerSettings {
        capabilities: capabilities.to_vec(),
        ..WorkerSettings::default()
    })?;
    let registry = settings.executor_registry(config.kill_grace)?;
    let configured = settings.capability_schemas()?;
    let mut caps = Vec::new();
    for cap in &config.capabilities {
        names::validate_capability(&cap.name)?;
        let executor = registry.get(&cap.executor)?;
        let (source, schema) = match configured.get(&cap.name) {
            Some(c) => {
                let source = match &c.source {
                    SchemaSource::File(path) => json!({"file": path.display().to_string()}),
                    SchemaSource::Inline => json!("inline"),
                };
                (source, Some(c.schema.schema().clone()))
            }
            None => match PayloadSchema::builtin(&cap.name) {
                Some(s) => (json!("built-in"), Some(s.schema().clone())),
                None => (Value::Null, None),
            },
        };
        caps.push(json!({
            "name": cap.name,
            "queue": names::task_queue(&cap.name),
            "executor": cap.executor,
            "kind": executor.kind(),
            "retry": {
                "max_attempts": cap.retry.max_attempts,
                "initial_backoff_ms": cap.retry.initial_backoff_ms,
                "max_backoff_ms": cap.retry.max_backoff_ms,
            },
            "delivery_limit": cap.delivery_limit,
            "timeout_secs": cap.timeout.map(|t| t.as_secs_f64()),
            "schema_source": source,
            "schema": schema,
        }));
    }
    let mut executors = Vec::new();
    for executor in registry.executors() {
        let name = executor.name();
        let kind = executor.kind();
        let (defined_in, options) = match settings.file.executors.get(name) {
            Some(table) => {
                let mut options = serde_json::to_value(table)
                    .with_context(|| format!("config file: [executor.{name}] is not plain data"))?;
                if let Some(o) = options.as_object_mut() {
                    o.remove("kind");
                }
                redact(&mut options);
                ("config file", options)
            }
            None => ("built-in", Value::Object(Map::new())),
        };
        let used_by: Vec<&str> = config
            .capabilities
            .iter()
            .filter(|c| c.executor == name)
            .map(|c| c.name.as_str())
            .collect();
        executors.push(json!({
            "name": name,
            "kind": kind,
            "summary": kinds::KINDS.iter().find(|k| k.name == kind).map(|k| k.summary),
            "defined_in": defined_in,
            "options": options,
            "payload_schema": kind_schema(kind),
            "used_by": used_by,
        }));
    }
    Ok(Manifest {
        chit_version: json!(env!("CARGO_PKG_VERSION")),
        config_file: json!(settings.file.path.as_ref().map(|p| p.display().to_string())),
        capabilities: Value::Array(caps),
        executors: Value::Array(executors),
    })
}

/// The built-in schema a kind checks payloads against, by name.
fn kind_schema(kind: &str) -> Option<&'static str> {
    KIND_SCHEMAS
        .iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, s)| *s)
}

/// Hides secrets in executor options, in place.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_name(key) && !v.is_null() {
                    *v = Value::String(HIDDEN.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some(hidden) = redact_url(s) {
                *s = hidden;
            }
        }
        _ => {}
    }
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "api_key",
        "apikey",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// `text` with the password of its `scheme://user:password@host` part and
/// the values of secret-named query parameters hidden; `None` when it is
/// not a URL or hides nothing.
fn redact_url(text: &str) -> Option<String> {
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = text[..start].to_owned();
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{HIDDEN}")),
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((k, _)) if is_secret_name(k) => format!("{k}={HIDDEN}"),
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    (out != text).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::FileConfig;

    #[test]
    fn every_kind_says_which_built_in_schema_it_checks() {
        for kind in kinds::names() {
            let row = KIND_SCHEMAS.iter().find(|(k, _)| *k == kind);
            let (_, schema) = row.unwrap_or_else(|| panic!("kind {kind} is not in KIND_SCHEMAS"));
            if let Some(schema) = schema {
                assert!(PayloadSchema::builtin(schema).is_some(), "{kind}: {schema}");
            }
        }
        assert_eq!(kind_schema("command"), Some("command.execute"));
        assert_eq!(kind_schema("exec"), None);
    }

    #[test]
    fn a_url_password_and_secret_parameters_are_hidden() {
        let cases = [
            (
                "postgres://reader:s3cret@db.internal:5432/reports",
                Some("postgres://reader:***@db.internal:5432/reports"),
            ),
            (
                "postgres://reader@db/reports?sslpassword=x&application_name=chit",
                Some("postgres://reader@db/reports?sslpassword=***&application_name=chit"),
            ),
            (
                "https://u:p@h?token=t#frag",
                Some("https://u:***@h?token=***#frag"),
            ),
            ("postgres://reader@db/reports", None),
            ("sqlite:///srv/data.db", None),
            ("make", None),
        ];
        for (url, hidden) in cases {
            assert_eq!(redact_url(url).as_deref(), hidden, "{url}");
        }
        let mut options = json!({
            "url": "postgres://a:b@h/d",
            "read_only": true,
            "auth": {"api_token": "t", "user": "u"},
            "allow": ["make", "git"],
        });
        redact(&mut options);
        assert_eq!(
            options,
            json!({
                "url": "postgres://a:***@h/d",
                "read_only": true,
                "auth": {"api_token": "***", "user": "u"},
                "allow": ["make", "git"],
            })
        );
    }

    /// In a runtime: a `sql` executor makes its (lazy) pool when built.
    #[tokio::test]
    async fn the_manifest_lists_capabilities_with_their_schemas_and_every_executor() {
        let file: FileConfig = toml::from_str(
            "[executor.reports]\nkind = \"sql\"\nurl = \"postgres://reader:pw@db/reports\"\n\
             [[capability]]\nname = \"report\"\nexecutor = \"reports\"\nmax_attempts = 2\n\
             timeout_secs = 1.5\nschema = { type = \"object\", required = [\"sql\"] }\n\
             [[capability]]\nname = \"command.execute\"\n\
             [[capability]]\nname = \"mine\"\nexecutor = \"noop\"\n",
        )
        .unwrap();
        let m = manifest(&Settings::new(None, file), &[]).unwrap();
        let text = m.yaml();
        assert!(text.starts_with("chit_version: "), "{text}");
        let m = serde_json::to_value(&m).unwrap();
        assert_eq!(m["chit_version"], env!("CARGO_PKG_VERSION"));
        let caps = m["capabilities"].as_array().unwrap();
        let names: Vec<&str> = caps.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["report", "command.execute", "mine"]);
        let report = &caps[0];
        assert_eq!(report["kind"], "sql");
        assert_eq!(report["retry"]["max_attempts"], 2);
        assert_eq!(report["timeout_secs"], 1.5);
        assert_eq!(report["schema_source"], "inline");
        assert_eq!(report["schema"]["required"], json!(["sql"]));
        assert_eq!(caps[1]["schema_source"], "built-in");
        assert_eq!(caps[1]["schema"]["required"], json!(["command"]));
        assert_eq!(caps[2]["schema"], Value::Null);
        let executors = m["executors"].as_array().unwrap();
        let reports = executors.iter().find(|e| e["name"] == "reports").unwrap();
        assert_eq!(reports["defined_in"], "config file");
        assert_eq!(
            reports["options"]["url"],
            "postgres://reader:***@db/reports"
        );
        assert_eq!(reports["payload_schema"], "sql.query");
        assert_eq!(reports["used_by"], json!(["report"]));
        let command = executors
            .iter()
            .find(|e| e["name"] == "command.execute")
            .unwrap();
        assert_eq!(command["defined_in"], "built-in");
        assert_eq!(command["kind"], "command");
        assert!(!m.to_string().contains(":pw@"), "{m:#}");
    }
}
