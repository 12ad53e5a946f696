//! Incremental strict JSON reading and canonical writing.
//!
//! [`Canon`] writes a value in exactly the form `serde_json::to_string` gives for it (compact,
//! serde_json's string escaping and number formatting), piece by piece as the value is read,
//! so arguments can be streamed and still equal the one-shot result byte for byte.
//! [`JsonValue`] reads one JSON value a character at a time, as strictly as `serde_json`, and
//! feeds a [`Canon`].

use std::collections::HashSet;

/// Deepest nesting [`Canon`] accepts, so every written document parses again with serde_json
/// (whose recursion limit is 128 levels).
pub(crate) const MAX_DEPTH: usize = 127;

/// The input is not valid (JSON, or a Python literal, or a tool-call wrapper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

/// What a reader did with one character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Consumed; the value goes on.
    More,
    /// Consumed; it closed the value.
    Done,
    /// Not consumed: the value (a number or bare word) had already ended before it.
    DoneBefore,
}

#[derive(Debug)]
struct Level {
    object: bool,
    first: bool,
    keys: HashSet<String>,
}

/// Canonical (serde_json compact) writer. Text accumulates in `out`; callers take it.
#[derive(Debug, Default)]
pub(crate) struct Canon {
    /// Canonical text written and not yet taken.
    pub(crate) out: String,
    levels: Vec<Level>,
    after_key: bool,
}

impl Canon {
    fn before_value(&mut self) {
        if self.after_key {
            self.after_key = false;
            return;
        }
        if let Some(level) = self.levels.last_mut() {
            if !level.first {
                self.out.push(',');
            }
            level.first = false;
        }
    }

    /// Opens an object (`true`) or array.
    pub(crate) fn open(&mut self, object: bool) -> Result<(), Invalid> {
        if self.levels.len() >= MAX_DEPTH {
            return Err(Invalid);
        }
        self.before_value();
        self.out.push(if object { '{' } else { '[' });
        self.levels.push(Level {
            object,
            first: true,
            keys: HashSet::new(),
        });
        Ok(())
    }

    /// Closes the innermost object or array.
    pub(crate) fn close(&mut self) {
        if let Some(level) = self.levels.pop() {
            self.out.push(if level.object { '}' } else { ']' });
        }
    }

    /// Writes an object key; a key repeated in the same object is invalid.
    pub(crate) fn key(&mut self, key: &str) -> Result<(), Invalid> {
        let Some(level) = self.levels.last_mut() else {
            return Err(Invalid);
        };
        if !level.object || !level.keys.insert(key.to_owned()) {
            return Err(Invalid);
        }
        if !level.first {
            self.out.push(',');
        }
        level.first = false;
        self.out.push('"');
        for c in key.chars() {
            escape_into(&mut self.out, c);
        }
        self.out.push_str("\":");
        self.after_key = true;
        Ok(())
    }

    /// Starts a string value.
    pub(crate) fn str_begin(&mut self) {
        self.before_value();
        self.out.push('"');
    }

    /// One character of the current string value.
    pub(crate) fn str_char(&mut self, c: char) {
        escape_into(&mut self.out, c);
    }

    /// Ends the current string value.
    pub(crate) fn str_end(&mut self) {
        self.out.push('"');
    }

    /// A number, given as JSON number text; serde_json decides validity and the output form.
    pub(crate) fn number(&mut self, text: &str) -> Result<(), Invalid> {
        let n: serde_json::Number = serde_json::from_str(text).map_err(|_| Invalid)?;
        let canonical = serde_json::to_string(&n).map_err(|_| Invalid)?;
        self.before_value();
        self.out.push_str(&canonical);
        Ok(())
    }

    /// `true`, `false` or `null`.
    pub(crate) fn literal(&mut self, lit: &str) {
        self.before_value();
        self.out.push_str(lit);
    }

    /// Takes the text written so far.
    pub(crate) fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

/// Appends `c` escaped as serde_json escapes string contents.
pub(crate) fn escape_into(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c if (c as u32) < 0x20 => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let b = c as usize;
            out.push_str("\\u00");
            out.push(char::from(HEX[b >> 4]));
            out.push(char::from(HEX[b & 0xf]));
        }
        c => out.push(c),
    }
}

/// The character that the escape `\` `c` stands for, for the letters JSON and Python share
/// (`b`, `f`, `n`, `r`, `t`).
pub(crate) fn control_escape(c: char) -> Option<char> {
    Some(match c {
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        _ => return None,
    })
}

/// JSON whitespace (serde_json accepts exactly these four).
pub(crate) fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Where a literal reader (a [`JsonValue`], or the pythonic reader) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pos {
    /// A value is expected.
    Value,
    /// A value or the end of the array is expected.
    ValueOrClose,
    /// A key or the end of the object is expected.
    KeyOrClose,
    /// A key is expected.
    Key,
    /// The `:` after a key is expected.
    Colon,
    /// A member has ended: a comma or the end of its container is expected.
    After,
    /// Inside a string (a key, or a value).
    Str,
    /// Inside a number.
    Num,
    /// Inside a bare word (a JSON literal; a Python constant).
    Word,
    /// The value is complete.
    Done,
}

/// The position and open containers of a literal reader, and the steps over them that JSON
/// and Python literals share; the reader writes to a [`Canon`] that it passes in.
#[derive(Debug)]
pub(crate) struct Nest {
    pub(crate) pos: Pos,
    /// Open containers, `true` for objects.
    stack: Vec<bool>,
    /// The key being read, when the string being read is an object key.
    pub(crate) key: Option<String>,
}

impl Nest {
    pub(crate) fn new() -> Self {
        Self {
            pos: Pos::Value,
            stack: Vec::new(),
            key: None,
        }
    }

    /// At the top level (no container open).
    pub(crate) fn top(&self) -> bool {
        self.stack.is_empty()
    }

    /// A value has ended: `Step::Done` if it was the top-level one.
    pub(crate) fn value_done(&mut self) -> Step {
        if self.stack.is_empty() {
            self.pos = Pos::Done;
            Step::Done
        } else {
            self.pos = Pos::After;
            Step::More
        }
    }

    /// Opens an object (`true`) or array.
    pub(crate) fn open(&mut self, object: bool, canon: &mut Canon) -> Result<(), Invalid> {
        canon.open(object)?;
        self.stack.push(object);
        self.pos = if object {
            Pos::KeyOrClose
        } else {
            Pos::ValueOrClose
        };
        Ok(())
    }

    /// Closes the innermost container.
    pub(crate) fn close(&mut self, canon: &mut Canon) -> Step {
        self.stack.pop();
        canon.close();
        self.value_done()
    }

    /// A key's string starts.
    pub(crate) fn key_begin(&mut self) {
        self.key = Some(String::new());
        self.pos = Pos::Str;
    }

    /// The closing quote of a string: writes the key (then `:` follows) or ends the value.
    pub(crate) fn str_end(&mut self, canon: &mut Canon) -> Result<Step, Invalid> {
        match self.key.take() {
            Some(key) => {
                canon.key(&key)?;
                self.pos = Pos::Colon;
                Ok(Step::More)
            }
            None => {
                canon.str_end();
                Ok(self.value_done())
            }
        }
    }

    /// A non-whitespace character after a member: a comma, after which (`trailing`) the
    /// container may also close, or the container's closing bracket.
    pub(crate) fn after(
        &mut self,
        c: char,
        canon: &mut Canon,
        trailing: bool,
    ) -> Result<Step, Invalid> {
        let object = self.stack.last().copied().unwrap_or(false);
        match c {
            ',' => {
                self.pos = match (object, trailing) {
                    (true, false) => Pos::Key,
                    (false, false) => Pos::Value,
                    (true, true) => Pos::KeyOrClose,
                    (false, true) => Pos::ValueOrClose,
                };
                Ok(Step::More)
            }
            '}' if object => Ok(self.close(canon)),
            ']' if !object => Ok(self.close(canon)),
            _ => Err(Invalid),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    No,
    Slash,
    Hex(u32, u8),
}

/// Reads one JSON value a character at a time and writes it to its [`Canon`].
#[derive(Debug)]
pub(crate) struct JsonValue {
    /// Canonical form of what has been read.
    pub(crate) canon: Canon,
    nest: Nest,
    esc: Esc,
    high: Option<u32>,
    num: String,
    lit: &'static str,
    lit_pos: usize,
    top_str: Option<String>,
    object_only: bool,
}

impl JsonValue {
    /// A reader for any JSON value, or (`object_only`) only an object.
    pub(crate) fn new(object_only: bool) -> Self {
        Self {
            canon: Canon::default(),
            nest: Nest::new(),
            esc: Esc::No,
            high: None,
            num: String::new(),
            lit: "",
            lit_pos: 0,
            top_str: None,
            object_only,
        }
    }

    /// The decoded text, if the value read is a (complete or partial) top-level string.
    pub(crate) fn top_str(&self) -> Option<&str> {
        self.top_str.as_deref()
    }

    fn str_push(&mut self, c: char) {
        if let Some(k) = self.nest.key.as_mut() {
            k.push(c);
        } else {
            self.canon.str_char(c);
            if let Some(t) = self.top_str.as_mut() {
                t.push(c);
            }
        }
    }

    /// Reads one character.
    pub(crate) fn feed(&mut self, c: char) -> Result<Step, Invalid> {
        match self.nest.pos {
            Pos::Done => Ok(Step::DoneBefore),
            Pos::Value | Pos::ValueOrClose => {
                if is_json_ws(c) {
                    return Ok(Step::More);
                }
                if self.nest.pos == Pos::ValueOrClose && c == ']' {
                    return Ok(self.nest.close(&mut self.canon));
                }
                if self.object_only && self.nest.top() && c != '{' {
                    return Err(Invalid);
                }
                match c {
                    '{' | '[' => self.nest.open(c == '{', &mut self.canon)?,
                    '"' => {
                        self.canon.str_begin();
                        if self.nest.top() {
                            self.top_str = Some(String::new());
                        }
                        self.nest.pos = Pos::Str;
                    }
                    '-' | '0'..='9' => {
                        self.num.push(c);
                        self.nest.pos = Pos::Num;
                    }
                    't' | 'f' | 'n' => {
                        self.lit = match c {
                            't' => "true",
                            'f' => "false",
                            _ => "null",
                        };
                        self.lit_pos = 1;
                        self.nest.pos = Pos::Word;
                    }
                    _ => return Err(Invalid),
                }
                Ok(Step::More)
            }
            Pos::KeyOrClose | Pos::Key => {
                if is_json_ws(c) {
                    Ok(Step::More)
                } else if c == '"' {
                    self.nest.key_begin();
                    Ok(Step::More)
                } else if c == '}' && self.nest.pos == Pos::KeyOrClose {
                    Ok(self.nest.close(&mut self.canon))
                } else {
                    Err(Invalid)
                }
            }
            Pos::Colon => {
                if is_json_ws(c) {
                    Ok(Step::More)
                } else if c == ':' {
                    self.nest.pos = Pos::Value;
                    Ok(Step::More)
                } else {
                    Err(Invalid)
                }
            }
            Pos::After if is_json_ws(c) => Ok(Step::More),
            Pos::After => self.nest.after(c, &mut self.canon, false),
            Pos::Str => self.feed_str(c),
            Pos::Num => {
                if matches!(c, '0'..='9' | '.' | 'e' | 'E' | '+' | '-') {
                    self.num.push(c);
                    return Ok(Step::More);
                }
                let num = std::mem::take(&mut self.num);
                self.canon.number(&num)?;
                match self.nest.value_done() {
                    Step::Done => Ok(Step::DoneBefore),
                    _ => self.feed(c),
                }
            }
            Pos::Word => {
                if !self
                    .lit
                    .get(self.lit_pos..)
                    .is_some_and(|rest| rest.starts_with(c))
                {
                    return Err(Invalid);
                }
                self.lit_pos += 1;
                if self.lit_pos == self.lit.len() {
                    self.canon.literal(self.lit);
                    Ok(self.nest.value_done())
                } else {
                    Ok(Step::More)
                }
            }
        }
    }

    fn feed_str(&mut self, c: char) -> Result<Step, Invalid> {
        match self.esc {
            Esc::No => {
                if self.high.is_some() && c != '\\' {
                    return Err(Invalid);
                }
                match c {
                    '"' => self.nest.str_end(&mut self.canon),
                    '\\' => {
                        self.esc = Esc::Slash;
                        Ok(Step::More)
                    }
                    c if (c as u32) < 0x20 => Err(Invalid),
                    c => {
                        self.str_push(c);
                        Ok(Step::More)
                    }
                }
            }
            Esc::Slash => {
                if self.high.is_some() && c != 'u' {
                    return Err(Invalid);
                }
                self.esc = Esc::No;
                let decoded = match c {
                    '"' | '\\' | '/' => c,
                    'u' => {
                        self.esc = Esc::Hex(0, 0);
                        return Ok(Step::More);
                    }
                    c => control_escape(c).ok_or(Invalid)?,
                };
                self.str_push(decoded);
                Ok(Step::More)
            }
            Esc::Hex(acc, n) => {
                let digit = c.to_digit(16).ok_or(Invalid)?;
                let acc = acc * 16 + digit;
                if n < 3 {
                    self.esc = Esc::Hex(acc, n + 1);
                    return Ok(Step::More);
                }
                self.esc = Esc::No;
                let code = if let Some(high) = self.high.take() {
                    if !(0xDC00..=0xDFFF).contains(&acc) {
                        return Err(Invalid);
                    }
                    0x10000 + ((high - 0xD800) << 10) + (acc - 0xDC00)
                } else if (0xD800..=0xDBFF).contains(&acc) {
                    self.high = Some(acc);
                    return Ok(Step::More);
                } else {
                    acc
                };
                let decoded = char::from_u32(code).ok_or(Invalid)?;
                self.str_push(decoded);
                Ok(Step::More)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Option<String> {
        let mut v = JsonValue::new(false);
        let mut done = false;
        for c in text.chars().chain(std::iter::once(' ')) {
            if done {
                if !is_json_ws(c) {
                    return None;
                }
                continue;
            }
            match v.feed(c).ok()? {
                Step::More => {}
                Step::Done | Step::DoneBefore => done = true,
            }
        }
        done.then(|| v.canon.take())
    }

    fn serde(text: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(serde_json::to_string(&v).unwrap())
    }

    #[test]
    fn matches_serde_json() {
        let cases = [
            r#"{"a": 1, "b": [true, false, null], "c": {"d": "e"}}"#,
            r#"{"city": "S\u00e3o Paulo", "q": "say \"hi\"\n\ttab", "s": "\/x"}"#,
            r#"{"emoji": "\ud83d\ude00 😀", "ctl": "\u0001\u001f\u007f", "bf": "\b\f"}"#,
            r#"[1.0, 1e5, -0, 0.1, 123456789012345678901234567890, -12, 1E-7, 2.50]"#,
            r#"  {"nested": {"deep": [[[]], {}], "x": -1.5e+3}}  "#,
            r#""plain string""#,
            "17",
            r#"{"a":1,"a":2}"#,
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\ud800\u0041""#,
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "-",
            "1e400",
            "\"raw\ncontrol\"",
            "tru",
            "[1 2]",
        ];
        for case in cases {
            let dup = case == r#"{"a":1,"a":2}"#;
            let expected = if dup { None } else { serde(case) };
            assert_eq!(canonical(case), expected, "{case}");
        }
    }

    #[test]
    fn escapes_every_ascii_char_like_serde() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            let mut ours = String::from("\"");
            escape_into(&mut ours, c);
            ours.push('"');
            assert_eq!(ours, serde_json::to_string(&c.to_string()).unwrap(), "{b}");
        }
    }

    #[test]
    fn depth_limit_keeps_output_parseable() {
        let deep_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let out = canonical(&deep_ok).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(canonical(&too_deep), None);
    }
}
