//! Debugging endpoints, served only with `--enable-debug-endpoints` (like vLLM's dev-mode
//! routes, they are not behind `--api-key`: enable them on trusted networks only).
//! - `GET /debug/kv_cache_blocks`: the blocks in the prefix cache by the ids KV-cache events
//!   publish, and the sequence number of the last event batch sent before the answer, so a
//!   subscriber can check its view of the cache against the engine's;
//! - `POST /reset_prefix_cache`: empties the prefix cache (vLLM's endpoint; subscribers get
//!   `AllBlocksCleared`); 409 while requests still hold blocks.

use super::AppState;
use crate::error::ApiError;
use crate::generate::Generate;
use crate::protocol::{KvCacheBlocksResponse, ResetPrefixCacheResponse};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;

pub async fn kv_cache_blocks<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
) -> Result<Json<KvCacheBlocksResponse>, ApiError> {
    let b = state.ready()?.engine.kv_cache_blocks().await?;
    Ok(Json(KvCacheBlocksResponse {
        block_size: b.block_size,
        num_blocks: b.block_hashes.len(),
        block_hashes: b.block_hashes,
        kv_events_enabled: b.events_enabled,
        last_event_seq: b.last_event_seq,
        kv_events_dropped: b.events_dropped,
    }))
}

pub async fn reset_prefix_cache<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
) -> Result<Json<ResetPrefixCacheResponse>, ApiError> {
    if state.ready()?.engine.reset_prefix_cache().await? {
        Ok(Json(ResetPrefixCacheResponse { reset: true }))
    } else {
        Err(ApiError {
            status: StatusCode::CONFLICT,
            message:
                "the prefix cache was not reset: requests still hold KV blocks; retry when idle"
                    .into(),
            param: None,
            retry_after: Some(1),
        })
    }
}
