//! The open batch: receipts decoded from deliveries, waiting to be written.
//!
//! A batch closes when it holds `batch_size` entries or `batch_wait` after its
//! first message, whichever comes first. It remembers the last delivery's
//! acker so that, once the batch is committed, one `multiple` ack releases
//! every message in it; and which entries and acker each message has, so
//! that a batch the store refuses can be written, and settled, message by
//! message.

use broker_topology::Receipt;
use broker_topology::codec::{self, BadReceipt, ContentType};
use lapin::Acker;
use std::ops::Range;
use std::time::Duration;
use tokio::time::Instant;

/// Receipts and bad entries from consecutive deliveries of one channel.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) receipts: Vec<Receipt>,
    pub(crate) bad: Vec<BadReceipt>,
    /// Messages in the batch.
    pub(crate) messages: usize,
    /// The acker of the last message, which acks all of them with `multiple`.
    pub(crate) last: Option<Acker>,
    /// Each message's entries and acker, in delivery order.
    pub(crate) spans: Vec<Span>,
    opened: Option<Instant>,
}

/// One message of a batch: its entries in `receipts` and `bad`, and its acker.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) receipts: Range<usize>,
    pub(crate) bad: Range<usize>,
    pub(crate) acker: Option<Acker>,
}

impl Batch {
    /// Decodes a message body into the batch. Nothing is dropped: an
    /// undecodable body, or one in a content type chit does not read, becomes
    /// a bad entry to quarantine.
    pub(crate) fn add(&mut self, content_type: Option<&str>, body: &[u8], acker: Option<Acker>) {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        self.messages += 1;
        if acker.is_some() {
            self.last = acker.clone();
        }
        let (receipts_from, bad_from) = (self.receipts.len(), self.bad.len());
        self.decode(content_type, body);
        self.spans.push(Span {
            receipts: receipts_from..self.receipts.len(),
            bad: bad_from..self.bad.len(),
            acker,
        });
    }

    fn decode(&mut self, content_type: Option<&str>, body: &[u8]) {
        match ContentType::from_property(content_type) {
            Ok(ct) => {
                let (good, bad) = codec::decode_receipts(body, ct);
                self.receipts.extend(good);
                self.bad.extend(bad);
            }
            Err(e) => self.bad.push(BadReceipt {
                reason: e.to_string(),
                raw: serde_json::Value::String(String::from_utf8_lossy(body).into_owned()),
            }),
        }
    }

    /// Entries (good and bad) in the batch.
    pub(crate) fn len(&self) -> usize {
        self.receipts.len() + self.bad.len()
    }

    /// True before the first message.
    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// When the batch must close, counted from its first message.
    pub(crate) fn deadline(&self, wait: Duration) -> Option<Instant> {
        self.opened.map(|t| t + wait)
    }

    /// True when the batch should be written now.
    pub(crate) fn is_ready(&self, size: usize, wait: Duration, now: Instant) -> bool {
        !self.is_empty() && (self.len() >= size || self.deadline(wait).is_some_and(|d| d <= now))
    }

    /// True when the batch holds every message a consumer with this prefetch
    /// may have unacked: the broker sends no more until it is acked, so
    /// waiting for its deadline would only stall (0 is no limit).
    pub(crate) fn holds_all_credit(&self, prefetch: u16) -> bool {
        prefetch > 0 && self.messages >= usize::from(prefetch)
    }

    /// When the first message arrived.
    pub(crate) fn opened(&self) -> Option<Instant> {
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_any_shape_are_kept() {
        let mut b = Batch::default();
        assert!(b.is_empty());
        b.add(
            None,
            br#"{"receipt_id":"r1","task_id":"t","task_type":"x","receipt_type":"queued","created_at":"2026-01-01T00:00:00Z"}"#,
            None,
        );
        b.add(Some("application/json"), b"not json", None);
        b.add(Some("text/xml"), b"<receipt/>", None);
        b.add(None, b"[]", None);
        assert_eq!(b.messages, 4);
        assert_eq!(b.receipts.len(), 1);
        assert_eq!(b.bad.len(), 2);
        assert!(b.bad[1].reason.contains("text/xml"), "{}", b.bad[1].reason);
        let spans: Vec<_> = b
            .spans
            .iter()
            .map(|s| (s.receipts.clone(), s.bad.clone()))
            .collect();
        assert_eq!(
            spans,
            [(0..1, 0..0), (1..1, 0..1), (1..1, 1..2), (1..1, 2..2)]
        );
    }

    #[test]
    fn a_batch_closes_on_size_or_time() {
        let wait = Duration::from_millis(10);
        let mut b = Batch::default();
        assert!(!b.is_ready(2, wait, Instant::now()));
        b.add(None, b"[1, 2]", None);
        assert!(b.is_ready(2, wait, Instant::now()), "full");
        let mut b = Batch::default();
        b.add(None, b"[1]", None);
        assert!(!b.is_ready(2, wait, Instant::now()));
        let later = b.opened().unwrap() + wait;
        assert!(b.is_ready(2, wait, later), "timed out");
    }

    #[test]
    fn a_batch_of_every_prefetched_message_holds_all_credit() {
        let mut b = Batch::default();
        assert!(!b.holds_all_credit(2));
        b.add(None, b"[]", None);
        assert!(!b.holds_all_credit(2));
        b.add(None, b"[]", None);
        assert!(b.holds_all_credit(2));
        assert!(!b.holds_all_credit(0), "prefetch 0 is unlimited");
    }
}
