//! Turning OpenAI request fields into engine parameters. The conversion lives here; every
//! range check is the engine's one validator ([`lantern_engine::validation`]), whose
//! [`ValidationError`]s name the field and the bound.

use crate::error::ApiError;
use crate::protocol::CommonParams;
use lantern_engine::validation::{check_best_of, logit_bias_token, top_k_from_openai};
use lantern_engine::{GenerationParams, SamplingParams, ValidationError};

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::bad_request(e.to_string(), Some(e.field()))
    }
}

/// Maps the shared sampling fields (not yet validated: the route sets the adapter and
/// prompt logprobs, then calls [`GenerationParams::validate`]). `logprobs` is the number of
/// top alternatives wanted (None = no logprobs), already resolved from the endpoint's own
/// fields.
pub fn generation_params(
    c: &CommonParams,
    max_tokens: Option<usize>,
    logprobs: Option<usize>,
) -> Result<GenerationParams, ValidationError> {
    let d = SamplingParams::default();
    let n = c.n.unwrap_or(1);
    check_best_of(c.best_of, n)?;
    let mut logit_bias = Vec::new();
    if let Some(map) = &c.logit_bias {
        for (k, &v) in map {
            logit_bias.push((logit_bias_token(k)?, v));
        }
        logit_bias.sort_by_key(|x| x.0);
    }
    Ok(GenerationParams {
        sampling: SamplingParams {
            temperature: c.temperature.unwrap_or(d.temperature),
            top_k: top_k_from_openai(c.top_k.unwrap_or(0))?,
            top_p: c.top_p.unwrap_or(d.top_p),
            min_p: c.min_p.unwrap_or(d.min_p),
            repetition_penalty: c.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: c.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: c.frequency_penalty.unwrap_or(d.frequency_penalty),
        },
        logit_bias,
        logprobs,
        seed: c.seed.map(|s| s as u64),
        max_tokens,
        min_tokens: c.min_tokens.unwrap_or(0),
        stop: c.stop.clone().map(|s| s.into_vec()).unwrap_or_default(),
        stop_token_ids: c.stop_token_ids.clone().unwrap_or_default(),
        ignore_eos: c.ignore_eos.unwrap_or(false),
        skip_special_tokens: c.skip_special_tokens.unwrap_or(true),
        include_stop_str_in_output: c.include_stop_str_in_output.unwrap_or(false),
        priority: c.priority.unwrap_or(0),
        cache_salt: c.cache_salt.clone(),
        n,
        prompt_logprobs: None,
        // Set from `model` by the route.
        lora_id: None,
    })
}

/// Checks chat messages and flattens text-part arrays; images/audio are refused.
pub fn chat_messages(messages: &[serde_json::Value]) -> Result<Vec<serde_json::Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` must not be empty",
            Some("messages"),
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let obj = m.as_object().ok_or_else(|| {
            ApiError::bad_request(
                format!("`messages[{i}]` must be an object"),
                Some("messages"),
            )
        })?;
        let role = obj.get("role").and_then(|r| r.as_str()).ok_or_else(|| {
            ApiError::bad_request(format!("`messages[{i}].role` is missing"), Some("messages"))
        })?;
        let role = match role {
            "system" | "user" | "assistant" | "tool" => role,
            "developer" => "system",
            other => {
                return Err(ApiError::bad_request(
                    format!("`messages[{i}].role` `{other}` is not one of system, developer, user, assistant, tool"),
                    Some("messages"),
                ))
            }
        };
        let mut msg = obj.clone();
        msg.insert("role".into(), role.into());
        match obj.get("content") {
            None | Some(serde_json::Value::Null) => {
                if role != "assistant" {
                    return Err(ApiError::bad_request(
                        format!("`messages[{i}].content` is missing"),
                        Some("messages"),
                    ));
                }
                msg.insert("content".into(), "".into());
            }
            Some(serde_json::Value::String(_)) => {}
            Some(serde_json::Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    let ty = p.get("type").and_then(|t| t.as_str()).unwrap_or("");
                    match ty {
                        "text" | "input_text" => {
                            let t = p.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                                ApiError::bad_request(
                                    format!("`messages[{i}].content[{j}].text` must be a string"),
                                    Some("messages"),
                                )
                            })?;
                            text.push_str(t);
                        }
                        "image_url" | "input_image" | "image" | "input_audio" | "audio" | "file" | "video_url" => {
                            return Err(ApiError::bad_request(
                                format!("`messages[{i}].content[{j}]` is of type `{ty}`: this model accepts text only"),
                                Some("messages"),
                            ))
                        }
                        other => {
                            return Err(ApiError::bad_request(
                                format!("`messages[{i}].content[{j}].type` `{other}` is not supported (use `text`)"),
                                Some("messages"),
                            ))
                        }
                    }
                }
                msg.insert("content".into(), text.into());
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    format!("`messages[{i}].content` must be a string or an array of text parts"),
                    Some("messages"),
                ))
            }
        }
        out.push(serde_json::Value::Object(msg));
    }
    Ok(out)
}
