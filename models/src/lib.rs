//! Model definitions for Lantern.
//!
//! - [`ModelConfig`] normalises `config.json` (or GGUF metadata) for Llama, Mistral,
//!   Qwen2 and Qwen3, rejecting unsupported settings with a message naming the field.
//! - [`CausalLm`] is the one decoder implementation. It takes a flattened
//!   [`BatchInputs`] (any mix of prefill chunks and decode tokens) and one
//!   [`LayerKvCache`] per layer, and returns logits only for the rows to sample.
//!   Attention always goes through the paged kernels in `lantern-kernels`.
//! - [`load_model`] resolves a local directory, a `.gguf` file or a hub id.
//! - [`Linear`] is the single projection type (multi-LoRA hooks in here); q/k/v and
//!   gate/up are each one fused `Linear` unless [`ModelOptions::fused`] is off.

mod config;
mod error;
pub mod gguf_tokenizer;
pub mod hub;
mod linear;
mod loader;
mod lora;
pub mod profile;
mod rope;
mod transformer;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::{ModelError, Result, ADAPTER_NOT_FOUND};
pub use linear::{
    candle_cpu_qmatmul_used, quantized_from_bytes, quantized_row_bytes, Linear, LinearPart, Proj,
    QuantizedWeights, WeightLayout,
};
pub use loader::{
    load_gguf, load_gguf_quantized, load_hf_dir, load_model, DTypeChoice, LoadOptions, LoadedModel,
    ModelMeta, ModelSource, Quantization,
};
pub use lora::{proj_dims, LoraAdapter, LoraStack, LORA_TARGETS};
pub use rope::{inv_freq, RotaryEmbedding};
pub use transformer::{BatchInputs, CausalLm, LayerKvCache, ModelOptions};
