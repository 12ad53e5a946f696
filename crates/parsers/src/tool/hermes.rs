//! `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Hermes 2 Pro,
//! Qwen2.5, Qwen3), any number of them, with ordinary text around them.

use super::call::CallObj;
use super::out::Out;
use super::{closing, Closing, Core, Format, Go};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const ARGS_KEYS: &[&str] = &["arguments"];

/// The `hermes` machine.
#[derive(Debug)]
pub(crate) enum Hermes {
    /// Ordinary text, looking for `<tool_call>`.
    Text,
    /// Inside a call's JSON object.
    Call(CallObj),
    /// The object is complete; whitespace and `</tool_call>` (or the end of output) follow.
    Close,
}

impl Format for Hermes {
    fn step(&mut self, core: &mut Core, rest: &str, eof: bool, out: &mut Out) -> Go {
        match self {
            Hermes::Text => core
                .until(rest, OPEN, eof, out)
                .moving(self, Hermes::Call(CallObj::new(ARGS_KEYS))),
            Hermes::Call(call) => core
                .read(rest, eof, out, |c, out| call.feed(c, out))
                .moving(self, Hermes::Close),
            Hermes::Close => match closing(rest, CLOSE) {
                Closing::Read(n) => {
                    out.end_call();
                    *self = Hermes::Text;
                    Go::On(n)
                }
                // `</tool_call>` still coming, or (at the end) never closed: the object is
                // complete, so the call stands.
                Closing::Partial(_) if eof => {
                    out.end_call();
                    *self = Hermes::Text;
                    Go::Stop(rest.len())
                }
                Closing::Partial(skipped) => Go::Stop(skipped),
                Closing::Absent(skipped) => {
                    core.fail(out);
                    Go::Stop(skipped)
                }
            },
        }
    }
}
