//! The consumer loop: one session per connection, leases in, tasks out.
//!
//! Each connection gets one consuming channel with a lease book, and one
//! consumer per capability queue. When the connection goes, the loop
//! reconnects, re-subscribes and carries on; tasks still running from the old
//! connection finish and publish their receipts, but their leases died with
//! the channel, so the broker redelivers them and the chain shows it.
//!
//! On shutdown the loop cancels its consumers and hands every delivery that
//! has not started back to its queue as a fresh copy (`attempt::hand_back`),
//! so a drain does not count as a delivery of the task.

use crate::attempt::{self, Served, Shared};
use crate::executor::CancelReason;
use crate::lease::LeaseBook;
use crate::shutdown::Shutdown;
use broker_topology::names;
use futures_util::StreamExt;
use futures_util::stream::select_all;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub(crate) struct Loop {
    pub(crate) shared: Arc<Shared>,
    pub(crate) served: Vec<Arc<Served>>,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: u16,
    pub(crate) drain_timeout: Duration,
    pub(crate) kill_grace: Duration,
    /// Every task, until its lease is settled: what the drain waits for.
    pub(crate) tasks: tokio_util::task::TaskTracker,
}

enum SessionEnd {
    Shutdown,
    Lost,
}

impl Loop {
    pub(crate) async fn run(self, mut shutdown: Shutdown) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut books = Vec::new();
        while !shutdown.is_shutdown() {
            let session = tokio::select! {
                s = self.shared.link.session() => s,
                _ = shutdown.recv() => break,
            };
            let session = match session {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the broker; retrying in 5 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = shutdown.recv() => break,
                    }
                }
            };
            match self
                .session(&session, &permits, &mut shutdown, &mut books)
                .await
            {
                Ok(SessionEnd::Shutdown) => break,
                Ok(SessionEnd::Lost) => {
                    tracing::warn!(
                        generation = session.generation,
                        "lost the consuming channel; re-subscribing"
                    );
                    self.shared.link.invalidate(session.generation).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not subscribe; reconnecting");
                    self.shared.link.invalidate(session.generation).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            books.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
        }
        self.drain(&permits).await;
        for book in books {
            let _ = tokio::time::timeout(Duration::from_secs(5), book).await;
        }
    }

    async fn session(
        &self,
        session: &broker_link::Session,
        permits: &Arc<Semaphore>,
        shutdown: &mut Shutdown,
        books: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<SessionEnd, lapin::Error> {
        let channel = session.connection.create_channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions { global: false })
            .await?;
        let (leases, book) = LeaseBook::start(channel.clone());
        books.push(book);
        let mut streams = Vec::new();
        let mut tags = Vec::new();
        for (i, served) in self.served.iter().enumerate() {
            let tag = format!("{}/{}", self.shared.worker_id, served.config.name);
            let consumer = channel
                .basic_consume(
                    names::task_queue(&served.config.name).into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tags.push(tag);
            streams.push(consumer.map(move |d| (i, d)).boxed());
        }
        tracing::info!(
            generation = session.generation,
            capabilities = ?self.served.iter().map(|s| s.config.name.as_str()).collect::<Vec<_>>(),
            prefetch = self.prefetch,
            "consuming"
        );
        let mut deliveries = select_all(streams);
        // A delivery caught waiting for a slot when the stop came.
        let mut waiting = None;
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.recv() => {
                    // Consumers first, so no hand-back copy comes back here.
                    for tag in &tags {
                        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    }
                    if let Some((i, d)) = waiting.take() {
                        self.hand_back(i, d, &leases);
                    }
                    // Deliveries already pushed but not started go back to the queue.
                    while let Ok(Some((i, Ok(d)))) = tokio::time::timeout(Duration::from_millis(50), deliveries.next()).await {
                        leases.taken(d.delivery_tag);
                        self.hand_back(i, d, &leases);
                    }
                    return Ok(SessionEnd::Shutdown);
                }
                d = deliveries.next() => d,
            };
            let (i, delivery) = match next {
                Some((i, Ok(d))) => (i, d),
                Some((_, Err(e))) => {
                    tracing::warn!(error = %e, "consumer error");
                    return Ok(SessionEnd::Lost);
                }
                None => return Ok(SessionEnd::Lost),
            };
            leases.taken(delivery.delivery_tag);
            let permit = tokio::select! {
                biased;
                _ = shutdown.recv() => {
                    waiting = Some((i, delivery));
                    continue;
                }
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let shared = self.shared.clone();
            let served = self.served[i].clone();
            let leases = leases.clone();
            // Boxed, so that spawning moves a pointer: the attempt's future
            // is large, and tokio copied it into its task cell and back
            // (memcpy was the worker's top symbol at saturation).
            self.tasks.spawn(Box::pin(attempt::run(
                shared, served, delivery, leases, permit,
            )));
        }
    }

    /// Hands a delivery of capability `i` that did not start back to its
    /// queue, as a task the drain waits for.
    fn hand_back(&self, i: usize, delivery: lapin::message::Delivery, leases: &LeaseBook) {
        let shared = self.shared.clone();
        let served = self.served[i].clone();
        let leases = leases.clone();
        self.tasks.spawn(async move {
            let tag = delivery.delivery_tag;
            if let Some(how) =
                attempt::hand_back(&shared, &served.config.name, &delivery, None).await
            {
                leases.settle(tag, how);
            }
        });
    }

    /// Waits for running tasks, up to the drain timeout, to finish and settle
    /// (final receipt confirmed, lease acked); then stops the rest, whose
    /// attempts end as `interrupted` and go back to their queues as the next
    /// attempt.
    async fn drain(&self, permits: &Arc<Semaphore>) {
        let running = self.concurrency - permits.available_permits();
        tracing::info!(
            running,
            drain_timeout_ms = self.drain_timeout.as_millis() as u64,
            "draining"
        );
        self.tasks.close();
        if tokio::time::timeout(self.drain_timeout, self.tasks.wait())
            .await
            .is_ok()
        {
            tracing::info!("drained: every task finished and settled");
            return;
        }
        tracing::warn!(
            left = self.tasks.len(),
            "drain timeout: stopping running tasks; they return to their queues as their next attempt"
        );
        self.shared.cancels.cancel_all(CancelReason::Shutdown);
        let _ =
            tokio::time::timeout(self.kill_grace + Duration::from_secs(2), self.tasks.wait()).await;
    }
}
