//! Plain-text views for the CLI: a task's receipt chain as a tree
//! (`chit task show`) and a table of tasks (`chit task list`).
//!
//! The tree follows `parent_receipt_ids`, so a redelivery after a worker crash
//! shows as two `accepted` receipts under one `queued`. A stretch of the chain
//! where each receipt has one child is drawn flat, one receipt a line at the
//! same indentation, so a replayed chain does not march off the screen; the
//! tree indents only where it branches. A receipt whose parent is not stored
//! (yet) is drawn at the root, marked as an orphan.
//!
//! Errors, the tail of stderr and artifact paths are shown in full under
//! their receipt, wrapped to the width asked for. The trace ids the receipts
//! record are listed under the summary, each as a link when a trace URL
//! template is given ([`render_tree_linked`]).

use crate::chain::order_by_parents;
use crate::task::{TaskRow, TaskView};
use broker_topology::Receipt;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Longest error text in a cell of the task table.
const SHORT_TEXT: usize = 60;

/// Columns a tree is wrapped to when the caller knows no better (output to
/// a file or a pipe).
pub const DEFAULT_WIDTH: usize = 100;

/// Fewest columns wrapped text gets, however deep it is indented.
const MIN_TEXT_WIDTH: usize = 30;

/// [`render_tree_to_width`] at [`DEFAULT_WIDTH`] columns.
pub fn render_tree(view: &TaskView) -> String {
    render_tree_to_width(view, DEFAULT_WIDTH)
}

/// The chain of `view` as a tree under a summary line, one line per receipt
/// followed by its error, stderr tail and artifacts in full, wrapped to
/// `width` columns.
pub fn render_tree_to_width(view: &TaskView, width: usize) -> String {
    render_tree_linked(view, width, None)
}

/// The place-holder a trace URL template has for the trace id.
pub const TRACE_ID_PLACEHOLDER: &str = "{trace_id}";

/// `template` with the trace id in place of [`TRACE_ID_PLACEHOLDER`].
pub fn trace_url(template: &str, trace_id: &str) -> String {
    template.replace(TRACE_ID_PLACEHOLDER, trace_id)
}

/// As [`render_tree_to_width`], each trace id followed by its link made
/// from `trace_url_template` (see [`trace_url`]) when one is given.
pub fn render_tree_linked(
    view: &TaskView,
    width: usize,
    trace_url_template: Option<&str>,
) -> String {
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
    out.push('\n');
    if let Some(e) = &t.last_error {
        field(&mut out, "  ", "last error", e, width);
    }

    // Parent order, whatever the clocks said: the API gives it, but an older
    // sink sent its chain by time.
    let chain = order_by_parents(view.chain.clone());
    // One trace for a task published once; a replay or a task published
    // again under its id may add another. In order of first appearance.
    let mut traces: Vec<String> = Vec::new();
    for id in chain.iter().filter_map(|r| r.trace_id) {
        let id = id.to_string();
        if !traces.contains(&id) {
            traces.push(id);
        }
    }
    for id in &traces {
        let text = match trace_url_template {
            Some(template) => format!("{id} {}", trace_url(template, id)),
            None => id.clone(),
        };
        // Not wrapped: a link cut in two cannot be followed.
        let _ = writeln!(out, "  trace: {text}");
    }
    let index: HashMap<&str, usize> = chain
        .iter()
        .enumerate()
        .map(|(i, r)| (r.receipt_id.as_str(), i))
        .collect();
    // Each receipt hangs under its first stored parent; chain order is kept.
    let mut parent_of: Vec<Option<usize>> = vec![None; chain.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); chain.len()];
    let mut roots: Vec<(usize, Option<String>)> = Vec::new();
    for (i, r) in chain.iter().enumerate() {
        let parent = r
            .parent_receipt_ids
            .iter()
            .find_map(|p| index.get(p.as_str()).copied().filter(|&p| p != i));
        match parent {
            Some(p) => {
                parent_of[i] = Some(p);
                children[p].push(i);
            }
            None if r.parent_receipt_ids.is_empty() => roots.push((i, None)),
            None => {
                let missing = r.parent_receipt_ids.join(", ");
                roots.push((i, Some(format!("[orphan: parent {missing} not stored]"))));
            }
        }
    }

    let mut seen = HashSet::new();
    let mut tree = Tree {
        chain: &chain,
        parent_of: &parent_of,
        children: &children,
        index: &index,
        seen: &mut seen,
        out: &mut out,
        width,
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
    parent_of: &'a [Option<usize>],
    children: &'a [Vec<usize>],
    index: &'a HashMap<&'a str, usize>,
    seen: &'a mut HashSet<usize>,
    out: &'a mut String,
    width: usize,
}

impl Tree<'_> {
    /// Draws receipt `i` after `lead`, then the receipts after it: while
    /// there is one child, flat under `rest`; where there are more, each
    /// as a branch.
    fn draw(&mut self, mut i: usize, lead: &str, rest: &str, marker: Option<&str>) {
        let mut lead = lead;
        let mut marker = marker;
        loop {
            if !self.seen.insert(i) {
                return;
            }
            self.receipt(i, lead, rest, marker);
            let children = self.children;
            let kids = &children[i];
            match kids.as_slice() {
                [] => return,
                [only] => {
                    i = *only;
                    lead = rest;
                    marker = None;
                }
                _ => {
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
                    return;
                }
            }
        }
    }

    /// One receipt: its line, then its details under `rest`.
    fn receipt(&mut self, i: usize, lead: &str, rest: &str, marker: Option<&str>) {
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

        let pad = format!("{rest}    ");
        // A retry or dead letter repeats its failure's error: say it once.
        let above = self.parent_of[i].and_then(|p| error_text(&self.chain[p].body));
        if let Some(e) = error_text(&r.body).filter(|e| Some(e) != above.as_ref()) {
            field(self.out, &pad, "error", &e, self.width);
        }
        let details = r.body.get("details").unwrap_or(&Value::Null);
        let tail = [&r.body, details]
            .into_iter()
            .find_map(|b| b.get("stderr_tail").and_then(Value::as_str))
            .filter(|s| !s.trim().is_empty());
        if let Some(tail) = tail {
            field(self.out, &pad, "stderr", tail, self.width);
        }
        // What an `exec` program answered: its output and log lines.
        if let Some(output) = r.body.get("output").filter(|v| !v.is_null()) {
            field(self.out, &pad, "output", &output.to_string(), self.width);
        }
        let logs = r.body.get("logs").and_then(Value::as_array);
        for log in logs.into_iter().flatten().filter_map(Value::as_str) {
            field(self.out, &pad, "log", log, self.width);
        }
        for a in &r.artifacts {
            let place = a
                .path
                .as_deref()
                .or(a.uri.as_deref())
                .or(a.description.as_deref())
                .unwrap_or("(no path)");
            let mut about = Vec::new();
            if let Some(ct) = &a.content_type {
                about.push(ct.clone());
            }
            if let Some(n) = a.size {
                about.push(format!("{n} bytes"));
            }
            let text = if about.is_empty() {
                place.to_owned()
            } else {
                format!("{place} ({})", about.join(", "))
            };
            field(self.out, &pad, "artifact", &text, self.width);
        }
    }
}

/// `accepted #1 worker-a 2026-01-02 03:04:05.123  delivery 2`.
fn line(r: &Receipt) -> String {
    let mut s = format!(
        "{} #{} {} {}",
        r.receipt_type.as_str(),
        r.attempt,
        r.worker_id.as_deref().unwrap_or("-"),
        time(&r.created_at)
    );
    let summary = summary(&r.body);
    if !summary.is_empty() {
        s.push_str("  ");
        s.push_str(&summary);
    }
    s
}

/// The few body fields that fit on the receipt's line: exit code or
/// signal, reason, delay (or, for a delayed task, when it is due),
/// delivery.
fn summary(body: &Value) -> String {
    let mut parts = Vec::new();
    let num = |k: &str| body.get(k).and_then(Value::as_i64);
    if let Some(code) = num("exit_code") {
        parts.push(format!("exit {code}"));
    } else if let Some(sig) = num("signal") {
        parts.push(format!("signal {sig}"));
    }
    match body.get("reason") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => parts.push(format!("reason: {}", short(s))),
        Some(other) => parts.push(format!("reason: {}", short(&other.to_string()))),
    }
    let due_at = body
        .get("due_at")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    match (num("delay_ms"), num("poll"), due_at) {
        (Some(ms), _, Some(due)) => parts.push(format!(
            "due {} (delay {ms} ms)",
            time(&due.with_timezone(&Utc))
        )),
        (Some(ms), Some(poll), None) => parts.push(format!("poll {poll}, next run in {ms} ms")),
        (Some(ms), None, None) => parts.push(format!("retry in {ms} ms")),
        _ => {}
    }
    if let Some(n) = num("delivery_count").or_else(|| num("delivery")) {
        parts.push(format!("delivery {n}"));
    }
    parts.join(", ")
}

/// The body's `error`, whole.
fn error_text(body: &Value) -> Option<String> {
    match body.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// Writes `label: text` after `pad`, `text` wrapped to `width` columns and
/// its further lines lined up under its first.
fn field(out: &mut String, pad: &str, label: &str, text: &str, width: usize) {
    let head = format!("{pad}{label}: ");
    let indent = head.chars().count();
    let room = width.saturating_sub(indent).max(MIN_TEXT_WIDTH);
    for (k, piece) in wrap(text, room).iter().enumerate() {
        if k == 0 {
            out.push_str(&head);
        } else {
            out.push_str(pad);
            out.extend(std::iter::repeat_n(' ', indent - pad.chars().count()));
        }
        out.push_str(piece);
        out.push('\n');
    }
}

/// `text` cut into lines of at most `width` characters: at its own line
/// breaks, then at the last space that leaves a line at least half full,
/// else in the middle of a word. Control characters are shown escaped (a
/// colour code in a command's stderr must not reach the terminal), tabs as
/// four spaces; trailing blank lines are dropped.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for source in text.split('\n') {
        let mut chars: Vec<char> = Vec::new();
        for c in source.trim_end().chars() {
            match c {
                '\t' => chars.extend([' '; 4]),
                c if c.is_control() => chars.extend(c.escape_debug()),
                c => chars.push(c),
            }
        }
        if chars.is_empty() {
            lines.push(String::new());
            continue;
        }
        let mut start = 0;
        while start < chars.len() {
            if chars.len() - start <= width {
                lines.push(chars[start..].iter().collect());
                break;
            }
            // `chars[end]` exists: more than `width` characters are left.
            let end = start + width;
            match (start + width / 2..=end).rev().find(|&k| chars[k] == ' ') {
                Some(space) => {
                    let piece: String = chars[start..space].iter().collect();
                    lines.push(piece.trim_end().to_owned());
                    // The next line starts at the next word.
                    start = space;
                    while start < chars.len() && chars[start] == ' ' {
                        start += 1;
                    }
                }
                None => {
                    lines.push(chars[start..end].iter().collect());
                    start = end;
                }
            }
        }
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
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
    fn an_in_progress_run_shows_its_poll_output_and_logs() {
        let v = view(vec![
            receipt("a", ReceiptType::Accepted, &[], 0).with_worker("w"),
            receipt("p", ReceiptType::InProgress, &["a"], 10)
                .with_worker("w")
                .with_body(json!({"exit_code": 0, "poll": 1, "delay_ms": 896,
                    "output": {"done": 1}, "logs": ["step 1 of 3"]})),
        ]);
        let text = render_tree(&v);
        assert!(text.contains("in_progress #1 w"), "{text}");
        assert!(text.contains("poll 1, next run in 896 ms"), "{text}");
        assert!(text.contains(r#"output: {"done":1}"#), "{text}");
        assert!(text.contains("log: step 1 of 3"), "{text}");
    }

    #[test]
    fn a_redelivery_branches_and_each_branch_goes_on_flat() {
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
        assert_eq!(
            lines[1..],
            [
                "queued #1 - 2026-01-01 00:00:00.000",
                "├─ accepted #1 w1 2026-01-01 00:00:00.100  delivery 0",
                "└─ accepted #1 w2 2026-01-01 00:00:00.300  delivery 1",
                "   success #1 w2 2026-01-01 00:00:00.500  exit 0",
            ],
            "{text}"
        );
    }

    #[test]
    fn a_delayed_task_starts_with_scheduled_and_says_when_it_is_due() {
        let mut scheduled = receipt("s", ReceiptType::Scheduled, &[], 0);
        scheduled.body = json!({
            "delay_ms": 30_000,
            "due_at": "2026-01-01T00:00:30.000Z",
            "queue": "chit.wait.30000.x",
        });
        let text = render_tree(&view(vec![
            scheduled,
            receipt("a", ReceiptType::Accepted, &["s"], 30_100).with_worker("w"),
        ]));
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "scheduled #1 - 2026-01-01 00:00:00.000  due 2026-01-01 00:00:30.000 (delay 30000 ms)",
                "accepted #1 w 2026-01-01 00:00:30.100",
            ],
            "{text}"
        );
    }

    #[test]
    fn a_replayed_chain_of_fourteen_receipts_is_drawn_flat() {
        use ReceiptType::*;
        let steps = [
            Queued,
            Accepted,
            Failure,
            DeadLettered,
            Queued,
            Accepted,
            Failure,
            RetryScheduled,
            Accepted,
            Failure,
            DeadLettered,
            Queued,
            Accepted,
            Success,
        ];
        let ids: Vec<String> = (0..steps.len()).map(|k| format!("r{k:02}")).collect();
        let chain: Vec<Receipt> = steps
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let parents: Vec<&str> = if k == 0 { vec![] } else { vec![&ids[k - 1]] };
                receipt(&ids[k], *t, &parents, k as i64 * 10)
            })
            .collect();
        let text = render_tree(&view(chain));
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines.len(), 14, "{text}");
        for (line, t) in lines.iter().zip(steps) {
            assert!(
                line.starts_with(&format!("{} #1", t.as_str())),
                "no indentation in a linear chain: {line:?}\n{text}"
            );
        }
    }

    #[test]
    fn a_worker_clock_behind_the_publishers_does_not_put_accepted_first() {
        // As the API of an older sink sent it: by time, accepted first.
        let v = view(vec![
            receipt("a", ReceiptType::Accepted, &["q"], 21).with_worker("w"),
            receipt("q", ReceiptType::Queued, &[], 23),
            receipt("s", ReceiptType::Success, &["a"], 40).with_worker("w"),
        ]);
        let text = render_tree(&v);
        let types: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(types, ["queued", "accepted", "success"], "{text}");
        assert!(!text.contains("orphan"), "{text}");
    }

    #[test]
    fn errors_stderr_and_artifacts_are_shown_whole_and_wrapped() {
        let error = format!(
            "command exited with code 2: {} the end",
            "a fairly long explanation of what went wrong ".repeat(4)
        );
        let path = format!("/var/lib/chit/out/{}/result.json", "deep/".repeat(20));
        let v = view(vec![
            receipt("q", ReceiptType::Queued, &[], 0),
            receipt("a", ReceiptType::Accepted, &["q"], 1).with_worker("w"),
            receipt("f", ReceiptType::Failure, &["a"], 2)
                .with_worker("w")
                .with_body(json!({
                    "error": error,
                    "reason": "failed",
                    "exit_code": 2,
                    "stderr_tail": "warning: first\n\tat frame one\n\u{1b}[31mred\u{1b}[0m\n",
                })),
            receipt("r", ReceiptType::RetryScheduled, &["f"], 3)
                .with_worker("w")
                .with_body(json!({"error": error, "delay_ms": 500})),
            receipt("a2", ReceiptType::Accepted, &["r"], 4).with_worker("w"),
            receipt("s", ReceiptType::Success, &["a2"], 5)
                .with_worker("w")
                .with_artifacts(vec![broker_topology::Artifact {
                    path: Some(path.clone()),
                    content_type: Some("application/json".into()),
                    size: Some(120),
                    ..Default::default()
                }])
                .with_body(json!({"exit_code": 0})),
        ]);
        let width = 72;
        let text = render_tree_to_width(&v, width);
        // The summary line is not wrapped; everything under it is.
        for line in text.lines().skip(1) {
            assert!(
                line.chars().count() <= width,
                "{line:?} is too wide:\n{text}"
            );
        }
        // Glue the wrapped pieces back: the whole error and path are there.
        let joined: String = text
            .lines()
            .map(|l| l.trim_start_matches([' ', '│']))
            .collect::<Vec<_>>()
            .join(" ");
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let tail = words(&joined[joined.find("error: ").unwrap() + 7..]);
        assert!(tail.starts_with(&words(&error)), "{text}");
        assert_eq!(
            text.matches("error: ").count(),
            1,
            "the retry's repeat of the failure's error is not shown twice:\n{text}"
        );
        let glued: String = text.lines().map(str::trim).collect::<Vec<_>>().concat();
        assert!(glued.contains(&path), "{text}");
        assert!(
            text.contains("    artifact: /var/lib/chit/out/deep/"),
            "{text}"
        );
        assert!(glued.contains("(application/json, 120 bytes)"), "{text}");
        assert!(text.contains("    stderr: warning: first\n"), "{text}");
        assert!(text.contains("                at frame one\n"), "{text}");
        assert!(
            text.contains("\\u{1b}[31mred") && !text.contains('\u{1b}'),
            "escape codes are shown, not sent to the terminal:\n{text}"
        );
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
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "failure #1 - 2026-01-01 00:00:00.010  exit 2  [orphan: parent missing not stored]",
                "    error: boom",
                "           stack trace",
                "retry_scheduled #1 - 2026-01-01 00:00:00.020  retry in 1000 ms",
            ],
            "{text}"
        );
    }

    #[test]
    fn wrapping_breaks_at_spaces_else_inside_words() {
        assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("one\n\ntwo\n\n", 10), ["one", "", "two"]);
        assert_eq!(wrap("  indented", 20), ["  indented"]);
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

    #[test]
    fn trace_ids_are_listed_once_and_linked_by_the_template() {
        let trace = broker_topology::TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        let mut queued = receipt("r1", ReceiptType::Queued, &[], 0);
        queued.set_trace(trace, true);
        let mut accepted = receipt("r2", ReceiptType::Accepted, &["r1"], 1);
        accepted.set_trace(trace, false);
        let v = view(vec![queued, accepted]);
        let plain = render_tree(&v);
        assert_eq!(
            plain
                .matches("trace: 4bf92f3577b34da6a3ce929d0e0e4736\n")
                .count(),
            1,
            "{plain}"
        );
        let linked =
            render_tree_linked(&v, 200, Some("https://grafana/explore?traceId={trace_id}"));
        assert!(
            linked.contains(
                "trace: 4bf92f3577b34da6a3ce929d0e0e4736 \
                 https://grafana/explore?traceId=4bf92f3577b34da6a3ce929d0e0e4736\n"
            ),
            "{linked}"
        );
        assert!(
            !render_tree(&view(vec![receipt("r3", ReceiptType::Queued, &[], 0)]))
                .contains("trace:")
        );
    }
}
