//! From generated text to an assistant message: the reasoning (`--reasoning-parser`), the
//! content, and the tool calls (`--tool-call-parser`, or the JSON a forced `tool_choice`
//! constrained the output to).
//!
//! [`OutputPlan::message`] parses a whole output (non-streamed responses);
//! [`ChoiceStreamer`] does the same incrementally, one choice of a streamed response: the
//! reasoning parser sees the text first, and the tool parser sees only what it calls
//! content. Both give the same result for the same text (the parsers guarantee it for
//! every chunking).

use crate::tools::ToolMode;
use lantern_parsers::reasoning::{
    self, ReasoningDelta, ReasoningParserKind, ReasoningStreamParser,
};
use lantern_parsers::tool::{self, RequiredStreamParser, ToolCall, ToolDelta, ToolStreamParser};

/// How a chat request's output is split into reasoning, content and tool calls.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    /// The reasoning parser, and whether the prompt already opened the thinking block.
    pub reasoning: Option<(ReasoningParserKind, bool)>,
    /// `include_reasoning: false` drops the reasoning from the response.
    pub include_reasoning: bool,
    pub tools: ToolMode,
    /// `parallel_tool_calls: false`: only the first call is returned.
    pub single_call: bool,
}

/// A tool call as returned to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOut {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A parsed assistant message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub reasoning: Option<String>,
    pub content: Option<String>,
    pub tool_calls: Vec<CallOut>,
}

/// A tool call id: `chatcmpl-tool-` and 32 random hex digits (vLLM's form).
pub fn call_id() -> String {
    format!("chatcmpl-tool-{:032x}", rand::random::<u128>())
}

fn call_out(c: ToolCall) -> CallOut {
    CallOut {
        id: call_id(),
        name: c.name,
        arguments: c.arguments,
    }
}

impl OutputPlan {
    /// Plain text in, plain content out (no parser has anything to do).
    pub fn is_plain(&self) -> bool {
        self.reasoning.is_none() && self.tools == ToolMode::Off
    }

    /// Whether the finish reason of a choice with calls becomes `tool_calls` (OpenAI keeps
    /// `stop` when one named function was forced).
    pub fn reports_tool_calls(&self) -> bool {
        !matches!(self.tools, ToolMode::Named(_))
    }

    /// Parses a whole output.
    pub fn message(&self, text: &str) -> Parsed {
        let (reasoning, content) = match self.reasoning {
            Some((kind, opened)) => {
                let s = reasoning::split(kind, text, opened);
                (s.reasoning, s.content.unwrap_or_default())
            }
            None => (None, text.to_string()),
        };
        let reasoning = reasoning.filter(|_| self.include_reasoning);
        let (content, mut calls) = match &self.tools {
            ToolMode::Off => (Some(content), Vec::new()),
            ToolMode::Auto(kind) => {
                let e = tool::extract(*kind, &content);
                let calls: Vec<CallOut> = e.calls.into_iter().map(call_out).collect();
                let content = if calls.is_empty() {
                    Some(content)
                } else {
                    Some(e.content).filter(|c| !c.trim().is_empty())
                };
                (content, calls)
            }
            ToolMode::Required => match tool::extract_required(&content) {
                Some(calls) => (None, calls.into_iter().map(call_out).collect()),
                // Cut off (or otherwise not a complete array): what was generated stays
                // visible as content.
                None => (Some(content), Vec::new()),
            },
            ToolMode::Named(name) => {
                if content.trim().is_empty() {
                    (None, Vec::new())
                } else {
                    let call = CallOut {
                        id: call_id(),
                        name: name.clone(),
                        arguments: content,
                    };
                    (None, vec![call])
                }
            }
        };
        if self.single_call {
            calls.truncate(1);
        }
        Parsed {
            reasoning,
            content,
            tool_calls: calls,
        }
    }

    pub fn streamer(&self) -> ChoiceStreamer {
        ChoiceStreamer {
            reasoning: self
                .reasoning
                .map(|(k, opened)| ReasoningStreamParser::new(k, opened)),
            include_reasoning: self.include_reasoning,
            tools: match &self.tools {
                ToolMode::Off => ToolStream::Off,
                ToolMode::Auto(k) => ToolStream::Auto(ToolStreamParser::new(*k)),
                ToolMode::Required => ToolStream::Required(RequiredStreamParser::new()),
                ToolMode::Named(n) => ToolStream::Named {
                    name: n.clone(),
                    started: false,
                },
            },
            ids: Vec::new(),
            single_call: self.single_call,
        }
    }
}

/// One piece of a streamed assistant message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Reasoning(String),
    Content(String),
    /// A new call: sent once, before its arguments.
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    CallArguments {
        index: usize,
        text: String,
    },
}

enum ToolStream {
    Off,
    Auto(ToolStreamParser),
    Required(RequiredStreamParser),
    Named { name: String, started: bool },
}

/// The incremental parser of one streamed choice.
pub struct ChoiceStreamer {
    reasoning: Option<ReasoningStreamParser>,
    include_reasoning: bool,
    tools: ToolStream,
    /// The id given to each call, by index.
    ids: Vec<String>,
    single_call: bool,
}

impl ChoiceStreamer {
    /// Whether a tool call was started.
    pub fn called(&self) -> bool {
        !self.ids.is_empty()
    }

    /// The parts of newly generated `text`.
    pub fn push(&mut self, text: &str) -> Vec<Part> {
        let split = match self.reasoning.as_mut() {
            Some(r) => r.push(text),
            None => vec![ReasoningDelta::Content(text.to_string())],
        };
        self.route(split)
    }

    /// The end of the output: whatever the parsers held back.
    pub fn finish(&mut self) -> Vec<Part> {
        let split = match self.reasoning.as_mut() {
            Some(r) => r.finish(),
            None => Vec::new(),
        };
        let mut out = self.route(split);
        let tail = match &mut self.tools {
            ToolStream::Auto(p) => p.finish(),
            ToolStream::Required(p) => p.finish(),
            ToolStream::Off | ToolStream::Named { .. } => Vec::new(),
        };
        out.extend(self.tool_parts(tail));
        out
    }

    fn route(&mut self, split: Vec<ReasoningDelta>) -> Vec<Part> {
        let mut out = Vec::new();
        for d in split {
            match d {
                ReasoningDelta::Reasoning(r) => {
                    if self.include_reasoning && !r.is_empty() {
                        out.push(Part::Reasoning(r));
                    }
                }
                ReasoningDelta::Content(c) => {
                    let deltas = match &mut self.tools {
                        ToolStream::Off => vec![ToolDelta::Content(c)],
                        ToolStream::Auto(p) => p.push(&c),
                        ToolStream::Required(p) => p.push(&c),
                        ToolStream::Named { name, started } => {
                            let mut v = Vec::new();
                            if !*started && !c.trim().is_empty() {
                                *started = true;
                                v.push(ToolDelta::Start {
                                    index: 0,
                                    name: name.clone(),
                                });
                            }
                            if *started {
                                v.push(ToolDelta::Arguments { index: 0, text: c });
                            }
                            v
                        }
                    };
                    out.extend(self.tool_parts(deltas));
                }
            }
        }
        out
    }

    fn tool_parts(&mut self, deltas: Vec<ToolDelta>) -> Vec<Part> {
        let mut out = Vec::new();
        for d in deltas {
            match d {
                ToolDelta::Content(c) => {
                    if !c.is_empty() {
                        out.push(Part::Content(c));
                    }
                }
                ToolDelta::Start { index, name } => {
                    if self.single_call && index > 0 {
                        continue;
                    }
                    let id = call_id();
                    if self.ids.len() <= index {
                        self.ids.resize(index + 1, String::new());
                    }
                    self.ids[index] = id.clone();
                    out.push(Part::CallStart { index, id, name });
                }
                ToolDelta::Arguments { index, text } => {
                    if (self.single_call && index > 0) || text.is_empty() {
                        continue;
                    }
                    out.push(Part::CallArguments { index, text });
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lantern_parsers::tool::ToolParserKind;

    fn plan(reasoning: bool, tools: ToolMode) -> OutputPlan {
        OutputPlan {
            reasoning: reasoning.then_some((ReasoningParserKind::Qwen3, false)),
            include_reasoning: true,
            tools,
            single_call: false,
        }
    }

    /// Streams `text` in chunks of `k` characters and folds the parts into a message.
    fn stream(p: &OutputPlan, text: &str, k: usize) -> Parsed {
        let mut s = p.streamer();
        let chars: Vec<char> = text.chars().collect();
        let mut parts = Vec::new();
        for c in chars.chunks(k) {
            parts.extend(s.push(&c.iter().collect::<String>()));
        }
        parts.extend(s.finish());
        let mut m = Parsed::default();
        for part in parts {
            match part {
                Part::Reasoning(r) => m.reasoning.get_or_insert_with(String::new).push_str(&r),
                Part::Content(c) => m.content.get_or_insert_with(String::new).push_str(&c),
                Part::CallStart { id, name, .. } => m.tool_calls.push(CallOut {
                    id,
                    name,
                    arguments: String::new(),
                }),
                Part::CallArguments { index, text } => {
                    m.tool_calls[index].arguments.push_str(&text)
                }
            }
        }
        m
    }

    fn without_ids(mut m: Parsed) -> Parsed {
        for c in &mut m.tool_calls {
            c.id.clear();
        }
        m
    }

    #[test]
    fn reasoning_then_hermes_calls_stream_like_the_whole_text() {
        let text = "<think>\nThe user wants weather.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let p = plan(true, ToolMode::Auto(ToolParserKind::Hermes));
        let whole = without_ids(p.message(text));
        assert_eq!(
            whole.reasoning.as_deref(),
            Some("\nThe user wants weather.\n")
        );
        assert_eq!(whole.tool_calls.len(), 1);
        assert_eq!(whole.tool_calls[0].name, "get_weather");
        assert_eq!(whole.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert!(!whole
            .content
            .clone()
            .unwrap_or_default()
            .contains("tool_call"));
        for k in [1, 2, 3, 7, 1000] {
            let mut s = without_ids(stream(&p, text, k));
            // Streamed content is what the parser let through, untrimmed.
            s.content = s
                .content
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty());
            let mut w = whole.clone();
            w.content = w.content.map(|c| c.trim().to_string());
            assert_eq!(s, w, "chunk {k}");
        }
    }

    #[test]
    fn named_choice_is_one_call_with_the_output_as_arguments() {
        let p = plan(false, ToolMode::Named("now".into()));
        let m = p.message(r#"{"tz":"UTC"}"#);
        assert_eq!(m.content, None);
        assert_eq!(m.tool_calls[0].name, "now");
        assert_eq!(m.tool_calls[0].arguments, r#"{"tz":"UTC"}"#);
        assert_eq!(
            without_ids(stream(&p, r#"{"tz":"UTC"}"#, 2)),
            without_ids(m)
        );
        assert!(!p.reports_tool_calls());
    }

    #[test]
    fn required_calls_parse_and_single_call_keeps_the_first() {
        let mut p = plan(false, ToolMode::Required);
        let text = r#"[{"name":"a","parameters":{"x":1}},{"name":"b","parameters":{}}]"#;
        let m = p.message(text);
        assert_eq!(m.tool_calls.len(), 2);
        assert_eq!(m.tool_calls[1].name, "b");
        assert_eq!(m.content, None);
        assert_eq!(without_ids(stream(&p, text, 3)), without_ids(m));
        p.single_call = true;
        assert_eq!(p.message(text).tool_calls.len(), 1);
        assert_eq!(stream(&p, text, 3).tool_calls.len(), 1);
        // Cut off: the text stays content.
        let cut = r#"[{"name":"a","param"#;
        assert_eq!(p.message(cut).content.as_deref(), Some(cut));
    }

    #[test]
    fn off_and_no_reasoning_is_plain() {
        let p = plan(false, ToolMode::Off);
        assert!(p.is_plain());
        let m = p.message("<tool_call>{}</tool_call>");
        assert_eq!(m.content.as_deref(), Some("<tool_call>{}</tool_call>"));
        assert!(m.tool_calls.is_empty());
    }
}
