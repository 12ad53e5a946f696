//! The null device's stand-in model behind `ModelRunner`: deterministic logits, the real
//! batch checks, and KV blocks sized from the simulated accelerator's memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lantern_runtime::null::{NullModel, NullSpec, H200};
use lantern_runtime::{
    sampler, GpuMemoryBudget, KvCacheSize, ModelBackend, ModelRunner, RunnerConfig, SeqChunk,
};

fn runner(kv: KvCacheSize) -> ModelRunner {
    let m = NullModel::new(NullSpec::parse("llama-3.1-8b:h200").unwrap(), 512).unwrap();
    ModelRunner::new(
        m,
        RunnerConfig {
            block_size: 16,
            kv_cache: kv,
            kv_cache_dtype: Default::default(),
        },
    )
    .unwrap()
}

#[test]
fn null_logits_are_deterministic_and_follow_token_and_position() {
    let r = runner(KvCacheSize::Tokens(1024));
    let a: Vec<u32> = (1..=20).collect();
    let b = [7u32];
    let table_a = [1u32, 2];
    let table_b = [3u32];
    let chunks = [
        SeqChunk {
            token_ids: &a,
            num_computed_tokens: 0,
            block_table: &table_a,
            sample: true,
            all_logits: false,
            lora_slot: None,
        },
        SeqChunk {
            token_ids: &b,
            num_computed_tokens: 5,
            block_table: &table_b,
            sample: true,
            all_logits: false,
            lora_slot: None,
        },
    ];
    let l1 = r.execute(&chunks).unwrap().unwrap();
    let l2 = r.execute(&chunks).unwrap().unwrap();
    assert_eq!(l1.dims(), &[2, 512]);
    let v1 = l1.to_vec2::<f32>().unwrap();
    assert_eq!(v1, l2.to_vec2::<f32>().unwrap());
    // The real sampler picks the hashed peak of (last token, its position).
    let ids = sampler::greedy(&l1).unwrap();
    let ModelBackend::Null(m) = r.backend() else {
        panic!("not a null backend")
    };
    assert_eq!(ids[0] as usize, m.peaks(20, 19)[2].0);
    assert_eq!(ids[1] as usize, m.peaks(7, 5)[2].0);
    // Greedy outputs vary with the position.
    let distinct: std::collections::HashSet<usize> = (0..64).map(|p| m.peaks(7, p)[2].0).collect();
    assert!(distinct.len() > 32, "{distinct:?}");
    // Every step's simulated time is accounted: two decode-ish steps of a bf16 8B model.
    let sim = r.simulated_device_seconds().unwrap();
    assert!(sim >= 2.0 * 16.06e9 / H200.bandwidth, "{sim}");
    // The batch checks of the real path still apply.
    let bad = [SeqChunk {
        token_ids: &b,
        num_computed_tokens: 40,
        block_table: &table_b,
        sample: true,
        all_logits: false,
        lora_slot: None,
    }];
    assert!(r.execute(&bad).is_err());
}

#[test]
fn null_kv_cache_is_sized_from_the_simulated_memory() {
    let mut r = runner(KvCacheSize::GpuMemory(GpuMemoryBudget {
        utilization: 0.9,
        max_num_batched_tokens: 2048,
        lora: None,
    }));
    // ~132 GB usable - 16 GB weights - activations, at 128 KiB per token (bf16, 32 layers,
    // 8 KV heads of 128): roughly 850k tokens.
    let tokens = r.num_blocks() * r.block_size();
    assert!((700_000..1_000_000).contains(&tokens), "{tokens}");
    // No weights: LoRA is refused with an error, not a panic.
    assert!(r.enable_lora(1, 8).is_err());
}
