//! Hugging Face-compatible chat templates.
//!
//! A model's `tokenizer_config.json` carries a Jinja2 `chat_template` that turns a list of chat
//! messages into the prompt text the model was trained on. [`ChatTemplate`] compiles such a
//! template once (with [minijinja]) and renders it for every request, matching what
//! `transformers`' `apply_chat_template(..., tokenize=False)` produces:
//!
//! * the Jinja environment is set up like `transformers`' `_compile_jinja_template`:
//!   `trim_blocks` and `lstrip_blocks` on, a single trailing newline of the template dropped
//!   (Jinja2's default `keep_trailing_newline=False`), no HTML auto-escaping, loop controls
//!   (`{% break %}`, `{% continue %}`) enabled;
//! * the globals HF adds: `raise_exception(msg)`, `strftime_now(fmt)` (local time),
//!   `namespace(...)`, `dict(...)`, and its `tojson` filter, which writes JSON like Python's
//!   `json.dumps(x, ensure_ascii=False)` (`", "`/`": "` separators, key order kept, no HTML
//!   escaping; `indent`, `ensure_ascii`, `sort_keys` and `separators` keyword arguments);
//! * Python string/dict methods (`.strip()`, `.split()`, `.startswith()`, `.items()`,
//!   `.get()`, ...) through `minijinja_contrib::pycompat`;
//! * values print like Python prints them: `None`, `True`, `False`, `1.0`, `['a', 1]`;
//! * HF's `{% generation %}` blocks (assistant masks) render their body;
//! * the variables HF passes: `messages`, `tools` (`none` when the request has none, like HF's
//!   `tools=None`), `documents` (`none` unless given in `extra`), `add_generation_prompt`,
//!   `bos_token` / `eos_token` (only when the tokenizer has them), and every `extra` entry
//!   (`chat_template_kwargs`, e.g. `enable_thinking`) as a top-level variable.
//!
//! Messages arrive in OpenAI shape and are brought into the shape HF templates expect
//! (see [`ChatTemplate::render`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, Value};

/// The name the template is registered under; it shows up in error locations.
const TEMPLATE_NAME: &str = "chat_template";

/// Variables `render` sets itself; `extra` may not replace them.
const RESERVED_VARIABLES: [&str; 3] = ["messages", "tools", "add_generation_prompt"];

/// Fields a message's reasoning may come under; HF copies the first one found to
/// `reasoning_content` (what most templates read) and `thinking` (what gpt-oss reads).
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// What went wrong with a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template does not compile. Raised at load time; fix the template source
    /// (`chat_template` in `tokenizer_config.json`, or the template file given to the server).
    #[error("the chat template does not compile: {0}; fix the template source (`chat_template` in tokenizer_config.json or the template file)")]
    Syntax(String),
    /// Rendering failed for this request: the template called `raise_exception(..)` (for
    /// example "Conversation roles must alternate user/assistant/user/assistant/..."), or the
    /// messages do not have the shape the template needs. A client error.
    #[error("{0}")]
    Render(String),
}

/// A compiled chat template, built once per model and shared by all requests.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// Compiles `source` (Jinja2, as found in `tokenizer_config.json`'s `chat_template`).
    /// `bos_token`/`eos_token` are exposed to the template as variables when present.
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        // transformers: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
        // extensions=[AssistantTracker, jinja2.ext.loopcontrols]); Jinja2 defaults otherwise.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Debug mode clones the template source into every error; messages stay clear without it.
        env.set_debug(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter("string", python_str_filter);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source))
            .map_err(|err| ChatTemplateError::Syntax(describe(&err)))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders the prompt for one request.
    ///
    /// `messages` and `tools` are OpenAI-shaped JSON. Before rendering, each message is brought
    /// into the shape HF templates expect (the same steps vLLM and transformers take):
    /// * `content` given as an array of `{"type": "text", "text": ..}` parts becomes one string,
    ///   the texts joined with `"\n"`; `"content": null` becomes `""`;
    /// * other keys whose value is `null` are dropped (`"tool_calls": null` must not look
    ///   like a defined value to the template);
    /// * `tool_calls[].function.arguments` given as a JSON string holding an object is parsed
    ///   into that object (templates print it with `tojson`);
    /// * reasoning given as `reasoning_content`, `thinking` or `reasoning` is made available
    ///   under both `reasoning_content` and `thinking`.
    ///
    /// `extra` (the request's `chat_template_kwargs`) becomes top-level template variables; it
    /// may override `bos_token`/`eos_token` and set `documents`, but not `messages`, `tools`
    /// or `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, ChatTemplateError> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(bos) = &self.bos_token {
            ctx.insert("bos_token".to_owned(), Value::from(bos.as_str()));
        }
        if let Some(eos) = &self.eos_token {
            ctx.insert("eos_token".to_owned(), Value::from(eos.as_str()));
        }
        ctx.insert("documents".to_owned(), Value::from(()));
        for (key, value) in extra {
            if RESERVED_VARIABLES.contains(&key.as_str()) {
                return Err(ChatTemplateError::Render(format!(
                    "`chat_template_kwargs` may not set `{key}`: it is filled from the request itself; remove it"
                )));
            }
            ctx.insert(key.clone(), Value::from_serialize(value));
        }
        let messages = messages
            .iter()
            .enumerate()
            .map(|(index, message)| normalize_message(index, message))
            .collect::<Result<Vec<_>, _>>()?;
        ctx.insert("messages".to_owned(), Value::from_serialize(&messages));
        ctx.insert(
            "tools".to_owned(),
            match tools {
                Some(tools) => Value::from_serialize(tools),
                None => Value::from(()),
            },
        );
        ctx.insert(
            "add_generation_prompt".to_owned(),
            Value::from(add_generation_prompt),
        );

        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|err| ChatTemplateError::Render(describe(&err)))?;
        template
            .render(Value::from_iter(ctx))
            .map_err(|err| match raised_message(&err) {
                Some(message) => ChatTemplateError::Render(message.to_owned()),
                None => ChatTemplateError::Render(format!(
                    "the chat template failed on these messages: {}",
                    describe(&err)
                )),
            })
    }
}

/// HF's `{% generation %}...{% endgeneration %}` marks assistant text for training masks and
/// renders its body unchanged. minijinja has no such tag, so it becomes `{% if true %}` /
/// `{% endif %}`, keeping the whitespace-control markers (and so the output) as they were.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            break;
        };
        let inner = &tag[2..end];
        let body = inner.strip_prefix(['-', '+']).unwrap_or(inner);
        let body = body.strip_suffix(['-', '+']).unwrap_or(body).trim();
        let replacement = match body {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(replacement) => {
                out.push_str("{%");
                out.push_str(&inner.replacen(body, replacement, 1));
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// One message brought into the shape HF chat templates expect; see [`ChatTemplate::render`].
fn normalize_message(
    index: usize,
    message: &serde_json::Value,
) -> Result<serde_json::Value, ChatTemplateError> {
    let Some(fields) = message.as_object() else {
        return Err(ChatTemplateError::Render(format!(
            "messages[{index}] must be a JSON object with `role` and `content`"
        )));
    };
    let mut out = serde_json::Map::with_capacity(fields.len() + 2);
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("content", serde_json::Value::Null) => {
                out.insert(key.clone(), serde_json::Value::String(String::new()));
            }
            ("content", serde_json::Value::Array(parts)) => {
                out.insert(
                    key.clone(),
                    serde_json::Value::String(join_text_parts(index, parts)?),
                );
            }
            ("tool_calls", serde_json::Value::Array(calls)) => {
                out.insert(
                    key.clone(),
                    serde_json::Value::Array(calls.iter().map(parse_tool_call_arguments).collect()),
                );
            }
            (_, serde_json::Value::Null) => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let reasoning = REASONING_FIELDS
        .iter()
        .find_map(|field| out.get(*field).filter(|value| !value.is_null()))
        .cloned();
    if let Some(reasoning) = reasoning {
        // transformers: {"thinking": reasoning, **message, "reasoning_content": reasoning}
        let mut aliased = serde_json::Map::with_capacity(out.len() + 2);
        aliased.insert("thinking".to_owned(), reasoning.clone());
        aliased.extend(out);
        aliased.insert("reasoning_content".to_owned(), reasoning);
        out = aliased;
    }
    Ok(serde_json::Value::Object(out))
}

/// The texts of an OpenAI content-part array, joined with newlines (as vLLM does).
fn join_text_parts(index: usize, parts: &[serde_json::Value]) -> Result<String, ChatTemplateError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (part_index, part) in parts.iter().enumerate() {
        let kind = part.get("type").and_then(serde_json::Value::as_str);
        match (kind, part.get("text").and_then(serde_json::Value::as_str)) {
            (Some("text") | None, Some(text)) => texts.push(text),
            _ => {
                return Err(ChatTemplateError::Render(format!(
                    "messages[{index}].content[{part_index}] must be a text part \
                     ({{\"type\": \"text\", \"text\": \"...\"}}); got type {}",
                    kind.unwrap_or("(missing)")
                )))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// OpenAI sends `function.arguments` as a JSON string; templates expect the object
/// (vLLM parses it the same way). Anything that is not a JSON object is left as it is.
fn parse_tool_call_arguments(call: &serde_json::Value) -> serde_json::Value {
    let mut call = call.clone();
    if let Some(arguments) = call
        .get_mut("function")
        .and_then(|function| function.get_mut("arguments"))
    {
        if let Some(text) = arguments.as_str() {
            if let Ok(parsed @ serde_json::Value::Object(_)) =
                serde_json::from_str::<serde_json::Value>(text)
            {
                *arguments = parsed;
            }
        }
    }
    call
}

/// A minijinja error in one line: what went wrong and where in the template.
fn describe(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The message of a `raise_exception(..)` call somewhere in the error's chain, if any.
fn raised_message(err: &Error) -> Option<&str> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(raised) = cause.downcast_ref::<RaisedException>() {
            return Some(&raised.0);
        }
        source = cause.source();
    }
    None
}

/// The error `raise_exception(msg)` raises: the template refused the conversation.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RaisedException(String);

/// `raise_exception(msg)`: aborts rendering with `msg` (HF raises `jinja2.TemplateError`).
fn raise_exception(message: Value) -> Result<Value, Error> {
    let message = match message.as_str() {
        Some(text) => text.to_owned(),
        None => python_str(&message),
    };
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("the chat template raised an exception: {message}"),
    )
    .with_source(RaisedException(message)))
}

/// `strftime_now(fmt)`: the local time formatted like Python's `datetime.now().strftime(fmt)`.
fn strftime_now(format: &str) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: unsupported format string {format:?}"),
        ));
    }
    let mut out = String::new();
    write!(
        out,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format the current time with {format:?}"),
        )
    })?;
    Ok(out)
}

/// How `tojson` lays its output out, following Python's `json.dumps` arguments.
struct JsonStyle {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

/// HF's `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`. No HTML escaping, keys in their original order.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(indent) if indent.is_none() || indent.is_undefined() => None,
        Some(indent) => match (indent.as_i64(), indent.as_str()) {
            (Some(width), _) => Some(" ".repeat(usize::try_from(width).unwrap_or(0))),
            (None, Some(text)) => Some(text.to_owned()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: `indent` must be an integer or a string",
                ))
            }
        },
    };
    let (item_separator, key_separator) = match separators {
        Some(separators) if !separators.is_none() && !separators.is_undefined() => {
            let parts: Vec<String> = separators
                .try_iter()?
                .map(|part| part.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .unwrap_or_default();
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: `separators` must be a pair of strings (item_separator, key_separator)",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let style = JsonStyle {
        indent,
        item_separator,
        key_separator,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from(out))
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(value, true)),
        ValueKind::String => {
            write_json_string(out, value.as_str().unwrap_or_default(), style.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_json_container(out, style, depth, ('[', ']'), &items, |out, item, depth| {
                write_json(out, item, style, depth)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_json_container(
                out,
                style,
                depth,
                ('{', '}'),
                &entries,
                |out, (key, item), depth| {
                    write_json_string(out, key, style.ensure_ascii);
                    out.push_str(&style.key_separator);
                    write_json(out, item, style, depth)
                },
            )?;
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {kind} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// Writes `[a, b]` / `{..}` with Python's layout: one line without `indent`, one item per
/// line with it, and `[]`/`{}` for empty containers either way.
fn write_json_container<T>(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_separator);
        }
        if let Some(indent) = &style.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        write_item(out, item, depth + 1)?;
    }
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// A map key as `json.dumps` writes it: strings as they are, numbers/bools/None converted.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
        ValueKind::Number => python_number(key, true),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).to_owned(),
        ValueKind::None => "null".to_owned(),
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
            ))
        }
    })
}

/// A JSON string literal with Python's escapes (`ensure_ascii` escapes non-ASCII as `\uXXXX`).
fn write_json_string(out: &mut String, text: &str, ensure_ascii: bool) {
    out.push('"');
    for c in text.chars() {
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
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python writes it: integers plainly, floats like `repr(float)`
/// (`1.0`, `0.0001`, `1e-05`, `1e+16`). `json` picks `NaN`/`Infinity` over `nan`/`inf`.
fn python_number(value: &Value, json: bool) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(number) => python_float(number, json),
        Err(_) => value.to_string(),
    }
}

fn python_float(number: f64, json: bool) -> String {
    if number.is_nan() {
        return (if json { "NaN" } else { "nan" }).to_owned();
    }
    if number.is_infinite() {
        let text = if json { "Infinity" } else { "inf" };
        return if number < 0.0 {
            format!("-{text}")
        } else {
            text.to_owned()
        };
    }
    // `{:e}` gives the shortest digits that round-trip, like Python's repr.
    let scientific = format!("{number:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = sign.to_owned();
    if (-4..16).contains(&exponent) {
        if exponent >= 0 {
            let int_len = usize::try_from(exponent).unwrap_or(0) + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat(usize::try_from(-exponent - 1).unwrap_or(0)));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        );
    }
    out
}

/// `str(value)` in Python: strings as they are, everything else like [`python_repr`].
fn python_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        _ => python_repr(value),
    }
}

/// `repr(value)` in Python for the JSON-like values templates see.
fn python_repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".to_owned(),
        ValueKind::Bool => (if value.is_true() { "True" } else { "False" }).to_owned(),
        ValueKind::Number => python_number(value, false),
        ValueKind::String => python_string_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => format!(
                "[{}]",
                items
                    .map(|item| python_repr(&item))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(_) => value.to_string(),
        },
        ValueKind::Map => match value.try_iter() {
            Ok(keys) => {
                let entries: Vec<String> = keys
                    .map(|key| {
                        let item = value.get_item(&key).unwrap_or_default();
                        format!("{}: {}", python_repr(&key), python_repr(&item))
                    })
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
            Err(_) => value.to_string(),
        },
        _ => value.to_string(),
    }
}

/// A Python string literal the way `repr(str)` writes it.
fn python_string_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Prints `{{ value }}` the way Jinja2 does: Python's `str()` of the value.
fn python_formatter(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    let text = python_str(value);
    out.write_str(&text).map_err(|_| {
        Error::new(
            ErrorKind::WriteFailure,
            "cannot write the rendered chat template",
        )
    })
}

/// The `string` filter, Python-style (`none|string` is `"None"`).
fn python_str_filter(value: &Value) -> String {
    python_str(value)
}
