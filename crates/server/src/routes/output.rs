//! What chat and completions share after validation: submitting the prompts, merging
//! their event streams, and the response's [`Shape`] (ids, logprob formatting). A
//! request is then either collected into one JSON body (here) or streamed
//! ([`stream`](super::stream)); both feed the same [`Accumulator`].

use super::accumulator::{cut_off, Accumulator, ChoiceAcc};
use super::stream::stream_response;
use super::{AppState, Ready};
use crate::assistant::{OutputPlan, Parsed};
use crate::error::ApiError;
use crate::generate::{EventStream, Generate};
use crate::protocol::{
    ChatChoice, ChatLogprobs, ChatMessage, ChatTokenLogprob, ChatTopLogprob, CompletionChoice,
    CompletionLogprobs, CompletionResponse, FunctionCallOut, PromptTokensDetails, StreamChunk,
    Timing, ToolCallOut, TopLogprobs, UsageInfo,
};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{BoxStream, SelectAll, StreamExt};
use lantern_engine::{
    FinishReason, RequestEvent, RequestTiming, SubmitError, TokenLogprob, Usage, ValidParams,
};
use std::sync::Arc;

/// How a request's output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// Formatting facts shared by streaming and non-streaming responses.
#[derive(Debug, Clone)]
pub(super) struct Shape {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub n: usize,
    pub logprobs: bool,
    pub tokens_as_ids: bool,
    pub include_usage: bool,
    /// Completions with `echo`: the prompt text of each prompt.
    pub echo: Option<Vec<String>>,
    pub prompt_lens: Vec<usize>,
    /// `echo` with `logprobs`: the prompt tokens (their logprobs come from the engine).
    pub echo_prompt_ids: Option<Vec<Vec<u32>>>,
    /// Chat: how the output splits into reasoning, content and tool calls.
    pub plan: Option<OutputPlan>,
}

impl Shape {
    pub(super) fn token_str<G: Generate>(&self, engine: &G, id: u32) -> String {
        if self.tokens_as_ids {
            format!("token_id:{id}")
        } else {
            engine.tokenizer().decode(&[id], false).unwrap_or_default()
        }
    }

    pub(super) fn chat_logprobs<G: Generate>(
        &self,
        engine: &G,
        lps: &[TokenLogprob],
    ) -> ChatLogprobs {
        let content = lps
            .iter()
            .map(|lp| {
                let token = self.token_str(engine, lp.token_id);
                let top_logprobs = lp
                    .top
                    .iter()
                    .map(|&(id, l)| {
                        let token = self.token_str(engine, id);
                        ChatTopLogprob {
                            bytes: token.as_bytes().to_vec(),
                            token,
                            logprob: f64::from(l),
                        }
                    })
                    .collect();
                ChatTokenLogprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: f64::from(lp.logprob),
                    top_logprobs,
                }
            })
            .collect();
        ChatLogprobs { content }
    }

    pub(super) fn completion_logprobs<G: Generate>(
        &self,
        engine: &G,
        lps: &[TokenLogprob],
        offset0: usize,
    ) -> CompletionLogprobs {
        let mut out = CompletionLogprobs::default();
        let mut off = offset0;
        for lp in lps {
            let t = self.token_str(engine, lp.token_id);
            out.text_offset.push(off);
            // Offsets count characters (as OpenAI/vLLM clients index the text), not bytes.
            off += t.chars().count();
            out.tokens.push(t);
            out.token_logprobs.push(Some(f64::from(lp.logprob)));
            out.top_logprobs.push(Some(self.top_map(engine, &lp.top)));
        }
        out
    }

    /// A completions `top_logprobs` entry: token string -> logprob (the best one when
    /// distinct ids decode to the same string).
    fn top_map<G: Generate>(&self, engine: &G, top: &[(u32, f32)]) -> TopLogprobs {
        let mut m = TopLogprobs::default();
        for &(id, l) in top {
            m.insert_best(self.token_str(engine, id), f64::from(l));
        }
        m
    }

    /// Completion logprobs of the echoed prompt (first token: null) followed by the
    /// generated tokens (which start at character `gen_offset` of the text).
    pub(super) fn echo_completion_logprobs<G: Generate>(
        &self,
        engine: &G,
        prompt: &[u32],
        prompt_lps: &[Option<TokenLogprob>],
        gen: &[TokenLogprob],
        gen_offset: usize,
    ) -> CompletionLogprobs {
        let mut out = CompletionLogprobs::default();
        let mut off = 0usize;
        for (j, &id) in prompt.iter().enumerate() {
            let t = self.token_str(engine, id);
            out.text_offset.push(off);
            off += t.chars().count();
            out.tokens.push(t);
            match prompt_lps.get(j).and_then(|x| x.as_ref()) {
                Some(lp) => {
                    out.token_logprobs.push(Some(f64::from(lp.logprob)));
                    out.top_logprobs.push(Some(self.top_map(engine, &lp.top)));
                }
                None => {
                    out.token_logprobs.push(None);
                    out.top_logprobs.push(None);
                }
            }
        }
        out.extend(self.completion_logprobs(engine, gen, gen_offset));
        out
    }

    pub(super) fn usage(&self, usage: &Usage) -> UsageInfo {
        UsageInfo {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: usage.cached_tokens,
            },
        }
    }

    pub(super) fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// An SSE chunk around `choices` (`"usage": null` with `include_usage`).
    pub(super) fn chunk<C>(&self, choices: Vec<C>) -> StreamChunk<C> {
        StreamChunk {
            id: self.id.clone(),
            object: self.object(true),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.include_usage.then_some(None),
            lantern_timing: None,
        }
    }

    /// The echoed prompt text in front of choice `i` ("" without `echo`).
    pub(super) fn echo_text(&self, i: usize) -> Option<&String> {
        self.echo.as_ref().and_then(|e| e.get(i / self.n))
    }
}

pub(super) fn timing(t: &RequestTiming) -> Timing {
    Timing {
        queue_s: t.queue_s(),
        prefill_s: t.prefill_s(),
        decode_s: t.decode_s(),
    }
}

pub(super) type Tagged = (usize, RequestEvent);

/// The events of all prompts, tagged with the prompt's position.
pub(super) fn merge(streams: Vec<EventStream>) -> SelectAll<BoxStream<'static, Tagged>> {
    let mut all = SelectAll::new();
    for (p, s) in streams.into_iter().enumerate() {
        all.push(s.map(move |ev| (p, ev)).boxed());
    }
    all
}

/// Submits every prompt; `prompt_param` is the request field a too-long prompt is blamed on
/// (`messages` for chat, `prompt` for completions).
pub(super) async fn submit_all<G: Generate>(
    ready: &Ready<G>,
    prompts: Vec<Vec<u32>>,
    params: &ValidParams,
    prompt_param: &str,
) -> Result<Vec<EventStream>, ApiError> {
    let mut streams = Vec::with_capacity(prompts.len());
    for p in prompts {
        let s = ready
            .engine
            .submit(p, params.clone())
            .await
            .map_err(|e| match e {
                SubmitError::TooLong(m) => ApiError::bad_request(m, Some(prompt_param)),
                SubmitError::Invalid(e) if e.is_prompt_error() => {
                    ApiError::bad_request(e.to_string(), Some(prompt_param))
                }
                e => ApiError::from(e),
            })?;
        streams.push(s);
    }
    Ok(streams)
}

/// Streams the request's events as SSE, or collects them into one JSON body.
pub(super) async fn respond_with<G: Generate>(
    state: &Arc<AppState<G>>,
    ready: &Ready<G>,
    shape: Shape,
    streams: Vec<EventStream>,
    stream: bool,
) -> Result<Response, ApiError> {
    if stream {
        Ok(stream_response(
            state.clone(),
            ready.engine.clone(),
            shape,
            streams,
        ))
    } else {
        collect_response(state, &ready.engine, shape, streams).await
    }
}

async fn collect_response<G: Generate>(
    state: &Arc<AppState<G>>,
    engine: &G,
    shape: Shape,
    streams: Vec<EventStream>,
) -> Result<Response, ApiError> {
    let mut merged = merge(streams);
    let mut acc = Accumulator::new(shape.n, true);
    while let Some((p, ev)) = merged.next().await {
        acc.record(p, ev, &state.metrics, &shape.id);
    }
    for (p, index) in acc.unfinished(shape.prompt_lens.len()) {
        acc.record(p, cut_off(index), &state.metrics, &shape.id);
    }
    if acc.error {
        return Err(ApiError::internal());
    }
    let usage = shape.usage(&acc.usage);
    let lantern_timing = acc.timing.as_ref().map(timing);
    let finish = |c: &ChoiceAcc| c.finish.map(FinishReason::as_str);
    let resp = match shape.kind {
        Kind::Chat => {
            let choices = acc
                .choices
                .into_iter()
                .map(|(i, c)| {
                    let parsed = match &shape.plan {
                        Some(p) if !p.is_plain() => p.message(&c.text),
                        _ => Parsed {
                            content: Some(c.text.clone()),
                            ..Parsed::default()
                        },
                    };
                    let content = match (shape.echo_text(i), parsed.content) {
                        (Some(e), Some(t)) => Some(format!("{e}{t}")),
                        (Some(e), None) => Some(e.clone()),
                        (None, t) => t,
                    };
                    let tool_calls_finish = !parsed.tool_calls.is_empty()
                        && c.finish == Some(FinishReason::Stop)
                        && shape
                            .plan
                            .as_ref()
                            .is_some_and(OutputPlan::reports_tool_calls);
                    ChatChoice {
                        index: i,
                        logprobs: shape
                            .logprobs
                            .then(|| shape.chat_logprobs(engine, &c.logprobs)),
                        finish_reason: if tool_calls_finish {
                            Some("tool_calls")
                        } else {
                            finish(&c)
                        },
                        message: ChatMessage {
                            role: "assistant",
                            content,
                            refusal: None,
                            reasoning_content: parsed.reasoning.clone(),
                            reasoning: parsed.reasoning,
                            tool_calls: parsed
                                .tool_calls
                                .into_iter()
                                .map(|t| ToolCallOut {
                                    id: t.id,
                                    kind: "function",
                                    function: FunctionCallOut {
                                        name: t.name,
                                        arguments: t.arguments,
                                    },
                                })
                                .collect(),
                        },
                        stop_reason: c.stop_reason,
                    }
                })
                .collect();
            Json(CompletionResponse {
                id: shape.id.clone(),
                object: shape.object(false),
                created: shape.created,
                model: shape.model.clone(),
                choices,
                usage,
                lantern_timing,
            })
            .into_response()
        }
        Kind::Completion => {
            let choices = acc
                .choices
                .into_iter()
                .map(|(i, c)| {
                    let prefix = shape.echo_text(i).cloned().unwrap_or_default();
                    let p = i / shape.n;
                    let logprobs = match (&shape.echo_prompt_ids, shape.logprobs) {
                        (Some(ids), true) => Some(
                            shape.echo_completion_logprobs(
                                engine,
                                ids.get(p).map(Vec::as_slice).unwrap_or(&[]),
                                acc.prompt_logprobs
                                    .get(&p)
                                    .map(Vec::as_slice)
                                    .unwrap_or(&[]),
                                &c.logprobs,
                                prefix.chars().count(),
                            ),
                        ),
                        (None, true) => Some(shape.completion_logprobs(
                            engine,
                            &c.logprobs,
                            prefix.chars().count(),
                        )),
                        _ => None,
                    };
                    CompletionChoice {
                        index: i,
                        text: format!("{prefix}{}", c.text),
                        logprobs,
                        finish_reason: finish(&c),
                        stop_reason: c.stop_reason,
                    }
                })
                .collect();
            Json(CompletionResponse {
                id: shape.id.clone(),
                object: shape.object(false),
                created: shape.created,
                model: shape.model.clone(),
                choices,
                usage,
                lantern_timing,
            })
            .into_response()
        }
    };
    Ok(resp)
}
