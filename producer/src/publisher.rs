//! [`Producer`]: publishes tasks with the mandatory flag and pipelined
//! confirms, then emits their `queued` receipts.
//!
//! Each task carries the id of its `queued` receipt in a header, chosen before
//! publishing, so the worker can name it as the parent of `accepted` even when
//! the receipts arrive at the sink in another order.
//!
//! A delayed task ([`TaskSpec::delay`]) goes into a delay queue of its
//! capability instead, after a check that its task queue exists (the
//! mandatory flag cannot catch a missing one later, when the broker moves
//! the task there), and its first receipt is `scheduled`.
//!
//! [`Producer::publish_and_wait`] publishes a task with the producer's reply
//! queue as `reply_to` and waits for the receipt that ends it (`reply`).
//!
//! With tracing on, each send of a task is a `publish` span (OpenTelemetry
//! messaging conventions, kind producer) lasting until its confirm, under
//! the task's own `traceparent` when it came with one; the task goes out
//! with that span's context, and its `queued` receipt records it.

use crate::error::{PublishError, PublishErrorKind};
use crate::pass::{PublishPass, Recorded};
use crate::reply::Replies;
use crate::task::TaskSpec;
use broker_link::publish::{self, Outgoing};
use broker_link::trace_context;
use broker_link::{BatchConfig, BrokerLink, LinkError, PublishOutcome, ReceiptPublisher, Session};
use broker_topology::{Receipt, TaskEnvelope, Topology, TraceContext, names};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::Channel;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tracing::Instrument;

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Broker URL.
    pub amqp_url: String,
    /// How long a publish keeps retrying while the broker is unreachable.
    pub publish_deadline: Duration,
    /// Tasks awaiting confirms at once.
    pub max_in_flight: usize,
}

impl ProducerConfig {
    /// Defaults for `amqp_url`: 30 s deadline, 1,000 tasks in flight.
    pub fn new(amqp_url: impl Into<String>) -> Self {
        ProducerConfig {
            amqp_url: amqp_url.into(),
            publish_deadline: Duration::from_secs(30),
            max_in_flight: 1000,
        }
    }
}

/// A task the broker confirmed, with its queued receipt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The task id (`message_id`).
    pub task_id: String,
    /// The id of its first receipt: `queued`, or `scheduled` for a delayed
    /// task.
    pub queued_receipt_id: String,
}

/// How [`Producer::publish_and_wait`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitOutcome {
    /// The task ended: `receipt` is the receipt that says how (`success`;
    /// `failure` not to be retried, which a `dead_lettered` follows;
    /// `dead_lettered` by the broker; `cancelled`; `purged`), confirmed on
    /// the receipts exchange before it was sent.
    Finished {
        /// The task as published.
        published: Published,
        /// The receipt that ended it.
        receipt: Receipt,
    },
    /// No such receipt within the time given: the task is still queued,
    /// scheduled or running (or its reply was lost with a connection).
    TimedOut {
        /// The task as published.
        published: Published,
    },
}

/// What one round of publishing on a channel came to.
struct Round {
    /// Tasks to publish again on a new connection.
    retry: Vec<usize>,
    /// The broker took at least one message: it is not blocking publishers.
    took: bool,
    /// The broker nacked at least one: the channel is not reused.
    nacked: bool,
}

/// Publishes tasks. One connection, shared by clones.
#[derive(Clone)]
pub struct Producer {
    link: Arc<BrokerLink>,
    receipts: Arc<OnceCell<ReceiptPublisher>>,
    replies: Arc<Replies>,
    config: ProducerConfig,
}

impl Producer {
    /// A producer on its own connection. Connects lazily, on first publish;
    /// spawns nothing until then, so it can be made outside a runtime.
    pub fn new(config: ProducerConfig) -> Self {
        let link = BrokerLink::new(config.amqp_url.clone(), "chit-producer", Topology::core());
        Producer {
            link,
            receipts: Arc::default(),
            replies: Arc::default(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// The connection owner, for health reporting and one-off publishes.
    pub fn link(&self) -> &Arc<BrokerLink> {
        &self.link
    }

    /// The receipt publisher, started on first use.
    pub(crate) async fn receipts(&self) -> &ReceiptPublisher {
        self.receipts
            .get_or_init(|| async {
                ReceiptPublisher::spawn(self.link.clone(), "producer", BatchConfig::default()).0
            })
            .await
    }

    /// Publishes one task and waits for its confirm and its queued receipt's.
    pub async fn publish(&self, task: TaskSpec) -> Result<Published, PublishError> {
        self.publish_many(vec![task], |_| {})
            .await
            .pop()
            .expect("one result per task")
    }

    /// Publishes one task and waits, up to `timeout` from the call, for the
    /// receipt that ends it: [`WaitOutcome::Finished`] with that receipt, or
    /// [`WaitOutcome::TimedOut`]. The publish itself is bounded by the
    /// publish deadline, and its failure is the error.
    ///
    /// The task goes out with this producer's reply queue as `reply_to`
    /// (one per connection, see `reply`); the worker that ends it sends the
    /// receipt there once the receipt is confirmed. Nothing polls the store.
    /// A retry, a redelivery and a delay keep `reply_to`, so only the end of
    /// the task answers. Many calls may wait at once, on clones too.
    pub async fn publish_and_wait(
        &self,
        task: TaskSpec,
        timeout: Duration,
    ) -> Result<WaitOutcome, PublishError> {
        let until = Instant::now() + timeout;
        // Before the publish: a quick worker's reply must find the waiter.
        let mut waiter = self.replies.register(task.task_id());
        let mut pass = PublishPass::new(vec![task]);
        pass.want_reply(0);
        let published = self
            .publish_pass(pass, |_| {})
            .await
            .pop()
            .expect("one result per task")?;
        match tokio::time::timeout_at(until.into(), &mut waiter.reply).await {
            Ok(Ok(receipt)) => Ok(WaitOutcome::Finished { published, receipt }),
            // The sender goes only with a delivered reply; `Err` cannot be.
            Ok(Err(_)) | Err(_) => Ok(WaitOutcome::TimedOut { published }),
        }
    }

    /// Publishes many tasks with pipelined confirms. Returns one result per task,
    /// in order; `progress` is called with the number of tasks settled so far.
    /// Tasks whose confirm was lost with the connection are published again on
    /// the next one, until the publish deadline. A task whose envelope fails
    /// [`TaskSpec::check`] is not published and gets its error; a delayed
    /// task whose capability has no task queue is not published and fails
    /// as unroutable.
    pub async fn publish_many(
        &self,
        tasks: Vec<TaskSpec>,
        progress: impl FnMut(usize),
    ) -> Vec<Result<Published, PublishError>> {
        self.publish_pass(PublishPass::new(tasks), progress).await
    }

    async fn publish_pass(
        &self,
        mut pass: PublishPass,
        mut progress: impl FnMut(usize),
    ) -> Vec<Result<Published, PublishError>> {
        let deadline = Instant::now() + self.config.publish_deadline;
        let mut todo = Vec::with_capacity(pass.len());
        for i in 0..pass.len() {
            match pass.task(i).spec.check() {
                Ok(()) => todo.push(i),
                Err(e) => pass.refuse(i, e),
            }
        }
        while !todo.is_empty() {
            let session = match self.link.session_until(Some(deadline)).await {
                Ok(s) => s,
                Err(e) => {
                    let message = if !self.link.ever_connected() || !e.is_transient() {
                        format!("cannot publish: {e}")
                    } else {
                        format!(
                            "no broker confirm within {:?}: {e}",
                            self.config.publish_deadline
                        )
                    };
                    pass.fail_unsettled(&PublishError::new(PublishErrorKind::Unavailable, message));
                    break;
                }
            };
            let channel = match publish::take_pass_channel(&session).await {
                Ok(c) => c,
                Err(_) => {
                    self.link.invalidate(session.generation).await;
                    continue;
                }
            };
            // Set up on this connection: the reply queue, which dies with
            // it, and the delay queues of delayed tasks.
            let reply_to = if pass.wants_replies() {
                match self.replies.queue(&session).await {
                    Ok(q) => Some(q),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot declare the reply queue; reconnecting");
                        self.link.invalidate(session.generation).await;
                        continue;
                    }
                }
            } else {
                None
            };
            if let Err(e) = self.prepare_delays(&session, &mut pass, &mut todo).await {
                if e.is_transient() {
                    self.link.invalidate(session.generation).await;
                    continue;
                }
                // Refused for good (a delay queue declared with other
                // arguments, say): the delayed tasks fail, the others go.
                let e = PublishError::from_link("declaring the delay queues", e);
                todo.retain(|&i| {
                    let delayed = pass.task(i).delay_ms.is_some();
                    if delayed {
                        pass.refuse(i, e.clone());
                    }
                    !delayed
                });
            }
            // One round over the connection, bounded by the deadline: a
            // blocked broker that never confirms must not hold the caller past it.
            let round = tokio::time::timeout_at(
                deadline.into(),
                self.round(
                    &channel,
                    &mut pass,
                    &todo,
                    reply_to.as_deref(),
                    &mut progress,
                ),
            )
            .await;
            match round {
                Ok(Round {
                    retry,
                    took,
                    nacked,
                }) => {
                    if took {
                        self.link.status().publish_went_through();
                    }
                    publish::give_back_pass_channel(&session, channel, retry.is_empty() && !nacked);
                    if !retry.is_empty() {
                        self.link.invalidate(session.generation).await;
                    }
                    todo = retry;
                }
                Err(_) => {
                    pass.fail_unsettled(&PublishError::new(
                        PublishErrorKind::Unavailable,
                        format!(
                            "no broker confirm within {:?} (is the broker blocking publishers?)",
                            self.config.publish_deadline
                        ),
                    ));
                    self.link.invalidate(session.generation).await;
                    break;
                }
            }
        }
        self.send_queued_receipts(&mut pass, deadline).await;
        pass.into_results()
    }

    /// Before delayed tasks are sent on `session`: refuses, as unroutable,
    /// those whose capability has no task queue (the broker would drop them
    /// when their delay is up, long after the mandatory flag could tell),
    /// and declares the delay queues of the others. Declared before every
    /// publish, as the worker's retries are: a declaration restarts a delay
    /// queue's `x-expires` clock, which is longer than its delay.
    async fn prepare_delays(
        &self,
        session: &Session,
        pass: &mut PublishPass,
        todo: &mut Vec<usize>,
    ) -> Result<(), LinkError> {
        let mut capabilities: Vec<&str> = todo
            .iter()
            .filter(|i| pass.task(**i).delay_ms.is_some())
            .map(|i| pass.task(*i).spec.envelope.task_type.as_str())
            .collect();
        if capabilities.is_empty() {
            return Ok(());
        }
        capabilities.sort_unstable();
        capabilities.dedup();
        let mut missing = Vec::new();
        for cap in capabilities {
            let queue = names::task_queue(cap);
            if !broker_link::declare::queue_exists(&session.connection, &queue).await? {
                missing.push(cap.to_owned());
            }
        }
        let mut routes = Topology::default();
        let mut kept = Vec::with_capacity(todo.len());
        for &i in todo.iter() {
            let task = pass.task(i);
            let cap = &task.spec.envelope.task_type;
            match task.delay_ms {
                Some(_) if missing.contains(cap) => {
                    pass.refuse(i, crate::pass::unroutable(cap));
                    continue;
                }
                Some(ms) => routes.merge(Topology::delay_route(cap, ms)),
                None => {}
            }
            kept.push(i);
        }
        *todo = kept;
        if !routes.queues.is_empty() {
            broker_link::declare::apply(&session.connection, &routes).await?;
        }
        Ok(())
    }

    /// Publishes the tasks `todo` with up to `max_in_flight` confirms
    /// outstanding, and records each outcome. Returns the tasks to publish
    /// again on a new connection, and what the broker did. Tasks that want a reply go out with
    /// `reply_to`, the reply queue of this connection.
    async fn round(
        &self,
        channel: &Channel,
        pass: &mut PublishPass,
        todo: &[usize],
        reply_to: Option<&str>,
        progress: &mut impl FnMut(usize),
    ) -> Round {
        let mut retry = Vec::new();
        let mut took = false;
        let mut nacked = false;
        let mut broken = false;
        let mut in_flight = FuturesUnordered::new();
        let mut waiting = todo.iter().copied();
        let mut next = waiting.next();
        loop {
            // Publish while there is room in flight; otherwise settle one.
            if let Some(i) = next.filter(|_| in_flight.len() < self.config.max_in_flight) {
                next = waiting.next();
                if broken {
                    retry.push(i);
                    continue;
                }
                pass.mark_sent(i, chrono::Utc::now());
                let pending = pass.task(i);
                let task = &pending.spec;
                let (exchange, routing_key) = pending.destination();
                let mut properties = task.properties();
                if let Some(queue) = reply_to.filter(|_| pending.wants_reply) {
                    properties = properties.with_reply_to(queue.into());
                }
                let body = task.body.clone();
                let span = publish_span(&task.envelope);
                if let Some(trace) = trace_context::of(&span) {
                    pass.mark_traced(i, trace);
                }
                // Not awaited here: lapin resolves a publish once the I/O
                // loop has written its frames, so awaiting each in turn
                // woke that thread and this task once per message. Polled
                // together, they reach the I/O loop as one run of frames.
                // lapin takes a publish's confirm tag and queues its frames
                // in one poll, so each confirm still matches its message.
                in_flight.push(
                    async move {
                        let message = Outgoing {
                            exchange: &exchange,
                            routing_key: &routing_key,
                            body: &body,
                            properties,
                            mandatory: true,
                        };
                        match publish::send(channel, &message).await {
                            Ok(pending) => (i, Ok(pending.await)),
                            Err(e) => (i, Err(e)),
                        }
                    }
                    .instrument(span),
                );
                continue;
            }
            let Some((i, sent)) = in_flight.next().await else {
                break;
            };
            let outcome: PublishOutcome = match sent {
                Ok(outcome) => outcome,
                Err(_) => {
                    // The channel broke: this task and every later one go
                    // again on the next connection.
                    broken = true;
                    retry.push(i);
                    continue;
                }
            };
            match &outcome {
                PublishOutcome::Confirmed | PublishOutcome::Returned { .. } => took = true,
                PublishOutcome::Nacked => nacked = true,
                _ => {}
            }
            match pass.record(i, outcome) {
                Recorded::Settled => progress(pass.settled()),
                Recorded::Retry => retry.push(i),
            }
        }
        Round {
            retry,
            took,
            nacked,
        }
    }

    /// The `queued` receipts of the tasks the broker took, in confirmed
    /// batches; a task whose receipt is not confirmed by the deadline fails.
    async fn send_queued_receipts(&self, pass: &mut PublishPass, deadline: Instant) {
        let queued = pass.finish();
        if queued.is_empty() {
            return;
        }
        let receipts = self.receipts().await;
        let mut waits = Vec::new();
        for chunk in queued.chunks(500) {
            let ids: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            let batch = chunk.iter().map(|(_, r)| r.clone()).collect();
            waits.push((ids, receipts.submit(batch).await));
        }
        for (ids, confirmed) in waits {
            let outcome = tokio::time::timeout_at(deadline.into(), confirmed).await;
            if !matches!(outcome, Ok(Ok(()))) {
                for i in ids {
                    pass.queued_receipt_unconfirmed(i);
                }
            }
        }
    }
}

/// The `publish` span of one send of a task, under the task's own
/// `traceparent` when it has one. Disabled, and no work, when tracing is off.
fn publish_span(env: &TaskEnvelope) -> tracing::Span {
    let span = tracing::info_span!(
        target: trace_context::TARGET,
        "publish",
        otel.name = "publish chit.tasks",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.name = "publish",
        "messaging.operation.type" = "send",
        messaging.destination.name = names::TASK_EXCHANGE,
        messaging.rabbitmq.destination.routing_key = %env.task_type,
        messaging.message.id = %env.task_id,
        "chit.task.type" = %env.task_type,
        chit.task.attempt = env.attempt,
    );
    if let Some(parent) = env.traceparent.as_deref().and_then(TraceContext::parse) {
        trace_context::set_parent(&span, &parent, env.tracestate.as_deref());
    }
    span
}
