//! `tool_choice: "required"`: the output is constrained to a JSON array of
//! `{"name": ..., "parameters": {...}}` objects (`"arguments"` is accepted too).

use super::call::CallArray;
use super::json::{is_json_ws, Step};
use super::out::Out;
use super::{Extracted, ToolCall, ToolDelta};

#[derive(Debug)]
enum St {
    Lead,
    Array(CallArray),
    Tail,
    Dead,
}

impl St {
    fn feed(&mut self, c: char, out: &mut Out) {
        let ws = is_json_ws(c);
        let ok = match self {
            St::Lead | St::Tail if ws => true,
            St::Lead if c == '[' => {
                *self = St::Array(CallArray::new(&["parameters", "arguments"]));
                true
            }
            St::Array(array) => match array.feed(c, out) {
                Ok(Step::Done) => {
                    *self = St::Tail;
                    true
                }
                Ok(_) => true,
                Err(_) => false,
            },
            St::Dead => true,
            _ => false,
        };
        if !ok {
            out.failed = true;
            *self = St::Dead;
        }
    }
}

/// Incremental parser for `tool_choice: "required"` output: the same `push`/`finish` API as
/// [`ToolStreamParser`](super::ToolStreamParser), never emitting [`ToolDelta::Content`].
///
/// The output must be whitespace, one non-empty JSON array of call objects, and whitespace.
/// On anything else the parser stops emitting and [`malformed`](Self::malformed) turns true;
/// calls already sent stay sent.
#[derive(Debug)]
pub struct RequiredStreamParser {
    st: St,
    out: Out,
}

impl Default for RequiredStreamParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RequiredStreamParser {
    /// A parser at the start of output.
    pub fn new() -> Self {
        Self {
            st: St::Lead,
            out: Out::default(),
        }
    }

    /// Takes the next piece of output. After [`finish`](Self::finish) it does nothing.
    pub fn push(&mut self, delta: &str) -> Vec<ToolDelta> {
        self.out
            .push_with(|out| delta.chars().for_each(|c| self.st.feed(c, out)))
    }

    /// End of output. Output ending before the array closed is malformed.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        self.out.finish_with(|out| {
            if !matches!(self.st, St::Tail | St::Dead) {
                out.failed = true;
                self.st = St::Dead;
            }
        })
    }

    /// At least one call has started.
    pub fn called(&self) -> bool {
        self.out.called()
    }

    /// The output is not (or, after [`finish`](Self::finish), was not) a valid call array.
    pub fn malformed(&self) -> bool {
        self.out.failed
    }
}

/// Parses a finished `tool_choice: "required"` output; `None` unless it is exactly a
/// non-empty JSON array of valid calls (whitespace around it allowed).
pub fn extract_required(text: &str) -> Option<Vec<ToolCall>> {
    let mut parser = RequiredStreamParser::new();
    let mut deltas = parser.push(text);
    deltas.extend(parser.finish());
    if parser.malformed() {
        return None;
    }
    Some(Extracted::from_deltas(&deltas).calls)
}
