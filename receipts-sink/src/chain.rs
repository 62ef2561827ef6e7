//! The order of a task's receipts: by parent links, never by timestamp alone.
//!
//! `created_at` comes from the clock of whoever wrote the receipt: the
//! publisher's host for `queued`, a worker's host for the rest. Clocks on two
//! hosts disagree, so a worker's `accepted` can carry an earlier time than
//! the `queued` it follows. [`order_by_parents`] therefore puts every receipt
//! after the stored receipts it names as parents (a topological order), and
//! uses the time, then the id, only to choose among receipts that are ready
//! at the same point.

use broker_topology::Receipt;
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// `receipts` with each one after its stored parents; receipts free to go at
/// the same point go by `created_at`, then `receipt_id`. A parent that is not
/// among `receipts` is ignored (its child is ordered by time among the
/// roots). Receipts on a cycle of parents are all kept: when nothing else
/// can go, the earliest receipt of one cycle goes next.
pub fn order_by_parents(receipts: Vec<Receipt>) -> Vec<Receipt> {
    let n = receipts.len();
    let index: HashMap<&str, usize> = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| (r.receipt_id.as_str(), i))
        .collect();
    // Distinct stored parents per receipt, and the reverse links.
    let mut waiting_on = vec![0usize; n];
    let mut parents_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in receipts.iter().enumerate() {
        let mut parents: Vec<usize> = r
            .parent_receipt_ids
            .iter()
            .filter_map(|p| index.get(p.as_str()).copied())
            .filter(|&p| p != i)
            .collect();
        parents.sort_unstable();
        parents.dedup();
        waiting_on[i] = parents.len();
        for &p in &parents {
            children[p].push(i);
        }
        parents_of[i] = parents;
    }
    type Key<'a> = Reverse<(DateTime<Utc>, &'a str, usize)>;
    let key = |i: usize| -> Key<'_> {
        Reverse((receipts[i].created_at, receipts[i].receipt_id.as_str(), i))
    };
    let mut ready: BinaryHeap<Key<'_>> = (0..n).filter(|&i| waiting_on[i] == 0).map(key).collect();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = match ready.pop() {
            Some(Reverse((_, _, i))) => i,
            // Every receipt left waits on another one left: they sit on,
            // or below, a cycle. Walk up from the earliest until a receipt
            // repeats, and let the earliest receipt of that cycle go.
            None => {
                let Some(start) = (0..n).filter(|&i| !done[i]).min_by_key(|&i| key(i).0) else {
                    break;
                };
                let mut path = vec![start];
                loop {
                    let at = path[path.len() - 1];
                    // (Every receipt left has a parent left; `at` is a
                    // fallback that cannot happen.)
                    let Some(p) = parents_of[at].iter().copied().find(|&p| !done[p]) else {
                        break at;
                    };
                    if let Some(k) = path.iter().position(|&v| v == p) {
                        break path[k..]
                            .iter()
                            .copied()
                            .min_by_key(|&i| key(i).0)
                            .unwrap_or(p);
                    }
                    path.push(p);
                }
            }
        };
        if done[next] {
            continue;
        }
        done[next] = true;
        order.push(next);
        for &c in &children[next] {
            if done[c] {
                continue;
            }
            waiting_on[c] = waiting_on[c].saturating_sub(1);
            if waiting_on[c] == 0 {
                ready.push(key(c));
            }
        }
    }
    let mut slots: Vec<Option<Receipt>> = receipts.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_topology::ReceiptType;

    /// A receipt stamped `ms` milliseconds after 17:34:43.000.
    fn receipt(id: &str, t: ReceiptType, parents: &[&str], ms: i64) -> Receipt {
        let mut r = Receipt::new(
            "task-1",
            "command.execute",
            t,
            parents.iter().map(|p| p.to_string()).collect(),
            1,
        )
        .with_id(id);
        r.created_at = DateTime::from_timestamp_millis(1_767_288_883_000 + ms).unwrap();
        r
    }

    fn ids(chain: &[Receipt]) -> Vec<&str> {
        chain.iter().map(|r| r.receipt_id.as_str()).collect()
    }

    #[test]
    fn a_worker_clock_behind_the_publishers_still_puts_queued_first() {
        // The case: accepted stamped 2 ms before the queued it follows.
        let chain = vec![
            receipt("s", ReceiptType::Success, &["a"], 400),
            receipt("a", ReceiptType::Accepted, &["q"], 21),
            receipt("q", ReceiptType::Queued, &[], 23),
        ];
        let ordered = order_by_parents(chain);
        assert_eq!(ids(&ordered), ["q", "a", "s"]);
    }

    #[test]
    fn a_whole_chain_skewed_far_into_the_past_keeps_its_parent_order() {
        // The second worker's clock is a minute behind.
        let chain = vec![
            receipt("q", ReceiptType::Queued, &[], 0),
            receipt("a1", ReceiptType::Accepted, &["q"], 10),
            receipt("f1", ReceiptType::Failure, &["a1"], 20),
            receipt("r1", ReceiptType::RetryScheduled, &["f1"], 30),
            receipt("a2", ReceiptType::Accepted, &["r1"], -60_000),
            receipt("s2", ReceiptType::Success, &["a2"], -59_000),
        ];
        let mut shuffled = chain.clone();
        shuffled.reverse();
        assert_eq!(
            ids(&order_by_parents(shuffled)),
            ["q", "a1", "f1", "r1", "a2", "s2"]
        );
    }

    #[test]
    fn siblings_go_by_time_then_id() {
        let chain = vec![
            receipt("q", ReceiptType::Queued, &[], 50),
            receipt("b", ReceiptType::Accepted, &["q"], 10),
            receipt("c", ReceiptType::Accepted, &["q"], 5),
            receipt("a", ReceiptType::Accepted, &["q"], 10),
        ];
        assert_eq!(ids(&order_by_parents(chain)), ["q", "c", "a", "b"]);
    }

    #[test]
    fn orphans_and_cycles_are_kept() {
        let chain = vec![
            receipt("x", ReceiptType::Accepted, &["y"], 5),
            receipt("y", ReceiptType::Failure, &["x"], 1),
            receipt("o", ReceiptType::Failure, &["missing"], 3),
            receipt("z", ReceiptType::RetryScheduled, &["y", "y"], 0),
        ];
        let ordered = order_by_parents(chain);
        // o is a root (its parent is not stored); the cycle breaks at its
        // earliest receipt, y, never at z below it, however early z is.
        assert_eq!(ids(&ordered), ["o", "y", "z", "x"]);
    }
}
