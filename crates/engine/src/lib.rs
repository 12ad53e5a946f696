//! The Lantern engine: one thread that owns the scheduler, the model runner and every
//! request's decoding state, driven by an explicit command enum.
//!
//! Layout (vLLM v1's split: core loop / output processing / parallel sampling):
//! - `engine`: [`Engine::start`] sizes the KV cache, builds the scheduler and spawns the
//!   engine thread; start-up failures are an [`EngineStartError`].
//! - `handle`: [`EngineHandle`] (cloneable; submit, abort by dropping the
//!   [`RequestStream`], LoRA load/unload, snapshots) and the commands it sends.
//! - `core`: the engine thread's loop and its `schedule -> execute -> update` step. The
//!   runner returns host data only (`RunnerOutput`: sampled ids, logprobs, all-logits rows),
//!   so this crate holds no tensors.
//! - `requests`: the table of live sequences, `n > 1` groups, held back siblings and groups
//!   waiting for an adapter, kept consistent in one place.
//! - `output`: per-sequence output processing (EOS / stop ids / stop strings, detokenizing,
//!   logprobs, prompt logprobs, finishing and freeing exactly once).
//! - `siblings`: `n > 1` completions released once the leader's prompt is cached.
//! - `lora` (registry, host cache, limits) and `lora_loads` (background disk reads, device
//!   slot copies).
//! - [`detok`] (incremental, UTF-8 safe) and [`stop`] (stop strings across token
//!   boundaries, never leaked).
//! - [`validation`]: the one validator of request parameters ([`GenerationParams`] ->
//!   [`ValidParams`], the only type [`EngineHandle::submit`] takes) and its bounds.
//! - [`structured`]: structured outputs (llguidance grammars compiled on the submitting
//!   thread, one matcher per sequence, allowed-token bitmasks applied before sampling).
//! - `kv_events`: the scheduler's prefix-cache events turned into vLLM's KV-cache events once
//!   per step and handed to the publisher thread (`lantern-kv-events`); [`KvCacheBlocks`]
//!   is the debug view of the cached blocks.
//! - [`EngineSnapshot`] (a `watch` channel) publishes per-step stats for metrics.

mod config;
mod core;
pub mod detok;
mod engine;
mod error;
mod handle;
mod kv_events;
mod lora;
mod lora_loads;
mod output;
mod params;
mod requests;
mod siblings;
mod stats;
mod step_cost;
pub mod stop;
pub mod structured;
pub mod validation;

pub use config::{EngineConfig, ModelInfo};
pub use engine::Engine;
pub use error::{EngineError, EngineStartError, SubmitError};
pub use handle::{EngineHandle, RequestStream};
pub use kv_events::{external_hash, KvCacheBlocks};
pub use lantern_runtime::{KvCacheDtype, KvCacheSize, ModelBackend, SamplingParams};
pub use lantern_scheduler::SchedulingPolicy;
pub use lantern_scheduler::{LoraId, SeqId};
pub use lora::{LoraConfig, LoraConfigError, LoraError, LoraInfo};
pub use params::{
    FinishReason, GenerationParams, RequestEvent, RequestId, RequestTiming, StopReason, TokenDelta,
    TokenLogprob, Usage,
};
pub use stats::{
    EngineFacts, EngineSnapshot, Histogram, LoraRequests, StepPhaseSeconds, StepStats,
    ITERATION_TOKENS_BUCKETS, ITL_SECONDS_BUCKETS, MASK_SECONDS_BUCKETS, TTFT_SECONDS_BUCKETS,
};
pub use structured::{StructuredOutput, StructuredRequest};
pub use validation::{RequestLimits, ValidParams, ValidationError};
