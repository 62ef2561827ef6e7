//! The sink's main loop: consume receipt batches, write them, ack after commit.
//!
//! [`run`] opens the store, serves the HTTP API and consumes
//! its sink group's queue ([`names::sink_queue`]) until `shutdown` completes. Deliveries are gathered
//! into a batch ([`crate::batch`]); a closed batch is written in one
//! transaction by a writer task while the next one fills, and only after the
//! commit are its messages acked, with one `multiple` ack up to its last
//! delivery tag. At most one write is in flight, so acks go out in tag order.
//!
//! Failures:
//! - a store write that fails is retried with backoff, the receipts still in
//!   memory and their messages unacked, until it succeeds (or shutdown);
//! - unless the store refuses the batch itself: after [`WHOLE_BATCH_TRIES`]
//!   failures that do not look transient, and if the store still takes a
//!   well-formed probe receipt ([`Store::check_writable`]), the batch is
//!   written message by message; the messages it still refuses are rejected
//!   without requeue, so the broker dead-letters them into the quarantine
//!   queue ([`names::SINK_QUARANTINE`]) and the rest is stored and acked.
//!   A store that refuses everything holds the batch instead: the receipts
//!   are not at fault;
//! - a message the sink never gets to settle (it crashes, or its connection
//!   drops, on it every time) is dead-lettered into the same quarantine by
//!   the broker once the sink queue's delivery limit is reached;
//! - a lost connection (the consumer stream ends or errors, an ack fails)
//!   ends the subscription: its unacked batches are dropped, because the
//!   broker redelivers their messages and inserts are idempotent, and the
//!   sink's [`BrokerLink`] reconnects with backoff and re-declares; the sink
//!   re-subscribes. Tags of a dead channel are never acked on a new one:
//!   batches belong to a subscription.
//! - refused credentials or a conflicting topology stop the sink with an
//!   error: waiting will not fix them.

use crate::api::{self, ApiState};
use crate::batch::Batch;
use crate::error::SinkError;
use crate::group::Roster;
use crate::metrics::SinkMetrics;
use crate::status::SinkStatus;
use crate::store::{Store, WriteStats};
use crate::{legacy, retention};
use broker_link::time::sleep_until_opt;
use broker_link::{Backoff, BrokerLink, Session};
use broker_topology::codec::BadReceipt;
use broker_topology::{Receipt, Topology, names};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Consumer};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, warn};

/// Where the HTTP API listens unless told otherwise.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8700";
/// Receipts per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// How long a batch stays open after its first message.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(10);
/// Unacked messages the broker may send ahead. Each holds up to 500
/// receipts, so this bounds the deliveries a sink buffers to tens of MB; a
/// batch that holds all of them is written at once, not at its deadline.
pub const DEFAULT_PREFETCH: u16 = 128;
/// The store used when none is configured.
pub const DEFAULT_STORE_URL: &str = "sqlite://./chit-receipts.db";
/// How often retention runs, when [`SinkConfig::retain`] is set.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Failed writes of a whole batch, none of them transient, before its
/// messages are written one by one to find the ones the store refuses.
const WHOLE_BATCH_TRIES: u32 = 3;

/// How long shutdown may spend committing the last batches.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(20);
/// How long shutdown waits for HTTP requests in progress.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// The connection name shown in the broker's management UI.
const CONNECTION_NAME: &str = "chit-receipts-sink";

/// How the sink is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Broker URL.
    pub amqp_url: String,
    /// `sqlite://PATH` or `postgres://...`.
    pub store_url: String,
    /// Where the HTTP API listens (port 0 picks one; it is logged).
    pub http_addr: SocketAddr,
    /// A batch closes at this many receipts (at least 1)...
    pub batch_size: usize,
    /// ...or this long after its first message.
    pub batch_wait: Duration,
    /// Unacked messages the broker may send ahead (`basic.qos`).
    pub prefetch: u16,
    /// The sink group: every group gets every receipt; sinks of one group
    /// share its queue and must write to one store.
    pub group: String,
    /// Delete finished tasks (see [`crate::TaskState::is_finished`]) whose
    /// last receipt is older than this, with their chains; `None` keeps
    /// everything.
    pub retain: Option<Duration>,
    /// How often retention runs (first at start).
    pub prune_every: Duration,
}

impl SinkConfig {
    /// The defaults, with this broker and store.
    pub fn new(amqp_url: impl Into<String>, store_url: impl Into<String>) -> Self {
        SinkConfig {
            amqp_url: amqp_url.into(),
            store_url: store_url.into(),
            ..SinkConfig::default()
        }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            amqp_url: broker_link::DEFAULT_AMQP_URL.into(),
            store_url: DEFAULT_STORE_URL.into(),
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("valid default address"),
            batch_size: DEFAULT_BATCH_SIZE,
            batch_wait: DEFAULT_BATCH_WAIT,
            prefetch: DEFAULT_PREFETCH,
            group: names::DEFAULT_SINK_GROUP.into(),
            retain: None,
            prune_every: DEFAULT_PRUNE_EVERY,
        }
    }
}

/// Runs the sink until `shutdown` completes: binds `config.http_addr`, then
/// as [`serve`].
pub async fn run(
    config: SinkConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SinkError> {
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| SinkError::HttpBind {
            addr: config.http_addr,
            source,
        })?;
    serve(config, listener, shutdown).await
}

/// Runs the sink with the HTTP API on `listener` (so a caller can bind port 0
/// and learn the address) until `shutdown` completes; then stops consuming,
/// commits and acks the open batch, and returns.
///
/// Errors only when the store cannot be opened, the HTTP listener fails, or
/// the broker has a sink queue declared differently from chit's topology.
/// An unreachable broker is retried for as long as it takes.
pub async fn serve(
    config: SinkConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SinkError> {
    names::validate_sink_group(&config.group).map_err(|e| SinkError::BadGroup(e.to_string()))?;
    let store = Store::open(&config.store_url).await?;
    let link = BrokerLink::new(
        config.amqp_url.clone(),
        CONNECTION_NAME,
        Topology::for_sink_group(&config.group),
    );
    let roster = Roster::new(&config.group, &config.store_url);
    let status = Arc::new(SinkStatus::with_link(link.status()));
    // Every sink hears every heartbeat, on a queue of its own (see `workers`).
    let heartbeats = tokio::spawn(crate::workers::listen(
        link.clone(),
        status.workers().clone(),
        status.metrics().clone(),
    ));
    let addr = listener.local_addr().map_err(SinkError::Http)?;
    info!(
        http_addr = %addr,
        store = ?store.kind(),
        batch_size = config.batch_size,
        prefetch = config.prefetch,
        "receipts sink starting"
    );
    let pruner = config
        .retain
        .map(|age| tokio::spawn(retention::run(store.clone(), age, config.prune_every)));
    let app = api::router(ApiState::new(store.clone(), status.clone()));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });

    let result = consume(&config, &link, &roster, &store, &status, shutdown).await;
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    heartbeats.abort();
    link.close().await;

    let _ = stop_http.send(());
    match tokio::time::timeout(HTTP_DRAIN, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "HTTP server failed"),
        Ok(Err(e)) => error!(error = %e, "HTTP server task failed"),
        Err(_) => warn!("HTTP requests still running at shutdown; dropped"),
    }
    store.close().await;
    info!(totals = ?status.totals(), "receipts sink stopped");
    result
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send + 'a)>;

/// Subscriptions until shutdown: subscribe on the link's session, consume,
/// and subscribe again on a new session after a loss.
async fn consume(
    config: &SinkConfig,
    link: &BrokerLink,
    roster: &Roster,
    store: &Store,
    status: &SinkStatus,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SinkError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::default();
    loop {
        // The link waits out an unreachable broker; what it gives up on
        // (refused credentials, a conflicting topology) will not pass.
        let session = tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            s = link.session() => s,
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot use the broker");
                return Err(SinkError::Broker(e));
            }
        };
        let joined = match roster.join(link, &session).await {
            Err(e @ SinkError::GroupConflict { .. }) => {
                error!(error = %e, "refusing to start");
                return Err(e);
            }
            other => other,
        };
        let opened = match joined {
            Ok(()) => Subscription::open(&session, config).await,
            Err(e) => Err(e),
        };
        let err = match opened {
            Ok(subscription) => {
                info!(
                    queue = %names::sink_queue(&config.group),
                    group = %config.group,
                    "connected to broker; consuming receipts"
                );
                let mover = legacy::spawn_mover(&session, &config.group).await;
                let end = subscription
                    .run(config, store, status, shutdown.as_mut(), &mut backoff)
                    .await;
                if let Some(mover) = mover {
                    mover.abort();
                }
                match end {
                    SubscriptionEnd::Shutdown => return Ok(()),
                    SubscriptionEnd::Lost(e) => e,
                }
            }
            Err(e) => e,
        };
        link.invalidate(session.generation).await;
        let delay = backoff.next_delay();
        warn!(
            error = %err,
            delay_ms = delay.as_millis() as u64,
            "broker connection lost or unavailable; unacked receipts will be redelivered; reconnecting"
        );
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Why a subscription ended.
enum SubscriptionEnd {
    /// Shutdown was asked for, and the open batch was handled.
    Shutdown,
    /// The connection or channel is gone.
    Lost(SinkError),
}

/// What the ack after a commit needs, and what its log line says.
struct BatchMeta {
    /// The acker of the batch's last message.
    acker: Option<Acker>,
    /// Every message's acker, in delivery order, for settling them one by
    /// one when the store refused some.
    ackers: Vec<Option<Acker>>,
    receipts: usize,
    messages: usize,
    opened: Option<Instant>,
}

/// A write in progress.
struct InFlight {
    handle: JoinHandle<Written>,
    meta: BatchMeta,
}

/// What a writer task did with a batch.
#[derive(Debug, Default)]
struct Written {
    stats: WriteStats,
    /// Messages (indices into the batch) that the store refuses while it
    /// takes others: rejected into the quarantine.
    refused: HashSet<usize>,
}

/// A batch's entries, and which of them each message holds.
struct Entries {
    receipts: Vec<Receipt>,
    bad: Vec<BadReceipt>,
    spans: Vec<(Range<usize>, Range<usize>)>,
}

/// One channel and consumer on the link's session, and the batches read
/// through them.
struct Subscription {
    channel: Channel,
    consumer: Consumer,
}

impl Subscription {
    async fn open(session: &Session, config: &SinkConfig) -> Result<Subscription, SinkError> {
        let channel = session.connection.create_channel().await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("{CONNECTION_NAME}-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                names::sink_queue(&config.group).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Subscription { channel, consumer })
    }

    async fn run(
        mut self,
        config: &SinkConfig,
        store: &Store,
        status: &SinkStatus,
        mut shutdown: Shutdown<'_>,
        backoff: &mut Backoff,
    ) -> SubscriptionEnd {
        let batch_size = config.batch_size.max(1);
        let mut open = Batch::default();
        let mut in_flight: Option<InFlight> = None;
        let lost = loop {
            let full = open.len() >= batch_size;
            let deadline = open.deadline(config.batch_wait);
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => break None,
                joined = async { (&mut in_flight.as_mut().expect("guarded").handle).await },
                    if in_flight.is_some() =>
                {
                    let meta = in_flight.take().expect("guarded").meta;
                    if let Err(e) = ack_committed(joined, meta, status).await {
                        break Some(e);
                    }
                    backoff.reset();
                    if open.is_ready(batch_size, config.batch_wait, Instant::now()) {
                        in_flight = Some(start_write(store, status, &config.group, std::mem::take(&mut open)));
                    }
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() && in_flight.is_none() => {
                    in_flight = Some(start_write(store, status, &config.group, std::mem::take(&mut open)));
                }
                next = self.consumer.next(), if !full => match next {
                    Some(Ok(delivery)) => {
                        let ct = delivery.properties.content_type().as_ref().map(|c| c.as_str());
                        open.add(ct, &delivery.data, Some(delivery.acker));
                        let closes = open.len() >= batch_size || open.holds_all_credit(config.prefetch);
                        if closes && in_flight.is_none() {
                            in_flight = Some(start_write(store, status, &config.group, std::mem::take(&mut open)));
                        }
                    }
                    Some(Err(e)) => break Some(SinkError::Amqp(e)),
                    None => break Some(SinkError::ConnectionLost("the broker cancelled the consumer".into())),
                },
            }
        };
        match lost {
            Some(e) => {
                // The broker requeues everything unacked; a write still running
                // would only store what redelivery brings back anyway.
                if let Some(f) = in_flight {
                    f.handle.abort();
                }
                SubscriptionEnd::Lost(e)
            }
            None => {
                self.drain(store, status, &config.group, in_flight, open)
                    .await;
                SubscriptionEnd::Shutdown
            }
        }
    }

    /// Shutdown: stop deliveries, commit and ack what was read, close.
    async fn drain(
        self,
        store: &Store,
        status: &SinkStatus,
        group: &str,
        in_flight: Option<InFlight>,
        open: Batch,
    ) {
        info!(
            receipts = open.receipts.len(),
            "shutting down: stopping consumption and committing the open batch"
        );
        let _ = self
            .channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default())
            .await;
        let flush = async {
            if let Some(f) = in_flight {
                ack_committed(f.handle.await, f.meta, status).await?;
            }
            if !open.is_empty() {
                let f = start_write(store, status, group, open);
                ack_committed(f.handle.await, f.meta, status).await?;
            }
            Ok::<(), SinkError>(())
        };
        match tokio::time::timeout(SHUTDOWN_FLUSH, flush).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not ack the last batch; it will be redelivered"),
            Err(_) => warn!("store too slow at shutdown; unacked receipts will be redelivered"),
        }
        let _ = self
            .channel
            .close(200, "receipts sink stopping".into())
            .await;
    }
}

/// Hands a closed batch to a writer task.
fn start_write(store: &Store, status: &SinkStatus, group: &str, batch: Batch) -> InFlight {
    let opened = batch.opened();
    let (spans, ackers) = batch
        .spans
        .into_iter()
        .map(|s| ((s.receipts, s.bad), s.acker))
        .unzip();
    let meta = BatchMeta {
        receipts: batch.receipts.len(),
        messages: batch.messages,
        opened,
        acker: batch.last,
        ackers,
    };
    let entries = Entries {
        receipts: batch.receipts,
        bad: batch.bad,
        spans,
    };
    let metrics = status.metrics().clone();
    let span = crate::persist_span::persist_span(&entries.receipts, group);
    let handle = tokio::spawn(write_until_stored(store.clone(), entries, metrics).instrument(span));
    InFlight { handle, meta }
}

/// Writes a batch, retrying with backoff for as long as the store fails: the
/// receipts exist nowhere else but in unacked messages. Only when the store
/// refuses the batch itself (see the module docs) does it give up on the
/// messages at fault.
async fn write_until_stored(store: Store, batch: Entries, metrics: SinkMetrics) -> Written {
    let receipts = batch.receipts.len();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures: u32 = 0;
    loop {
        let began = std::time::Instant::now();
        let e = match store.write_batch(&batch.receipts, &batch.bad).await {
            Ok(stats) => {
                metrics.written(began.elapsed(), &batch.receipts);
                if failures > 0 {
                    info!(failures, receipts, "store write succeeded after retries");
                }
                return Written {
                    stats,
                    refused: HashSet::new(),
                };
            }
            Err(e) => e,
        };
        metrics.store_error();
        failures += 1;
        if !e.is_transient()
            && failures >= WHOLE_BATCH_TRIES
            && let Some(written) = write_one_by_one(&store, &batch, &metrics).await
        {
            return written;
        }
        let delay_ms = backoff.next_delay().as_millis() as u64;
        if e.is_transient() {
            warn!(error = %e, failures, receipts, delay_ms, "store write failed; retrying");
        } else {
            error!(error = %e, failures, receipts, delay_ms,
                "store write failed and does not look transient; retrying");
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
}

/// Writes each message of a refused batch on its own, once the store has
/// shown it takes a well-formed receipt. `None` when it does not, or when a
/// write fails in a way that may pass: then the store is at fault, and the
/// whole batch is retried.
async fn write_one_by_one(
    store: &Store,
    batch: &Entries,
    metrics: &SinkMetrics,
) -> Option<Written> {
    if let Err(e) = store.check_writable().await {
        error!(error = %e, "the store refuses even a well-formed receipt; holding the batch");
        return None;
    }
    let mut written = Written::default();
    for (i, (receipts, bad)) in batch.spans.iter().enumerate() {
        let receipts = &batch.receipts[receipts.clone()];
        let began = std::time::Instant::now();
        match store.write_batch(receipts, &batch.bad[bad.clone()]).await {
            Ok(stats) => {
                metrics.written(began.elapsed(), receipts);
                written.stats.add(&stats);
            }
            Err(e) if e.is_transient() => {
                metrics.store_error();
                return None;
            }
            Err(e) => {
                metrics.store_error();
                let task_ids: Vec<&str> = receipts.iter().map(|r| r.task_id.as_str()).collect();
                error!(error = %e, ?task_ids, queue = names::SINK_QUARANTINE,
                    "the store refuses this receipt message; moving it to the quarantine queue");
                written.refused.insert(i);
            }
        }
    }
    Some(written)
}

/// After a commit: ack every message of the batch at once, and log it.
async fn ack_committed(
    joined: Result<Written, tokio::task::JoinError>,
    meta: BatchMeta,
    status: &SinkStatus,
) -> Result<(), SinkError> {
    let Written { stats, refused } =
        joined.map_err(|e| SinkError::Internal(format!("batch writer task failed: {e}")))?;
    status.record(&stats);
    status
        .metrics()
        .committed(&stats, meta.receipts, refused.len());
    let settled = |done: Result<bool, lapin::Error>| match done {
        Ok(true) => Ok(()),
        Ok(false) => Err(SinkError::ConnectionLost(
            "the channel closed before the batch could be acked".into(),
        )),
        Err(e) => Err(SinkError::Amqp(e)),
    };
    if refused.is_empty() {
        if let Some(acker) = &meta.acker {
            settled(acker.ack(BasicAckOptions { multiple: true }).await)?;
        }
    } else {
        // One by one, in delivery order: the refused messages are rejected
        // without requeue, which dead-letters them into the quarantine.
        for (i, acker) in meta.ackers.iter().enumerate() {
            let Some(acker) = acker else { continue };
            if refused.contains(&i) {
                settled(acker.reject(BasicRejectOptions { requeue: false }).await)?;
            } else {
                settled(acker.ack(BasicAckOptions { multiple: false }).await)?;
            }
        }
    }
    let batch_ms = meta
        .opened
        .map(|t| t.elapsed().as_millis() as u64)
        .unwrap_or(0);
    if stats.quarantined > 0 {
        warn!(
            quarantined = stats.quarantined,
            "quarantined unreadable receipts"
        );
    }
    debug!(
        receipts = meta.receipts,
        messages = meta.messages,
        inserted = stats.inserted,
        duplicates = stats.duplicates,
        tasks = stats.tasks,
        batch_ms,
        "batch stored"
    );
    Ok(())
}
