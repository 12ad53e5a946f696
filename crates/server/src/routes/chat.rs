//! `POST /v1/chat/completions`: messages through the chat template, then the shared
//! generation path ([`output`](super::output)).

use super::output::{respond_with, submit_all, Kind, Shape};
use super::{body_bytes, check_model, encode, random_id, respond, unix_now, AppState, Ready};
use crate::error::ApiError;
use crate::generate::Generate;
use crate::protocol::{parse_body, ChatRequest};
use crate::validate::{chat_messages, generation_params};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;

pub async fn chat<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = chat_inner(&state, body).await;
    respond(&state, "/v1/chat/completions", r)
}

async fn chat_inner<G: Generate>(
    state: &Arc<AppState<G>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let req: ChatRequest = parse_body(&body_bytes(body)?)?;
    let lora_id = check_model(ready, &req.model)?;
    if let Some(tc) = &req.tool_choice {
        let ok = matches!(tc.as_str(), Some("none") | Some("auto"));
        if !ok {
            return Err(ApiError::bad_request(
                "forcing tool calls with `tool_choice` is not supported yet; use `auto` or `none`",
                Some("tool_choice"),
            ));
        }
    }
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (true, t) => Some(t.unwrap_or(0)),
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "`top_logprobs` requires `logprobs: true`",
                Some("top_logprobs"),
            ))
        }
        (false, None) => None,
    };
    let mut params = generation_params(
        &req.common,
        req.max_completion_tokens.or(req.max_tokens),
        logprobs,
    )?;
    params.lora_id = lora_id;
    let params = params.validate(&ready.engine.limits())?;
    let tools = match req.tool_choice.as_ref().and_then(|t| t.as_str()) {
        Some("none") => None,
        _ => req.tools.as_deref(),
    };
    let text = render_chat(
        ready,
        &req.messages,
        tools,
        req.add_generation_prompt.unwrap_or(true),
        req.chat_template_kwargs.as_ref(),
    )?;
    let ids = encode(ready, &text, false)?;
    let shape = Shape {
        kind: Kind::Chat,
        id: random_id("chatcmpl"),
        created: unix_now(),
        model: req.model.clone(),
        n: params.n,
        logprobs: logprobs.is_some(),
        tokens_as_ids: false,
        include_usage: req
            .common
            .stream_options
            .as_ref()
            .map(|o| o.include_usage)
            .unwrap_or(false),
        echo: None,
        prompt_lens: vec![ids.len()],
        echo_prompt_ids: None,
    };
    let streams = submit_all(ready, vec![ids], &params, "messages").await?;
    respond_with(
        state,
        ready,
        shape,
        streams,
        req.common.stream.unwrap_or(false),
    )
    .await
}

pub(super) fn render_chat<G: Generate>(
    ready: &Ready<G>,
    messages: &[Value],
    tools: Option<&[Value]>,
    add_generation_prompt: bool,
    kwargs: Option<&serde_json::Map<String, Value>>,
) -> Result<String, ApiError> {
    let template = ready.template.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "this model has no chat template; use /v1/completions or start the server with --chat-template FILE",
            Some("messages"),
        )
    })?;
    let msgs = chat_messages(messages)?;
    let empty = serde_json::Map::new();
    template
        .render(
            &msgs,
            tools,
            add_generation_prompt,
            kwargs.unwrap_or(&empty),
        )
        .map_err(|e| ApiError::bad_request(format!("chat template error: {e}"), Some("messages")))
}
