//! [`Publishers`]: the gateway's pool of producers, each lent to one
//! request at a time.
//!
//! Why a pool of whole producers: a `producer::Producer` publishes every
//! task with the mandatory flag on one confirm channel, and lapin hands a
//! `basic.return` to whichever confirm it processes next on that channel.
//! One publish pass sorts that out by message id, but two requests
//! publishing on the same channel at once could swap a return: a task with
//! no queue answered 202, another answered 404. So each request borrows a
//! producer of its own for its publish, and the producers, each one
//! `BrokerLink` (a connection with its reconnects, its topology and its
//! `LinkState`), are the channels of the pool.
//!
//! A request with `?wait=` keeps its producer until the task ends (the
//! producer's reply queue brings the final receipt), so at most half the
//! pool may be waiting at once: submissions without a wait always find a
//! producer soon. Producers connect on first use, apart from the first,
//! which connects at start (for `/healthz`); the most recently returned
//! producer is lent first, so the connected ones are reused and the rest
//! connect only when requests overlap.
//!
//! The broker's "blocked" is remembered: RabbitMQ tells a connection it is
//! blocked only when it publishes during an alarm, and the producer drops a
//! connection whose confirm does not come by the deadline, so the link's
//! `Blocked` state lasts a few seconds at most. A watcher samples the links
//! every [`WATCH_EVERY`]; a block seen in the last [`BLOCK_MEMORY`], and
//! not followed by a publish that went through, makes the next submission
//! a 429 at once instead of another wait for the deadline.
//!
//! Why not `deadpool-lapin`: it pools connections it opens itself with
//! `lapin::Connection::connect`, outside `broker-link`, so its connections
//! would not re-declare the topology, report a `LinkState` (the blocked
//! state behind 429 and `/healthz`), inject trace context, or share the
//! project's one reading of a confirm. What the gateway needs from a pool,
//! exclusive checkout with a bounded wait, is a semaphore and a free list.

use broker_link::LinkState;
use producer::{Producer, ProducerConfig};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often the watcher looks at the links' states.
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How long a block, once seen, answers submissions with 429 unless a
/// publish goes through first.
const BLOCK_MEMORY: Duration = Duration::from_secs(10);

/// A fixed set of producers, lent out one request at a time.
pub(crate) struct Publishers {
    all: Vec<Producer>,
    free: Mutex<Vec<usize>>,
    permits: Arc<Semaphore>,
    waits: Arc<Semaphore>,
    /// The last block seen, and when.
    blocked_seen: Mutex<Option<(Instant, String)>>,
}

/// A producer on loan; it goes back to the pool when dropped.
pub(crate) struct Lent {
    pool: Arc<Publishers>,
    index: usize,
    _permit: OwnedSemaphorePermit,
    _wait: Option<OwnedSemaphorePermit>,
}

impl Lent {
    /// The producer.
    pub(crate) fn producer(&self) -> &Producer {
        &self.pool.all[self.index]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.free.lock().expect("publishers").push(self.index);
    }
}

impl Publishers {
    /// `n` producers with `config`, none connected yet.
    pub(crate) fn new(config: ProducerConfig, n: usize) -> Arc<Publishers> {
        let n = n.max(1);
        Arc::new(Publishers {
            all: (0..n).map(|_| Producer::new(config.clone())).collect(),
            free: Mutex::new((0..n).rev().collect()),
            permits: Arc::new(Semaphore::new(n)),
            waits: Arc::new(Semaphore::new((n / 2).max(1))),
            blocked_seen: Mutex::new(None),
        })
    }

    /// Connects the first producer in the background (it keeps trying,
    /// with backoff, until it reaches the broker), so the first request
    /// does not pay for the connection and `/healthz` tells the truth from
    /// the start.
    /// Also starts the watcher of blocked links, which ends with the pool.
    pub(crate) fn connect_first(self: &Arc<Self>) {
        let link = self.all[0].link().clone();
        tokio::spawn(async move {
            let _ = link.session().await;
        });
        let pool: Weak<Publishers> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_EVERY);
            loop {
                every.tick().await;
                let Some(pool) = pool.upgrade() else { break };
                if let Some(reason) = pool.blocked_now() {
                    pool.note_blocked(reason);
                }
            }
        });
    }

    fn blocked_now(&self) -> Option<String> {
        self.all.iter().find_map(|p| match p.link().state() {
            LinkState::Blocked(reason) => Some(reason),
            _ => None,
        })
    }

    fn note_blocked(&self, reason: String) {
        let mut seen = self.blocked_seen.lock().expect("publishers");
        if seen.is_none() {
            tracing::warn!(%reason, "the broker blocks the gateway's publishing");
        }
        *seen = Some((Instant::now(), reason));
    }

    /// A publish went through: whatever block was seen is over.
    pub(crate) fn clear_blocked(&self) {
        if self
            .blocked_seen
            .lock()
            .expect("publishers")
            .take()
            .is_some()
        {
            tracing::info!("the broker takes the gateway's tasks again");
        }
    }

    /// The first producer, the one that is always connected: its link
    /// carries the gateway's other listeners (worker heartbeats).
    pub(crate) fn first(&self) -> &Producer {
        &self.all[0]
    }

    /// Borrows a free producer, waiting up to `wait` for one; `None` when
    /// every one stayed busy that long.
    pub(crate) async fn lend(self: &Arc<Self>, wait: Duration) -> Option<Lent> {
        self.lend_inner(wait, None).await
    }

    /// Borrows a producer for a request that waits for its task's end;
    /// `None` when half the pool is already waiting, or no producer came
    /// free within `wait`.
    pub(crate) async fn lend_to_wait(self: &Arc<Self>, wait: Duration) -> Option<Lent> {
        let waiting = self.waits.clone().try_acquire_owned().ok()?;
        self.lend_inner(wait, Some(waiting)).await
    }

    async fn lend_inner(
        self: &Arc<Self>,
        wait: Duration,
        waiting: Option<OwnedSemaphorePermit>,
    ) -> Option<Lent> {
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let index = self
            .free
            .lock()
            .expect("publishers")
            .pop()
            .expect("a permit means a free producer");
        Some(Lent {
            pool: self.clone(),
            index,
            _permit: permit,
            _wait: waiting,
        })
    }

    /// Why the broker blocks publishing, when it blocks any of the
    /// connections now (a memory or disk alarm blocks them all) or did
    /// within [`BLOCK_MEMORY`] with no publish through since.
    pub(crate) fn blocked(&self) -> Option<String> {
        if let Some(reason) = self.blocked_now() {
            self.note_blocked(reason.clone());
            return Some(reason);
        }
        let mut seen = self.blocked_seen.lock().expect("publishers");
        match seen.as_ref() {
            Some((at, reason)) if at.elapsed() < BLOCK_MEMORY => Some(reason.clone()),
            Some(_) => {
                *seen = None;
                None
            }
            None => None,
        }
    }

    /// The state `/healthz` shows: blocked if any connection is, else the
    /// first that is not connected, else connected. Producers never used
    /// (still idle) do not count, except the first.
    pub(crate) fn state(&self) -> LinkState {
        if let Some(reason) = self.blocked() {
            return LinkState::Blocked(reason);
        }
        let states: Vec<LinkState> = self
            .all
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.link().state()))
            .filter(|(i, s)| *i == 0 || *s != LinkState::Idle)
            .map(|(_, s)| s)
            .collect();
        if let Some(b) = states.iter().find(|s| matches!(s, LinkState::Blocked(_))) {
            return b.clone();
        }
        states
            .iter()
            .find(|s| **s != LinkState::Connected)
            .cloned()
            .unwrap_or(LinkState::Connected)
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        for p in &self.all {
            p.link().close().await;
        }
    }
}
