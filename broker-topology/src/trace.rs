//! W3C trace context as chit carries it: the `traceparent` header of a task
//! or a receipt batch, and the `trace_id` and `span_id` of a receipt.
//!
//! A [`TraceContext`] is the three things a `traceparent` says (trace id,
//! parent span id, sampled flag) in fixed-size arrays, so reading, copying
//! and stamping one onto receipts allocates nothing. [`TraceId`] and
//! [`SpanId`] read and write themselves as lower-case hex, the form the W3C
//! header, OTLP's JSON and tracing back ends use.
//!
//! Only the version `00` layout is written; a later version is read by its
//! first four fields, as the W3C recommendation asks. An id of all zeros,
//! bad hex, or a wrong length makes the whole header unreadable: the task
//! then starts a new trace.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt::{self, Write as _};

/// A 16-byte trace id: the same in every span and receipt of one trace.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id: one span (one step) within a trace.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId([u8; 8]);

/// One position in a trace: what a `traceparent` header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span that is the parent of whatever continues from here.
    pub span_id: SpanId,
    /// The W3C `sampled` flag: the caller may have recorded its span.
    pub sampled: bool,
}

macro_rules! hex_id {
    ($name:ident, $len:literal, $what:literal) => {
        impl $name {
            /// The id from its bytes; `None` for all zeros, which W3C forbids.
            pub fn from_bytes(bytes: [u8; $len]) -> Option<Self> {
                (bytes != [0; $len]).then_some($name(bytes))
            }

            /// The id's bytes.
            pub fn to_bytes(self) -> [u8; $len] {
                self.0
            }

            /// A random id.
            pub fn random() -> Self {
                loop {
                    if let Some(id) = Self::from_bytes(rand::random()) {
                        return id;
                    }
                }
            }

            /// The lower-case hex form, on the stack.
            fn hex(&self) -> [u8; 2 * $len] {
                let mut out = [0u8; 2 * $len];
                // Cannot fail: `out` is exactly twice the id's length.
                let _ = hex::encode_to_slice(self.0, &mut out);
                out
            }

            /// Reads the lower- or upper-case hex form; `None` for another
            /// length, a non-hex digit, or all zeros.
            pub fn parse(hex: &str) -> Option<Self> {
                let hex = hex.as_bytes();
                if hex.len() != 2 * $len {
                    return None;
                }
                let mut bytes = [0u8; $len];
                for (i, pair) in hex.chunks_exact(2).enumerate() {
                    bytes[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
                }
                Self::from_bytes(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(hex_str(&self.hex()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(hex_str(&self.hex()))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{} must be {} hex digits, not all zero; got {:?}",
                        $what,
                        2 * $len,
                        text
                    ))
                })
            }
        }
    };
}

hex_id!(TraceId, 16, "trace_id");
hex_id!(SpanId, 8, "span_id");

/// Hex digits as text; they are ASCII.
fn hex_str(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl TraceContext {
    /// The start of a new trace, with random ids.
    pub fn new_root(sampled: bool) -> Self {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled,
        }
    }

    /// Reads a `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>`.
    /// `None` when it cannot be read, or is version `ff`.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let s = traceparent.trim();
        let mut parts = s.splitn(5, '-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") || flags.len() != 2 {
            return None;
        }
        let version = (nibble(version.as_bytes()[0])? << 4) | nibble(version.as_bytes()[1])?;
        // Version 00 has exactly four fields; later ones may add more.
        if version == 0 && rest.is_some() {
            return None;
        }
        let flags = (nibble(flags.as_bytes()[0])? << 4) | nibble(flags.as_bytes()[1])?;
        Some(TraceContext {
            trace_id: TraceId::parse(trace)?,
            span_id: SpanId::parse(span)?,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` header for this context (version `00`).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        let _ = write!(s, "{self}");
        s
    }

    /// The same trace, continued from another span.
    pub fn with_span(self, span_id: SpanId) -> Self {
        TraceContext { span_id, ..self }
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        f.write_str(hex_str(&self.trace_id.hex()))?;
        f.write_char('-')?;
        f.write_str(hex_str(&self.span_id.hex()))?;
        f.write_str(if self.sampled { "-01" } else { "-00" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips() {
        let ctx = TraceContext::parse(W3C_EXAMPLE).expect("the W3C example");
        assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id.to_string(), "00f067aa0ba902b7");
        assert!(ctx.sampled);
        assert_eq!(ctx.traceparent(), W3C_EXAMPLE);
        let unsampled = TraceContext::parse(&W3C_EXAMPLE.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn unreadable_headers_are_none() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version is read by its first four fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next";
        assert!(TraceContext::parse(later).is_some());
    }

    #[test]
    fn ids_are_hex_strings_in_json() {
        let ctx = TraceContext::new_root(true);
        let json = serde_json::to_value(ctx.trace_id).unwrap();
        assert_eq!(json, serde_json::json!(ctx.trace_id.to_string()));
        let back: TraceId = serde_json::from_value(json).unwrap();
        assert_eq!(back, ctx.trace_id);
        let err = serde_json::from_value::<SpanId>(serde_json::json!("xyz")).unwrap_err();
        assert!(err.to_string().contains("span_id"), "{err}");
        assert_ne!(TraceContext::new_root(false).trace_id, ctx.trace_id);
    }
}
