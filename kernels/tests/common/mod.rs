//! Shared helpers for the kernel tests: seeded random tensors and mixed-batch scenarios.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use candle_core::{DType, Device, Tensor};
use lantern_kernels::{write_kv_cache, PagedAttnMetadata};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform in [-1, 1), built as f32 then cast to `dtype`.
pub fn rand_tensor(rng: &mut StdRng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// One sequence of a step: `cached` tokens already in the cache, `qlen` new ones this step.
#[derive(Debug, Clone, Copy)]
pub struct Seq {
    pub cached: usize,
    pub qlen: usize,
}

pub const fn seq(cached: usize, qlen: usize) -> Seq {
    Seq { cached, qlen }
}

/// A mixed decode/prefill batch whose new k/v have been written into the caches.
pub struct Scenario {
    pub q: Tensor,
    pub new_k: Tensor,
    pub new_v: Tensor,
    pub k_cache: Tensor,
    pub v_cache: Tensor,
    pub meta: PagedAttnMetadata,
    pub tables: Vec<Vec<u32>>,
    pub slots: Vec<i64>,
}

/// Mixed decode + prefill-chunk batch. Block ids are shuffled over a pool with spare blocks,
/// each table gets one extra (unused) block, the caches start out random (standing in for
/// cached prefixes and garbage), and this step's k/v are written with `write_kv_cache`.
#[allow(clippy::too_many_arguments)]
pub fn scenario(
    rng: &mut StdRng,
    seqs: &[Seq],
    block_size: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    dtype: DType,
) -> Scenario {
    let blocks_per: Vec<usize> = seqs
        .iter()
        .map(|s| (s.cached + s.qlen).div_ceil(block_size) + 1)
        .collect();
    let num_blocks = blocks_per.iter().sum::<usize>() + 5;
    let mut pool: Vec<u32> = (0..num_blocks as u32).collect();
    pool.shuffle(rng);
    let mut tables = Vec::new();
    let mut next = 0;
    for &n in &blocks_per {
        tables.push(pool[next..next + n].to_vec());
        next += n;
    }
    let mut slots = Vec::new();
    for (s, t) in seqs.iter().zip(&tables) {
        for pos in s.cached..s.cached + s.qlen {
            slots.push((t[pos / block_size] as usize * block_size + pos % block_size) as i64);
        }
    }
    let num_tokens = slots.len();
    let qlens: Vec<usize> = seqs.iter().map(|s| s.qlen).collect();
    let ctxs: Vec<usize> = seqs.iter().map(|s| s.cached + s.qlen).collect();
    let meta =
        PagedAttnMetadata::from_host(&slots, &tables, &qlens, &ctxs, block_size, &Device::Cpu)
            .unwrap();
    let cache_shape = [num_blocks, block_size, num_kv_heads, head_dim];
    let k_cache = rand_tensor(rng, &cache_shape, dtype);
    let v_cache = rand_tensor(rng, &cache_shape, dtype);
    let q = rand_tensor(rng, &[num_tokens, num_heads, head_dim], dtype);
    let new_k = rand_tensor(rng, &[num_tokens, num_kv_heads, head_dim], dtype);
    let new_v = rand_tensor(rng, &[num_tokens, num_kv_heads, head_dim], dtype);
    write_kv_cache(&new_k, &new_v, &k_cache, &v_cache, &meta.slot_mapping).unwrap();
    Scenario {
        q,
        new_k,
        new_v,
        k_cache,
        v_cache,
        meta,
        tables,
        slots,
    }
}

/// Decode tokens, fresh prefills and chunks resuming after cached prefixes, including
/// lengths that end exactly on 16/32-token block boundaries.
pub const MIXED: &[Seq] = &[
    seq(37, 1),
    seq(0, 13),
    seq(33, 20),
    seq(0, 1),
    seq(64, 17),
    seq(15, 1),
    seq(100, 1),
    seq(31, 33),
    seq(47, 1),
];
