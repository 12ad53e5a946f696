//! Runtime errors.

/// Errors from preparing inputs, running the model or sampling.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The step description is inconsistent (a bug in the caller, reported, never a panic).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The device cannot be opened or queried (`--device`).
    #[error("{0}")]
    Device(String),
    /// The KV cache cannot be sized as asked.
    #[error("KV cache: {0}")]
    KvCache(String),
    #[error(transparent)]
    Model(#[from] lantern_models::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, RuntimeError>;
