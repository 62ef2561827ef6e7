//! Output caps: a child's stdout and stderr are read to the end, so the
//! child never blocks on a full pipe, but only the first `cap` bytes of each
//! are kept. A stream that was cut ends with a marker saying how much was
//! dropped, so a reader of the output file or of the receipt's stderr tail
//! sees that it is not the whole:
//!
//! ```text
//! [chit: output cut at 1048576 bytes; 52428800 more bytes of stdout dropped]
//! ```

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long the rest of a stream is waited for once the child has ended: a
/// process that left the group may still hold the pipe open.
const LINGER: Duration = Duration::from_secs(2);

/// One stream, read to its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first `cap` bytes.
    pub kept: Vec<u8>,
    /// Bytes read past the cap.
    pub dropped: u64,
    /// The cap it was read with.
    pub cap: usize,
}

impl Captured {
    /// Every byte the stream carried, kept or not.
    pub fn total(&self) -> u64 {
        self.kept.len() as u64 + self.dropped
    }

    /// The kept bytes as text (invalid UTF-8 replaced), with the marker
    /// when some were dropped; `stream` names it in the marker.
    pub fn text(&self, stream: &str) -> String {
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&marker(stream, self.cap, self.dropped));
        }
        text
    }
}

/// The line that ends a cut stream.
pub fn marker(stream: &str, cap: usize, dropped: u64) -> String {
    format!("[chit: output cut at {cap} bytes; {dropped} more bytes of {stream} dropped]\n")
}

/// Reads `reader` to its end, keeping the first `cap` bytes.
pub async fn capture<R: AsyncRead + Unpin>(reader: Option<R>, cap: usize) -> Captured {
    let mut out = Captured {
        cap,
        ..Captured::default()
    };
    let Some(mut reader) = reader else {
        return out;
    };
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(out.kept.len()).min(n);
                out.kept.extend_from_slice(&buf[..room]);
                out.dropped += (n - room) as u64;
            }
        }
    }
    out
}

/// The capture of a spawned reader, waiting at most [`LINGER`] for the end
/// of a stream still held open; an unfinished one counts as empty.
pub async fn join(h: tokio::task::JoinHandle<Captured>) -> Captured {
    match tokio::time::timeout(LINGER, h).await {
        Ok(Ok(c)) => c,
        _ => Captured::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_is_cut_with_a_marker_naming_what_was_dropped() {
        let data = vec![b'x'; 10_000];
        let c = capture(Some(&data[..]), 1000).await;
        assert_eq!(c.kept.len(), 1000);
        assert_eq!(c.dropped, 9000);
        assert_eq!(c.total(), 10_000);
        let text = c.text("stdout");
        assert!(
            text.ends_with("[chit: output cut at 1000 bytes; 9000 more bytes of stdout dropped]\n"),
            "{text}"
        );
        let short = capture(Some(&b"hello\n"[..]), 1000).await;
        assert_eq!(short.text("stdout"), "hello\n");
    }
}
