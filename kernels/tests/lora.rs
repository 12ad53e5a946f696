//! `lora_add` against the naive reference, merged weights and per-sequence runs, plus the
//! `LoraBatch` metadata and bad inputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Device, Tensor};
use common::{rand_tensor, rng};
use lantern_kernels::reference::lora_add_naive;
use lantern_kernels::{lora_add, LoraBatch, LoraWeights, LORA_SGMV_MIN_TOKENS};
use rand::rngs::StdRng;
use rand::Rng;

const CPU: Device = Device::Cpu;

/// One sequence of a step: adapter slot (`None` = base) and rows this step.
type Seq = (Option<u32>, usize);

/// Base tokens, decode tokens of several slots (two adjacent ones sharing slot 3), prefill
/// chunks of several slots at, below and above the SGMV threshold, and a chunk spanning more
/// than two SGMV tiles.
const MIXED: &[Seq] = &[
    (None, 1),
    (Some(0), 1),
    (Some(3), 1),
    (Some(3), 1),
    (None, 7),
    (Some(1), 37),
    (Some(5), 1),
    (Some(2), LORA_SGMV_MIN_TOKENS),
    (Some(4), LORA_SGMV_MIN_TOKENS - 1),
    (None, 2),
    (Some(0), 70),
    (Some(1), 1),
    (Some(5), LORA_SGMV_MIN_TOKENS + 1),
    (Some(2), 1),
    (None, 3),
];

/// Ranks of the six slots used by `MIXED`, padded into `max_rank = 128`.
const RANKS: &[usize] = &[1, 4, 8, 16, 64, 128];

/// How rank padding (rows `r..max_rank` of `a[s]`, columns `r..max_rank` of `b[s]`) is filled.
#[derive(Clone, Copy, PartialEq)]
enum Pad {
    Zero,
    Garbage,
}

fn uniform(r: &mut StdRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-bound..bound)).collect()
}

/// Random stacked adapters shaped like trained LoRA weights (`a ~ 1/sqrt(in)`,
/// `b ~ 1/sqrt(r)`, scale in [0.5, 2)), so the LoRA term is O(1).
fn weights(
    r: &mut StdRng,
    ranks: &[usize],
    max_rank: usize,
    in_dim: usize,
    out_dim: usize,
    dtype: DType,
    pad: Pad,
) -> LoraWeights {
    let s = ranks.len();
    let mut a = uniform(
        r,
        s * max_rank * in_dim,
        1.0 / (in_dim.max(1) as f32).sqrt(),
    );
    let mut b = Vec::with_capacity(s * out_dim * max_rank);
    for &rank in ranks {
        b.extend(uniform(
            r,
            out_dim * max_rank,
            1.0 / (rank.max(1) as f32).sqrt(),
        ));
    }
    if pad == Pad::Zero {
        for (slot, &rank) in ranks.iter().enumerate() {
            for k in rank..max_rank {
                let off = (slot * max_rank + k) * in_dim;
                a[off..off + in_dim].fill(0.0);
            }
            for o in 0..out_dim {
                let off = (slot * out_dim + o) * max_rank;
                b[off + rank..off + max_rank].fill(0.0);
            }
        }
    }
    let scales: Vec<f32> = (0..s).map(|_| r.random_range(0.5f32..2.0)).collect();
    let t = |v: Vec<f32>, shape: &[usize]| {
        Tensor::from_vec(v, shape, &CPU)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    LoraWeights::new(
        t(a, &[s, max_rank, in_dim]),
        t(b, &[s, out_dim, max_rank]),
        Tensor::from_vec(scales, s, &CPU).unwrap(),
    )
    .unwrap()
}

fn batch(seqs: &[Seq]) -> LoraBatch {
    let slots: Vec<_> = seqs.iter().map(|s| s.0).collect();
    let lens: Vec<_> = seqs.iter().map(|s| s.1).collect();
    LoraBatch::from_host(&slots, &lens, &CPU).unwrap()
}

fn num_tokens(seqs: &[Seq]) -> usize {
    seqs.iter().map(|s| s.1).sum()
}

fn f32_rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

/// `max |got - want| / (1 + |want|)`.
fn max_rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let (g, w) = (f32_rows(got), f32_rows(want));
    g.iter()
        .flatten()
        .zip(w.iter().flatten())
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f32::max)
}

/// Bit patterns, so that equality is exact (and NaN-safe).
fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

struct Case {
    y: Tensor,
    x: Tensor,
    w: LoraWeights,
    batch: LoraBatch,
}

fn case(seed: u64, seqs: &[Seq], in_dim: usize, out_dim: usize, dtype: DType) -> Case {
    let mut r = rng(seed);
    let w = weights(&mut r, RANKS, 128, in_dim, out_dim, dtype, Pad::Zero);
    let t = num_tokens(seqs);
    Case {
        y: rand_tensor(&mut r, &[t, out_dim], dtype),
        x: rand_tensor(&mut r, &[t, in_dim], dtype),
        w,
        batch: batch(seqs),
    }
}

fn check_mixed(seed: u64, in_dim: usize, out_dim: usize, dtype: DType, tol: f32) {
    let c = case(seed, MIXED, in_dim, out_dim, dtype);
    let got = lora_add(&c.y, &c.x, &c.w, &c.batch).unwrap();
    let want = lora_add_naive(&c.y, &c.x, &c.w, &c.batch).unwrap();
    assert_eq!(got.dims(), c.y.dims());
    assert_eq!(got.dtype(), dtype);
    let diff = max_rel_diff(&got, &want);
    assert!(
        diff <= tol,
        "in {in_dim} out {out_dim} {dtype:?}: max rel diff {diff} > {tol}"
    );
    // Base rows are copied bit for bit; LoRA rows actually changed.
    let (g, y) = (f32_rows(&got), f32_rows(&c.y));
    let mut row = 0;
    for &(slot, len) in MIXED {
        for _ in 0..len {
            if slot.is_none() {
                assert_eq!(g[row], y[row], "base row {row} changed");
            } else {
                assert_ne!(g[row], y[row], "LoRA row {row} unchanged");
            }
            row += 1;
        }
    }
}

#[test]
fn f32_mixed_batch_matches_reference() {
    for (seed, in_dim, out_dim) in [
        (1, 37, 53),
        (2, 100, 29),
        (3, 5, 3),
        (4, 576, 576),
        (5, 64, 300),
    ] {
        check_mixed(seed, in_dim, out_dim, DType::F32, 1e-5);
    }
}

#[test]
fn bf16_mixed_batch_matches_reference() {
    for (seed, in_dim, out_dim) in [(11, 37, 53), (12, 200, 29), (13, 576, 576)] {
        check_mixed(seed, in_dim, out_dim, DType::BF16, 1e-2);
    }
}

#[test]
fn f16_mixed_batch_matches_reference() {
    for (seed, in_dim, out_dim) in [(21, 37, 53), (22, 200, 29), (23, 576, 576)] {
        check_mixed(seed, in_dim, out_dim, DType::F16, 2e-3);
    }
}

/// Every rank on its own, as a decode token (BGMV) and as a long prefill segment (SGMV).
#[test]
fn each_rank_alone_in_both_paths() {
    for (slot, _) in RANKS.iter().enumerate() {
        let s = Some(slot as u32);
        for seqs in [
            vec![(s, 1)],
            vec![(s, 45)],
            vec![(None, 3), (s, 2), (None, 1)],
        ] {
            let c = case(30 + slot as u64, &seqs, 43, 19, DType::F32);
            let got = lora_add(&c.y, &c.x, &c.w, &c.batch).unwrap();
            let want = lora_add_naive(&c.y, &c.x, &c.w, &c.batch).unwrap();
            let diff = max_rel_diff(&got, &want);
            assert!(diff <= 1e-5, "slot {slot} {seqs:?}: {diff}");
        }
    }
}

#[test]
fn rank_hint_skips_padding() {
    let mut r = rng(40);
    let (in_dim, out_dim) = (29, 41);
    let garbage = weights(
        &mut r,
        RANKS,
        128,
        in_dim,
        out_dim,
        DType::F32,
        Pad::Garbage,
    );
    let hinted = garbage.clone().with_ranks(RANKS.to_vec()).unwrap();
    // The same adapters with the padding zeroed and no hint.
    let mut zeroed = garbage.clone();
    let mut a = zeroed.a.to_vec3::<f32>().unwrap();
    let mut b = zeroed.b.to_vec3::<f32>().unwrap();
    for (slot, &rank) in RANKS.iter().enumerate() {
        a[slot][rank..].iter_mut().for_each(|row| row.fill(0.0));
        b[slot].iter_mut().for_each(|row| row[rank..].fill(0.0));
    }
    let flat = |v: Vec<Vec<Vec<f32>>>| v.into_iter().flatten().flatten().collect::<Vec<_>>();
    zeroed.a = Tensor::from_vec(flat(a), garbage.a.shape(), &CPU).unwrap();
    zeroed.b = Tensor::from_vec(flat(b), garbage.b.shape(), &CPU).unwrap();

    let t = num_tokens(MIXED);
    let y = rand_tensor(&mut r, &[t, out_dim], DType::F32);
    let x = rand_tensor(&mut r, &[t, in_dim], DType::F32);
    let bt = batch(MIXED);
    let got = lora_add(&y, &x, &hinted, &bt).unwrap();
    let want_hinted = lora_add_naive(&y, &x, &hinted, &bt).unwrap();
    let want_zeroed = lora_add_naive(&y, &x, &zeroed, &bt).unwrap();
    assert!(max_rel_diff(&got, &want_hinted) <= 1e-5);
    assert!(max_rel_diff(&got, &want_zeroed) <= 1e-5);
    // The padding really is garbage: without the hint the result differs.
    let unhinted = lora_add(&y, &x, &garbage, &bt).unwrap();
    assert!(max_rel_diff(&unhinted, &want_zeroed) > 1e-2);
    // And with zero padding, hint or not gives the same result.
    let zeroed_hinted = zeroed.clone().with_ranks(RANKS.to_vec()).unwrap();
    let a1 = lora_add(&y, &x, &zeroed, &bt).unwrap();
    let a2 = lora_add(&y, &x, &zeroed_hinted, &bt).unwrap();
    assert!(max_rel_diff(&a1, &a2) <= 1e-5);
}

/// With `from_host`'s per-sequence segments, each sequence's result is bit-identical
/// whether it runs in the mixed batch, alone, or in the batch in reverse order: neither
/// the path, the tiling nor the thread split depends on the rest of the batch.
#[test]
fn batch_invariance() {
    for dtype in [DType::F32, DType::BF16] {
        let c = case(50, MIXED, 67, 45, dtype);
        let all = lora_add(&c.y, &c.x, &c.w, &c.batch).unwrap();
        let mut off = 0;
        for &(slot, len) in MIXED {
            let y = c.y.narrow(0, off, len).unwrap();
            let x = c.x.narrow(0, off, len).unwrap();
            let alone = lora_add(&y, &x, &c.w, &batch(&[(slot, len)])).unwrap();
            assert_eq!(
                bits(&alone),
                bits(&all.narrow(0, off, len).unwrap()),
                "{dtype:?} seq ({slot:?}, {len}) at row {off}"
            );
            off += len;
        }
        // The same sequences in reverse order.
        let mut offs = Vec::new();
        let mut off = 0;
        for &(_, len) in MIXED {
            offs.push(off);
            off += len;
        }
        let rev: Vec<Seq> = MIXED.iter().rev().copied().collect();
        let idx: Vec<u32> = MIXED
            .iter()
            .zip(&offs)
            .rev()
            .flat_map(|(&(_, len), &o)| (o..o + len).map(|i| i as u32))
            .collect();
        let idx = Tensor::from_vec(idx.clone(), idx.len(), &CPU).unwrap();
        let (y_rev, x_rev) = (
            c.y.index_select(&idx, 0).unwrap(),
            c.x.index_select(&idx, 0).unwrap(),
        );
        let got_rev = lora_add(&y_rev, &x_rev, &c.w, &batch(&rev)).unwrap();
        assert_eq!(
            bits(&got_rev),
            bits(&all.index_select(&idx, 0).unwrap()),
            "{dtype:?} reversed batch"
        );
    }
}

/// A hand-built batch may merge adjacent same-slot sequences into one segment: ten decode
/// tokens of one adapter then take the SGMV path instead of ten BGMV steps. Both agree
/// with the reference (and with each other to f32 rounding).
#[test]
fn merged_segments_take_the_sgmv_path() {
    const N: usize = 10;
    const { assert!(N >= LORA_SGMV_MIN_TOKENS) };
    let mut seqs: Vec<Seq> = vec![(None, 2)];
    seqs.extend([(Some(3), 1); N]);
    let c = case(55, &seqs, 70, 90, DType::F32);
    let mut merged = c.batch.clone();
    merged.seg_starts = Tensor::new(&[0u32, 2, 2 + N as u32], &CPU).unwrap();
    merged.seg_slots = Tensor::new(&[-1i32, 3], &CPU).unwrap();
    merged.max_lora_segment_len = N;
    let per_seq = lora_add(&c.y, &c.x, &c.w, &c.batch).unwrap();
    let sgmv = lora_add(&c.y, &c.x, &c.w, &merged).unwrap();
    let want = lora_add_naive(&c.y, &c.x, &c.w, &c.batch).unwrap();
    assert!(max_rel_diff(&per_seq, &want) <= 1e-5);
    assert!(max_rel_diff(&sgmv, &want) <= 1e-5);
    assert!(max_rel_diff(&sgmv, &per_seq) <= 1e-5);
}

/// Independent check of the math: with every token on one adapter,
/// `x W^T + lora_add == x (W + scale B A)^T`.
#[test]
fn matches_merged_weights() {
    let mut r = rng(60);
    let (in_dim, out_dim, rank) = (75, 61, 8);
    let ranks = [16, rank, 4];
    let w = weights(&mut r, &ranks, 16, in_dim, out_dim, DType::F32, Pad::Zero);
    let seqs: &[Seq] = &[(Some(1), 20), (Some(1), 1), (Some(1), 1), (Some(1), 9)];
    let t = num_tokens(seqs);
    let base_w = rand_tensor(&mut r, &[out_dim, in_dim], DType::F32);
    let x = rand_tensor(&mut r, &[t, in_dim], DType::F32);
    let y = x.matmul(&base_w.t().unwrap()).unwrap();
    let got = lora_add(&y, &x, &w, &batch(seqs)).unwrap();

    let a1 = w.a.get(1).unwrap().narrow(0, 0, rank).unwrap(); // (r, in)
    let b1 = w.b.get(1).unwrap().narrow(1, 0, rank).unwrap(); // (out, r)
    let scale = w.scales.to_vec1::<f32>().unwrap()[1];
    let delta = (b1.matmul(&a1).unwrap() * f64::from(scale)).unwrap(); // (out, in)
    let merged = (base_w + delta).unwrap();
    let want = x.matmul(&merged.t().unwrap()).unwrap();
    let diff = max_rel_diff(&got, &want);
    assert!(diff <= 1e-5, "max rel diff {diff}");
}

#[test]
fn strided_inputs() {
    let c = case(70, MIXED, 33, 21, DType::F32);
    let t = num_tokens(MIXED);
    let mut r = rng(71);
    // x: a column window of a wider activation; y: a transposed view.
    let wide = Tensor::cat(&[&rand_tensor(&mut r, &[t, 5], DType::F32), &c.x], 1).unwrap();
    let x = wide.narrow(1, 5, 33).unwrap();
    let y = c.y.t().unwrap().contiguous().unwrap().t().unwrap();
    assert!(!x.is_contiguous() && !y.is_contiguous());
    let got = lora_add(&y, &x, &c.w, &c.batch).unwrap();
    let want = lora_add_naive(&c.y, &c.x, &c.w, &c.batch).unwrap();
    assert!(max_rel_diff(&got, &want) <= 1e-5);
}

#[test]
fn empty_batch() {
    let mut r = rng(80);
    let w = weights(&mut r, &[4, 8], 8, 10, 12, DType::F32, Pad::Zero);
    let y = Tensor::zeros((0, 12), DType::F32, &CPU).unwrap();
    let x = Tensor::zeros((0, 10), DType::F32, &CPU).unwrap();
    for b in [
        LoraBatch::from_host(&[], &[], &CPU).unwrap(),
        LoraBatch::from_host(&[Some(1), None], &[0, 0], &CPU).unwrap(),
    ] {
        assert!(!b.any_lora);
        assert_eq!((b.num_tokens(), b.num_segments()), (0, 0));
        let got = lora_add(&y, &x, &w, &b).unwrap();
        assert_eq!(got.dims(), [0, 12]);
        assert_eq!(lora_add_naive(&y, &x, &w, &b).unwrap().dims(), [0, 12]);
    }
}

#[test]
fn all_base_batch_returns_y() {
    let seqs: &[Seq] = &[(None, 5), (None, 1), (None, 30)];
    for dtype in [DType::F32, DType::BF16] {
        let c = case(90, seqs, 20, 24, dtype);
        assert!(!c.batch.any_lora);
        assert_eq!(c.batch.num_lora_tokens, 0);
        let got = lora_add(&c.y, &c.x, &c.w, &c.batch).unwrap();
        assert_eq!(got.dtype(), dtype);
        assert_eq!(bits(&got), bits(&c.y));
        assert_eq!(
            bits(&lora_add_naive(&c.y, &c.x, &c.w, &c.batch).unwrap()),
            bits(&c.y)
        );
    }
}

#[test]
fn from_host_builds_tokens_and_per_sequence_segments() {
    let b = LoraBatch::from_host(
        &[None, Some(2), Some(2), None, Some(7), Some(2), None],
        &[2, 1, 3, 0, 4, 1, 1],
        &CPU,
    )
    .unwrap();
    assert_eq!(
        b.token_slots.to_vec1::<i32>().unwrap(),
        [-1, -1, 2, 2, 2, 2, 7, 7, 7, 7, 2, -1]
    );
    // One segment per sequence with rows (adjacent slot-2 sequences stay apart); the empty
    // base sequence between 2 and 7 vanishes.
    assert_eq!(
        b.seg_starts.to_vec1::<u32>().unwrap(),
        [0, 2, 3, 6, 10, 11, 12]
    );
    assert_eq!(b.seg_slots.to_vec1::<i32>().unwrap(), [-1, 2, 2, 7, 2, -1]);
    assert!(b.any_lora);
    assert_eq!(b.num_lora_tokens, 9);
    assert_eq!(b.max_lora_segment_len, 4);
    assert_eq!((b.num_tokens(), b.num_segments()), (12, 6));

    assert!(LoraBatch::from_host(&[None], &[1, 2], &CPU).is_err());
    assert!(LoraBatch::from_host(&[Some(u32::MAX)], &[1], &CPU).is_err());
}

#[test]
fn slot_out_of_range_is_an_error() {
    let seqs: &[Seq] = &[(None, 2), (Some(6), 3)]; // 6 slots: 0..=5
    let c = case(100, seqs, 16, 16, DType::F32);
    let err = lora_add(&c.y, &c.x, &c.w, &c.batch).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(lora_add_naive(&c.y, &c.x, &c.w, &c.batch).is_err());
}

#[test]
fn inconsistent_metadata_is_an_error() {
    let c = case(110, MIXED, 16, 16, DType::F32);
    let t = num_tokens(MIXED);
    let run = |b: &LoraBatch| lora_add(&c.y, &c.x, &c.w, b);
    let good = c.batch.clone();
    let i32s = |v: Vec<i32>| Tensor::from_vec(v.clone(), v.len(), &CPU).unwrap();
    let u32s = |v: Vec<u32>| Tensor::from_vec(v.clone(), v.len(), &CPU).unwrap();

    // A token whose slot disagrees with its segment.
    let mut b = good.clone();
    let mut ts = good.token_slots.to_vec1::<i32>().unwrap();
    ts[0] = 1;
    b.token_slots = i32s(ts);
    assert!(run(&b).is_err());

    // Segments that do not end at num_tokens.
    let mut b = good.clone();
    b.seg_starts = u32s(vec![0, t as u32 - 1]);
    b.seg_slots = i32s(vec![-1]);
    assert!(run(&b).is_err());

    // Decreasing offsets.
    let mut b = good.clone();
    b.seg_starts = u32s(vec![0, 5, 3, t as u32]);
    b.seg_slots = i32s(vec![-1, -1, -1]);
    b.token_slots = i32s(vec![-1; t]);
    assert!(run(&b).is_err());

    // A slot below -1.
    let mut b = good.clone();
    b.seg_starts = u32s(vec![0, t as u32]);
    b.seg_slots = i32s(vec![-2]);
    b.token_slots = i32s(vec![-2; t]);
    assert!(run(&b).is_err());
    assert!(lora_add_naive(&c.y, &c.x, &c.w, &b).is_err());

    // Wrong metadata dtypes and lengths.
    let mut b = good.clone();
    b.token_slots = good.token_slots.to_dtype(DType::U32).unwrap();
    assert!(run(&b).is_err());
    let mut b = good.clone();
    b.seg_starts = good.seg_starts.to_dtype(DType::I64).unwrap();
    assert!(run(&b).is_err());
    let mut b = good.clone();
    b.token_slots = i32s(vec![-1; t + 1]);
    assert!(run(&b).is_err());
    let mut b = good.clone();
    b.seg_slots = i32s(vec![0]);
    assert!(run(&b).is_err());
}

#[test]
fn shape_and_dtype_mismatches_are_errors() {
    let c = case(120, MIXED, 24, 40, DType::F32);
    let t = num_tokens(MIXED);
    let mut r = rng(121);
    let f = |shape: &[usize], dtype: DType, r: &mut StdRng| rand_tensor(r, shape, dtype);
    let w = &c.w;
    let bt = &c.batch;
    let bad_inputs: Vec<(&str, Tensor, Tensor)> = vec![
        ("x rows", c.y.clone(), f(&[t + 1, 24], DType::F32, &mut r)),
        ("y rows", f(&[t - 1, 40], DType::F32, &mut r), c.x.clone()),
        ("in_dim", c.y.clone(), f(&[t, 23], DType::F32, &mut r)),
        ("out_dim", f(&[t, 41], DType::F32, &mut r), c.x.clone()),
        ("x 3-D", c.y.clone(), f(&[t, 24, 1], DType::F32, &mut r)),
        ("y 1-D", f(&[t], DType::F32, &mut r), c.x.clone()),
        ("x dtype", c.y.clone(), c.x.to_dtype(DType::BF16).unwrap()),
        ("y dtype", c.y.to_dtype(DType::F16).unwrap(), c.x.clone()),
        ("int y", c.y.to_dtype(DType::U32).unwrap(), c.x.clone()),
    ];
    for (what, y, x) in bad_inputs {
        assert!(lora_add(&y, &x, w, bt).is_err(), "{what} accepted");
    }

    let bad_weights: Vec<(&str, LoraWeights)> = vec![
        (
            "a dtype",
            LoraWeights {
                a: w.a.to_dtype(DType::BF16).unwrap(),
                ..w.clone()
            },
        ),
        (
            "b dtype",
            LoraWeights {
                b: w.b.to_dtype(DType::F16).unwrap(),
                ..w.clone()
            },
        ),
        (
            "scales dtype",
            LoraWeights {
                scales: w.scales.to_dtype(DType::BF16).unwrap(),
                ..w.clone()
            },
        ),
        (
            "a rank",
            LoraWeights {
                a: w.a.narrow(1, 0, 64).unwrap().contiguous().unwrap(),
                ..w.clone()
            },
        ),
        (
            "b slots",
            LoraWeights {
                b: w.b.narrow(0, 0, 5).unwrap(),
                ..w.clone()
            },
        ),
        (
            "scales len",
            LoraWeights {
                scales: w.scales.narrow(0, 0, 5).unwrap(),
                ..w.clone()
            },
        ),
        (
            "a 2-D",
            LoraWeights {
                a: w.a.flatten_to(1).unwrap(),
                ..w.clone()
            },
        ),
        (
            "a strided",
            LoraWeights {
                a: w.a
                    .transpose(0, 1)
                    .unwrap()
                    .contiguous()
                    .unwrap()
                    .transpose(0, 1)
                    .unwrap(),
                ..w.clone()
            },
        ),
        (
            "ranks len",
            LoraWeights {
                ranks: Some(vec![1; 5]),
                ..w.clone()
            },
        ),
        (
            "rank > max",
            LoraWeights {
                ranks: Some(vec![1, 1, 1, 1, 1, 129]),
                ..w.clone()
            },
        ),
    ];
    for (what, bad) in bad_weights {
        assert!(lora_add(&c.y, &c.x, &bad, bt).is_err(), "{what} accepted");
    }
    // The constructor checks too.
    assert!(LoraWeights::new(
        w.a.clone(),
        w.b.to_dtype(DType::F16).unwrap(),
        w.scales.clone()
    )
    .is_err());
    assert!(LoraWeights::new(w.a.clone(), w.b.clone(), w.scales.narrow(0, 0, 2).unwrap()).is_err());
    assert!(w.clone().with_ranks(vec![0; 6]).is_ok());
    assert!(w.clone().with_ranks(vec![200; 6]).is_err());
    // Shape errors are reported even when no token uses an adapter.
    let base = batch(&[(None, t)]);
    assert!(lora_add(&c.y, &f(&[t, 23], DType::F32, &mut r), w, &base).is_err());
}

/// Rank-0 adapters (a slot in the pool with no rank in use) and zero-width projections.
#[test]
fn degenerate_sizes() {
    let seqs: &[Seq] = &[(Some(0), 6), (Some(1), 1)];
    let t = num_tokens(seqs);
    let mut r = rng(130);
    for (in_dim, out_dim, max_rank) in [(0, 7, 4), (9, 0, 4), (9, 7, 0)] {
        let w = weights(
            &mut r,
            &[max_rank, max_rank],
            max_rank,
            in_dim,
            out_dim,
            DType::F32,
            Pad::Zero,
        );
        let y = rand_tensor(&mut r, &[t, out_dim], DType::F32);
        let x = rand_tensor(&mut r, &[t, in_dim], DType::F32);
        let got = lora_add(&y, &x, &w, &batch(seqs)).unwrap();
        assert_eq!(
            bits(&got),
            bits(&y),
            "in {in_dim} out {out_dim} rank {max_rank}"
        );
    }
    let w = weights(&mut r, &[4, 4], 4, 9, 7, DType::F32, Pad::Zero)
        .with_ranks(vec![0, 0])
        .unwrap();
    let y = rand_tensor(&mut r, &[t, 7], DType::F32);
    let x = rand_tensor(&mut r, &[t, 9], DType::F32);
    assert_eq!(bits(&lora_add(&y, &x, &w, &batch(seqs)).unwrap()), bits(&y));
}

fn best(f: impl Fn()) -> std::time::Duration {
    (0..9)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

/// Best-of-9 times for a SmolLM2-135M-sized projection (in = out = 576), rank 16.
/// Run with `cargo test --release -p lantern-kernels --test lora -- --ignored --nocapture`.
#[test]
#[ignore = "timing only; run explicitly in release mode"]
fn perf() {
    let (dim, rank) = (576, 16);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let mut r = rng(1);
        let w = weights(&mut r, &[rank; 8], rank, dim, dim, dtype, Pad::Zero);
        let base_w = rand_tensor(&mut r, &[dim, dim], dtype);
        // Decode: 16 sequences, 8 adapters interleaved (16 one-token segments -> BGMV).
        let decode: Vec<Seq> = (0..16).map(|i| (Some(i % 8), 1)).collect();
        // Prefill: one 512-token chunk on one adapter (SGMV).
        let prefill: &[Seq] = &[(Some(3), 512)];
        for (name, seqs) in [
            ("decode b16 x 8 adapters", &decode[..]),
            ("prefill 512", prefill),
        ] {
            let t = num_tokens(seqs);
            let x = rand_tensor(&mut r, &[t, dim], dtype);
            let y = rand_tensor(&mut r, &[t, dim], dtype);
            let b = batch(seqs);
            let lora = best(|| {
                lora_add(&y, &x, &w, &b).unwrap();
            });
            let naive = best(|| {
                lora_add_naive(&y, &x, &w, &b).unwrap();
            });
            let base = best(|| {
                x.matmul(&base_w.t().unwrap()).unwrap();
            });
            let flops = 2.0 * (t * rank * 2 * dim) as f64;
            println!(
                "{dtype:?} {name}: lora_add {lora:?} ({:.1} GFLOP/s), naive {naive:?}, base x W^T (candle matmul) {base:?}",
                flops / lora.as_secs_f64() / 1e9
            );
        }
    }
}
