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
use std::path::{Path, PathBuf};
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

/// What a run-time `lora_path` may load: a directory under one of `roots` (the path
/// absolute, or relative to a root; symlinks and `..` resolved before the check), or else
/// a hub id. Whatever the reason a path is refused, the answer is the same, so a client
/// learns nothing about the server's disk outside the roots.
fn confine_lora_path(roots: &[PathBuf], lora_path: &str) -> Result<String, &'static str> {
    let p = Path::new(lora_path);
    if p.is_absolute() && roots.is_empty() {
        return Err(LOCAL_LOADS_OFF);
    }
    let candidates: Vec<PathBuf> = if p.is_absolute() {
        vec![p.to_path_buf()]
    } else {
        roots.iter().map(|r| r.join(p)).collect()
    };
    for c in candidates {
        if let Ok(real) = std::fs::canonicalize(&c) {
            if real.is_dir() && roots.iter().any(|r| real.starts_with(r)) {
                return Ok(real.display().to_string());
            }
        }
    }
    // A hub id, unless it also names a local directory (relative to the server's working
    // directory) that the engine would read instead.
    if lantern_models::LoraAdapter::looks_like_hub_id(lora_path) && !p.exists() {
        return Ok(lora_path.to_string());
    }
    if roots.is_empty() && !lantern_models::LoraAdapter::looks_like_hub_id(lora_path) {
        return Err(LOCAL_LOADS_OFF);
    }
    Err(lantern_models::ADAPTER_NOT_FOUND)
}

const LOCAL_LOADS_OFF: &str = "this server loads adapters at run time from the Hugging Face hub only (`lora_path`: owner/name); to load local directories, start it with --lora-root DIR";

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
    if !ready.engine.lora_enabled() {
        return Err(lora_error(lantern_engine::LoraError::Disabled));
    }
    let engine = ready.engine.clone();
    let n = name.clone();
    let roots = state.config.lora_roots.clone();
    let info = tokio::task::spawn_blocking(move || {
        let source = confine_lora_path(&roots, &path).map_err(|message| {
            lantern_engine::LoraError::Invalid {
                name: n.clone(),
                message: message.to_string(),
            }
        })?;
        engine.load_lora_blocking(&n, &source)
    })
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lantern-lora-root-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::canonicalize(&d).unwrap()
    }

    #[test]
    fn runtime_paths_stay_under_the_roots() {
        let base = tmp("confine");
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("ada")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let roots = vec![root.clone()];
        let ada = root.join("ada").display().to_string();
        assert_eq!(confine_lora_path(&roots, "ada"), Ok(ada.clone()));
        assert_eq!(confine_lora_path(&roots, &ada), Ok(ada.clone()));
        // Outside, escaping with `..` or a symlink, or missing: one answer for all.
        let refused = [
            outside.display().to_string(),
            "../outside".to_string(),
            root.join("../outside").display().to_string(),
            "escape".to_string(),
            root.join("missing").display().to_string(),
            "/etc".to_string(),
            "./nothing-here".to_string(),
        ];
        for p in &refused {
            assert_eq!(
                confine_lora_path(&roots, p),
                Err(lantern_models::ADAPTER_NOT_FOUND),
                "{p}"
            );
        }
        // Hub ids still load from the hub.
        assert_eq!(
            confine_lora_path(&roots, "owner/adapter"),
            Ok("owner/adapter".to_string())
        );
        // Without roots: no local paths at all, whether they exist or not.
        assert_eq!(confine_lora_path(&[], &ada), Err(LOCAL_LOADS_OFF));
        assert_eq!(
            confine_lora_path(&[], "/nonexistent/x"),
            Err(LOCAL_LOADS_OFF)
        );
        assert_eq!(
            confine_lora_path(&[], "owner/adapter"),
            Ok("owner/adapter".to_string())
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
