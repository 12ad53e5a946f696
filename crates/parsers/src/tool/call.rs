//! The JSON call wrapper `{"name": "f", "arguments": {...}}` shared by the hermes,
//! llama3_json, mistral (array form) and `tool_choice: "required"` parsers.

use super::json::{is_json_ws, Invalid, JsonValue, Step};
use super::out::Out;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Name,
    Args,
    Other,
}

#[derive(Debug)]
enum St {
    Open,
    KeyOrClose,
    Key,
    InKey(Box<JsonValue>),
    Colon(String),
    Value(Role, Box<JsonValue>),
    After,
    Done,
}

/// Reads one call object a character at a time, emitting `Start` once both the name and the
/// opening brace of the arguments have been read (in either order), then the arguments in
/// canonical form.
///
/// Rules: `name` must be a non-empty string; the arguments (under one of `args_keys`) must be
/// a JSON object and present; other keys are read and ignored; a repeated key is invalid.
#[derive(Debug)]
pub(crate) struct CallObj {
    st: St,
    args_keys: &'static [&'static str],
    keys: Vec<String>,
    name: Option<String>,
    args_seen: bool,
    /// The arguments object has opened.
    args_open: bool,
    started: bool,
    /// Canonical arguments read before the call could start.
    held_args: String,
}

impl CallObj {
    /// A reader accepting the arguments under any of `args_keys`.
    pub(crate) fn new(args_keys: &'static [&'static str]) -> Self {
        Self {
            st: St::Open,
            args_keys,
            keys: Vec::new(),
            name: None,
            args_seen: false,
            args_open: false,
            started: false,
            held_args: String::new(),
        }
    }

    fn try_start(&mut self, out: &mut Out) {
        if self.started || !self.args_open {
            return;
        }
        if let Some(name) = self.name.clone() {
            self.started = true;
            out.start(name);
            let held = std::mem::take(&mut self.held_args);
            out.args(&held);
        }
    }

    fn emit_args(&mut self, text: String, out: &mut Out) {
        if self.started {
            out.args(&text);
        } else {
            self.held_args.push_str(&text);
        }
    }

    /// Reads one character; `Step::Done` when the closing brace was read.
    pub(crate) fn feed(&mut self, c: char, out: &mut Out) -> Result<Step, Invalid> {
        let st = std::mem::replace(&mut self.st, St::Done);
        let (next, step) = self.step(st, c, out)?;
        self.st = next;
        Ok(step)
    }

    fn step(&mut self, st: St, c: char, out: &mut Out) -> Result<(St, Step), Invalid> {
        let ws = is_json_ws(c);
        Ok(match st {
            St::Open if ws => (St::Open, Step::More),
            St::Open if c == '{' => (St::KeyOrClose, Step::More),
            St::KeyOrClose | St::Key if ws => (st, Step::More),
            St::KeyOrClose | St::Key if c == '"' => {
                let mut key = Box::new(JsonValue::new(false));
                key.feed(c)?;
                (St::InKey(key), Step::More)
            }
            St::KeyOrClose | St::After if c == '}' => {
                if self.name.is_none() || !self.args_seen {
                    return Err(Invalid);
                }
                (St::Done, Step::Done)
            }
            St::InKey(mut key) => match key.feed(c)? {
                Step::Done => {
                    let k = key.top_str().unwrap_or_default().to_owned();
                    if self.keys.contains(&k) {
                        return Err(Invalid);
                    }
                    self.keys.push(k.clone());
                    (St::Colon(k), Step::More)
                }
                _ => (St::InKey(key), Step::More),
            },
            St::Colon(k) if ws => (St::Colon(k), Step::More),
            St::Colon(k) if c == ':' => {
                let role = if k == "name" {
                    Role::Name
                } else if self.args_keys.contains(&k.as_str()) {
                    if self.args_seen {
                        return Err(Invalid);
                    }
                    self.args_seen = true;
                    Role::Args
                } else {
                    Role::Other
                };
                (
                    St::Value(role, Box::new(JsonValue::new(role == Role::Args))),
                    Step::More,
                )
            }
            St::Value(role, mut value) => {
                let step = value.feed(c)?;
                let text = value.canon.take();
                if role == Role::Args {
                    if !ws {
                        // The value's first character was accepted, so it is an object.
                        self.args_open = true;
                        self.try_start(out);
                    }
                    self.emit_args(text, out);
                }
                if step == Step::More {
                    return Ok((St::Value(role, value), Step::More));
                }
                if role == Role::Name {
                    match value.top_str() {
                        Some(name) if !name.is_empty() => self.name = Some(name.to_owned()),
                        _ => return Err(Invalid),
                    }
                    self.try_start(out);
                }
                if step == Step::DoneBefore {
                    return self.step(St::After, c, out);
                }
                (St::After, Step::More)
            }
            St::After if ws => (St::After, Step::More),
            St::After if c == ',' => (St::Key, Step::More),
            _ => return Err(Invalid),
        })
    }
}

#[derive(Debug)]
enum ArrSt {
    Open,
    Call(CallObj),
    After,
    Next,
}

/// Reads `{call}, {call}, ...]` (the opening bracket already read) a character at a time;
/// `Step::Done` at the closing bracket. An empty array is invalid.
#[derive(Debug)]
pub(crate) struct CallArray {
    st: ArrSt,
    args_keys: &'static [&'static str],
}

impl CallArray {
    /// A reader whose calls take their arguments under any of `args_keys`.
    pub(crate) fn new(args_keys: &'static [&'static str]) -> Self {
        Self {
            st: ArrSt::Open,
            args_keys,
        }
    }

    /// Reads one character.
    pub(crate) fn feed(&mut self, c: char, out: &mut Out) -> Result<Step, Invalid> {
        let ws = is_json_ws(c);
        match &mut self.st {
            ArrSt::Open | ArrSt::Next if ws => {}
            ArrSt::Open | ArrSt::Next if c == '{' => {
                let mut call = CallObj::new(self.args_keys);
                call.feed(c, out)?;
                self.st = ArrSt::Call(call);
            }
            ArrSt::Call(call) => {
                if call.feed(c, out)? == Step::Done {
                    out.end_call();
                    self.st = ArrSt::After;
                }
            }
            ArrSt::After if ws => {}
            ArrSt::After if c == ',' => self.st = ArrSt::Next,
            ArrSt::After if c == ']' => return Ok(Step::Done),
            _ => return Err(Invalid),
        }
        Ok(Step::More)
    }
}
