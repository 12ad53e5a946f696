//! Response bodies and SSE stream chunks.
//!
//! The wire format is exactly what these types serialize to:
//! - field order is key order (this crate's `serde_json` has `preserve_order`);
//! - an `Option` field is written as `null` when `None`, unless it is marked
//!   `skip_serializing_if`, which is used exactly where a key is left out;
//! - `Option<Option<T>>` (with `skip_serializing_if`) is a key that is absent (`None`),
//!   `null` (`Some(None)`) or a value;
//! - log-probabilities are `f64` widened from the engine's `f32` (as they always were on
//!   the wire); a non-finite number is written as `null`.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Every error answer: `{"error": {"message", "type", "param", "code"}}` (also sent inside
/// SSE streams).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    /// The HTTP status code.
    pub code: u16,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthResponse {
    pub status: &'static str,
}

/// `GET /debug/kv_cache_blocks` (`--enable-debug-endpoints`): the blocks in the prefix
/// cache, by the 64-bit ids KV-cache events publish.
#[derive(Debug, Clone, Serialize)]
pub struct KvCacheBlocksResponse {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Ascending.
    pub block_hashes: Vec<u64>,
    pub kv_events_enabled: bool,
    /// Sequence number of the last KV-event batch sent before this answer (`null`: none).
    pub last_event_seq: Option<u64>,
    pub kv_events_dropped: u64,
}

/// `POST /reset_prefix_cache` (`--enable-debug-endpoints`).
#[derive(Debug, Clone, Serialize)]
pub struct ResetPrefixCacheResponse {
    pub reset: bool,
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize)]
pub struct VersionResponse {
    pub version: &'static str,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// One served model or loaded LoRA adapter.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: String,
    /// Always `"model"`.
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: String,
    /// The base model's name for an adapter; `null` for the base model.
    pub parent: Option<String>,
    pub max_model_len: usize,
}

/// `POST /tokenize`.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    /// Only with `return_token_strs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_strs: Option<Vec<Option<String>>>,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

/// `POST /v1/chat/completions/render` (one) and `POST /v1/completions/render` (one per
/// prompt): what the engine would generate from, in vLLM's `GenerateRequest` shape, so a
/// router tokenizes exactly as the engine does.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedRequest {
    pub request_id: String,
    pub token_ids: Vec<u32>,
    pub sampling_params: RenderedSampling,
    pub model: String,
    pub stream: bool,
    pub cache_salt: Option<String>,
    pub priority: i32,
}

/// The request's sampling parameters under vLLM's `SamplingParams` names (defaults filled
/// in; `max_tokens` resolved against the context length).
#[derive(Debug, Clone, Serialize)]
pub struct RenderedSampling {
    pub n: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub repetition_penalty: f32,
    pub temperature: f32,
    pub top_p: f32,
    /// 0: no top-k filter.
    pub top_k: usize,
    pub min_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub max_tokens: usize,
    pub min_tokens: usize,
    pub logprobs: Option<usize>,
    pub prompt_logprobs: Option<usize>,
    pub skip_special_tokens: bool,
    pub include_stop_str_in_output: bool,
    /// Token id (as a string key, as JSON requires) -> bias; `null` when none.
    pub logit_bias: Option<std::collections::BTreeMap<u32, f32>>,
    /// vLLM's `structured_outputs` (`json`, `regex`, `choice`, `grammar`, `json_object`).
    pub structured_outputs: Option<serde_json::Value>,
}

/// A non-streamed chat completion (`C` = [`ChatChoice`]) or text completion
/// (`C` = [`CompletionChoice`]).
#[derive(Debug, Clone, Serialize)]
pub struct CompletionResponse<C> {
    pub id: String,
    /// `"chat.completion"` or `"text_completion"`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<C>,
    pub usage: UsageInfo,
    /// Lantern's server-side timing of the request (absent if no choice finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lantern_timing: Option<Timing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReasonValue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    /// Always `"assistant"`.
    pub role: &'static str,
    /// `null` when the output was only tool calls (or only reasoning).
    pub content: Option<String>,
    /// Always `null` (present because OpenAI's schema requires the key).
    pub refusal: Option<String>,
    /// The thinking of a reasoning model (`--reasoning-parser`), under vLLM's older name;
    /// absent without reasoning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The same, under vLLM's newer name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCallOut>,
}

/// One tool call of an assistant message.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallOut {
    pub id: String,
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCallOut,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionCallOut {
    pub name: String,
    /// The arguments as a JSON text (an object).
    pub arguments: String,
}

/// A piece of a streamed tool call: the first carries `id`, `type` and the name, later
/// ones pieces of the arguments.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReasonValue>,
}

/// One SSE chunk of a streamed chat completion (`C` = [`ChatChunkChoice`]) or text
/// completion (`C` = [`CompletionChunkChoice`]). The last chunk with
/// `stream_options.include_usage` has no choices and carries the usage.
#[derive(Debug, Clone, Serialize)]
pub struct StreamChunk<C> {
    pub id: String,
    /// `"chat.completion.chunk"` or `"text_completion"`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<C>,
    /// Absent without `include_usage`; with it, `null` on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageInfo>>,
    /// Only on the final usage chunk (when a choice finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lantern_timing: Option<Timing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
    /// Only on the finishing chunk of a choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Option<StopReasonValue>>,
}

/// `{"role": "assistant", "content": ""}` first, then `{"content": ...}` (or reasoning,
/// or tool-call pieces), then `{}` with the finish reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChunkChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
    /// Only on the finishing chunk of a choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Option<StopReasonValue>>,
}

/// OpenAI `usage`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageInfo {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// `lantern_timing`: seconds queued, in prefill, in decode (server side).
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub queue_s: f64,
    pub prefill_s: f64,
    pub decode_s: f64,
}

/// vLLM's `stop_reason`: the stop string or stop token id that ended a choice (`null`,
/// as `Option::None`, for EOS, length and abort).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StopReasonValue {
    Text(String),
    Token(u32),
}

/// Chat `logprobs`: `{"content": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f64,
    /// The UTF-8 bytes of `token`, as numbers.
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

/// Completions `logprobs` (the legacy parallel-array form). With `echo`, the prompt's
/// first token has `null` for its logprob and its alternatives.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f64>>,
    pub top_logprobs: Vec<Option<TopLogprobs>>,
    /// Character (not byte) offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// Appends `other`'s entries after this one's.
    pub fn extend(&mut self, other: CompletionLogprobs) {
        self.tokens.extend(other.tokens);
        self.token_logprobs.extend(other.token_logprobs);
        self.top_logprobs.extend(other.top_logprobs);
        self.text_offset.extend(other.text_offset);
    }
}

/// A completions `top_logprobs` entry: a JSON object from token string to logprob, in
/// the order the strings first appeared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobs(Vec<(String, f64)>);

impl TopLogprobs {
    /// Adds `token` with `logprob`. Distinct ids can decode to the same string (lone
    /// UTF-8 bytes all decode to U+FFFD): a repeated string keeps its place and the best
    /// logprob, where a non-finite one (written as `null`) counts as no logprob.
    pub fn insert_best(&mut self, token: String, logprob: f64) {
        match self.0.iter_mut().find(|(t, _)| *t == token) {
            None => self.0.push((token, logprob)),
            Some((_, old)) => {
                if !old.is_finite() || logprob > *old {
                    *old = logprob;
                }
            }
        }
    }

    pub fn entries(&self) -> &[(String, f64)] {
        &self.0
    }
}

impl Serialize for TopLogprobs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn top_logprobs_keep_first_place_and_best_value() {
        let mut t = TopLogprobs::default();
        t.insert_best("a".into(), -2.0);
        t.insert_best("b".into(), -1.0);
        t.insert_best("a".into(), -0.5);
        t.insert_best("b".into(), -3.0);
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":-0.5,"b":-1.0}"#);
        // A non-finite logprob is `null` on the wire and loses to any later one.
        let mut t = TopLogprobs::default();
        t.insert_best("x".into(), f64::NEG_INFINITY);
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"x":null}"#);
        t.insert_best("x".into(), -7.0);
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"x":-7.0}"#);
    }

    #[test]
    fn optional_keys_are_absent_null_or_set() {
        let chunk = |usage| StreamChunk::<CompletionChunkChoice> {
            id: "cmpl-1".into(),
            object: "text_completion",
            created: 7,
            model: "m".into(),
            choices: vec![],
            usage,
            lantern_timing: None,
        };
        assert_eq!(
            serde_json::to_string(&chunk(None)).unwrap(),
            r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"m","choices":[]}"#
        );
        assert_eq!(
            serde_json::to_string(&chunk(Some(None))).unwrap(),
            r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"m","choices":[],"usage":null}"#
        );
        let d = ChatChunkChoice {
            index: 0,
            delta: ChatDelta::default(),
            logprobs: None,
            finish_reason: Some("stop"),
            stop_reason: Some(Some(StopReasonValue::Token(2))),
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop","stop_reason":2}"#
        );
    }
}
