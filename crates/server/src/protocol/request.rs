//! OpenAI (and vLLM-extension) request bodies. They are parsed with
//! [`parse_body`](super::parse_body), which names the offending field in a 400.

use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by chat and completions (OpenAI + vLLM extensions).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CommonParams {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<usize>,
    pub stop: Option<StopField>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub seed: Option<i64>,
    pub user: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    // vLLM extensions
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub min_tokens: Option<usize>,
    pub ignore_eos: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub include_stop_str_in_output: Option<bool>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub priority: Option<i32>,
    pub cache_salt: Option<String>,
    pub best_of: Option<usize>,
    // Structured outputs: OpenAI's `response_format`, vLLM's `structured_outputs` and the
    // older `guided_*` fields (see `validate::structured_request`).
    pub response_format: Option<serde_json::Value>,
    pub structured_outputs: Option<serde_json::Value>,
    pub guided_json: Option<serde_json::Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_grammar: Option<String>,
    pub guided_whitespace_pattern: Option<String>,
    pub guided_decoding_backend: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<serde_json::Value>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: Option<serde_json::Value>,
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    pub add_generation_prompt: Option<bool>,
    /// Continue the final (assistant) message instead of starting a new one (vLLM).
    pub continue_final_message: Option<bool>,
    /// `false`: at most one tool call.
    pub parallel_tool_calls: Option<bool>,
    /// `false`: leave the reasoning out of the response (vLLM).
    pub include_reasoning: Option<bool>,
    /// Prepend the final message's content to the output when it is the assistant's
    /// (vLLM's chat `echo`, with `continue_final_message`).
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// `prompt`: a string, strings, token ids, or arrays of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptField,
    pub max_tokens: Option<usize>,
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub return_tokens_as_token_ids: Option<bool>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenizeRequest {
    Chat {
        model: Option<String>,
        messages: Vec<serde_json::Value>,
        add_generation_prompt: Option<bool>,
        add_special_tokens: Option<bool>,
        chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
        /// Rendered into the prompt like in a chat request, so counts match generation.
        tools: Option<Vec<serde_json::Value>>,
        tool_choice: Option<serde_json::Value>,
        continue_final_message: Option<bool>,
        return_token_strs: Option<bool>,
    },
    Completion {
        model: Option<String>,
        prompt: String,
        add_special_tokens: Option<bool>,
        return_token_strs: Option<bool>,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

/// vLLM's `POST /v1/load_lora_adapter` body.
#[derive(Debug, Clone, Deserialize)]
pub struct LoadLoraRequest {
    pub lora_name: Option<String>,
    pub lora_path: Option<String>,
}

/// vLLM's `POST /v1/unload_lora_adapter` body.
#[derive(Debug, Clone, Deserialize)]
pub struct UnloadLoraRequest {
    pub lora_name: Option<String>,
}
