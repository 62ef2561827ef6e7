//! A small YAML writer for JSON values, for `chit manifest --format yaml`:
//! block style, two-space indents, and every string that is not plainly a
//! string to YAML 1.1 and 1.2 readers alike written double-quoted.
//!
//! Why not a crate: `serde_yaml` is deprecated and `serde_yml` unmaintained
//! (RUSTSEC-2025-0068); `serde_norway`, the maintained fork, writes `yes`,
//! `on`, `2024-01-01`, `12:30` and `1_000` unquoted, correct for YAML 1.2
//! but read as booleans, dates and numbers by YAML 1.1 readers such as
//! PyYAML, which would change the `enum` of a payload schema. Here a string
//! is plain only when it starts with a letter, `_` or `/`, holds nothing but
//! letters, digits, spaces and `_./+-`, and is none of the words either
//! version reads as a boolean or null; any other is quoted, with every
//! character YAML does not print as itself escaped.

use serde_json::{Map, Number, Value};

/// A document whose top-level mapping has `entries`, in this order.
pub(super) fn document(entries: &[(&str, &Value)]) -> String {
    let mut out = String::new();
    for (key, value) in entries {
        entry(&mut out, 0, key, value);
    }
    out
}

/// `key: value` at `indent`, the value on the same line when it is a
/// scalar or an empty collection, else beneath, indented.
fn entry(out: &mut String, indent: usize, key: &str, value: &Value) {
    out.push_str(&" ".repeat(indent));
    out.push_str(&string(key));
    out.push(':');
    if is_block(value) {
        out.push('\n');
        block(out, indent + 2, value);
    } else {
        out.push(' ');
        out.push_str(&scalar(value));
        out.push('\n');
    }
}

/// A non-empty mapping or sequence, each line at `indent`.
fn block(out: &mut String, indent: usize, value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in ordered(map) {
                entry(out, indent, key, value);
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_block(item) {
                    // The item as a block two further in, its first
                    // indent turned into the dash.
                    let mut inner = String::new();
                    block(&mut inner, indent + 2, item);
                    out.push_str(&" ".repeat(indent));
                    out.push_str("- ");
                    out.push_str(&inner[indent + 2..]);
                } else {
                    out.push_str(&" ".repeat(indent));
                    out.push_str("- ");
                    out.push_str(&scalar(item));
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&" ".repeat(indent));
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// A mapping's entries, `name` first (what a reader looks for), then the rest.
fn ordered(map: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    let first = map.get_key_value("name");
    first
        .into_iter()
        .chain(map.iter().filter(|(k, _)| k.as_str() != "name"))
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// A value written on one line.
fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A number as both YAML versions read it: a float keeps its point and
/// gets a signed exponent (`1.0e+20`, not `1e20`, which YAML 1.1 reads as
/// a string).
fn number(n: &Number) -> String {
    let text = n.to_string();
    if !n.is_f64() {
        return text;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (text.as_str(), None),
    };
    let mut out = mantissa.to_owned();
    if !out.contains('.') {
        out.push_str(".0");
    }
    if let Some(e) = exponent {
        out.push('e');
        if !e.starts_with(['-', '+']) {
            out.push('+');
        }
        out.push_str(e);
    }
    out
}

/// The words YAML 1.1 or 1.2 reads as a boolean or null, in any case.
const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

fn is_plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && !s.ends_with(' ')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _./+-".contains(c))
        && !RESERVED.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// A string, plain when that is safe, else double-quoted.
fn string(s: &str) -> String {
    if is_plain(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Printable, and not a line break to YAML 1.1 (NEL, LS, PS) or
            // a byte-order mark.
            ' '..='~' | '\u{a0}'..='\u{2027}' | '\u{202a}'..='\u{d7ff}' => out.push(c),
            '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}' => {
                out.push(c)
            }
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yaml_rust2::{Yaml, YamlLoader};

    /// What a YAML 1.2 reader makes of `text`, as JSON.
    fn read(text: &str) -> Value {
        let docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        assert_eq!(docs.len(), 1, "{text}");
        to_json(&docs[0])
    }

    fn to_json(y: &Yaml) -> Value {
        match y {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => json!(b),
            Yaml::Integer(i) => json!(i),
            Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
            Yaml::String(s) => json!(s),
            Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), to_json(v)))
                    .collect(),
            ),
            other => panic!("unexpected YAML node {other:?}"),
        }
    }

    /// Strings a YAML reader might take for something else.
    const TRICKY: &[&str] = &[
        "yes",
        "No",
        "ON",
        "off",
        "y",
        "N",
        "true",
        "False",
        "null",
        "Null",
        "~",
        "",
        " lead",
        "trail ",
        "1_000",
        "2024-01-01",
        "12:30",
        "190:20:30",
        "0o12",
        "0x1f",
        "0777",
        "+1",
        "1.",
        "1e3",
        ".inf",
        "-.inf",
        ".NaN",
        "-",
        "- x",
        "a: b",
        "x #y",
        "#x",
        "@x",
        "`x",
        "*a",
        "&a",
        "!t",
        "%p",
        "|",
        ">",
        "?",
        "[a]",
        "{a}",
        "a,b",
        "<<",
        "=",
        "'",
        "\"",
        "back\\slash",
        "multi\nline",
        "tab\there",
        "cr\rx",
        "é ü 中文",
        "del\u{7f}",
        "nel\u{85}x",
        "ls\u{2028}ps\u{2029}",
        "bom\u{feff}",
        "bell\u{7}",
        "emoji 🦀",
        "https://x.example/a?b=c",
        "plain words",
        "chit.task.resize",
        "/tmp/out.json",
        "command.execute",
    ];

    #[test]
    fn every_value_reads_back_as_written() {
        let mut tricky = Map::new();
        for (i, s) in TRICKY.iter().enumerate() {
            tricky.insert(s.to_string(), json!(s));
            tricky.insert(format!("k{i}"), json!([s, {"v": s}]));
        }
        let value = json!({
            "name": "first",
            "tricky": tricky,
            "list": TRICKY,
            "numbers": [0, -7, 42, i64::MAX, 30.0, 1.5, -0.25, 1e20, 1.5e-7, 6.02e23],
            "flags": [true, false, null],
            "empty": {"map": {}, "list": []},
            "nested": [[1, [2, []]], [{"a": {"b": [{}]}}], {"x": [[{"y": 1}]]}],
            "$schema": "https://json-schema.org/draft/2020-12/schema",
        });
        let text = document(&[("doc", &value), ("after", &json!("end"))]);
        assert_eq!(read(&text), json!({"doc": value, "after": "end"}), "{text}");
    }

    #[test]
    fn strings_yaml_1_1_would_misread_are_quoted() {
        let text = document(&[(
            "enum",
            &json!(["yes", "on", "2024-01-01", "12:30", "1_000", "ok", "1e20"]),
        )]);
        assert_eq!(
            text,
            "enum:\n  - \"yes\"\n  - \"on\"\n  - \"2024-01-01\"\n  - \"12:30\"\n  - \"1_000\"\n  \
             - ok\n  - \"1e20\"\n"
        );
        assert_eq!(number(&Number::from_f64(1e20).unwrap()), "1.0e+20");
        assert_eq!(number(&Number::from_f64(1.5e-7).unwrap()), "1.5e-7");
        assert_eq!(number(&Number::from_f64(30.0).unwrap()), "30.0");
    }

    #[test]
    fn the_layout_is_block_style_with_name_first() {
        let value = json!({
            "caps": [{"queue": "chit.task.a", "name": "a", "retry": {"max_attempts": 3}}],
            "none": [],
        });
        let text = document(&[("version", &json!("0.1.0")), ("doc", &value)]);
        assert_eq!(
            text,
            "version: \"0.1.0\"\ndoc:\n  caps:\n    - name: a\n      queue: chit.task.a\n      \
             retry:\n        max_attempts: 3\n  none: []\n"
        );
    }
}
