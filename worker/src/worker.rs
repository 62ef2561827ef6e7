//! [`run`]: a worker from configuration to clean exit.

use crate::attempt::{Served, Shared};
use crate::cancel::CancelBook;
use crate::config::WorkerConfig;
use crate::consumer::Loop;
use crate::error::WorkerError;
use crate::registry::Registry;
use crate::shutdown::shutdown;
use broker_link::{BrokerLink, ReceiptPublisher};
use broker_topology::{Topology, names};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// RabbitMQ's default `consumer_timeout` (30 minutes): a delivery held longer
/// closes the channel and is redelivered.
pub const BROKER_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Runs a worker until `stop` resolves, then drains and returns.
pub async fn run(
    config: WorkerConfig,
    registry: Registry,
    stop: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    if config.capabilities.is_empty() {
        return Err(WorkerError::Config(
            "no capability given (use --capability TASK_TYPE)".into(),
        ));
    }
    if config.concurrency == 0 || config.prefetch == 0 {
        return Err(WorkerError::Config(
            "concurrency and prefetch must be at least 1".into(),
        ));
    }
    let metrics = Arc::new(crate::metrics::WorkerMetrics::new(
        &config.worker_id,
        config.concurrency,
    ));
    let mut served = Vec::new();
    for cap in &config.capabilities {
        names::validate_capability(&cap.name)?;
        let executor = registry.get(&cap.executor)?;
        executor
            .health_check()
            .await
            .map_err(|e| WorkerError::Unhealthy {
                executor: cap.executor.clone(),
                message: e.to_string(),
            })?;
        if let Some(t) = cap.timeout.filter(|t| *t > BROKER_CONSUMER_TIMEOUT) {
            tracing::warn!(
                task_type = %cap.name,
                timeout_secs = t.as_secs(),
                consumer_timeout_secs = BROKER_CONSUMER_TIMEOUT.as_secs(),
                "task timeout exceeds RabbitMQ's default consumer_timeout: the broker will close the \
                 channel and redeliver long tasks unless consumer_timeout is raised (see docs/operations.md)"
            );
        }
        if cap.timeout.is_none() {
            // chit sets no run-time limit of its own; the broker has one.
            tracing::warn!(
                task_type = %cap.name,
                consumer_timeout_secs = BROKER_CONSUMER_TIMEOUT.as_secs(),
                "no run-time limit for this capability: a task running longer than RabbitMQ's \
                 consumer_timeout (30 min by default) is redelivered while it still runs; set a \
                 limit (--timeout-secs, timeout_secs in [[capability]], or x-chit-timeout-ms per \
                 task) or raise consumer_timeout (see docs/operations.md)"
            );
        }
        served.push(Arc::new(Served {
            config: cap.clone(),
            metrics: metrics.for_task_type(&cap.name),
            executor,
        }));
    }
    let caps: Vec<_> = config.capabilities.iter().map(|c| c.capability()).collect();
    let link = BrokerLink::new(
        config.amqp_url.clone(),
        format!("chit-worker {}", config.worker_id),
        Topology::for_capabilities(&caps),
    );
    // Fail fast on a bad URL or refused credentials; a down broker is waited for.
    if let Err(e) = link.session_until(Some(std::time::Instant::now())).await {
        if !e.is_transient() {
            return Err(e.into());
        }
        tracing::warn!(error = %e, "broker not reachable yet; will keep trying");
    }
    let (receipts, receipts_task) = ReceiptPublisher::spawn_observed(
        link.clone(),
        "worker",
        config.receipts,
        Some(metrics.clone()),
    );
    let (trigger, signal) = shutdown();
    let shared = Arc::new(Shared {
        worker_id: config.worker_id.clone(),
        link: link.clone(),
        receipts,
        cancels: CancelBook::default(),
        shutdown: signal.clone(),
    });
    tracing::info!(worker_id = %config.worker_id, concurrency = config.concurrency, "worker starting");
    // Executors checked again every health interval, for logs and /readyz.
    let readiness = crate::readiness::Readiness::spawn(
        served.iter().map(|s| s.executor.clone()).collect(),
        config.health_interval,
        signal.clone(),
    );
    if let Some(addr) = config.health_addr {
        let (link, id, stop) = (link.clone(), config.worker_id.clone(), signal.clone());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::health::serve(addr, link, id, readiness, metrics, stop).await {
                tracing::error!(error = %e, %addr, "cannot serve /healthz");
            }
        });
    }
    // Heartbeats go on through the drain; the last says the worker stops.
    let (heartbeat_stop, heartbeat_signal) = shutdown();
    let heartbeat = tokio::spawn(crate::heartbeat::run(
        crate::heartbeat::Beat {
            link: link.clone(),
            metrics: metrics.clone(),
            worker_id: config.worker_id.clone(),
            capabilities: config.capabilities.iter().map(|c| c.name.clone()).collect(),
            concurrency: config.concurrency,
            interval: config.heartbeat_interval,
        },
        heartbeat_signal,
    ));
    let (caught_up_tx, mut caught_up) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(crate::control::listen(
        link.clone(),
        shared.cancels.clone(),
        signal.clone(),
        caught_up_tx,
    ));
    let dead_letter_watch = tokio::spawn(crate::dead_letter_watch::watch(
        link.clone(),
        shared.receipts.clone(),
        config.capabilities.iter().map(|c| c.name.clone()).collect(),
        signal.clone(),
    ));
    // Read the cancellations of the last day before the first task, so a
    // task cancelled while no worker ran is skipped, not run. Bounded, so a
    // slow stream cannot keep the worker from starting.
    if tokio::time::timeout(Duration::from_secs(10), caught_up.wait_for(|c| *c))
        .await
        .is_err()
    {
        tracing::warn!("cancellation stream not read within 10 s; starting anyway");
    }
    let consumer = Loop {
        shared,
        served,
        concurrency: config.concurrency,
        prefetch: config.prefetch,
        drain_timeout: config.drain_timeout,
        kill_grace: config.kill_grace,
        tasks: tokio_util::task::TaskTracker::new(),
    };
    let mut work = tokio::spawn(consumer.run(signal));
    tokio::select! {
        _ = stop => {
            tracing::info!("stop requested: no new tasks; draining");
            trigger.fire();
            let _ = (&mut work).await;
        }
        _ = &mut work => {}
    }
    trigger.fire();
    let _ = listener.await;
    let _ = dead_letter_watch.await;
    // Every task has dropped its publisher handle; wait for the last receipts.
    let receipts_abort = receipts_task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(10), receipts_task)
        .await
        .is_err()
    {
        tracing::warn!(
            "receipts not all confirmed within 10 s of stopping; their tasks will run again"
        );
        receipts_abort.abort();
    }
    heartbeat_stop.fire();
    let _ = tokio::time::timeout(Duration::from_secs(5), heartbeat).await;
    link.close().await;
    tracing::info!("worker stopped");
    Ok(())
}
