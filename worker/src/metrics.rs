//! The worker's Prometheus metrics, served as `GET /metrics` (text format)
//! on its `--health` address.
//!
//! Every series is made when the worker starts: each capability's counters,
//! in-flight gauge and histograms are looked up once into a [`TaskMetrics`]
//! kept with the capability, so counting a task is a few atomic adds, with
//! no lock, no allocation and no lookup by name (the `prometheus` crate's
//! histograms observe without a lock). Link figures that the link already
//! counts (connections) are read when Prometheus scrapes. The names and their
//! meanings are listed in docs/operations.md ("Metrics").

use axum::http::header;
use axum::routing::get;
use broker_link::{BrokerLink, ReceiptObserver};
use broker_topology::{ReceiptType, TaskEnvelope};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The label that tells capabilities apart.
const TASK_TYPE: &str = "task_type";

/// Buckets of the execution and queue-wait histograms, in seconds: from a
/// millisecond to an hour.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Buckets of the receipt batch size, in receipts (chit closes a batch at 500).
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// Every metric of one worker, with the registry it is exposed from.
pub(crate) struct WorkerMetrics {
    registry: Registry,
    started: IntCounterVec,
    succeeded: IntCounterVec,
    failed: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    cancelled: IntCounterVec,
    polls: IntCounterVec,
    in_flight: IntGaugeVec,
    execution: HistogramVec,
    queue_wait: HistogramVec,
    /// Every capability's tasks in flight together, for the heartbeat; not
    /// exported (the per-type gauge sums to it).
    in_flight_total: IntGauge,
    link_reconnects: IntCounter,
    broker_connected: IntGauge,
    receipts_published: IntCounter,
    receipt_batch_size: Histogram,
}

/// One capability's series, looked up once.
#[derive(Clone)]
pub(crate) struct TaskMetrics {
    started: IntCounter,
    succeeded: IntCounter,
    failed: IntCounter,
    retried: IntCounter,
    dead_lettered: IntCounter,
    cancelled: IntCounter,
    polls: IntCounter,
    in_flight: IntGauge,
    in_flight_total: IntGauge,
    execution: Histogram,
    queue_wait: Histogram,
}

/// A task counted in flight until this is dropped.
pub(crate) struct InFlight<'a> {
    metrics: &'a TaskMetrics,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics.in_flight_total.dec();
    }
}

/// The endings an attempt's receipts announce, counted without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    succeeded: u8,
    failed: u8,
    retried: u8,
    dead_lettered: u8,
    cancelled: u8,
    polls: u8,
}

impl Tally {
    /// What `receipts` (one attempt's final batch) announce.
    pub(crate) fn of<'a>(receipts: impl IntoIterator<Item = &'a broker_topology::Receipt>) -> Self {
        let mut t = Tally::default();
        for r in receipts {
            let n = match r.receipt_type {
                ReceiptType::Success => &mut t.succeeded,
                ReceiptType::Failure => &mut t.failed,
                ReceiptType::RetryScheduled => &mut t.retried,
                ReceiptType::DeadLettered => &mut t.dead_lettered,
                ReceiptType::Cancelled => &mut t.cancelled,
                ReceiptType::InProgress => &mut t.polls,
                _ => continue,
            };
            *n = n.saturating_add(1);
        }
        t
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[TASK_TYPE]).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(SECONDS.to_vec()),
        &[TASK_TYPE],
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl WorkerMetrics {
    /// The metrics of worker `worker_id`, which runs `concurrency` tasks at once.
    pub(crate) fn new(worker_id: &str, concurrency: usize) -> WorkerMetrics {
        let r = Registry::new();
        let started = counter(
            &r,
            "chit_worker_tasks_started_total",
            "Deliveries the worker took on: one per accepted receipt.",
        );
        let succeeded = counter(
            &r,
            "chit_worker_tasks_succeeded_total",
            "Attempts that ended with a confirmed success receipt.",
        );
        let failed = counter(
            &r,
            "chit_worker_tasks_failed_total",
            "Attempts that ended with a confirmed failure receipt (retried or not).",
        );
        let retried = counter(
            &r,
            "chit_worker_tasks_retried_total",
            "Failed attempts whose task was scheduled again (retry_scheduled receipts).",
        );
        let dead_lettered = counter(
            &r,
            "chit_worker_tasks_dead_lettered_total",
            "Tasks this worker dead-lettered (dead_lettered receipts).",
        );
        let cancelled = counter(
            &r,
            "chit_worker_tasks_cancelled_total",
            "Tasks that ended cancelled (cancelled receipts).",
        );
        let polls = counter(
            &r,
            "chit_worker_task_polls_total",
            "Runs that answered IN_PROGRESS and were scheduled to run again.",
        );
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "chit_worker_tasks_in_flight",
                "Tasks accepted and not yet settled.",
            ),
            &[TASK_TYPE],
        )
        .expect("valid metric");
        r.register(Box::new(in_flight.clone()))
            .expect("unique metric");
        let execution = histogram(
            &r,
            "chit_worker_task_execution_seconds",
            "Time the executor ran one attempt.",
        );
        let queue_wait = histogram(
            &r,
            "chit_worker_task_queue_wait_seconds",
            "Time from a task's first publish to the start of its first attempt.",
        );
        let link_reconnects = IntCounter::new(
            "chit_worker_link_reconnects_total",
            "Broker connections the worker opened after its first one.",
        )
        .expect("valid metric");
        let broker_connected = IntGauge::new(
            "chit_worker_broker_connected",
            "1 while the broker connection is up (also while the broker blocks publishers).",
        )
        .expect("valid metric");
        let receipts_published = IntCounter::new(
            "chit_worker_receipts_published_total",
            "Receipts the broker confirmed.",
        )
        .expect("valid metric");
        let receipt_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "chit_worker_receipt_batch_size",
                "Receipts per confirmed receipt batch.",
            )
            .buckets(BATCH_SIZES.to_vec()),
        )
        .expect("valid metric");
        let info = IntGaugeVec::new(
            Opts::new(
                "chit_worker_info",
                "The worker's id and chit version; always 1.",
            ),
            &["worker_id", "version"],
        )
        .expect("valid metric");
        info.with_label_values(&[worker_id, env!("CARGO_PKG_VERSION")])
            .set(1);
        let slots = IntGauge::new(
            "chit_worker_concurrency",
            "Tasks the worker runs at once at most.",
        )
        .expect("valid metric");
        slots.set(concurrency as i64);
        for c in [
            Box::new(link_reconnects.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(broker_connected.clone()),
            Box::new(receipts_published.clone()),
            Box::new(receipt_batch_size.clone()),
            Box::new(info),
            Box::new(slots),
        ] {
            r.register(c).expect("unique metric");
        }
        WorkerMetrics {
            registry: r,
            started,
            succeeded,
            failed,
            retried,
            dead_lettered,
            cancelled,
            polls,
            in_flight,
            execution,
            queue_wait,
            in_flight_total: IntGauge::new("in_flight_total", "not exported").expect("valid"),
            link_reconnects,
            broker_connected,
            receipts_published,
            receipt_batch_size,
        }
    }

    /// The series of capability `task_type`, made now (at zero) so that they
    /// show before its first task.
    pub(crate) fn for_task_type(&self, task_type: &str) -> TaskMetrics {
        let l = &[task_type];
        TaskMetrics {
            started: self.started.with_label_values(l),
            succeeded: self.succeeded.with_label_values(l),
            failed: self.failed.with_label_values(l),
            retried: self.retried.with_label_values(l),
            dead_lettered: self.dead_lettered.with_label_values(l),
            cancelled: self.cancelled.with_label_values(l),
            polls: self.polls.with_label_values(l),
            in_flight: self.in_flight.with_label_values(l),
            in_flight_total: self.in_flight_total.clone(),
            execution: self.execution.with_label_values(l),
            queue_wait: self.queue_wait.with_label_values(l),
        }
    }

    /// Tasks in flight, every capability together.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight_total.get().max(0) as u64
    }

    /// The exposition in Prometheus' text format, with the link's figures
    /// brought up to date.
    pub(crate) fn render(&self, link: &BrokerLink) -> String {
        let reconnects = link.connections().saturating_sub(1);
        let counted = self.link_reconnects.get();
        if reconnects > counted {
            self.link_reconnects.inc_by(reconnects - counted);
        }
        self.broker_connected
            .set(i64::from(link.state().is_healthy()));
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}

/// `GET /metrics`, for the health server.
pub(crate) fn routes(metrics: Arc<WorkerMetrics>, link: Arc<BrokerLink>) -> axum::Router {
    let scrape = move || {
        let text = metrics.render(&link);
        async move { ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text) }
    };
    axum::Router::new().route("/metrics", get(scrape))
}

impl ReceiptObserver for WorkerMetrics {
    fn batch_confirmed(&self, receipts: usize) {
        self.receipts_published.inc_by(receipts as u64);
        self.receipt_batch_size.observe(receipts as f64);
    }
}

impl TaskMetrics {
    /// A delivery taken on (its `accepted` receipt emitted); it counts in
    /// flight until the guard is dropped. `queue_wait` is observed when known.
    pub(crate) fn started(&self, queue_wait: Option<Duration>) -> InFlight<'_> {
        self.started.inc();
        self.in_flight.inc();
        self.in_flight_total.inc();
        if let Some(wait) = queue_wait {
            self.queue_wait.observe(wait.as_secs_f64());
        }
        InFlight { metrics: self }
    }

    /// The executor ran for `took`.
    pub(crate) fn executed(&self, took: Duration) {
        self.execution.observe(took.as_secs_f64());
    }

    /// An attempt's receipts were confirmed.
    pub(crate) fn settled(&self, t: Tally) {
        for (counter, n) in [
            (&self.succeeded, t.succeeded),
            (&self.failed, t.failed),
            (&self.retried, t.retried),
            (&self.dead_lettered, t.dead_lettered),
            (&self.cancelled, t.cancelled),
            (&self.polls, t.polls),
        ] {
            if n > 0 {
                counter.inc_by(u64::from(n));
            }
        }
    }
}

/// How long a task waited between its first publish and now, for the first
/// run of its first attempt only (a retry or a poll waited on purpose).
/// From `x-chit-published-ms`, else the AMQP `timestamp` (whole seconds);
/// `None` when the task has neither. A clock behind the publisher's gives 0.
pub(crate) fn queue_wait(env: &TaskEnvelope) -> Option<Duration> {
    if env.attempt != 1 || env.polls != 0 {
        return None;
    }
    let published_ms = env
        .published_ms
        .or_else(|| env.timestamp.map(|s| s.saturating_mul(1000)))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some(Duration::from_millis(now_ms.saturating_sub(published_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_topology::Receipt;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    fn receipt(t: ReceiptType) -> Receipt {
        Receipt::new("t", "build", t, vec![], 1)
    }

    #[test]
    fn counting_a_task_moves_its_series_and_only_those() {
        let m = WorkerMetrics::new("w-1", 4);
        let build = m.for_task_type("build");
        let _other = m.for_task_type("deploy");
        let guard = build.started(Some(Duration::from_millis(30)));
        assert_eq!(m.in_flight(), 1);
        build.executed(Duration::from_millis(200));
        build.settled(Tally::of(&[
            receipt(ReceiptType::Failure),
            receipt(ReceiptType::RetryScheduled),
        ]));
        drop(guard);
        assert_eq!(m.in_flight(), 0);
        m.batch_confirmed(3);
        let link = BrokerLink::new("amqp://127.0.0.1:1/", "t", Default::default());
        let text = m.render(&link);
        let b = r#"{task_type="build"}"#;
        let d = r#"{task_type="deploy"}"#;
        assert_eq!(
            value(&text, &format!("chit_worker_tasks_started_total{b}")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("chit_worker_tasks_failed_total{b}")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("chit_worker_tasks_retried_total{b}")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("chit_worker_tasks_succeeded_total{b}")),
            0.0
        );
        assert_eq!(
            value(&text, &format!("chit_worker_tasks_started_total{d}")),
            0.0
        );
        assert_eq!(
            value(&text, &format!("chit_worker_tasks_in_flight{b}")),
            0.0
        );
        assert_eq!(
            value(
                &text,
                &format!("chit_worker_task_execution_seconds_count{b}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                &format!("chit_worker_task_queue_wait_seconds_sum{b}")
            ),
            0.03
        );
        assert_eq!(value(&text, "chit_worker_receipts_published_total"), 3.0);
        assert_eq!(value(&text, "chit_worker_receipt_batch_size_count"), 1.0);
        assert_eq!(value(&text, "chit_worker_link_reconnects_total"), 0.0);
        assert_eq!(value(&text, "chit_worker_broker_connected"), 0.0);
        assert!(text.contains(r#"worker_id="w-1""#), "{text}");
    }

    #[test]
    fn a_tally_counts_the_endings_an_attempt_announces() {
        let t = Tally::of(&[
            receipt(ReceiptType::Failure),
            receipt(ReceiptType::DeadLettered),
        ]);
        assert_eq!(
            t,
            Tally {
                failed: 1,
                dead_lettered: 1,
                ..Tally::default()
            }
        );
        assert_eq!(
            Tally::of(&[receipt(ReceiptType::Accepted)]),
            Tally::default()
        );
    }

    #[test]
    fn queue_wait_is_for_first_runs_and_prefers_milliseconds() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut env = TaskEnvelope::new("x");
        assert_eq!(queue_wait(&env), None);
        env.timestamp = Some(now_ms / 1000 - 10);
        let wait = queue_wait(&env).unwrap();
        assert!(
            wait >= Duration::from_secs(10) && wait < Duration::from_secs(12),
            "{wait:?}"
        );
        env.published_ms = Some(now_ms - 250);
        let wait = queue_wait(&env).unwrap();
        assert!(
            wait >= Duration::from_millis(250) && wait < Duration::from_secs(2),
            "{wait:?}"
        );
        env.published_ms = Some(now_ms + 60_000);
        assert_eq!(queue_wait(&env), Some(Duration::ZERO));
        env.attempt = 2;
        assert_eq!(queue_wait(&env), None);
    }
}
