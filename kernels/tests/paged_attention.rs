//! `paged_attention` against the naive reference, dense candle attention, and bad inputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Device, Tensor, D};
use common::{max_abs_diff, rand_tensor, rng, scenario, seq, MIXED};
use lantern_kernels::reference::paged_attention_naive;
use lantern_kernels::{paged_attention, write_kv_cache, PagedAttnMetadata};

fn check_against_reference(
    seed: u64,
    block_size: usize,
    gqa: usize,
    head_dim: usize,
    dtype: DType,
    tol: f32,
) {
    let mut r = rng(seed);
    let num_kv_heads = 2;
    let num_heads = num_kv_heads * gqa;
    let sc = scenario(
        &mut r,
        MIXED,
        block_size,
        num_heads,
        num_kv_heads,
        head_dim,
        dtype,
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    let got = paged_attention(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, scale).unwrap();
    let want = paged_attention_naive(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, scale).unwrap();
    assert_eq!(got.dims(), sc.q.dims());
    assert_eq!(got.dtype(), dtype);
    let diff = max_abs_diff(&got, &want);
    assert!(
        diff <= tol,
        "block_size {block_size} gqa {gqa} head_dim {head_dim} {dtype:?}: max diff {diff} > {tol}"
    );
}

#[test]
fn f32_matches_reference_across_block_sizes_gqa_and_head_dims() {
    let mut seed = 0;
    for block_size in [1, 16, 32] {
        for gqa in [1, 3, 4] {
            for head_dim in [64, 32] {
                seed += 1;
                check_against_reference(seed, block_size, gqa, head_dim, DType::F32, 1e-5);
            }
        }
    }
}

#[test]
fn bf16_matches_reference() {
    for (seed, block_size, gqa, head_dim) in [(100, 16, 3, 64), (101, 1, 4, 32), (102, 32, 1, 64)] {
        check_against_reference(seed, block_size, gqa, head_dim, DType::BF16, 1e-2);
    }
}

#[test]
fn f16_matches_reference() {
    for (seed, block_size, gqa, head_dim) in [(200, 16, 3, 64), (201, 1, 4, 32), (202, 32, 1, 64)] {
        check_against_reference(seed, block_size, gqa, head_dim, DType::F16, 2e-3);
    }
}

/// `--kv-cache-dtype`: f32 queries over f16 / bf16 caches equal the f32 reference over the
/// same cache values widened to f32 (widening is exact), and the output stays f32.
#[test]
fn f32_queries_over_half_precision_caches_match_reference() {
    for (seed, cache_dtype) in [(300, DType::F16), (301, DType::BF16)] {
        let mut r = rng(seed);
        let sc = scenario(&mut r, MIXED, 16, 6, 2, 64, DType::F32);
        let (k16, v16) = (
            sc.k_cache.to_dtype(cache_dtype).unwrap(),
            sc.v_cache.to_dtype(cache_dtype).unwrap(),
        );
        let (k32, v32) = (
            k16.to_dtype(DType::F32).unwrap(),
            v16.to_dtype(DType::F32).unwrap(),
        );
        let scale = 0.125;
        let got = paged_attention(&sc.q, &k16, &v16, &sc.meta, scale).unwrap();
        let want = paged_attention_naive(&sc.q, &k32, &v32, &sc.meta, scale).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-5, "{cache_dtype:?} cache: max diff {diff}");
    }
}

#[test]
fn large_scores_are_stable() {
    // A large softmax scale makes raw exp() overflow without max-subtraction.
    let mut r = rng(7);
    let sc = scenario(&mut r, MIXED, 16, 6, 2, 32, DType::F32);
    let got = paged_attention(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, 50.0).unwrap();
    let want = paged_attention_naive(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, 50.0).unwrap();
    let all_finite = got
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite());
    assert!(all_finite);
    assert!(max_abs_diff(&got, &want) <= 1e-4);
}

/// softmax(q k^T * scale + causal mask) v with candle matmuls; q (L, H, D), k/v (L, KVH, D).
fn dense_causal(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    let (l, h, d) = q.dims3().unwrap();
    let kvh = k.dim(1).unwrap();
    let g = h / kvh;
    let expand = |t: &Tensor| {
        t.unsqueeze(2)
            .unwrap()
            .broadcast_as((l, kvh, g, d))
            .unwrap()
            .reshape((l, h, d))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let qh = q.transpose(0, 1).unwrap().contiguous().unwrap(); // (H, L, D)
    let kh = expand(k);
    let vh = expand(v);
    let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap(); // (H, L, L)
    let mask: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let mask = Tensor::from_vec(mask, (l, l), &Device::Cpu).unwrap();
    let scores = scores.broadcast_add(&mask).unwrap();
    let max = scores.max_keepdim(D::Minus1).unwrap();
    let e = scores.broadcast_sub(&max).unwrap().exp().unwrap();
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
    p.matmul(&vh)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
}

#[test]
fn single_sequence_equals_dense_causal_attention() {
    let mut r = rng(11);
    let (l, h, kvh, d, bs) = (40, 6, 2, 64, 16);
    let q = rand_tensor(&mut r, &[l, h, d], DType::F32);
    let k = rand_tensor(&mut r, &[l, kvh, d], DType::F32);
    let v = rand_tensor(&mut r, &[l, kvh, d], DType::F32);
    let scale = 1.0 / (d as f64).sqrt();
    let want = dense_causal(&q, &k, &v, scale);

    let table: Vec<u32> = vec![5, 0, 3]; // out of order on purpose
    let num_blocks = 7;
    let k_cache = Tensor::zeros((num_blocks, bs, kvh, d), DType::F32, &Device::Cpu).unwrap();
    let v_cache = k_cache.zeros_like().unwrap();
    let slot = |t: usize| (table[t / bs] as usize * bs + t % bs) as i64;

    // (a) the whole sequence as one prefill.
    let slots: Vec<i64> = (0..l).map(slot).collect();
    let meta = PagedAttnMetadata::from_host(
        &slots,
        std::slice::from_ref(&table),
        &[l],
        &[l],
        bs,
        &Device::Cpu,
    )
    .unwrap();
    write_kv_cache(&k, &v, &k_cache, &v_cache, &meta.slot_mapping).unwrap();
    let got = paged_attention(&q, &k_cache, &v_cache, &meta, scale as f32).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-5);

    // (b) chunked: 25 tokens, then 14, then one decode token, into fresh caches.
    let k_cache = k_cache.zeros_like().unwrap();
    let v_cache = v_cache.zeros_like().unwrap();
    let mut outs = Vec::new();
    for (start, len) in [(0, 25), (25, 14), (39, 1)] {
        let slots: Vec<i64> = (start..start + len).map(slot).collect();
        let meta = PagedAttnMetadata::from_host(
            &slots,
            std::slice::from_ref(&table),
            &[len],
            &[start + len],
            bs,
            &Device::Cpu,
        )
        .unwrap();
        let (kc, vc, qc) = (
            k.narrow(0, start, len).unwrap(),
            v.narrow(0, start, len).unwrap(),
            q.narrow(0, start, len).unwrap(),
        );
        write_kv_cache(&kc, &vc, &k_cache, &v_cache, &meta.slot_mapping).unwrap();
        outs.push(paged_attention(&qc, &k_cache, &v_cache, &meta, scale as f32).unwrap());
    }
    let got = Tensor::cat(&outs, 0).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-5);
}

#[test]
fn caches_as_views_with_start_offset_and_strided_q() {
    // Layer caches carved out of one (2, num_blocks, bs, kvh, d) allocation, and q taken
    // as a narrow of a fused qkv projection.
    let mut r = rng(12);
    let (bs, h, kvh, d) = (16, 6, 2, 32);
    let base = common::scenario(&mut r, MIXED, bs, h, kvh, d, DType::F32);
    let both = Tensor::stack(&[&base.k_cache, &base.v_cache], 0).unwrap();
    let (k_cache, v_cache) = (both.get(0).unwrap(), both.get(1).unwrap());
    let n = base.q.dim(0).unwrap();
    let qkv = Tensor::cat(
        &[
            base.q.reshape((n, h * d)).unwrap(),
            base.new_k.reshape((n, kvh * d)).unwrap(),
            base.new_v.reshape((n, kvh * d)).unwrap(),
        ],
        1,
    )
    .unwrap();
    // (n, h, d) view with row stride (h + 2 kvh) * d: a narrow of the fused projection.
    let q_view = qkv
        .reshape((n, h + 2 * kvh, d))
        .unwrap()
        .narrow(1, 0, h)
        .unwrap();
    assert!(!q_view.is_contiguous());
    let got = paged_attention(&q_view, &k_cache, &v_cache, &base.meta, 0.2).unwrap();
    let want =
        paged_attention_naive(&base.q, &base.k_cache, &base.v_cache, &base.meta, 0.2).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-5);
}

#[test]
fn rows_past_last_sequence_are_zero() {
    let mut r = rng(13);
    let (bs, h, kvh, d) = (4, 2, 1, 8);
    let k_cache = rand_tensor(&mut r, &[4, bs, kvh, d], DType::F32);
    let v_cache = rand_tensor(&mut r, &[4, bs, kvh, d], DType::F32);
    let meta =
        PagedAttnMetadata::from_host(&[5, 6], &[vec![1, 2]], &[2], &[7], bs, &Device::Cpu).unwrap();
    let q = rand_tensor(&mut r, &[4, h, d], DType::F32); // 2 real rows + 2 padding rows
    let got = paged_attention(&q, &k_cache, &v_cache, &meta, 0.3).unwrap();
    let want = paged_attention_naive(&q, &k_cache, &v_cache, &meta, 0.3).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-6);
    let pad = got
        .narrow(0, 2, 2)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap();
    assert_eq!(pad.to_scalar::<f32>().unwrap(), 0.0);
    let real = got
        .narrow(0, 0, 2)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap();
    assert!(real.to_scalar::<f32>().unwrap() > 0.0);
}

#[test]
fn empty_batch_is_ok() {
    let k_cache = Tensor::zeros((2, 4, 1, 8), DType::F32, &Device::Cpu).unwrap();
    let meta = PagedAttnMetadata::from_host(&[], &[], &[], &[], 4, &Device::Cpu).unwrap();
    let q = Tensor::zeros((0, 2, 8), DType::F32, &Device::Cpu).unwrap();
    let out = paged_attention(&q, &k_cache, &k_cache, &meta, 1.0).unwrap();
    assert_eq!(out.dims(), &[0, 2, 8]);
}

/// A small valid setup: one seq, 3 tokens of context, 2 new.
fn small() -> (Tensor, Tensor, Tensor, PagedAttnMetadata) {
    let mut r = rng(14);
    let k_cache = rand_tensor(&mut r, &[3, 4, 2, 8], DType::F32);
    let v_cache = rand_tensor(&mut r, &[3, 4, 2, 8], DType::F32);
    let q = rand_tensor(&mut r, &[2, 4, 8], DType::F32);
    let meta =
        PagedAttnMetadata::from_host(&[9, 10], &[vec![2]], &[2], &[3], 4, &Device::Cpu).unwrap();
    (q, k_cache, v_cache, meta)
}

fn expect_err(res: candle_core::Result<Tensor>, needle: &str) {
    match res {
        Ok(_) => panic!("expected an error mentioning {needle:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "error {msg:?} does not mention {needle:?}"
            );
        }
    }
}

#[test]
fn small_setup_is_valid() {
    let (q, k, v, meta) = small();
    let got = paged_attention(&q, &k, &v, &meta, 0.5).unwrap();
    let want = paged_attention_naive(&q, &k, &v, &meta, 0.5).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-6);
}

#[test]
fn shape_errors() {
    let (q, k, v, meta) = small();
    let dev = Device::Cpu;
    // q rank
    expect_err(
        paged_attention(&q.flatten_from(1).unwrap(), &k, &v, &meta, 1.0),
        "q must have shape",
    );
    // head_dim mismatch
    let q16 = Tensor::zeros((2, 4, 16), DType::F32, &dev).unwrap();
    expect_err(paged_attention(&q16, &k, &v, &meta, 1.0), "head_dim");
    // num_heads not a multiple of num_kv_heads
    let q3 = Tensor::zeros((2, 3, 8), DType::F32, &dev).unwrap();
    expect_err(paged_attention(&q3, &k, &v, &meta, 1.0), "num_kv_heads");
    // k/v cache shapes differ
    let v_bad = Tensor::zeros((3, 4, 1, 8), DType::F32, &dev).unwrap();
    expect_err(paged_attention(&q, &k, &v_bad, &meta, 1.0), "v_cache shape");
    // block size mismatch
    let mut m = meta.clone();
    m.block_size = 8;
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "block_size");
    // metadata shapes
    let mut m = meta.clone();
    m.context_lens = Tensor::new(&[3u32, 3], &dev).unwrap();
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "context_lens");
    // non-contiguous cache
    let k_nc = Tensor::zeros((4, 3, 2, 8), DType::F32, &dev)
        .unwrap()
        .transpose(0, 1)
        .unwrap();
    assert!(!k_nc.is_contiguous());
    expect_err(paged_attention(&q, &k_nc, &v, &meta, 1.0), "contiguous");
}

#[test]
fn dtype_errors() {
    let (q, k, v, meta) = small();
    let dev = Device::Cpu;
    expect_err(
        paged_attention(&q, &k.to_dtype(DType::BF16).unwrap(), &v, &meta, 1.0),
        "dtype",
    );
    expect_err(
        paged_attention(
            &q.to_dtype(DType::F64).unwrap(),
            &k.to_dtype(DType::F64).unwrap(),
            &v.to_dtype(DType::F64).unwrap(),
            &meta,
            1.0,
        ),
        "f32, f16 or bf16",
    );
    let mut m = meta.clone();
    m.block_tables = Tensor::new(&[[2i64]], &dev).unwrap();
    expect_err(
        paged_attention(&q, &k, &v, &m, 1.0),
        "block_tables must be u32",
    );
    expect_err(
        paged_attention(&q, &k, &v, &meta, f32::NAN),
        "softmax_scale",
    );
}

#[test]
fn inconsistent_metadata_errors() {
    let (q, k, v, meta) = small();
    let dev = Device::Cpu;
    // block id past the cache
    let mut m = meta.clone();
    m.block_tables = Tensor::new(&[[3u32]], &dev).unwrap();
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "out of range");
    // query_len > context_len
    let mut m = meta.clone();
    m.context_lens = Tensor::new(&[1u32], &dev).unwrap();
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "query_len");
    // context does not fit the block table
    let mut m = meta.clone();
    m.context_lens = Tensor::new(&[5u32], &dev).unwrap();
    m.max_context_len = 5;
    expect_err(
        paged_attention(&q, &k, &v, &m, 1.0),
        "block_tables has only",
    );
    // max_context_len understated
    let mut m = meta.clone();
    m.max_context_len = 2;
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "max_context_len");
    // max_query_len understated
    let mut m = meta.clone();
    m.max_query_len = 1;
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "max_query_len");
    // cu_seqlens past q's rows
    let mut m = meta.clone();
    m.cu_seqlens_q = Tensor::new(&[0u32, 3], &dev).unwrap();
    m.max_query_len = 3;
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "exceeds num_tokens");
    // cu_seqlens not starting at 0
    let mut m = meta.clone();
    m.cu_seqlens_q = Tensor::new(&[1u32, 2], &dev).unwrap();
    expect_err(paged_attention(&q, &k, &v, &m, 1.0), "cu_seqlens_q[0]");
}

#[test]
fn metadata_from_host_validates() {
    let dev = Device::Cpu;
    let m = PagedAttnMetadata::from_host(
        &[0, 1, 2, 17],
        &[vec![0], vec![1, 2]],
        &[3, 1],
        &[3, 18],
        16,
        &dev,
    )
    .unwrap();
    assert_eq!(
        m.block_tables.to_vec2::<u32>().unwrap(),
        vec![vec![0, 0], vec![1, 2]]
    );
    assert_eq!(m.cu_seqlens_q.to_vec1::<u32>().unwrap(), vec![0, 3, 4]);
    assert_eq!(m.context_lens.to_vec1::<u32>().unwrap(), vec![3, 18]);
    assert_eq!(m.slot_mapping.to_vec1::<i64>().unwrap(), vec![0, 1, 2, 17]);
    assert_eq!(
        (m.max_query_len, m.max_context_len, m.num_seqs()),
        (3, 18, 2)
    );

    let err = |r: candle_core::Result<PagedAttnMetadata>, needle: &str| match r {
        Ok(_) => panic!("expected error mentioning {needle:?}"),
        Err(e) => assert!(e.to_string().contains(needle), "{e} lacks {needle:?}"),
    };
    err(
        PagedAttnMetadata::from_host(&[0], &[vec![0]], &[2], &[2], 16, &dev),
        "slot_mapping has 1 entries",
    );
    err(
        PagedAttnMetadata::from_host(&[0, 1], &[vec![0]], &[2], &[1], 16, &dev),
        "query_lens[0] = 2 exceeds context_lens[0] = 1",
    );
    err(
        PagedAttnMetadata::from_host(&[0], &[vec![0]], &[1], &[17], 16, &dev),
        "does not fit block_tables[0]",
    );
    err(
        PagedAttnMetadata::from_host(&[0], &[vec![0]], &[1, 1], &[1], 16, &dev),
        "query_lens has 2",
    );
    err(
        PagedAttnMetadata::from_host(&[0], &[vec![0]], &[1], &[1], 0, &dev),
        "block_size must be > 0",
    );
}

#[test]
fn decode_only_batch_of_sixteen() {
    // The shape of a real decode step: 16 seqs, one token each, contexts of a few hundred.
    let mut r = rng(15);
    let seqs: Vec<_> = (0..16).map(|i| seq(200 + 13 * i, 1)).collect();
    let sc = scenario(&mut r, &seqs, 16, 9, 3, 64, DType::F32);
    let got = paged_attention(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, 0.125).unwrap();
    let want = paged_attention_naive(&sc.q, &sc.k_cache, &sc.v_cache, &sc.meta, 0.125).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-5);
}

/// A token's output does not depend on how its prompt is split into steps: each row of a
/// 37-token chunk (several tiles of tokens, partial blocks) equals, bit for bit, that token
/// attended alone as a one-token query over the same cache, for f32 and f16 caches.
#[test]
fn chunk_rows_equal_each_token_alone() {
    for (seed, dtype) in [(40, DType::F32), (41, DType::F16)] {
        let mut r = rng(seed);
        let (cached, qlen, bs) = (21, 37, 16);
        let sc = scenario(&mut r, &[seq(cached, qlen)], bs, 9, 3, 64, dtype);
        let q = sc.q.to_dtype(DType::F32).unwrap();
        let all = paged_attention(&q, &sc.k_cache, &sc.v_cache, &sc.meta, 0.125).unwrap();
        let dev = Device::Cpu;
        for j in 0..qlen {
            let ctx = cached + j + 1;
            let meta =
                PagedAttnMetadata::from_host(&[sc.slots[j]], &sc.tables, &[1], &[ctx], bs, &dev)
                    .unwrap();
            let one = paged_attention(
                &q.narrow(0, j, 1).unwrap(),
                &sc.k_cache,
                &sc.v_cache,
                &meta,
                0.125,
            )
            .unwrap();
            let want: Vec<f32> = all
                .get(j)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<f32> = one.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype:?} token {j}"
            );
        }
    }
}

/// How many query rows take a cached block together (1-3; 3 also reads a decode's half-precision
/// rows in place) changes no bit of any output: chunks, decodes and GQA groups of three and
/// four, over f32, f16 and bf16 caches.
#[test]
fn rows_taken_together_change_no_bits() {
    for (seed, dtype, heads, kv_heads) in [
        (50, DType::F32, 9, 3),
        (51, DType::F16, 9, 3),
        (52, DType::BF16, 9, 3),
        (53, DType::F16, 8, 2),
    ] {
        let mut r = rng(seed);
        let seqs = [seq(21, 37), seq(40, 1), seq(7, 1), seq(0, 5)];
        let sc = scenario(&mut r, &seqs, 16, heads, kv_heads, 64, dtype);
        let q = sc.q.to_dtype(DType::F32).unwrap();
        let run = |rows: usize| -> Vec<u32> {
            lantern_kernels::set_attention_rows_together(rows);
            let out = paged_attention(&q, &sc.k_cache, &sc.v_cache, &sc.meta, 0.125).unwrap();
            let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let (one, two, three) = (run(1), run(2), run(3));
        lantern_kernels::set_attention_rows_together(3);
        assert!(one == three && two == three, "{dtype:?} {heads}/{kv_heads}");
    }
}
