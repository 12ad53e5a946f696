//! Streamed responses: engine events into SSE chunks (`data: {...}`, then `data: [DONE]`).

use super::accumulator::{cut_off, Accumulator, Added};
use super::output::{merge, timing, Kind, Shape, Tagged};
use super::AppState;
use crate::assistant::{ChoiceStreamer, OutputPlan, Part};
use crate::error::ApiError;
use crate::generate::{EventStream, Generate};
use crate::protocol::{
    ChatChunkChoice, ChatDelta, CompletionChunkChoice, FunctionCallDelta, StreamChunk,
    ToolCallDelta,
};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use lantern_engine::{RequestEvent, TokenLogprob};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

/// An SSE `data:` event with `v` as compact JSON.
fn data<T: Serialize>(v: &T) -> Event {
    match serde_json::to_string(v) {
        Ok(s) => Event::default().data(s),
        Err(e) => {
            // Unreachable: these types always serialize.
            tracing::error!(error = %e, "cannot serialize a stream chunk");
            Event::default()
                .data(serde_json::to_string(&ApiError::internal().body()).unwrap_or_default())
        }
    }
}

/// Streaming state: turns engine events into SSE chunks.
struct StreamState<G> {
    state: Arc<AppState<G>>,
    engine: G,
    shape: Shape,
    merged: SelectAll<BoxStream<'static, Tagged>>,
    pending: VecDeque<Event>,
    acc: Accumulator,
    /// Chat with reasoning or tool parsing: each choice's incremental parser.
    parsers: HashMap<usize, ChoiceStreamer>,
    done: bool,
}

/// A chat delta carrying one parsed part.
fn part_delta(part: Part) -> ChatDelta {
    match part {
        Part::Content(c) => ChatDelta {
            content: Some(c),
            ..ChatDelta::default()
        },
        Part::Reasoning(r) => ChatDelta {
            reasoning_content: Some(r.clone()),
            reasoning: Some(r),
            ..ChatDelta::default()
        },
        Part::CallStart { index, id, name } => ChatDelta {
            tool_calls: vec![ToolCallDelta {
                index,
                id: Some(id),
                kind: Some("function"),
                function: FunctionCallDelta {
                    name: Some(name),
                    arguments: Some(String::new()),
                },
            }],
            ..ChatDelta::default()
        },
        Part::CallArguments { index, text } => ChatDelta {
            tool_calls: vec![ToolCallDelta {
                index,
                id: None,
                kind: None,
                function: FunctionCallDelta {
                    name: None,
                    arguments: Some(text),
                },
            }],
            ..ChatDelta::default()
        },
    }
}

impl<G: Generate> StreamState<G> {
    fn push<C: Serialize>(&mut self, chunk: &StreamChunk<C>) {
        self.pending.push_back(data(chunk));
    }

    /// The first chunk of each choice: the assistant role (chat) or the echoed prompt
    /// (completions with `echo` and without `logprobs`).
    fn start(&mut self) {
        let total = self.shape.prompt_lens.len() * self.shape.n;
        for i in 0..total {
            match self.shape.kind {
                Kind::Chat => {
                    let chunk = self.shape.chunk(vec![ChatChunkChoice {
                        index: i,
                        delta: ChatDelta {
                            role: Some("assistant"),
                            content: Some(String::new()),
                            ..ChatDelta::default()
                        },
                        logprobs: None,
                        finish_reason: None,
                        stop_reason: None,
                    }]);
                    self.push(&chunk);
                    if let Some(e) = self.shape.echo_text(i).cloned() {
                        self.push_chat(
                            i,
                            ChatDelta {
                                content: Some(e),
                                ..ChatDelta::default()
                            },
                            None,
                        );
                    }
                }
                Kind::Completion => {
                    if self.shape.echo_prompt_ids.is_some() {
                        // Sent with the prompt logprobs when they arrive.
                        continue;
                    }
                    let Some(e) = &self.shape.echo else { continue };
                    let text = e.get(i / self.shape.n).cloned().unwrap_or_default();
                    let chunk = self.shape.chunk(vec![CompletionChunkChoice {
                        index: i,
                        text,
                        logprobs: None,
                        finish_reason: None,
                        stop_reason: None,
                    }]);
                    self.push(&chunk);
                }
            }
        }
    }

    /// Characters of the echoed prompt in front of choice `i` (0 without `echo`).
    fn echo_chars(&self, i: usize) -> usize {
        self.shape
            .echo_text(i)
            .map(|t| t.chars().count())
            .unwrap_or(0)
    }

    fn push_chat(&mut self, i: usize, delta: ChatDelta, logprobs: Option<&[TokenLogprob]>) {
        let logprobs = logprobs
            .filter(|_| self.shape.logprobs)
            .map(|lps| self.shape.chat_logprobs(&self.engine, lps));
        let chunk = self.shape.chunk(vec![ChatChunkChoice {
            index: i,
            delta,
            logprobs,
            finish_reason: None,
            stop_reason: None,
        }]);
        self.push(&chunk);
    }

    /// The parser of choice `i`, if this chat request parses its output.
    fn parser(&mut self, i: usize) -> Option<&mut ChoiceStreamer> {
        let plan = self.shape.plan.as_ref().filter(|p| !p.is_plain())?;
        Some(self.parsers.entry(i).or_insert_with(|| plan.streamer()))
    }

    /// Parsed chat text: one chunk per part; the event's logprobs ride on the first one
    /// (or on an empty delta when the parser held all the text back).
    fn push_parsed(&mut self, i: usize, parts: Vec<Part>, lps: &[TokenLogprob]) {
        let mut lps = Some(lps).filter(|l| !l.is_empty());
        for part in parts {
            self.push_chat(i, part_delta(part), lps.take());
        }
        if let Some(l) = lps {
            self.push_chat(i, ChatDelta::default(), Some(l));
        }
    }

    fn push_content(&mut self, i: usize, text: String, lps: &[TokenLogprob], offset: usize) {
        match self.shape.kind {
            Kind::Chat => {
                if let Some(p) = self.parser(i) {
                    let parts = p.push(&text);
                    self.push_parsed(i, parts, lps);
                    return;
                }
                self.push_chat(
                    i,
                    ChatDelta {
                        content: Some(text),
                        ..ChatDelta::default()
                    },
                    Some(lps),
                );
            }
            Kind::Completion => {
                let logprobs = self
                    .shape
                    .logprobs
                    .then(|| self.shape.completion_logprobs(&self.engine, lps, offset));
                let chunk = self.shape.chunk(vec![CompletionChunkChoice {
                    index: i,
                    text,
                    logprobs,
                    finish_reason: None,
                    stop_reason: None,
                }]);
                self.push(&chunk);
            }
        }
    }

    fn handle(&mut self, p: usize, ev: RequestEvent) {
        match self.acc.record(p, ev, &self.state.metrics, &self.shape.id) {
            Added::Text {
                choice: i,
                text,
                logprobs,
            } => {
                let echo_chars = self.echo_chars(i);
                let shape = &self.shape;
                let engine = &self.engine;
                let c = self.acc.choices.entry(i).or_default();
                let offset = echo_chars + c.token_chars;
                if shape.logprobs && shape.kind == Kind::Completion {
                    c.token_chars += logprobs
                        .iter()
                        .map(|lp| shape.token_str(engine, lp.token_id).chars().count())
                        .sum::<usize>();
                }
                let has_logprobs = self.shape.logprobs && !logprobs.is_empty();
                if text.is_empty() && !has_logprobs {
                    return;
                }
                self.push_content(i, text, &logprobs, offset);
            }
            Added::Finished {
                choice: i,
                text,
                reason,
                stop_reason,
            } => {
                if !text.is_empty() {
                    let offset = self.echo_chars(i)
                        + self.acc.choices.get(&i).map(|c| c.token_chars).unwrap_or(0);
                    self.push_content(i, text, &[], offset);
                }
                let mut finish_reason = Some(reason.as_str());
                if let Some(p) = self.parser(i) {
                    let parts = p.finish();
                    let called = p.called();
                    self.push_parsed(i, parts, &[]);
                    let reports = self
                        .shape
                        .plan
                        .as_ref()
                        .is_some_and(OutputPlan::reports_tool_calls);
                    if called && reports && reason == lantern_engine::FinishReason::Stop {
                        finish_reason = Some("tool_calls");
                    }
                }
                match self.shape.kind {
                    Kind::Chat => {
                        let chunk = self.shape.chunk(vec![ChatChunkChoice {
                            index: i,
                            delta: ChatDelta::default(),
                            logprobs: None,
                            finish_reason,
                            stop_reason: Some(stop_reason),
                        }]);
                        self.push(&chunk);
                    }
                    Kind::Completion => {
                        let chunk = self.shape.chunk(vec![CompletionChunkChoice {
                            index: i,
                            text: String::new(),
                            logprobs: None,
                            finish_reason,
                            stop_reason: Some(stop_reason),
                        }]);
                        self.push(&chunk);
                    }
                }
            }
            Added::PromptLogprobs {
                prompt: p,
                logprobs: lps,
            } => {
                let Some(ids) = self.shape.echo_prompt_ids.as_ref().and_then(|v| v.get(p)) else {
                    return;
                };
                let text = self
                    .shape
                    .echo
                    .as_ref()
                    .and_then(|e| e.get(p).cloned())
                    .unwrap_or_default();
                let lp = self
                    .shape
                    .echo_completion_logprobs(&self.engine, ids, &lps, &[], 0);
                let n = self.shape.n;
                for i in p * n..(p + 1) * n {
                    let chunk = self.shape.chunk(vec![CompletionChunkChoice {
                        index: i,
                        text: text.clone(),
                        logprobs: Some(lp.clone()),
                        finish_reason: None,
                        stop_reason: None,
                    }]);
                    self.push(&chunk);
                }
            }
            Added::Failed => {
                self.pending.push_back(data(&ApiError::internal().body()));
            }
        }
    }

    /// The usage chunk (with `include_usage`, unless the request failed), then `[DONE]`.
    fn end(&mut self) {
        for (p, index) in self.acc.unfinished(self.shape.prompt_lens.len()) {
            self.handle(p, cut_off(index));
        }
        if self.shape.include_usage && !self.acc.error {
            let mut chunk = self.shape.chunk(Vec::<CompletionChunkChoice>::new());
            chunk.usage = Some(Some(self.shape.usage(&self.acc.usage)));
            chunk.lantern_timing = self.acc.timing.as_ref().map(timing);
            self.push(&chunk);
        }
        self.pending.push_back(Event::default().data("[DONE]"));
    }
}

pub(super) fn stream_response<G: Generate>(
    state: Arc<AppState<G>>,
    engine: G,
    shape: Shape,
    streams: Vec<EventStream>,
) -> Response {
    let mut st = StreamState {
        state,
        engine,
        acc: Accumulator::new(shape.n, false),
        shape,
        merged: merge(streams),
        pending: VecDeque::new(),
        parsers: HashMap::new(),
        done: false,
    };
    st.start();
    let s = stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(e), st));
            }
            if st.done {
                return None;
            }
            match st.merged.next().await {
                Some((p, ev)) => st.handle(p, ev),
                None => {
                    st.end();
                    st.done = true;
                }
            }
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    (headers, Sse::new(s).keep_alive(KeepAlive::default())).into_response()
}
