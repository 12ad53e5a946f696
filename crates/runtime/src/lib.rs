//! The model runner: owns the device tensors (weights through [`lantern_models::CausalLm`],
//! the paged KV cache) and turns a tensor-free description of one step ([`SeqChunk`]s:
//! which tokens of which sequence, at which positions, in which blocks) into a flattened
//! [`BatchInputs`], runs the forward pass and returns logits for the rows to sample.
//!
//! The scheduler never sees a tensor; the model never sees a request.
//!
//! [`null`] is the null device: a stand-in for the model that waits out a roofline estimate
//! of each step and returns cheap deterministic logits (`--null-device`, host-path benchmarks).
//!
//! [`device`] opens the device `--device` names (CUDA behind the `cuda` feature) and
//! [`memory`] sizes the KV cache from the GPU memory left after loading
//! (`--gpu-memory-utilization`); [`heap`] hands freed host memory back to the OS.

pub mod device;
mod error;
#[cfg(feature = "cuda")]
pub mod graphs;
pub mod heap;
pub mod memory;
pub mod null;
mod runner;
pub mod sampler;

pub use device::{DeviceMemory, DeviceSpec};
pub use error::{Result, RuntimeError};
pub use memory::GpuMemoryBudget;
pub use null::{NullModel, NullSpec};
#[doc(hidden)]
pub use runner::set_cpu_keep_awake;
pub use runner::{
    ForwardOutput, KvCacheDtype, KvCacheSize, ModelBackend, ModelRunner, RunnerConfig,
    RunnerOutput, SeqChunk,
};
pub use sampler::{SampleRow, SampledToken, SamplingParams};
