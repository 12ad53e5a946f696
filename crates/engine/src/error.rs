//! Engine errors.

/// Why a request was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SubmitError {
    /// A parameter or the prompt is out of range; the server maps this to 400 naming
    /// [`ValidationError::field`](crate::ValidationError::field).
    #[error(transparent)]
    Invalid(#[from] crate::validation::ValidationError),
    /// The engine refused the request's contents after validation (the prompt cannot be
    /// decoded, LoRA is disabled); 400 naming `field`.
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
    /// The structured-output matcher failed mid-generation (logged); only this request ends.
    #[error("the request's output constraint failed")]
    Constraint,
    /// The server had no room to schedule part of an accepted request (a bug: admission
    /// reserves room for every sequence).
    #[error("the server could not schedule this request's completions")]
    Capacity,
}

/// Why the engine could not start (`lantern serve` prints it and exits).
#[derive(Debug, thiserror::Error)]
pub enum EngineStartError {
    #[error("--max-model-len {requested} is larger than the model's context length {model_max}")]
    MaxModelLen { requested: usize, model_max: usize },
    #[error(transparent)]
    Lora(#[from] crate::lora::LoraConfigError),
    /// The KV cache, LoRA slots or CUDA graphs could not be set up.
    #[error(transparent)]
    Runtime(#[from] lantern_runtime::RuntimeError),
    #[error("scheduler settings: {0}")]
    Scheduler(#[from] lantern_scheduler::ConfigError),
    #[error("cannot spawn the engine thread: {0}")]
    Spawn(std::io::Error),
    /// The KV-events sockets could not be bound or connected.
    #[error(transparent)]
    KvEvents(#[from] lantern_kv_events::PublisherError),
    #[error(
        "--kv-events-config needs prefix caching: KV-cache events describe the prefix cache (drop --no-enable-prefix-caching)"
    )]
    KvEventsWithoutPrefixCaching,
}
