//! The Lantern engine: one thread that owns the scheduler, the model runner and every
//! request's decoding state, driven by an explicit [`Command`] enum.
//!
//! - [`Engine::start`] spawns the engine thread and returns an [`EngineHandle`].
//! - [`EngineHandle::submit`] adds a request and returns a [`RequestStream`] of
//!   [`RequestEvent`]s: text deltas (UTF-8 safe, stop strings never leaked), then one
//!   `Finished` with the reason, usage and timings. Dropping the stream cancels the request;
//!   its KV blocks are freed at the next step.
//! - Each step is `schedule -> execute -> update`: the scheduler (integers only) picks tokens
//!   under the budget, the runner runs one flattened batch, the sampler picks tokens, and the
//!   engine detokenizes, checks EOS / stop strings / limits and emits events.
//! - [`EngineSnapshot`] (a `watch` channel) publishes per-step stats for metrics.

pub mod detok;
mod engine;
mod error;
mod lora;
mod params;
pub mod stop;

pub use engine::{
    Engine, EngineConfig, EngineHandle, EngineSnapshot, ModelInfo, RequestStream, StepPhaseSeconds,
    StepStats,
};
pub use error::{EngineError, SubmitError};
pub use lantern_runtime::{KvCacheSize, ModelBackend, SamplingParams};
pub use lantern_scheduler::SchedulingPolicy;
pub use lora::{LoraConfig, LoraError, LoraInfo};
pub use params::{
    FinishReason, GenerationParams, ParamError, RequestEvent, RequestTiming, StopReason,
    TokenDelta, TokenLogprob, Usage,
};
