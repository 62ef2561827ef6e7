//! The cancel book: running tasks that can be stopped, and task ids that were
//! cancelled before a worker saw them.

use crate::executor::{CancelReason, Cancellation, Canceller, cancellation};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Cancelled ids remembered, oldest forgotten first.
const REMEMBERED: usize = 100_000;

/// A task found cancelled before it ran: it must not run. Never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum Cancelled {
    /// Cancelled with the kill grace.
    #[error("cancelled")]
    Graceful,
    /// Cancelled with `--force`.
    #[error("cancelled (forced)")]
    Forced,
}

impl Cancelled {
    fn from_force(force: bool) -> Self {
        if force {
            Cancelled::Forced
        } else {
            Cancelled::Graceful
        }
    }

    /// The reason handed to a running task's cancellation.
    pub(crate) fn reason(self) -> CancelReason {
        CancelReason::Cancelled {
            force: self == Cancelled::Forced,
        }
    }
}

#[derive(Default)]
struct Inner {
    running: HashMap<String, Vec<(u64, Canceller)>>,
    cancelled: HashMap<String, Cancelled>,
    order: VecDeque<String>,
    next_id: u64,
}

/// Shared by the consumer loop, the tasks and the cancellation listener.
#[derive(Clone, Default)]
pub(crate) struct CancelBook {
    inner: Arc<Mutex<Inner>>,
}

/// A task registered to run: its cancellation signal for the executor, the
/// canceller for the attempt's timer, and the registration.
pub(crate) struct Started {
    pub(crate) cancellation: Cancellation,
    pub(crate) canceller: Canceller,
    pub(crate) running: Running,
}

/// Removes a running task from the book when dropped.
pub(crate) struct Running {
    book: CancelBook,
    task_id: String,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut inner = self.book.inner.lock().expect("cancel book");
        if let Some(list) = inner.running.get_mut(&self.task_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                inner.running.remove(&self.task_id);
            }
        }
    }
}

impl CancelBook {
    /// Registers a task about to run, or says how it was cancelled if it
    /// already was: checked under the same lock as registering, so no cancel
    /// slips in between.
    pub(crate) fn start(&self, task_id: &str) -> Result<Started, Cancelled> {
        let (tx, rx) = cancellation();
        let tx2 = tx.clone();
        let mut inner = self.inner.lock().expect("cancel book");
        if let Some(how) = inner.cancelled.get(task_id) {
            return Err(*how);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner
            .running
            .entry(task_id.to_owned())
            .or_default()
            .push((id, tx));
        Ok(Started {
            cancellation: rx,
            canceller: tx2,
            running: Running {
                book: self.clone(),
                task_id: task_id.to_owned(),
                id,
            },
        })
    }

    /// How the task was cancelled, if it was.
    pub(crate) fn cancelled(&self, task_id: &str) -> Option<Cancelled> {
        self.inner
            .lock()
            .expect("cancel book")
            .cancelled
            .get(task_id)
            .copied()
    }

    /// Cancels a task (`force`: without the kill grace) and remembers the id.
    /// True when it was running here and has been told to stop.
    pub(crate) fn cancel(&self, task_id: &str, force: bool) -> bool {
        let how = Cancelled::from_force(force);
        let mut inner = self.inner.lock().expect("cancel book");
        let prev = inner.cancelled.insert(task_id.to_owned(), how);
        if prev.is_none() {
            inner.order.push_back(task_id.to_owned());
            while inner.order.len() > REMEMBERED {
                if let Some(old) = inner.order.pop_front() {
                    inner.cancelled.remove(&old);
                }
            }
        }
        let mut hit = false;
        if let Some(list) = inner.running.get(task_id) {
            for (_, c) in list {
                c.cancel(how.reason());
                hit = true;
            }
        }
        hit
    }

    /// Stops every running task (drain time is over).
    pub(crate) fn cancel_all(&self, reason: CancelReason) {
        let inner = self.inner.lock().expect("cancel book");
        for list in inner.running.values() {
            for (_, c) in list {
                c.cancel(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_cancelled_before_it_starts_says_how() {
        let book = CancelBook::default();
        assert!(!book.cancel("a", false), "not running here");
        assert!(!book.cancel("b", true));
        assert_eq!(book.cancelled("a"), Some(Cancelled::Graceful));
        assert_eq!(book.start("a").err(), Some(Cancelled::Graceful));
        assert_eq!(book.start("b").err(), Some(Cancelled::Forced));
        assert_eq!(book.cancelled("c"), None);
        assert!(book.start("c").is_ok());
    }

    #[test]
    fn a_running_task_is_told_to_stop_until_it_is_dropped() {
        let book = CancelBook::default();
        let started = book.start("a").unwrap();
        assert!(book.cancel("a", false));
        assert_eq!(
            started.cancellation.reason(),
            Some(CancelReason::Cancelled { force: false })
        );
        book.cancel("a", true);
        assert_eq!(
            started.cancellation.reason(),
            Some(CancelReason::Cancelled { force: true })
        );
        drop(started);
        assert!(!book.cancel("a", true), "no longer running");
    }

    #[test]
    fn cancel_all_stops_every_running_task() {
        let book = CancelBook::default();
        let (a, b) = (book.start("a").unwrap(), book.start("b").unwrap());
        book.cancel_all(CancelReason::Shutdown);
        assert_eq!(a.cancellation.reason(), Some(CancelReason::Shutdown));
        assert_eq!(b.cancellation.reason(), Some(CancelReason::Shutdown));
        assert_eq!(book.cancelled("a"), None, "a shutdown is no cancel");
    }
}
