//! The minijinja environment set up as transformers sets up Jinja2 for chat templates:
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with loop controls,
//! `raise_exception`, `strftime_now` and a `tojson` that is `json.dumps(ensure_ascii=False)`.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Output, State};

use super::python::{self, JsonStyle};
use super::Limits;

/// The name the template is stored under in its environment.
pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// Marks an error raised by the template's own `raise_exception(message)`.
#[derive(Debug)]
pub(crate) struct Raised(pub String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: Option<Value>) -> Result<Value, Error> {
    let text = message.map(|m| python::str_of(&m)).unwrap_or_default();
    Err(Error::new(ErrorKind::InvalidOperation, "raise_exception").with_source(Raised(text)))
}

/// `tojson(value, indent=None, ensure_ascii=False, separators=None, sort_keys=False)`.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(i) if i.is_none() => None,
        Some(i) if i.kind() == ValueKind::String => Some(i.as_str().unwrap_or_default().into()),
        Some(i) => {
            let n = i.as_i64().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int or str",
                )
            })?;
            Some(" ".repeat(n.clamp(0, 64) as usize))
        }
    };
    let mut style = JsonStyle::new(indent);
    if let Some(ascii) = kwargs.get::<Option<bool>>("ensure_ascii")? {
        style.ensure_ascii = ascii;
    }
    if let Some(sort) = kwargs.get::<Option<bool>>("sort_keys")? {
        style.sort_keys = sort;
    }
    if let Some(seps) = kwargs.get::<Option<Value>>("separators")? {
        if !seps.is_none() {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] => {
                    style.item_separator = item.as_str().unwrap_or_default().into();
                    style.key_separator = key.as_str().unwrap_or_default().into();
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
    }
    kwargs.assert_all_used()?;
    Ok(Value::from(python::dumps(value, &style)?))
}

/// `strftime_now(format)`: the current UTC time formatted like Python's `strftime`.
fn strftime_now(format: &str) -> Result<Value, Error> {
    Ok(Value::from(super::time::strftime(
        format,
        super::time::now(),
    )))
}

/// Python's `str(value)`: strings unchanged, other values as `print` shows them.
fn python_str(value: &Value) -> Result<Value, Error> {
    Ok(match value.kind() {
        ValueKind::String => value.clone(),
        ValueKind::Seq | ValueKind::Map => {
            let mut s = String::new();
            python::repr(value, &mut s, 0)?;
            Value::from(s)
        }
        _ => Value::from(python::str_of(value)),
    })
}

/// Jinja2's `iterable` test: what Python can iterate (not None, numbers or booleans).
fn is_iterable(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String
            | ValueKind::Seq
            | ValueKind::Map
            | ValueKind::Iterable
            | ValueKind::Bytes
    )
}

/// Jinja2's `sequence` test: what has a length and items (strings, lists, dicts).
fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String | ValueKind::Seq | ValueKind::Map | ValueKind::Bytes
    )
}

/// Prints values as Jinja2 does under Python: `None`, `True`, `['a', 1]`, `{'k': 'v'}`.
fn formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let text = match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number => python::str_of(value),
        ValueKind::Seq | ValueKind::Map => {
            let mut s = String::new();
            python::repr(value, &mut s, 0)?;
            s
        }
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(&text)
        .map_err(|_| Error::new(ErrorKind::WriteFailure, "could not write output"))
}

/// transformers' `{% generation %}...{% endgeneration %}` (which marks assistant text and
/// prints its body unchanged) as an always-true `if`, with the same whitespace control.
pub(crate) fn rewrite_generation_tags(source: &str) -> std::borrow::Cow<'_, str> {
    if !source.contains("generation") {
        return source.into();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match generation_tag(tag) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// When `tag` starts with `{% generation %}` or `{% endgeneration %}` (with `-`/`+`
/// modifiers): its length and its replacement.
fn generation_tag(tag: &str) -> Option<(usize, String)> {
    let body = &tag[2..];
    let (open, body) = match body.chars().next() {
        Some(c @ ('-' | '+')) => (c.to_string(), &body[1..]),
        _ => (String::new(), body),
    };
    let trimmed = body.trim_start();
    let (word, replacement) = if let Some(r) = trimmed.strip_prefix("endgeneration") {
        (r, "endif")
    } else if let Some(r) = trimmed.strip_prefix("generation") {
        (r, "if true")
    } else {
        return None;
    };
    let after = word.trim_start();
    if after.len() == word.len()
        && !(after.starts_with('%') || after.starts_with('-') || after.starts_with('+'))
    {
        return None; // a longer word, e.g. `generation_prompt`
    }
    let (close, after) = match after.chars().next() {
        Some(c @ ('-' | '+')) => (c.to_string(), &after[1..]),
        _ => (String::new(), after),
    };
    let after = after.strip_prefix("%}")?;
    let len = tag.len() - after.len();
    Some((len, format!("{{%{open} {replacement} {close}%}}")))
}

/// An environment holding `source` as its one template.
pub(crate) fn build(source: String, limits: &Limits) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(formatter);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env.add_filter("string", python_str);
    env.add_test("iterable", is_iterable);
    env.add_test("sequence", is_sequence);
    let source = match rewrite_generation_tags(&source) {
        std::borrow::Cow::Borrowed(_) => source,
        std::borrow::Cow::Owned(rewritten) => rewritten,
    };
    env.add_template_owned(TEMPLATE_NAME, source)?;
    Ok(env)
}
