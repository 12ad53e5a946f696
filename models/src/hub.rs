//! Fetching a model from the Hugging Face hub with `hf-hub` (honours `HF_HOME`,
//! `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`). Returns a directory in HF layout:
//! the snapshot folder of the local cache.

use crate::error::{ModelError, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use std::path::PathBuf;

const REQUIRED: &[&str] = &["config.json", "tokenizer.json"];
const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
];

fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").ok().as_deref(),
        Some("1") | Some("true") | Some("TRUE") | Some("yes") | Some("ON") | Some("on")
    )
}

fn err(model: &str, message: impl Into<String>) -> ModelError {
    ModelError::Source {
        model: model.to_string(),
        message: message.into(),
    }
}

fn repo_of(model_id: &str) -> Repo {
    let (id, revision) = match model_id.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (model_id.to_string(), "main".to_string()),
    };
    Repo::with_revision(id, RepoType::Model, revision)
}

fn api_repo(model_id: &str, progress: bool) -> Result<hf_hub::api::sync::ApiRepo> {
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let mut builder = ApiBuilder::from_env().with_progress(progress);
    if token.is_some() {
        builder = builder.with_token(token);
    }
    let api = builder
        .build()
        .map_err(|e| err(model_id, format!("cannot create hub client: {e}")))?;
    Ok(api.repo(repo_of(model_id)))
}

/// Files of a PEFT LoRA adapter repository.
const ADAPTER_FILES: &[&str] = &["adapter_config.json", "adapter_model.safetensors"];

/// Downloads (or finds in the cache) a PEFT adapter (`adapter_config.json` +
/// `adapter_model.safetensors`) and returns the directory that holds it.
pub fn download_adapter(adapter_id: &str, progress: bool) -> Result<PathBuf> {
    if offline() {
        return from_cache_only(adapter_id, ADAPTER_FILES);
    }
    let api_repo = api_repo(adapter_id, progress)?;
    let mut dir: Option<PathBuf> = None;
    for f in ADAPTER_FILES {
        let p = api_repo.get(f).map_err(|e| {
            err(
                adapter_id,
                format!("cannot download {f}: {e} (check the adapter id, your network and HF_TOKEN; only safetensors adapters are supported)"),
            )
        })?;
        dir = p.parent().map(PathBuf::from);
    }
    dir.ok_or_else(|| err(adapter_id, "download produced no files"))
}

/// Downloads (or finds in the cache) the files of `model_id` and returns the directory
/// that holds them.
pub fn download(model_id: &str, progress: bool) -> Result<PathBuf> {
    if offline() {
        return from_cache_only(model_id, REQUIRED);
    }
    let api_repo = api_repo(model_id, progress)?;
    let mut dir: Option<PathBuf> = None;
    for f in REQUIRED {
        let p = api_repo.get(f).map_err(|e| {
            err(
                model_id,
                format!("cannot download {f}: {e} (check the id, your network, and HF_TOKEN for gated models; set HF_HUB_OFFLINE=1 to use the local cache only)"),
            )
        })?;
        dir = p.parent().map(PathBuf::from);
    }
    for f in OPTIONAL {
        if let Err(e) = api_repo.get(f) {
            tracing::debug!(file = f, error = %e, "optional file not downloaded");
        }
    }
    match api_repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
                path: index.clone(),
                source,
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    path: index.clone(),
                    source,
                })?;
            let mut shards: Vec<String> = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.values()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                api_repo
                    .get(&s)
                    .map_err(|e| err(model_id, format!("cannot download {s}: {e}")))?;
            }
        }
        Err(_) => {
            api_repo.get("model.safetensors").map_err(|e| {
                err(
                    model_id,
                    format!("cannot download model.safetensors (and no index): {e}"),
                )
            })?;
        }
    }
    dir.ok_or_else(|| err(model_id, "download produced no files"))
}

fn from_cache_only(model_id: &str, files: &[&str]) -> Result<PathBuf> {
    let cache = Cache::from_env().repo(repo_of(model_id));
    let mut dir = None;
    for f in files {
        let p = cache.get(f).ok_or_else(|| {
            err(
                model_id,
                format!("HF_HUB_OFFLINE is set and {f} is not in the local cache"),
            )
        })?;
        dir = p.parent().map(PathBuf::from);
    }
    dir.ok_or_else(|| err(model_id, "not in the local cache"))
}
