//! Per-request parameters and the events a request produces.

use crate::error::SubmitError;
use lantern_runtime::SamplingParams;
use std::time::Instant;

/// Everything that controls one generation besides the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
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
    /// LoRA adapter id from [`crate::EngineHandle::lora_id`]; 0 = the base model.
    pub lora_id: u32,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
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
            lora_id: 0,
        }
    }
}

/// A parameter out of range.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub field: &'static str,
    pub message: String,
}

impl From<ParamError> for SubmitError {
    fn from(e: ParamError) -> Self {
        SubmitError::InvalidParam {
            field: e.field.to_string(),
            message: e.message,
        }
    }
}

fn bad(field: &'static str, message: String) -> Result<(), ParamError> {
    Err(ParamError { field, message })
}

impl GenerationParams {
    /// Checks every range; messages name the field and the allowed range.
    pub fn validate(&self, vocab_size: usize) -> Result<(), ParamError> {
        let s = &self.sampling;
        if !(s.temperature.is_finite() && (0.0..=2.0).contains(&s.temperature)) {
            return bad(
                "temperature",
                format!(
                    "`temperature` must be between 0 and 2, got {}",
                    s.temperature
                ),
            );
        }
        if !(s.top_p.is_finite() && s.top_p > 0.0 && s.top_p <= 1.0) {
            return bad(
                "top_p",
                format!("`top_p` must be > 0 and <= 1, got {}", s.top_p),
            );
        }
        if !(s.min_p.is_finite() && (0.0..=1.0).contains(&s.min_p)) {
            return bad(
                "min_p",
                format!("`min_p` must be between 0 and 1, got {}", s.min_p),
            );
        }
        if !(s.repetition_penalty.is_finite()
            && s.repetition_penalty > 0.0
            && s.repetition_penalty <= 2.0)
        {
            return bad(
                "repetition_penalty",
                format!(
                    "`repetition_penalty` must be > 0 and <= 2, got {}",
                    s.repetition_penalty
                ),
            );
        }
        if !(s.presence_penalty.is_finite() && (-2.0..=2.0).contains(&s.presence_penalty)) {
            return bad(
                "presence_penalty",
                format!(
                    "`presence_penalty` must be between -2 and 2, got {}",
                    s.presence_penalty
                ),
            );
        }
        if !(s.frequency_penalty.is_finite() && (-2.0..=2.0).contains(&s.frequency_penalty)) {
            return bad(
                "frequency_penalty",
                format!(
                    "`frequency_penalty` must be between -2 and 2, got {}",
                    s.frequency_penalty
                ),
            );
        }
        for &(tok, bias) in &s.logit_bias {
            if tok as usize >= vocab_size {
                return bad(
                    "logit_bias",
                    format!(
                        "`logit_bias` token id {tok} is out of the vocabulary (0..{vocab_size})"
                    ),
                );
            }
            if !(bias.is_finite() && (-100.0..=100.0).contains(&bias)) {
                return bad("logit_bias", format!("`logit_bias` values must be between -100 and 100, got {bias} for token {tok}"));
            }
        }
        if let Some(n) = s.logprobs {
            if n > 20 {
                return bad(
                    "top_logprobs",
                    format!("`top_logprobs` must be between 0 and 20, got {n}"),
                );
            }
        }
        if let Some(n) = self.prompt_logprobs {
            if n > 20 {
                return bad(
                    "logprobs",
                    format!("prompt logprobs must be between 0 and 20, got {n}"),
                );
            }
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens", "`max_tokens` must be at least 1".to_string());
        }
        if let Some(m) = self.max_tokens {
            if self.min_tokens > m {
                return bad(
                    "min_tokens",
                    format!(
                        "`min_tokens` ({}) must be <= `max_tokens` ({m})",
                        self.min_tokens
                    ),
                );
            }
        }
        if self.n == 0 || self.n > 128 {
            return bad(
                "n",
                format!("`n` must be between 1 and 128, got {}", self.n),
            );
        }
        if self.stop.len() > 16 {
            return bad(
                "stop",
                format!(
                    "at most 16 stop strings are allowed, got {}",
                    self.stop.len()
                ),
            );
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return bad("stop", "stop strings must not be empty".to_string());
        }
        for &t in &self.stop_token_ids {
            if t as usize >= vocab_size {
                return bad(
                    "stop_token_ids",
                    format!("token id {t} is out of the vocabulary (0..{vocab_size})"),
                );
            }
        }
        Ok(())
    }
}

/// Why a request finished (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// max_tokens or the context length.
    Length,
    /// Cancelled (client went away, or shutdown).
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
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

/// Server-side timings of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestTiming {
    pub arrival: Instant,
    pub first_scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
    pub finished: Instant,
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
