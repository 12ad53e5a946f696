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

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
