//! vLLM's render endpoints: `POST /v1/chat/completions/render` and
//! `POST /v1/completions/render` take the same bodies as the generation endpoints and return
//! what the engine would generate from (token ids and resolved sampling parameters, vLLM's
//! `GenerateRequest` shape) without generating, so a router can tokenize exactly as the
//! engine does.

use super::{body_bytes, chat, completions, respond, AppState};
use crate::error::ApiError;
use crate::generate::Generate;
use crate::protocol::{
    parse_body, ChatRequest, CompletionRequest, RenderedRequest, RenderedSampling,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lantern_engine::{StructuredOutput, ValidParams};
use serde_json::json;
use std::sync::Arc;

fn rendered(
    request_id: String,
    token_ids: Vec<u32>,
    p: &ValidParams,
    model: &str,
    stream: bool,
    max_model_len: usize,
) -> RenderedRequest {
    let s = &p.sampling;
    let structured_outputs = p.structured.as_ref().map(|r| match &r.spec {
        StructuredOutput::JsonSchema(v) => json!({ "json": v }),
        StructuredOutput::JsonObject => json!({ "json_object": true }),
        StructuredOutput::Regex(r) => json!({ "regex": r }),
        StructuredOutput::Choice(c) => json!({ "choice": c }),
        StructuredOutput::Lark(g) => json!({ "grammar": g }),
    });
    let max_tokens = p
        .max_tokens
        .unwrap_or_else(|| max_model_len.saturating_sub(token_ids.len()));
    RenderedRequest {
        request_id,
        sampling_params: RenderedSampling {
            n: p.n,
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
            repetition_penalty: s.repetition_penalty,
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            min_p: s.min_p,
            seed: p.seed,
            stop: p.stop.clone(),
            stop_token_ids: p.stop_token_ids.clone(),
            ignore_eos: p.ignore_eos,
            max_tokens,
            min_tokens: p.min_tokens,
            logprobs: p.logprobs,
            prompt_logprobs: p.prompt_logprobs,
            skip_special_tokens: p.skip_special_tokens,
            include_stop_str_in_output: p.include_stop_str_in_output,
            logit_bias: (!p.logit_bias.is_empty()).then(|| p.logit_bias.iter().copied().collect()),
            structured_outputs,
        },
        token_ids,
        model: model.to_string(),
        stream,
        cache_salt: p.cache_salt.clone(),
        priority: p.priority,
    }
}

pub async fn chat_render<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = match body_bytes(body) {
        Err(e) => Err(e),
        Ok(body) => {
            state
                .prepare_blocking(move |state, ready| {
                    let req: ChatRequest = parse_body(&body)?;
                    let (ids, params, shape) = chat::prepare(state, ready, &req)?;
                    let out = rendered(
                        shape.id,
                        ids,
                        &params,
                        &req.model,
                        req.common.stream.unwrap_or(false),
                        ready.engine.max_model_len(),
                    );
                    Ok::<_, ApiError>(Json(out).into_response())
                })
                .await
        }
    };
    respond(&state, "/v1/chat/completions/render", r)
}

pub async fn completions_render<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = match body_bytes(body) {
        Err(e) => Err(e),
        Ok(body) => {
            state
                .prepare_blocking(move |_, ready| {
                    let req: CompletionRequest = parse_body(&body)?;
                    let model = req.model.clone();
                    let stream = req.common.stream.unwrap_or(false);
                    let (prompts, params, shape) = completions::prepare(ready, req)?;
                    let many = prompts.len() > 1;
                    let out: Vec<RenderedRequest> = prompts
                        .into_iter()
                        .enumerate()
                        .map(|(i, ids)| {
                            let id = if many {
                                format!("{}-{i}", shape.id)
                            } else {
                                shape.id.clone()
                            };
                            rendered(
                                id,
                                ids,
                                &params,
                                &model,
                                stream,
                                ready.engine.max_model_len(),
                            )
                        })
                        .collect();
                    Ok::<_, ApiError>(Json(out).into_response())
                })
                .await
        }
    };
    respond(&state, "/v1/completions/render", r)
}
