//! Metrics, dashboards and alerts (issue 17) as an operator meets them: a
//! real Prometheus scrapes a worker, a sink and RabbitMQ while tasks run,
//! and its API shows the counters move; `promtool` accepts the expositions,
//! the alert rules and their unit tests; every metric the Grafana dashboard
//! and the alerts query is one that chit or RabbitMQ exports.

mod observability_support;
mod support;

use observability_support::{
    Prometheus, Sink, Target, Worker, http_get, metric_names, observability_dir, publish,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use support::{Vhost, broker_authority, wait_for};

/// The port of RabbitMQ's Prometheus plugin (deploy/local/ensure-services.sh
/// enables it) on the test broker's host.
fn rabbitmq_prometheus() -> String {
    let authority = broker_authority();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h);
    format!("{host}:15692")
}

/// Runs `promtool ARGS`, feeding it `stdin`; its status and output.
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(observability_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be on PATH (run deploy/local/ensure-services.sh)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every PromQL expression of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = observability_dir().join("grafana/chit-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    walk(&dashboard, &mut queries);
    queries
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_a_worker_and_a_sink_and_sees_the_counters_move() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&vhost, dir.path(), None).await;
    let worker = Worker::start(&vhost, "command.execute", "metrics-w1").await;
    let rabbit = rabbitmq_prometheus();
    let prometheus = Prometheus::start(
        &[
            Target {
                job: "chit-worker",
                address: format!("127.0.0.1:{}", worker.health_port),
                path: "/metrics",
                interval: "1s",
            },
            Target {
                job: "chit-sink",
                address: sink.api(),
                path: "/metrics",
                interval: "1s",
            },
            Target {
                job: "rabbitmq",
                address: rabbit.clone(),
                path: "/metrics/per-object",
                interval: "5s",
            },
        ],
        &[observability_dir().join("alerts.yml")],
    )
    .await;
    for job in ["chit-worker", "chit-sink", "rabbitmq"] {
        prometheus
            .wait_value(&format!("up{{job=\"{job}\"}}"), 1.0)
            .await;
    }
    let task = r#"task_type="command.execute""#;
    // Every series is there before the first task, at zero.
    prometheus
        .wait_value(&format!("chit_worker_tasks_succeeded_total{{{task}}}"), 0.0)
        .await;
    prometheus
        .wait_value("chit_sink_receipts_stored_total", 0.0)
        .await;
    prometheus.wait_value("chit_sink_live_workers", 1.0).await;

    for _ in 0..5 {
        publish(&vhost, "command.execute", r#"{"command": "true"}"#, &[]);
    }
    // Fails twice: a retry, then a dead letter.
    for _ in 0..2 {
        publish(
            &vhost,
            "command.execute",
            r#"{"command": "exit 3"}"#,
            &["--max-attempts", "2", "--backoff-ms", "10"],
        );
    }
    for (metric, expected) in [
        ("chit_worker_tasks_started_total", 9.0),
        ("chit_worker_tasks_succeeded_total", 5.0),
        ("chit_worker_tasks_failed_total", 4.0),
        ("chit_worker_tasks_retried_total", 2.0),
        ("chit_worker_tasks_dead_lettered_total", 2.0),
        ("chit_worker_tasks_cancelled_total", 0.0),
        ("chit_worker_tasks_in_flight", 0.0),
        ("chit_worker_task_execution_seconds_count", 9.0),
        // First attempts only: a retry waited on purpose.
        ("chit_worker_task_queue_wait_seconds_count", 7.0),
    ] {
        prometheus
            .wait_value(&format!("{metric}{{{task}}}"), expected)
            .await;
    }
    // Five chains of queued, accepted, success; two of queued, accepted,
    // failure, retry_scheduled, accepted, failure, dead_lettered.
    prometheus
        .wait_value("chit_sink_receipts_stored_total", 29.0)
        .await;
    let lags = prometheus.value("chit_sink_ingest_lag_seconds_count").await;
    assert!(
        lags.is_some_and(|n| n >= 29.0),
        "ingest lag samples: {lags:?}"
    );
    let published = prometheus
        .value("chit_worker_receipts_published_total")
        .await
        .unwrap();
    assert!(published >= 22.0, "the worker's receipts: {published}");
    // RabbitMQ's own figures, per queue, from its plugin.
    let dlq = format!(
        "rabbitmq_queue_messages_ready{{vhost=\"{}\",queue=\"chit.dead.command.execute\"}}",
        vhost.name
    );
    prometheus.wait_value(&dlq, 2.0).await;

    // The alert rules load and evaluate against these series.
    wait_for(
        "every alert rule evaluated",
        observability_support::WAIT,
        || async {
            let data = prometheus.api("/api/v1/rules").await;
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap().clone())
                .collect();
            (!rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")).then_some(rules)
        },
    )
    .await;

    // Every metric the dashboard and the alerts read is scraped from chit
    // or RabbitMQ (a histogram's `_bucket`, `_sum` and `_count` series are
    // names of their own), and every dashboard query runs.
    let exported = prometheus.metric_names().await;
    let rules = prometheus.api("/api/v1/rules").await;
    let alert_queries: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["query"].as_str().unwrap().to_owned())
        .collect();
    let dashboard = dashboard_queries();
    assert!(dashboard.len() > 20, "{dashboard:?}");
    let mut used = BTreeSet::new();
    for q in dashboard.iter().chain(&alert_queries) {
        used.extend(metric_names(q));
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried but exported by neither chit nor RabbitMQ: {missing:?}"
    );
    for family in [
        "chit_worker_",
        "chit_sink_",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_consumers",
    ] {
        assert!(
            used.iter().any(|n| n.starts_with(family)),
            "the dashboard or the alerts should read {family}"
        );
    }
    for q in &dashboard {
        let runnable = q.replace("$__rate_interval", "1m");
        prometheus.query(&runnable).await;
    }
    let throughput = prometheus
        .query("sum by (task_type) (increase(chit_worker_tasks_succeeded_total[5m]))")
        .await;
    assert_eq!(throughput.len(), 1, "{throughput:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_and_sink_expositions_pass_promtool_check_metrics() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&vhost, dir.path(), None).await;
    let worker = Worker::start(&vhost, "command.execute", "metrics-w2").await;
    publish(&vhost, "command.execute", r#"{"command": "true"}"#, &[]);
    // Once the task's receipts are stored, every histogram has a sample.
    wait_for(
        "the task's receipts in the sink",
        observability_support::WAIT,
        || async {
            let (_, text) = http_get(&sink.metrics_url()).await?;
            text.contains("\nchit_sink_receipts_stored_total 3\n")
                .then_some(())
        },
    )
    .await;
    for url in [worker.metrics_url(), sink.metrics_url()] {
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{url}: {content_type}"
        );
        let text = resp.text().await.unwrap();
        assert!(text.contains("chit_"), "{url}: {text}");
        let (ok, out) = promtool(&["check", "metrics"], Some(&text));
        assert!(ok, "promtool check metrics on {url}:\n{out}\n{text}");
        assert!(out.trim().is_empty(), "promtool lints on {url}:\n{out}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.starts_with("chit_"),
                "{url}: not chit_-prefixed: {line}"
            );
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_every_alert_has_a_unit_test() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yml"], None);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], None);
    assert!(ok, "promtool check config (the example):\n{out}");

    let dir = observability_dir();
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for wanted in [
        "ChitQueueGrowingWithoutConsumers",
        "ChitDeadLettersGrowing",
        "ChitHighFailureRate",
        "ChitSinkLagging",
        "ChitWorkerFlapping",
    ] {
        assert!(alerts.contains(&wanted), "no alert {wanted}");
    }
    let tested: BTreeSet<&str> = tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("alertname:"))
        .map(str::trim)
        .collect();
    for alert in &alerts {
        assert!(tested.contains(alert), "alert {alert} has no unit test");
    }
}
