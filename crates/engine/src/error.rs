//! Engine errors.

/// Why a request was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SubmitError {
    /// A parameter is out of range; the server maps this to 400 naming `field`.
    #[error("{message}")]
    InvalidParam { field: String, message: String },
    /// The prompt (plus max_tokens) cannot fit the context or the KV cache.
    #[error("{0}")]
    TooLong(String),
    /// The waiting queue is full; try again later (429).
    #[error("the server is overloaded: {0}")]
    Overloaded(String),
    /// The engine is shutting down or stopped (503).
    #[error("the engine is not running")]
    EngineStopped,
    /// The request names a LoRA adapter that is not (or no longer) loaded (404).
    #[error("the LoRA adapter is not loaded")]
    UnknownAdapter,
}

/// An error that ends a request after it was accepted (a runtime failure). Internal
/// details are logged, not sent to clients.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("the model failed while running this request")]
    Execution,
    #[error("the engine stopped before this request finished")]
    Stopped,
    #[error("the request's LoRA adapter could not be loaded")]
    AdapterLoad,
}
