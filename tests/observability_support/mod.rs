//! Helpers of tests/metrics.rs and tests/workers.rs: a receipts sink and
//! workers of the `chit` binary on free ports, their HTTP endpoints, and a
//! real Prometheus server of the test's own (free port, own config and data
//! directory, killed when dropped).

#![allow(dead_code, unreachable_pub)]

use crate::support::{ChildGuard, Vhost, chit, free_port, wait_for};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Long enough for a slow, busy machine; every wait ends as soon as it can.
pub const WAIT: Duration = Duration::from_secs(60);

/// This repository's `deploy/observability/` directory.
pub fn observability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability")
}

/// GETs `url`: the status and the body, or `None` while nothing answers.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Waits until `url` answers 200.
pub async fn wait_healthy(what: &str, url: &str) {
    wait_for(what, WAIT, || async {
        matches!(http_get(url).await, Some((200, _))).then_some(())
    })
    .await;
}

/// A running `chit sink`, its API on `port`.
pub struct Sink {
    pub child: ChildGuard,
    pub port: u16,
}

impl Sink {
    /// Starts a sink of `group` (the default one when `None`) with a SQLite
    /// store in `dir`, and waits for its `/healthz`.
    pub async fn start(vhost: &Vhost, dir: &Path, group: Option<&str>) -> Sink {
        let port = free_port();
        let store = dir.join(format!("{}.db", group.unwrap_or("default")));
        let mut cmd = chit();
        cmd.args(["sink", "--amqp-url", &vhost.url])
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(["--store", &format!("sqlite://{}", store.display())]);
        if let Some(g) = group {
            cmd.args(["--group", g]);
        }
        let child = ChildGuard::spawn(cmd);
        wait_healthy(
            "the sink's /healthz",
            &format!("http://127.0.0.1:{port}/healthz"),
        )
        .await;
        Sink { child, port }
    }

    /// Its API, as `--api` takes it.
    pub fn api(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }
}

/// A running `chit worker` with `--health` on `health_port`.
pub struct Worker {
    pub child: ChildGuard,
    pub health_port: u16,
    pub id: String,
}

impl Worker {
    /// Starts worker `id` serving `capability` (`TYPE` or `TYPE=EXECUTOR`),
    /// and waits for its `/healthz`.
    pub async fn start(vhost: &Vhost, capability: &str, id: &str) -> Worker {
        let health_port = free_port();
        let mut cmd = chit();
        cmd.args(["worker", "--amqp-url", &vhost.url])
            .args(["--capability", capability])
            .args(["--worker-id", id])
            .args(["--timeout-secs", "60"])
            .args(["--health", &format!("127.0.0.1:{health_port}")]);
        let child = ChildGuard::spawn(cmd);
        wait_healthy(
            "the worker's /healthz",
            &format!("http://127.0.0.1:{health_port}/healthz"),
        )
        .await;
        Worker {
            child,
            health_port,
            id: id.to_owned(),
        }
    }

    /// `http://127.0.0.1:PORT/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.health_port)
    }
}

/// Publishes one task with `chit publish`; returns its id.
pub fn publish(vhost: &Vhost, task_type: &str, payload: &str, extra: &[&str]) -> String {
    let out = chit()
        .args(["publish", task_type, "--amqp-url", &vhost.url])
        .args(["--payload", payload])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chit publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One scrape job of the test's Prometheus.
pub struct Target {
    pub job: &'static str,
    pub address: String,
    pub path: &'static str,
    pub interval: &'static str,
}

/// A Prometheus server of the test's own, killed when dropped.
pub struct Prometheus {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Prometheus {
    /// Starts `prometheus` scraping `targets` and evaluating `rule_files`,
    /// on a free port with its own data directory, and waits until it is ready.
    pub async fn start(targets: &[Target], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n",
        );
        for f in rule_files {
            config.push_str(&format!("  - {:?}\n", f.display().to_string()));
        }
        config.push_str("scrape_configs:\n");
        for t in targets {
            config.push_str(&format!(
                "  - job_name: {}\n    metrics_path: {}\n    scrape_interval: {}\n    \
                 scrape_timeout: {}\n    static_configs:\n      - targets: [{:?}]\n",
                t.job, t.path, t.interval, t.interval, t.address
            ));
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = free_port();
        let mut cmd = std::process::Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null());
        let child = ChildGuard::spawn(cmd);
        wait_healthy(
            "Prometheus to be ready",
            &format!("http://127.0.0.1:{port}/-/ready"),
        )
        .await;
        Prometheus {
            _child: child,
            _dir: dir,
            port,
        }
    }

    /// GETs an API path; panics unless the answer is a success.
    pub async fn api(&self, path_and_query: &str) -> Value {
        let url = format!("http://127.0.0.1:{}{path_and_query}", self.port);
        let (status, body) = http_get(&url)
            .await
            .unwrap_or_else(|| panic!("Prometheus does not answer {url}"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "HTTP {status} for {url}: {body}");
        v["data"].clone()
    }

    /// Runs an instant query; its result vector.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let mut url = reqwest::Url::parse("http://x/api/v1/query").unwrap();
        url.query_pairs_mut().append_pair("query", promql);
        let data = self
            .api(&format!("/api/v1/query?{}", url.query().unwrap()))
            .await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that gives one series; `None` when it gives none.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        let first = result.first()?;
        first["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` gives one series whose value is `expected`.
    pub async fn wait_value(&self, promql: &str, expected: f64) {
        let what = format!("Prometheus to answer {expected} to {promql}");
        wait_for(&what, WAIT, || async {
            (self.value(promql).await == Some(expected)).then_some(())
        })
        .await;
    }

    /// Every metric name Prometheus has scraped.
    pub async fn metric_names(&self) -> BTreeSet<String> {
        let data = self.api("/api/v1/label/__name__/values").await;
        data.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }
}

/// The metric names a PromQL expression reads: identifiers that are not
/// functions, aggregations, keywords or label names, outside strings, label
/// matchers and range brackets.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ];
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let skip_string = |mut i: usize| {
        let quote = c[i];
        i += 1;
        while i < c.len() && c[i] != quote {
            if c[i] == '\\' && quote != '`' {
                i += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skips from an opening bracket to after its closing one, over strings.
    let skip_group = |mut i: usize, close: char| {
        i += 1;
        while i < c.len() && c[i] != close {
            i = if matches!(c[i], '"' | '\'' | '`') {
                skip_string(i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let next_non_space = |mut i: usize| {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '"' | '\'' | '`' => i = skip_string(i),
            '{' => i = skip_group(i, '}'),
            '[' => i = skip_group(i, ']'),
            '$' | '0'..='9' | '.' => {
                i += 1;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || matches!(c[i], '_' | '.')) {
                    i += 1;
                }
            }
            ch if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' => {
                let start = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || matches!(c[i], '_' | ':')) {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let after = next_non_space(i);
                let opens = after < c.len() && c[after] == '(';
                if AGGREGATIONS.contains(&word.as_str()) {
                    // `sum by (x) (...)`: its modifier follows, then its argument.
                } else if KEYWORDS.contains(&word.as_str()) {
                    if opens {
                        i = skip_group(after, ')');
                    }
                } else if !opens {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le, task_type) (rate(a_bucket{queue=~`x\\.y`, b=\"}\"}[5m]))) \
         / on (vhost) group_left (queue) b_total offset 5m > 0.2 and c == bool 0 unless d[$__rate_interval]",
    );
    let expected: BTreeSet<String> = ["a_bucket", "b_total", "c", "d"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
}
