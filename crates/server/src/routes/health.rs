//! Operational endpoints (never behind `--api-key`): `GET /health`, `GET /version`,
//! `GET /metrics`.

use super::AppState;
use crate::generate::Generate;
use crate::protocol::{HealthResponse, VersionResponse};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lantern_engine::EngineSnapshot;
use std::sync::Arc;
use std::time::Duration;

/// 200 once the model is loaded; 503 while loading and once shutting down.
pub async fn health<G: Generate>(State(state): State<Arc<AppState<G>>>) -> Response {
    match state.ready() {
        Ok(_) => (StatusCode::OK, Json(HealthResponse { status: "ok" })).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Prometheus text exposition of the server's and the engine's metrics.
pub async fn metrics<G: Generate>(State(state): State<Arc<AppState<G>>>) -> Response {
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
async fn current_snapshot<G: Generate>(engine: &G) -> EngineSnapshot {
    match tokio::time::timeout(Duration::from_secs(1), engine.fresh_snapshot()).await {
        Ok(Ok(s)) => s,
        _ => engine.snapshot(),
    }
}
