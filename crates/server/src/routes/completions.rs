//! `POST /v1/completions`: text or token-id prompts (one or many), `echo`, `logprobs`,
//! then the shared generation path ([`output`](super::output)).

use super::output::{respond_with, submit_all, Kind, Shape};
use super::{body_bytes, check_model, encode, random_id, respond, unix_now, AppState, Ready};
use crate::error::ApiError;
use crate::generate::Generate;
use crate::protocol::{parse_body, CompletionRequest, PromptField};
use crate::validate::generation_params;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use lantern_engine::validation::{check_prompt, MAX_N};
use lantern_engine::ValidParams;
use std::sync::Arc;

pub async fn completions<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = completions_inner(&state, body).await;
    respond(&state, "/v1/completions", r)
}

async fn completions_inner<G: Generate>(
    state: &Arc<AppState<G>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let body = body_bytes(body)?;
    let (stream, (prompts, params, shape)) = state
        .prepare_blocking(move |_, ready| {
            let req: CompletionRequest = parse_body(&body)?;
            let stream = req.common.stream.unwrap_or(false);
            Ok((stream, prepare(ready, req)?))
        })
        .await?;
    let streams = submit_all(ready, prompts, &params, "prompt").await?;
    respond_with(state, ready, shape, streams, stream).await
}

/// Everything up to submitting: each prompt's token ids, the validated parameters and the
/// response's shape (shared with `/v1/completions/render`).
pub(super) fn prepare<G: Generate>(
    ready: &Ready<G>,
    req: CompletionRequest,
) -> Result<(Vec<Vec<u32>>, ValidParams, Shape), ApiError> {
    let lora_id = check_model(ready, &req.model)?;
    if req.suffix.is_some() {
        return Err(ApiError::bad_request(
            "`suffix` is not supported",
            Some("suffix"),
        ));
    }
    let limits = ready.engine.limits();
    let echo_requested = req.echo.unwrap_or(false);
    let mut params = generation_params(
        &req.common,
        Some(req.max_tokens.unwrap_or(16)),
        req.logprobs,
        &ready.sampling_defaults,
    )?;
    params.lora_id = lora_id;
    if echo_requested {
        params.prompt_logprobs = req.logprobs;
    }
    let params = params.validate(&limits)?;
    let prompts: Vec<Vec<u32>> = match req.prompt {
        PromptField::Text(t) => vec![encode(ready, &t, true, "prompt")?],
        PromptField::Texts(ts) => ts
            .iter()
            .map(|t| encode(ready, t, true, "prompt"))
            .collect::<Result<_, _>>()?,
        PromptField::Ids(ids) => vec![ids],
        PromptField::IdLists(l) => l,
    };
    if prompts.is_empty() {
        return Err(ApiError::bad_request(
            "`prompt` must not be empty",
            Some("prompt"),
        ));
    }
    if prompts.len() * params.n > MAX_N {
        return Err(ApiError::bad_request(
            format!(
                "{} prompts x n {} = {} completions; at most {MAX_N} per request",
                prompts.len(),
                params.n,
                prompts.len() * params.n
            ),
            Some("prompt"),
        ));
    }
    // Every prompt is checked before any is submitted.
    for p in &prompts {
        check_prompt(p, &params, &limits)?;
    }
    let echo_prompt_ids = if echo_requested && req.logprobs.is_some() {
        Some(prompts.clone())
    } else {
        None
    };
    let echo = if echo_requested {
        Some(
            prompts
                .iter()
                .map(|p| {
                    ready
                        .engine
                        .tokenizer()
                        .decode(p, false)
                        .unwrap_or_default()
                })
                .collect(),
        )
    } else {
        None
    };
    let shape = Shape {
        kind: Kind::Completion,
        id: random_id("cmpl"),
        created: unix_now(),
        model: req.model.clone(),
        n: params.n,
        logprobs: req.logprobs.is_some(),
        tokens_as_ids: req.return_tokens_as_token_ids.unwrap_or(false),
        include_usage: req
            .common
            .stream_options
            .as_ref()
            .map(|o| o.include_usage)
            .unwrap_or(false),
        echo,
        prompt_lens: prompts.iter().map(Vec::len).collect(),
        echo_prompt_ids,
        plan: None,
    };
    Ok((prompts, params, shape))
}
