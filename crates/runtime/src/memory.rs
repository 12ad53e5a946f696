//! KV cache sizing from device memory (`--gpu-memory-utilization`).
//!
//! After the weights are on the device, the runner asks the driver for free and total
//! memory and gives the KV cache what is left of `total * utilization` once everything
//! already allocated and a reserve for one step's activations are taken out:
//!
//! ```text
//! limit      = total * utilization
//! in_use     = total - free          (weights, CUDA context, cuBLAS, other processes)
//! kv_bytes   = limit - in_use - activation_reserve - lora_slots
//! num_blocks = kv_bytes / (block_size * kv_bytes_per_token)
//! ```
//!
//! The arithmetic is the pure function [`plan_kv_cache`], unit-tested on the CPU; the
//! activation reserve is [`activation_reserve_bytes`] (see there for what it counts).

use lantern_models::{proj_dims, ModelConfig, Proj, LORA_TARGETS};

use crate::device::{gib, DeviceMemory};

/// `--gpu-memory-utilization` and the step shape that sizes the activation reserve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuMemoryBudget {
    /// Fraction of the device's total memory this process may use (weights, activations,
    /// KV cache), in (0, 1].
    pub utilization: f64,
    /// Most tokens in one step (`--max-num-batched-tokens`).
    pub max_num_batched_tokens: usize,
    /// `(max_loras, max_rank)` when LoRA slots will be allocated after the KV cache
    /// (`ModelRunner::enable_lora`); their bytes are kept out of the KV budget.
    pub lora: Option<(usize, usize)>,
}

/// Fixed part of the reserve: cuBLAS workspaces, kernel scratch buffers, allocator
/// fragmentation.
pub const FIXED_RESERVE_BYTES: u64 = 512 << 20;

/// Device memory one step may need on top of weights and KV cache, for `tokens` tokens
/// (`--max-num-batched-tokens`) in a dtype of `dtype_size` bytes.
///
/// Counted per token (h = hidden, i = intermediate, q = heads * head_dim,
/// kv = kv_heads * head_dim), at the peak of a layer: the residual stream, its norm and
/// the attention output (3h); q, k, v before and after rotary (2 (q + 2kv)); the MLP's
/// gate, activated gate, up and their product, of which at most three live at once (3i).
/// Layers run one after another, so one layer's worth is live at a time.
/// Logits: every row of the step may ask for logits (prompt logprobs), so `tokens` rows of
/// `vocab` in the model dtype (lm_head output) plus their f32 copy.
/// The sum gets 25% headroom (temporaries of fused candle ops, rounding of allocations)
/// plus [`FIXED_RESERVE_BYTES`].
///
/// For Llama-3.1-8B in bf16 at 2048 tokens this is about 2.4 GiB.
pub fn activation_reserve_bytes(cfg: &ModelConfig, dtype_size: usize, tokens: usize) -> u64 {
    let h = cfg.hidden_size as u64;
    let i = cfg.intermediate_size as u64;
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let b = dtype_size as u64;
    let t = tokens as u64;
    let per_token = b * (3 * h + 2 * (q + 2 * kv) + 3 * i);
    let logits = t * cfg.vocab_size as u64 * (b + 4);
    (t * per_token + logits) * 5 / 4 + FIXED_RESERVE_BYTES
}

/// Bytes of `max_loras` LoRA slots of rank `max_rank` on every targeted projection of
/// every layer (what `LoraStack::new` allocates).
pub fn lora_slots_bytes(
    cfg: &ModelConfig,
    dtype_size: usize,
    max_loras: usize,
    max_rank: usize,
) -> u64 {
    let per_layer: u64 = LORA_TARGETS
        .iter()
        .map(|&p: &Proj| {
            let (i, o) = proj_dims(cfg, p);
            ((i + o) * max_rank) as u64
        })
        .sum();
    per_layer * cfg.num_hidden_layers as u64 * max_loras as u64 * dtype_size as u64
}

/// The outcome of [`plan_kv_cache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPlan {
    /// Blocks to allocate (block 0, the null block, included).
    pub num_blocks: usize,
    /// Bytes those blocks take.
    pub kv_bytes: u64,
    /// `total * utilization`.
    pub limit: u64,
    /// `total - free` when measured.
    pub in_use: u64,
    /// Activation reserve plus LoRA slots.
    pub reserve: u64,
}

/// The KV cache that fits `utilization` of `mem` after `reserve` bytes (activations, LoRA
/// slots) and what is already in use; `bytes_per_block` covers K and V of all layers.
/// Errors name the flags that change the outcome.
pub fn plan_kv_cache(
    mem: DeviceMemory,
    utilization: f64,
    reserve: u64,
    bytes_per_block: u64,
) -> Result<KvPlan, String> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        return Err(format!(
            "--gpu-memory-utilization must be > 0 and <= 1, got {utilization}"
        ));
    }
    if bytes_per_block == 0 {
        return Err("a KV cache block takes 0 bytes".into());
    }
    let free = mem.free.min(mem.total);
    let limit = (mem.total as f64 * utilization) as u64;
    let in_use = mem.total - free;
    let needed = in_use.saturating_add(reserve);
    let kv_bytes = limit.saturating_sub(needed);
    let num_blocks = usize::try_from(kv_bytes / bytes_per_block).unwrap_or(usize::MAX);
    // Block 0 is the reserved null block; at least one usable block is needed.
    if num_blocks < 2 {
        return Err(format!(
            "no room for the KV cache: --gpu-memory-utilization {utilization} allows {:.2} GiB of the device's {:.2} GiB, but {:.2} GiB are already in use (weights, CUDA context, other processes) and one step's activations need {:.2} GiB; raise --gpu-memory-utilization, lower --max-num-batched-tokens, or set the size with --kv-cache-memory",
            gib(limit),
            gib(mem.total),
            gib(in_use),
            gib(reserve)
        ));
    }
    Ok(KvPlan {
        num_blocks,
        kv_bytes: num_blocks as u64 * bytes_per_block,
        limit,
        in_use,
        reserve,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lantern_models::Architecture;

    const GIB: u64 = 1 << 30;

    fn llama31_8b() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 128_256,
            hidden_size: 4096,
            intermediate_size: 14_336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: None,
            max_position_embeddings: 131_072,
            tie_word_embeddings: false,
            attention_bias: false,
            o_bias: false,
            qk_norm: false,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
        }
    }

    #[test]
    fn budget_is_limit_minus_in_use_minus_reserve() {
        let mem = DeviceMemory {
            free: 60 * GIB,
            total: 80 * GIB,
        };
        // limit 72 GiB, in use 20 GiB, reserve 2 GiB -> 50 GiB of 1 MiB blocks.
        let p = plan_kv_cache(mem, 0.9, 2 * GIB, 1 << 20).unwrap();
        assert_eq!(p.limit, 72 * GIB);
        assert_eq!(p.in_use, 20 * GIB);
        assert_eq!(p.num_blocks, 50 * 1024);
        assert_eq!(p.kv_bytes, 50 * GIB);
        // Partial blocks are dropped.
        let p = plan_kv_cache(mem, 0.9, 2 * GIB, 3 << 20).unwrap();
        assert_eq!(p.num_blocks, (50 * 1024) / 3);
        assert!(p.kv_bytes <= 50 * GIB);
    }

    #[test]
    fn other_processes_count_against_the_limit() {
        // 30 GiB of the device used by someone else before we loaded: less room.
        let mem = DeviceMemory {
            free: 30 * GIB,
            total: 80 * GIB,
        };
        let p = plan_kv_cache(mem, 0.9, 2 * GIB, 1 << 20).unwrap();
        assert_eq!(p.num_blocks, 20 * 1024);
    }

    #[test]
    fn too_little_memory_names_the_flags() {
        let mem = DeviceMemory {
            free: 10 * GIB,
            total: 80 * GIB,
        };
        let e = plan_kv_cache(mem, 0.9, 2 * GIB, 1 << 20).unwrap_err();
        assert!(e.contains("--gpu-memory-utilization"), "{e}");
        assert!(e.contains("--kv-cache-memory"), "{e}");
        assert!(e.contains("70.00 GiB are already in use"), "{e}");
        // One usable block is not enough either (block 0 is the null block).
        let mem = DeviceMemory {
            free: 80 * GIB,
            total: 80 * GIB,
        };
        assert!(plan_kv_cache(mem, 0.5, 40 * GIB - (1 << 20), 1 << 20).is_err());
        assert_eq!(
            plan_kv_cache(mem, 0.5, 40 * GIB - (2 << 20), 1 << 20)
                .unwrap()
                .num_blocks,
            2
        );
    }

    #[test]
    fn utilization_out_of_range_is_refused() {
        let mem = DeviceMemory {
            free: GIB,
            total: GIB,
        };
        for u in [0.0, -0.5, 1.01, f64::NAN] {
            let e = plan_kv_cache(mem, u, 0, 1024).unwrap_err();
            assert!(e.contains("must be > 0 and <= 1"), "{e}");
        }
        assert!(plan_kv_cache(mem, 1.0, 0, 1024).is_ok());
    }

    #[test]
    fn llama_8b_on_an_h100() {
        let cfg = llama31_8b();
        // bf16 activations at 2048 tokens: 2048 * 2 * (3*4096 + 2*(4096 + 2*1024) + 3*14336)
        // = 2048 * 135168 bytes, logits 2048 * 128256 * 6, x 1.25, + 512 MiB.
        let act = activation_reserve_bytes(&cfg, 2, 2048);
        let expect = (2048 * 135_168 + 2048 * 128_256 * 6) * 5 / 4 + (512 << 20);
        assert_eq!(act, expect);
        assert!(act > 2 * GIB && act < 3 * GIB, "{act}");
        // 16 GiB of weights + 0.5 GiB context on an 80 GiB card at 0.9.
        let mem = DeviceMemory {
            free: 80 * GIB - 16 * GIB - GIB / 2,
            total: 80 * GIB,
        };
        let block = (cfg.kv_bytes_per_token(2) * 16) as u64; // 2 MiB
        assert_eq!(block, 2 << 20);
        let p = plan_kv_cache(mem, 0.9, act, block).unwrap();
        let tokens = p.num_blocks * 16;
        // ~53 GiB of KV at 128 KiB per token: ~430k tokens.
        assert!(tokens > 400_000 && tokens < 450_000, "{tokens}");
        // LoRA slots: rank 16, 4 slots, bf16 -> 4 * 32 layers * 16 * sum(in + out) * 2 bytes.
        let lora = lora_slots_bytes(&cfg, 2, 4, 16);
        let per_layer = (4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 3 * (4096 + 14_336);
        assert_eq!(lora, 4 * 32 * 16 * per_layer as u64 * 2);
    }
}
