//! vLLM's `POST /tokenize` (a prompt, or chat messages through the chat template) and
//! `POST /detokenize`.

use super::chat::prompt_text;
use super::{body_bytes, check_model, encode, AppState, Ready};
use crate::error::ApiError;
use crate::generate::Generate;
use crate::protocol::{
    parse_body, DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use std::sync::Arc;

pub async fn tokenize<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    state.ready()?;
    let body = body_bytes(body)?;
    state
        .prepare_blocking(move |_, ready| tokenize_body(ready, &body))
        .await
        .map(Json)
}

fn tokenize_body<G: Generate>(ready: &Ready<G>, body: &[u8]) -> Result<TokenizeResponse, ApiError> {
    let req: TokenizeRequest = parse_body(body)?;
    let (model, ids, strs) = match req {
        TokenizeRequest::Chat {
            model,
            messages,
            add_generation_prompt,
            add_special_tokens,
            chat_template_kwargs,
            tools,
            tool_choice,
            continue_final_message,
            return_token_strs,
        } => {
            // Tools are rendered as a chat request renders them (not with "none").
            let tools = tools.filter(|_| tool_choice.as_ref().is_none_or(|c| c != "none"));
            let text = prompt_text(
                ready,
                &messages,
                tools.as_deref().filter(|t| !t.is_empty()),
                add_generation_prompt,
                continue_final_message.unwrap_or(false),
                chat_template_kwargs.as_ref(),
            )?;
            (
                model,
                encode(
                    ready,
                    &text,
                    add_special_tokens.unwrap_or(false),
                    "messages",
                )?,
                return_token_strs.unwrap_or(false),
            )
        }
        TokenizeRequest::Completion {
            model,
            prompt,
            add_special_tokens,
            return_token_strs,
        } => (
            model,
            encode(ready, &prompt, add_special_tokens.unwrap_or(true), "prompt")?,
            return_token_strs.unwrap_or(false),
        ),
    };
    if let Some(m) = &model {
        check_model(ready, m)?;
    }
    let token_strs = strs.then(|| {
        let tok = ready.engine.tokenizer();
        ids.iter().map(|&i| tok.id_to_token(i)).collect()
    });
    Ok(TokenizeResponse {
        count: ids.len(),
        max_model_len: ready.engine.max_model_len(),
        tokens: ids,
        token_strs,
    })
}

pub async fn detokenize<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    state.ready()?;
    let body = body_bytes(body)?;
    state
        .prepare_blocking(move |_, ready| {
            let req: DetokenizeRequest = parse_body(&body)?;
            if let Some(m) = &req.model {
                check_model(ready, m)?;
            }
            lantern_engine::validation::check_token_ids(&req.tokens, ready.engine.vocab_size())
                .map_err(|e| ApiError::bad_request(e.to_string(), Some("tokens")))?;
            let text = ready
                .engine
                .tokenizer()
                .decode(&req.tokens, false)
                .map_err(|_| {
                    ApiError::bad_request("these tokens cannot be decoded", Some("tokens"))
                })?;
            Ok(Json(DetokenizeResponse { prompt: text }))
        })
        .await
}
