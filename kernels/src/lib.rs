//! Lantern custom ops: the paged KV cache write and paged attention.
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
//!
//! All ops are device-agnostic at the API level: they validate shapes, dtypes and devices
//! up front and then dispatch through candle's custom-op traits (`InplaceOp3` for the cache
//! write, `CustomOp3` for attention and LoRA). Today only the CPU implementation exists (module
//! `cpu`, parallelised with rayon); a CUDA implementation will be added behind the `cuda`
//! feature by filling in the `cuda_fwd` hooks of the same op structs.
//!
//! [`reference`] holds slow, obviously-correct implementations built from plain `Vec<f32>`
//! math. They are the test oracle for the fast CPU kernels here and for the CUDA kernels
//! later.
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
pub mod lora;
mod metadata;
pub mod reference;

pub use attention::paged_attention;
pub use cache_write::write_kv_cache;
pub use lora::{lora_add, LoraBatch, LoraWeights, LORA_SGMV_MIN_TOKENS};
pub use metadata::PagedAttnMetadata;
