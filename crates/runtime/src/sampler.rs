//! Turning logits into token ids: logit bias, repetition / presence / frequency penalties,
//! banned tokens (EOS before `min_tokens`), temperature, top-k, top-p, min-p, greedy, and
//! log-probabilities.
//!
//! Seeded sampling is position-keyed: the random draw for a request's k-th output token
//! depends only on (seed, k), so the same seed, prompt and parameters give the same
//! tokens whatever else shares the batch, and preemption (recompute) changes nothing.

use crate::error::{Result, RuntimeError};
use candle_core::{Tensor, D};
use rand::{Rng, SeedableRng};

/// Per-request logits processing and sampling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means disabled.
    pub top_k: usize,
    /// 1.0 means disabled.
    pub top_p: f32,
    /// 0.0 means disabled.
    pub min_p: f32,
    /// 1.0 means disabled. HF semantics over prompt and output tokens.
    pub repetition_penalty: f32,
    /// OpenAI semantics over output tokens.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Added to the logits before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    /// Number of top alternatives to return with each token (None: no logprobs at all).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with no processing.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    fn needs_processing(&self) -> bool {
        !self.logit_bias.is_empty()
            || self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

/// One row of a batch to sample.
#[derive(Debug, Clone, Copy)]
pub struct SampleRow<'a> {
    pub params: &'a SamplingParams,
    /// The request's seed (drawn at random on arrival when the client gave none).
    pub seed: u64,
    pub prompt_tokens: &'a [u32],
    pub output_tokens: &'a [u32],
    /// Tokens that must not be sampled now (e.g. EOS while below `min_tokens`).
    pub banned: &'a [u32],
}

/// A sampled token with its log-probability and the top alternatives (if asked).
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    /// log p(token) under the model's raw distribution.
    pub logprob: f32,
    /// Top alternatives (token, logprob), most likely first.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Samples one token per row of `logits` (S, vocab), f32.
pub fn sample(logits: &Tensor, rows: &[SampleRow<'_>]) -> Result<Vec<SampledToken>> {
    let (s, _vocab) = logits.dims2()?;
    if s != rows.len() {
        return Err(RuntimeError::InvalidBatch(format!(
            "{s} logits rows for {} sample rows",
            rows.len()
        )));
    }
    let fast_greedy = rows.iter().all(|r| {
        r.params.is_greedy()
            && !r.params.needs_processing()
            && r.params.logprobs.is_none()
            && r.banned.is_empty()
    });
    if fast_greedy {
        let ids = greedy(logits)?;
        return Ok(ids
            .into_iter()
            .map(|token| SampledToken {
                token,
                logprob: 0.0,
                top_logprobs: Vec::new(),
            })
            .collect());
    }
    let host = logits.to_vec2::<f32>()?;
    let mut out = Vec::with_capacity(s);
    for (row, r) in host.into_iter().zip(rows) {
        out.push(sample_row(row, r));
    }
    Ok(out)
}

/// log p(`token`) and the `top` most likely (token, logprob) pairs of one logits row.
pub fn token_logprob(row: &[f32], token: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let lp = log_softmax(row);
    (
        lp.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY),
        top_n(&lp, top),
    )
}

/// Greedy decoding: the arg-max of each row of `logits` (S, vocab).
pub fn greedy(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
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

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// SplitMix64 finaliser: a good 64-bit mix for deriving per-step seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn apply_processing(logits: &mut [f32], r: &SampleRow<'_>) {
    let p = r.params;
    let v = logits.len();
    for &(tok, bias) in &p.logit_bias {
        if let Some(x) = logits.get_mut(tok as usize) {
            *x += bias;
        }
    }
    if p.repetition_penalty != 1.0 {
        let mut seen = vec![false; v];
        for &t in r.prompt_tokens.iter().chain(r.output_tokens) {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        for (x, s) in logits.iter_mut().zip(&seen) {
            if *s {
                *x = if *x > 0.0 {
                    *x / p.repetition_penalty
                } else {
                    *x * p.repetition_penalty
                };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for &t in r.output_tokens {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(x) = logits.get_mut(t as usize) {
                *x -= p.presence_penalty + p.frequency_penalty * c as f32;
            }
        }
    }
    for &t in r.banned {
        if let Some(x) = logits.get_mut(t as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
}

fn sample_row(raw: Vec<f32>, r: &SampleRow<'_>) -> SampledToken {
    let p = r.params;
    // Logprobs are reported from the model's raw distribution.
    let raw_logprobs = p.logprobs.map(|_| log_softmax(&raw));
    let mut logits = raw;
    apply_processing(&mut logits, r);
    let token = if p.is_greedy() {
        argmax(&logits)
    } else {
        sample_filtered(&logits, r)
    };
    match raw_logprobs {
        Some(lp) => SampledToken {
            token,
            logprob: lp.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY),
            top_logprobs: top_n(&lp, p.logprobs.unwrap_or(0)),
        },
        None => SampledToken {
            token,
            logprob: 0.0,
            top_logprobs: Vec::new(),
        },
    }
}

fn sample_filtered(logits: &[f32], r: &SampleRow<'_>) -> u32 {
    let p = r.params;
    let inv_t = 1.0 / p.temperature;
    let step = r.output_tokens.len() as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(mix(mix(r.seed) ^ step));
    let u: f64 = rng.random::<f64>();

    let needs_sort = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0;
    if !needs_sort {
        // Plain temperature sampling: walk the CDF in index order.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f64> = logits
            .iter()
            .map(|&x| f64::from(((x - max) * inv_t).exp()))
            .collect();
        return walk(&w, u, |i| i as u32);
    }
    // Candidates sorted by logit, best first; top_k bounds the list. Without top_k, try
    // the best 256 first: when they already hold the top_p mass (and min_p cannot reach
    // beyond them) the full-vocabulary sort is skipped; the result is identical.
    let k = if p.top_k > 0 {
        p.top_k.min(logits.len())
    } else {
        logits.len()
    };
    // Normaliser of the distribution the filters see: the full vocabulary without top_k
    // (also when only the head is kept), the top_k candidates with it (HF/vLLM order).
    let mut full_total: Option<f64> = None;
    let cand = if p.top_k == 0 && logits.len() > 256 {
        let head = top_n(logits, 256);
        let max = head.first().map(|c| c.1).unwrap_or(0.0);
        let total: f64 = logits
            .iter()
            .map(|&x| f64::from(((x - max) * inv_t).exp()))
            .sum();
        let mut cum = 0.0;
        for &(_, x) in &head {
            cum += f64::from(((x - max) * inv_t).exp());
        }
        let last = head.last().map(|c| c.1).unwrap_or(0.0);
        let last_p = f64::from(((last - max) * inv_t).exp());
        let covers_top_p = p.top_p < 1.0 && cum / total >= f64::from(p.top_p);
        let covers_min_p = p.min_p > 0.0 && last_p < f64::from(p.min_p);
        if covers_top_p || covers_min_p {
            full_total = Some(total);
            head
        } else {
            top_n(logits, k)
        }
    } else {
        top_n(logits, k)
    };
    let max = cand.first().map(|c| c.1).unwrap_or(0.0);
    let mut w: Vec<f64> = cand
        .iter()
        .map(|&(_, x)| f64::from(((x - max) * inv_t).exp()))
        .collect();
    let total: f64 = full_total.unwrap_or_else(|| w.iter().sum());
    if total > 0.0 {
        for x in w.iter_mut() {
            *x /= total;
        }
    }
    let mut keep = w.len();
    if p.min_p > 0.0 {
        let thresh = f64::from(p.min_p) * w.first().copied().unwrap_or(0.0);
        keep = w.iter().take_while(|&&x| x >= thresh).count().max(1);
    }
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut n = 0;
        for x in w.iter().take(keep) {
            cum += x;
            n += 1;
            if cum >= f64::from(p.top_p) {
                break;
            }
        }
        keep = keep.min(n.max(1));
    }
    w.truncate(keep);
    walk(&w, u, |i| cand[i].0)
}

/// Picks index i with probability w[i] / sum(w) using the uniform draw `u`.
fn walk(w: &[f64], u: f64, id: impl Fn(usize) -> u32) -> u32 {
    let total: f64 = w.iter().sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last_nonzero = 0;
    for (i, &x) in w.iter().enumerate() {
        if x > 0.0 {
            last_nonzero = i;
        }
        cum += x;
        if cum > target && x > 0.0 {
            return id(i);
        }
    }
    id(last_nonzero)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn row<'a>(p: &'a SamplingParams, seed: u64, out: &'a [u32]) -> SampleRow<'a> {
        SampleRow {
            params: p,
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

    #[test]
    fn greedy_picks_argmax_and_logprobs_are_normalised() {
        let p = SamplingParams {
            logprobs: Some(2),
            ..SamplingParams::greedy()
        };
        let s = sample(&logits(vec![0.0, 3.0, 1.0]), &[row(&p, 0, &[])]).unwrap();
        assert_eq!(s[0].token, 1);
        let total: f32 = log_softmax(&[0.0, 3.0, 1.0]).iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(s[0].top_logprobs.len(), 2);
        assert_eq!(s[0].top_logprobs[0].0, 1);
        assert_eq!(s[0].top_logprobs[1].0, 2);
        assert!((s[0].logprob - s[0].top_logprobs[0].1).abs() < 1e-6);
    }

    #[test]
    fn banned_and_bias_change_greedy_choice() {
        let p = SamplingParams::greedy();
        let banned = [1u32];
        let r = SampleRow {
            banned: &banned,
            ..row(&p, 0, &[])
        };
        assert_eq!(
            sample(&logits(vec![0.0, 3.0, 1.0]), &[r]).unwrap()[0].token,
            2
        );
        let p = SamplingParams {
            logit_bias: vec![(0, 10.0)],
            ..SamplingParams::greedy()
        };
        assert_eq!(
            sample(&logits(vec![0.0, 3.0, 1.0]), &[row(&p, 0, &[])]).unwrap()[0].token,
            0
        );
    }

    #[test]
    fn penalties_follow_hf_and_openai_semantics() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::greedy()
        };
        let out = [0u32, 0, 2];
        let r = SampleRow {
            prompt_tokens: &[1],
            ..row(&p, 0, &out)
        };
        let mut l = vec![4.0, -2.0, 1.0, 0.0];
        apply_processing(&mut l, &r);
        // token 0: 4/2 - 0.5 - 0.5; token 1: -2*2; token 2: 1/2 - 0.5 - 0.25; token 3 untouched.
        assert_eq!(l, vec![1.0, -4.0, -0.25, 0.0]);
    }

    #[test]
    fn seeded_sampling_is_deterministic_per_step() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            ..SamplingParams::default()
        };
        let l = logits(vec![1.0, 1.1, 0.9, 1.05, 0.2, 0.3]);
        let a: Vec<u32> = (0..20)
            .map(|k| {
                let out = vec![0u32; k];
                sample(&l, &[row(&p, 42, &out)]).unwrap()[0].token
            })
            .collect();
        let b: Vec<u32> = (0..20)
            .map(|k| {
                let out = vec![0u32; k];
                sample(&l, &[row(&p, 42, &out)]).unwrap()[0].token
            })
            .collect();
        assert_eq!(a, b);
        assert!(
            a.iter().any(|&t| t != a[0]),
            "draws should vary across steps: {a:?}"
        );
    }

    #[test]
    fn top_k_and_min_p_restrict_support() {
        let l = logits(vec![5.0, 4.9, 0.0, -1.0]);
        for seed in 0..50 {
            let p = SamplingParams {
                top_k: 2,
                ..SamplingParams::default()
            };
            let t = sample(&l, &[row(&p, seed, &[])]).unwrap()[0].token;
            assert!(t < 2);
            let p = SamplingParams {
                min_p: 0.5,
                ..SamplingParams::default()
            };
            let t = sample(&l, &[row(&p, seed, &[])]).unwrap()[0].token;
            assert!(t < 2);
        }
    }

    #[test]
    fn sampling_matches_distribution_roughly() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75]
        let l = logits(vec![0.0, 3f32.ln()]);
        let p = SamplingParams::default();
        let ones = (0..4000u64)
            .filter(|&s| sample(&l, &[row(&p, s, &[])]).unwrap()[0].token == 1)
            .count();
        let frac = ones as f64 / 4000.0;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod head_tests {
    use super::*;
    use candle_core::Device;

    /// The 256-candidate shortcut must pick exactly what the full sort picks.
    #[test]
    fn top_p_shortcut_equals_full_sort() {
        let vocab = 5000;
        let data: Vec<f32> = (0..vocab)
            .map(|i| ((i * 2_654_435_761usize) % 9973) as f32 / 400.0)
            .collect();
        for (top_p, min_p) in [(0.9f32, 0.0f32), (0.5, 0.0), (1.0, 0.2), (0.99, 0.0)] {
            let p = SamplingParams {
                temperature: 0.7,
                top_p,
                min_p,
                ..SamplingParams::default()
            };
            for seed in 0..50u64 {
                let r = SampleRow {
                    params: &p,
                    seed,
                    prompt_tokens: &[],
                    output_tokens: &[],
                    banned: &[],
                };
                let fast = sample_filtered(&data, &r);
                // Reference: full sort by logit, then the same filters.
                let inv_t = 1.0 / p.temperature;
                let cand = top_n(&data, vocab);
                let max = cand[0].1;
                let mut w: Vec<f64> = cand
                    .iter()
                    .map(|&(_, x)| f64::from(((x - max) * inv_t).exp()))
                    .collect();
                let tot: f64 = w.iter().sum();
                w.iter_mut().for_each(|x| *x /= tot);
                let mut keep = w.len();
                if min_p > 0.0 {
                    let th = f64::from(min_p) * w[0];
                    keep = w.iter().take_while(|&&x| x >= th).count().max(1);
                }
                if top_p < 1.0 {
                    let mut cum = 0.0;
                    let mut n = 0;
                    for x in w.iter().take(keep) {
                        cum += x;
                        n += 1;
                        if cum >= f64::from(top_p) {
                            break;
                        }
                    }
                    keep = keep.min(n.max(1));
                }
                w.truncate(keep);
                let mut rng = rand::rngs::StdRng::seed_from_u64(mix(mix(seed)));
                let u: f64 = rng.random::<f64>();
                let slow = walk(&w, u, |i| cand[i].0);
                assert_eq!(fast, slow, "top_p {top_p} min_p {min_p} seed {seed}");
            }
        }
        let _ = Device::Cpu;
    }
}
