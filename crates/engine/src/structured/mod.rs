//! Structured outputs: constrained decoding with `llguidance` (the grammar engine vLLM,
//! SGLang and llama.cpp use).
//!
//! - [`StructuredOutput`] is what a request asks for (a JSON schema, any JSON object, a
//!   regex, one of some strings, or a Lark grammar); the server fills it from
//!   `response_format` / `structured_outputs` / `guided_*`.
//! - [`GrammarCompiler`] (one per engine, built on first use) holds the model's token trie
//!   and llguidance's parser factory; [`GrammarCompiler::compile`] turns a request's spec
//!   into a [`Grammar`] on the caller's thread (never the engine thread), within
//!   llguidance's fuel limits, or into a [`ValidationError::Grammar`] naming the field.
//! - [`Constraint`] is one sequence's matcher. Each step it gives the allowed tokens as a
//!   bitmask (one bit per token, 32 per `u32`, the layout a device sampler can apply) and
//!   then consumes the sampled token; EOS is allowed only where the grammar may end, and a
//!   finished grammar ends the sequence.
//!
//! A matcher holds the generated tokens only, not KV, so preemption and recompute leave it
//! as it is; `n > 1` completions each get their own copy.

mod token_env;

use crate::validation::ValidationError;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use tokenizers::Tokenizer;

/// What a request's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum StructuredOutput {
    /// A JSON document valid against this JSON schema.
    JsonSchema(Value),
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A full match of this regex (Rust `regex` syntax).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
}

/// Where the structured-output request came from, for error messages (`param`).
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredRequest {
    pub spec: StructuredOutput,
    /// The request field that asked for it (`response_format`, `structured_outputs`,
    /// `guided_json`, ...).
    pub field: &'static str,
    /// Reasoning models: the constraint applies only after the output contains this token
    /// sequence (the end of the thinking, e.g. `</think>`); the thinking itself is free.
    /// `None`: the constraint applies from the first token.
    pub after: Option<Vec<u32>>,
}

/// Why structured outputs cannot be used with this model at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StructuredError {
    #[error("structured outputs are not supported for this model: {0}")]
    Unsupported(String),
}

impl StructuredOutput {
    fn grammar(&self) -> Result<TopLevelGrammar, String> {
        Ok(match self {
            Self::JsonSchema(schema) => {
                let mut schema = schema.clone();
                let obj = schema
                    .as_object_mut()
                    .ok_or("the JSON schema must be an object")?;
                // Compact JSON: no free whitespace between tokens (small models otherwise
                // tend to loop on it). A client's own `x-guidance` options win.
                let mut options = json!({ "whitespace_flexible": false });
                if let Some(user) = obj.get("x-guidance") {
                    llguidance::json_merge(&mut options, user);
                }
                obj.insert("x-guidance".into(), options);
                TopLevelGrammar::from_json_schema(schema)
            }
            Self::JsonObject => TopLevelGrammar::from_json_schema(json!({
                "type": "object",
                "x-guidance": { "whitespace_flexible": false }
            })),
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Self::Choice(choices) => {
                if choices.is_empty() {
                    return Err("the list of choices is empty".into());
                }
                let alts: Vec<String> = choices
                    .iter()
                    .map(|c| serde_json::to_string(c).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?;
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
            Self::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        })
    }
}

/// A compiled grammar, ready to constrain sequences (each gets its own [`Constraint`]).
#[derive(Clone)]
pub struct Grammar {
    matcher: Matcher,
    words: usize,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar")
            .field("words", &self.words)
            .finish()
    }
}

impl Grammar {
    /// A fresh matcher for one sequence; it waits for `after` (if any) before it
    /// constrains anything.
    pub(crate) fn constraint(&self, after: Option<&[u32]>) -> Constraint {
        Constraint {
            matcher: self.matcher.deep_clone(),
            words: self.words,
            gate: after.filter(|a| !a.is_empty()).map(|a| Gate {
                marker: a.to_vec(),
                recent: Vec::with_capacity(a.len()),
            }),
        }
    }
}

/// Holds a constraint back until the output contains `marker` (the end of the reasoning).
#[derive(Debug, Clone)]
struct Gate {
    marker: Vec<u32>,
    /// The last `marker.len()` tokens generated.
    recent: Vec<u32>,
}

impl Gate {
    /// Records a generated token; true once the output ends with the marker.
    fn push(&mut self, token: u32) -> bool {
        if self.recent.len() == self.marker.len() {
            self.recent.remove(0);
        }
        self.recent.push(token);
        self.recent == self.marker
    }
}

/// The model's token trie and llguidance's parser factory, built on first use (it walks
/// the whole vocabulary once).
pub struct GrammarCompiler {
    tokenizer: Arc<Tokenizer>,
    n_vocab: usize,
    eos: Vec<u32>,
    factory: OnceLock<Result<Arc<ParserFactory>, StructuredError>>,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("n_vocab", &self.n_vocab)
            .field("eos", &self.eos)
            .finish()
    }
}

impl GrammarCompiler {
    pub fn new(tokenizer: Arc<Tokenizer>, n_vocab: usize, eos: Vec<u32>) -> Self {
        Self {
            tokenizer,
            n_vocab,
            eos,
            factory: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&Arc<ParserFactory>, StructuredError> {
        self.factory
            .get_or_init(|| {
                let env = token_env::token_env(&self.tokenizer, self.n_vocab, &self.eos)?;
                let mut f = ParserFactory::new_simple(&env)
                    .map_err(|e| StructuredError::Unsupported(format!("{e:#}")))?;
                f.quiet();
                f.limits_mut().verbose_errors = false;
                Ok(Arc::new(f))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Compiles a request's grammar. Errors name the request field and say what is wrong
    /// (an invalid schema or regex, an unsupported keyword, a grammar over the limits).
    pub fn compile(&self, req: &StructuredRequest) -> Result<Grammar, ValidationError> {
        let bad = |reason: String| ValidationError::Grammar {
            field: req.field,
            reason,
        };
        let factory = self.factory().map_err(|e| bad(e.to_string()))?;
        let grammar = req.spec.grammar().map_err(bad)?;
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| bad(format!("{e:#}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad(e));
        }
        // Some grammars compile but cannot produce a first token with this vocabulary
        // (e.g. a `multipleOf` range llguidance cannot extend): try the first mask here, so
        // that is a 400 and not a failure after the request was accepted.
        let mut probe = matcher.deep_clone();
        if let Err(e) = probe.compute_mask_or_eos() {
            return Err(bad(format!(
                "the grammar cannot be followed from its start with this model's tokenizer: {e:#}"
            )));
        }
        Ok(Grammar {
            matcher,
            words: self.n_vocab.div_ceil(32),
        })
    }
}

/// What consuming a sampled token did to a sequence's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More tokens may follow.
    Continue,
    /// The grammar is complete (the token was its last, or an allowed EOS).
    Done,
}

/// One sequence's matcher.
pub(crate) struct Constraint {
    matcher: Matcher,
    words: usize,
    /// Still waiting for the end of the reasoning: nothing is constrained yet.
    gate: Option<Gate>,
}

impl Constraint {
    /// The tokens allowed next, as a bitmask of `vocab.div_ceil(32)` words; `None` while
    /// the constraint waits for the end of the reasoning (every token allowed).
    pub fn allowed(&mut self) -> Result<Option<Vec<u32>>, String> {
        if self.gate.is_some() {
            return Ok(None);
        }
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| format!("{e:#}"))?;
        let mut words = mask.as_slice().to_vec();
        words.resize(self.words, 0);
        Ok(Some(words))
    }

    /// Advances the grammar over the sampled `token` (`is_eos`: it ends generation).
    pub fn consume(&mut self, token: u32, is_eos: bool) -> Result<Progress, String> {
        if let Some(g) = self.gate.as_mut() {
            // Reasoning: free text; the grammar starts after the marker's last token.
            if g.push(token) {
                self.gate = None;
            }
            return Ok(Progress::Continue);
        }
        if is_eos && self.matcher.is_stopped() {
            // Complete already: EOS is the only token allowed, and is not fed to it.
            return Ok(Progress::Done);
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| format!("{e:#}"))?;
        Ok(if self.matcher.is_stopped() {
            Progress::Done
        } else {
            Progress::Continue
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn choice_grammar_quotes_each_alternative() {
        let g = StructuredOutput::Choice(vec!["a\"b".into(), "c".into()]);
        assert!(g.grammar().is_ok());
        assert!(StructuredOutput::Choice(vec![]).grammar().is_err());
        assert!(StructuredOutput::JsonSchema(json!(true)).grammar().is_err());
    }

    #[test]
    fn the_gate_opens_right_after_the_whole_marker() {
        let mut g = Gate {
            marker: vec![7, 8],
            recent: Vec::new(),
        };
        assert!(!g.push(8));
        assert!(!g.push(7));
        assert!(!g.push(7));
        assert!(g.push(8));
    }
}
