//! Models and LoRA adapters: `GET /v1/models`, vLLM's `POST /v1/load_lora_adapter` and
//! `POST /v1/unload_lora_adapter` (plain-text success bodies, as vLLM answers).

use super::{body_bytes, AppState};
use crate::error::ApiError;
use crate::generate::Generate;
use crate::protocol::{parse_body, LoadLoraRequest, ModelCard, ModelList, UnloadLoraRequest};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// The served model's names, then the loaded adapters (with the base model as `parent`).
pub async fn models<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
) -> Result<Json<ModelList>, ApiError> {
    let ready = state.ready()?;
    let max_model_len = ready.engine.max_model_len();
    let mut data: Vec<ModelCard> = ready
        .served_names
        .iter()
        .map(|n| ModelCard {
            id: n.clone(),
            object: "model",
            created: state.created,
            owned_by: "lantern",
            root: ready.root.clone(),
            parent: None,
            max_model_len,
        })
        .collect();
    let base = ready.served_names.first().cloned().unwrap_or_default();
    data.extend(ready.engine.loras().into_iter().map(|l| ModelCard {
        id: l.name,
        object: "model",
        created: l.created,
        owned_by: "lantern",
        root: l.source,
        parent: Some(base.clone()),
        max_model_len,
    }));
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
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

pub async fn load_lora_adapter<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
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

pub async fn unload_lora_adapter<G: Generate>(
    State(state): State<Arc<AppState<G>>>,
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
