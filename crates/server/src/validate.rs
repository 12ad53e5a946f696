//! Turning OpenAI request fields into validated engine parameters ([`GenerationParams`]).
//! Every message names the field and the allowed range.

use crate::error::ApiError;
use crate::protocol::CommonParams;
use lantern_engine::{GenerationParams, SamplingParams};

fn range(field: &str, ok: bool, msg: String) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(msg, Some(field)))
    }
}

/// Maps the shared sampling fields. `logprobs` is the number of top alternatives wanted
/// (None = no logprobs), already resolved from the endpoint's own fields.
pub fn generation_params(
    c: &CommonParams,
    max_tokens: Option<usize>,
    logprobs: Option<usize>,
    vocab_size: usize,
) -> Result<GenerationParams, ApiError> {
    let temperature = c.temperature.unwrap_or(1.0);
    range(
        "temperature",
        temperature.is_finite() && (0.0..=2.0).contains(&temperature),
        format!("`temperature` must be between 0 and 2, got {temperature}"),
    )?;
    let top_p = c.top_p.unwrap_or(1.0);
    range(
        "top_p",
        top_p.is_finite() && top_p > 0.0 && top_p <= 1.0,
        format!("`top_p` must be > 0 and <= 1, got {top_p}"),
    )?;
    let top_k = c.top_k.unwrap_or(0);
    range(
        "top_k",
        top_k >= -1,
        format!("`top_k` must be -1 or 0 (disabled) or a positive integer, got {top_k}"),
    )?;
    let min_p = c.min_p.unwrap_or(0.0);
    range(
        "min_p",
        min_p.is_finite() && (0.0..=1.0).contains(&min_p),
        format!("`min_p` must be between 0 and 1, got {min_p}"),
    )?;
    let rep = c.repetition_penalty.unwrap_or(1.0);
    range(
        "repetition_penalty",
        rep.is_finite() && rep > 0.0 && rep <= 2.0,
        format!("`repetition_penalty` must be > 0 and <= 2, got {rep}"),
    )?;
    let pres = c.presence_penalty.unwrap_or(0.0);
    range(
        "presence_penalty",
        pres.is_finite() && (-2.0..=2.0).contains(&pres),
        format!("`presence_penalty` must be between -2 and 2, got {pres}"),
    )?;
    let freq = c.frequency_penalty.unwrap_or(0.0);
    range(
        "frequency_penalty",
        freq.is_finite() && (-2.0..=2.0).contains(&freq),
        format!("`frequency_penalty` must be between -2 and 2, got {freq}"),
    )?;
    let n = c.n.unwrap_or(1);
    range(
        "n",
        (1..=128).contains(&n),
        format!("`n` must be between 1 and 128, got {n}"),
    )?;
    if let Some(b) = c.best_of {
        range(
            "best_of",
            b == n,
            format!("`best_of` different from `n` is not supported (got best_of {b}, n {n})"),
        )?;
    }
    if let Some(m) = max_tokens {
        range(
            "max_tokens",
            m >= 1,
            format!("`max_tokens` must be at least 1, got {m}"),
        )?;
    }
    let min_tokens = c.min_tokens.unwrap_or(0);
    if let Some(m) = max_tokens {
        range(
            "min_tokens",
            min_tokens <= m,
            format!("`min_tokens` ({min_tokens}) must be <= `max_tokens` ({m})"),
        )?;
    }
    let mut logit_bias = Vec::new();
    if let Some(map) = &c.logit_bias {
        for (k, &v) in map {
            let tok: u32 = k.parse().map_err(|_| {
                ApiError::bad_request(
                    format!("`logit_bias` keys must be token ids, got `{k}`"),
                    Some("logit_bias"),
                )
            })?;
            range(
                "logit_bias",
                (tok as usize) < vocab_size,
                format!("`logit_bias` token id {tok} is out of the vocabulary (0..{vocab_size})"),
            )?;
            range(
                "logit_bias",
                v.is_finite() && (-100.0..=100.0).contains(&v),
                format!("`logit_bias` values must be between -100 and 100, got {v}"),
            )?;
            logit_bias.push((tok, v));
        }
        logit_bias.sort_by_key(|x| x.0);
    }
    if let Some(lp) = logprobs {
        range(
            "top_logprobs",
            lp <= 20,
            format!("the number of logprobs must be between 0 and 20, got {lp}"),
        )?;
    }
    let stop = c.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    range(
        "stop",
        stop.len() <= 16,
        format!("at most 16 stop sequences are allowed, got {}", stop.len()),
    )?;
    range(
        "stop",
        stop.iter().all(|s| !s.is_empty()),
        "stop sequences must not be empty".into(),
    )?;
    let stop_token_ids = c.stop_token_ids.clone().unwrap_or_default();
    for &t in &stop_token_ids {
        range(
            "stop_token_ids",
            (t as usize) < vocab_size,
            format!("`stop_token_ids` id {t} is out of the vocabulary (0..{vocab_size})"),
        )?;
    }
    if let Some(s) = &c.cache_salt {
        range(
            "cache_salt",
            !s.is_empty(),
            "`cache_salt` must not be empty".into(),
        )?;
    }
    Ok(GenerationParams {
        sampling: SamplingParams {
            temperature,
            top_k: if top_k <= 0 { 0 } else { top_k as usize },
            top_p,
            min_p,
            repetition_penalty: rep,
            presence_penalty: pres,
            frequency_penalty: freq,
            logit_bias,
            logprobs,
        },
        seed: c.seed.map(|s| s as u64),
        max_tokens,
        min_tokens,
        stop,
        stop_token_ids,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        skip_special_tokens: c.skip_special_tokens.unwrap_or(true),
        include_stop_str_in_output: c.include_stop_str_in_output.unwrap_or(false),
        priority: c.priority.unwrap_or(0),
        cache_salt: c.cache_salt.clone(),
        n,
        prompt_logprobs: None,
        // Set from `model` by the route.
        lora_id: 0,
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
