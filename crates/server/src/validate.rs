//! Turning OpenAI request fields into engine parameters. The conversion lives here; every
//! range check is the engine's one validator ([`lantern_engine::validation`]), whose
//! [`ValidationError`]s name the field and the bound.

use crate::defaults::SamplingDefaults;
use crate::error::ApiError;
use crate::protocol::CommonParams;
use lantern_engine::validation::{check_best_of, logit_bias_token, top_k_from_openai};
use lantern_engine::{
    GenerationParams, SamplingParams, StructuredOutput, StructuredRequest, ValidationError,
};
use serde_json::Value;

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
    defaults: &SamplingDefaults,
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
            temperature: c
                .temperature
                .or(defaults.temperature)
                .unwrap_or(d.temperature),
            top_k: top_k_from_openai(c.top_k.or(defaults.top_k).unwrap_or(0))?,
            top_p: c.top_p.or(defaults.top_p).unwrap_or(d.top_p),
            min_p: c.min_p.or(defaults.min_p).unwrap_or(d.min_p),
            repetition_penalty: c
                .repetition_penalty
                .or(defaults.repetition_penalty)
                .unwrap_or(d.repetition_penalty),
            presence_penalty: c.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: c.frequency_penalty.unwrap_or(d.frequency_penalty),
        },
        logit_bias,
        logprobs,
        seed: c.seed.map(|s| s as u64),
        max_tokens: max_tokens.or(defaults.max_tokens),
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
        structured: structured_request(c)?,
    })
}

fn bad(field: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError::Grammar {
        field,
        reason: reason.into(),
    }
}

/// The structured-output constraint of a request, with vLLM's precedence: `structured_outputs`
/// wins over the older `guided_*` fields (which are then ignored), and `response_format`
/// (`json_object` / `json_schema`) adds to it. More than one kind of constraint, or a field
/// this server does not implement, is an error naming the field.
pub fn structured_request(c: &CommonParams) -> Result<Option<StructuredRequest>, ValidationError> {
    let mut found: Vec<StructuredRequest> = Vec::new();
    let mut push = |field, spec| {
        found.push(StructuredRequest {
            spec,
            field,
            after: None,
        })
    };
    if let Some(so) = &c.structured_outputs {
        let obj = so
            .as_object()
            .ok_or_else(|| bad("structured_outputs", "must be an object"))?;
        for (k, v) in obj {
            match k.as_str() {
                "json" => push("structured_outputs", json_spec("structured_outputs", v)?),
                "regex" => push(
                    "structured_outputs",
                    StructuredOutput::Regex(string_field("structured_outputs", "regex", v)?),
                ),
                "choice" => push(
                    "structured_outputs",
                    StructuredOutput::Choice(choices("structured_outputs", v)?),
                ),
                "grammar" => push(
                    "structured_outputs",
                    StructuredOutput::Lark(string_field("structured_outputs", "grammar", v)?),
                ),
                "json_object" => {
                    if v.as_bool() == Some(true) {
                        push("structured_outputs", StructuredOutput::JsonObject);
                    }
                }
                // Accepted and meaningless here: there is one backend and no fallback.
                "backend" | "disable_fallback" => {}
                "disable_any_whitespace" => {
                    if v.as_bool() == Some(false) {
                        return Err(bad(
                            "structured_outputs",
                            "`disable_any_whitespace: false` is not supported: JSON output is always compact",
                        ));
                    }
                }
                other => {
                    return Err(bad(
                        "structured_outputs",
                        format!("`{other}` is not supported (use json, regex, choice, grammar or json_object)"),
                    ))
                }
            }
        }
    } else {
        if let Some(v) = &c.guided_json {
            push("guided_json", json_spec("guided_json", v)?);
        }
        if let Some(rx) = &c.guided_regex {
            push("guided_regex", StructuredOutput::Regex(rx.clone()));
        }
        if let Some(ch) = &c.guided_choice {
            if ch.is_empty() {
                return Err(bad("guided_choice", "the list of choices is empty"));
            }
            push("guided_choice", StructuredOutput::Choice(ch.clone()));
        }
        if let Some(g) = &c.guided_grammar {
            push("guided_grammar", StructuredOutput::Lark(g.clone()));
        }
        if c.guided_whitespace_pattern.is_some() {
            return Err(bad(
                "guided_whitespace_pattern",
                "is not supported: JSON output is always compact",
            ));
        }
    }
    if let Some(b) = &c.guided_decoding_backend {
        if !matches!(b.as_str(), "auto" | "guidance" | "llguidance") {
            return Err(bad(
                "guided_decoding_backend",
                format!("`{b}` is not available; this server uses llguidance"),
            ));
        }
    }
    if let Some(rf) = &c.response_format {
        let ty = rf.get("type").and_then(|t| t.as_str()).unwrap_or("");
        match ty {
            "text" => {}
            "json_object" => push("response_format", StructuredOutput::JsonObject),
            "json_schema" => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .ok_or_else(|| {
                        bad(
                            "response_format",
                            "`json_schema.schema` is missing (send {\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}})",
                        )
                    })?;
                push("response_format", json_spec("response_format", schema)?);
            }
            other => {
                return Err(bad(
                    "response_format",
                    format!(
                        "type `{other}` is not supported (use text, json_object or json_schema)"
                    ),
                ))
            }
        }
    }
    if found.len() > 1 {
        let fields: Vec<&str> = found.iter().map(|f| f.field).collect();
        return Err(bad(
            found[0].field,
            format!(
                "only one kind of structured-output constraint can be used per request, got {} (from {})",
                found.len(),
                fields.join(", ")
            ),
        ));
    }
    Ok(found.pop())
}

/// A JSON schema given as an object (or a JSON string holding one, as vLLM accepts).
fn json_spec(field: &'static str, v: &Value) -> Result<StructuredOutput, ValidationError> {
    let schema = match v {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| bad(field, format!("the JSON schema is not valid JSON: {e}")))?,
        Value::Object(_) | Value::Bool(_) => v.clone(),
        _ => return Err(bad(field, "the JSON schema must be an object")),
    };
    Ok(StructuredOutput::JsonSchema(schema))
}

fn string_field(field: &'static str, key: &str, v: &Value) -> Result<String, ValidationError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(field, format!("`{key}` must be a string")))
}

fn choices(field: &'static str, v: &Value) -> Result<Vec<String>, ValidationError> {
    let list: Vec<String> = v
        .as_array()
        .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect())
        .ok_or_else(|| bad(field, "`choice` must be an array of strings"))?;
    if list.is_empty() {
        return Err(bad(field, "the list of choices is empty"));
    }
    Ok(list)
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
                            // Parts are joined by newlines, as vLLM does.
                            if j > 0 {
                                text.push('\n');
                            }
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
