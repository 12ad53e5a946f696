//! `llama3_json`: `{"name": "f", "parameters": {...}}` objects separated by `;`, optionally
//! after `<|python_tag|>` (Llama 3.1–3.3 JSON tool calling).

use super::call::CallObj;
use super::out::Out;
use super::{fail, feed_chars, lead, Fed, Lead, Mode, Raw};

const TAG: &str = "<|python_tag|>";
const ARGS_KEYS: &[&str] = &["parameters", "arguments"];

#[derive(Debug)]
enum St {
    /// Start of output: whitespace and the optional tag, until the first other character.
    Lead,
    /// Inside a call object.
    Call(CallObj),
    /// After a call: whitespace, then `{` (another call) or `;` (`semi`: read) and `{`;
    /// anything else ends the calls.
    Sep { semi: bool },
    /// After the calls: the rest is content.
    Text,
    /// After malformed markup.
    Over(Mode),
}

/// The `llama3_json` machine.
///
/// Beyond vLLM: calls may also be separated by whitespace alone, a trailing `;` is allowed,
/// and text after the last call (with a dangling `;`) is kept as content instead of being
/// dropped.
#[derive(Debug)]
pub(crate) struct Llama {
    st: St,
    raw: Raw,
}

impl Llama {
    pub(crate) fn new() -> Self {
        Self {
            st: St::Lead,
            raw: Raw::default(),
        }
    }

    pub(crate) fn run(&mut self, input: &str, eof: bool, out: &mut Out) -> usize {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match &mut self.st {
                St::Lead => match lead(rest, TAG, '{') {
                    Lead::Calls(at) => {
                        self.raw.begin(out, &rest[..at]);
                        pos += at;
                        self.st = St::Call(CallObj::new(ARGS_KEYS));
                    }
                    Lead::Undecided if !eof => return pos,
                    Lead::Undecided | Lead::Text => {
                        out.content(rest);
                        self.st = St::Over(Mode::Pass);
                        return input.len();
                    }
                },
                St::Call(call) => match feed_chars(rest, &mut self.raw, |c| call.feed(c, out)) {
                    Fed::Exhausted => {
                        if eof {
                            self.st = St::Over(fail(out, &mut self.raw));
                        }
                        return input.len();
                    }
                    Fed::Done(n) => {
                        pos += n;
                        out.end_call();
                        self.raw.begin(out, "");
                        self.st = St::Sep { semi: false };
                    }
                    Fed::Failed(n) => {
                        pos += n;
                        self.st = St::Over(fail(out, &mut self.raw));
                    }
                },
                St::Sep { semi } => {
                    let t = rest.trim_start();
                    self.raw.text.push_str(&rest[..rest.len() - t.len()]);
                    pos += rest.len() - t.len();
                    match t.chars().next() {
                        None => return input.len(),
                        Some(';') if !*semi => {
                            self.raw.text.push(';');
                            pos += 1;
                            *semi = true;
                        }
                        Some('{') => self.st = St::Call(CallObj::new(ARGS_KEYS)),
                        Some(_) => {
                            // Not another call: the separator and the rest are content.
                            out.content(&self.raw.text);
                            self.raw.text.clear();
                            self.st = St::Text;
                        }
                    }
                }
                St::Text => {
                    out.content(rest);
                    return input.len();
                }
                St::Over(mode) => {
                    if *mode == Mode::Pass {
                        out.content(rest);
                    }
                    return input.len();
                }
            }
        }
    }
}
