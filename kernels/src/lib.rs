//! Lantern custom ops: paged KV cache write, paged attention, multi-LoRA, fused norms and
//! activations, token sampling.
//!
//! The model crates have exactly one attention path, and it goes through this crate:
//!
//! 1. [`write_kv_cache`] scatters this step's keys and values (one row per token of the
//!    flattened batch) into the persistent, block-paged KV cache of a layer, in place.
//! 2. [`paged_attention`] runs causal attention for every query token of a flattened varlen
//!    batch that mixes decode tokens and (chunked) prefill, reading keys and values from the
//!    cache through each sequence's block table.
//! 3. [`lora_add`] adds the multi-LoRA term `scale_i * (x A_i^T) B_i^T` of every token's
//!    adapter slot `i` to a projection's output ([`LoraWeights`] hold the stacked adapters,
//!    [`LoraBatch`] the per-token slots and same-slot segments of a step).
//! 4. [`rms_norm`] / [`fused_add_rms_norm`], [`rotary_embedding_inplace`] and
//!    [`silu_mul`] / [`silu_and_mul`]: the fused row/elementwise ops of a decoder layer.
//! 5. [`sample_tokens`] picks one token per logits row on the logits' device (greedy, or
//!    temperature / top-k / top-p / min-p with penalties and a per-row uniform draw;
//!    [`SamplingBatch`] holds the per-row parameters).
//!
//! All ops are device-agnostic at the API level: they validate shapes, dtypes and devices
//! up front and then dispatch through candle's custom-op traits (`cpu_fwd` / `cuda_fwd` of
//! the same op struct). The CPU implementations live in module `cpu` (parallelised with
//! rayon); the CUDA ones (feature `cuda`) in module `cuda`, with the kernels in
//! `kernels/cuda/*.cu` compiled by `build.rs` (see `kernels/README.md`). On CUDA the
//! metadata tensors (slots, block tables, adapter slots) are not copied back to the host for
//! validation: out-of-range indices are skipped by the kernels rather than reported.
//!
//! Why hand-written: candle has no paged KV cache ops, no varlen paged attention, no
//! per-token multi-LoRA op and no on-device sampler; the crates that have some of them
//! (`candle-flash-attn`, vLLM's kernels) fetch CUTLASS or need Python/PyTorch at build time,
//! and none has a CPU version that the CUDA kernels can be tested against.
//!
//! [`reference`] holds slow, obviously-correct implementations built from plain `Vec<f32>`
//! math. They are the test oracle for the CPU kernels, which are in turn the oracle of the
//! CUDA kernels (`tests/gpu.rs`).
//!
//! # Cache layout
//!
//! A layer's key cache and value cache are each a contiguous tensor of shape
//! `(num_blocks, block_size, num_kv_heads, head_dim)`. Token position `t` of a sequence lives
//! in block `block_tables[s][t / block_size]` at offset `t % block_size`; its *slot* is
//! `block_id * block_size + offset`.

mod attention;
mod cache_write;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod lora;
mod matmul;
mod metadata;
mod norm;
mod qmatmul;
pub mod reference;
pub mod sampling;
mod upload;

pub use attention::paged_attention;
pub use cache_write::write_kv_cache;
#[doc(hidden)]
pub use cpu::attention::set_attention_rows_together;
pub use lora::{lora_add, LoraBatch, LoraWeights, LORA_SGMV_MIN_TOKENS};
pub use matmul::{
    cpu_matmul, skinny_matmul, tiled_matmul, CpuMatmulPath, SKINNY_MATMUL_MAX_ROWS,
    TILED_MATMUL_MAX_ROWS,
};
pub use metadata::PagedAttnMetadata;
pub use norm::{fused_add_rms_norm, rms_norm, rotary_embedding_inplace, silu_and_mul, silu_mul};
pub use qmatmul::{
    dequantized_matmul, dequantized_matmul_rows, quantized_matmul, quantized_matmul_path,
    quantized_matmul_supports, QuantizedMatmulPath, CANDLE_QMATMUL_MAX_ROWS,
    QUANTIZED_INT8_MAX_ROWS,
};
pub use sampling::{sample_tokens, SamplingBatch, SamplingParams, SamplingRow};
pub use upload::copy_from_host;
