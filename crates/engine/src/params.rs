//! Per-request parameters and the events a request produces.

use crate::structured::StructuredRequest;
use lantern_runtime::SamplingParams;
use lantern_scheduler::LoraId;
use std::time::Instant;

/// Everything that controls one generation besides the prompt.
#[derive(Debug, Clone, PartialEq)]
///
/// A plain struct: [`GenerationParams::validate`] (in `validation`) turns it into the
/// [`ValidParams`](crate::ValidParams) the engine accepts.
pub struct GenerationParams {
    pub sampling: SamplingParams,
    /// Added to the logits before anything else (token, bias), sorted by token.
    pub logit_bias: Vec<(u32, f32)>,
    /// Log-probabilities of each sampled token with this many alternatives (None: none).
    pub logprobs: Option<usize>,
    /// Seed for sampling; a random one is drawn when absent.
    pub seed: Option<u64>,
    /// Maximum new tokens; `None` = up to the context length.
    pub max_tokens: Option<usize>,
    /// EOS and stop_token_ids are banned until this many tokens were produced.
    pub min_tokens: usize,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub skip_special_tokens: bool,
    pub include_stop_str_in_output: bool,
    /// Lower runs first with the priority policy.
    pub priority: i32,
    pub cache_salt: Option<String>,
    /// Number of completions for this prompt; they share the prompt's KV blocks.
    pub n: usize,
    /// Log-probabilities of the prompt tokens with this many alternatives (echo with
    /// logprobs). Such a prompt is computed in full (no prefix-cache hits).
    pub prompt_logprobs: Option<usize>,
    /// LoRA adapter from [`crate::EngineHandle::lora_id`]; `None` = the base model.
    pub lora_id: Option<LoraId>,
    /// Structured outputs: what the output must match (compiled when submitted).
    pub structured: Option<StructuredRequest>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            logit_bias: Vec::new(),
            logprobs: None,
            seed: None,
            max_tokens: None,
            min_tokens: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            skip_special_tokens: true,
            include_stop_str_in_output: false,
            priority: 0,
            cache_salt: None,
            n: 1,
            prompt_logprobs: None,
            lora_id: None,
            structured: None,
        }
    }
}

pub use lantern_scheduler::FinishReason;

/// One submitted request (one `submit`): its `n` completions are sequences
/// ([`lantern_scheduler::SeqId`]) of this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What exactly stopped a request (vLLM's `stop_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Eos(u32),
    StopToken(u32),
    StopString(String),
}

/// Log-probability information for one generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token_id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// New output for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDelta {
    /// Index of the completion (0..n).
    pub index: usize,
    /// Text safe to show now (may be empty while a multi-byte char or a possible stop
    /// string is held back).
    pub text: String,
    pub token_ids: Vec<u32>,
    /// One entry per token id when logprobs were asked for.
    pub logprobs: Vec<TokenLogprob>,
    pub time: Instant,
}

/// Token counts (OpenAI `usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// Server-side timings of one request (one sequence), and how often it was preempted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestTiming {
    pub arrival: Instant,
    pub first_scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
    /// When its latest token was sampled.
    pub last_token: Option<Instant>,
    pub finished: Instant,
    /// Times it lost its KV blocks to preemption and waited again.
    pub num_preemptions: u32,
}

impl RequestTiming {
    /// Seconds waiting before the first schedule.
    pub fn queue_s(&self) -> f64 {
        self.first_scheduled
            .map(|t| t.duration_since(self.arrival).as_secs_f64())
            .unwrap_or_else(|| self.finished.duration_since(self.arrival).as_secs_f64())
    }
    /// Seconds from first schedule to first token.
    pub fn prefill_s(&self) -> f64 {
        match (self.first_scheduled, self.first_token) {
            (Some(s), Some(f)) => f.duration_since(s).as_secs_f64(),
            _ => 0.0,
        }
    }
    /// Seconds from first token to finish.
    pub fn decode_s(&self) -> f64 {
        self.first_token
            .map(|f| self.finished.duration_since(f).as_secs_f64())
            .unwrap_or(0.0)
    }
    /// Seconds from the first token to the last one (0 without tokens).
    pub fn first_to_last_token_s(&self) -> f64 {
        match (self.first_token, self.last_token) {
            (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
            _ => 0.0,
        }
    }
    /// Seconds from the first schedule to the last token (0 without tokens).
    pub fn scheduled_to_last_token_s(&self) -> f64 {
        match (self.first_scheduled, self.last_token) {
            (Some(s), Some(l)) => l.saturating_duration_since(s).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// One event on a request's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestEvent {
    Delta(TokenDelta),
    /// One per completion index.
    Finished {
        index: usize,
        reason: FinishReason,
        stop_reason: Option<StopReason>,
        /// Any text released at the end (held-back bytes); may be empty.
        text: String,
        usage: Usage,
        timing: RequestTiming,
    },
    /// Prompt-token log-probabilities (sent once, before the first `Delta`, when asked for);
    /// the first prompt token has none.
    PromptLogprobs(Vec<Option<TokenLogprob>>),
    Error(crate::error::EngineError),
}
