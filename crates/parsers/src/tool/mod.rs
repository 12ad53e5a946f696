//! Tool-call parsing: model output → OpenAI tool calls, for vLLM's `--tool-call-parser`
//! names `hermes`, `llama3_json`, `mistral` and `pythonic`, plus the JSON-array form that
//! `tool_choice: "required"` constrains the output to.
//!
//! # Arguments
//!
//! A call's `arguments` is always the compact JSON text of an object, exactly as
//! `serde_json::to_string` writes the parsed arguments (key order kept). Streaming emits that
//! same text incrementally as the model writes it (re-serialized piece by piece, so the
//! concatenated pieces equal [`extract`]'s string byte for byte). Arguments must be a JSON
//! object without repeated keys at any depth (a repeated key makes the call malformed).
//!
//! # Content
//!
//! Text outside the calls is content. When at least one call is present, whitespace at the
//! end of the content is dropped, and so is whitespace before the first non-whitespace
//! content when a call comes first; all other text outside calls is kept as written. With no
//! call, the content is the output unchanged.
//!
//! # Malformed calls
//!
//! [`extract`] returns the whole output as content and no calls when any call markup is
//! malformed or incomplete (invalid JSON, missing name or arguments, output ending inside a
//! call). The streaming parser cannot take back what it has sent: if the malformed call had
//! not yet been announced with [`ToolDelta::Start`], the text held back since its opening
//! markup is sent as content and all later text passes through as content (so, when no call
//! had started at all, the streamed content equals [`extract`]'s); if it had been announced,
//! the rest of the output is dropped. Earlier complete calls stay sent. [`ToolStreamParser::malformed`] reports either case.

mod call;
mod hermes;
mod json;
mod llama;
mod mistral;
mod out;
mod pythonic;
mod required;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use required::{extract_required, RequiredStreamParser};

use json::{Invalid, Step};
use out::Out;

/// A `--tool-call-parser` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolParserKind {
    /// `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks after
    /// optional text (Hermes 2 Pro, Qwen2.5, Qwen3). A final block left unclosed at the end of
    /// output counts if its JSON is complete.
    Hermes,
    /// `llama3_json`: the output is `{"name": ..., "parameters": {...}}` (or `"arguments"`),
    /// optionally after `<|python_tag|>`, several separated by `;` (Llama 3.1–3.3). Output that
    /// does not start with `{` (after the tag and whitespace) is content.
    Llama3Json,
    /// `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (v0.3 tokenizer) or
    /// `[TOOL_CALLS]name[ARGS]{...}` (newer tokenizers; also `name{...}`), after optional text.
    Mistral,
    /// `pythonic`: the output is a Python list of calls with keyword arguments,
    /// `[f(a='x', b=[1, 2]), g()]`, optionally wrapped in `<|python_start|>`/`<|python_end|>`
    /// (Llama 3.2, Llama 4). Output that does not start with `[` is content.
    Pythonic,
}

impl ToolParserKind {
    /// Every kind, in the order of their names.
    pub const ALL: [ToolParserKind; 4] = [
        ToolParserKind::Hermes,
        ToolParserKind::Llama3Json,
        ToolParserKind::Mistral,
        ToolParserKind::Pythonic,
    ];

    /// The vLLM `--tool-call-parser` name.
    pub fn name(&self) -> &'static str {
        match self {
            ToolParserKind::Hermes => "hermes",
            ToolParserKind::Llama3Json => "llama3_json",
            ToolParserKind::Mistral => "mistral",
            ToolParserKind::Pythonic => "pythonic",
        }
    }
}

impl fmt::Display for ToolParserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ToolParserKind {
    type Err = crate::UnknownParser;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| crate::UnknownParser {
                what: "tool call",
                name: s.to_owned(),
                valid: Self::ALL.iter().map(|k| k.name()).collect(),
            })
    }
}

/// One parsed tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    /// The function name.
    pub name: String,
    /// The arguments: compact JSON text of an object (see the [module docs](self)).
    pub arguments: String,
}

/// Result of [`extract`]: content and calls of a finished output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Extracted {
    /// Text outside the calls (see the [module docs](self) for the whitespace rules).
    pub content: String,
    /// The calls, in output order.
    pub calls: Vec<ToolCall>,
}

impl Extracted {
    /// Assembles streamed deltas: content concatenated, each call's argument pieces joined.
    pub fn from_deltas<'a>(deltas: impl IntoIterator<Item = &'a ToolDelta>) -> Self {
        let mut result = Extracted::default();
        for delta in deltas {
            match delta {
                ToolDelta::Content(text) => result.content.push_str(text),
                ToolDelta::Start { name, .. } => result.calls.push(ToolCall {
                    name: name.clone(),
                    arguments: String::new(),
                }),
                ToolDelta::Arguments { index, text } => {
                    if let Some(call) = result.calls.get_mut(*index) {
                        call.arguments.push_str(text);
                    }
                }
            }
        }
        result
    }
}

/// One streaming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDelta {
    /// Plain text outside calls.
    Content(String),
    /// A new call, numbered from 0 in output order; sent once, before any of its arguments.
    Start {
        /// The call's index.
        index: usize,
        /// The function name.
        name: String,
    },
    /// A piece of call `index`'s arguments JSON text.
    Arguments {
        /// The call's index.
        index: usize,
        /// The piece.
        text: String,
    },
}

/// Parses a finished output. Malformed call markup leaves the whole text as content, with no
/// calls (see the [module docs](self)).
pub fn extract(kind: ToolParserKind, text: &str) -> Extracted {
    let mut parser = ToolStreamParser::new(kind);
    let mut deltas = parser.push(text);
    deltas.extend(parser.finish());
    if parser.malformed() {
        return Extracted {
            content: text.to_owned(),
            calls: Vec::new(),
        };
    }
    Extracted::from_deltas(&deltas)
}

#[derive(Debug)]
enum Machine {
    Hermes(hermes::Hermes),
    Llama(llama::Llama),
    Mistral(mistral::Mistral),
    Pythonic(pythonic::Pythonic),
}

/// Incremental tool-call parser over text as it is generated.
///
/// Call markup never reaches [`ToolDelta::Content`]: text that may be the start of a marker
/// is held back until it is decided, and [`finish`](Self::finish) releases what is left.
/// For any split of an output into pieces, the deltas give the same content and calls as
/// [`extract`] on the whole output (malformed markup aside, see the [module docs](self)).
#[derive(Debug)]
pub struct ToolStreamParser {
    machine: Machine,
    buf: String,
    out: Out,
    finished: bool,
}

impl ToolStreamParser {
    /// A parser for `kind`.
    pub fn new(kind: ToolParserKind) -> Self {
        let machine = match kind {
            ToolParserKind::Hermes => Machine::Hermes(hermes::Hermes::new()),
            ToolParserKind::Llama3Json => Machine::Llama(llama::Llama::new()),
            ToolParserKind::Mistral => Machine::Mistral(mistral::Mistral::new()),
            ToolParserKind::Pythonic => Machine::Pythonic(pythonic::Pythonic::new()),
        };
        Self {
            machine,
            buf: String::new(),
            out: Out::default(),
            finished: false,
        }
    }

    fn run(&mut self, eof: bool) {
        let used = match &mut self.machine {
            Machine::Hermes(m) => m.run(&self.buf, eof, &mut self.out),
            Machine::Llama(m) => m.run(&self.buf, eof, &mut self.out),
            Machine::Mistral(m) => m.run(&self.buf, eof, &mut self.out),
            Machine::Pythonic(m) => m.run(&self.buf, eof, &mut self.out),
        };
        self.buf.drain(..used.min(self.buf.len()));
    }

    /// Takes the next piece of output. After [`finish`](Self::finish) it does nothing.
    pub fn push(&mut self, delta: &str) -> Vec<ToolDelta> {
        if self.finished {
            return Vec::new();
        }
        self.buf.push_str(delta);
        self.run(false);
        std::mem::take(&mut self.out.deltas)
    }

    /// End of output: releases held-back text and completes (or fails) an open call. Calling
    /// it again returns nothing.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        self.run(true);
        self.buf.clear();
        self.out.finish();
        std::mem::take(&mut self.out.deltas)
    }

    /// At least one call has started.
    pub fn called(&self) -> bool {
        self.out.called()
    }

    /// Some call markup was malformed (so [`extract`] would report no calls).
    pub fn malformed(&self) -> bool {
        self.out.failed
    }
}

/// What happens to the output after malformed markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything is content.
    Pass,
    /// Everything is dropped (the malformed call had started).
    Dead,
}

/// The raw text of the markup being read, kept so that it can become content if the markup
/// turns out malformed before any call in it started.
#[derive(Debug, Default)]
struct Raw {
    text: String,
    /// Calls started before this markup began.
    base: usize,
}

impl Raw {
    /// Starts a new stretch of markup with `text`.
    fn begin(&mut self, out: &Out, text: &str) {
        self.text.clear();
        self.text.push_str(text);
        self.base = out.call_count();
    }
}

/// Records malformed markup: its raw text becomes content unless a call in it had started.
fn fail(out: &mut Out, raw: &mut Raw) -> Mode {
    out.failed = true;
    let mode = if out.call_count() > raw.base {
        Mode::Dead
    } else {
        out.content(&raw.text);
        Mode::Pass
    };
    raw.text.clear();
    mode
}

/// Outcome of [`feed_chars`].
enum Fed {
    /// Every character was read; the reader wants more.
    Exhausted,
    /// The reader finished after this many bytes.
    Done(usize),
    /// The reader failed on the character ending at this many bytes.
    Failed(usize),
}

/// Feeds `rest` a character at a time to `reader`, appending consumed characters to `raw`.
fn feed_chars(
    rest: &str,
    raw: &mut Raw,
    mut reader: impl FnMut(char) -> Result<Step, Invalid>,
) -> Fed {
    for (i, c) in rest.char_indices() {
        match reader(c) {
            Ok(Step::More) => raw.text.push(c),
            Ok(Step::Done) => {
                raw.text.push(c);
                return Fed::Done(i + c.len_utf8());
            }
            Ok(Step::DoneBefore) => return Fed::Done(i),
            Err(Invalid) => {
                raw.text.push(c);
                return Fed::Failed(i + c.len_utf8());
            }
        }
    }
    Fed::Exhausted
}

/// How an output that may start with calls begins.
enum Lead {
    /// Only whitespace and part of the optional tag so far.
    Undecided,
    /// Calls: the opening character is at this byte offset.
    Calls(usize),
    /// Ordinary text.
    Text,
}

/// Decides whether `text` starts with whitespace, optionally `tag` and whitespace, and then
/// `open`.
fn lead(text: &str, tag: &str, open: char) -> Lead {
    let t = text.trim_start();
    if t.is_empty() {
        return Lead::Undecided;
    }
    let t = match t.strip_prefix(tag) {
        Some(after) => after.trim_start(),
        None if tag.starts_with(t) => return Lead::Undecided,
        None => t,
    };
    if t.is_empty() {
        Lead::Undecided
    } else if t.starts_with(open) {
        Lead::Calls(text.len() - t.len())
    } else {
        Lead::Text
    }
}
