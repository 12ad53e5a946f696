//! CUDA kernels against the CPU implementations (which are themselves tested against the
//! naive references). Built only with `--features cuda`; every test needs a CUDA device and
//! fails with a clear message without one. Run on a GPU machine with
//! `cargo test --release -p lantern-kernels --features cuda --test gpu` (timings:
//! `... --test gpu -- --ignored --nocapture perf`).
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use common::{rand_tensor, rng, scenario, seq, Seq, MIXED};
use lantern_kernels::{
    fused_add_rms_norm, lora_add, paged_attention, rms_norm, rotary_embedding_inplace,
    sample_tokens, silu_and_mul, silu_mul, write_kv_cache, LoraBatch, LoraWeights,
    PagedAttnMetadata, SamplingBatch, SamplingRow,
};
use rand::Rng;

const CPU: Device = Device::Cpu;
const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn gpu() -> Device {
    match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => panic!(
            "no CUDA device: the tests in kernels/tests/gpu.rs need an NVIDIA GPU and its \
             driver (libcuda.so.1); run them on the GPU machine. Error: {e}"
        ),
    }
}

/// Tolerance on `max |gpu - cpu| / (1 + |cpu|)`.
fn tol(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-4,
        DType::F16 => 5e-3,
        _ => 2e-2,
    }
}

fn host_f32(t: &Tensor) -> Vec<f32> {
    t.to_device(&CPU)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// `max |got - want| / (1 + |want|)`; NaN never passes.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let (g, w) = (host_f32(got), host_f32(want));
    g.iter()
        .zip(&w)
        .map(|(g, w)| {
            let d = (g - w).abs() / (1.0 + w.abs());
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f32::max)
}

fn check(what: &str, dtype: DType, got: &Tensor, want: &Tensor) {
    let d = rel_diff(got, want);
    assert!(
        d <= tol(dtype),
        "{what} {dtype:?}: max rel diff {d} > {}",
        tol(dtype)
    );
}

fn to_gpu(t: &Tensor, dev: &Device) -> Tensor {
    t.to_device(dev).unwrap()
}

// ---------------------------------------------------------------- write_kv_cache

#[test]
fn write_kv_cache_matches_cpu() {
    let dev = gpu();
    let mut r = rng(1);
    for dtype in DTYPES {
        for (num_blocks, bs, heads, d) in [(9, 16, 2, 64), (20, 5, 8, 128), (4, 3, 3, 20)] {
            let n = 11;
            let mut slots: Vec<i64> = (0..(num_blocks * bs) as i64).collect();
            for i in 0..slots.len() {
                let j = r.random_range(0..slots.len());
                slots.swap(i, j);
            }
            slots.truncate(n);
            slots[3] = -1;
            slots[7] = -1;
            let sm = Tensor::new(slots.as_slice(), &CPU).unwrap();
            let kc = rand_tensor(&mut r, &[num_blocks, bs, heads, d], dtype);
            let vc = rand_tensor(&mut r, &[num_blocks, bs, heads, d], dtype);
            // k as a strided view of a fused buffer, v contiguous.
            let fused = rand_tensor(&mut r, &[n, 3 * heads, d], dtype);
            let k = fused.narrow(1, heads, heads).unwrap();
            let v = rand_tensor(&mut r, &[n, heads, d], dtype);
            let (gkc, gvc) = (to_gpu(&kc, &dev), to_gpu(&vc, &dev));
            let gk = to_gpu(&fused, &dev).narrow(1, heads, heads).unwrap();
            write_kv_cache(&gk, &to_gpu(&v, &dev), &gkc, &gvc, &to_gpu(&sm, &dev)).unwrap();
            write_kv_cache(&k, &v, &kc, &vc, &sm).unwrap();
            assert_eq!(rel_diff(&gkc, &kc), 0.0, "k cache {dtype:?} bs {bs}");
            assert_eq!(rel_diff(&gvc, &vc), 0.0, "v cache {dtype:?} bs {bs}");
        }
    }
}

// ---------------------------------------------------------------- paged_attention

struct AttnCase {
    seqs: Vec<Seq>,
    block_size: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    pad_rows: usize,
}

fn attn_case(
    seqs: &[Seq],
    block_size: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> AttnCase {
    AttnCase {
        seqs: seqs.to_vec(),
        block_size,
        heads,
        kv_heads,
        head_dim,
        pad_rows: 0,
    }
}

fn check_attention(c: &AttnCase, dtype: DType, seed: u64) {
    let dev = gpu();
    let mut r = rng(seed);
    let sc = scenario(
        &mut r,
        &c.seqs,
        c.block_size,
        c.heads,
        c.kv_heads,
        c.head_dim,
        dtype,
    );
    let q = if c.pad_rows > 0 {
        let pad = rand_tensor(&mut r, &[c.pad_rows, c.heads, c.head_dim], dtype);
        Tensor::cat(&[&sc.q, &pad], 0).unwrap()
    } else {
        sc.q.clone()
    };
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    let want = paged_attention(&q, &sc.k_cache, &sc.v_cache, &sc.meta, scale).unwrap();
    let qlens: Vec<usize> = c.seqs.iter().map(|s| s.qlen).collect();
    let ctxs: Vec<usize> = c.seqs.iter().map(|s| s.cached + s.qlen).collect();
    let meta =
        PagedAttnMetadata::from_host(&sc.slots, &sc.tables, &qlens, &ctxs, c.block_size, &dev)
            .unwrap();
    let got = paged_attention(
        &to_gpu(&q, &dev),
        &to_gpu(&sc.k_cache, &dev),
        &to_gpu(&sc.v_cache, &dev),
        &meta,
        scale,
    )
    .unwrap();
    let what = format!(
        "attention {} seqs, bs {}, {}/{} heads, d {}, pad {}",
        c.seqs.len(),
        c.block_size,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.pad_rows
    );
    check(&what, dtype, &got, &want);
    if c.pad_rows > 0 {
        let n = q.dim(0).unwrap();
        let tail = got.narrow(0, n - c.pad_rows, c.pad_rows).unwrap();
        assert!(
            host_f32(&tail).iter().all(|&x| x == 0.0),
            "padding rows must be zero"
        );
    }
}

#[test]
fn attention_mixed_batches_gqa_shapes() {
    for dtype in DTYPES {
        for (i, (bs, h, kvh, d)) in [
            (16, 8, 2, 64),
            (32, 32, 8, 128),
            (16, 28, 4, 128), // GQA group 7
            (16, 16, 1, 64),  // group 16: two head chunks in the row kernel
            (16, 4, 4, 32),   // MHA
            (5, 6, 3, 20),    // odd block size, head_dim not a multiple of 8 (scalar paths)
            (16, 8, 8, 256),  // largest head_dim
        ]
        .into_iter()
        .enumerate()
        {
            check_attention(&attn_case(MIXED, bs, h, kvh, d), dtype, 100 + i as u64);
        }
    }
}

#[test]
fn attention_long_contexts_split_k() {
    let seqs = [
        seq(999, 1),
        seq(4000, 1),
        seq(2047, 1),
        seq(0, 1),
        seq(8191, 1),
    ];
    for dtype in DTYPES {
        check_attention(&attn_case(&seqs, 16, 32, 8, 128), dtype, 7);
        // Batch 1: the most splits.
        check_attention(&attn_case(&[seq(6000, 1)], 16, 32, 8, 128), dtype, 8);
    }
}

#[test]
fn attention_many_decode_rows() {
    let seqs: Vec<Seq> = (0..64).map(|i| seq(100 + 13 * i, 1)).collect();
    for dtype in DTYPES {
        check_attention(&attn_case(&seqs, 16, 32, 8, 128), dtype, 9);
    }
}

#[test]
fn attention_prefill_over_cached_prefix_and_short_chunks() {
    // qlen 2..8 goes through the row kernel, 9+ through the tile kernel.
    let seqs = [
        seq(900, 300),
        seq(0, 129),
        seq(50, 9),
        seq(0, 8),
        seq(100, 2),
        seq(31, 33),
        seq(0, 1),
    ];
    for dtype in DTYPES {
        check_attention(&attn_case(&seqs, 16, 32, 8, 128), dtype, 10);
        check_attention(&attn_case(&seqs, 32, 14, 2, 64), dtype, 11);
    }
}

#[test]
fn attention_padding_rows_are_zero() {
    for dtype in DTYPES {
        let mut c = attn_case(MIXED, 16, 8, 2, 64);
        c.pad_rows = 5;
        check_attention(&c, dtype, 12);
    }
}

// ---------------------------------------------------------------- norms, rope, silu

#[test]
fn rms_norm_and_fused_add_match_cpu() {
    let dev = gpu();
    let mut r = rng(20);
    for dtype in DTYPES {
        for shape in [
            vec![1, 4096],
            vec![37, 4096],
            vec![5, 1000],
            vec![3, 13],
            vec![2, 3, 128],
        ] {
            let h = *shape.last().unwrap();
            let x = rand_tensor(&mut r, &shape, dtype);
            let res = rand_tensor(&mut r, &shape, dtype);
            let w = rand_tensor(&mut r, &[h], dtype);
            let want = rms_norm(&x, &w, 1e-5).unwrap();
            let got = rms_norm(&to_gpu(&x, &dev), &to_gpu(&w, &dev), 1e-5).unwrap();
            check(&format!("rms_norm {shape:?}"), dtype, &got, &want);
            let (wo, wh) = fused_add_rms_norm(&x, &res, &w, 1e-5).unwrap();
            let (go, gh) = fused_add_rms_norm(
                &to_gpu(&x, &dev),
                &to_gpu(&res, &dev),
                &to_gpu(&w, &dev),
                1e-5,
            )
            .unwrap();
            assert_eq!(rel_diff(&gh, &wh), 0.0, "new residual {shape:?} {dtype:?}");
            check(&format!("fused_add_rms_norm {shape:?}"), dtype, &go, &wo);
        }
    }
}

#[test]
fn rope_matches_cpu() {
    let dev = gpu();
    let mut r = rng(21);
    for dtype in DTYPES {
        for (tokens, heads, d) in [(1, 32, 128), (77, 8, 128), (5, 3, 10), (300, 4, 64)] {
            let max_pos = 2048;
            let cos = rand_tensor(&mut r, &[max_pos, d / 2], dtype);
            let sin = rand_tensor(&mut r, &[max_pos, d / 2], dtype);
            let pos: Vec<u32> = (0..tokens)
                .map(|_| r.random_range(0..max_pos as u32))
                .collect();
            let positions = Tensor::new(pos.as_slice(), &CPU).unwrap();
            // A narrow of a fused qkv buffer (strided rows).
            let qkv = rand_tensor(&mut r, &[tokens, 3 * heads, d], dtype);
            let gqkv = to_gpu(&qkv, &dev);
            let k = qkv.narrow(1, heads, heads).unwrap();
            let gk = gqkv.narrow(1, heads, heads).unwrap();
            rotary_embedding_inplace(&k, &cos, &sin, &positions).unwrap();
            rotary_embedding_inplace(
                &gk,
                &to_gpu(&cos, &dev),
                &to_gpu(&sin, &dev),
                &to_gpu(&positions, &dev),
            )
            .unwrap();
            check(&format!("rope {tokens}x{heads}x{d}"), dtype, &gqkv, &qkv);
        }
    }
}

/// Where `got` and `want` (both (rows, cols)) differ beyond `tol(dtype)`: the count and the
/// first few (row, col, got, want), to tell an indexing error from a rounding one.
fn mismatches(dtype: DType, got: &Tensor, want: &Tensor) -> Option<String> {
    let cols = *want.dims().last().unwrap();
    let (g, w) = (host_f32(got), host_f32(want));
    let bad: Vec<usize> = (0..w.len())
        .filter(|&i| !((g[i] - w[i]).abs() / (1.0 + w[i].abs()) <= tol(dtype)))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let rows: std::collections::BTreeSet<usize> = bad.iter().map(|i| i / cols).collect();
    let first: Vec<String> = bad
        .iter()
        .take(6)
        .map(|&i| format!("[{},{}] got {} want {}", i / cols, i % cols, g[i], w[i]))
        .collect();
    Some(format!(
        "{} of {} elements differ, in {} rows (first rows {:?}); {}",
        bad.len(),
        w.len(),
        rows.len(),
        rows.iter().take(8).collect::<Vec<_>>(),
        first.join(", ")
    ))
}

#[test]
fn silu_mul_matches_cpu() {
    let dev = gpu();
    let mut r = rng(22);
    let mut failures = Vec::new();
    for dtype in DTYPES {
        for (t, i) in [
            (1, 14336),
            (2, 64),
            (33, 14336),
            (3, 13),
            (70_000, 8),
            (5, 4096),
        ] {
            let gu = rand_tensor(&mut r, &[t, 2 * i], dtype);
            let want = silu_and_mul(&gu).unwrap();
            let gu_gpu = to_gpu(&gu, &dev);
            // The upload itself, so a bad copy is not blamed on the kernel.
            if let Some(m) = mismatches(dtype, &gu_gpu, &gu) {
                failures.push(format!("upload {t}x{} {dtype:?}: {m}", 2 * i));
            }
            let got = silu_and_mul(&gu_gpu).unwrap();
            if let Some(m) = mismatches(dtype, &got, &want) {
                failures.push(format!("silu_and_mul {t}x{i} {dtype:?}: {m}"));
            }
            let g = gu.narrow(1, 0, i).unwrap().contiguous().unwrap();
            let u = gu.narrow(1, i, i).unwrap().contiguous().unwrap();
            let got2 = silu_mul(&to_gpu(&g, &dev), &to_gpu(&u, &dev)).unwrap();
            if let Some(m) = mismatches(dtype, &got2, &want) {
                failures.push(format!("silu_mul {t}x{i} {dtype:?}: {m}"));
            }
            // Halves made contiguous on the GPU (a copy kernel of candle's), then our kernel.
            let gd = gu_gpu.narrow(1, 0, i).unwrap().contiguous().unwrap();
            let ud = gu_gpu.narrow(1, i, i).unwrap().contiguous().unwrap();
            let got3 = silu_mul(&gd, &ud).unwrap();
            if let Some(m) = mismatches(dtype, &got3, &want) {
                failures.push(format!("silu_mul(gpu halves) {t}x{i} {dtype:?}: {m}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------- LoRA

type LoraSeq = (Option<u32>, usize);

fn lora_weights(
    r: &mut rand::rngs::StdRng,
    ranks: &[usize],
    max_rank: usize,
    in_dim: usize,
    out_dim: usize,
    dtype: DType,
    dev: &Device,
) -> LoraWeights {
    let s = ranks.len();
    let a =
        (rand_tensor(r, &[s, max_rank, in_dim], dtype) * (1.0 / (in_dim as f64).sqrt())).unwrap();
    let b = (rand_tensor(r, &[s, out_dim, max_rank], dtype) * 0.3).unwrap();
    let scales: Vec<f32> = (0..s).map(|_| r.random_range(0.5f32..2.0)).collect();
    LoraWeights::new(
        to_gpu(&a, dev),
        to_gpu(&b, dev),
        Tensor::from_vec(scales, s, dev).unwrap(),
    )
    .unwrap()
    .with_ranks(ranks.to_vec())
    .unwrap()
}

fn lora_to(w: &LoraWeights, dev: &Device) -> LoraWeights {
    let moved =
        LoraWeights::new(to_gpu(&w.a, dev), to_gpu(&w.b, dev), to_gpu(&w.scales, dev)).unwrap();
    match &w.ranks {
        Some(r) => moved.with_ranks(r.clone()).unwrap(),
        None => moved,
    }
}

fn check_lora(
    seqs: &[LoraSeq],
    ranks: &[usize],
    max_rank: usize,
    in_dim: usize,
    out_dim: usize,
    seed: u64,
) {
    let dev = gpu();
    for dtype in DTYPES {
        let mut r = rng(seed);
        // Garbage in the rank padding: both devices must ignore it (rank hint).
        let w = lora_weights(&mut r, ranks, max_rank, in_dim, out_dim, dtype, &CPU);
        let t: usize = seqs.iter().map(|s| s.1).sum();
        let x = rand_tensor(&mut r, &[t, in_dim], dtype);
        let y = rand_tensor(&mut r, &[t, out_dim], dtype);
        let slots: Vec<_> = seqs.iter().map(|s| s.0).collect();
        let lens: Vec<_> = seqs.iter().map(|s| s.1).collect();
        let want = lora_add(
            &y,
            &x,
            &w,
            &LoraBatch::from_host(&slots, &lens, &CPU).unwrap(),
        )
        .unwrap();
        let got = lora_add(
            &to_gpu(&y, &dev),
            &to_gpu(&x, &dev),
            &lora_to(&w, &dev),
            &LoraBatch::from_host(&slots, &lens, &dev).unwrap(),
        )
        .unwrap();
        check(
            &format!("lora in {in_dim} out {out_dim} ranks {ranks:?}"),
            dtype,
            &got,
            &want,
        );
        // Base rows are copied exactly.
        let (g, yy) = (host_f32(&got), host_f32(&y));
        let mut row = 0;
        for &(slot, len) in seqs {
            if slot.is_none() {
                assert_eq!(
                    &g[row * out_dim..(row + len) * out_dim],
                    &yy[row * out_dim..(row + len) * out_dim],
                    "base rows changed"
                );
            }
            row += len;
        }
    }
}

/// Decode tokens of several slots, base rows, and prefill segments below, at and above the
/// SGMV threshold (8) and spanning several 16-token tiles.
const LORA_MIXED: &[LoraSeq] = &[
    (None, 1),
    (Some(0), 1),
    (Some(3), 1),
    (Some(3), 1),
    (None, 7),
    (Some(1), 37),
    (Some(2), 8),
    (Some(0), 7),
    (None, 2),
    (Some(2), 70),
    (Some(1), 1),
    (Some(3), 9),
];

#[test]
fn lora_bgmv_sgmv_match_cpu() {
    // Ranks 8 / 64 / 128 / 16 padded to 128.
    check_lora(LORA_MIXED, &[8, 64, 128, 16], 128, 4096, 4096, 30);
    check_lora(LORA_MIXED, &[8, 64, 128, 16], 128, 1024, 3584, 31);
    // Odd sizes: scalar paths.
    check_lora(LORA_MIXED, &[3, 5, 7, 1], 7, 37, 53, 32);
    // Only decode tokens, one slot each.
    let decode: Vec<LoraSeq> = (0..64)
        .map(|i| (if i % 5 == 0 { None } else { Some(i % 4) }, 1))
        .collect();
    check_lora(&decode, &[16, 16, 16, 16], 16, 4096, 4096, 33);
}

// ---------------------------------------------------------------- sampling

fn sampling_rows<'a>(
    r: &mut rand::rngs::StdRng,
    n: usize,
    hist: &'a [u32],
    bias: &'a [(u32, f32)],
) -> Vec<SamplingRow<'a>> {
    (0..n)
        .map(|i| {
            let mut row = SamplingRow::greedy();
            row.uniform = r.random_range(0.0..1.0);
            match i % 8 {
                0 => {}
                1 => row.params.temperature = 0.8,
                2 => {
                    row.params.temperature = 1.0;
                    row.params.top_k = 1 + i % 64;
                }
                3 => {
                    row.params.temperature = 0.7;
                    row.params.top_p = 0.9;
                }
                4 => {
                    row.params.temperature = 1.2;
                    row.params.min_p = 0.05;
                }
                5 => {
                    row.params.temperature = 1.0;
                    row.params.top_k = 50;
                    row.params.top_p = 0.95;
                    row.params.min_p = 0.02;
                }
                6 => {
                    row.params.temperature = 0.9;
                    row.params.repetition_penalty = 1.2;
                    row.params.presence_penalty = 0.3;
                    row.params.frequency_penalty = 0.1;
                    row.prompt_tokens = &hist[..hist.len() / 2];
                    row.output_tokens = &hist[hist.len() / 2..];
                    row.logit_bias = bias;
                }
                _ => {
                    row.params.temperature = 3.0;
                    row.params.top_p = 0.5;
                }
            }
            row
        })
        .collect()
}

#[test]
fn sampling_matches_cpu() {
    let dev = gpu();
    let mut r = rng(40);
    let hist: Vec<u32> = (0..200).map(|_| r.random_range(0..32000)).collect();
    let bias = [(5u32, 3.0f32), (17, -1.0)];
    for dtype in DTYPES {
        for (rows, vocab) in [(64, 32000), (16, 128_256), (8, 50)] {
            let l = (rand_tensor(&mut r, &[rows, vocab], DType::F32) * 6.0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let rs = sampling_rows(&mut r, rows, &hist, &bias);
            let want = sample_tokens(&l, &SamplingBatch::from_host(&rs, &CPU).unwrap())
                .unwrap()
                .to_vec1::<u32>()
                .unwrap();
            let got = sample_tokens(
                &to_gpu(&l, &dev),
                &SamplingBatch::from_host(&rs, &dev).unwrap(),
            )
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
            // CPU and CUDA `exp` may differ in the last bit, which can move a draw sitting
            // exactly on a boundary; with random draws that is vanishingly rare.
            let mismatches: Vec<_> = (0..rows).filter(|&i| got[i] != want[i]).collect();
            assert!(
                mismatches.len() <= rows / 32,
                "{dtype:?} {rows}x{vocab}: rows {mismatches:?} differ: gpu {:?} cpu {:?}",
                mismatches.iter().map(|&i| got[i]).collect::<Vec<_>>(),
                mismatches.iter().map(|&i| want[i]).collect::<Vec<_>>()
            );
            // All-greedy fast path.
            let g = vec![SamplingRow::greedy(); rows];
            let want = sample_tokens(&l, &SamplingBatch::from_host(&g, &CPU).unwrap())
                .unwrap()
                .to_vec1::<u32>()
                .unwrap();
            let got = sample_tokens(
                &to_gpu(&l, &dev),
                &SamplingBatch::from_host(&g, &dev).unwrap(),
            )
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
            assert_eq!(got, want, "greedy {dtype:?} {rows}x{vocab}");
        }
    }
}

// ---------------------------------------------------------------- timings

fn time_it(dev: &Device, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    dev.synchronize().unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        dev.synchronize().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median per-call times of decode attention with Llama-3.1-8B shapes (32 q heads, 8 kv
/// heads, head_dim 128, bf16, context 1024, block 16) and of LoRA BGMV at hidden 4096,
/// rank 16, plus sampling over a 128256 vocabulary.
#[test]
#[ignore = "timing only; run explicitly on the GPU machine in release mode"]
fn perf_attention() {
    let dev = gpu();
    let (heads, kvh, d, ctx, bs) = (32, 8, 128, 1024, 16);
    println!(
        "decode attention, bf16, 32/8 heads, d 128, ctx {ctx} (LANTERN_ATTN_SPLIT_WARPS={}):",
        std::env::var("LANTERN_ATTN_SPLIT_WARPS").unwrap_or_else(|_| "default".into())
    );
    for batch in [1usize, 8, 64, 256] {
        let blocks_per = ctx / bs;
        let num_blocks = batch * blocks_per + 1;
        let cache = |seed: u64| {
            let _ = seed;
            Tensor::rand(-1f32, 1f32, (num_blocks, bs, kvh, d), &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
        };
        let (kc, vc) = (cache(1), cache(2));
        let q = Tensor::rand(-1f32, 1f32, (batch, heads, d), &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let tables: Vec<Vec<u32>> = (0..batch)
            .map(|b| {
                (0..blocks_per)
                    .map(|j| (1 + b * blocks_per + j) as u32)
                    .collect()
            })
            .collect();
        let slots: Vec<i64> = tables
            .iter()
            .map(|t| (t[blocks_per - 1] as usize * bs + bs - 1) as i64)
            .collect();
        let meta = PagedAttnMetadata::from_host(
            &slots,
            &tables,
            &vec![1; batch],
            &vec![ctx; batch],
            bs,
            &dev,
        )
        .unwrap();
        let us = time_it(&dev, 50, || {
            paged_attention(&q, &kc, &vc, &meta, 0.088).unwrap();
        });
        let bytes = (batch * ctx * kvh * d * 2 * 2) as f64;
        println!(
            "  batch {batch:>3}: {us:>8.1} us  ({:.0} GB/s of KV)",
            bytes / us / 1e3
        );
    }

    // Prefill: sequences of 1024 new tokens each (tile kernel), causal.
    for nseq in [1usize, 4] {
        let n = 1024;
        let blocks_per = n / bs;
        let num_blocks = nseq * blocks_per + 1;
        let rnd = |shape: &[usize]| {
            Tensor::rand(-1f32, 1f32, shape, &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
        };
        let (kc, vc) = (
            rnd(&[num_blocks, bs, kvh, d]),
            rnd(&[num_blocks, bs, kvh, d]),
        );
        let q = rnd(&[nseq * n, heads, d]);
        let tables: Vec<Vec<u32>> = (0..nseq)
            .map(|b| {
                (0..blocks_per)
                    .map(|j| (1 + b * blocks_per + j) as u32)
                    .collect()
            })
            .collect();
        let slots: Vec<i64> = tables
            .iter()
            .flat_map(|t| (0..n).map(move |p| (t[p / bs] as usize * bs + p % bs) as i64))
            .collect();
        let meta =
            PagedAttnMetadata::from_host(&slots, &tables, &vec![n; nseq], &vec![n; nseq], bs, &dev)
                .unwrap();
        let us = time_it(&dev, 10, || {
            paged_attention(&q, &kc, &vc, &meta, 0.088).unwrap();
        });
        let flops = (nseq * heads * d * 4) as f64 * (n * (n + 1) / 2) as f64;
        println!(
            "prefill attention, bf16, {nseq} x {n} tokens: {us:>8.1} us ({:.1} TFLOP/s)",
            flops / us / 1e6
        );
    }
}

#[test]
#[ignore = "timing only; run explicitly on the GPU machine in release mode"]
fn perf_lora() {
    let dev = gpu();
    println!("LoRA BGMV, bf16, hidden 4096 -> 4096, rank 16, 8 adapters:");
    let mut r = rng(50);
    let w = lora_weights(&mut r, &[16; 8], 16, 4096, 4096, DType::BF16, &dev);
    for batch in [1usize, 8, 64, 256] {
        let x = to_gpu(&rand_tensor(&mut r, &[batch, 4096], DType::BF16), &dev);
        let y = to_gpu(&rand_tensor(&mut r, &[batch, 4096], DType::BF16), &dev);
        let slots: Vec<Option<u32>> = (0..batch).map(|i| Some((i % 8) as u32)).collect();
        let lb = LoraBatch::from_host(&slots, &vec![1; batch], &dev).unwrap();
        let us = time_it(&dev, 100, || {
            lora_add(&y, &x, &w, &lb).unwrap();
        });
        println!("  tokens {batch:>3}: {us:>8.1} us");
    }
}

#[test]
#[ignore = "timing only; run explicitly on the GPU machine in release mode"]
fn perf_sampling() {
    let dev = gpu();
    println!("sampling, vocab 128256 (f32 logits):");
    let mut hr = rng(51);
    let hist: Vec<u32> = (0..100).map(|_| hr.random_range(0..128_000)).collect();
    for batch in [1usize, 64] {
        let l = Tensor::rand(-5f32, 5f32, (batch, 128_256), &dev).unwrap();
        let g = vec![SamplingRow::greedy(); batch];
        let gb = SamplingBatch::from_host(&g, &dev).unwrap();
        let us_g = time_it(&dev, 50, || {
            sample_tokens(&l, &gb).unwrap();
        });
        let rows = sampling_rows(&mut hr, batch, &hist, &[]);
        let sb = SamplingBatch::from_host(&rows, &dev).unwrap();
        let us_s = time_it(&dev, 50, || {
            sample_tokens(&l, &sb).unwrap();
        });
        println!("  rows {batch:>3}: greedy {us_g:>8.1} us, mixed filters {us_s:>8.1} us");
    }
}
