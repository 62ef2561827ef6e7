//! Plain-text views for the CLI: a task's receipt chain as a tree
//! (`chit task show`) and a table of tasks (`chit task list`).
//!
//! The tree follows `parent_receipt_ids`, so a redelivery after a worker crash
//! shows as two `accepted` receipts under one `queued`. A receipt whose parent
//! is not stored (yet) is drawn at the root, marked as an orphan.

use crate::task::{TaskRow, TaskView};
use broker_topology::Receipt;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Longest error or reason text shown on one line.
const SHORT_TEXT: usize = 60;

/// The chain of `view` as a tree, one line per receipt, under a summary line.
pub fn render_tree(view: &TaskView) -> String {
    let t = &view.task;
    let mut out = format!(
        "task {} ({}): {}, attempt {}, last update {}",
        t.task_id,
        t.task_type,
        t.state,
        t.attempts,
        time(&t.last_update)
    );
    if let Some(w) = &t.worker_id {
        let _ = write!(out, ", worker {w}");
    }
    if let Some(e) = &t.last_error {
        let _ = write!(out, "\n  last error: {}", short(e));
    }
    out.push('\n');

    let chain = &view.chain;
    let index: HashMap<&str, usize> = chain
        .iter()
        .enumerate()
        .map(|(i, r)| (r.receipt_id.as_str(), i))
        .collect();
    // Each receipt hangs under its first stored parent; chain order is kept.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); chain.len()];
    let mut roots: Vec<(usize, Option<String>)> = Vec::new();
    for (i, r) in chain.iter().enumerate() {
        let parent = r
            .parent_receipt_ids
            .iter()
            .find_map(|p| index.get(p.as_str()).copied().filter(|&p| p != i));
        match parent {
            Some(p) => children[p].push(i),
            None if r.parent_receipt_ids.is_empty() => roots.push((i, None)),
            None => {
                let missing = r.parent_receipt_ids.join(", ");
                roots.push((i, Some(format!("[orphan: parent {missing} not stored]"))));
            }
        }
    }

    let mut seen = HashSet::new();
    let mut tree = Tree {
        chain,
        children: &children,
        index: &index,
        seen: &mut seen,
        out: &mut out,
    };
    for (i, marker) in &roots {
        tree.draw(*i, "", "", marker.as_deref());
    }
    // Whatever is left sits on a parent cycle; show it rather than hide it.
    for i in 0..chain.len() {
        if !tree.seen.contains(&i) {
            tree.draw(i, "", "", Some("[cycle in parent_receipt_ids]"));
        }
    }
    out
}

struct Tree<'a> {
    chain: &'a [Receipt],
    children: &'a [Vec<usize>],
    index: &'a HashMap<&'a str, usize>,
    seen: &'a mut HashSet<usize>,
    out: &'a mut String,
}

impl Tree<'_> {
    fn draw(&mut self, i: usize, lead: &str, rest: &str, marker: Option<&str>) {
        if !self.seen.insert(i) {
            return;
        }
        let r = &self.chain[i];
        let _ = write!(self.out, "{lead}{}", line(r));
        // Other parents than the one it is drawn under.
        let others: Vec<&str> = r
            .parent_receipt_ids
            .iter()
            .skip(1)
            .filter(|p| self.index.contains_key(p.as_str()))
            .map(|p| short_id(p))
            .collect();
        if !others.is_empty() {
            let _ = write!(self.out, "  (also after {})", others.join(", "));
        }
        if let Some(m) = marker {
            let _ = write!(self.out, "  {m}");
        }
        self.out.push('\n');
        let kids = &self.children[i];
        for (k, &c) in kids.iter().enumerate() {
            let last = k + 1 == kids.len();
            let (branch, cont) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            self.draw(
                c,
                &format!("{rest}{branch}"),
                &format!("{rest}{cont}"),
                None,
            );
        }
    }
}

/// `accepted #1 worker-a 2026-01-02 03:04:05.123 delivery 2`.
fn line(r: &Receipt) -> String {
    let mut s = format!(
        "{} #{} {} {}",
        r.receipt_type.as_str(),
        r.attempt,
        r.worker_id.as_deref().unwrap_or("-"),
        time(&r.created_at)
    );
    let detail = detail(&r.body);
    if !detail.is_empty() {
        s.push_str("  ");
        s.push_str(&detail);
    }
    s
}

/// The few body fields worth a glance: exit code, error, reason, delay, delivery.
fn detail(body: &Value) -> String {
    let mut parts = Vec::new();
    let num = |k: &str| body.get(k).and_then(Value::as_i64);
    let text = |k: &str| match body.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(short(s)),
        Some(other) => Some(short(&other.to_string())),
    };
    if let Some(code) = num("exit_code") {
        parts.push(format!("exit {code}"));
    }
    if let Some(e) = text("error") {
        parts.push(format!("error: {e}"));
    }
    if let Some(e) = text("reason") {
        parts.push(format!("reason: {e}"));
    }
    if let Some(ms) = num("delay_ms") {
        parts.push(format!("retry in {ms} ms"));
    }
    if let Some(n) = num("delivery_count").or_else(|| num("delivery")) {
        parts.push(format!("delivery {n}"));
    }
    parts.join(", ")
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// First line of `s`, at most [`SHORT_TEXT`] characters.
fn short(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    let mut out: String = first.chars().take(SHORT_TEXT).collect();
    if out.len() < first.len() || first.len() < s.trim_end().len() {
        out.push('…');
    }
    out
}

/// A UUID's first group, or the whole id when it has none.
fn short_id(id: &str) -> &str {
    id.split('-').next().filter(|s| s.len() >= 6).unwrap_or(id)
}

/// Tasks as an aligned table, one row each, under a header.
pub fn render_task_table(tasks: &[TaskRow]) -> String {
    let header = [
        "TASK",
        "TYPE",
        "STATE",
        "ATTEMPTS",
        "LAST UPDATE",
        "WORKER",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 7]> = tasks
        .iter()
        .map(|t| {
            [
                t.task_id.clone(),
                t.task_type.clone(),
                t.state.to_string(),
                t.attempts.to_string(),
                time(&t.last_update),
                t.worker_id.clone().unwrap_or_else(|| "-".into()),
                t.last_error
                    .as_deref()
                    .map(short)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[&str]| {
        let mut line = String::new();
        for (k, cell) in cells.iter().enumerate() {
            if k + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let pad = widths[k] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        push_row(&cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;
    use broker_topology::ReceiptType;
    use serde_json::json;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_767_225_600_000 + ms).unwrap()
    }

    fn receipt(id: &str, t: ReceiptType, parents: &[&str], ms: i64) -> Receipt {
        let mut r = Receipt::new(
            "task-1",
            "command.execute",
            t,
            parents.iter().map(|p| p.to_string()).collect(),
            1,
        )
        .with_id(id);
        r.created_at = at(ms);
        r
    }

    fn view(chain: Vec<Receipt>) -> TaskView {
        TaskView {
            task: TaskRow {
                task_id: "task-1".into(),
                task_type: "command.execute".into(),
                state: TaskState::Succeeded,
                attempts: 1,
                first_seen: at(0),
                last_update: at(500),
                worker_id: Some("w2".into()),
                last_error: None,
            },
            chain,
        }
    }

    #[test]
    fn a_redelivery_shows_two_accepted_under_one_queued() {
        let v = view(vec![
            receipt("q", ReceiptType::Queued, &[], 0),
            receipt("a1", ReceiptType::Accepted, &["q"], 100)
                .with_worker("w1")
                .with_body(json!({"delivery_count": 0})),
            receipt("a2", ReceiptType::Accepted, &["q"], 300)
                .with_worker("w2")
                .with_body(json!({"delivery_count": 1})),
            receipt("s", ReceiptType::Success, &["a2"], 500)
                .with_worker("w2")
                .with_body(json!({"exit_code": 0})),
        ]);
        let text = render_tree(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("task task-1 (command.execute): succeeded"),
            "{text}"
        );
        assert_eq!(lines[1], "queued #1 - 2026-01-01 00:00:00.000");
        assert_eq!(
            lines[2],
            "├─ accepted #1 w1 2026-01-01 00:00:00.100  delivery 0"
        );
        assert_eq!(
            lines[3],
            "└─ accepted #1 w2 2026-01-01 00:00:00.300  delivery 1"
        );
        assert_eq!(
            lines[4],
            "   └─ success #1 w2 2026-01-01 00:00:00.500  exit 0"
        );
        assert_eq!(text.matches("accepted").count(), 2);
    }

    #[test]
    fn orphans_are_drawn_at_the_root_and_marked() {
        let v = view(vec![
            receipt("f", ReceiptType::Failure, &["missing"], 10)
                .with_body(json!({"error": "boom\nstack trace", "exit_code": 2})),
            receipt("r", ReceiptType::RetryScheduled, &["f"], 20)
                .with_body(json!({"delay_ms": 1000})),
        ]);
        let text = render_tree(&v);
        assert!(
            text.contains("failure #1 - 2026-01-01 00:00:00.010  exit 2, error: boom…  [orphan: parent missing not stored]"),
            "{text}"
        );
        assert!(
            text.contains("└─ retry_scheduled #1 - 2026-01-01 00:00:00.020  retry in 1000 ms"),
            "{text}"
        );
    }

    #[test]
    fn cycles_do_not_hang_or_hide_receipts() {
        let v = view(vec![
            receipt("x", ReceiptType::Accepted, &["y"], 0),
            receipt("y", ReceiptType::Failure, &["x"], 1),
        ]);
        let text = render_tree(&v);
        assert_eq!(text.matches("#1").count(), 2, "{text}");
        assert!(text.contains("cycle"), "{text}");
    }

    #[test]
    fn the_table_is_aligned() {
        let mut t = view(vec![]).task;
        let mut u = t.clone();
        u.task_id = "a-much-longer-task-id".into();
        u.last_error = Some("disk full".into());
        t.worker_id = None;
        let text = render_task_table(&[t, u]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("TYPE").unwrap();
        assert_eq!(lines[1].find("command.execute"), Some(col));
        assert_eq!(lines[2].find("command.execute"), Some(col));
        assert!(lines[2].ends_with("disk full"));
        assert!(lines[1].ends_with('-'));
    }
}
