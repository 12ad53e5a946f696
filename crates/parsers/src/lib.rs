//! Lantern's model-output parsers, the counterparts of vLLM's `--tool-call-parser` and
//! `--reasoning-parser` options.
//!
//! * [`tool`] — finds tool calls in generated text (Hermes/Qwen `<tool_call>` blocks, Llama 3
//!   JSON, Mistral `[TOOL_CALLS]`, pythonic lists) and turns them into OpenAI-style calls, for a
//!   finished output ([`tool::extract`]) or incrementally while streaming
//!   ([`tool::ToolStreamParser`]). Also the parser for `tool_choice: "required"` output
//!   ([`tool::extract_required`], [`tool::RequiredStreamParser`]).
//! * [`reasoning`] — splits `<think>…</think>` reasoning from the answer, for a finished output
//!   ([`reasoning::split`]) or while streaming ([`reasoning::ReasoningStreamParser`]).
//!
//! Every streaming parser accepts its input in arbitrary pieces and gives, concatenated, the
//! same result as the one-shot function over the whole text: markers split across pieces are
//! held back until they are decided.

#![deny(missing_docs)]

mod scan;

pub mod reasoning;
pub mod tool;

use std::fmt;

/// A parser name that is not one of the known names (the `FromStr` error of
/// [`tool::ToolParserKind`] and [`reasoning::ReasoningParserKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownParser {
    /// Which kind of parser was asked for: `"tool call"` or `"reasoning"`.
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// The valid names.
    pub valid: Vec<&'static str>,
}

impl fmt::Display for UnknownParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} parser `{}` (valid: {})",
            self.what,
            self.name,
            self.valid.join(", ")
        )
    }
}

impl std::error::Error for UnknownParser {}

/// The kind among `all` whose `name` is `s`: the `FromStr` of the parser kinds; `what` names
/// the kind of parser in the error.
fn kind_from_name<K: Copy>(
    what: &'static str,
    all: &[K],
    name: fn(&K) -> &'static str,
    s: &str,
) -> Result<K, UnknownParser> {
    all.iter()
        .copied()
        .find(|k| name(k) == s)
        .ok_or_else(|| UnknownParser {
            what,
            name: s.to_owned(),
            valid: all.iter().map(name).collect(),
        })
}

/// The server keeps parsers in its response streams, which move between threads.
#[cfg(test)]
mod send {
    fn send<T: Send + 'static>() {}

    #[test]
    fn stream_parsers_are_send() {
        send::<crate::tool::ToolStreamParser>();
        send::<crate::tool::RequiredStreamParser>();
        send::<crate::reasoning::ReasoningStreamParser>();
    }
}
