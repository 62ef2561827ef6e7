//! Executors from the config file: `[executor.NAME] kind = ...` with the
//! kind's options, capabilities mapped to them, flags over the file,
//! unknown keys refused by name, and `/readyz` following each executor's
//! periodic health check. Real worker processes on a real broker.

mod executor_support;
mod support;

use executor_support::{Rig, assert_refused, get_json, readyz_until, refuses_to_start, success};
use serde_json::json;
use support::{chit, free_port};

/// Two executors of kind `command` with different policies, each serving
/// its own capability.
const TWO_POLICIES: &str = r#"
[executor.open]
kind = "command"

[executor.locked]
kind = "command"
allow = ["echo"]

[[capability]]
name = "open-tasks"
executor = "open"

[[capability]]
name = "locked-tasks"
executor = "locked"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn two_capabilities_share_the_command_kind_with_different_policies() {
    let rig = Rig::new(&["open-tasks", "locked-tasks"]).await;
    let config = rig.config(TWO_POLICIES);
    // No --capability: the file's capabilities, each with its executor.
    let _w = rig.worker(&config, &[]);
    let date = json!({"command": "date", "args": ["+%Y"]});

    let open = rig.run("open-tasks", &date, 1).await;
    assert_eq!(success(&open)["exit_code"], 0);

    let locked = rig.run("locked-tasks", &date, 1).await;
    let body = assert_refused(&locked, "allow");
    assert_eq!(body["executor"], "locked");
    assert!(body["error"].as_str().unwrap().contains("date"), "{body:#}");

    let echo = json!({"command": "echo", "args": ["allowed"]});
    assert_eq!(
        success(&rig.run("locked-tasks", &echo, 1).await)["exit_code"],
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capability_flag_overrides_the_files_executor() {
    let rig = Rig::new(&["locked-tasks"]).await;
    let config = rig.config(TWO_POLICIES);
    let _w = rig.worker(&config, &["--capability", "locked-tasks=open"]);
    let date = json!({"command": "date", "args": ["+%Y"]});
    assert_eq!(
        success(&rig.run("locked-tasks", &date, 1).await)["exit_code"],
        0
    );
}

#[test]
fn an_unknown_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[executor.build]\nkind = \"command\"\ncolour = \"red\"\n",
            &["executor build", "colour"][..],
        ),
        (
            "[executor.build]\nkind = \"command\"\n[executor.build.limits]\ncpu = 3\n",
            &["executor build", "limits", "cpu"][..],
        ),
        (
            "[executor.quiet]\nkind = \"noop\"\nspeed = 1\n",
            &["executor quiet", "speed"][..],
        ),
        (
            "[executor.build]\nkind = \"teleport\"\n",
            &["teleport", "known kinds", "command"][..],
        ),
        (
            "[executor.build]\nallow = []\n",
            &["[executor.build]", "kind"][..],
        ),
    ];
    for (i, (text, words)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("chit-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut cmd = chit();
        cmd.args(["worker", "--config"])
            .arg(&path)
            .args(["--capability", "noop"]);
        let stderr = refuses_to_start(cmd);
        for word in words {
            assert!(stderr.contains(word), "{word:?} not in: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_reports_an_executor_that_turns_unhealthy_and_recovers() {
    let rig = Rig::new(&["tool-tasks"]).await;
    // The allow list names a program by path; the health check finds it gone.
    let tool = rig.dir.path().join("tool");
    std::fs::copy("/bin/echo", &tool).unwrap();
    let config = rig.config(&format!(
        "[executor.tool]\nkind = \"command\"\nallow = [{:?}]\n",
        tool.to_str().unwrap()
    ));
    let port = free_port();
    let _w = rig.worker(
        &config,
        &[
            "--capability",
            "tool-tasks=tool",
            "--health",
            &format!("127.0.0.1:{port}"),
            "--health-interval-secs",
            "0.2",
        ],
    );
    let tool_entry = |b: &serde_json::Value| {
        b["executors"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["name"] == "tool").cloned())
            .unwrap_or_default()
    };
    let (status, body) = readyz_until(port, "a ready worker", |s, _| s == 200).await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true);
    assert_eq!(body["broker"]["state"], "connected");
    let entry = tool_entry(&body);
    assert_eq!(entry["kind"], "command");
    assert_eq!(entry["healthy"], true);
    assert!(entry["last_checked"].is_string(), "{body:#}");

    std::fs::remove_file(&tool).unwrap();
    let (status, body) = readyz_until(port, "the missing tool reported", |s, _| s == 503).await;
    assert_eq!(status, 503);
    assert_eq!(body["ready"], false);
    let entry = tool_entry(&body);
    assert_eq!(entry["healthy"], false, "{body:#}");
    let detail = entry["detail"].as_str().unwrap();
    assert!(detail.contains(tool.to_str().unwrap()), "{detail}");
    // The broker link is fine, and /healthz says only that.
    assert_eq!(body["broker"]["healthy"], true);
    let (healthz, _) = get_json(&format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthz, 200);

    std::fs::copy("/bin/echo", &tool).unwrap();
    readyz_until(port, "the tool back", |s, b| {
        s == 200 && tool_entry(b)["healthy"] == true
    })
    .await;
}
