//! `POST /v1/chat/completions`: messages through the chat template, then the shared
//! generation path ([`output`](super::output)).

use super::output::{respond_with, submit_all, Kind, Shape};
use super::{body_bytes, check_model, encode, random_id, respond, unix_now, AppState, Ready};
use crate::assistant::OutputPlan;
use crate::error::ApiError;
use crate::generate::Generate;
use crate::protocol::{parse_body, ChatRequest};
use crate::tools::{self, ToolMode};
use crate::validate::{chat_messages, generation_params};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use lantern_engine::{StructuredOutput, StructuredRequest, ValidParams};
use lantern_parsers::reasoning::ReasoningParserKind;
use lantern_parsers::tool::ToolParserKind;
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
    let body = body_bytes(body)?;
    let (req, (ids, params, shape)) = state
        .prepare_blocking(move |state, ready| {
            let req: ChatRequest = parse_body(&body)?;
            let prepared = prepare(state, ready, &req)?;
            Ok((req, prepared))
        })
        .await?;
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

/// Everything up to submitting: the prompt's token ids, the validated parameters and the
/// response's shape (shared with `/v1/chat/completions/render`).
pub(super) fn prepare<G: Generate>(
    state: &AppState<G>,
    ready: &Ready<G>,
    req: &ChatRequest,
) -> Result<(Vec<u32>, ValidParams, Shape), ApiError> {
    let lora_id = check_model(ready, &req.model)?;
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
    let tools = tools::resolve(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
        state.config.tools,
    )?;
    let mut params = generation_params(
        &req.common,
        req.max_completion_tokens.or(req.max_tokens),
        logprobs,
        &ready.sampling_defaults,
    )?;
    params.lora_id = lora_id;
    if tools.mode == ToolMode::Auto(ToolParserKind::Mistral) {
        // `[TOOL_CALLS]` is a special token: the parser must see it (vLLM does the same).
        params.skip_special_tokens = false;
    }
    if let Some(schema) = &tools.schema {
        if let Some(other) = &params.structured {
            return Err(ApiError::bad_request(
                format!(
                    "`{}` cannot be combined with a forced `tool_choice`: use one constraint",
                    other.field
                ),
                Some("tool_choice"),
            ));
        }
        params.structured = Some(StructuredRequest {
            spec: StructuredOutput::JsonSchema(schema.clone()),
            field: "tools",
            after: None,
        });
    }
    let continue_final = req.continue_final_message.unwrap_or(false);
    let text = prompt_text(
        ready,
        &req.messages,
        tools.render.as_deref(),
        req.add_generation_prompt,
        continue_final,
        req.chat_template_kwargs.as_ref(),
    )?;
    let reasoning = state
        .config
        .reasoning_parser
        .map(|kind| (kind, reasoning_opened(&text, kind)));
    if let (Some(s), Some((kind, _))) = (params.structured.as_mut(), reasoning) {
        // The constraint starts after the thinking, unless the prompt already closed it
        // (e.g. Qwen3 with `enable_thinking: false`).
        if !reasoning_closed(&text, kind) {
            s.after = Some(encode(ready, kind.end_marker(), false, "messages")?);
        }
    }
    let params = params.validate(&ready.engine.limits())?;
    let ids = encode(ready, &text, false, "messages")?;
    let echo = if req.echo.unwrap_or(false) {
        final_assistant_text(&req.messages)?
    } else {
        None
    };
    let plan = OutputPlan {
        reasoning,
        include_reasoning: req.include_reasoning.unwrap_or(true),
        tools: tools.mode,
        single_call: tools.single_call,
    };
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
        echo: echo.map(|e| vec![e]),
        prompt_lens: vec![ids.len()],
        echo_prompt_ids: None,
        plan: Some(plan),
    };
    Ok((ids, params, shape))
}

/// Whether the prompt ends inside a thinking block (the template opened it).
fn reasoning_opened(prompt: &str, kind: ReasoningParserKind) -> bool {
    let start = prompt.rfind(kind.start_marker());
    let end = prompt.rfind(kind.end_marker());
    match (start, end) {
        (Some(s), Some(e)) => s > e,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Whether the prompt closed the thinking already (its last marker is the end marker).
fn reasoning_closed(prompt: &str, kind: ReasoningParserKind) -> bool {
    let start = prompt.rfind(kind.start_marker());
    let end = prompt.rfind(kind.end_marker());
    match (start, end) {
        (Some(s), Some(e)) => e > s,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// The chat prompt text: the messages through the template, with a generation prompt
/// (unless told otherwise) or continuing the final assistant message.
pub(super) fn prompt_text<G: Generate>(
    ready: &Ready<G>,
    messages: &[Value],
    tools: Option<&[Value]>,
    add_generation_prompt: Option<bool>,
    continue_final: bool,
    kwargs: Option<&serde_json::Map<String, Value>>,
) -> Result<String, ApiError> {
    if continue_final && add_generation_prompt == Some(true) {
        return Err(ApiError::bad_request(
            "`continue_final_message` and `add_generation_prompt` cannot both be true",
            Some("continue_final_message"),
        ));
    }
    let mut text = render_chat(
        ready,
        messages,
        tools,
        add_generation_prompt.unwrap_or(!continue_final),
        kwargs,
    )?;
    if continue_final {
        continue_final_message(&mut text, messages)?;
    }
    Ok(text)
}

/// Chat `echo`: the final message's text when it is the assistant's (what the output
/// continues), else nothing.
fn final_assistant_text(messages: &[Value]) -> Result<Option<String>, ApiError> {
    let Some(last) = messages.last() else {
        return Ok(None);
    };
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return Ok(None);
    }
    Ok(chat_messages(std::slice::from_ref(last))?
        .first()
        .and_then(|m| m.get("content").and_then(Value::as_str).map(str::to_string)))
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
