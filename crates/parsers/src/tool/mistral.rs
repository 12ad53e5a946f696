//! `mistral`: `[TOOL_CALLS]` followed by a JSON array of calls (v0.3 tokenizer) or by
//! `name[ARGS]{...}` (v11+ tokenizers; `name{...}` when `[ARGS]` was stripped), after optional
//! text. Several `[TOOL_CALLS]` blocks may follow each other.

use super::call::CallArray;
use super::json::{is_json_ws, Invalid, JsonValue, Step};
use super::out::Out;
use super::{Core, Format, Go};

const MARKER: &str = "[TOOL_CALLS]";
const ARGS_TAG: &str = "[ARGS]";
const ARGS_KEYS: &[&str] = &["arguments"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

#[derive(Debug)]
pub(crate) enum Block {
    /// Right after `[TOOL_CALLS]`.
    Begin,
    /// `[` read: a JSON array of call objects.
    Array(CallArray),
    /// Reading a function name.
    Name(String),
    /// Reading `[ARGS]`: this many bytes of it matched.
    Tag(String, usize),
    /// `[ARGS]` read; the arguments object follows.
    ArgsOpen,
    /// Inside the arguments object.
    Args(Box<JsonValue>),
}

impl Block {
    /// Reads one character of a call block; `Step::Done` at its end.
    fn feed(&mut self, c: char, out: &mut Out) -> Result<Step, Invalid> {
        match self {
            Block::Begin if is_json_ws(c) => {}
            Block::Begin if c == '[' => *self = Block::Array(CallArray::new(ARGS_KEYS)),
            Block::Begin if is_name_char(c) => *self = Block::Name(c.to_string()),
            Block::Array(array) => return array.feed(c, out),
            Block::Name(name) if is_name_char(c) => name.push(c),
            Block::Name(name) if c == '[' => *self = Block::Tag(std::mem::take(name), 1),
            Block::Name(name) if c == '{' => {
                out.start(std::mem::take(name));
                return self.open_args(c, out);
            }
            Block::Tag(name, matched)
                if ARGS_TAG.get(*matched..).is_some_and(|r| r.starts_with(c)) =>
            {
                *matched += 1;
                if *matched == ARGS_TAG.len() {
                    out.start(std::mem::take(name));
                    *self = Block::ArgsOpen;
                }
            }
            Block::ArgsOpen if is_json_ws(c) => {}
            Block::ArgsOpen if c == '{' => return self.open_args(c, out),
            Block::Args(value) => {
                let step = value.feed(c)?;
                out.args(&value.canon.take());
                if step != Step::More {
                    out.end_call();
                    return Ok(Step::Done);
                }
            }
            _ => return Err(Invalid),
        }
        Ok(Step::More)
    }

    fn open_args(&mut self, c: char, out: &mut Out) -> Result<Step, Invalid> {
        let mut value = Box::new(JsonValue::new(true));
        value.feed(c)?;
        out.args(&value.canon.take());
        *self = Block::Args(value);
        Ok(Step::More)
    }
}

/// The `mistral` machine.
///
/// Beyond vLLM: text after the calls is kept as content (vLLM keeps only the text before
/// `[TOOL_CALLS]`), and the text before `[TOOL_CALLS]` loses its trailing whitespace.
#[derive(Debug)]
pub(crate) enum Mistral {
    /// Ordinary text, looking for `[TOOL_CALLS]`.
    Text,
    /// Inside a call block.
    Block(Block),
}

impl Format for Mistral {
    fn step(&mut self, core: &mut Core, rest: &str, eof: bool, out: &mut Out) -> Go {
        match self {
            Mistral::Text => core
                .until(rest, MARKER, eof, out)
                .moving(self, Mistral::Block(Block::Begin)),
            Mistral::Block(block) => core
                .read(rest, eof, out, |c, out| block.feed(c, out))
                .moving(self, Mistral::Text),
        }
    }
}
