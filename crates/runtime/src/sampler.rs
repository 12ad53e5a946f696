//! Turning logits into token ids, on the logits' device, with one op for every sampling mode:
//! [`lantern_kernels::sample_tokens`] (its CPU implementation on the CPU, its CUDA kernels on a
//! GPU). It applies logit bias, repetition / presence / frequency penalties and banned tokens
//! (EOS before `min_tokens`), then picks greedily or draws with temperature, top-k, top-p and
//! min-p. Only the `(rows,)` token ids come back to the host, plus the logits rows of the
//! requests that asked for log-probabilities.
//!
//! Seeded sampling is position-keyed: the random draw for a request's k-th output token is
//! [`uniform`]`(seed, k)`, so the same seed, prompt and parameters give the same tokens
//! whatever else shares the batch, and preemption (recompute) changes nothing.

use crate::error::{Result, RuntimeError};
use candle_core::{DType, Tensor};
pub use lantern_kernels::SamplingParams;
use lantern_kernels::{sample_tokens, SamplingBatch, SamplingRow};

/// One row of a batch to sample.
#[derive(Debug, Clone, Copy)]
pub struct SampleRow<'a> {
    pub params: &'a SamplingParams,
    /// Added to the logits before anything else.
    pub logit_bias: &'a [(u32, f32)],
    /// Number of top alternatives to return with the token (None: no logprobs at all).
    pub logprobs: Option<usize>,
    /// Structured outputs: the tokens the row may sample, as a bitmask (token `t` is allowed
    /// when bit `t % 32` of word `t / 32` is set; `vocab.div_ceil(32)` words). `None`: all.
    pub allowed: Option<&'a [u32]>,
    /// The request's seed (drawn at random on arrival when the client gave none).
    pub seed: u64,
    pub prompt_tokens: &'a [u32],
    pub output_tokens: &'a [u32],
    /// Tokens that must not be sampled now (e.g. EOS while below `min_tokens`).
    pub banned: &'a [u32],
}

impl<'a> SampleRow<'a> {
    /// The kernel's view of this row; its draw is [`uniform`]`(seed, output_tokens.len())`.
    fn kernel_row(&self) -> SamplingRow<'a> {
        SamplingRow {
            params: *self.params,
            logit_bias: self.logit_bias,
            prompt_tokens: self.prompt_tokens,
            output_tokens: self.output_tokens,
            banned: self.banned,
            uniform: uniform(self.seed, self.output_tokens.len() as u64),
        }
    }
}

/// A sampled token with its log-probability and the top alternatives (if asked).
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    /// log p(token) under the model's raw distribution (0 when logprobs were not asked).
    pub logprob: f32,
    /// Top alternatives (token, logprob), most likely first.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Samples one token per row of `logits` (S, vocab; f32, f16 or bf16) on its device.
///
/// One [`SamplingBatch`] is built for the step (a few small host-to-device copies) and
/// [`sample_tokens`] runs on the device; an all-greedy batch without processing is a plain
/// arg-max there. Only the S token ids are copied back, plus the logits rows of the requests
/// that asked for logprobs (log p(token) and the top alternatives of the raw distribution are
/// computed on the host from those rows only).
pub fn sample(logits: &Tensor, rows: &[SampleRow<'_>]) -> Result<Vec<SampledToken>> {
    sample_on(logits, rows, host_sampling())
}

/// `LANTERN_HOST_SAMPLING=1` (read once): [`sample`] copies the logits to the host and runs
/// the CPU version of the same op there, as every step did before device sampling. An A/B
/// switch for benchmarks (`scripts/gpu/run-all.sh`); tokens are the same either way.
pub fn host_sampling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        matches!(
            std::env::var("LANTERN_HOST_SAMPLING").as_deref(),
            Ok("1") | Ok("true") | Ok("on")
        )
    })
}

/// [`sample`] on the logits' device, or on the host when `on_host` (the logits are copied
/// there first).
pub fn sample_on(
    logits: &Tensor,
    rows: &[SampleRow<'_>],
    on_host: bool,
) -> Result<Vec<SampledToken>> {
    let moved;
    let logits = if on_host && !logits.device().is_cpu() {
        moved = logits.to_device(&candle_core::Device::Cpu)?;
        &moved
    } else {
        logits
    };
    let (s, _vocab) = logits.dims2()?;
    if s != rows.len() {
        return Err(RuntimeError::InvalidBatch(format!(
            "{s} logits rows for {} sample rows",
            rows.len()
        )));
    }
    if s == 0 {
        return Ok(Vec::new());
    }
    let kernel_rows: Vec<SamplingRow<'_>> = rows.iter().map(SampleRow::kernel_row).collect();
    let ids = if rows.iter().any(|r| r.allowed.is_some()) {
        sample_ids(&apply_allowed(logits, rows)?, &kernel_rows)?
    } else {
        sample_ids(logits, &kernel_rows)?
    };
    let mut out: Vec<SampledToken> = ids
        .into_iter()
        .map(|token| SampledToken {
            token,
            logprob: 0.0,
            top_logprobs: Vec::new(),
        })
        .collect();
    let wanted = logprob_rows(rows);
    if wanted.is_empty() {
        return Ok(out);
    }
    let host = host_rows(logits, &wanted)?;
    for (&i, raw) in wanted.iter().zip(&host) {
        let (Some(t), Some(r)) = (out.get_mut(i), rows.get(i)) else {
            continue;
        };
        let (lp, top) = token_logprob(raw, t.token, r.logprobs.unwrap_or(0));
        t.logprob = lp;
        t.top_logprobs = top;
    }
    Ok(out)
}

/// Greedy decoding: the arg-max of each row of `logits` (S, vocab), lowest index on ties,
/// through the same device op as [`sample`] (its all-greedy fast path).
pub fn greedy(logits: &Tensor) -> Result<Vec<u32>> {
    let (s, _vocab) = logits.dims2()?;
    if s == 0 {
        return Ok(Vec::new());
    }
    sample_ids(logits, &vec![SamplingRow::greedy(); s])
}

/// Runs the device op and copies the `(rows,)` ids back.
fn sample_ids(logits: &Tensor, rows: &[SamplingRow<'_>]) -> Result<Vec<u32>> {
    // Parameters out of range are the caller's bug (the engine validates every request);
    // the kernels' message names the row and the field.
    let batch = SamplingBatch::from_host(rows, logits.device())
        .map_err(|e| RuntimeError::InvalidBatch(format!("sampling parameters: {e}")))?;
    Ok(sample_tokens(logits, &batch)?.to_vec1::<u32>()?)
}

/// `logits` with every token a row's `allowed` bitmask leaves out set to `-inf` (rows
/// without a mask are unchanged). The bitmasks are expanded into one `(rows, vocab)` u8 mask
/// on the host and applied with `where_cond` on the logits' device. Logprobs are still taken
/// from the unmasked logits (the model's distribution, as vLLM reports them).
fn apply_allowed(logits: &Tensor, rows: &[SampleRow<'_>]) -> Result<Tensor> {
    let (s, vocab) = logits.dims2()?;
    let words = vocab.div_ceil(32);
    let mut mask = vec![1u8; s * vocab];
    for (r, row) in rows.iter().enumerate() {
        let Some(bits) = row.allowed else { continue };
        if bits.len() < words {
            return Err(RuntimeError::InvalidBatch(format!(
                "row {r}: allowed-token bitmask has {} words, {vocab} tokens need {words}",
                bits.len()
            )));
        }
        for (t, m) in mask[r * vocab..(r + 1) * vocab].iter_mut().enumerate() {
            *m = ((bits[t / 32] >> (t % 32)) & 1) as u8;
        }
    }
    let mask = Tensor::from_vec(mask, (s, vocab), logits.device())?;
    let neg =
        Tensor::full(f32::NEG_INFINITY, (s, vocab), logits.device())?.to_dtype(logits.dtype())?;
    Ok(mask.where_cond(logits, &neg)?)
}

/// Indices of the rows whose request asked for logprobs, in batch order.
fn logprob_rows(rows: &[SampleRow<'_>]) -> Vec<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.logprobs.is_some())
        .map(|(i, _)| i)
        .collect()
}

/// Copies the f32 logits rows `which` (in that order) to the host, and no others.
fn host_rows(logits: &Tensor, which: &[usize]) -> Result<Vec<Vec<f32>>> {
    let (s, _vocab) = logits.dims2()?;
    let selected = if which.len() == s && which.iter().enumerate().all(|(i, &r)| i == r) {
        logits.clone()
    } else {
        let idx: Vec<u32> = which.iter().map(|&r| r as u32).collect();
        let n = idx.len();
        logits.index_select(&Tensor::from_vec(idx, n, logits.device())?, 0)?
    };
    Ok(selected.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// The uniform draw in `[0, 1)` of a request's `step`-th output token (0-based): the top 24
/// bits of a SplitMix64 hash of (seed, step), so it depends on nothing else.
pub fn uniform(seed: u64, step: u64) -> f32 {
    unit_f32(mix(mix(seed) ^ step))
}

/// The top 24 bits of `bits` as an f32 in `[0, 1)`: 24 bits are exact in an f32, so the
/// largest value is `1 - 2^-24`, never 1.
fn unit_f32(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// log p(`token`) and the `top` most likely (token, logprob) pairs of one logits row.
pub fn token_logprob(row: &[f32], token: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let lp = log_softmax(row);
    (
        lp.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY),
        top_n(&lp, top),
    )
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from((x - max).exp())).sum();
    let lse = max + sum.ln() as f32;
    row.iter().map(|&x| x - lse).collect()
}

fn top_n(values: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    let n = n.min(idx.len());
    if n == 0 {
        return Vec::new();
    }
    let cmp = |a: &u32, b: &u32| {
        values[*b as usize]
            .total_cmp(&values[*a as usize])
            .then(a.cmp(b))
    };
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, values[i as usize])).collect()
}

/// SplitMix64 finaliser: a good 64-bit mix for deriving per-step draws.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn row<'a>(p: &'a SamplingParams, seed: u64, out: &'a [u32]) -> SampleRow<'a> {
        SampleRow {
            params: p,
            logit_bias: &[],
            logprobs: None,
            allowed: None,
            seed,
            prompt_tokens: &[],
            output_tokens: out,
            banned: &[],
        }
    }

    fn logits(v: Vec<f32>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap()
    }

    fn one(l: &Tensor, r: SampleRow<'_>) -> u32 {
        sample(l, &[r]).unwrap()[0].token
    }

    /// Logits whose softmax is `probs`.
    fn from_probs(probs: &[f32]) -> Tensor {
        logits(probs.iter().map(|p| p.ln()).collect())
    }

    #[test]
    fn greedy_picks_argmax_and_logprobs_are_normalised() {
        let p = SamplingParams::greedy();
        let r = SampleRow {
            logprobs: Some(2),
            ..row(&p, 0, &[])
        };
        let s = sample(&logits(vec![0.0, 3.0, 1.0]), &[r]).unwrap();
        assert_eq!(s[0].token, 1);
        let total: f32 = log_softmax(&[0.0, 3.0, 1.0]).iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(s[0].top_logprobs.len(), 2);
        assert_eq!(s[0].top_logprobs[0].0, 1);
        assert_eq!(s[0].top_logprobs[1].0, 2);
        assert!((s[0].logprob - s[0].top_logprobs[0].1).abs() < 1e-6);
    }

    #[test]
    fn greedy_is_the_row_argmax_lowest_index_on_ties() {
        let l = Tensor::from_vec(
            vec![
                0.0f32, 3.0, 1.0, 2.0, -1.0, 5.0, 5.0, 0.0, 7.0, 7.0, 7.0, 7.0,
            ],
            (3, 4),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(greedy(&l).unwrap(), vec![1, 1, 0]);
        let p = SamplingParams::greedy();
        let rows = [row(&p, 1, &[]), row(&p, 2, &[]), row(&p, 3, &[])];
        let s: Vec<u32> = sample(&l, &rows).unwrap().iter().map(|t| t.token).collect();
        assert_eq!(s, vec![1, 1, 0]);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let l = logits(vec![1.0, 1.2, 1.1, 0.9]);
        let p = SamplingParams {
            temperature: 1.5,
            top_k: 1,
            ..SamplingParams::default()
        };
        let free = SamplingParams {
            temperature: 1.5,
            ..SamplingParams::default()
        };
        for seed in 0..100 {
            assert_eq!(one(&l, row(&p, seed, &[])), 1, "seed {seed}");
        }
        // The same seeds without top_k do pick other tokens: top_k is what made it greedy.
        assert!((0..100).any(|seed| one(&l, row(&free, seed, &[])) != 1));
    }

    #[test]
    fn banned_and_bias_change_greedy_choice() {
        let p = SamplingParams::greedy();
        let banned = [1u32];
        let r = SampleRow {
            banned: &banned,
            ..row(&p, 0, &[])
        };
        assert_eq!(one(&logits(vec![0.0, 3.0, 1.0]), r), 2);
        let r = SampleRow {
            logit_bias: &[(0, 10.0)],
            ..row(&p, 0, &[])
        };
        assert_eq!(one(&logits(vec![0.0, 3.0, 1.0]), r), 0);
    }

    #[test]
    fn banned_tokens_are_never_sampled() {
        // Token 0 holds almost all the mass; banned, it must never come out.
        let l = from_probs(&[0.97, 0.01, 0.01, 0.01]);
        let banned = [0u32, 2];
        for p in [
            SamplingParams::default(),
            SamplingParams {
                top_p: 0.5,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_k: 2,
                min_p: 0.5,
                ..SamplingParams::default()
            },
        ] {
            for seed in 0..200 {
                let r = SampleRow {
                    banned: &banned,
                    ..row(&p, seed, &[])
                };
                let t = one(&l, r);
                assert!(t == 1 || t == 3, "{p:?} seed {seed} sampled {t}");
            }
        }
    }

    #[test]
    fn penalties_follow_hf_and_openai_semantics() {
        let greedy_with = |p: SamplingParams, l: Vec<f32>, prompt: &[u32], out: &[u32]| {
            let r = SampleRow {
                prompt_tokens: prompt,
                ..row(&p, 0, out)
            };
            one(&logits(l), r)
        };
        let rep = |rp| SamplingParams {
            repetition_penalty: rp,
            ..SamplingParams::greedy()
        };
        // Repetition (HF): positive logits divided, negative multiplied, over prompt and output.
        assert_eq!(greedy_with(rep(1.0), vec![4.0, 2.5], &[0], &[]), 0);
        assert_eq!(greedy_with(rep(2.0), vec![4.0, 2.5], &[0], &[]), 1); // 4/2 < 2.5
        assert_eq!(greedy_with(rep(2.0), vec![4.0, 2.5], &[], &[0]), 1);
        assert_eq!(greedy_with(rep(1.5), vec![4.0, 2.5], &[0], &[]), 0); // 4/1.5 > 2.5
        assert_eq!(greedy_with(rep(2.0), vec![-2.0, -3.0], &[0], &[]), 1); // -2*2 < -3
                                                                           // Presence and frequency (OpenAI): output tokens only, x -= presence + frequency * count.
        let pf = |presence, frequency| SamplingParams {
            presence_penalty: presence,
            frequency_penalty: frequency,
            ..SamplingParams::greedy()
        };
        // 1.0 - 0.25 - 0.2 * 2 = 0.35 < 0.5; with frequency 0.1: 0.55 > 0.5.
        assert_eq!(greedy_with(pf(0.25, 0.2), vec![1.0, 0.5], &[], &[0, 0]), 1);
        assert_eq!(greedy_with(pf(0.25, 0.1), vec![1.0, 0.5], &[], &[0, 0]), 0);
        // The count matters: one occurrence costs 0.25 + 0.2 = 0.45 -> 0.55 > 0.5.
        assert_eq!(greedy_with(pf(0.25, 0.2), vec![1.0, 0.5], &[], &[0]), 0);
        // Presence alone: 1.0 - 0.6 < 0.5.
        assert_eq!(greedy_with(pf(0.6, 0.0), vec![1.0, 0.5], &[], &[0]), 1);
        // Prompt tokens are not penalised by presence / frequency.
        assert_eq!(greedy_with(pf(2.0, 2.0), vec![1.0, 0.5], &[0], &[]), 0);
    }

    #[test]
    fn seeded_sampling_is_deterministic_per_step() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            ..SamplingParams::default()
        };
        let l = logits(vec![1.0, 1.1, 0.9, 1.05, 0.2, 0.3]);
        let draw = |seed: u64| -> Vec<u32> {
            (0..20)
                .map(|k| {
                    let out = vec![0u32; k];
                    one(&l, row(&p, seed, &out))
                })
                .collect()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert!(
            a.iter().any(|&t| t != a[0]),
            "draws should vary across steps: {a:?}"
        );
        assert_ne!(a, draw(43), "another seed gives another sequence");
        // The output tokens themselves do not matter, only how many there are.
        let other_out = vec![5u32; 7];
        assert_eq!(one(&l, row(&p, 42, &other_out)), a[7]);
    }

    #[test]
    fn seeded_row_does_not_depend_on_the_rest_of_the_batch() {
        let vocab = 64;
        let data: Vec<f32> = (0..4 * vocab)
            .map(|i| ((i * 2_654_435_761usize) % 1009) as f32 / 300.0)
            .collect();
        let l = Tensor::from_vec(data, (4, vocab), &Device::Cpu).unwrap();
        let p = SamplingParams {
            temperature: 0.9,
            top_k: 20,
            top_p: 0.95,
            ..SamplingParams::default()
        };
        let others = [
            SamplingParams::greedy(),
            SamplingParams {
                temperature: 1.3,
                min_p: 0.1,
                ..SamplingParams::default()
            },
            SamplingParams {
                repetition_penalty: 1.2,
                ..SamplingParams::default()
            },
        ];
        let out = [3u32, 9, 3];
        for seed in 0..30 {
            let mine = row(&p, seed, &out);
            let alone = one(&l.narrow(0, 2, 1).unwrap(), mine);
            let rows = [
                row(&others[0], 7, &[]),
                SampleRow {
                    logprobs: Some(3),
                    ..row(&others[1], 8, &out)
                },
                mine,
                row(&others[2], 9, &out[..1]),
            ];
            let batch = sample(&l, &rows).unwrap();
            assert_eq!(batch[2].token, alone, "seed {seed}");
        }
    }

    #[test]
    fn top_k_and_min_p_restrict_support() {
        let l = logits(vec![5.0, 4.9, 0.0, -1.0]);
        let top_k = SamplingParams {
            top_k: 2,
            ..SamplingParams::default()
        };
        let min_p = SamplingParams {
            min_p: 0.5,
            ..SamplingParams::default()
        };
        for p in [top_k, min_p] {
            let seen: std::collections::BTreeSet<u32> =
                (0..200).map(|seed| one(&l, row(&p, seed, &[]))).collect();
            assert_eq!(seen, [0, 1].into(), "{p:?}");
        }
    }

    #[test]
    fn top_p_restricts_support_to_the_nucleus() {
        let l = from_probs(&[0.3, 0.5, 0.05, 0.15]);
        let support = |top_p: f32| -> std::collections::BTreeSet<u32> {
            let p = SamplingParams {
                top_p,
                ..SamplingParams::default()
            };
            (0..400).map(|seed| one(&l, row(&p, seed, &[]))).collect()
        };
        // Sorted: 1 (0.5), 0 (0.3), 3 (0.15), 2 (0.05).
        assert_eq!(support(0.4), [1].into());
        assert_eq!(support(0.75), [0, 1].into());
        assert_eq!(support(0.9), [0, 1, 3].into());
        assert_eq!(support(1.0), [0, 1, 2, 3].into());
    }

    #[test]
    fn sampling_matches_distribution_roughly() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75]
        let l = logits(vec![0.0, 3f32.ln()]);
        let p = SamplingParams::default();
        let ones = (0..4000u64)
            .filter(|&s| one(&l, row(&p, s, &[])) == 1)
            .count();
        let frac = ones as f64 / 4000.0;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
        // Temperature sharpens it: at T = 0.5, p = [1, 9] / 10.
        let p = SamplingParams {
            temperature: 0.5,
            ..SamplingParams::default()
        };
        let ones = (0..4000u64)
            .filter(|&s| one(&l, row(&p, s, &[])) == 1)
            .count();
        let frac = ones as f64 / 4000.0;
        assert!((frac - 0.9).abs() < 0.02, "{frac}");
    }

    #[test]
    fn logprobs_are_of_the_raw_row_and_only_where_asked() {
        let raw = [
            vec![0.5f32, 2.0, -1.0, 1.0, 0.0],
            vec![3.0, 0.0, 0.0, 0.0, 1.0],
            vec![-0.5, 0.25, 4.0, 1.5, 2.0],
        ];
        let l = Tensor::from_vec(raw.concat(), (3, 5), &Device::Cpu).unwrap();
        // Row 0: greedy with a bias that moves the choice; row 1: no logprobs; row 2: sampled
        // with its best token banned and a repetition penalty.
        let p0 = SamplingParams::greedy();
        let p1 = SamplingParams::default();
        let p2 = SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::default()
        };
        let banned = [2u32];
        let rows = [
            SampleRow {
                logit_bias: &[(4, 5.0)],
                logprobs: Some(2),
                ..row(&p0, 1, &[])
            },
            row(&p1, 2, &[]),
            SampleRow {
                banned: &banned,
                logprobs: Some(0),
                prompt_tokens: &[4],
                ..row(&p2, 3, &[])
            },
        ];
        assert_eq!(logprob_rows(&rows), vec![0, 2]);
        let s = sample(&l, &rows).unwrap();
        assert_eq!(s[0].token, 4, "the bias decides the greedy token");
        assert_ne!(s[2].token, 2, "banned");
        for i in [0, 2] {
            let lp = log_softmax(&raw[i]);
            let t = s[i].token as usize;
            assert!((s[i].logprob - lp[t]).abs() < 1e-6, "row {i}: {:?}", s[i]);
        }
        let lp0 = log_softmax(&raw[0]);
        assert_eq!(
            s[0].top_logprobs,
            vec![(1, lp0[1]), (3, lp0[3])],
            "top alternatives of the raw row, best first"
        );
        assert!(s[2].top_logprobs.is_empty(), "logprobs 0: no alternatives");
        assert_eq!(s[1].logprob, 0.0);
        assert!(s[1].top_logprobs.is_empty());
    }

    #[test]
    fn host_rows_copies_exactly_the_asked_rows() {
        let l = Tensor::from_vec(
            (0..12).map(|x| x as f32).collect::<Vec<f32>>(),
            (4, 3),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            host_rows(&l, &[1, 3]).unwrap(),
            vec![vec![3.0, 4.0, 5.0], vec![9.0, 10.0, 11.0]]
        );
        assert_eq!(host_rows(&l, &[0, 1, 2, 3]).unwrap().len(), 4);
        let half = l.to_dtype(DType::BF16).unwrap();
        assert_eq!(host_rows(&half, &[2]).unwrap(), vec![vec![6.0, 7.0, 8.0]]);
    }

    #[test]
    fn bf16_logits_sample_and_give_logprobs() {
        let l = logits(vec![0.0, 3.0, 1.0]).to_dtype(DType::BF16).unwrap();
        let p = SamplingParams::greedy();
        let r = SampleRow {
            logprobs: Some(1),
            ..row(&p, 0, &[])
        };
        let s = sample(&l, &[r]).unwrap();
        assert_eq!(s[0].token, 1);
        let lp = log_softmax(&[0.0, 3.0, 1.0]);
        assert!((s[0].logprob - lp[1]).abs() < 1e-6);
    }

    #[test]
    fn allowed_bitmask_restricts_every_sampling_mode_and_keeps_raw_logprobs() {
        // Token 1 dominates; only tokens 2 and 4 are allowed in row 0; row 1 is free.
        let raw = vec![0.0f32, 9.0, 1.0, 0.5, 0.8, 3.0];
        let l =
            Tensor::from_vec([raw.clone(), raw.clone()].concat(), (2, 6), &Device::Cpu).unwrap();
        let mask = [(1u32 << 2) | (1 << 4)];
        for p in [
            SamplingParams::greedy(),
            SamplingParams::default(),
            SamplingParams {
                top_k: 1,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_p: 0.5,
                min_p: 0.1,
                ..SamplingParams::default()
            },
        ] {
            for seed in 0..50 {
                let rows = [
                    SampleRow {
                        allowed: Some(&mask),
                        logprobs: Some(1),
                        logit_bias: &[(1, 5.0), (3, 50.0)],
                        ..row(&p, seed, &[])
                    },
                    row(&p, seed, &[]),
                ];
                let s = sample(&l, &rows).unwrap();
                assert!(s[0].token == 2 || s[0].token == 4, "{p:?}: {}", s[0].token);
                let lp = log_softmax(&raw);
                let t = s[0].token as usize;
                assert!((s[0].logprob - lp[t]).abs() < 1e-6, "raw distribution");
                if p.temperature == 0.0 {
                    assert_eq!(s[0].token, 2, "greedy among the allowed (1.0 > 0.8)");
                    assert_eq!(s[1].token, 1, "the unmasked row is untouched");
                }
            }
        }
        let g = SamplingParams::greedy();
        let short = SampleRow {
            allowed: Some(&[]),
            ..row(&g, 0, &[])
        };
        assert!(sample(&logits(vec![1.0; 40]), &[short]).is_err());
    }

    #[test]
    fn uniform_depends_on_seed_and_step_and_stays_below_one() {
        assert_eq!(uniform(7, 3), uniform(7, 3));
        assert_ne!(uniform(7, 3), uniform(7, 4));
        assert_ne!(uniform(7, 3), uniform(8, 3));
        assert_eq!(unit_f32(0), 0.0);
        assert!(unit_f32(u64::MAX) < 1.0);
        assert_eq!(unit_f32(u64::MAX), 1.0 - 1.0 / 16_777_216.0);
        let draws: Vec<f32> = (0..10_000).map(|k| uniform(1, k)).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().map(|&u| f64::from(u)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn errors_name_the_problem() {
        let l = logits(vec![0.0, 1.0]);
        let p = SamplingParams::greedy();
        let e = sample(&l, &[row(&p, 0, &[]), row(&p, 0, &[])]).unwrap_err();
        assert!(
            matches!(&e, RuntimeError::InvalidBatch(m) if m.contains("1 logits rows for 2")),
            "{e}"
        );
        let bad = SamplingParams {
            top_p: 0.0,
            ..SamplingParams::default()
        };
        let e = sample(&l, &[row(&bad, 0, &[])]).unwrap_err();
        assert!(
            matches!(&e, RuntimeError::InvalidBatch(m) if m.contains("top_p")),
            "{e}"
        );
    }
}
