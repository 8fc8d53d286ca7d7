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
    env.add_template_owned(TEMPLATE_NAME, source)?;
    Ok(env)
}
