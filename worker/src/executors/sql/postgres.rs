//! `sql.query` on PostgreSQL: parameters bound as the types the server
//! infers for them, rows turned into JSON by column type.
//!
//! The statement is prepared first, so the server says what type each `$n`
//! is and what the columns are; each JSON parameter is then encoded as that
//! type (a number for an `int4`, a string for a `uuid`, anything for a
//! `jsonb`), and sqlx reuses the prepared statement. A parameter whose type
//! chit does not encode is an error that suggests a cast (`$1::text`).

use super::{Rows, SqlError, Statement};
use crate::executor::ExecErrorKind;
use base64::Engine;
use futures_util::TryStreamExt;
use serde_json::{Map, Value, json};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgPool, PgRow, PgTypeInfo, PgTypeKind, PgValueRef, Postgres,
};
use sqlx::{AssertSqlSafe, Column, Decode, Encode, Executor, Row, SqlSafeStr, TypeInfo, ValueRef};

/// Runs `st` in its own transaction (read-only when the executor is).
pub(super) async fn run(pool: &PgPool, st: &Statement) -> Result<Rows, SqlError> {
    let mut tx = pool
        .begin_with(if st.read_only {
            "BEGIN READ ONLY"
        } else {
            "BEGIN"
        })
        .await?;
    let ms = st.timeout.as_millis().max(1);
    sqlx::query(AssertSqlSafe(format!("SET LOCAL statement_timeout = {ms}")))
        .execute(&mut *tx)
        .await?;
    let prepared = (&mut *tx)
        .prepare(AssertSqlSafe(st.query.clone()).into_sql_str())
        .await?;
    let columns: Vec<String> = sqlx::Statement::columns(&prepared)
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let types: Vec<PgTypeInfo> = match sqlx::Statement::parameters(&prepared) {
        Some(sqlx::Either::Left(types)) => types.to_vec(),
        _ => Vec::new(),
    };
    if types.len() != st.params.len() {
        return Err(SqlError::Param {
            index: st.params.len().min(types.len()) + 1,
            message: format!(
                "the statement takes {} parameters and the payload gives {}",
                types.len(),
                st.params.len()
            ),
        });
    }
    let mut query = sqlx::query(AssertSqlSafe(st.query.clone()));
    for (i, (value, ty)) in st.params.iter().zip(&types).enumerate() {
        check_param(i + 1, value, ty)?;
        query = query.bind(Param {
            value: value.clone(),
            ty: ty.clone(),
        });
    }
    let mut out = Rows {
        columns,
        ..Rows::default()
    };
    if out.columns.is_empty() {
        let done = query.execute(&mut *tx).await?;
        out.rows_affected = Some(done.rows_affected());
    } else {
        let mut stream = query.fetch(&mut *tx);
        while let Some(row) = stream.try_next().await? {
            if out.rows.len() == st.max_rows {
                out.truncated = true;
                break;
            }
            out.rows.push(row_json(&row)?);
        }
    }
    if st.read_only {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(out)
}

/// SQLSTATE to how the task failed.
pub(super) fn error_kind(code: Option<&str>) -> ExecErrorKind {
    let code = code.unwrap_or("");
    match code {
        // query_canceled: the statement timeout.
        "57014" => ExecErrorKind::Timeout,
        // read_only_sql_transaction.
        "25006" => ExecErrorKind::Refused,
        // serialization_failure, deadlock_detected: another try may pass.
        "40001" | "40P01" => ExecErrorKind::Failed,
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") => {
            ExecErrorKind::Unavailable
        }
        _ => ExecErrorKind::Permanent,
    }
}

/// A JSON parameter, encoded as the type the server inferred for it.
struct Param {
    value: Value,
    ty: PgTypeInfo,
}

impl sqlx::Type<Postgres> for Param {
    fn type_info() -> PgTypeInfo {
        // Never used: `produces` gives each value its own type.
        PgTypeInfo::with_name("TEXT")
    }
}

/// The error for a parameter of `ty` that `value` cannot be.
fn mismatch(value: &Value, ty: &PgTypeInfo) -> String {
    format!(
        "{value} cannot be given as {}; give another value, or cast the parameter in the query (e.g. `$1::text`)",
        ty.name()
    )
}

/// Checks, before anything is sent, that `value` can be encoded as `ty`.
fn check_param(index: usize, value: &Value, ty: &PgTypeInfo) -> Result<(), SqlError> {
    let mut buf = PgArgumentBuffer::default();
    encode(value, ty, &mut buf)
        .map(|_| ())
        .map_err(|e| SqlError::Param {
            index,
            message: e.to_string(),
        })
}

impl<'q> Encode<'q, Postgres> for Param {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        encode(&self.value, &self.ty, buf)
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.ty.clone())
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn encode_as<'q, T: Encode<'q, Postgres>>(
    v: T,
    buf: &mut PgArgumentBuffer,
) -> Result<IsNull, BoxDynError> {
    v.encode(buf)
}

fn encode(
    value: &Value,
    ty: &PgTypeInfo,
    buf: &mut PgArgumentBuffer,
) -> Result<IsNull, BoxDynError> {
    if value.is_null() {
        return Ok(IsNull::Yes);
    }
    let bad = || -> BoxDynError { mismatch(value, ty).into() };
    if matches!(ty.kind(), PgTypeKind::Enum(_)) {
        let label = value.as_str().ok_or_else(bad)?;
        buf.extend_from_slice(label.as_bytes());
        return Ok(IsNull::No);
    }
    match ty.name() {
        "BOOL" => encode_as(value.as_bool().ok_or_else(bad)?, buf),
        "INT2" => encode_as(
            int(value)
                .and_then(|i| i16::try_from(i).ok())
                .ok_or_else(bad)?,
            buf,
        ),
        "INT4" => encode_as(
            int(value)
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(bad)?,
            buf,
        ),
        "INT8" => encode_as(int(value).ok_or_else(bad)?, buf),
        "FLOAT4" => encode_as(float(value).ok_or_else(bad)? as f32, buf),
        "FLOAT8" => encode_as(float(value).ok_or_else(bad)?, buf),
        "NUMERIC" => {
            let digits = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_owned(),
                _ => return Err(bad()),
            };
            numeric::encode(&digits, buf).map_err(|_| bad())?;
            Ok(IsNull::No)
        }
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" | "CITEXT" => {
            if value.is_object() || value.is_array() {
                return Err(bad());
            }
            encode_as(text(value), buf)
        }
        "JSON" | "JSONB" => {
            let text = serde_json::to_string(value)?;
            if ty.name() == "JSONB" {
                // The binary form of jsonb is a version byte, then the text.
                buf.push(1);
            }
            buf.extend_from_slice(text.as_bytes());
            Ok(IsNull::No)
        }
        "UUID" => encode_as(
            value
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(bad)?,
            buf,
        ),
        "TIMESTAMPTZ" => encode_as(
            value
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .ok_or_else(bad)?,
            buf,
        ),
        "TIMESTAMP" => encode_as(
            value
                .as_str()
                .and_then(|s| {
                    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .or_else(|_| {
                            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                        })
                        .ok()
                })
                .ok_or_else(bad)?,
            buf,
        ),
        "DATE" => encode_as(
            value
                .as_str()
                .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .ok_or_else(bad)?,
            buf,
        ),
        "BYTEA" => encode_as(
            value
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(bad)?,
            buf,
        ),
        "TEXT[]" | "VARCHAR[]" => encode_as(
            array(value, |v| v.as_str().map(str::to_owned)).ok_or_else(bad)?,
            buf,
        ),
        "INT4[]" => encode_as(
            array(value, |v| int(v).and_then(|i| i32::try_from(i).ok())).ok_or_else(bad)?,
            buf,
        ),
        "INT8[]" => encode_as(array(value, int).ok_or_else(bad)?, buf),
        "FLOAT8[]" => encode_as(array(value, float).ok_or_else(bad)?, buf),
        "BOOL[]" => encode_as(array(value, Value::as_bool).ok_or_else(bad)?, buf),
        _ => Err(bad()),
    }
}

/// A JSON array as a vector of optional elements (null elements are NULL).
fn array<T>(value: &Value, element: impl Fn(&Value) -> Option<T>) -> Option<Vec<Option<T>>> {
    value
        .as_array()?
        .iter()
        .map(|v| {
            if v.is_null() {
                Some(None)
            } else {
                element(v).map(Some)
            }
        })
        .collect()
}

/// A row as a JSON object, column name to value.
fn row_json(row: &PgRow) -> Result<Map<String, Value>, SqlError> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(SqlError::Database)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            let ty = raw.type_info().into_owned();
            value_json(raw, &ty).map_err(|message| SqlError::Column {
                column: column.name().to_owned(),
                message,
            })?
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}

fn decode<'r, T: Decode<'r, Postgres>>(raw: PgValueRef<'r>) -> Result<T, String> {
    T::decode(raw).map_err(|e| e.to_string())
}

fn value_json(raw: PgValueRef<'_>, ty: &PgTypeInfo) -> Result<Value, String> {
    if matches!(ty.kind(), PgTypeKind::Enum(_)) {
        return raw.as_str().map(|s| json!(s)).map_err(|e| e.to_string());
    }
    Ok(match ty.name() {
        "BOOL" => json!(decode::<bool>(raw)?),
        "INT2" => json!(decode::<i16>(raw)?),
        "INT4" => json!(decode::<i32>(raw)?),
        "INT8" => json!(decode::<i64>(raw)?),
        "OID" => json!(decode::<sqlx::postgres::types::Oid>(raw)?.0),
        "FLOAT4" => json!(decode::<f32>(raw)?),
        "FLOAT8" => json!(decode::<f64>(raw)?),
        // As a string, so no digit is lost.
        "NUMERIC" => json!(numeric::decode(raw.as_bytes().map_err(|e| e.to_string())?)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" | "CITEXT" => {
            json!(decode::<String>(raw)?)
        }
        "\"CHAR\"" => json!(decode::<i8>(raw)? as u8 as char),
        "JSON" | "JSONB" => decode::<sqlx::types::Json<Value>>(raw)?.0,
        "UUID" => json!(decode::<uuid::Uuid>(raw)?.to_string()),
        "TIMESTAMPTZ" => json!(decode::<chrono::DateTime<chrono::Utc>>(raw)?.to_rfc3339()),
        "TIMESTAMP" => json!(decode::<chrono::NaiveDateTime>(raw)?.to_string()),
        "DATE" => json!(decode::<chrono::NaiveDate>(raw)?.to_string()),
        "TIME" => json!(decode::<chrono::NaiveTime>(raw)?.to_string()),
        "BYTEA" => json!(base64::engine::general_purpose::STANDARD.encode(decode::<Vec<u8>>(raw)?)),
        "TEXT[]" | "VARCHAR[]" | "NAME[]" => json!(decode::<Vec<Option<String>>>(raw)?),
        "INT2[]" => json!(decode::<Vec<Option<i16>>>(raw)?),
        "INT4[]" => json!(decode::<Vec<Option<i32>>>(raw)?),
        "INT8[]" => json!(decode::<Vec<Option<i64>>>(raw)?),
        "FLOAT8[]" => json!(decode::<Vec<Option<f64>>>(raw)?),
        "BOOL[]" => json!(decode::<Vec<Option<bool>>>(raw)?),
        "JSONB[]" | "JSON[]" => json!(
            decode::<Vec<sqlx::types::Json<Value>>>(raw)?
                .into_iter()
                .map(|j| j.0)
                .collect::<Vec<_>>()
        ),
        other => {
            return Err(format!(
                "type {other} is not turned into JSON by sql.query; cast it in the query (e.g. `column::text`, or `to_jsonb(column)`)"
            ));
        }
    })
}

/// PostgreSQL's binary `numeric`: base-10000 digits with a weight, a sign
/// and a display scale.
mod numeric {
    use sqlx::postgres::PgArgumentBuffer;

    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;

    /// The value as a decimal string (`NaN` for not-a-number).
    pub(super) fn decode(bytes: &[u8]) -> Result<String, String> {
        let word = |i: usize| -> Result<u16, String> {
            bytes
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated numeric".to_owned())
        };
        let ndigits = word(0)? as usize;
        let weight = word(2)? as i16 as i64;
        let sign = word(4)?;
        let scale = word(6)? as usize;
        if sign == NAN {
            return Ok("NaN".into());
        }
        let digits: Vec<u16> = (0..ndigits)
            .map(|i| word(8 + 2 * i))
            .collect::<Result<_, _>>()?;
        let digit = |i: i64| -> u16 {
            if i < 0 {
                0
            } else {
                digits.get(i as usize).copied().unwrap_or(0)
            }
        };
        let mut out = String::new();
        if sign == NEGATIVE {
            out.push('-');
        }
        if weight < 0 {
            out.push('0');
        } else {
            out.push_str(&digit(0).to_string());
            for i in 1..=weight {
                out.push_str(&format!("{:04}", digit(i)));
            }
        }
        if scale > 0 {
            let mut frac = String::new();
            let mut i = weight + 1;
            while frac.len() < scale {
                frac.push_str(&format!("{:04}", digit(i)));
                i += 1;
            }
            frac.truncate(scale);
            out.push('.');
            out.push_str(&frac);
        }
        Ok(out)
    }

    /// Writes a plain decimal (`-12.345`; no exponent) in binary form.
    pub(super) fn encode(text: &str, buf: &mut PgArgumentBuffer) -> Result<(), ()> {
        let (sign, rest) = match text.strip_prefix('-') {
            Some(r) => (NEGATIVE, r),
            None => (POSITIVE, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(());
        }
        let int = int.trim_start_matches('0');
        // Pad the integer part on the left and the fraction on the right to
        // whole groups of four digits.
        let int_groups = int.len().div_ceil(4);
        let padded_int = format!("{:0>width$}", int, width = int_groups * 4);
        let frac_groups = frac.len().div_ceil(4);
        let padded_frac = format!("{:0<width$}", frac, width = frac_groups * 4);
        let all = format!("{padded_int}{padded_frac}");
        let mut groups: Vec<u16> = all
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
            .collect();
        let mut weight = int_groups as i64 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let scale = frac.len() as u16;
        let sign = if groups.is_empty() { POSITIVE } else { sign };
        buf.extend_from_slice(&(groups.len() as u16).to_be_bytes());
        buf.extend_from_slice(&(weight as i16).to_be_bytes());
        buf.extend_from_slice(&sign.to_be_bytes());
        buf.extend_from_slice(&scale.to_be_bytes());
        for g in groups {
            buf.extend_from_slice(&g.to_be_bytes());
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn decimals_survive_a_round_trip() {
            for text in [
                "0",
                "1",
                "-1",
                "12345.6789",
                "0.0001",
                "-0.5",
                "10000",
                "123456789012345678901234567890",
                "3.14159265358979323846",
                "100.10",
            ] {
                let mut buf = PgArgumentBuffer::default();
                encode(text, &mut buf).unwrap();
                assert_eq!(decode(&buf).unwrap(), text, "{text}");
            }
            let mut buf = PgArgumentBuffer::default();
            assert!(encode("1e5", &mut buf).is_err());
            assert!(encode("", &mut buf).is_err());
        }
    }
}
