//! The lease book: which deliveries of one channel are held, and acking them.
//!
//! A delivery is a lease until it is acked. The book acks a run of finished
//! leases at the head with one `multiple` ack; a finished lease stuck behind a
//! long-running one is acked on its own after a short wait, so a crash cannot
//! make a finished task run again. Each book belongs to one channel: a tag is
//! never acked on any other, and a book whose channel died simply stops.

use broker_link::time::sleep_until_opt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::BTreeSet;
use std::future::Future;
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
    /// Give it back to the queue with `basic.nack`, which the broker counts
    /// as a delivery (a copy of the task could not be published).
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
    /// acking what was settled, or when the channel fails.
    pub(crate) fn start(channel: Channel) -> (LeaseBook, tokio::task::JoinHandle<()>) {
        LeaseBook::start_on(channel)
    }

    fn start_on<C: LeaseChannel>(channel: C) -> (LeaseBook, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LeaseBook { tx }, tokio::spawn(run(channel, rx)))
    }

    /// Records a new delivery, before its task starts.
    pub(crate) fn taken(&self, tag: u64) {
        let _ = self.tx.send(Event::Taken(tag));
    }

    /// Settles a delivery. Once the book's channel has died this does
    /// nothing: the broker has already taken the lease back.
    pub(crate) fn settle(&self, tag: u64, how: Settle) {
        let _ = self.tx.send(Event::Settled(tag, how));
    }
}

/// What the book asks of its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `basic.ack`; `multiple` also acks every earlier tag still held.
    Ack { tag: u64, multiple: bool },
    /// `basic.nack` with requeue.
    Requeue(u64),
}

/// The channel failed: its leases are the broker's again.
#[derive(Debug)]
struct ChannelGone;

/// Where the book's acks go: a lapin channel, or a recording in tests.
trait LeaseChannel: Send + Sync + 'static {
    fn apply(&self, op: Op) -> impl Future<Output = Result<(), ChannelGone>> + Send;
}

impl LeaseChannel for Channel {
    async fn apply(&self, op: Op) -> Result<(), ChannelGone> {
        let done = match op {
            Op::Ack { tag, multiple } => self.basic_ack(tag, BasicAckOptions { multiple }).await,
            Op::Requeue(tag) => {
                let opts = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                self.basic_nack(tag, opts).await
            }
        };
        done.map_err(|e| {
            tracing::debug!(error = %e, ?op, "lease channel gone; the broker redelivers its leases");
            ChannelGone
        })
    }
}

/// The leases of one channel, without I/O: what is held, what is finished
/// and waits for its ack.
#[derive(Debug, Default)]
struct Ledger {
    held: BTreeSet<u64>,
    finished: BTreeSet<u64>,
}

impl Ledger {
    fn taken(&mut self, tag: u64) {
        self.held.insert(tag);
    }

    /// Records a settle. A requeue goes out at once; an ack waits for
    /// [`ack_head`](Ledger::ack_head) or [`ack_stuck`](Ledger::ack_stuck).
    fn settled(&mut self, tag: u64, how: Settle) -> Option<Op> {
        match how {
            Settle::Ack => {
                self.finished.insert(tag);
                None
            }
            Settle::Requeue => {
                self.held.remove(&tag);
                Some(Op::Requeue(tag))
            }
        }
    }

    /// One multiple ack for the longest run of finished leases at the head.
    fn ack_head(&mut self) -> Option<Op> {
        let mut upto = None;
        while let Some(&head) = self.held.first() {
            if !self.finished.remove(&head) {
                break;
            }
            self.held.remove(&head);
            upto = Some(head);
        }
        upto.map(|tag| Op::Ack {
            tag,
            multiple: true,
        })
    }

    /// Single acks for the finished leases stuck behind a running one.
    fn ack_stuck(&mut self) -> Vec<Op> {
        let stuck = std::mem::take(&mut self.finished);
        stuck
            .into_iter()
            .map(|tag| {
                self.held.remove(&tag);
                Op::Ack {
                    tag,
                    multiple: false,
                }
            })
            .collect()
    }

    fn any_stuck(&self) -> bool {
        !self.finished.is_empty()
    }
}

async fn run<C: LeaseChannel>(channel: C, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut ledger = Ledger::default();
    // When the finished leases behind a running one get acked one by one.
    let mut stuck_since: Option<tokio::time::Instant> = None;
    loop {
        let wake = stuck_since.map(|t| t + SINGLE_ACK_AFTER);
        let first = tokio::select! {
            ev = rx.recv() => ev,
            _ = sleep_until_opt(wake) => {
                for op in ledger.ack_stuck() {
                    if channel.apply(op).await.is_err() {
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
            let op = match ev {
                Event::Taken(tag) => {
                    ledger.taken(tag);
                    None
                }
                Event::Settled(tag, how) => ledger.settled(tag, how),
            };
            if let Some(op) = op
                && channel.apply(op).await.is_err()
            {
                return;
            }
        }
        if let Some(op) = ledger.ack_head()
            && channel.apply(op).await.is_err()
        {
            return;
        }
        stuck_since = match (ledger.any_stuck(), stuck_since) {
            (false, _) => None,
            (true, None) => Some(tokio::time::Instant::now()),
            (true, since) => since,
        };
    }
    // Every sender is gone: last acks before the channel goes.
    let last = ledger.ack_head().into_iter().chain(ledger.ack_stuck());
    for op in last {
        if channel.apply(op).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// Records what the book sends; fails every call once closed.
    #[derive(Clone, Default)]
    struct Recorder {
        ops: Arc<Mutex<Vec<Op>>>,
        closed: Arc<AtomicBool>,
    }

    impl LeaseChannel for Recorder {
        async fn apply(&self, op: Op) -> Result<(), ChannelGone> {
            if self.closed.load(Ordering::SeqCst) {
                return Err(ChannelGone);
            }
            self.ops.lock().unwrap().push(op);
            Ok(())
        }
    }

    impl Recorder {
        fn ops(&self) -> Vec<Op> {
            self.ops.lock().unwrap().clone()
        }

        /// Waits, up to a deadline, until `n` operations were sent.
        async fn wait_for(&self, n: usize) -> Vec<Op> {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let ops = self.ops();
                if ops.len() >= n || tokio::time::Instant::now() > deadline {
                    return ops;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    fn ack(tag: u64, multiple: bool) -> Op {
        Op::Ack { tag, multiple }
    }

    #[test]
    fn the_finished_run_at_the_head_is_one_multiple_ack() {
        let mut l = Ledger::default();
        for tag in 1..=4 {
            l.taken(tag);
        }
        assert_eq!(l.settled(2, Settle::Ack), None);
        assert_eq!(l.ack_head(), None, "1 still runs");
        l.settled(1, Settle::Ack);
        l.settled(4, Settle::Ack);
        assert_eq!(l.ack_head(), Some(ack(2, true)), "1 and 2, not 4 behind 3");
        assert!(l.any_stuck());
        l.settled(3, Settle::Ack);
        assert_eq!(l.ack_head(), Some(ack(4, true)));
        assert!(!l.any_stuck());
    }

    #[test]
    fn a_requeue_goes_out_at_once_and_frees_the_head() {
        let mut l = Ledger::default();
        l.taken(1);
        l.taken(2);
        l.settled(2, Settle::Ack);
        assert_eq!(l.settled(1, Settle::Requeue), Some(Op::Requeue(1)));
        assert_eq!(l.ack_head(), Some(ack(2, true)));
    }

    #[test]
    fn leases_stuck_behind_a_running_one_are_acked_singly() {
        let mut l = Ledger::default();
        for tag in 1..=3 {
            l.taken(tag);
        }
        l.settled(3, Settle::Ack);
        l.settled(2, Settle::Ack);
        assert_eq!(l.ack_head(), None);
        assert_eq!(l.ack_stuck(), [ack(2, false), ack(3, false)]);
        // Acked: a later multiple ack of 1 must not count on them.
        l.settled(1, Settle::Ack);
        assert_eq!(l.ack_head(), Some(ack(1, true)));
    }

    #[tokio::test]
    async fn settles_that_arrive_together_make_one_multiple_ack() {
        let ch = Recorder::default();
        let (book, _h) = LeaseBook::start_on(ch.clone());
        for tag in 1..=3 {
            book.taken(tag);
        }
        // Out of order, before the book runs (single-threaded runtime).
        book.settle(3, Settle::Ack);
        book.settle(1, Settle::Ack);
        book.settle(2, Settle::Ack);
        assert_eq!(ch.wait_for(1).await, [ack(3, true)]);
    }

    #[tokio::test]
    async fn a_lease_behind_a_long_task_gets_its_own_ack_after_a_short_wait() {
        let ch = Recorder::default();
        let (book, _h) = LeaseBook::start_on(ch.clone());
        book.taken(1);
        book.taken(2);
        book.settle(2, Settle::Ack);
        let started = tokio::time::Instant::now();
        assert_eq!(ch.wait_for(1).await, [ack(2, false)]);
        assert!(started.elapsed() >= SINGLE_ACK_AFTER);
        book.settle(1, Settle::Ack);
        assert_eq!(ch.wait_for(2).await, [ack(2, false), ack(1, true)]);
    }

    #[tokio::test]
    async fn a_requeue_is_a_nack_at_once() {
        let ch = Recorder::default();
        let (book, _h) = LeaseBook::start_on(ch.clone());
        book.taken(1);
        book.taken(2);
        book.settle(1, Settle::Requeue);
        book.settle(2, Settle::Ack);
        assert_eq!(ch.wait_for(2).await, [Op::Requeue(1), ack(2, true)]);
    }

    #[tokio::test]
    async fn the_last_settles_are_acked_when_the_book_closes() {
        let ch = Recorder::default();
        let (book, h) = LeaseBook::start_on(ch.clone());
        for tag in 1..=3 {
            book.taken(tag);
        }
        book.settle(1, Settle::Ack);
        book.settle(3, Settle::Ack);
        drop(book);
        h.await.unwrap();
        assert_eq!(ch.ops(), [ack(1, true), ack(3, false)]);
    }

    #[tokio::test]
    async fn after_its_channel_dies_the_book_stops_and_settles_go_nowhere() {
        let ch = Recorder::default();
        let (book, h) = LeaseBook::start_on(ch.clone());
        book.taken(1);
        book.taken(2);
        ch.closed.store(true, Ordering::SeqCst);
        book.settle(1, Settle::Ack);
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("the book ends with its channel")
            .unwrap();
        // A task finishing later settles into the void, without panicking.
        book.settle(2, Settle::Ack);
        book.settle(2, Settle::Requeue);
        assert!(ch.ops().is_empty());
    }
}
