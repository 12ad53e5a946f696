//! `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Hermes 2 Pro,
//! Qwen2.5, Qwen3), any number of them, with ordinary text around them.

use super::call::CallObj;
use super::out::Out;
use super::{fail, feed_chars, Fed, Mode, Raw};
use crate::scan::{scan, Scan};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const ARGS_KEYS: &[&str] = &["arguments"];

#[derive(Debug)]
enum St {
    /// Ordinary text, looking for `<tool_call>`.
    Text,
    /// Inside a call's JSON object.
    Call(CallObj),
    /// The object is complete; whitespace and `</tool_call>` (or the end of output) follow.
    Close,
    /// After malformed markup: everything else is content (or, `Dead`, dropped).
    Over(Mode),
}

#[derive(Debug)]
pub(crate) struct Hermes {
    st: St,
    raw: Raw,
}

impl Hermes {
    pub(crate) fn new() -> Self {
        Self {
            st: St::Text,
            raw: Raw::default(),
        }
    }

    pub(crate) fn run(&mut self, input: &str, eof: bool, out: &mut Out) -> usize {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match &mut self.st {
                St::Text => match scan(rest, &[OPEN]) {
                    Scan::Found { at, .. } => {
                        out.content(&rest[..at]);
                        pos += at + OPEN.len();
                        self.raw.begin(out, OPEN);
                        self.st = St::Call(CallObj::new(ARGS_KEYS));
                    }
                    Scan::Partial { safe } => {
                        let upto = if eof { rest.len() } else { safe };
                        out.content(&rest[..upto]);
                        return pos + upto;
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
                        self.st = St::Close;
                    }
                    Fed::Failed(n) => {
                        pos += n;
                        self.st = St::Over(fail(out, &mut self.raw));
                    }
                },
                St::Close => {
                    let t = rest.trim_start();
                    let skipped = rest.len() - t.len();
                    if t.starts_with(CLOSE) {
                        pos += skipped + CLOSE.len();
                        out.end_call();
                        self.st = St::Text;
                    } else if CLOSE.starts_with(t) {
                        // `</tool_call>` still coming, or (at the end) never closed: the object
                        // is complete, so the call stands.
                        if eof {
                            out.end_call();
                            self.st = St::Text;
                            return input.len();
                        }
                        return pos + skipped;
                    } else {
                        pos += skipped;
                        self.st = St::Over(fail(out, &mut self.raw));
                    }
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
