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
    let continue_final = req.continue_final_message.unwrap_or(false);
    if continue_final && req.add_generation_prompt == Some(true) {
        return Err(ApiError::bad_request(
            "`continue_final_message` and `add_generation_prompt` cannot both be true",
            Some("continue_final_message"),
        ));
    }
    let mut text = render_chat(
        ready,
        &req.messages,
        tools,
        req.add_generation_prompt.unwrap_or(!continue_final),
        req.chat_template_kwargs.as_ref(),
    )?;
    if continue_final {
        continue_final_message(&mut text, &req.messages)?;
    }
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

/// Cuts the rendered conversation right after the final message's text, dropping the
/// template's end-of-turn markup, so generation continues that message (vLLM's and
/// transformers' `continue_final_message`).
fn continue_final_message(text: &mut String, messages: &[Value]) -> Result<(), ApiError> {
    let bad = |m: &str| ApiError::bad_request(m.to_string(), Some("continue_final_message"));
    let last = messages
        .last()
        .ok_or_else(|| bad("`continue_final_message` needs a final message to continue"))?;
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return Err(bad(
            "`continue_final_message` needs the final message to be from the assistant",
        ));
    }
    let content = chat_messages(std::slice::from_ref(last))?
        .first()
        .and_then(|m| m.get("content").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let content = content.trim();
    if content.is_empty() {
        return Err(bad(
            "`continue_final_message` needs the final message to have content",
        ));
    }
    let at = text.rfind(content).ok_or_else(|| {
        bad("the chat template does not render the final message's text verbatim, so it cannot be continued")
    })?;
    text.truncate(at + content.len());
    Ok(())
}
