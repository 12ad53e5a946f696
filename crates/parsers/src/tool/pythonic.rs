//! `pythonic`: a Python list of calls with keyword arguments, `[f(a='x', b=[1, 2]), g()]`,
//! optionally wrapped in `<|python_start|>`/`<|python_end|>` (Llama 3.2, Llama 4).
//!
//! Argument values are Python literals: strings (`'` or `"`, with Python escapes), integers
//! and floats (a leading `-` allowed), `True`/`False`/`None`, lists and dicts with string keys,
//! nested; trailing commas are accepted. They become the JSON arguments object.

use super::json::{control_escape, Canon, Invalid, Nest, Pos, Step};
use super::out::Out;
use super::{closing, Closing, Core, Format, Go, Mode};

const START: &str = "<|python_start|>";
const END: &str = "<|python_end|>";

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Python's whitespace inside brackets (line breaks included).
fn is_py_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    No,
    Slash,
    Hex(u32, u8),
    Oct(u32, u8),
}

/// Reads one Python literal a character at a time, writing its JSON form to a [`Canon`].
#[derive(Debug)]
struct PyValue {
    nest: Nest,
    quote: char,
    esc: Esc,
    word: String,
}

impl PyValue {
    fn new() -> Self {
        Self {
            nest: Nest::new(),
            quote: '\'',
            esc: Esc::No,
            word: String::new(),
        }
    }

    fn feed(&mut self, c: char, canon: &mut Canon) -> Result<Step, Invalid> {
        let ws = is_py_ws(c);
        match self.nest.pos {
            Pos::Done => return Ok(Step::DoneBefore),
            Pos::Value | Pos::ValueOrClose if ws => {}
            Pos::ValueOrClose if c == ']' => return Ok(self.nest.close(canon)),
            Pos::Value | Pos::ValueOrClose => match c {
                '\'' | '"' => {
                    canon.str_begin();
                    self.quote = c;
                    self.nest.pos = Pos::Str;
                }
                '-' | '.' | '0'..='9' => {
                    self.word.push(c);
                    self.nest.pos = Pos::Num;
                }
                '[' | '{' => self.nest.open(c == '{', canon)?,
                c if is_ident_start(c) => {
                    self.word.push(c);
                    self.nest.pos = Pos::Word;
                }
                _ => return Err(Invalid),
            },
            Pos::KeyOrClose if ws => {}
            Pos::KeyOrClose if c == '}' => return Ok(self.nest.close(canon)),
            Pos::KeyOrClose if c == '\'' || c == '"' => {
                self.nest.key_begin();
                self.quote = c;
            }
            Pos::Colon if ws => {}
            Pos::Colon if c == ':' => self.nest.pos = Pos::Value,
            Pos::After if ws => {}
            Pos::After => return self.nest.after(c, canon, true),
            Pos::Str => return self.feed_str(c, canon),
            Pos::Num | Pos::Word => {
                let num = self.nest.pos == Pos::Num;
                let exp_sign = (c == '+' || c == '-') && self.word.ends_with(['e', 'E']);
                if is_ident(c) || (num && (c == '.' || exp_sign)) {
                    self.word.push(c);
                    return Ok(Step::More);
                }
                let word = std::mem::take(&mut self.word);
                if num {
                    canon.number(&json_number(&word).ok_or(Invalid)?)?;
                } else {
                    canon.literal(match word.as_str() {
                        "True" => "true",
                        "False" => "false",
                        "None" => "null",
                        _ => return Err(Invalid),
                    });
                }
                return match self.nest.value_done() {
                    Step::Done => Ok(Step::DoneBefore),
                    _ => self.feed(c, canon),
                };
            }
            _ => return Err(Invalid),
        }
        Ok(Step::More)
    }

    fn push_char(&mut self, c: char, canon: &mut Canon) {
        match self.nest.key.as_mut() {
            Some(key) => key.push(c),
            None => canon.str_char(c),
        }
    }

    fn feed_str(&mut self, c: char, canon: &mut Canon) -> Result<Step, Invalid> {
        match self.esc {
            Esc::No => match c {
                '\\' => self.esc = Esc::Slash,
                '\n' | '\r' => return Err(Invalid),
                c if c == self.quote => return self.nest.str_end(canon),
                c => self.push_char(c, canon),
            },
            Esc::Slash => {
                self.esc = Esc::No;
                let decoded = match c {
                    '\n' => return Ok(Step::More),
                    '\\' | '\'' | '"' => c,
                    'v' => '\u{b}',
                    'a' => '\u{7}',
                    'x' => {
                        self.esc = Esc::Hex(0, 2);
                        return Ok(Step::More);
                    }
                    'u' => {
                        self.esc = Esc::Hex(0, 4);
                        return Ok(Step::More);
                    }
                    'U' => {
                        self.esc = Esc::Hex(0, 8);
                        return Ok(Step::More);
                    }
                    '0'..='7' => {
                        self.esc = Esc::Oct(c as u32 - '0' as u32, 1);
                        return Ok(Step::More);
                    }
                    'N' => return Err(Invalid),
                    other => match control_escape(other) {
                        Some(decoded) => decoded,
                        None => {
                            // Python keeps unknown escapes as written.
                            self.push_char('\\', canon);
                            other
                        }
                    },
                };
                self.push_char(decoded, canon);
            }
            Esc::Hex(acc, left) => {
                let acc = acc * 16 + c.to_digit(16).ok_or(Invalid)?;
                if left > 1 {
                    self.esc = Esc::Hex(acc, left - 1);
                } else {
                    self.esc = Esc::No;
                    self.push_char(char::from_u32(acc).ok_or(Invalid)?, canon);
                }
            }
            Esc::Oct(acc, n) => match c.to_digit(8) {
                Some(d) if n < 3 => {
                    let acc = acc * 8 + d;
                    if n == 2 {
                        self.esc = Esc::No;
                        self.push_char(char::from_u32(acc).ok_or(Invalid)?, canon);
                    } else {
                        self.esc = Esc::Oct(acc, n + 1);
                    }
                }
                _ => {
                    self.esc = Esc::No;
                    self.push_char(char::from_u32(acc).ok_or(Invalid)?, canon);
                    return self.feed_str(c, canon);
                }
            },
        }
        Ok(Step::More)
    }
}

/// A Python int/float literal (optionally negative) as JSON number text.
fn json_number(word: &str) -> Option<String> {
    let (sign, body) = match word.strip_prefix('-') {
        Some(b) => ("-", b),
        None => ("", word),
    };
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') || body.contains("__") {
        return None;
    }
    let mut body = body.replace('_', "");
    if body
        .chars()
        .any(|c| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
    {
        return None;
    }
    if body.starts_with('.') {
        body.insert(0, '0');
    }
    if let Some(dot) = body.find('.') {
        let after = &body[dot + 1..];
        if after.is_empty() || after.starts_with(['e', 'E']) {
            body.insert(dot + 1, '0');
        }
    }
    Some(format!("{sign}{body}"))
}

#[derive(Debug)]
enum C {
    Bracket,
    ListOpen,
    ListNext,
    Name(String),
    ArgsOpen,
    ArgsNext,
    KwName(String),
    KwEq(String),
    Value(PyValue),
    AfterArg,
    AfterCall,
}

/// Reads `[f(a=1), g()]`; `Step::Done` at the closing bracket. A call starts (`Start` is
/// sent) at its first `name=` or at `)` when it has no arguments, so `[see(below)]`-like text never starts a call.
#[derive(Debug)]
pub(crate) struct PyCalls {
    st: C,
    canon: Canon,
    name: String,
    started: bool,
}

impl PyCalls {
    fn new() -> Self {
        Self {
            st: C::Bracket,
            canon: Canon::default(),
            name: String::new(),
            started: false,
        }
    }

    fn start(&mut self, out: &mut Out) {
        if !self.started {
            self.started = true;
            out.start(std::mem::take(&mut self.name));
        }
        out.args(&self.canon.take());
    }

    fn feed(&mut self, c: char, out: &mut Out) -> Result<Step, Invalid> {
        let ws = is_py_ws(c);
        match &mut self.st {
            C::ListOpen | C::ListNext | C::ArgsOpen | C::ArgsNext | C::AfterArg | C::AfterCall
                if ws => {}
            C::Bracket if c == '[' => self.st = C::ListOpen,
            C::ListNext | C::AfterCall if c == ']' => return Ok(Step::Done),
            C::ListOpen | C::ListNext if is_ident_start(c) => self.st = C::Name(c.to_string()),
            C::Name(name) if is_ident(c) => name.push(c),
            C::Name(name) if c == '(' => {
                self.name = std::mem::take(name);
                self.canon = Canon::default();
                self.canon.open(true)?;
                self.st = C::ArgsOpen;
            }
            C::ArgsOpen | C::ArgsNext | C::AfterArg if c == ')' => {
                self.canon.close();
                self.start(out);
                out.end_call();
                self.started = false;
                self.st = C::AfterCall;
            }
            C::ArgsOpen | C::ArgsNext if is_ident_start(c) => self.st = C::KwName(c.to_string()),
            C::KwName(kw) if is_ident(c) => kw.push(c),
            C::KwName(kw) | C::KwEq(kw) if ws => self.st = C::KwEq(std::mem::take(kw)),
            C::KwName(kw) | C::KwEq(kw) if c == '=' => {
                let kw = std::mem::take(kw);
                self.canon.key(&kw)?;
                self.start(out);
                self.st = C::Value(PyValue::new());
            }
            C::Value(value) => {
                let step = value.feed(c, &mut self.canon)?;
                out.args(&self.canon.take());
                match step {
                    Step::More => {}
                    Step::Done => self.st = C::AfterArg,
                    Step::DoneBefore => {
                        self.st = C::AfterArg;
                        return self.feed(c, out);
                    }
                }
            }
            C::AfterArg if c == ',' => self.st = C::ArgsNext,
            C::AfterCall if c == ',' => self.st = C::ListNext,
            _ => return Err(Invalid),
        }
        Ok(Step::More)
    }
}

/// The `pythonic` machine.
///
/// Beyond vLLM: leading whitespace and negative numbers are accepted, and text after the list
/// (and after `<|python_end|>`) is kept as content rather than making the whole output content.
#[derive(Debug)]
pub(crate) enum Pythonic {
    /// Start of output: whitespace and the optional start tag, until the first other character.
    Lead,
    /// Inside the list of calls.
    List(PyCalls),
    /// After the list: whitespace and the optional end tag; the rest is content.
    Tail,
}

impl Format for Pythonic {
    fn step(&mut self, core: &mut Core, rest: &str, eof: bool, out: &mut Out) -> Go {
        match self {
            Pythonic::Lead => core
                .lead(rest, START, '[', eof, out)
                .moving(self, Pythonic::List(PyCalls::new())),
            Pythonic::List(calls) => core
                .read(rest, eof, out, |c, out| calls.feed(c, out))
                .moving(self, Pythonic::Tail),
            Pythonic::Tail => match closing(rest, END) {
                Closing::Read(n) => {
                    core.rest = Some(Mode::Pass);
                    Go::Stop(n)
                }
                Closing::Partial(_) if eof => Go::Stop(rest.len()),
                Closing::Partial(skipped) => Go::Stop(skipped),
                Closing::Absent(_) => {
                    core.rest = Some(Mode::Pass);
                    Go::Stop(0)
                }
            },
        }
    }
}
