//! Criterion micro-benchmarks of the per-step host work:
//! a scheduler step with 256 running requests, block-pool churn, prefix hashing, and the
//! sampler. Run: `cargo bench -p lantern-bench --bench micro`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use lantern_runtime::{sampler, SampleRow, SamplingParams};
use lantern_scheduler::{
    hash_block, BlockPool, CacheKeyExtra, SchedRequest, Scheduler, SchedulerConfig, SeqId,
};
use std::hint::black_box;

fn scheduler_step_256(c: &mut Criterion) {
    let mut sched = Scheduler::new(SchedulerConfig {
        max_num_seqs: 256,
        max_num_batched_tokens: 8192,
        block_size: 16,
        num_blocks: 256 * 80 + 1,
        max_model_len: 4096,
        max_waiting_requests: 1024,
        ..SchedulerConfig::default()
    })
    .unwrap();
    for id in 0..256u64 {
        let prompt: Vec<u32> = (0..128)
            .map(|t| (t * 31 + id as u32 * 7) % 50_000)
            .collect();
        sched
            .add_request(SchedRequest {
                id: SeqId(id),
                prompt_token_ids: prompt,
                max_tokens: 256 + id as usize,
                priority: 0,
                lora_id: None,
                cache_salt: None,
            })
            .unwrap();
    }
    // Run the prefill so every request is decoding. Requests that reach max_tokens are
    // finished and replaced, so the running set stays at 256 for the whole measurement.
    let mut tok = 1u32;
    let mut next_id = 256u64;
    let mut step = |sched: &mut Scheduler| {
        let out = sched.schedule();
        let sampled: Vec<(SeqId, u32)> = out
            .seqs
            .iter()
            .filter(|s| s.sample)
            .map(|s| (s.id, tok))
            .collect();
        tok = tok.wrapping_add(1) % 50_000;
        let capped = sched.update(&out, &sampled).unwrap();
        for id in capped {
            sched.finish_request(id, lantern_scheduler::FinishReason::Length);
            let prompt: Vec<u32> = (0..128)
                .map(|t| (t * 31 + next_id as u32 * 7) % 50_000)
                .collect();
            sched
                .add_request(SchedRequest {
                    id: SeqId(next_id),
                    prompt_token_ids: prompt,
                    max_tokens: 256,
                    priority: 0,
                    lora_id: None,
                    cache_salt: None,
                })
                .unwrap();
            next_id += 1;
        }
        out.seqs.len()
    };
    while sched.running_ids().len() < 256 || sched.num_waiting() > 0 {
        step(&mut sched);
    }
    c.bench_function("scheduler step (256 running, decode)", |b| {
        b.iter(|| black_box(step(&mut sched)))
    });
}

fn block_pool_churn(c: &mut Criterion) {
    let mut pool = BlockPool::new(16_384).unwrap();
    c.bench_function("block pool: allocate 64 + free 64", |b| {
        b.iter(|| {
            let blocks = pool.allocate(64).unwrap();
            pool.free(black_box(&blocks)).unwrap();
        })
    });
}

fn prefix_hashing(c: &mut Criterion) {
    let tokens: Vec<u32> = (0..2048).map(|t| (t * 7919) % 50_000).collect();
    let extra = CacheKeyExtra {
        lora_id: None,
        cache_salt: None,
    };
    c.bench_function("prefix hash chain: 2048 tokens / 16-token blocks", |b| {
        b.iter(|| {
            let mut parent = None;
            for block in tokens.chunks(16) {
                parent = Some(hash_block(parent, black_box(block), &extra));
            }
            black_box(parent)
        })
    });
}

fn sampler_bench(c: &mut Criterion) {
    let vocab = 49_152;
    let rows = 32;
    let data: Vec<f32> = (0..rows * vocab)
        .map(|i| ((i * 2_654_435_761usize) % 10_007) as f32 / 1000.0)
        .collect();
    let logits = Tensor::from_vec(data, (rows, vocab), &Device::Cpu).unwrap();
    let greedy = SamplingParams::greedy();
    let nucleus = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        top_k: 50,
        ..SamplingParams::default()
    };
    let top_p_only = SamplingParams {
        temperature: 0.8,
        top_p: 0.9,
        ..SamplingParams::default()
    };
    let out: Vec<u32> = (0..64).collect();
    for (name, p) in [
        ("greedy", &greedy),
        ("top_k 50 + top_p 0.95", &nucleus),
        ("top_p 0.9", &top_p_only),
    ] {
        let rows_v: Vec<SampleRow> = (0..rows)
            .map(|i| SampleRow {
                params: p,
                logit_bias: &[],
                logprobs: None,
                allowed: None,
                seed: i as u64,
                prompt_tokens: &[],
                output_tokens: &out,
                banned: &[],
            })
            .collect();
        c.bench_function(&format!("sampler: 32 x 49152, {name}"), |b| {
            b.iter(|| black_box(sampler::sample(&logits, &rows_v).unwrap()))
        });
    }
}

criterion_group!(
    benches,
    scheduler_step_256,
    block_pool_churn,
    prefix_hashing,
    sampler_bench
);
criterion_main!(benches);
