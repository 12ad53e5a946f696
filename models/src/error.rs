//! Errors raised while loading or running a model.

use std::path::PathBuf;

/// Everything that can go wrong in `lantern-models`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `config.json` (or GGUF metadata) is missing a field, has a bad value or asks for
    /// something we do not support. The message names the field.
    #[error("unsupported or invalid model config: `{field}`: {message}")]
    Config { field: String, message: String },

    /// A file we need could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file did not parse.
    #[error("cannot parse {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The model source (local path or hub id) could not be resolved or downloaded.
    #[error("cannot load model `{model}`: {message}")]
    Source { model: String, message: String },

    /// The tokenizer could not be built or used.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// A tensor operation failed (shape mismatch, missing weight, device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a client is told when an adapter source resolves to nothing it may load (the
/// same words whatever the reason, so they reveal nothing about the server's disk).
pub const ADAPTER_NOT_FOUND: &str = "the adapter was not found: `lora_path` must be a directory under one of the server's --lora-root directories, or a Hugging Face hub id (owner/name)";

impl ModelError {
    /// What a remote client may be told: no server paths, no OS error text, no Rust
    /// internals. The full error ([`std::fmt::Display`]) is for the server's log.
    pub fn client_message(&self) -> String {
        fn file_name(p: &std::path::Path) -> String {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "a required file".into())
        }
        match self {
            // `field` is a path-bearing label for adapter errors (`LoRA adapter DIR`).
            Self::Config { field, message } if field.starts_with("LoRA adapter ") => {
                message.clone()
            }
            Self::Config { field, message } => format!("`{field}`: {message}"),
            Self::Io { path, source } => {
                let why = match source.kind() {
                    std::io::ErrorKind::NotFound => "it is missing",
                    std::io::ErrorKind::PermissionDenied => "the server may not read it",
                    _ => "it could not be read",
                };
                format!("cannot read `{}`: {why}", file_name(path))
            }
            Self::Json { path, source } => format!(
                "`{}` is not valid JSON (line {}, column {})",
                file_name(path),
                source.line(),
                source.column()
            ),
            Self::Source { .. } => ADAPTER_NOT_FOUND.into(),
            Self::Tokenizer(_) => "the tokenizer could not be read".into(),
            Self::Candle(_) => {
                "the adapter's tensors could not be read or do not fit the base model".into()
            }
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
