//! HTTP routes, by endpoint family:
//! - [`chat`]: `POST /v1/chat/completions`;
//! - [`completions`]: `POST /v1/completions`;
//! - `output`, `accumulator`, `stream`: what both share: submitting the prompts and
//!   merging their event streams (`output`), one per-choice accumulator of the events
//!   (`accumulator`), rendered as one JSON body (`output`) or as SSE chunks (`stream`);
//! - [`tokenize`]: `POST /tokenize`, `POST /detokenize`; [`render`]: vLLM's
//!   `/v1/chat/completions/render` and `/v1/completions/render` (token ids and resolved
//!   sampling parameters, nothing generated);
//! - [`admin`]: `GET /v1/models`, `POST /v1/load_lora_adapter`, `POST /v1/unload_lora_adapter`;
//! - [`health`]: `GET /health` (and vLLM's `/ping`, GET or POST), `GET /version`,
//!   `GET /metrics`;
//! - [`debug`] (only with `--enable-debug-endpoints`): `GET /debug/kv_cache_blocks`,
//!   `POST /reset_prefix_cache`.
//!
//! This module holds the router, the shared state, `--api-key` auth and small helpers.

mod accumulator;
pub mod admin;
pub mod chat;
pub mod completions;
pub mod debug;
pub mod health;
mod output;
pub mod render;
mod stream;
pub mod tokenize;

use crate::chat_template::ChatTemplate;
use crate::error::ApiError;
use crate::generate::Generate;
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lantern_engine::{EngineHandle, LoraId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// What exists once the model is loaded. `G` is the engine behind the routes: the real
/// [`EngineHandle`], or a scripted one in tests.
#[derive(Debug)]
pub struct Ready<G = EngineHandle> {
    pub engine: G,
    pub template: Option<ChatTemplate>,
    /// Names a request's `model` may use; the first is reported in responses.
    pub served_names: Vec<String>,
    /// Where the model came from (hub id or path), reported as `root`.
    pub root: String,
    /// `--generation-config`: the model's defaults for fields a request leaves unset.
    pub sampling_defaults: crate::defaults::SamplingDefaults,
    /// The longest prompt in bytes that can fit the context ([`crate::prompt_cap`]),
    /// computed on first use; leave it `Default::default()`.
    pub prompt_byte_cap: OnceLock<Option<usize>>,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal (a hard deadline).
    pub shutdown_timeout: std::time::Duration,
    /// A request's headers must arrive within this (also the idle keep-alive limit).
    pub header_read_timeout: std::time::Duration,
    /// A request's body must arrive within this (408 otherwise).
    pub body_read_timeout: std::time::Duration,
    /// Open connections at most; more are closed when accepted.
    pub max_connections: usize,
    /// `--enable-auto-tool-choice`, `--tool-call-parser`.
    pub tools: crate::tools::ToolConfig,
    /// `--reasoning-parser`.
    pub reasoning_parser: Option<lantern_parsers::reasoning::ReasoningParserKind>,
    /// `--enable-debug-endpoints`: serve the [`debug`] routes.
    pub debug_endpoints: bool,
    /// `--lora-root`: where `POST /v1/load_lora_adapter` may read adapters (canonical
    /// paths). Empty: hub ids only.
    pub lora_roots: Vec<std::path::PathBuf>,
    /// Request preparations (JSON, chat template, tokenization) running at once on the
    /// blocking pool; more wait their turn.
    pub max_concurrent_preparations: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            max_body_bytes: 8 << 20,
            shutdown_timeout: std::time::Duration::from_secs(30),
            header_read_timeout: std::time::Duration::from_secs(30),
            body_read_timeout: std::time::Duration::from_secs(60),
            max_connections: 4096,
            tools: crate::tools::ToolConfig::default(),
            reasoning_parser: None,
            debug_endpoints: false,
            lora_roots: Vec::new(),
            max_concurrent_preparations: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
        }
    }
}

/// Shared state of all handlers.
#[derive(Debug)]
pub struct AppState<G = EngineHandle> {
    pub ready: OnceLock<Ready<G>>,
    pub shutting_down: AtomicBool,
    pub metrics: Metrics,
    pub config: ServerConfig,
    pub created: u64,
    /// Permits for request preparation on the blocking pool
    /// ([`AppState::prepare_blocking`]).
    prep: Arc<tokio::sync::Semaphore>,
}

impl<G: Generate> AppState<G> {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            ready: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            metrics: Metrics::default(),
            prep: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_preparations.max(1),
            )),
            config,
            created: unix_now(),
        }
    }

    /// Runs `f`, a request's CPU-heavy preparation (parsing the JSON body, rendering the
    /// chat template, tokenizing), on tokio's blocking pool, at most
    /// `config.max_concurrent_preparations` at a time: the async workers stay free for
    /// `/health`, streams and new connections however large the bodies are, and the
    /// memory tokenization takes is bounded. A preparation waits for a permit; a client
    /// that goes away meanwhile frees its place.
    pub async fn prepare_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self, &Ready<G>) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = Arc::clone(&self.prep)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let ready = state.ready()?;
            f(&state, ready)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "request preparation panicked");
            ApiError::internal()
        })?
    }

    fn ready(&self) -> Result<&Ready<G>, ApiError> {
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
pub fn router<G: Generate>(state: Arc<AppState<G>>) -> Router {
    let max_body = state.config.max_body_bytes;
    let mut router = Router::new();
    if state.config.debug_endpoints {
        router = router
            .route("/debug/kv_cache_blocks", get(debug::kv_cache_blocks::<G>))
            .route("/reset_prefix_cache", post(debug::reset_prefix_cache::<G>));
    }
    router
        .route("/v1/chat/completions", post(chat::chat::<G>))
        .route("/v1/completions", post(completions::completions::<G>))
        .route(
            "/v1/chat/completions/render",
            post(render::chat_render::<G>),
        )
        .route(
            "/v1/completions/render",
            post(render::completions_render::<G>),
        )
        .route("/v1/models", get(admin::models::<G>))
        .route("/v1/load_lora_adapter", post(admin::load_lora_adapter::<G>))
        .route(
            "/v1/unload_lora_adapter",
            post(admin::unload_lora_adapter::<G>),
        )
        .route("/health", get(health::health::<G>))
        .route("/ping", get(health::health::<G>).post(health::health::<G>))
        .route("/metrics", get(health::metrics::<G>))
        .route("/tokenize", post(tokenize::tokenize::<G>))
        .route("/detokenize", post(tokenize::detokenize::<G>))
        .route("/version", get(health::version))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body::<G>,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::<G>,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route", None)
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("method {method} is not allowed on this route"),
        param: None,
        retry_after: None,
    }
}

/// Paths open without `--api-key`, as in vLLM: health checks and metrics.
const OPEN_PATHS: [&str; 4] = ["/health", "/ping", "/metrics", "/version"];

/// The `endpoint` label of a path: the route itself for known routes (a fixed set), one
/// shared label for anything else (made-up paths must not grow or break `/metrics`).
fn endpoint_label(path: &str) -> &'static str {
    const ROUTES: [&str; 13] = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/chat/completions/render",
        "/v1/completions/render",
        "/v1/models",
        "/v1/load_lora_adapter",
        "/v1/unload_lora_adapter",
        "/health",
        "/ping",
        "/metrics",
        "/tokenize",
        "/detokenize",
        "/version",
    ];
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other")
}

/// Reads the whole request body within `--body-read-timeout` (408 after it; 413 over
/// `--max-request-body-bytes`), so a client trickling its body cannot hold a handler.
async fn read_body<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = state.config.max_body_bytes;
    let read = tokio::time::timeout(
        state.config.body_read_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: "request body too large".to_string(),
                param: None,
                retry_after: None,
            }
            .into_response()
        }
        Err(_) => {
            return ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the request body did not arrive within {} s",
                    state.config.body_read_timeout.as_secs_f64()
                ),
                param: None,
                retry_after: None,
            }
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// `--api-key`: every route but health checks and metrics requires
/// `Authorization: Bearer KEY` (constant-time compare).
async fn auth<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.config.api_key {
        if !OPEN_PATHS.contains(&req.uri().path()) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            use subtle::ConstantTimeEq;
            let ok: bool = given.as_bytes().ct_eq(key.as_bytes()).into();
            if !ok {
                state
                    .metrics
                    .count_request(endpoint_label(req.uri().path()), 401);
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

/// The LoRA adapter a request's `model` selects: `None` for the base model's names, the
/// adapter for a loaded adapter's name, 404 otherwise.
fn check_model<G: Generate>(ready: &Ready<G>, model: &str) -> Result<Option<LoraId>, ApiError> {
    if ready.served_names.iter().any(|n| n == model) {
        return Ok(None);
    }
    ready.engine.lora_id(model).map(Some).ok_or_else(|| {
        ApiError::not_found(
            format!("The model `{model}` does not exist."),
            Some("model"),
        )
    })
}

/// Tokenizes `text` (the request field `param`), refusing text too long to fit the
/// context before paying for its tokenization.
fn encode<G: Generate>(
    ready: &Ready<G>,
    text: &str,
    add_special: bool,
    param: &str,
) -> Result<Vec<u32>, ApiError> {
    let max_model_len = ready.engine.max_model_len();
    let cap = *ready.prompt_byte_cap.get_or_init(|| {
        crate::prompt_cap::prompt_byte_cap(ready.engine.tokenizer(), max_model_len)
    });
    if let Some(cap) = cap.filter(|&c| text.len() > c) {
        return Err(ApiError::bad_request(
            format!(
                "the prompt is {} bytes, but this model's maximum context length is {max_model_len} tokens and no text longer than {cap} bytes fits it; shorten the prompt",
                text.len()
            ),
            Some(param),
        ));
    }
    ready
        .engine
        .tokenizer()
        .encode(text, add_special)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| {
            tracing::warn!(error = %e, "tokenization failed");
            ApiError::bad_request("the prompt could not be tokenized", Some(param))
        })
}

/// Counts a generation request in `lantern_requests_total` and logs a refusal.
fn respond<G>(state: &AppState<G>, endpoint: &str, r: Result<Response, ApiError>) -> Response {
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
