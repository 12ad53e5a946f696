//! `sample_tokens` on CPU against the naive reference (greedy, temperature, top-k, top-p,
//! min-p, penalties, bias, banned tokens), its distribution, and parameter validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Device, Tensor};
use common::rng;
use lantern_kernels::reference::sample_tokens_naive;
use lantern_kernels::{sample_tokens, SamplingBatch, SamplingRow};
use rand::rngs::StdRng;
use rand::Rng;

const CPU: Device = Device::Cpu;

fn logits(r: &mut StdRng, rows: usize, vocab: usize, spread: f32, dtype: DType) -> Tensor {
    let v: Vec<f32> = (0..rows * vocab)
        .map(|_| r.random_range(-spread..spread))
        .collect();
    Tensor::from_vec(v, (rows, vocab), &CPU)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn run(l: &Tensor, rows: &[SamplingRow<'_>]) -> Vec<u32> {
    let b = SamplingBatch::from_host(rows, l.device()).unwrap();
    sample_tokens(l, &b).unwrap().to_vec1::<u32>().unwrap()
}

/// A mix of every filter and penalty combination, drawn with `u`.
fn mixed_rows<'a>(
    r: &mut StdRng,
    n: usize,
    hist: &'a [u32],
    bias: &'a [(u32, f32)],
    banned: &'a [u32],
) -> Vec<SamplingRow<'a>> {
    (0..n)
        .map(|i| {
            let mut row = SamplingRow::greedy();
            row.uniform = r.random_range(0.0..1.0);
            match i % 9 {
                0 => {}
                1 => row.params.temperature = 0.7,
                2 => {
                    row.params.temperature = 1.0;
                    row.params.top_k = 1 + i % 50;
                }
                3 => {
                    row.params.temperature = 0.8;
                    row.params.top_p = 0.9;
                }
                4 => {
                    row.params.temperature = 1.3;
                    row.params.min_p = 0.1;
                }
                5 => {
                    row.params.temperature = 0.9;
                    row.params.top_k = 40;
                    row.params.top_p = 0.8;
                    row.params.min_p = 0.05;
                }
                6 => {
                    row.params.temperature = 1.0;
                    row.params.repetition_penalty = 1.3;
                    row.params.presence_penalty = 0.5;
                    row.params.frequency_penalty = 0.25;
                    row.prompt_tokens = &hist[..hist.len() / 2];
                    row.output_tokens = &hist[hist.len() / 2..];
                    row.params.top_p = 0.95;
                }
                7 => {
                    row.params.repetition_penalty = 1.5;
                    row.prompt_tokens = hist;
                    row.logit_bias = bias;
                    row.banned = banned;
                }
                _ => {
                    row.params.temperature = 2.0;
                    row.params.top_k = 1000;
                    row.logit_bias = bias;
                    row.banned = banned;
                }
            }
            row
        })
        .collect()
}

#[test]
fn sample_tokens_matches_reference() {
    let mut r = rng(11);
    let hist: Vec<u32> = (0..64).map(|_| r.random_range(0..500)).collect();
    let bias = [(3u32, 5.0f32), (7, -2.0), (400, 1.5)];
    let banned = [hist[0], 11];
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (rows, vocab, spread) in [
            (9, 500, 4.0),
            (27, 3000, 8.0),
            (18, 50_000, 2.0),
            (9, 7, 1.0),
        ] {
            let l = logits(&mut r, rows, vocab, spread, dtype);
            let rs = mixed_rows(&mut r, rows, &hist, &bias, &banned);
            let got = run(&l, &rs);
            let want = sample_tokens_naive(&l, &rs).unwrap();
            assert_eq!(got, want, "{dtype:?} rows {rows} vocab {vocab}");
        }
    }
}

#[test]
fn greedy_ties_nan_and_all_banned() {
    let l = Tensor::new(
        &[[1.0f32, 3.0, 3.0, f32::NAN], [f32::NAN, f32::NAN, 0.5, 0.5]],
        &CPU,
    )
    .unwrap();
    let g = SamplingRow::greedy();
    assert_eq!(run(&l, &[g, g]), vec![1, 2]);
    // Every token banned: the arg-max of an all -inf row is 0.
    let banned = [0u32, 1, 2, 3];
    let mut row = SamplingRow::greedy();
    row.params.temperature = 1.0;
    row.banned = &banned;
    assert_eq!(run(&l, &[row, g]), vec![0, 2]);
}

#[test]
fn penalties_follow_the_runtime_sampler() {
    // Same case as crates/runtime's sampler test: token 0: 4/2 - 0.5 - 0.5 = 1;
    // token 1: -2 * 2 = -4; token 2: 1/2 - 0.5 - 0.25 = -0.25; token 3: 0.
    let l = Tensor::new(&[[4.0f32, -2.0, 1.0, 0.0]], &CPU).unwrap();
    let out = [0u32, 0, 2];
    let prompt = [1u32];
    let mut row = SamplingRow::greedy();
    row.params.repetition_penalty = 2.0;
    row.params.presence_penalty = 0.5;
    row.params.frequency_penalty = 0.25;
    row.prompt_tokens = &prompt;
    row.output_tokens = &out;
    assert_eq!(run(&l, &[row]), vec![0]);
    let bias = [(3u32, 1.5f32)];
    row.logit_bias = &bias;
    assert_eq!(run(&l, &[row]), vec![3]);
}

#[test]
fn draws_follow_the_distribution_and_filters() {
    // p = softmax([0, ln 3]) = [0.25, 0.75]: u < 0.25 picks 0 (index-order walk).
    let l = Tensor::new(&[[0.0f32, 3f32.ln()]], &CPU).unwrap();
    let mut row = SamplingRow::greedy();
    row.params.temperature = 1.0;
    let n = 2000;
    let ones = (0..n)
        .filter(|&i| {
            row.uniform = (i as f32 + 0.5) / n as f32;
            run(&l, &[row])[0] == 1
        })
        .count();
    assert!((ones as f64 / n as f64 - 0.75).abs() < 0.01, "{ones}");
    // top_k = 2 and min_p = 0.5 restrict the support to the two big logits.
    let l = Tensor::new(&[[5.0f32, 4.9, 0.0, -1.0]], &CPU)
        .unwrap()
        .repeat((3, 1))
        .unwrap();
    for i in 0..100 {
        let u = i as f32 / 100.0;
        let mut a = SamplingRow::greedy();
        a.params.temperature = 1.0;
        a.params.top_k = 2;
        a.uniform = u;
        let mut b = a;
        b.params.top_k = 0;
        b.params.min_p = 0.5;
        let mut c = a;
        c.params.top_k = 0;
        c.params.top_p = 0.5;
        let t = run(&l, &[a, b, c]);
        assert!(t[0] < 2 && t[1] < 2, "{t:?}");
        assert_eq!(t[2], 0, "top_p 0.5 keeps only the best token");
    }
}

#[test]
fn strided_logits_rows_are_fine() {
    let mut r = rng(12);
    let full = logits(&mut r, 4, 300, 3.0, DType::F32);
    let view = full.narrow(1, 100, 150).unwrap();
    let mut rows = vec![SamplingRow::greedy(); 4];
    for (i, row) in rows.iter_mut().enumerate() {
        row.params.temperature = 0.5 + i as f32 * 0.1;
        row.params.top_p = 0.9;
        row.uniform = 0.1 + 0.2 * i as f32;
    }
    let got = run(&view, &rows);
    let want = sample_tokens_naive(&view.contiguous().unwrap(), &rows).unwrap();
    assert_eq!(got, want);
}

#[test]
fn bad_parameters_are_rejected_by_name() {
    type Case = (&'static str, fn(&mut SamplingRow<'static>));
    let cases: [Case; 6] = [
        ("temperature", |r| r.params.temperature = -1.0),
        ("top_p", |r| r.params.top_p = 0.0),
        ("min_p", |r| r.params.min_p = 1.5),
        ("repetition_penalty", |r| r.params.repetition_penalty = 0.0),
        ("uniform", |r| r.uniform = 1.0),
        ("logit_bias", |r| r.logit_bias = &[(1, f32::INFINITY)]),
    ];
    for (field, f) in cases {
        let mut row = SamplingRow::greedy();
        f(&mut row);
        let e = SamplingBatch::from_host(&[row], &CPU)
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
    let b = SamplingBatch::from_host(&[SamplingRow::greedy()], &CPU).unwrap();
    let l = Tensor::zeros((2, 5), DType::F32, &CPU).unwrap();
    let e = sample_tokens(&l, &b).unwrap_err().to_string();
    assert!(e.contains("params"), "{e}");
}
