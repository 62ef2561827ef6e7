//! The lease book: which deliveries of one channel are held, and acking them.
//!
//! A delivery is a lease until it is acked. The book acks a run of finished
//! leases at the head with one `multiple` ack; a finished lease stuck behind a
//! long-running one is acked on its own after a short wait, so a crash cannot
//! make a finished task run again. Each book belongs to one channel: a tag is
//! never acked on any other, and a book whose channel died simply stops.

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a finished lease may wait for the head of the book before it is
/// acked on its own.
const SINGLE_ACK_AFTER: Duration = Duration::from_millis(10);

/// What to do with a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done with it (its final receipt is confirmed).
    Ack,
    /// Give it back to the queue (the worker is stopping before running it).
    Requeue,
}

#[derive(Debug)]
enum Event {
    Taken(u64),
    Settled(u64, Settle),
}

/// The sending side handed to the consumer loop and to each task.
#[derive(Debug, Clone)]
pub(crate) struct LeaseBook {
    tx: mpsc::UnboundedSender<Event>,
}

impl LeaseBook {
    /// Starts a book for `channel`. It ends when every clone is dropped, after
    /// acking what was settled.
    pub(crate) fn start(channel: Channel) -> (LeaseBook, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LeaseBook { tx }, tokio::spawn(run(channel, rx)))
    }

    /// Records a new delivery, before its task starts.
    pub(crate) fn taken(&self, tag: u64) {
        let _ = self.tx.send(Event::Taken(tag));
    }

    /// Settles a delivery.
    pub(crate) fn settle(&self, tag: u64, how: Settle) {
        let _ = self.tx.send(Event::Settled(tag, how));
    }
}

async fn run(channel: Channel, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut held: BTreeSet<u64> = BTreeSet::new();
    let mut finished: BTreeSet<u64> = BTreeSet::new();
    // When the finished leases behind a running one get acked one by one.
    let mut stuck_since: Option<tokio::time::Instant> = None;
    loop {
        let wake = stuck_since.map(|t| t + SINGLE_ACK_AFTER);
        let first = tokio::select! {
            ev = rx.recv() => ev,
            _ = sleep_until_opt(wake) => {
                for tag in std::mem::take(&mut finished) {
                    held.remove(&tag);
                    if channel.basic_ack(tag, BasicAckOptions { multiple: false }).await.is_err() {
                        return;
                    }
                }
                stuck_since = None;
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut events = vec![first];
        while let Ok(ev) = rx.try_recv() {
            events.push(ev);
        }
        for ev in events {
            match ev {
                Event::Taken(tag) => {
                    held.insert(tag);
                }
                Event::Settled(tag, Settle::Ack) => {
                    finished.insert(tag);
                }
                Event::Settled(tag, Settle::Requeue) => {
                    held.remove(&tag);
                    let opts = BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    };
                    if channel.basic_nack(tag, opts).await.is_err() {
                        return;
                    }
                }
            }
        }
        if ack_head(&channel, &mut held, &mut finished).await.is_err() {
            return;
        }
        stuck_since = match (finished.is_empty(), stuck_since) {
            (true, _) => None,
            (false, None) => Some(tokio::time::Instant::now()),
            (false, since) => since,
        };
    }
    // Every sender is gone: last acks before the channel goes.
    let _ = ack_head(&channel, &mut held, &mut finished).await;
    for tag in finished {
        let _ = channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await;
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Acks the longest run of finished leases at the head with one multiple ack.
async fn ack_head(
    channel: &Channel,
    held: &mut BTreeSet<u64>,
    finished: &mut BTreeSet<u64>,
) -> Result<(), lapin::Error> {
    let mut upto = None;
    while let Some(&head) = held.first() {
        if !finished.remove(&head) {
            break;
        }
        held.remove(&head);
        upto = Some(head);
    }
    if let Some(tag) = upto {
        channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await?;
    }
    Ok(())
}
