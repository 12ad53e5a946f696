//! `pythonic`: a Python list of calls with keyword arguments, `[f(a='x', b=[1, 2]), g()]`,
//! optionally wrapped in `<|python_start|>`/`<|python_end|>` (Llama 3.2, Llama 4).
//!
//! Argument values are Python literals: strings (`'` or `"`, with Python escapes), integers
//! and floats (a leading `-` allowed), `True`/`False`/`None`, lists and dicts with string keys,
//! nested; trailing commas are accepted. They become the JSON arguments object.

use super::json::{Canon, Invalid, Step};
use super::out::Out;
use super::{fail, feed_chars, lead, Fed, Lead, Mode, Raw};

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
enum V {
    Value,
    ValueOrClose,
    KeyOrClose,
    Colon,
    After,
    Str,
    Num,
    Word,
    Done,
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
    st: V,
    /// Open containers, `true` for dicts.
    stack: Vec<bool>,
    quote: char,
    esc: Esc,
    key: Option<String>,
    word: String,
}

impl PyValue {
    fn new() -> Self {
        Self {
            st: V::Value,
            stack: Vec::new(),
            quote: '\'',
            esc: Esc::No,
            key: None,
            word: String::new(),
        }
    }

    fn value_done(&mut self) -> Step {
        if self.stack.is_empty() {
            self.st = V::Done;
            Step::Done
        } else {
            self.st = V::After;
            Step::More
        }
    }

    fn close(&mut self, canon: &mut Canon) -> Step {
        self.stack.pop();
        canon.close();
        self.value_done()
    }

    fn feed(&mut self, c: char, canon: &mut Canon) -> Result<Step, Invalid> {
        let ws = is_py_ws(c);
        match self.st {
            V::Done => return Ok(Step::DoneBefore),
            V::Value | V::ValueOrClose if ws => {}
            V::ValueOrClose if c == ']' => return Ok(self.close(canon)),
            V::Value | V::ValueOrClose => match c {
                '\'' | '"' => {
                    canon.str_begin();
                    self.quote = c;
                    self.st = V::Str;
                }
                '-' | '.' | '0'..='9' => {
                    self.word.push(c);
                    self.st = V::Num;
                }
                '[' | '{' => {
                    let dict = c == '{';
                    canon.open(dict)?;
                    self.stack.push(dict);
                    self.st = if dict { V::KeyOrClose } else { V::ValueOrClose };
                }
                c if is_ident_start(c) => {
                    self.word.push(c);
                    self.st = V::Word;
                }
                _ => return Err(Invalid),
            },
            V::KeyOrClose if ws => {}
            V::KeyOrClose if c == '}' => return Ok(self.close(canon)),
            V::KeyOrClose if c == '\'' || c == '"' => {
                self.key = Some(String::new());
                self.quote = c;
                self.st = V::Str;
            }
            V::Colon if ws => {}
            V::Colon if c == ':' => self.st = V::Value,
            V::After if ws => {}
            V::After => {
                let dict = self.stack.last().copied().unwrap_or(false);
                match c {
                    ',' => self.st = if dict { V::KeyOrClose } else { V::ValueOrClose },
                    '}' if dict => return Ok(self.close(canon)),
                    ']' if !dict => return Ok(self.close(canon)),
                    _ => return Err(Invalid),
                }
            }
            V::Str => return self.feed_str(c, canon),
            V::Num | V::Word => {
                let num = self.st == V::Num;
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
                return match self.value_done() {
                    Step::Done => Ok(Step::DoneBefore),
                    _ => self.feed(c, canon),
                };
            }
            _ => return Err(Invalid),
        }
        Ok(Step::More)
    }

    fn push_char(&mut self, c: char, canon: &mut Canon) {
        match self.key.as_mut() {
            Some(key) => key.push(c),
            None => canon.str_char(c),
        }
    }

    fn feed_str(&mut self, c: char, canon: &mut Canon) -> Result<Step, Invalid> {
        match self.esc {
            Esc::No => match c {
                '\\' => self.esc = Esc::Slash,
                '\n' | '\r' => return Err(Invalid),
                c if c == self.quote => {
                    return match self.key.take() {
                        Some(key) => {
                            canon.key(&key)?;
                            self.st = V::Colon;
                            Ok(Step::More)
                        }
                        None => {
                            canon.str_end();
                            Ok(self.value_done())
                        }
                    };
                }
                c => self.push_char(c, canon),
            },
            Esc::Slash => {
                self.esc = Esc::No;
                let decoded = match c {
                    '\n' => return Ok(Step::More),
                    '\\' | '\'' | '"' => c,
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
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
                    other => {
                        // Python keeps unknown escapes as written.
                        self.push_char('\\', canon);
                        other
                    }
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

/// Reads `f(a=1), g()]` (the opening bracket already read); `Step::Done` at the closing
/// bracket. A call starts (`Start` is sent) at its first `name=` or at `)` when it has no
/// arguments, so `[see(below)]`-like text never starts a call.
#[derive(Debug)]
struct PyCalls {
    st: C,
    canon: Canon,
    name: String,
    started: bool,
}

impl PyCalls {
    fn new() -> Self {
        Self {
            st: C::ListOpen,
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

#[derive(Debug)]
enum St {
    Lead,
    List(PyCalls),
    Tail,
    Text,
    Over(Mode),
}

/// The `pythonic` machine.
///
/// Beyond vLLM: leading whitespace and negative numbers are accepted, and text after the list
/// (and after `<|python_end|>`) is kept as content rather than making the whole output content.
#[derive(Debug)]
pub(crate) struct Pythonic {
    st: St,
    raw: Raw,
}

impl Pythonic {
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
                St::Lead => match lead(rest, START, '[') {
                    Lead::Calls(at) => {
                        self.raw.begin(out, &rest[..=at]);
                        pos += at + 1;
                        self.st = St::List(PyCalls::new());
                    }
                    Lead::Undecided if !eof => return pos,
                    Lead::Undecided | Lead::Text => {
                        out.content(rest);
                        self.st = St::Over(Mode::Pass);
                        return input.len();
                    }
                },
                St::List(calls) => match feed_chars(rest, &mut self.raw, |c| calls.feed(c, out)) {
                    Fed::Exhausted => {
                        if eof {
                            self.st = St::Over(fail(out, &mut self.raw));
                        }
                        return input.len();
                    }
                    Fed::Done(n) => {
                        pos += n;
                        self.st = St::Tail;
                    }
                    Fed::Failed(n) => {
                        pos += n;
                        self.st = St::Over(fail(out, &mut self.raw));
                    }
                },
                St::Tail => {
                    let t = rest.trim_start();
                    let skipped = rest.len() - t.len();
                    if t.starts_with(END) {
                        pos += skipped + END.len();
                        self.st = St::Text;
                    } else if END.starts_with(t) {
                        return if eof { input.len() } else { pos + skipped };
                    } else {
                        self.st = St::Text;
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
