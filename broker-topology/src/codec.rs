//! Body codecs: JSON and MessagePack, chosen by the AMQP `content_type`.
//!
//! A message without a content type is read as JSON, because that is what a
//! plain client sending a hand-written body most likely means.

use crate::error::{Error, ErrorKind};
use crate::receipt::Receipt;
use serde_json::Value;

/// `application/json`.
pub const JSON: &str = "application/json";
/// `application/msgpack`.
pub const MSGPACK: &str = "application/msgpack";

/// A body encoding chit reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// `application/json` (the default).
    #[default]
    Json,
    /// `application/msgpack` (also `application/x-msgpack`, `application/vnd.msgpack`).
    MsgPack,
}

impl ContentType {
    /// Reads an AMQP content type; `None` means JSON. Parameters such as
    /// `; charset=utf-8` are ignored.
    pub fn from_property(content_type: Option<&str>) -> Result<Self, Error> {
        let Some(raw) = content_type else {
            return Ok(ContentType::Json);
        };
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | JSON | "text/json" => Ok(ContentType::Json),
            MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(ContentType::MsgPack)
            }
            _ => Err(Error::new(
                ErrorKind::UnsupportedContentType(raw.to_owned()),
                format!("unsupported content type {raw:?}: chit reads {JSON} and {MSGPACK}"),
            )),
        }
    }

    /// The AMQP `content_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => JSON,
            ContentType::MsgPack => MSGPACK,
        }
    }

    /// Decodes any serde type from a body.
    pub fn decode<T: serde::de::DeserializeOwned>(self, body: &[u8]) -> Result<T, Error> {
        match self {
            ContentType::Json => serde_json::from_slice(body)
                .map_err(|e| Error::new(ErrorKind::Codec, format!("invalid JSON body: {e}"))),
            ContentType::MsgPack => rmp_serde::from_slice(body).map_err(|e| {
                Error::new(ErrorKind::Codec, format!("invalid MessagePack body: {e}"))
            }),
        }
    }

    /// Encodes any serde type; MessagePack maps keep their field names so other
    /// languages read them as maps.
    pub fn encode<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        match self {
            ContentType::Json => serde_json::to_vec(value)
                .map_err(|e| Error::new(ErrorKind::Codec, format!("cannot encode JSON: {e}"))),
            ContentType::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| {
                Error::new(ErrorKind::Codec, format!("cannot encode MessagePack: {e}"))
            }),
        }
    }
}

/// Decodes a task body into the executor's payload.
pub fn decode_payload(body: &[u8], content_type: ContentType) -> Result<Value, Error> {
    if body.is_empty() {
        return Err(Error::new(ErrorKind::Codec, "empty task body"));
    }
    content_type.decode(body)
}

/// One entry of a receipt batch that could not be read, kept for quarantine.
#[derive(Debug, Clone, PartialEq)]
pub struct BadReceipt {
    /// Why it was rejected.
    pub reason: String,
    /// The entry as far as it could be decoded (the raw body when nothing could).
    pub raw: Value,
}

/// Decodes a receipt message body: an array of receipts or one receipt object.
///
/// Entries that fail are returned separately, so one bad receipt does not
/// take its batch down with it.
pub fn decode_receipts(body: &[u8], content_type: ContentType) -> (Vec<Receipt>, Vec<BadReceipt>) {
    // Fast path: a well-formed batch decodes straight into receipts.
    if let Ok(batch) = content_type.decode::<Vec<Receipt>>(body) {
        let mut good = Vec::with_capacity(batch.len());
        let mut bad = Vec::new();
        for r in batch {
            match r.validate() {
                Ok(()) => good.push(r),
                Err(reason) => bad.push(BadReceipt {
                    reason,
                    raw: serde_json::to_value(&r).unwrap_or(Value::Null),
                }),
            }
        }
        return (good, bad);
    }
    let value: Value = match content_type.decode(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                Vec::new(),
                vec![BadReceipt {
                    reason: e.to_string(),
                    raw: Value::String(String::from_utf8_lossy(body).into_owned()),
                }],
            );
        }
    };
    let entries = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for entry in entries {
        match serde_json::from_value::<Receipt>(entry.clone()) {
            Ok(r) => match r.validate() {
                Ok(()) => good.push(r),
                Err(reason) => bad.push(BadReceipt { reason, raw: entry }),
            },
            Err(e) => bad.push(BadReceipt {
                reason: format!("not a receipt: {e}"),
                raw: entry,
            }),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::ReceiptType;

    #[test]
    fn content_types_are_recognised() {
        assert_eq!(ContentType::from_property(None).unwrap(), ContentType::Json);
        assert_eq!(
            ContentType::from_property(Some("application/json; charset=utf-8")).unwrap(),
            ContentType::Json
        );
        assert_eq!(
            ContentType::from_property(Some("application/x-msgpack")).unwrap(),
            ContentType::MsgPack
        );
        let err = ContentType::from_property(Some("text/xml")).unwrap_err();
        assert!(err.to_string().contains("text/xml"));
        assert!(matches!(err.kind(), ErrorKind::UnsupportedContentType(_)));
    }

    #[test]
    fn batches_round_trip_in_both_codecs() {
        let receipts = vec![
            Receipt::new("t1", "x", ReceiptType::Queued, vec![], 1),
            Receipt::new("t1", "x", ReceiptType::Accepted, vec!["p".into()], 1)
                .with_body(serde_json::json!({"delivery": 1})),
        ];
        for ct in [ContentType::Json, ContentType::MsgPack] {
            let body = ct.encode(&receipts).unwrap();
            let (good, bad) = decode_receipts(&body, ct);
            assert!(bad.is_empty(), "{bad:?}");
            assert_eq!(good, receipts);
        }
    }

    #[test]
    fn one_bad_entry_does_not_spoil_the_batch() {
        let body = br#"[{"receipt_id":"r1","task_id":"t","task_type":"x","receipt_type":"queued","created_at":"2026-01-01T00:00:00Z"},
                        {"receipt_id":"r2","task_type":"x"}]"#;
        let (good, bad) = decode_receipts(body, ContentType::Json);
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].reason.contains("task_id"), "{}", bad[0].reason);
    }

    #[test]
    fn garbage_is_reported_not_dropped() {
        let (good, bad) = decode_receipts(b"{not json", ContentType::Json);
        assert!(good.is_empty());
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].raw, Value::String("{not json".into()));
    }

    #[test]
    fn msgpack_payload_decodes_to_json_value() {
        let v = serde_json::json!({"command": "echo hi", "args": ["a"]});
        let body = ContentType::MsgPack.encode(&v).unwrap();
        assert_eq!(decode_payload(&body, ContentType::MsgPack).unwrap(), v);
        assert!(decode_payload(b"", ContentType::Json).is_err());
    }
}
