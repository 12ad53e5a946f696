//! `llama3_json`: `{"name": "f", "parameters": {...}}` objects separated by `;`, optionally
//! after `<|python_tag|>` (Llama 3.1–3.3 JSON tool calling).

use super::call::CallObj;
use super::out::Out;
use super::{Core, Format, Go, Mode};

const TAG: &str = "<|python_tag|>";
const ARGS_KEYS: &[&str] = &["parameters", "arguments"];

/// The `llama3_json` machine.
///
/// Beyond vLLM: calls may also be separated by whitespace alone, a trailing `;` is allowed,
/// and text after the last call (with a dangling `;`) is kept as content instead of being
/// dropped.
#[derive(Debug)]
pub(crate) enum Llama {
    /// Start of output: whitespace and the optional tag, until the first other character.
    Lead,
    /// Inside a call object.
    Call(CallObj),
    /// After a call: whitespace, then `{` (another call) or `;` (`semi`: read) and `{`;
    /// anything else ends the calls.
    Sep { semi: bool },
}

impl Format for Llama {
    fn step(&mut self, core: &mut Core, rest: &str, eof: bool, out: &mut Out) -> Go {
        match self {
            Llama::Lead => core
                .lead(rest, TAG, '{', eof, out)
                .moving(self, Llama::Call(CallObj::new(ARGS_KEYS))),
            Llama::Call(call) => match core.read(rest, eof, out, |c, out| call.feed(c, out)) {
                Go::On(n) => {
                    out.end_call();
                    core.raw.begin(out, "");
                    *self = Llama::Sep { semi: false };
                    Go::On(n)
                }
                stop => stop,
            },
            Llama::Sep { semi } => {
                let t = rest.trim_start();
                let ws = rest.len() - t.len();
                core.raw.text.push_str(&rest[..ws]);
                match t.chars().next() {
                    None => Go::Stop(rest.len()),
                    Some(';') if !*semi => {
                        core.raw.text.push(';');
                        *semi = true;
                        Go::On(ws + 1)
                    }
                    Some('{') => {
                        *self = Llama::Call(CallObj::new(ARGS_KEYS));
                        Go::On(ws)
                    }
                    Some(_) => {
                        // Not another call: the separator and the rest are content.
                        out.content(&core.raw.text);
                        core.raw.text.clear();
                        core.rest = Some(Mode::Pass);
                        Go::Stop(ws)
                    }
                }
            }
        }
    }
}
