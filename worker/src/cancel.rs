//! The cancel book: running tasks that can be stopped, and task ids that were
//! cancelled before a worker saw them.

use crate::executor::{CancelReason, Cancellation, Canceller, cancellation};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Cancelled ids remembered, oldest forgotten first.
const REMEMBERED: usize = 100_000;

#[derive(Default)]
struct Inner {
    running: HashMap<String, Vec<(u64, Canceller)>>,
    cancelled: HashMap<String, bool>,
    order: VecDeque<String>,
    next_id: u64,
}

/// Shared by the consumer loop, the tasks and the cancellation listener.
#[derive(Clone, Default)]
pub(crate) struct CancelBook {
    inner: Arc<Mutex<Inner>>,
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
    /// Registers a task about to run and returns its cancellation signal, or
    /// whether it was cancelled (and forcibly) if it already was: checked
    /// under the same lock as registering, so no cancel slips in between.
    pub(crate) fn start(&self, task_id: &str) -> Result<(Cancellation, Running, Canceller), bool> {
        let (tx, rx) = cancellation();
        let tx2 = tx.clone();
        let mut inner = self.inner.lock().expect("cancel book");
        if let Some(force) = inner.cancelled.get(task_id) {
            return Err(*force);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner
            .running
            .entry(task_id.to_owned())
            .or_default()
            .push((id, tx));
        Ok((
            rx,
            Running {
                book: self.clone(),
                task_id: task_id.to_owned(),
                id,
            },
            tx2,
        ))
    }

    /// Whether the task was cancelled, and if so whether forcibly.
    pub(crate) fn cancelled(&self, task_id: &str) -> Option<bool> {
        self.inner
            .lock()
            .expect("cancel book")
            .cancelled
            .get(task_id)
            .copied()
    }

    /// Cancels a task: stops it if it runs here, and remembers the id.
    pub(crate) fn cancel(&self, task_id: &str, force: bool) -> bool {
        let mut inner = self.inner.lock().expect("cancel book");
        let prev = inner.cancelled.insert(task_id.to_owned(), force);
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
                c.cancel(CancelReason::Cancelled { force });
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
