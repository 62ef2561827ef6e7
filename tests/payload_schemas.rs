//! A capability's own payload schema from the config file, end to end:
//! `chit publish` refuses a payload that breaks it and enqueues nothing, the
//! worker refuses one another client published (`invalid_payload`, never
//! retried), a schema that is not one stops the worker at start, and `chit
//! manifest` shows capabilities, executors and schemas as JSON and YAML.

mod executor_support;
mod support;

use broker_topology::{PayloadSchema, ReceiptType, names};
use executor_support::{Rig, WAIT, final_failure, of_type, refuses_to_start, settled, success};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;
use support::{chit, queue_depth, wait_for};

/// The schema of `resize` payloads, as a user would write it.
fn resize_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["width"],
        "properties": {
            "width": {"type": "integer", "minimum": 1},
            "mode": {"enum": ["fit", "fill", "on", "off"]}
        },
        "additionalProperties": false
    })
}

/// A config file whose `resize` capability (run by `noop`, retried up to 5
/// times) names `schemas/resize.json`, relative to the file.
fn resize_config(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::write(dir.join("schemas/resize.json"), resize_schema().to_string()).unwrap();
    let path = dir.join("chit.toml");
    std::fs::write(
        &path,
        "[[capability]]\nname = \"resize\"\nexecutor = \"noop\"\nmax_attempts = 5\n\
         schema = \"schemas/resize.json\"\n",
    )
    .unwrap();
    path
}

fn publish(url: &str, config: &Path, payload: &str) -> Output {
    chit()
        .args(["publish", "resize", "--amqp-url", url, "--config"])
        .arg(config)
        .args(["--payload", payload])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_refuses_a_payload_breaking_the_capabilitys_schema_and_enqueues_nothing() {
    let rig = Rig::new(&["resize"]).await;
    let config = resize_config(rig.dir.path());
    let conn = rig.vhost.connect().await;
    let queue = names::task_queue("resize");

    for (payload, pointer) in [
        (json!({"width": 0}), "/width"),
        (json!({"width": "wide"}), "/width"),
        (json!({"width": 3, "mode": "stretch"}), "/mode"),
        (json!({"height": 3}), "payload"),
    ] {
        let out = publish(&rig.vhost.url, &config, &payload.to_string());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{payload} was published");
        assert!(
            stderr.contains(&format!("invalid resize payload: {pointer}: ")),
            "{payload}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "printed a task id for {payload}");
    }
    // A JSON-lines file with one bad line publishes none of its lines.
    let lines = rig.dir.path().join("tasks.jsonl");
    std::fs::write(&lines, "{\"width\": 2}\n{\"width\": -1}\n").unwrap();
    let out = chit()
        .args([
            "publish",
            "resize",
            "--amqp-url",
            &rig.vhost.url,
            "--config",
        ])
        .arg(&config)
        .arg("--jsonl")
        .arg(&lines)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2: invalid resize payload: /width: "),
        "{stderr}"
    );
    assert_eq!(
        queue_depth(&conn, &queue).await,
        0,
        "something was enqueued"
    );

    let out = publish(&rig.vhost.url, &config, r#"{"width": 640, "mode": "on"}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!task_id.is_empty());
    wait_for("the valid task in its queue", WAIT, || {
        let (conn, queue) = (&conn, &queue);
        async move { (queue_depth(conn, queue).await == 1).then_some(()) }
    })
    .await;
}

/// Publishes `payload` to `resize` as a client that knows nothing of chit
/// would, and returns the task id it chose.
async fn raw_publish(rig: &Rig, payload: &Value) -> String {
    let conn = rig.vhost.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let task_id = uuid::Uuid::new_v4().to_string();
    let mut headers = FieldTable::default();
    // Attempts to spare: a refusal must not use them.
    headers.insert("x-chit-max-attempts".into(), AMQPValue::LongLongInt(5));
    ch.basic_publish(
        names::TASK_EXCHANGE.into(),
        "resize".into(),
        BasicPublishOptions::default(),
        payload.to_string().as_bytes(),
        BasicProperties::default()
            .with_message_id(task_id.as_str().into())
            .with_content_type("application/json".into())
            .with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    task_id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_refuses_a_task_breaking_the_schema_as_invalid_payload_without_retrying() {
    let rig = Rig::new(&["resize"]).await;
    let config = resize_config(rig.dir.path());
    // No --capability: the file's, with its schema.
    let _w = rig.worker(&config, &[]);

    let bad = raw_publish(&rig, &json!({"width": 3, "mode": "stretch"})).await;
    let rs = rig.tap.wait_task(&bad, WAIT, settled).await;
    let body = final_failure(&rs);
    assert_eq!(body["reason"], "invalid_payload", "{body:#}");
    assert_eq!(body["retryable"], false, "{body:#}");
    assert_eq!(body["will_retry"], false, "{body:#}");
    assert_eq!(body["attempt"], 1, "{body:#}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("invalid resize payload: /mode: "),
        "{error}"
    );
    assert_eq!(body["violations"][0]["pointer"], "/mode", "{body:#}");
    let conn = rig.vhost.connect().await;
    let dead = names::dead_letter_queue("resize");
    wait_for("the refused task in the dead-letter queue", WAIT, || {
        let (conn, dead) = (&conn, &dead);
        async move { (queue_depth(conn, dead).await == 1).then_some(()) }
    })
    .await;

    // The same worker runs a payload that fits.
    let good = raw_publish(&rig, &json!({"width": 3, "mode": "fit"})).await;
    let rs = rig.tap.wait_task(&good, WAIT, settled).await;
    success(&rs);
    assert!(of_type(&rs, ReceiptType::Failure).is_empty(), "{rs:#?}");
}

#[test]
fn a_schema_that_is_not_a_json_schema_stops_the_worker_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.json"), r#"{"type": "widget"}"#).unwrap();
    std::fs::write(dir.path().join("not-json.json"), "{type: object").unwrap();
    for (file, why) in [
        ("broken.json", "is not a valid JSON Schema"),
        ("not-json.json", "is not JSON"),
        ("missing.json", "reading schema file"),
    ] {
        let config = dir.path().join("chit.toml");
        std::fs::write(
            &config,
            format!("[[capability]]\nname = \"resize\"\nschema = \"{file}\"\n"),
        )
        .unwrap();
        // It serves another capability: every schema of the file is checked.
        let mut cmd = chit();
        cmd.args(["worker", "--config"])
            .arg(&config)
            .args(["--capability", "noop"]);
        let stderr = refuses_to_start(cmd);
        let shown = dir.path().join(file);
        for word in ["[[capability]] resize", &shown.display().to_string(), why] {
            assert!(stderr.contains(word), "{word:?} not in: {stderr}");
        }
    }
}

fn manifest(config: &Path, format: &[&str]) -> String {
    let out = chit()
        .args(["manifest", "--config"])
        .arg(config)
        .args(format)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A YAML document as JSON, read by a YAML parser of its own.
fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => json!(b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
        Yaml::String(s) => json!(s),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_owned(), yaml_to_json(v)))
                .collect(),
        ),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

#[test]
fn manifest_shows_capabilities_executors_and_schemas_as_json_and_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let resize = resize_config(dir.path());
    let mut text = std::fs::read_to_string(&resize).unwrap();
    text.push_str(
        "timeout_secs = 90\n\
         [[capability]]\nname = \"ping\"\nexecutor = \"probe\"\n\
         schema = { type = \"object\", required = [\"host\"] }\n\
         [[capability]]\nname = \"command.execute\"\ninitial_backoff_ms = 250\n\
         [executor.probe]\nkind = \"command\"\nallow = [\"ping\"]\n\
         [executor.reports]\nkind = \"sql\"\nurl = \"postgres://reader:hunter2@db.invalid/reports\"\n",
    );
    let config = dir.path().join("full.toml");
    std::fs::write(&config, text).unwrap();

    let json_text = manifest(&config, &["--format", "json"]);
    let m: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(m["chit_version"], env!("CARGO_PKG_VERSION"));
    let caps = m["capabilities"].as_array().unwrap();
    let cap = |name: &str| {
        caps.iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no capability {name}: {m:#}"))
    };
    let resize = cap("resize");
    assert_eq!(resize["executor"], "noop");
    assert_eq!(resize["kind"], "noop");
    assert_eq!(resize["retry"]["max_attempts"], 5);
    assert_eq!(resize["timeout_secs"], 90.0);
    assert_eq!(resize["schema"], resize_schema());
    let source = resize["schema_source"]["file"].as_str().unwrap();
    assert!(source.ends_with("schemas/resize.json"), "{source}");
    let ping = cap("ping");
    assert_eq!(
        (&ping["executor"], &ping["kind"]),
        (&json!("probe"), &json!("command"))
    );
    assert_eq!(ping["schema_source"], "inline");
    assert_eq!(
        ping["schema"],
        json!({"type": "object", "required": ["host"]})
    );
    let command = cap("command.execute");
    assert_eq!(command["retry"]["initial_backoff_ms"], 250);
    assert_eq!(command["schema_source"], "built-in");
    let builtin = PayloadSchema::builtin("command.execute").unwrap();
    assert_eq!(&command["schema"], builtin.schema());

    let executors = m["executors"].as_array().unwrap();
    let executor = |name: &str| {
        executors
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no executor {name}: {m:#}"))
    };
    let probe = executor("probe");
    assert_eq!(probe["kind"], "command");
    assert_eq!(probe["options"]["allow"], json!(["ping"]));
    assert_eq!(probe["used_by"], json!(["ping"]));
    assert_eq!(probe["payload_schema"], "command.execute");
    let reports = executor("reports");
    assert_eq!(reports["kind"], "sql");
    assert_eq!(
        reports["options"]["url"],
        "postgres://reader:***@db.invalid/reports"
    );
    assert_eq!(reports["used_by"], json!([]));
    assert_eq!(executor("noop")["defined_in"], "built-in");
    assert!(
        !json_text.contains("hunter2"),
        "a password shown: {json_text}"
    );

    // YAML is the default, and says the same.
    let yaml = manifest(&config, &[]);
    assert!(!yaml.contains("hunter2"), "a password shown: {yaml}");
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).expect("the manifest is YAML");
    assert_eq!(docs.len(), 1);
    assert_eq!(yaml_to_json(&docs[0]), m, "{yaml}");
}
