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

use crate::scan::cut;
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
        crate::kind_from_name("tool call", &Self::ALL, Self::name, s)
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

/// One format's state machine over the text of a stream.
trait Format: fmt::Debug + Send {
    /// Reads from the start of `rest` (the text not used yet) in the current state; `eof`: no
    /// more text will come. Shared work is done through `core`.
    fn step(&mut self, core: &mut Core, rest: &str, eof: bool, out: &mut Out) -> Go;
}

/// How far a [`Format::step`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Go {
    /// Used this many bytes; the machine goes on from there.
    On(usize),
    /// Used this many bytes; the machine waits for more text, or has stopped reading calls
    /// (see [`Core::rest`]).
    Stop(usize),
}

impl Go {
    /// Moves `st` to `next` if the step goes on.
    fn moving<S>(self, st: &mut S, next: S) -> Go {
        if let Go::On(_) = self {
            *st = next;
        }
        self
    }
}

/// Runs `format` over `input` until it stops; returns the bytes used.
fn drive(format: &mut dyn Format, core: &mut Core, input: &str, eof: bool, out: &mut Out) -> usize {
    let mut pos = 0;
    loop {
        match format.step(core, &input[pos..], eof, out) {
            Go::On(n) => pos += n,
            Go::Stop(n) => return pos + n,
        }
    }
}

/// Incremental tool-call parser over text as it is generated.
///
/// Call markup never reaches [`ToolDelta::Content`]: text that may be the start of a marker
/// is held back until it is decided, and [`finish`](Self::finish) releases what is left.
/// For any split of an output into pieces, the deltas give the same content and calls as
/// [`extract`] on the whole output (malformed markup aside, see the [module docs](self)).
#[derive(Debug)]
pub struct ToolStreamParser {
    format: Box<dyn Format>,
    core: Core,
    buf: String,
    out: Out,
}

impl ToolStreamParser {
    /// A parser for `kind`.
    pub fn new(kind: ToolParserKind) -> Self {
        let format: Box<dyn Format> = match kind {
            ToolParserKind::Hermes => Box::new(hermes::Hermes::Text),
            ToolParserKind::Llama3Json => Box::new(llama::Llama::Lead),
            ToolParserKind::Mistral => Box::new(mistral::Mistral::Text),
            ToolParserKind::Pythonic => Box::new(pythonic::Pythonic::Lead),
        };
        Self {
            format,
            core: Core::default(),
            buf: String::new(),
            out: Out::default(),
        }
    }

    /// Takes the next piece of output. After [`finish`](Self::finish) it does nothing.
    pub fn push(&mut self, delta: &str) -> Vec<ToolDelta> {
        self.out.push_with(|out| {
            self.buf.push_str(delta);
            self.core.run(&mut *self.format, &mut self.buf, false, out);
        })
    }

    /// End of output: releases held-back text and completes (or fails) an open call. Calling
    /// it again returns nothing.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        self.out.finish_with(|out| {
            self.core.run(&mut *self.format, &mut self.buf, true, out);
            self.buf.clear();
        })
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

/// What happens to the rest of the output once a machine stops reading calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything is content (after ordinary text, or malformed markup in no started call).
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

/// The state every format shares, and the steps they share.
#[derive(Debug, Default)]
struct Core {
    raw: Raw,
    /// Set once the machine has stopped reading calls: what becomes of all later text.
    rest: Option<Mode>,
}

impl Core {
    /// Runs `format` over `buf` (unless it has stopped), then applies [`rest`](Self::rest);
    /// drops the text used from `buf`.
    fn run(&mut self, format: &mut dyn Format, buf: &mut String, eof: bool, out: &mut Out) {
        let mut used = 0;
        if self.rest.is_none() {
            used = drive(format, self, buf, eof, out);
        }
        match self.rest {
            Some(Mode::Pass) => {
                out.content(&buf[used.min(buf.len())..]);
                used = buf.len();
            }
            Some(Mode::Dead) => used = buf.len(),
            None => {}
        }
        buf.drain(..used.min(buf.len()));
    }

    /// Ordinary text up to `marker`: emits it as content, holding back what may be the start
    /// of the marker (unless `eof`). Goes on past the marker, which begins the raw markup.
    fn until(&mut self, rest: &str, marker: &str, eof: bool, out: &mut Out) -> Go {
        let cut = cut(rest, &[marker], eof);
        out.content(cut.text);
        if cut.marker.is_none() {
            return Go::Stop(cut.used);
        }
        self.raw.begin(out, marker);
        Go::On(cut.used)
    }

    /// The start of an output that is either calls or content (see [`lead`]): goes on to the
    /// opening character `open` of the calls; stops while undecided, or for good (the output
    /// is content) when it is not calls.
    fn lead(&mut self, rest: &str, tag: &str, open: char, eof: bool, out: &mut Out) -> Go {
        match lead(rest, tag, open) {
            Lead::Calls(at) => {
                self.raw.begin(out, &rest[..at]);
                Go::On(at)
            }
            Lead::Undecided if !eof => Go::Stop(0),
            Lead::Undecided | Lead::Text => {
                self.rest = Some(Mode::Pass);
                Go::Stop(0)
            }
        }
    }

    /// Feeds `rest` a character at a time to `reader`, keeping the characters it takes in the
    /// raw markup. Goes on once the reader is done; stops when it wants more text, or (failed,
    /// or still wanting more at `eof`) after recording malformed markup.
    fn read(
        &mut self,
        rest: &str,
        eof: bool,
        out: &mut Out,
        mut reader: impl FnMut(char, &mut Out) -> Result<Step, Invalid>,
    ) -> Go {
        for (i, c) in rest.char_indices() {
            let step = reader(c, out);
            if step != Ok(Step::DoneBefore) {
                self.raw.text.push(c);
            }
            match step {
                Ok(Step::More) => {}
                Ok(Step::Done) => return Go::On(i + c.len_utf8()),
                Ok(Step::DoneBefore) => return Go::On(i),
                Err(Invalid) => {
                    self.fail(out);
                    return Go::Stop(i + c.len_utf8());
                }
            }
        }
        if eof {
            self.fail(out);
        }
        Go::Stop(rest.len())
    }

    /// Records malformed markup: its raw text becomes content, and so does the rest of the
    /// output, unless a call in it had started (then the rest is dropped).
    fn fail(&mut self, out: &mut Out) {
        out.failed = true;
        self.rest = Some(if out.call_count() > self.raw.base {
            Mode::Dead
        } else {
            out.content(&self.raw.text);
            Mode::Pass
        });
        self.raw.text.clear();
    }
}

/// Whitespace and then a closing marker, at the start of a text: see [`closing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Whitespace and the marker: this many bytes.
    Read(usize),
    /// This many bytes of whitespace, then (so far) at most the start of the marker.
    Partial(usize),
    /// This many bytes of whitespace, then something else.
    Absent(usize),
}

/// Decides whether `text` is whitespace followed by `marker`.
fn closing(text: &str, marker: &str) -> Closing {
    let t = text.trim_start();
    let skipped = text.len() - t.len();
    if t.starts_with(marker) {
        Closing::Read(skipped + marker.len())
    } else if marker.starts_with(t) {
        Closing::Partial(skipped)
    } else {
        Closing::Absent(skipped)
    }
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
