//! HTTP routes: OpenAI chat/completions (streaming and not), models, health, metrics,
//! tokenize/detokenize, version.

use crate::chat_template::ChatTemplate;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::protocol::{
    parse_body, ChatRequest, CompletionRequest, DetokenizeRequest, PromptField, TokenizeRequest,
};
use crate::validate::{chat_messages, generation_params};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use lantern_engine::{
    EngineHandle, FinishReason, GenerationParams, RequestEvent, RequestStream, RequestTiming,
    SubmitError, TokenLogprob, Usage,
};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What exists once the model is loaded.
#[derive(Debug)]
pub struct Ready {
    pub engine: EngineHandle,
    pub template: Option<ChatTemplate>,
    /// Names a request's `model` may use; the first is reported in responses.
    pub served_names: Vec<String>,
    /// Where the model came from (hub id or path), reported as `root`.
    pub root: String,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_timeout: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            max_body_bytes: 8 << 20,
            shutdown_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Shared state of all handlers.
#[derive(Debug)]
pub struct AppState {
    pub ready: OnceLock<Ready>,
    pub shutting_down: AtomicBool,
    pub metrics: Metrics,
    pub config: ServerConfig,
    pub created: u64,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            ready: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            metrics: Metrics::default(),
            config,
            created: unix_now(),
        }
    }

    fn ready(&self) -> Result<&Ready, ApiError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        self.ready
            .get()
            .ok_or_else(|| ApiError::unavailable("the model is still loading; retry shortly"))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `PREFIX-` and 32 random hex digits (`chatcmpl-…`, `cmpl-…`).
fn random_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/load_lora_adapter", post(load_lora_adapter))
        .route("/v1/unload_lora_adapter", post(unload_lora_adapter))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/version", get(version))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route", None)
}

/// `--api-key`: `/v1/*` requires `Authorization: Bearer KEY` (constant-time compare).
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        if req.uri().path().starts_with("/v1/") {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            use subtle::ConstantTimeEq;
            let ok: bool = given.as_bytes().ct_eq(key.as_bytes()).into();
            if !ok {
                state.metrics.count_request(req.uri().path(), 401);
                return ApiError::unauthorized().into_response();
            }
        }
    }
    next.run(req).await
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        ApiError {
            status,
            message: if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body too large".to_string()
            } else {
                format!("cannot read request body: {e}")
            },
            param: None,
            retry_after: None,
        }
    })
}

/// The LoRA adapter id a request's `model` selects: 0 for the base model's names, the
/// adapter's id for a loaded adapter's name, 404 otherwise.
fn check_model(ready: &Ready, model: &str) -> Result<u32, ApiError> {
    if ready.served_names.iter().any(|n| n == model) {
        return Ok(0);
    }
    ready.engine.lora_id(model).ok_or_else(|| {
        ApiError::not_found(
            format!("The model `{model}` does not exist."),
            Some("model"),
        )
    })
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.ready() {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let (snap, name) = match state.ready.get() {
        Some(r) => (
            current_snapshot(&r.engine).await,
            r.served_names.first().cloned().unwrap_or_default(),
        ),
        None => (Default::default(), String::new()),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&snap, &name),
    )
        .into_response()
}

/// The engine's stats as of now. The published snapshot is refreshed only at the end of an
/// engine step, so after an abort (client disconnect) on an otherwise idle engine it would
/// keep reporting the aborted request as running with its KV blocks in use; ask the engine
/// thread instead, falling back to the published snapshot if it does not answer promptly.
async fn current_snapshot(engine: &EngineHandle) -> lantern_engine::EngineSnapshot {
    match tokio::time::timeout(Duration::from_secs(1), engine.fresh_snapshot()).await {
        Ok(Ok(s)) => s,
        _ => engine.snapshot(),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let ready = state.ready()?;
    let info = ready.engine.info();
    let mut data: Vec<Value> = ready
        .served_names
        .iter()
        .map(|n| {
            json!({
                "id": n,
                "object": "model",
                "created": state.created,
                "owned_by": "lantern",
                "root": ready.root,
                "parent": null,
                "max_model_len": info.max_model_len,
            })
        })
        .collect();
    let base = ready.served_names.first().cloned().unwrap_or_default();
    data.extend(ready.engine.loras().into_iter().map(|l| {
        json!({
            "id": l.name,
            "object": "model",
            "created": l.created,
            "owned_by": "lantern",
            "root": l.source,
            "parent": base,
            "max_model_len": info.max_model_len,
        })
    }));
    Ok(Json(json!({"object": "list", "data": data})))
}

/// vLLM's `POST /v1/load_lora_adapter` body.
#[derive(Debug, serde::Deserialize)]
struct LoadLoraRequest {
    lora_name: Option<String>,
    lora_path: Option<String>,
}

/// vLLM's `POST /v1/unload_lora_adapter` body.
#[derive(Debug, serde::Deserialize)]
struct UnloadLoraRequest {
    lora_name: Option<String>,
}

fn lora_error(e: lantern_engine::LoraError) -> ApiError {
    use lantern_engine::LoraError as E;
    match e {
        E::NotFound(_) => ApiError::not_found(e.to_string(), Some("lora_name")),
        E::EngineStopped => ApiError::unavailable("the server is shutting down"),
        E::Invalid { .. } => ApiError::bad_request(e.to_string(), Some("lora_path")),
        E::Disabled | E::AlreadyLoaded(_) | E::InvalidName(_) => {
            ApiError::bad_request(e.to_string(), Some("lora_name"))
        }
    }
}

async fn load_lora_adapter(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let req: LoadLoraRequest = parse_body(&body_bytes(body)?)?;
    let (Some(name), Some(path)) = (req.lora_name, req.lora_path) else {
        return Err(ApiError::bad_request(
            "Both 'lora_name' and 'lora_path' must be provided.",
            None,
        ));
    };
    if ready.served_names.contains(&name) {
        return Err(ApiError::bad_request(
            format!("'{name}' is the base model's name; choose another lora_name"),
            Some("lora_name"),
        ));
    }
    let engine = ready.engine.clone();
    let n = name.clone();
    let info = tokio::task::spawn_blocking(move || engine.load_lora_blocking(&n, &path))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(lora_error)?;
    tracing::info!(name = %info.name, path = %info.path.display(), "adapter loaded over HTTP");
    Ok((
        StatusCode::OK,
        format!("Success: LoRA adapter '{name}' added successfully."),
    )
        .into_response())
}

async fn unload_lora_adapter(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let req: UnloadLoraRequest = parse_body(&body_bytes(body)?)?;
    let Some(name) = req.lora_name else {
        return Err(ApiError::bad_request(
            "'lora_name' needs to be provided to unload a LoRA adapter.",
            Some("lora_name"),
        ));
    };
    ready.engine.unload_lora(&name).map_err(lora_error)?;
    Ok((
        StatusCode::OK,
        format!("Success: LoRA adapter '{name}' removed successfully."),
    )
        .into_response())
}

fn encode(ready: &Ready, text: &str, add_special: bool) -> Result<Vec<u32>, ApiError> {
    ready
        .engine
        .tokenizer()
        .encode(text, add_special)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| {
            tracing::warn!(error = %e, "tokenization failed");
            ApiError::bad_request("the prompt could not be tokenized", Some("prompt"))
        })
}

fn render_chat(
    ready: &Ready,
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

async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let ready = state.ready()?;
    let req: TokenizeRequest = parse_body(&body_bytes(body)?)?;
    let (model, ids, strs) = match req {
        TokenizeRequest::Chat {
            model,
            messages,
            add_generation_prompt,
            add_special_tokens,
            chat_template_kwargs,
            return_token_strs,
        } => {
            let text = render_chat(
                ready,
                &messages,
                None,
                add_generation_prompt.unwrap_or(true),
                chat_template_kwargs.as_ref(),
            )?;
            (
                model,
                encode(ready, &text, add_special_tokens.unwrap_or(false))?,
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
            encode(ready, &prompt, add_special_tokens.unwrap_or(true))?,
            return_token_strs.unwrap_or(false),
        ),
    };
    if let Some(m) = &model {
        check_model(ready, m)?;
    }
    let mut out = json!({
        "count": ids.len(),
        "max_model_len": ready.engine.info().max_model_len,
        "tokens": ids,
    });
    if strs {
        let tok = ready.engine.tokenizer();
        let s: Vec<Option<String>> = ids.iter().map(|&i| tok.id_to_token(i)).collect();
        out["token_strs"] = json!(s);
    }
    Ok(Json(out))
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let ready = state.ready()?;
    let req: DetokenizeRequest = parse_body(&body_bytes(body)?)?;
    if let Some(m) = &req.model {
        check_model(ready, m)?;
    }
    let vocab = ready.engine.info().vocab_size;
    if let Some(&bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad_request(
            format!("token id {bad} is out of the vocabulary (0..{vocab})"),
            Some("tokens"),
        ));
    }
    let text = ready
        .engine
        .tokenizer()
        .decode(&req.tokens, false)
        .map_err(|_| ApiError::bad_request("these tokens cannot be decoded", Some("tokens")))?;
    Ok(Json(json!({"prompt": text})))
}

/// How a request's output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// Formatting facts shared by streaming and non-streaming responses.
#[derive(Debug, Clone)]
struct Shape {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    n: usize,
    logprobs: bool,
    tokens_as_ids: bool,
    include_usage: bool,
    /// Completions with `echo`: the prompt text of each prompt.
    echo: Option<Vec<String>>,
    prompt_lens: Vec<usize>,
    /// `echo` with `logprobs`: the prompt tokens (their logprobs come from the engine).
    echo_prompt_ids: Option<Vec<Vec<u32>>>,
}

impl Shape {
    fn token_str(&self, engine: &EngineHandle, id: u32) -> String {
        if self.tokens_as_ids {
            format!("token_id:{id}")
        } else {
            engine.tokenizer().decode(&[id], false).unwrap_or_default()
        }
    }

    fn chat_logprobs(&self, engine: &EngineHandle, lps: &[TokenLogprob]) -> Value {
        let content: Vec<Value> = lps
            .iter()
            .map(|lp| {
                let t = self.token_str(engine, lp.token_id);
                let top: Vec<Value> = lp
                    .top
                    .iter()
                    .map(|&(id, l)| {
                        let s = self.token_str(engine, id);
                        json!({"token": s, "logprob": l, "bytes": s.as_bytes()})
                    })
                    .collect();
                json!({"token": t, "logprob": lp.logprob, "bytes": t.as_bytes(), "top_logprobs": top})
            })
            .collect();
        json!({ "content": content })
    }

    fn completion_logprobs(
        &self,
        engine: &EngineHandle,
        lps: &[TokenLogprob],
        offset0: usize,
    ) -> Value {
        let mut tokens = Vec::new();
        let mut token_logprobs = Vec::new();
        let mut top = Vec::new();
        let mut offsets = Vec::new();
        let mut off = offset0;
        for lp in lps {
            let t = self.token_str(engine, lp.token_id);
            offsets.push(off);
            // Offsets count characters (as OpenAI/vLLM clients index the text), not bytes.
            off += t.chars().count();
            tokens.push(t);
            token_logprobs.push(lp.logprob);
            top.push(self.top_map(engine, &lp.top));
        }
        json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
    }

    /// A completions `top_logprobs` entry: token string -> logprob. Distinct ids can decode
    /// to the same string (e.g. lone UTF-8 bytes all decode to U+FFFD); keep the best
    /// logprob per string rather than the last one.
    fn top_map(&self, engine: &EngineHandle, top: &[(u32, f32)]) -> Value {
        let mut m = serde_json::Map::new();
        for &(id, l) in top {
            let key = self.token_str(engine, id);
            let better = m
                .get(&key)
                .and_then(Value::as_f64)
                .is_none_or(|old| f64::from(l) > old);
            if better {
                m.insert(key, json!(l));
            }
        }
        Value::Object(m)
    }

    /// Completion logprobs of the echoed prompt (first token: null) followed by the
    /// generated tokens (which start at character `gen_offset` of the text).
    fn echo_completion_logprobs(
        &self,
        engine: &EngineHandle,
        prompt: &[u32],
        prompt_lps: &[Option<TokenLogprob>],
        gen: &[TokenLogprob],
        gen_offset: usize,
    ) -> Value {
        let mut tokens = Vec::new();
        let mut token_logprobs = Vec::new();
        let mut top = Vec::new();
        let mut offsets = Vec::new();
        let mut off = 0usize;
        for (j, &id) in prompt.iter().enumerate() {
            let t = self.token_str(engine, id);
            offsets.push(off);
            off += t.chars().count();
            tokens.push(json!(t));
            match prompt_lps.get(j).and_then(|x| x.as_ref()) {
                Some(lp) => {
                    token_logprobs.push(json!(lp.logprob));
                    top.push(self.top_map(engine, &lp.top));
                }
                None => {
                    token_logprobs.push(Value::Null);
                    top.push(Value::Null);
                }
            }
        }
        let g = self.completion_logprobs(engine, gen, gen_offset);
        let ext = |v: &mut Vec<Value>, key: &str| {
            if let Some(a) = g.get(key).and_then(|x| x.as_array()) {
                v.extend(a.iter().cloned());
            }
        };
        ext(&mut tokens, "tokens");
        ext(&mut token_logprobs, "token_logprobs");
        ext(&mut top, "top_logprobs");
        let mut offsets: Vec<Value> = offsets.into_iter().map(|o| json!(o)).collect();
        ext(&mut offsets, "text_offset");
        json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
    }

    fn usage_json(&self, usage: &Usage) -> Value {
        json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }
}

fn timing_json(t: &RequestTiming) -> Value {
    json!({"queue_s": t.queue_s(), "prefill_s": t.prefill_s(), "decode_s": t.decode_s()})
}

/// Accumulated result of one choice.
#[derive(Debug, Default, Clone)]
struct Choice {
    text: String,
    /// Streaming completions with logprobs: characters of the token strings sent so far,
    /// so `text_offset` counts exactly as in the non-streaming response.
    token_chars: usize,
    logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    stop_reason: Value,
    last_time: Option<Instant>,
}

/// Totals over all choices of a request.
#[derive(Debug, Default)]
struct Totals {
    usage: Usage,
    timing: Option<RequestTiming>,
    error: bool,
}

fn observe_finish(m: &Metrics, t: &RequestTiming) {
    if let Some(ft) = t.first_token {
        m.ttft.observe(ft.duration_since(t.arrival).as_secs_f64());
    }
    m.e2e
        .observe(t.finished.duration_since(t.arrival).as_secs_f64());
    m.queue.observe(t.queue_s());
}

/// One structured log line per finished sequence, with its timings.
fn log_finish(id: &str, index: usize, usage: &Usage, timing: &RequestTiming, reason: FinishReason) {
    tracing::info!(
        id = %id,
        index,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        cached_tokens = usage.cached_tokens,
        queue_s = timing.queue_s(),
        prefill_s = timing.prefill_s(),
        decode_s = timing.decode_s(),
        finish_reason = reason.as_str(),
        "request finished"
    );
}

fn add_usage(tot: &mut Totals, index: usize, n: usize, usage: &Usage) {
    // Prompt tokens and cache hits count once per prompt (the first choice of each).
    if index.is_multiple_of(n) {
        tot.usage.prompt_tokens += usage.prompt_tokens;
        tot.usage.cached_tokens += usage.cached_tokens;
    }
    tot.usage.completion_tokens += usage.completion_tokens;
}

type Tagged = (usize, RequestEvent);

fn merge(streams: Vec<RequestStream>) -> SelectAll<BoxStream<'static, Tagged>> {
    let mut all = SelectAll::new();
    for (p, s) in streams.into_iter().enumerate() {
        let st = stream::unfold(s, |mut s| async move { s.next().await.map(|ev| (ev, s)) })
            .map(move |ev| (p, ev))
            .boxed();
        all.push(st);
    }
    all
}

/// Submits every prompt; `prompt_param` is the request field a too-long prompt is blamed on
/// (`messages` for chat, `prompt` for completions).
async fn submit_all(
    ready: &Ready,
    prompts: Vec<Vec<u32>>,
    params: &GenerationParams,
    prompt_param: &str,
) -> Result<Vec<RequestStream>, ApiError> {
    let mut streams = Vec::with_capacity(prompts.len());
    for p in prompts {
        let s = ready
            .engine
            .submit(p, params.clone())
            .await
            .map_err(|e| match e {
                SubmitError::TooLong(m) => ApiError::bad_request(m, Some(prompt_param)),
                e => ApiError::from(e),
            })?;
        streams.push(s);
    }
    Ok(streams)
}

async fn chat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = chat_inner(&state, body).await;
    respond(&state, "/v1/chat/completions", r)
}

async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = completions_inner(&state, body).await;
    respond(&state, "/v1/completions", r)
}

fn respond(state: &AppState, endpoint: &str, r: Result<Response, ApiError>) -> Response {
    match r {
        Ok(resp) => {
            state
                .metrics
                .count_request(endpoint, resp.status().as_u16());
            resp
        }
        Err(e) => {
            state.metrics.count_request(endpoint, e.status.as_u16());
            if e.status.is_server_error() {
                tracing::warn!(status = %e.status, "request failed");
            } else {
                tracing::debug!(status = %e.status, message = %e.message, "request rejected");
            }
            e.into_response()
        }
    }
}

async fn chat_inner(
    state: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let req: ChatRequest = parse_body(&body_bytes(body)?)?;
    let lora_id = check_model(ready, &req.model)?;
    if let Some(rf) = &req.response_format {
        let ty = rf.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if ty != "text" {
            return Err(ApiError::bad_request(
                format!("`response_format` type `{ty}` (structured output) is not supported yet; omit it or use `text`"),
                Some("response_format"),
            ));
        }
    }
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
    let info = ready.engine.info();
    let mut params = generation_params(
        &req.common,
        req.max_completion_tokens.or(req.max_tokens),
        logprobs,
        info.vocab_size,
    )?;
    params.lora_id = lora_id;
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

async fn completions_inner(
    state: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let req: CompletionRequest = parse_body(&body_bytes(body)?)?;
    let lora_id = check_model(ready, &req.model)?;
    if req.suffix.is_some() {
        return Err(ApiError::bad_request(
            "`suffix` is not supported",
            Some("suffix"),
        ));
    }
    let info = ready.engine.info();
    let mut params = generation_params(
        &req.common,
        Some(req.max_tokens.unwrap_or(16)),
        req.logprobs,
        info.vocab_size,
    )?;
    params.lora_id = lora_id;
    let prompts: Vec<Vec<u32>> = match req.prompt {
        PromptField::Text(t) => vec![encode(ready, &t, true)?],
        PromptField::Texts(ts) => ts
            .iter()
            .map(|t| encode(ready, t, true))
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
    if prompts.len() * params.n > 128 {
        return Err(ApiError::bad_request(
            format!(
                "{} prompts x n {} = {} completions; at most 128 per request",
                prompts.len(),
                params.n,
                prompts.len() * params.n
            ),
            Some("prompt"),
        ));
    }
    for p in &prompts {
        if p.is_empty() {
            return Err(ApiError::bad_request("a prompt is empty", Some("prompt")));
        }
        if let Some(&bad) = p.iter().find(|&&t| t as usize >= info.vocab_size) {
            return Err(ApiError::bad_request(
                format!(
                    "token id {bad} is out of the vocabulary (0..{})",
                    info.vocab_size
                ),
                Some("prompt"),
            ));
        }
    }
    let echo_prompt_ids = if req.echo.unwrap_or(false) && req.logprobs.is_some() {
        params.prompt_logprobs = req.logprobs;
        Some(prompts.clone())
    } else {
        None
    };
    let echo = if req.echo.unwrap_or(false) {
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
    };
    let streams = submit_all(ready, prompts, &params, "prompt").await?;
    respond_with(
        state,
        ready,
        shape,
        streams,
        req.common.stream.unwrap_or(false),
    )
    .await
}

/// Streams the request's events as SSE, or collects them into one JSON body.
async fn respond_with(
    state: &Arc<AppState>,
    ready: &Ready,
    shape: Shape,
    streams: Vec<RequestStream>,
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

fn finish_str(r: FinishReason) -> &'static str {
    r.as_str()
}

fn stop_reason_json(s: &Option<lantern_engine::StopReason>) -> Value {
    match s {
        Some(lantern_engine::StopReason::StopString(s)) => json!(s),
        Some(lantern_engine::StopReason::StopToken(t)) => json!(t),
        _ => Value::Null,
    }
}

async fn collect_response(
    state: &Arc<AppState>,
    engine: &EngineHandle,
    shape: Shape,
    streams: Vec<RequestStream>,
) -> Result<Response, ApiError> {
    let n = shape.n;
    let mut merged = merge(streams);
    let mut choices: HashMap<usize, Choice> = HashMap::new();
    let mut prompt_lps: HashMap<usize, Vec<Option<TokenLogprob>>> = HashMap::new();
    let mut tot = Totals::default();
    while let Some((p, ev)) = merged.next().await {
        match ev {
            RequestEvent::Delta(d) => {
                let c = choices.entry(p * n + d.index).or_default();
                if let Some(prev) = c.last_time {
                    state
                        .metrics
                        .itl
                        .observe(d.time.duration_since(prev).as_secs_f64());
                }
                c.last_time = Some(d.time);
                c.text.push_str(&d.text);
                c.logprobs.extend(d.logprobs);
            }
            RequestEvent::Finished {
                index,
                reason,
                stop_reason,
                text,
                usage,
                timing,
            } => {
                let c = choices.entry(p * n + index).or_default();
                c.text.push_str(&text);
                c.finish = Some(reason);
                c.stop_reason = stop_reason_json(&stop_reason);
                add_usage(&mut tot, index, n, &usage);
                observe_finish(&state.metrics, &timing);
                log_finish(&shape.id, p * n + index, &usage, &timing, reason);
                tot.timing.get_or_insert(timing);
            }
            RequestEvent::PromptLogprobs(lps) => {
                prompt_lps.insert(p, lps);
            }
            RequestEvent::Error(e) => {
                tracing::error!(error = %e, "request failed in the engine");
                tot.error = true;
            }
        }
    }
    if tot.error {
        return Err(ApiError::internal());
    }
    let mut idx: Vec<usize> = choices.keys().copied().collect();
    idx.sort_unstable();
    let out: Vec<Value> = idx
        .into_iter()
        .filter_map(|i| choices.remove(&i).map(|c| (i, c)))
        .map(|(i, c)| {
            let finish = c.finish.map(finish_str);
            match shape.kind {
                Kind::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": c.text, "tool_calls": []},
                    "logprobs": if shape.logprobs { shape.chat_logprobs(engine, &c.logprobs) } else { Value::Null },
                    "finish_reason": finish,
                    "stop_reason": c.stop_reason,
                }),
                Kind::Completion => {
                    let prefix = shape
                        .echo
                        .as_ref()
                        .and_then(|e| e.get(i / shape.n).cloned())
                        .unwrap_or_default();
                    let p = i / shape.n;
                    let lp = match (&shape.echo_prompt_ids, shape.logprobs) {
                        (Some(ids), true) => shape.echo_completion_logprobs(
                            engine,
                            ids.get(p).map(Vec::as_slice).unwrap_or(&[]),
                            prompt_lps.get(&p).map(Vec::as_slice).unwrap_or(&[]),
                            &c.logprobs,
                            prefix.chars().count(),
                        ),
                        (None, true) => {
                            shape.completion_logprobs(engine, &c.logprobs, prefix.chars().count())
                        }
                        _ => Value::Null,
                    };
                    json!({
                        "index": i,
                        "text": format!("{prefix}{}", c.text),
                        "logprobs": lp,
                        "finish_reason": finish,
                        "stop_reason": c.stop_reason,
                    })
                }
            }
        })
        .collect();
    let mut body = json!({
        "id": shape.id,
        "object": shape.object(false),
        "created": shape.created,
        "model": shape.model,
        "choices": out,
        "usage": shape.usage_json(&tot.usage),
    });
    if let Some(t) = &tot.timing {
        body["lantern_timing"] = timing_json(t);
    }
    Ok(Json(body).into_response())
}

/// Streaming state: turns engine events into SSE chunks.
struct StreamState {
    state: Arc<AppState>,
    engine: EngineHandle,
    shape: Shape,
    merged: SelectAll<BoxStream<'static, Tagged>>,
    pending: VecDeque<Event>,
    choices: HashMap<usize, Choice>,
    tot: Totals,
    done: bool,
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

impl StreamState {
    fn start(&mut self) {
        let total = self.shape.prompt_lens.len() * self.shape.n;
        for i in 0..total {
            let choice = match self.shape.kind {
                Kind::Chat => {
                    json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})
                }
                Kind::Completion => {
                    if self.shape.echo_prompt_ids.is_some() {
                        // Sent with the prompt logprobs when they arrive.
                        continue;
                    }
                    let Some(e) = &self.shape.echo else { continue };
                    let text = e.get(i / self.shape.n).cloned().unwrap_or_default();
                    json!({"index": i, "text": text, "logprobs": null, "finish_reason": null})
                }
            };
            let chunk = self.shape.chunk(vec![choice]);
            self.pending.push_back(data(&chunk));
        }
    }

    /// Characters of the echoed prompt in front of choice `i` (0 without `echo`).
    fn echo_chars(&self, i: usize) -> usize {
        self.shape
            .echo
            .as_ref()
            .and_then(|e| e.get(i / self.shape.n))
            .map(|t| t.chars().count())
            .unwrap_or(0)
    }

    fn content_chunk(&self, i: usize, text: &str, lps: &[TokenLogprob], offset: usize) -> Value {
        let choice = match self.shape.kind {
            Kind::Chat => json!({
                "index": i,
                "delta": {"content": text},
                "logprobs": if self.shape.logprobs { self.shape.chat_logprobs(&self.engine, lps) } else { Value::Null },
                "finish_reason": null,
            }),
            Kind::Completion => json!({
                "index": i,
                "text": text,
                "logprobs": if self.shape.logprobs { self.shape.completion_logprobs(&self.engine, lps, offset) } else { Value::Null },
                "finish_reason": null,
            }),
        };
        self.shape.chunk(vec![choice])
    }

    fn handle(&mut self, p: usize, ev: RequestEvent) {
        let n = self.shape.n;
        match ev {
            RequestEvent::Delta(d) => {
                let i = p * n + d.index;
                let echo_chars = self.echo_chars(i);
                let c = self.choices.entry(i).or_default();
                if let Some(prev) = c.last_time {
                    self.state
                        .metrics
                        .itl
                        .observe(d.time.duration_since(prev).as_secs_f64());
                }
                c.last_time = Some(d.time);
                let offset = echo_chars + c.token_chars;
                if self.shape.logprobs && self.shape.kind == Kind::Completion {
                    c.token_chars += d
                        .logprobs
                        .iter()
                        .map(|lp| {
                            self.shape
                                .token_str(&self.engine, lp.token_id)
                                .chars()
                                .count()
                        })
                        .sum::<usize>();
                }
                c.text.push_str(&d.text);
                let has_logprobs = self.shape.logprobs && !d.logprobs.is_empty();
                if d.text.is_empty() && !has_logprobs {
                    return;
                }
                let chunk = self.content_chunk(i, &d.text, &d.logprobs, offset);
                self.pending.push_back(data(&chunk));
            }
            RequestEvent::Finished {
                index,
                reason,
                stop_reason,
                text,
                usage,
                timing,
            } => {
                let i = p * n + index;
                if !text.is_empty() {
                    let offset = self.echo_chars(i)
                        + self.choices.get(&i).map(|c| c.token_chars).unwrap_or(0);
                    let chunk = self.content_chunk(i, &text, &[], offset);
                    self.pending.push_back(data(&chunk));
                }
                let choice = match self.shape.kind {
                    Kind::Chat => {
                        json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": finish_str(reason), "stop_reason": stop_reason_json(&stop_reason)})
                    }
                    Kind::Completion => {
                        json!({"index": i, "text": "", "logprobs": null, "finish_reason": finish_str(reason), "stop_reason": stop_reason_json(&stop_reason)})
                    }
                };
                let chunk = self.shape.chunk(vec![choice]);
                self.pending.push_back(data(&chunk));
                add_usage(&mut self.tot, index, n, &usage);
                observe_finish(&self.state.metrics, &timing);
                log_finish(&self.shape.id, i, &usage, &timing, reason);
                self.tot.timing.get_or_insert(timing);
            }
            RequestEvent::PromptLogprobs(lps) => {
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
                for i in p * n..(p + 1) * n {
                    let choice =
                        json!({"index": i, "text": text, "logprobs": lp, "finish_reason": null});
                    let chunk = self.shape.chunk(vec![choice]);
                    self.pending.push_back(data(&chunk));
                }
            }
            RequestEvent::Error(e) => {
                tracing::error!(error = %e, "request failed in the engine");
                self.tot.error = true;
                self.pending.push_back(data(&ApiError::internal().body()));
            }
        }
    }

    fn end(&mut self) {
        if self.shape.include_usage && !self.tot.error {
            let mut v = json!({
                "id": self.shape.id,
                "object": self.shape.object(true),
                "created": self.shape.created,
                "model": self.shape.model,
                "choices": [],
                "usage": self.shape.usage_json(&self.tot.usage),
            });
            if let Some(t) = &self.tot.timing {
                v["lantern_timing"] = timing_json(t);
            }
            self.pending.push_back(data(&v));
        }
        self.pending.push_back(Event::default().data("[DONE]"));
    }
}

fn stream_response(
    state: Arc<AppState>,
    engine: EngineHandle,
    shape: Shape,
    streams: Vec<RequestStream>,
) -> Response {
    let mut st = StreamState {
        state,
        engine,
        shape,
        merged: merge(streams),
        pending: VecDeque::new(),
        choices: HashMap::new(),
        tot: Totals::default(),
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
