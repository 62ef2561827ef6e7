//! The merge, layer by layer: a flag (or its `CHIT_*` variable, which clap
//! reads into the same field) beats the config file, which beats the default
//! of the crate that owns the setting.

use super::*;
use crate::{Cli, Command};
use broker_topology::ContentType;
use broker_topology::declare::DEFAULT_DELIVERY_LIMIT;
use broker_topology::retry::RetryPolicy;
use clap::Parser;
use std::time::Duration;
use worker::WorkerConfig;

const FILE: &str = r#"
amqp_url = "amqp://from-file"

[worker]
concurrency = 3
worker_id = "from-file"
drain_timeout_secs = 12

[sink]
store = "sqlite://from-file.db"
http = "127.0.0.1:9000"
api = "http://from-file:8700/"

[[capability]]
name = "build"
executor = "command.execute"
max_attempts = 7
initial_backoff_ms = 50
delivery_limit = 9
timeout_secs = 2.5
"#;

fn with_file() -> Settings {
    Settings::new(None, toml::from_str(FILE).expect("a valid config file"))
}

fn without_file() -> Settings {
    Settings::new(None, FileConfig::default())
}

fn caps(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `chit worker ARGS...` as the settings it hands to the merge.
fn worker_flags(args: &[&str]) -> WorkerSettings {
    let argv = ["chit", "worker"].iter().chain(args);
    match Cli::try_parse_from(argv).expect("valid flags").command {
        Command::Worker { args, .. } => args.into_settings(),
        _ => unreachable!("parsed a worker command"),
    }
}

#[test]
fn amqp_url_flag_beats_file_beats_default() {
    let file = || toml::from_str::<FileConfig>(FILE).unwrap();
    assert_eq!(
        Settings::new(Some("amqp://flag".into()), file()).amqp_url,
        "amqp://flag"
    );
    assert_eq!(Settings::new(None, file()).amqp_url, "amqp://from-file");
    assert_eq!(without_file().amqp_url, DEFAULT_AMQP_URL);
}

#[test]
fn worker_flag_beats_file_beats_default() {
    let given = WorkerSettings {
        capabilities: caps(&["build"]),
        concurrency: Some(7),
        worker_id: Some("from-flag".into()),
        drain_timeout_secs: Some(1),
        ..WorkerSettings::default()
    };
    let c = with_file().worker_config(&given).unwrap();
    assert_eq!(c.concurrency, 7);
    assert_eq!(c.worker_id, "from-flag");
    assert_eq!(c.drain_timeout, Duration::from_secs(1));

    let only_caps = WorkerSettings {
        capabilities: caps(&["build"]),
        ..WorkerSettings::default()
    };
    let c = with_file().worker_config(&only_caps).unwrap();
    assert_eq!(c.concurrency, 3);
    assert_eq!(c.worker_id, "from-file");
    assert_eq!(c.drain_timeout, Duration::from_secs(12));

    let c = without_file().worker_config(&only_caps).unwrap();
    assert_eq!(c.concurrency, WorkerConfig::DEFAULT_CONCURRENCY);
    assert_eq!(c.drain_timeout, WorkerConfig::DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(c.worker_id, worker::default_worker_id());
}

#[test]
fn retry_flag_beats_file_capability_beats_policy_default() {
    let mut given = WorkerSettings {
        capabilities: caps(&["build", "other"]),
        ..WorkerSettings::default()
    };
    let c = with_file().worker_config(&given).unwrap();
    let (build, other) = (&c.capabilities[0], &c.capabilities[1]);
    assert_eq!(build.retry.max_attempts, 7);
    assert_eq!(build.retry.initial_backoff_ms, 50);
    assert_eq!(build.timeout, Some(Duration::from_secs_f64(2.5)));
    assert_eq!(other.retry, RetryPolicy::default());
    assert_eq!(other.timeout, None);

    given.retry = RetryFlags {
        max_attempts: Some(2),
        backoff_ms: Some(10),
        timeout_secs: Some(1.0),
    };
    let c = with_file().worker_config(&given).unwrap();
    for cap in &c.capabilities {
        assert_eq!(cap.retry.max_attempts, 2);
        assert_eq!(cap.retry.initial_backoff_ms, 10);
        assert_eq!(cap.timeout, Some(Duration::from_secs(1)));
    }
    // No flag for it: the file's (none here), else the policy's default.
    assert_eq!(
        c.capabilities[0].retry.max_backoff_ms,
        RetryPolicy::default().max_backoff_ms
    );
}

#[test]
fn default_prefetch_follows_the_concurrency_chosen() {
    let c = with_file()
        .worker_config(&WorkerSettings::default())
        .unwrap();
    assert_eq!(c.prefetch, WorkerConfig::default_prefetch(3));
    let c = with_file()
        .worker_config(&WorkerSettings {
            prefetch: Some(1),
            ..WorkerSettings::default()
        })
        .unwrap();
    assert_eq!(c.prefetch, 1);
}

#[test]
fn file_capabilities_serve_when_none_are_given() {
    let c = with_file()
        .worker_config(&WorkerSettings::default())
        .unwrap();
    assert_eq!(c.capabilities.len(), 1);
    assert_eq!(c.capabilities[0].name, "build");
    assert_eq!(c.capabilities[0].executor, "command.execute");
    // An executor named on the command line beats the file's.
    let c = with_file()
        .worker_config(&WorkerSettings {
            capabilities: caps(&["build=noop"]),
            ..WorkerSettings::default()
        })
        .unwrap();
    assert_eq!(c.capabilities[0].executor, "noop");
}

#[test]
fn file_delivery_limit_reaches_topology_and_worker_alike() {
    let s = with_file();
    for names in [caps(&[]), caps(&["build"]), caps(&["build=noop"])] {
        let topology = s.topology_capabilities(&names).unwrap();
        assert_eq!(topology.len(), 1);
        assert_eq!(topology[0].name, "build");
        assert_eq!(topology[0].delivery_limit, 9);
        let worker = s
            .worker_config(&WorkerSettings {
                capabilities: names,
                ..WorkerSettings::default()
            })
            .unwrap();
        assert_eq!(worker.capabilities[0].delivery_limit, 9);
    }
    let other = s.topology_capabilities(&caps(&["other"])).unwrap();
    assert_eq!(other[0].delivery_limit, DEFAULT_DELIVERY_LIMIT);
}

#[test]
fn topology_rejects_a_bad_capability_name() {
    assert!(
        without_file()
            .topology_capabilities(&caps(&["no spaces"]))
            .is_err()
    );
}

#[test]
fn kill_grace_defaults_to_the_worker_crates() {
    let c = without_file()
        .worker_config(&WorkerSettings::default())
        .unwrap();
    assert_eq!(c.kill_grace, WorkerConfig::DEFAULT_KILL_GRACE);
    // The flag's shown default is the same constant.
    let c = without_file().worker_config(&worker_flags(&[])).unwrap();
    assert_eq!(c.kill_grace, WorkerConfig::DEFAULT_KILL_GRACE);
    let c = without_file()
        .worker_config(&worker_flags(&["--kill-grace-secs", "1.5"]))
        .unwrap();
    assert_eq!(c.kill_grace, Duration::from_millis(1500));
}

#[test]
fn worker_flags_reach_the_config_over_the_file() {
    let given = worker_flags(&[
        "--capability",
        "build",
        "--concurrency",
        "5",
        "--max-attempts",
        "2",
        "--backoff-ms",
        "20",
        "--timeout-secs",
        "0.5",
        "--receipt-linger-ms",
        "3",
        "--health",
        "127.0.0.1:8701",
    ]);
    let c = with_file().worker_config(&given).unwrap();
    assert_eq!(c.concurrency, 5);
    assert_eq!(c.prefetch, WorkerConfig::default_prefetch(5));
    assert_eq!(c.capabilities[0].retry.max_attempts, 2);
    assert_eq!(c.capabilities[0].retry.initial_backoff_ms, 20);
    assert_eq!(c.capabilities[0].timeout, Some(Duration::from_millis(500)));
    assert_eq!(c.receipts.linger, Duration::from_millis(3));
    assert_eq!(c.health_addr, Some("127.0.0.1:8701".parse().unwrap()));
    let local = worker_flags(&["--health", "localhost:8702"]);
    let c = without_file().worker_config(&local).unwrap();
    assert_eq!(c.health_addr, Some("127.0.0.1:8702".parse().unwrap()));
    // There is no default port to fall back on.
    let bad = worker_flags(&["--health", "localhost"]);
    let err = without_file().worker_config(&bad).unwrap_err();
    assert!(
        format!("{err:#}").contains("--health \"localhost\""),
        "{err:#}"
    );
}

#[test]
fn publish_and_worker_share_the_retry_flags() {
    let retry = [
        "--max-attempts",
        "4",
        "--backoff-ms",
        "30",
        "--timeout-secs",
        "1.5",
    ];
    let argv = ["chit", "publish", "t"].iter().chain(&retry);
    assert!(matches!(
        Cli::try_parse_from(argv).unwrap().command,
        Command::Publish { .. }
    ));
    let flags = worker_flags(&retry).retry;
    assert_eq!(
        flags,
        RetryFlags {
            max_attempts: Some(4),
            backoff_ms: Some(30),
            timeout_secs: Some(1.5),
        }
    );
    // On publish they go into the task's envelope.
    let mut spec = producer::TaskSpec::new("t", &serde_json::json!({}), ContentType::Json).unwrap();
    flags.stamp(&mut spec.envelope);
    assert_eq!(spec.envelope.max_attempts, Some(4));
    assert_eq!(spec.envelope.backoff_ms, Some(30));
    assert_eq!(spec.envelope.timeout_ms, Some(1500));
    RetryFlags::default().stamp(&mut spec.envelope);
    assert_eq!(spec.envelope.max_attempts, None);
}

#[test]
fn sink_flag_beats_file_beats_default() {
    let c = with_file()
        .sink_config(&SinkSettings {
            store: Some("sqlite://from-flag.db".into()),
            http: Some("127.0.0.1:9100".into()),
            batch_size: Some(10),
            ..SinkSettings::default()
        })
        .unwrap();
    assert_eq!(c.store_url, "sqlite://from-flag.db");
    assert_eq!(c.http_addr, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(c.batch_size, 10);
    assert_eq!(c.amqp_url, "amqp://from-file");

    let c = with_file().sink_config(&SinkSettings::default()).unwrap();
    assert_eq!(c.store_url, "sqlite://from-file.db");
    assert_eq!(c.http_addr, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.batch_size, receipts_sink::DEFAULT_BATCH_SIZE);
    assert_eq!(c.batch_wait, receipts_sink::DEFAULT_BATCH_WAIT);
    assert_eq!(c.prefetch, receipts_sink::DEFAULT_PREFETCH);

    let c = without_file()
        .sink_config(&SinkSettings {
            store: Some("sqlite://x.db".into()),
            ..SinkSettings::default()
        })
        .unwrap();
    assert_eq!(
        c.http_addr,
        receipts_sink::DEFAULT_HTTP_ADDR.parse().unwrap()
    );
}

#[test]
fn api_url_flag_beats_file_beats_the_sinks_default_address() {
    let s = with_file();
    assert_eq!(
        s.api_url(Some("http://flag:1/".into())).unwrap(),
        "http://flag:1"
    );
    assert_eq!(s.api_url(None).unwrap(), "http://from-file:8700");
    assert_eq!(
        without_file().api_url(None).unwrap(),
        format!("http://{}", receipts_sink::DEFAULT_HTTP_ADDR)
    );
}

#[test]
fn every_address_setting_takes_host_port_and_localhost() {
    // Issue 13, finding 13: --api wanted a URL, --http and --health an IP.
    let s = without_file();
    assert_eq!(
        s.api_url(Some("localhost:9100".into())).unwrap(),
        "http://localhost:9100"
    );
    assert_eq!(
        s.api_url(Some(":9100".into())).unwrap(),
        "http://127.0.0.1:9100"
    );
    for http in ["localhost:9100", ":9100", "http://localhost:9100/"] {
        let c = s
            .sink_config(&SinkSettings {
                store: Some("sqlite://x.db".into()),
                http: Some(http.into()),
                ..SinkSettings::default()
            })
            .unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:9100".parse().unwrap(), "{http}");
    }
    let c = worker_flags(&["--health", ":8702"]);
    assert_eq!(
        s.worker_config(&c).unwrap().health_addr,
        Some("127.0.0.1:8702".parse().unwrap())
    );
    // The config file's addresses go through the same parser.
    let file: FileConfig = toml::from_str(
        "[sink]\nstore = \"sqlite://f.db\"\nhttp = \"localhost\"\napi = \"localhost:9200\"\n",
    )
    .unwrap();
    let s = Settings::new(None, file);
    assert_eq!(s.api_url(None).unwrap(), "http://localhost:9200");
    let c = s.sink_config(&SinkSettings::default()).unwrap();
    assert_eq!(c.http_addr, "127.0.0.1:8700".parse().unwrap());
    let bad = Settings::new(None, toml::from_str("[sink]\napi = \"ftp://x\"\n").unwrap());
    let err = format!("{:#}", bad.api_url(None).unwrap_err());
    assert!(err.contains("[sink] api in the config file"), "{err}");
}

#[test]
fn publish_deadline_defaults_to_the_producers() {
    let default = producer::ProducerConfig::new("x").publish_deadline;
    assert_eq!(
        without_file().producer_config(None).publish_deadline,
        default
    );
    let d = Duration::from_secs(2);
    assert_eq!(without_file().producer_config(Some(d)).publish_deadline, d);
}
