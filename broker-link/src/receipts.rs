//! [`ReceiptPublisher`]: receipts go out in batches, and each caller learns
//! when its own receipts are confirmed.
//!
//! A batch closes when it holds `max_receipts`, or `linger` after its first
//! receipt, or at once when a caller awaits its confirm and at most one other
//! batch is in flight; up to `max_in_flight` batches await their confirms at
//! once. Under load a batch carries hundreds of receipts, so a task
//! costs a small fraction of a broker message in receipts; at low load a
//! receipt waits at most `linger`. A batch whose publish fails is sent again
//! on the next connection: receipts are keyed by id, so a repeat is harmless.
//!
//! With tracing on, each `emit` or `submit` is a `publish` span under the
//! caller's span, lasting until the confirm, and receipts that have no trace
//! context get the caller's. A batch carries receipts of many traces: its
//! message's `traceparent` is the `publish` span of the first submission in
//! it that has one, and every receipt keeps its own in `trace_id` and
//! `span_id`, which is what a consumer links to.
//!
//! [`send_reply`] sends one receipt, the one that ended a task, to the
//! task's `reply_to` queue: the answer a caller waiting for the task gets.

use crate::connect::Backoff;
use crate::error::LinkError;
use crate::link::BrokerLink;
use crate::publish::{Outgoing, PendingConfirm, PublishOutcome, send};
use crate::time::sleep_until_opt;
use crate::trace_context;
use broker_topology::{ContentType, Receipt, TraceContext, names};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::BasicProperties;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How receipts are batched.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Receipts per AMQP message at most.
    pub max_receipts: usize,
    /// Longest wait for more receipts before a batch is sent.
    pub linger: Duration,
    /// Batches awaiting confirms at once.
    pub max_in_flight: usize,
    /// Receipts queued inside the publisher before `submit` waits (backpressure).
    pub capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_receipts: 500,
            linger: Duration::from_millis(2),
            max_in_flight: 8,
            capacity: 4096,
        }
    }
}

struct Submission {
    receipts: Vec<Receipt>,
    confirmed: Option<oneshot::Sender<()>>,
    /// The submission's `publish` span, when tracing is on.
    trace: Option<TraceContext>,
}

/// Receipts encoded into one message, with whoever waits for its confirm.
struct SealedBatch {
    body: Vec<u8>,
    count: usize,
    waiters: Vec<oneshot::Sender<()>>,
    /// The message's `traceparent`.
    trace: Option<TraceContext>,
}

/// Told of every receipt batch the broker confirmed, for metrics. Called on
/// the publisher's task: it must be quick and must not block.
pub trait ReceiptObserver: Send + Sync {
    /// A batch of `receipts` receipts was confirmed.
    fn batch_confirmed(&self, receipts: usize);
}

/// Publishes receipts in confirmed batches. Clone it freely; the background
/// task ends, after sending everything it holds, when the last clone is dropped.
#[derive(Clone)]
pub struct ReceiptPublisher {
    tx: mpsc::Sender<Submission>,
}

/// Resolves when the receipts of one submission are confirmed by the broker.
/// Its `publish` span, when tracing is on, ends when it is dropped.
pub struct Confirmed {
    rx: oneshot::Receiver<()>,
    _span: tracing::Span,
}

impl Future for Confirmed {
    type Output = Result<(), LinkError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| LinkError::PublisherStopped))
    }
}

/// The `publish` span of a submission under the current span, with its
/// context; receipts without a trace context get the current span's.
/// Disabled, and no work, when tracing is off.
fn publish_span(receipts: &mut [Receipt]) -> (tracing::Span, Option<TraceContext>) {
    if !trace_context::enabled() {
        return (tracing::Span::none(), None);
    }
    if let Some(caller) = trace_context::current() {
        for r in receipts.iter_mut().filter(|r| r.trace_id.is_none()) {
            r.set_trace(caller, true);
        }
    }
    let span = tracing::info_span!(
        target: trace_context::TARGET,
        "publish",
        otel.name = "publish chit.receipts",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.name = "publish",
        "messaging.operation.type" = "send",
        messaging.destination.name = names::RECEIPT_EXCHANGE,
        messaging.batch.message_count = receipts.len(),
    );
    let trace = trace_context::of(&span);
    (span, trace)
}

impl ReceiptPublisher {
    /// Starts the publisher on `link`; `source` (`worker`, `producer`, ...) goes
    /// into the routing key.
    pub fn spawn(
        link: Arc<BrokerLink>,
        source: &str,
        config: BatchConfig,
    ) -> (Self, JoinHandle<()>) {
        Self::spawn_observed(link, source, config, None)
    }

    /// As [`ReceiptPublisher::spawn`], telling `observer` of each confirmed batch.
    pub fn spawn_observed(
        link: Arc<BrokerLink>,
        source: &str,
        config: BatchConfig,
        observer: Option<Arc<dyn ReceiptObserver>>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let routing_key = names::receipt_routing_key(source);
        let handle = tokio::spawn(run(link, rx, routing_key, config, observer));
        (ReceiptPublisher { tx }, handle)
    }

    /// Queues one receipt; no confirm is awaited.
    pub async fn emit(&self, receipt: Receipt) {
        let mut receipts = vec![receipt];
        let (_span, trace) = publish_span(&mut receipts);
        let _ = self
            .tx
            .send(Submission {
                receipts,
                confirmed: None,
                trace,
            })
            .await;
    }

    /// Queues receipts and returns a future that resolves on their confirm.
    pub async fn submit(&self, mut receipts: Vec<Receipt>) -> Confirmed {
        let (span, trace) = publish_span(&mut receipts);
        let (tx, rx) = oneshot::channel();
        let _ = self
            .tx
            .send(Submission {
                receipts,
                confirmed: Some(tx),
                trace,
            })
            .await;
        Confirmed { rx, _span: span }
    }
}

type InFlight = Pin<Box<dyn Future<Output = (SealedBatch, PublishOutcome)> + Send>>;

async fn run(
    link: Arc<BrokerLink>,
    mut rx: mpsc::Receiver<Submission>,
    routing_key: String,
    config: BatchConfig,
    observer: Option<Arc<dyn ReceiptObserver>>,
) {
    let mut pending: Vec<Receipt> = Vec::with_capacity(config.max_receipts);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut trace: Option<TraceContext> = None;
    let mut linger_until: Option<Instant> = None;
    let mut sealed: VecDeque<SealedBatch> = VecDeque::new();
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut closed = false;
    let mut nack_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let props = BasicProperties::default()
        .with_content_type(ContentType::Json.as_str().into())
        .with_delivery_mode(2);

    loop {
        let now = Instant::now();
        // Someone waits on these receipts and the line is nearly idle (at most
        // one batch awaiting its confirm): send now rather than linger. Under
        // load more batches are in flight, so receipts gather until one is
        // confirmed (group commit).
        let idle_and_awaited = !waiters.is_empty() && in_flight.len() < 2 && sealed.is_empty();
        if !pending.is_empty()
            && (pending.len() >= config.max_receipts
                || closed
                || idle_and_awaited
                || linger_until.is_some_and(|t| t <= now))
        {
            sealed.push_back(seal(&mut pending, &mut waiters, trace.take()));
            linger_until = None;
        }
        if closed && pending.is_empty() && sealed.is_empty() && in_flight.is_empty() {
            return;
        }
        if !sealed.is_empty() && in_flight.len() < config.max_in_flight {
            match link.session().await {
                Ok(session) => {
                    while in_flight.len() < config.max_in_flight {
                        let Some(batch) = sealed.pop_front() else {
                            break;
                        };
                        // Not mandatory: the sink queue is bound by the core
                        // topology, and a return would have nobody to go to.
                        let properties = match &batch.trace {
                            Some(t) => trace_context::with_headers(&props, t, None),
                            None => props.clone(),
                        };
                        let message = Outgoing {
                            exchange: names::RECEIPT_EXCHANGE,
                            routing_key: &routing_key,
                            body: &batch.body,
                            properties,
                            mandatory: false,
                        };
                        match send(&session.publisher, &message).await {
                            Ok(pending) => {
                                let pending: PendingConfirm = pending;
                                in_flight.push(Box::pin(async move { (batch, pending.await) }));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, receipts = batch.count, "receipt publish failed; will resend");
                                sealed.push_front(batch);
                                // The next `session` replaces a dead channel, or
                                // the connection; it never drops a live one whose
                                // consumers hold leases.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    // Only a permanent error (bad URL, access refused) gets here.
                    tracing::error!(error = %e, "receipt publisher cannot reach the broker; dropping nothing, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // Bounded: stop taking receipts while sealed batches wait for room in
        // flight (a blocked broker), so memory stays flat and callers wait.
        let can_take =
            !closed && pending.len() < config.max_receipts && sealed.len() < config.max_in_flight;
        tokio::select! {
            Some((batch, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                match outcome {
                    PublishOutcome::Confirmed => {
                        nack_backoff.reset();
                        if let Some(o) = &observer { o.batch_confirmed(batch.count); }
                        for w in batch.waiters { let _ = w.send(()); }
                    }
                    PublishOutcome::Nacked => {
                        tracing::warn!(receipts = batch.count, "broker nacked a receipt batch; resending on a new channel");
                        sealed.push_back(batch);
                        // The nacking channel may nack for good (see
                        // `renew_publisher`); a new one, after a growing pause
                        // so a queue without a leader is not hammered.
                        link.renew_publisher().await;
                        tokio::time::sleep(nack_backoff.next_delay()).await;
                    }
                    PublishOutcome::Returned { reply_code, reply_text, .. } => {
                        // Only another publisher's mandatory message could be
                        // paired with ours here; ours is on the broker.
                        tracing::error!(reply_code, %reply_text, receipts = batch.count,
                            "a receipt batch was returned; sending it again");
                        sealed.push_back(batch);
                    }
                    PublishOutcome::Lost(e) => {
                        tracing::warn!(error = %e, receipts = batch.count, "receipt batch unconfirmed; resending");
                        sealed.push_front(batch);
                    }
                }
            }
            msg = rx.recv(), if can_take => match msg {
                Some(sub) => {
                    if pending.is_empty() {
                        linger_until = Some(Instant::now() + config.linger);
                    }
                    pending.extend(sub.receipts);
                    if let Some(w) = sub.confirmed { waiters.push(w); }
                    trace = trace.or(sub.trace);
                    // Take whatever else is already waiting without a wakeup each.
                    while pending.len() < config.max_receipts {
                        match rx.try_recv() {
                            Ok(sub) => {
                                pending.extend(sub.receipts);
                                if let Some(w) = sub.confirmed { waiters.push(w); }
                                trace = trace.or(sub.trace);
                            }
                            Err(_) => break,
                        }
                    }
                }
                None => closed = true,
            },
            _ = sleep_until_opt(linger_until), if linger_until.is_some() => {}
            // Nothing to wait on but the broker coming back: try again shortly.
            else => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn seal(
    pending: &mut Vec<Receipt>,
    waiters: &mut Vec<oneshot::Sender<()>>,
    trace: Option<TraceContext>,
) -> SealedBatch {
    let body = ContentType::Json
        .encode(pending.as_slice())
        .expect("receipts always serialise to JSON");
    let count = pending.len();
    pending.clear();
    SealedBatch {
        body,
        count,
        waiters: std::mem::take(waiters),
        trace,
    }
}

/// Sends `receipt`, the receipt that ended a task, to the queue the task
/// named in `reply_to`, through [`names::REPLY_EXCHANGE`] with that name as
/// routing key (the queue binds itself there): JSON, AMQP `type`
/// [`names::REPLY_MESSAGE_TYPE`], `message_id` the receipt's id and
/// `correlation_id` the task's own (as an RPC client that set one expects),
/// else the task id. Waits for the confirm until `deadline`.
///
/// Call it only once the receipt itself is confirmed on
/// [`names::RECEIPT_EXCHANGE`]: a reply must never announce a receipt the
/// sinks may not get. Not mandatory and not persistent: a reply queue is
/// its client's, exclusive and gone with its connection, so a reply nobody
/// waits for any more is dropped by the broker, not returned. It goes out on
/// the session's pipelined channel beside the receipt batches, which no
/// mandatory message shares.
pub async fn send_reply(
    link: &BrokerLink,
    reply_to: &str,
    correlation_id: Option<&str>,
    receipt: &Receipt,
    deadline: std::time::Instant,
) -> PublishOutcome {
    let body = ContentType::Json
        .encode(receipt)
        .expect("receipts always serialise to JSON");
    let properties = BasicProperties::default()
        .with_content_type(ContentType::Json.as_str().into())
        .with_type(names::REPLY_MESSAGE_TYPE.into())
        .with_message_id(receipt.receipt_id.as_str().into())
        .with_correlation_id(correlation_id.unwrap_or(&receipt.task_id).into())
        .with_delivery_mode(1);
    let message = Outgoing {
        exchange: names::REPLY_EXCHANGE,
        routing_key: reply_to,
        body: &body,
        properties,
        mandatory: false,
    };
    let answer = async {
        let session = link.session_until(Some(deadline)).await?;
        let pending = send(&session.publisher, &message).await?;
        Ok::<_, LinkError>(pending.await)
    };
    match tokio::time::timeout_at(deadline.into(), answer).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => PublishOutcome::Lost(e),
        Err(_) => PublishOutcome::Lost(LinkError::Deadline(
            "no broker confirm for the reply before the deadline".into(),
        )),
    }
}
