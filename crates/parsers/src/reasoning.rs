//! Reasoning parsing: splits `<think>…</think>` reasoning from the answer, for vLLM's
//! `--reasoning-parser` names `qwen3` and `deepseek_r1`.
//!
//! * `qwen3`: the reasoning is the text between `<think>` and `</think>`. Output with no
//!   `<think>` is all content, unless the prompt already opened the block (`prompt_opened`).
//!   Text before `<think>` stays content.
//! * `deepseek_r1`: everything before `</think>` is reasoning (the output always starts in
//!   reasoning); output with no `</think>` is all reasoning.
//!
//! For both: inside the reasoning, `<think>` markers are dropped (models that are prompted
//! with an opened block sometimes repeat it); the first `</think>` ends the reasoning, and
//! everything after it is content verbatim (markers included). Output that ends inside the
//! reasoning (cut off by `max_tokens`) is all reasoning. As in vLLM, whitespace around the
//! markers is kept: Qwen3's usual `</think>\n\n` gives content starting with `"\n\n"`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::scan::cut;

/// A `--reasoning-parser` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasoningParserKind {
    /// `qwen3`: reasoning only inside `<think>…</think>` (or after a prompt that opened it).
    Qwen3,
    /// `deepseek_r1`: reasoning until `</think>`, from the start of output.
    DeepSeekR1,
}

impl ReasoningParserKind {
    /// Every kind, in the order of their names.
    pub const ALL: [ReasoningParserKind; 2] =
        [ReasoningParserKind::Qwen3, ReasoningParserKind::DeepSeekR1];

    /// The vLLM `--reasoning-parser` name.
    pub fn name(&self) -> &'static str {
        match self {
            ReasoningParserKind::Qwen3 => "qwen3",
            ReasoningParserKind::DeepSeekR1 => "deepseek_r1",
        }
    }

    /// The marker that opens the reasoning: `<think>`.
    pub fn start_marker(&self) -> &'static str {
        "<think>"
    }

    /// The marker that closes the reasoning: `</think>`.
    pub fn end_marker(&self) -> &'static str {
        "</think>"
    }
}

impl fmt::Display for ReasoningParserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReasoningParserKind {
    type Err = crate::UnknownParser;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::kind_from_name("reasoning", &Self::ALL, Self::name, s)
    }
}

/// Result of [`split`]. Empty parts are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Split {
    /// The reasoning text, markers removed.
    pub reasoning: Option<String>,
    /// The answer.
    pub content: Option<String>,
}

/// Splits a finished output. `prompt_opened`: the prompt ends inside a `<think>` block (the
/// chat template put `<think>` in the generation prompt), so the output starts in reasoning.
pub fn split(kind: ReasoningParserKind, text: &str, prompt_opened: bool) -> Split {
    let mut parser = ReasoningStreamParser::new(kind, prompt_opened);
    let mut deltas = parser.push(text);
    deltas.extend(parser.finish());
    let (mut reasoning, mut content) = (String::new(), String::new());
    for delta in deltas {
        match delta {
            ReasoningDelta::Reasoning(t) => reasoning.push_str(&t),
            ReasoningDelta::Content(t) => content.push_str(&t),
        }
    }
    let some = |s: String| (!s.is_empty()).then_some(s);
    Split {
        reasoning: some(reasoning),
        content: some(content),
    }
}

/// One streaming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningDelta {
    /// A piece of reasoning.
    Reasoning(String),
    /// A piece of the answer.
    Content(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Content before any `<think>` (qwen3 only).
    Before,
    /// Inside the reasoning.
    Thinking,
    /// After `</think>`: everything is content.
    After,
}

/// Incremental reasoning splitter over text as it is generated.
///
/// A possible partial marker at the end of the text so far is held back until it is decided;
/// for any split of an output into pieces the deltas, concatenated, equal [`split`].
#[derive(Debug)]
pub struct ReasoningStreamParser {
    kind: ReasoningParserKind,
    st: St,
    buf: String,
    deltas: Vec<ReasoningDelta>,
    finished: bool,
}

impl ReasoningStreamParser {
    /// A parser for `kind`; see [`split`] for `prompt_opened`.
    pub fn new(kind: ReasoningParserKind, prompt_opened: bool) -> Self {
        let st = match kind {
            ReasoningParserKind::Qwen3 if !prompt_opened => St::Before,
            _ => St::Thinking,
        };
        Self {
            kind,
            st,
            buf: String::new(),
            deltas: Vec::new(),
            finished: false,
        }
    }

    /// Currently inside the reasoning.
    pub fn in_reasoning(&self) -> bool {
        self.st == St::Thinking
    }

    /// Takes the next piece of output. After [`finish`](Self::finish) it does nothing.
    pub fn push(&mut self, delta: &str) -> Vec<ReasoningDelta> {
        if !self.finished {
            self.buf.push_str(delta);
            self.run(false);
        }
        std::mem::take(&mut self.deltas)
    }

    /// End of output: releases held-back text. Calling it again returns nothing.
    pub fn finish(&mut self) -> Vec<ReasoningDelta> {
        if !self.finished {
            self.finished = true;
            self.run(true);
        }
        std::mem::take(&mut self.deltas)
    }

    fn emit(&mut self, reasoning: bool, text: &str) {
        if text.is_empty() {
            return;
        }
        match (self.deltas.last_mut(), reasoning) {
            (Some(ReasoningDelta::Reasoning(prev)), true)
            | (Some(ReasoningDelta::Content(prev)), false) => prev.push_str(text),
            (_, true) => self.deltas.push(ReasoningDelta::Reasoning(text.to_owned())),
            (_, false) => self.deltas.push(ReasoningDelta::Content(text.to_owned())),
        }
    }

    fn run(&mut self, eof: bool) {
        let (start, end) = (self.kind.start_marker(), self.kind.end_marker());
        let buf = std::mem::take(&mut self.buf);
        let mut pos = 0;
        loop {
            let markers: &[&str] = match self.st {
                St::After => &[],
                St::Before => &[start],
                St::Thinking => &[start, end],
            };
            let cut = cut(&buf[pos..], markers, eof);
            self.emit(self.st == St::Thinking, cut.text);
            pos += cut.used;
            // `<think>` opens the reasoning (or, inside it, is dropped); `</think>` closes it
            // for good.
            match cut.marker.map(|which| markers[which]) {
                Some(marker) if marker == end => self.st = St::After,
                Some(_) => self.st = St::Thinking,
                None => break,
            }
        }
        self.buf = buf;
        self.buf.drain(..pos);
    }
}
