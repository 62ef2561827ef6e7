//! Payload schemas from the config file. A `[[capability]]` entry may name
//! the JSON Schema its payloads must meet, as a file (relative to the config
//! file's directory) or inline:
//!
//! ```toml
//! [[capability]]
//! name = "resize"
//! schema = "schemas/resize.json"
//!
//! [[capability]]
//! name = "ping"
//! schema = { type = "object", required = ["host"] }
//! ```
//!
//! Each is read and compiled once: by the worker at start (every schema of
//! the file, whether or not it serves the capability, so a broken one is
//! found before it matters) and by `chit publish` for the task type it
//! publishes. A file that cannot be read, is not JSON or is not a valid JSON
//! Schema is an error naming the config file, the capability and the file.

use super::Settings;
use anyhow::{Context, Result, bail};
use broker_topology::PayloadSchema;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use worker::CapabilityConfig;

/// Where a capability's payload schema was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaSource {
    /// A JSON file, as resolved against the config file's directory.
    File(PathBuf),
    /// A table in the config file itself.
    Inline,
}

/// A capability's payload schema from the config file, compiled.
#[derive(Debug, Clone)]
pub struct ConfiguredSchema {
    /// Where it was written.
    pub source: SchemaSource,
    /// The compiled schema.
    pub schema: Arc<PayloadSchema>,
}

impl Settings {
    /// The config file's payload schema of `capability`, compiled; `None`
    /// when its `[[capability]]` entry has none (or there is no entry).
    pub fn capability_schema(&self, capability: &str) -> Result<Option<ConfiguredSchema>> {
        let Some(entry) = self.file.capability(capability) else {
            return Ok(None);
        };
        let Some(value) = &entry.schema else {
            return Ok(None);
        };
        let file = match &self.file.path {
            Some(p) => format!("config file {}", p.display()),
            None => "config file".to_owned(),
        };
        load(value, capability, self.file.path.as_deref())
            .map(Some)
            .with_context(|| format!("{file}: [[capability]] {capability}"))
    }

    /// Every payload schema of the config file, compiled, by capability.
    pub fn capability_schemas(&self) -> Result<BTreeMap<String, ConfiguredSchema>> {
        let mut schemas = BTreeMap::new();
        for entry in &self.file.capabilities {
            if let Some(s) = self.capability_schema(&entry.name)? {
                schemas.entry(entry.name.clone()).or_insert(s);
            }
        }
        Ok(schemas)
    }

    /// Gives each capability its schema from the config file. Every schema
    /// of the file is compiled, so a worker refuses to start with a broken
    /// one even if it serves other capabilities today.
    pub(super) fn attach_schemas(&self, caps: &mut [CapabilityConfig]) -> Result<()> {
        let schemas = self.capability_schemas()?;
        for cap in caps {
            cap.schema = schemas.get(&cap.name).map(|s| s.schema.clone());
        }
        Ok(())
    }
}

/// Reads and compiles one `schema = ...` value of `capability`.
fn load(
    value: &toml::Value,
    capability: &str,
    config_path: Option<&Path>,
) -> Result<ConfiguredSchema> {
    match value {
        toml::Value::String(path) => {
            let path = resolve(Path::new(path), config_path);
            let shown = path.display();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading schema file {shown}"))?;
            let json = serde_json::from_str(&text)
                .with_context(|| format!("schema file {shown} is not JSON"))?;
            let schema = PayloadSchema::compile(capability, json)
                .with_context(|| format!("schema file {shown}"))?;
            Ok(ConfiguredSchema {
                source: SchemaSource::File(path),
                schema: Arc::new(schema),
            })
        }
        toml::Value::Table(table) => {
            let json = serde_json::to_value(table).context("inline schema is not plain data")?;
            let schema = PayloadSchema::compile(capability, json).context("inline schema")?;
            Ok(ConfiguredSchema {
                source: SchemaSource::Inline,
                schema: Arc::new(schema),
            })
        }
        other => bail!(
            "`schema` must be the path of a JSON Schema file or an inline table, not a {}",
            other.type_str()
        ),
    }
}

/// `path` as written, or beneath the config file's directory when relative.
fn resolve(path: &Path, config_path: Option<&Path>) -> PathBuf {
    match config_path.and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{FileConfig, WorkerSettings};
    use serde_json::json;

    /// Settings from `text`, as if read from `dir/chit.toml`.
    fn settings(dir: &Path, text: &str) -> Settings {
        let mut file: FileConfig = toml::from_str(text).expect("a valid file");
        file.path = Some(dir.join("chit.toml"));
        Settings::new(None, file)
    }

    #[test]
    fn a_file_schema_is_read_beside_the_config_file_and_an_inline_one_from_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(
            dir.path().join("schemas/resize.json"),
            r#"{"type": "object", "required": ["width"]}"#,
        )
        .unwrap();
        let s = settings(
            dir.path(),
            "[[capability]]\nname = \"resize\"\nschema = \"schemas/resize.json\"\n\
             [[capability]]\nname = \"ping\"\nschema = { type = \"object\", required = [\"host\"] }\n\
             [[capability]]\nname = \"free\"\n",
        );
        let resize = s.capability_schema("resize").unwrap().unwrap();
        assert_eq!(
            resize.source,
            SchemaSource::File(dir.path().join("schemas/resize.json"))
        );
        assert!(resize.schema.check(&json!({"width": 3})).is_ok());
        let err = resize.schema.check(&json!({})).unwrap_err().to_string();
        assert!(err.contains("\"width\" is a required property"), "{err}");
        let ping = s.capability_schema("ping").unwrap().unwrap();
        assert_eq!(ping.source, SchemaSource::Inline);
        assert!(ping.schema.check(&json!({"host": "a"})).is_ok());
        assert!(ping.schema.check(&json!({"port": 1})).is_err());
        assert!(s.capability_schema("free").unwrap().is_none());
        assert!(s.capability_schema("unknown").unwrap().is_none());

        // The worker's capabilities carry theirs.
        let config = s
            .worker_config(&WorkerSettings {
                capabilities: vec!["resize".into(), "free".into()],
                ..WorkerSettings::default()
            })
            .unwrap();
        assert_eq!(
            config.capabilities[0].schema.as_ref().unwrap().capability(),
            "resize"
        );
        assert!(config.capabilities[1].schema.is_none());
    }

    #[test]
    fn a_broken_schema_is_an_error_naming_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("not-a-schema.json"), r#"{"type": 12}"#).unwrap();
        std::fs::write(dir.path().join("not-json.json"), "{type: object").unwrap();
        let cases = [
            (
                "\"not-a-schema.json\"",
                &["not-a-schema.json", "not a valid JSON Schema"][..],
            ),
            ("\"not-json.json\"", &["not-json.json", "is not JSON"][..]),
            (
                "\"missing.json\"",
                &["reading schema file", "missing.json"][..],
            ),
            (
                "{ type = 12 }",
                &["inline schema", "not a valid JSON Schema"][..],
            ),
            ("3", &["`schema` must be", "integer"][..]),
        ];
        for (value, words) in cases {
            let s = settings(
                dir.path(),
                &format!("[[capability]]\nname = \"resize\"\nschema = {value}\n"),
            );
            let err = format!("{:#}", s.capability_schema("resize").unwrap_err());
            assert!(err.contains("chit.toml: [[capability]] resize"), "{err}");
            for word in words {
                assert!(err.contains(word), "{word:?} not in: {err}");
            }
            // A worker serving something else refuses it all the same.
            let given = WorkerSettings {
                capabilities: vec!["noop".into()],
                ..WorkerSettings::default()
            };
            assert!(s.worker_config(&given).is_err(), "{value}");
        }
    }
}
