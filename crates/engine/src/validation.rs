//! The one validator of request parameters (TGI's `ValidationError` is the model).
//!
//! The server converts an OpenAI body into [`GenerationParams`] (a plain struct; wire-format
//! quirks such as `top_k: -1` or string `logit_bias` keys go through the helpers here so that
//! their errors are [`ValidationError`]s too), then [`GenerationParams::validate`] checks every
//! range and returns [`ValidParams`], the only parameter type
//! [`EngineHandle::submit`](crate::EngineHandle::submit) accepts. The prompt is checked against
//! the same [`RequestLimits`] by [`check_prompt`] when it reaches the engine. Every bound is a
//! constant of this module, and every message names the field and the bound.

use crate::params::GenerationParams;
use std::ops::Deref;

/// Most completions (`n`, and prompts x `n` for a batch of prompts) per request.
pub const MAX_N: usize = 128;
/// Most alternatives per token (`top_logprobs`, completions' `logprobs`).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings per request.
pub const MAX_STOP_SEQUENCES: usize = 16;
/// `temperature` is in `0..=MAX_TEMPERATURE` (0 = greedy).
pub const MAX_TEMPERATURE: f32 = 2.0;
/// `repetition_penalty` is in `(0, MAX_REPETITION_PENALTY]`.
pub const MAX_REPETITION_PENALTY: f32 = 2.0;
/// `presence_penalty` and `frequency_penalty` are in `-MAX_PENALTY..=MAX_PENALTY`.
pub const MAX_PENALTY: f32 = 2.0;
/// `logit_bias` values are in `-MAX_LOGIT_BIAS..=MAX_LOGIT_BIAS`.
pub const MAX_LOGIT_BIAS: f32 = 100.0;

/// What a request is checked against: the served model's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub vocab_size: usize,
    /// Longest prompt + output, in tokens.
    pub max_model_len: usize,
}

/// A request parameter (or prompt) out of range. [`ValidationError::field`] is the request
/// field to blame (OpenAI's `param`); the message names the bound.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("`temperature` must be between 0 and {MAX_TEMPERATURE}, got {0}")]
    Temperature(f32),
    #[error("`top_p` must be > 0 and <= 1, got {0}")]
    TopP(f32),
    #[error("`top_k` must be -1 or 0 (disabled) or a positive integer, got {0}")]
    TopK(i64),
    #[error("`min_p` must be between 0 and 1, got {0}")]
    MinP(f32),
    #[error("`repetition_penalty` must be > 0 and <= {MAX_REPETITION_PENALTY}, got {0}")]
    RepetitionPenalty(f32),
    #[error("`presence_penalty` must be between -{MAX_PENALTY} and {MAX_PENALTY}, got {0}")]
    PresencePenalty(f32),
    #[error("`frequency_penalty` must be between -{MAX_PENALTY} and {MAX_PENALTY}, got {0}")]
    FrequencyPenalty(f32),
    #[error("`n` must be between 1 and {MAX_N}, got {0}")]
    N(usize),
    #[error("`best_of` different from `n` is not supported (got best_of {best_of}, n {n})")]
    BestOf { best_of: usize, n: usize },
    #[error("`max_tokens` must be at least 1, got {0}")]
    MaxTokens(usize),
    #[error("`min_tokens` ({min_tokens}) must be <= `max_tokens` ({max_tokens})")]
    MinTokens {
        min_tokens: usize,
        max_tokens: usize,
    },
    #[error("`logit_bias` keys must be token ids, got `{0}`")]
    LogitBiasKey(String),
    #[error("`logit_bias` token id {token} is out of the vocabulary (0..{vocab_size})")]
    LogitBiasToken { token: u32, vocab_size: usize },
    #[error("`logit_bias` values must be between -{MAX_LOGIT_BIAS} and {MAX_LOGIT_BIAS}, got {0}")]
    LogitBiasValue(f32),
    #[error("the number of logprobs must be between 0 and {MAX_LOGPROBS}, got {0}")]
    Logprobs(usize),
    #[error("prompt logprobs must be between 0 and {MAX_LOGPROBS}, got {0}")]
    PromptLogprobs(usize),
    #[error("at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {0}")]
    StopCount(usize),
    #[error("stop sequences must not be empty")]
    EmptyStop,
    #[error("`stop_token_ids` id {token} is out of the vocabulary (0..{vocab_size})")]
    StopTokenId { token: u32, vocab_size: usize },
    #[error("`cache_salt` must not be empty")]
    EmptyCacheSalt,
    /// A structured-output request (`response_format`, `structured_outputs`, `guided_*`)
    /// that cannot be compiled: an invalid schema, regex or grammar, a JSON-schema feature
    /// the grammar engine does not enforce, or one over its size limits.
    #[error("`{field}`: {reason}")]
    Grammar { field: &'static str, reason: String },
    #[error("the prompt is empty; send at least one token")]
    EmptyPrompt,
    #[error("token id {token} is out of the vocabulary (0..{vocab_size})")]
    TokenId { token: u32, vocab_size: usize },
    /// Prompt + `max_tokens` (1 when absent) exceed the context.
    #[error("{}", too_long_message(*.max_model_len, *.prompt_tokens, *.max_tokens))]
    TooLong {
        max_model_len: usize,
        prompt_tokens: usize,
        max_tokens: Option<usize>,
    },
}

fn too_long_message(max_len: usize, prompt: usize, max_tokens: Option<usize>) -> String {
    match max_tokens {
        Some(m) => format!(
            "this model's maximum context length is {max_len} tokens, but the request has {prompt} prompt tokens and max_tokens {m} ({} in total); shorten the prompt or lower max_tokens",
            prompt.saturating_add(m)
        ),
        None => format!(
            "this model's maximum context length is {max_len} tokens, but the prompt has {prompt} tokens; shorten the prompt"
        ),
    }
}

impl ValidationError {
    /// The request field to blame. Prompt errors say `prompt`; the chat endpoint blames
    /// `messages` instead.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Temperature(_) => "temperature",
            Self::TopP(_) => "top_p",
            Self::TopK(_) => "top_k",
            Self::MinP(_) => "min_p",
            Self::RepetitionPenalty(_) => "repetition_penalty",
            Self::PresencePenalty(_) => "presence_penalty",
            Self::FrequencyPenalty(_) => "frequency_penalty",
            Self::N(_) => "n",
            Self::BestOf { .. } => "best_of",
            Self::MaxTokens(_) => "max_tokens",
            Self::MinTokens { .. } => "min_tokens",
            Self::LogitBiasKey(_) | Self::LogitBiasToken { .. } | Self::LogitBiasValue(_) => {
                "logit_bias"
            }
            Self::Logprobs(_) => "top_logprobs",
            Self::PromptLogprobs(_) => "logprobs",
            Self::StopCount(_) | Self::EmptyStop => "stop",
            Self::StopTokenId { .. } => "stop_token_ids",
            Self::EmptyCacheSalt => "cache_salt",
            Self::Grammar { field, .. } => field,
            Self::EmptyPrompt | Self::TokenId { .. } | Self::TooLong { .. } => "prompt",
        }
    }

    /// Whether the error is about the prompt (blamed on the endpoint's prompt field).
    pub fn is_prompt_error(&self) -> bool {
        self.field() == "prompt"
    }
}

/// OpenAI / vLLM `top_k` (`-1` or `0` = disabled) as the sampler's (`0` = disabled).
pub fn top_k_from_openai(top_k: i64) -> Result<usize, ValidationError> {
    match top_k {
        ..=-2 => Err(ValidationError::TopK(top_k)),
        -1..=0 => Ok(0),
        k => usize::try_from(k).map_err(|_| ValidationError::TopK(top_k)),
    }
}

/// A `logit_bias` map key (a token id as a string).
pub fn logit_bias_token(key: &str) -> Result<u32, ValidationError> {
    key.parse()
        .map_err(|_| ValidationError::LogitBiasKey(key.to_string()))
}

/// `best_of` must equal `n` (no server-side ranking).
pub fn check_best_of(best_of: Option<usize>, n: usize) -> Result<(), ValidationError> {
    match best_of {
        Some(b) if b != n => Err(ValidationError::BestOf { best_of: b, n }),
        _ => Ok(()),
    }
}

/// Every id of `ids` is in the vocabulary.
pub fn check_token_ids(ids: &[u32], vocab_size: usize) -> Result<(), ValidationError> {
    match ids.iter().find(|&&t| t as usize >= vocab_size) {
        Some(&token) => Err(ValidationError::TokenId { token, vocab_size }),
        None => Ok(()),
    }
}

/// The prompt is non-empty, in the vocabulary, and with `max_tokens` (1 when absent) fits
/// the context.
pub fn check_prompt(
    prompt: &[u32],
    params: &ValidParams,
    limits: &RequestLimits,
) -> Result<(), ValidationError> {
    if prompt.is_empty() {
        return Err(ValidationError::EmptyPrompt);
    }
    check_token_ids(prompt, limits.vocab_size)?;
    let max_tokens = params.max_tokens;
    // Saturating: `max_tokens` is the client's number (2^64 - 1 must not wrap to a small one).
    if prompt.len().saturating_add(max_tokens.unwrap_or(1)) > limits.max_model_len {
        return Err(ValidationError::TooLong {
            max_model_len: limits.max_model_len,
            prompt_tokens: prompt.len(),
            max_tokens,
        });
    }
    Ok(())
}

/// [`GenerationParams`] that passed [`GenerationParams::validate`]; read through `Deref`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidParams(GenerationParams);

impl Deref for ValidParams {
    type Target = GenerationParams;
    fn deref(&self) -> &GenerationParams {
        &self.0
    }
}

impl ValidParams {
    pub fn into_inner(self) -> GenerationParams {
        self.0
    }
}

fn ensure(ok: bool, e: impl FnOnce() -> ValidationError) -> Result<(), ValidationError> {
    if ok {
        Ok(())
    } else {
        Err(e())
    }
}

impl GenerationParams {
    /// Checks every range against the bounds of this module and the model's vocabulary.
    pub fn validate(self, limits: &RequestLimits) -> Result<ValidParams, ValidationError> {
        use ValidationError as E;
        let vocab_size = limits.vocab_size;
        let s = &self.sampling;
        let t = s.temperature;
        ensure(
            t.is_finite() && (0.0..=MAX_TEMPERATURE).contains(&t),
            || E::Temperature(t),
        )?;
        let p = s.top_p;
        ensure(p.is_finite() && p > 0.0 && p <= 1.0, || E::TopP(p))?;
        let m = s.min_p;
        ensure(m.is_finite() && (0.0..=1.0).contains(&m), || E::MinP(m))?;
        let r = s.repetition_penalty;
        ensure(
            r.is_finite() && r > 0.0 && r <= MAX_REPETITION_PENALTY,
            || E::RepetitionPenalty(r),
        )?;
        let pp = s.presence_penalty;
        ensure(
            pp.is_finite() && (-MAX_PENALTY..=MAX_PENALTY).contains(&pp),
            || E::PresencePenalty(pp),
        )?;
        let fp = s.frequency_penalty;
        ensure(
            fp.is_finite() && (-MAX_PENALTY..=MAX_PENALTY).contains(&fp),
            || E::FrequencyPenalty(fp),
        )?;
        ensure((1..=MAX_N).contains(&self.n), || E::N(self.n))?;
        if let Some(m) = self.max_tokens {
            ensure(m >= 1, || E::MaxTokens(m))?;
            ensure(self.min_tokens <= m, || E::MinTokens {
                min_tokens: self.min_tokens,
                max_tokens: m,
            })?;
        }
        for &(token, bias) in &self.logit_bias {
            ensure((token as usize) < vocab_size, || E::LogitBiasToken {
                token,
                vocab_size,
            })?;
            ensure(
                bias.is_finite() && (-MAX_LOGIT_BIAS..=MAX_LOGIT_BIAS).contains(&bias),
                || E::LogitBiasValue(bias),
            )?;
        }
        if let Some(n) = self.logprobs {
            ensure(n <= MAX_LOGPROBS, || E::Logprobs(n))?;
        }
        if let Some(n) = self.prompt_logprobs {
            ensure(n <= MAX_LOGPROBS, || E::PromptLogprobs(n))?;
        }
        ensure(self.stop.len() <= MAX_STOP_SEQUENCES, || {
            E::StopCount(self.stop.len())
        })?;
        ensure(self.stop.iter().all(|s| !s.is_empty()), || E::EmptyStop)?;
        for &token in &self.stop_token_ids {
            ensure((token as usize) < vocab_size, || E::StopTokenId {
                token,
                vocab_size,
            })?;
        }
        if let Some(salt) = &self.cache_salt {
            ensure(!salt.is_empty(), || E::EmptyCacheSalt)?;
        }
        Ok(ValidParams(self))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lantern_runtime::SamplingParams;

    const LIMITS: RequestLimits = RequestLimits {
        vocab_size: 100,
        max_model_len: 64,
    };

    fn err(f: impl FnOnce(&mut GenerationParams)) -> ValidationError {
        let mut p = GenerationParams::default();
        f(&mut p);
        p.validate(&LIMITS).unwrap_err()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(GenerationParams::default().validate(&LIMITS).is_ok());
    }

    #[test]
    fn each_bound_names_its_field() {
        let cases: Vec<(ValidationError, &str, &str)> = vec![
            (
                err(|p| p.sampling.temperature = 2.5),
                "temperature",
                "between 0 and 2",
            ),
            (
                err(|p| p.sampling.temperature = f32::NAN),
                "temperature",
                "NaN",
            ),
            (err(|p| p.sampling.top_p = 0.0), "top_p", "> 0 and <= 1"),
            (err(|p| p.sampling.min_p = 1.5), "min_p", "between 0 and 1"),
            (
                err(|p| p.sampling.repetition_penalty = 0.0),
                "repetition_penalty",
                "<= 2",
            ),
            (
                err(|p| p.sampling.presence_penalty = -3.0),
                "presence_penalty",
                "-2 and 2",
            ),
            (
                err(|p| p.sampling.frequency_penalty = 3.0),
                "frequency_penalty",
                "-2 and 2",
            ),
            (err(|p| p.n = 0), "n", "between 1 and 128"),
            (err(|p| p.n = 129), "n", "got 129"),
            (err(|p| p.max_tokens = Some(0)), "max_tokens", "at least 1"),
            (
                err(|p| {
                    p.max_tokens = Some(3);
                    p.min_tokens = 4;
                }),
                "min_tokens",
                "(4) must be <= `max_tokens` (3)",
            ),
            (
                err(|p| p.logit_bias = vec![(100, 1.0)]),
                "logit_bias",
                "(0..100)",
            ),
            (
                err(|p| p.logit_bias = vec![(1, 101.0)]),
                "logit_bias",
                "-100 and 100",
            ),
            (
                err(|p| p.logprobs = Some(21)),
                "top_logprobs",
                "between 0 and 20",
            ),
            (
                err(|p| p.prompt_logprobs = Some(21)),
                "logprobs",
                "between 0 and 20",
            ),
            (err(|p| p.stop = vec!["x".into(); 17]), "stop", "at most 16"),
            (
                err(|p| p.stop = vec![String::new()]),
                "stop",
                "must not be empty",
            ),
            (
                err(|p| p.stop_token_ids = vec![100]),
                "stop_token_ids",
                "id 100",
            ),
            (
                err(|p| p.cache_salt = Some(String::new())),
                "cache_salt",
                "empty",
            ),
        ];
        for (e, field, needle) in cases {
            assert_eq!(e.field(), field, "{e}");
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn wire_helpers() {
        assert_eq!(top_k_from_openai(-1).unwrap(), 0);
        assert_eq!(top_k_from_openai(0).unwrap(), 0);
        assert_eq!(top_k_from_openai(40).unwrap(), 40);
        assert_eq!(top_k_from_openai(-2).unwrap_err().field(), "top_k");
        assert_eq!(logit_bias_token("17").unwrap(), 17);
        assert_eq!(logit_bias_token("x").unwrap_err().field(), "logit_bias");
        assert!(check_best_of(Some(2), 2).is_ok());
        assert_eq!(check_best_of(Some(3), 2).unwrap_err().field(), "best_of");
    }

    #[test]
    fn prompts_are_checked_against_the_limits() {
        let p = GenerationParams {
            max_tokens: Some(10),
            sampling: SamplingParams::greedy(),
            ..GenerationParams::default()
        }
        .validate(&LIMITS)
        .unwrap();
        assert!(check_prompt(&[1, 2], &p, &LIMITS).is_ok());
        assert_eq!(
            check_prompt(&[], &p, &LIMITS).unwrap_err(),
            ValidationError::EmptyPrompt
        );
        let e = check_prompt(&[1, 100], &p, &LIMITS).unwrap_err();
        assert_eq!((e.field(), e.is_prompt_error()), ("prompt", true));
        let e = check_prompt(&[1; 60], &p, &LIMITS).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("64") && m.contains("70"), "{m}");
        // Issue 14, defect 8: a client's huge max_tokens must not wrap around.
        let huge = GenerationParams {
            max_tokens: Some(usize::MAX),
            sampling: SamplingParams::greedy(),
            ..GenerationParams::default()
        }
        .validate(&LIMITS)
        .unwrap();
        let e = check_prompt(&[1, 2], &huge, &LIMITS).unwrap_err();
        assert!(matches!(e, ValidationError::TooLong { .. }), "{e:?}");
        assert!(e.to_string().contains(&usize::MAX.to_string()), "{e}");
    }
}
