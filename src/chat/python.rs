//! Python's text forms of template values: `json.dumps` (the `tojson` filter of
//! transformers' chat templates) and `repr`/`str` (what Jinja2 prints for `{{ value }}`).

use std::fmt::Write as _;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Options of `json.dumps` that templates pass to `tojson`.
#[derive(Clone, Debug)]
pub(crate) struct JsonStyle {
    /// `None`: one line; `Some(s)`: newlines, each level indented by `s`.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub ensure_ascii: bool,
    pub sort_keys: bool,
}

impl JsonStyle {
    /// transformers' defaults: `ensure_ascii=False`, Python's separators for the indent.
    pub(crate) fn new(indent: Option<String>) -> Self {
        let item_separator = if indent.is_some() { "," } else { ", " };
        JsonStyle {
            indent,
            item_separator: item_separator.into(),
            key_separator: ": ".into(),
            ensure_ascii: false,
            sort_keys: false,
        }
    }
}

/// Deepest nesting `dumps` and `repr` follow (Python's own limit is about 1000).
const MAX_DEPTH: usize = 512;

fn not_serializable(v: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("Object of type {} is not JSON serializable", v.kind()),
    )
}

/// `json.dumps(value, ...)` with the given style.
pub(crate) fn dumps(value: &Value, style: &JsonStyle) -> Result<String, Error> {
    let mut out = String::new();
    dump_value(value, style, 0, &mut out)?;
    Ok(out)
}

fn dump_value(v: &Value, style: &JsonStyle, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: nesting too deep",
        ));
    }
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number(v, true)),
        ValueKind::String => json_string(v.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            dump_seq(&items, style, depth, out)?;
        }
        ValueKind::Map => dump_map(v, style, depth, out)?,
        _ => return Err(not_serializable(v)),
    }
    Ok(())
}

fn newline(style: &JsonStyle, depth: usize, out: &mut String) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    }
}

fn dump_seq(
    items: &[Value],
    style: &JsonStyle,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    if items.is_empty() {
        out.push_str("[]");
        return Ok(());
    }
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_separator);
        }
        newline(style, depth + 1, out);
        dump_value(item, style, depth + 1, out)?;
    }
    newline(style, depth, out);
    out.push(']');
    Ok(())
}

/// A map key as `json.dumps` writes it: strings as they are, numbers, booleans and None
/// converted to their JSON text.
fn json_key(k: &Value) -> Result<String, Error> {
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number => number(k, true),
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "keys must be str, int, float, bool or None, not {}",
                    k.kind()
                ),
            ))
        }
    })
}

fn dump_map(v: &Value, style: &JsonStyle, depth: usize, out: &mut String) -> Result<(), Error> {
    let mut pairs = Vec::new();
    for k in v.try_iter()? {
        let item = v.get_item(&k)?;
        pairs.push((json_key(&k)?, item));
    }
    if style.sort_keys {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
    }
    if pairs.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    out.push('{');
    for (i, (k, item)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_separator);
        }
        newline(style, depth + 1, out);
        json_string(k, style.ensure_ascii, out);
        out.push_str(&style.key_separator);
        dump_value(item, style, depth + 1, out)?;
    }
    newline(style, depth, out);
    out.push('}');
    Ok(())
}

/// A JSON string literal with Python's escapes (`\uXXXX` for other controls and, with
/// `ensure_ascii`, for every non-ASCII character as UTF-16 units).
fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python prints it: integers exactly, floats by `repr` (`1.0`, `1e-05`,
/// `1e+16`); in JSON, non-finite floats as `NaN`/`Infinity` like `json.dumps`.
fn number(v: &Value, json: bool) -> String {
    if v.is_integer() {
        return v.to_string();
    }
    let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
    float_repr(f, json)
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation for
/// decimal exponents -4..16 and scientific notation otherwise.
pub(crate) fn float_repr(f: f64, json: bool) -> String {
    if f.is_nan() {
        return (if json { "NaN" } else { "nan" }).into();
    }
    if f.is_infinite() {
        let inf = if json { "Infinity" } else { "inf" };
        return if f < 0.0 {
            format!("-{inf}")
        } else {
            inf.into()
        };
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "1.5e-5", "-1e16", "0e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if exp + 1 >= n {
            format!("{digits}{}.0", "0".repeat((exp + 1 - n) as usize))
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            format!("{int}.{frac}")
        };
        return format!("{sign}{body}");
    }
    let mut m = digits[..1].to_string();
    if digits.len() > 1 {
        m.push('.');
        m.push_str(&digits[1..]);
    }
    let exp_sign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{m}e{exp_sign}{:02}", exp.abs())
}

/// Python's `repr(str)`: single quotes unless the text holds a `'` and no `"`.
fn str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr` of a template value (`None`, `True`, `['a', 1]`, `{'k': 'v'}`).
pub(crate) fn repr(v: &Value, out: &mut String, depth: usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "value nested too deep",
        ));
    }
    match v.kind() {
        ValueKind::String => str_repr(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&item, out, depth + 1)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, k) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&k, out, depth + 1)?;
                out.push_str(": ");
                repr(&v.get_item(&k)?, out, depth + 1)?;
            }
            out.push('}');
        }
        _ => out.push_str(&str_of(v)),
    }
    Ok(())
}

/// Python's `str` of a scalar (`None`, `True`, `1.0`); other values print as minijinja does.
pub(crate) fn str_of(v: &Value) -> String {
    match v.kind() {
        ValueKind::None => "None".into(),
        ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number => number(v, false),
        ValueKind::Undefined => String::new(),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234.5, "1234.5"),
            (-2.25e-7, "-2.25e-07"),
            (123456789012345.0, "123456789012345.0"),
            (0.0, "0.0"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f, true), want, "{f}");
        }
    }

    #[test]
    fn dumps_matches_python() {
        // Parsed straight into a template value, so key order is the text's.
        let v: Value =
            serde_json::from_str(r#"{"b": [1, 2.5, null, true], "a": "é\"\n"}"#).unwrap();
        assert_eq!(
            dumps(&v, &JsonStyle::new(None)).unwrap(),
            r#"{"b": [1, 2.5, null, true], "a": "é\"\n"}"#
        );
        let indented = dumps(&v, &JsonStyle::new(Some("  ".into()))).unwrap();
        assert_eq!(
            indented,
            "{\n  \"b\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"a\": \"é\\\"\\n\"\n}"
        );
        let mut r = String::new();
        repr(&v, &mut r, 0).unwrap();
        assert_eq!(r, r#"{'b': [1, 2.5, None, True], 'a': 'é"\n'}"#);
    }
}
